"""Deleting on OpenShift's own registry: ``prune --confirm`` and ``check --recover --confirm``
proven by pulls through it (folder and moto S3), and its blob cache after a deletion.

What its cache does (OpenShift's registry replaces distribution's blob descriptor cache with
its own, registry-wide, digest cache):

- bytes deleted straight from storage: a push of the same blob asks ``HEAD`` and gets a 500
  (the cache claims the blob, the driver has no file), so the push fails until a restart;
- ``DELETE /v2/<repo>/blobs/<digest>`` clears that repository's entry only: a push then
  uploads the layers but skips the manifest (still "known"), and the tag does not pull;
- ``DELETE /admin/blobs/<digest>`` (permission: ``delete images``) removes the digest from
  the cache registry-wide, also when the bytes are already gone: the push and the pull work
  without a restart. ``prune --registry-url`` therefore calls it for every deleted blob.

Skipped, saying how to build it, without the binary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import EXIT_FINDINGS, EXIT_OK, main
from tests.harness.openshift_registry import OpenShiftRegistry
from tests.harness.registry_bench import (
    OciLayouts,
    PushedImage,
    assert_pulls,
    blob_path,
    pull_ok,
    push,
)

# openshift_apiserver_session named too: the registries are asked for by parameter
# (getfixturevalue), and the real-API tests are counted by the fixtures they name
pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_server", "openshift_apiserver_session"),
]


def run(registry: OpenShiftRegistry, tmp_path: Path, name: str, *args: str) -> tuple[int, Any]:
    """``regprune <args[0]>`` on the registry's storage and API; exit code and report."""
    report = tmp_path / f"{name}.json"
    kubeconfig = registry.api.kubeconfig(tmp_path / "kubeconfig")
    base = ["--storage", registry.storage_url, "--metadata", "kube", "--shards", "1"]
    base += ["--kubeconfig", str(kubeconfig), "--out", str(tmp_path / name)]
    code = main([args[0], *base, "--report", str(report), *args[1:]])
    return code, json.loads(report.read_text()) if report.exists() else None


def prune_confirm(registry: OpenShiftRegistry, tmp_path: Path, name: str, *extra: str) -> Any:
    code, report = run(
        registry, tmp_path, name, "prune", "--keep-younger-than", "0s", "--confirm", *extra
    )
    assert code == EXIT_OK, report
    assert report["summary"]["failed"] == 0
    return report


def through_the_api(registry: OpenShiftRegistry, tmp_path: Path) -> tuple[str, ...]:
    """``--registry-url`` with the token of the registry's own service account."""
    token = tmp_path / "registry-token"
    token.write_text(registry.api.token)
    return ("--registry-url", registry.base_url, "--registry-token-file", str(token))


def forget(registry: OpenShiftRegistry, namespace: str, name: str) -> None:
    """``oc delete is`` and ``oc delete image`` of everything the stream had."""
    api = registry.api
    stream = api.imagestream(namespace, name)
    assert stream is not None
    for tag in stream["status"].get("tags") or []:
        for item in tag["items"]:
            api.delete_image(item["image"])
    api.delete_imagestream(namespace, name)


def gone(registry: OpenShiftRegistry, image: PushedImage) -> bool:
    return not any(registry.exists(blob_path(d)) for d in image.blob_digests())


def fresh(registry: OpenShiftRegistry) -> OpenShiftRegistry:
    """Each test on its own: an API with no Image or stream (the session's real API is shared
    by both registries and by other modules; what they left would be in this test's plan),
    and a cold cache. Each push makes its namespace (``prepare_push``)."""
    registry.api.reset()
    registry.restart()
    return registry


@pytest.fixture(params=["fs", "s3"])
def registry(request: pytest.FixtureRequest) -> OpenShiftRegistry:
    reg: OpenShiftRegistry = request.getfixturevalue(f"openshift_registry_{request.param}")
    if request.param == "s3":
        request.getfixturevalue("s3_env")  # regprune's credentials for moto
    return fresh(reg)


def test_prune_keeps_what_is_referenced_and_a_pruned_image_comes_back(
    registry: OpenShiftRegistry, oci_layouts: OciLayouts, tmp_path: Path
) -> None:
    """Referenced images (a list with its children included) pull after ``prune --confirm``;
    the pruned one is gone, and pushed again through the registry's API route it pulls
    without a restart."""
    keep = push(registry, *oci_layouts["app-v2"], "keep/app:v2")
    multi = push(registry, *oci_layouts["multi"], "keep/multi:latest")
    tool = push(registry, *oci_layouts["tool"], "drop/tool:1")
    forget(registry, "drop", "tool")

    report = prune_confirm(registry, tmp_path, "prune", *through_the_api(registry, tmp_path))
    assert {r["digest"] for r in report["blobs"]} == tool.blob_digests()
    assert gone(registry, tool)
    assert_pulls(registry, "keep/app:v2")
    assert_pulls(registry, "keep/multi:latest")
    for child in multi.children:
        assert_pulls(registry, f"keep/multi@{child.digest}")
    assert keep.digest in {i["metadata"]["name"] for i in registry.api.images()}

    again = push(registry, *oci_layouts["tool"], "drop/tool:1")
    assert again.digest == tool.digest
    assert_pulls(registry, "drop/tool:1")


def test_the_cache_outlives_a_deletion_behind_its_back(
    openshift_registry_fs: OpenShiftRegistry, oci_layouts: OciLayouts, tmp_path: Path
) -> None:
    """Without ``--registry-url`` the pruned image cannot be pushed again (500 on HEAD) until
    the registry restarts: the evidence for ``--registry-url`` or ``--restart-registry``."""
    registry = fresh(openshift_registry_fs)
    push(registry, *oci_layouts["app-v2"], "keep/app:v2")  # a prune refuses an API of no Image
    tool = push(registry, *oci_layouts["tool"], "stale/tool:1")
    forget(registry, "stale", "tool")
    prune_confirm(registry, tmp_path, "prune")
    assert gone(registry, tool)
    with pytest.raises(RuntimeError, match="500"):
        push(registry, *oci_layouts["tool"], "stale/tool:1")
    registry.restart()
    push(registry, *oci_layouts["tool"], "stale/tool:1")
    assert_pulls(registry, "stale/tool:1")


def test_lost_found_tags_pull_after_recovery(
    openshift_registry_fs: OpenShiftRegistry, oci_layouts: OciLayouts, tmp_path: Path
) -> None:
    """Streams and Images deleted from the API while storage keeps the manifests: after
    ``check --recover --confirm`` each ``lost-found-<hex>`` tag pulls through the registry,
    which authorizes a pull by the image being in the stream."""
    registry = fresh(openshift_registry_fs)
    app = push(registry, *oci_layouts["app-v1"], "lost/app:v1")
    multi = push(registry, *oci_layouts["multi"], "lost/multi:latest")
    forget(registry, "lost", "app")
    forget(registry, "lost", "multi")
    for image in (*multi.children,):
        registry.api.delete_image(image.digest)
    assert not pull_ok(registry, "lost/app:v1")

    host = ("--registry-host", registry.url)
    code, _ = run(registry, tmp_path, "dry", "check", "--namespace", "lost", "--recover", *host)
    assert code == EXIT_FINDINGS
    code, report = run(
        registry, tmp_path, "recover", "check", "--namespace", "lost", "--recover", "--confirm",
        *host,
    )  # fmt: skip
    assert code == EXIT_OK, report
    tags = {
        f"{s['metadata']['namespace']}/{s['metadata']['name']}": {
            t["tag"] for t in s["status"].get("tags") or []
        }
        for s in registry.api.imagestreams("lost")
    }
    expected = {"lost/app": {"lost-found-" + app.digest[7:]}}
    expected["lost/multi"] = {"lost-found-" + m.digest[7:] for m in multi.all_manifests()}
    assert tags == expected
    for repository, lost_tags in tags.items():
        for tag in lost_tags:
            assert_pulls(registry, f"{repository}:{tag}")

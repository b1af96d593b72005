"""The registry token as ``oc adm prune images`` sends it, on OpenShift's registry
(``auth: openshift``) against the real OpenShift API, with ServiceAccount tokens made by the
RBAC manifests of ``deployments/rbac/``.

OpenShift's registry lets a caller clear its caches (``DELETE /v2/<repo>/blobs/<digest>``,
``DELETE /admin/blobs/<digest>``) when a SelfSubjectAccessReview says it may
``delete images.image.openshift.io`` (``verifyPruneAccess`` in its
``pkg/dockerregistry/server/auth.go``); the manifests grant that in ``prune-images.yaml``.
A confirmed run asks the registry once before deleting anything; a refusal stops it there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import EXIT_FAILURE, EXIT_OK, main
from tests.harness.openshift_apiserver import RealOpenShiftAPI
from tests.harness.openshift_registry import OpenShiftRegistry, start_openshift_registry, stop_pair
from tests.harness.registry_bench import OciLayouts, PushedImage, assert_pulls, blob_path, push

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

DELETE_IMAGES = "delete images.image.openshift.io"


@pytest.fixture
def registry(openshift_apiserver: RealOpenShiftAPI, tmp_path: Path) -> Iterator[OpenShiftRegistry]:
    """A registry of its own on a folder, pushing into the (emptied) real API."""
    registry = start_openshift_registry(tmp_path / "registry", api=openshift_apiserver)
    try:
        yield registry
    finally:
        stop_pair(registry)


def prune_confirm(
    registry: OpenShiftRegistry, tmp_path: Path, kubeconfig: Path, *extra: str
) -> tuple[int, Any]:
    """``regprune prune --confirm --registry-url`` as the kubeconfig's user."""
    report = tmp_path / "report.json"
    code = main(
        [
            "prune",
            "--storage",
            registry.storage_url,
            "--metadata",
            "kube",
            "--kubeconfig",
            str(kubeconfig),
            "--shards",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--report",
            str(report),
            "--keep-younger-than",
            "0s",
            "--confirm",
            "--registry-url",
            registry.base_url,
            *extra,
        ]
    )
    return code, json.loads(report.read_text()) if report.exists() else None


def garbage(registry: OpenShiftRegistry, oci_layouts: OciLayouts, name: str) -> PushedImage:
    """An image kept (keep/app:v2) and one pushed, then its Image and stream deleted: its
    blobs are the hard prune's."""
    push(registry, *oci_layouts["app-v2"], "keep/app:v2")
    image = push(registry, *oci_layouts["tool"], f"{name}/tool:1")
    registry.api.delete_image(image.digest)
    registry.api.delete_imagestream(name, "tool")
    return image


def test_the_default_token_is_the_kubeconfigs_and_the_manifests_grant_enough(
    registry: OpenShiftRegistry, oci_layouts: OciLayouts, tmp_path: Path
) -> None:
    """No --registry-token-file: the ServiceAccount's token from the kubeconfig goes to the
    registry, which accepts the cache calls, so the pruned image pushed again pulls at once."""
    tool = garbage(registry, oci_layouts, "drop")
    keep = registry.api.imagestream("keep", "app")["status"]["tags"][0]["items"][0]["image"]
    kubeconfig = registry.api.rbac_kubeconfig(tmp_path / "regprune.kubeconfig")

    code, report = prune_confirm(registry, tmp_path, kubeconfig)

    assert code == EXIT_OK, report
    assert report["summary"]["failed"] == 0
    assert {r["digest"] for r in report["blobs"]} == tool.blob_digests()
    assert not any(registry.exists(blob_path(d)) for d in tool.blob_digests())
    assert_pulls(registry, "keep/app:v2")
    assert keep in {i["metadata"]["name"] for i in registry.api.images()}
    again = push(registry, *oci_layouts["tool"], "drop/tool:1")
    assert again.digest == tool.digest
    assert_pulls(registry, "drop/tool:1")  # the registry-wide cache forgot the blobs


def test_a_token_without_the_right_is_refused_before_anything_is_deleted(
    registry: OpenShiftRegistry,
    oci_layouts: OciLayouts,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The manifests minus ``delete images``: the snapshot and plan work (read-only), the
    registry answers the pre-flight with 401, and the run stops in one line, storage intact."""
    garbage(registry, oci_layouts, "refused")
    before = sorted(registry.list_storage())
    kubeconfig = registry.api.rbac_kubeconfig(
        tmp_path / "regprune.kubeconfig", without=[DELETE_IMAGES]
    )

    code, _ = prune_confirm(registry, tmp_path, kubeconfig)

    assert code == EXIT_FAILURE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("regprune: error: refusing to delete: the registry")
    assert "answered 401" in err[0] and DELETE_IMAGES in err[0]
    assert "the cluster credentials' token" in err[0] and "Traceback" not in err[0]
    assert sorted(registry.list_storage()) == before
    audit = list((tmp_path / "run" / "actions").glob("**/*.parquet"))
    assert audit == []


def test_the_token_file_wins_over_the_kubeconfig(
    registry: OpenShiftRegistry, oci_layouts: OciLayouts, tmp_path: Path
) -> None:
    """The kubeconfig's token may not delete images; --registry-token-file's may, and is the
    one the registry gets."""
    tool = garbage(registry, oci_layouts, "filewins")
    kubeconfig = registry.api.rbac_kubeconfig(
        tmp_path / "reader.kubeconfig", without=[DELETE_IMAGES]
    )
    token_file = tmp_path / "registry-token"
    token_file.write_text(registry.api.rbac_token() + "\n")

    code, report = prune_confirm(
        registry, tmp_path, kubeconfig, "--registry-token-file", str(token_file)
    )

    assert code == EXIT_OK, report
    assert report["summary"]["failed"] == 0
    assert not any(registry.exists(blob_path(d)) for d in tool.blob_digests())

"""``regprune prune-images`` against the real OpenShift API
(``tests/harness/openshift_apiserver.py``), as the ServiceAccount the RBAC manifests of
``deployments/rbac/`` make: the plan, the refusals when a grant is missing (the up-front access
review), ``--confirm`` with a real resourceVersion conflict, an ``oc get`` dump, and the hand-over
to the hard prune.

The real server dates every Image itself (now), so the runs that should prune Images pass
``--keep-younger-than=0s``; tag revisions keep the ``created`` times written through the status
subresource. What needs the API test server (an injected 403 on one list, the request log)
stays in tests/test_prune_images.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import CustomObjectsApi

from regprune.cli.main import main
from regprune.layout import V2_ROOT, blob_data_path, link_content, manifest_link_path
from regprune.permissions import PRUNE_IMAGES, grant_label
from tests.harness.openshift_api import fake_digest
from tests.harness.openshift_apiserver import REGISTRY_HOST, RealOpenShiftAPI

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

OLD = datetime.now(UTC) - timedelta(days=3)
HOST = REGISTRY_HOST
YOUNG_IS_NOW = "--keep-younger-than=0s"
WRITES = ["update imagestreams/status.image.openshift.io", "delete images.image.openshift.io"]
ALL_GRANTS = [grant_label(g, v) for g in PRUNE_IMAGES.grants for v in g.verbs]
LISTS = [grant_label(g, "list") for g in PRUNE_IMAGES.grants if g.verbs == ("list",)]


def deployment(ns: str, name: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"namespace": ns, "name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def pod(api: RealOpenShiftAPI, ns: str, name: str, image: str, phase: str) -> None:
    """A Pod in ``phase`` (no kubelet here: the phase is written through pods/status)."""
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": ns, "name": name},
            "spec": {"containers": [{"name": "app", "image": image}]},
        }
    )
    api.set_status("Pod", ns, name, {"phase": phase})


@pytest.fixture(autouse=True)
def _run_folders_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs without --out go to regprune-runs/ of the working directory: keep it the test's."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cluster(openshift_apiserver: RealOpenShiftAPI) -> dict[str, Any]:
    """Stream a/app tag latest with 5 revisions; v1 used by tag; revision 4 used by digest."""
    api = openshift_apiserver
    d = [fake_digest(f"rev{i}") for i in range(6)]
    for digest in d:
        api.add_image(digest=digest, repository="a/app", created=OLD)
    api.add_imagestream("a", "app", {"latest": d[:5], "v1": [d[5]]}, created=OLD)
    api.create(deployment("a", "web", f"{HOST}/a/app:v1"))
    pod(api, "a", "old", f"{HOST}/a/app@{d[4]}", "Running")
    pod(api, "a", "done", f"{HOST}/a/app@{d[3]}", "Succeeded")
    return {"api": api, "digests": d}


def run(tmp_path: Path, kubeconfig: Path, *extra: str) -> tuple[int, dict | None]:
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    args = ["prune-images", "--kubeconfig", str(kubeconfig), "--page-size", "2"]
    code = main([*args, "--report", str(report), *extra])
    return code, json.loads(report.read_text()) if report.exists() else None


def test_a_dry_run_plans_what_oc_would_and_reports_why(
    cluster: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d, api = cluster["digests"], cluster["api"]
    kubeconfig = api.rbac_kubeconfig(tmp_path / "regprune.kubeconfig")
    out = tmp_path / "run"
    code, report = run(
        tmp_path, kubeconfig, "--keep-tag-revisions=1", YOUNG_IS_NOW, "--out", str(out)
    )
    assert code == 0
    assert report["mode"] == "dry-run"
    assert report["settings"]["keep_tag_revisions"] == 1 and report["settings"]["all"] is True
    assert report["tag_revisions"] == [
        {
            "namespace": "a",
            "name": "app",
            "tag": "latest",
            "position": p,
            "image": d[p],
            "reason": "old-revision",
        }
        for p in (1, 2, 3)  # 0 kept (within 1 revision), 4 used by a running pod
    ]
    assert report["images"] == [{"image": i, "reason": "unreferenced"} for i in sorted(d[1:4])]
    assert report["summary"]["revisions_kept_by_reason"] == {
        "in-use-by-digest": 1,
        "in-use-by-tag": 1,
        "within-keep-revisions": 1,
    }
    assert "Summary: would delete 3 image object(s), would delete 3 image stream tag item(s)" in (
        capsys.readouterr().out
    )
    # oc's defaults (3 revisions, 60m) on the same snapshot: the server created the stream
    # and the Images minutes ago, so the young stream keeps every revision and no Image goes
    code, again = run(tmp_path, kubeconfig, "--snapshot", str(out))
    assert code == 0
    assert again["tag_revisions"] == [] and again["images"] == []
    assert set(again["summary"]["revisions_kept_by_reason"]) == {"stream-young"}
    assert again["settings"]["keep_tag_revisions"] == 3
    assert again["settings"]["keep_younger_than"] == "60m"


def test_invalid_references_refuse_unless_ignored(
    cluster: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The API takes any image string in a Deployment; prune-images refuses to plan around one
    it cannot parse (as oc does) unless told to ignore it."""
    api = cluster["api"]
    api.create(deployment("b", "bad", f"{HOST}/b/App:1"))
    kubeconfig = api.kubeconfig(tmp_path / "kc")
    code, report = run(tmp_path, kubeconfig, "--keep-tag-revisions=1", YOUNG_IS_NOW)
    assert code == 1
    assert report["mode"] == "refused" and report["images"] == []
    assert report["invalid_references"][0]["reference"] == f"{HOST}/b/App:1"
    err = capsys.readouterr().err
    assert "invalid-references" in err and "Deployment/bad namespace=b" in err
    code, report = run(
        tmp_path, kubeconfig, "--keep-tag-revisions=1", YOUNG_IS_NOW, "--ignore-invalid-refs"
    )
    assert code == 0 and len(report["images"]) == 3


def test_a_dump_written_by_oc_get_gives_the_same_plan(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    api = cluster["api"]
    kinds = "images,imagestreams,pods,deployments,replicasets,limitranges"
    dump = tmp_path / "dump.json"
    dump.write_text(api.oc("get", kinds, "-A", "-o", "json").stdout)
    kubeconfig = api.kubeconfig(tmp_path / "kc")
    flags = ["--all=false", YOUNG_IS_NOW]
    code, from_dump = run(tmp_path, kubeconfig, "--metadata", str(dump), *flags)
    assert code == 0
    code, from_kube = run(tmp_path, kubeconfig, *flags)
    assert code == 0
    assert from_dump["tag_revisions"] == from_kube["tag_revisions"]
    assert from_dump["images"] == from_kube["images"] and from_kube["images"]


def test_confirm_removes_revisions_and_images_and_keeps_what_is_held_again(
    cluster: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between plan and execution a planned Image is tagged again elsewhere: it survives. The
    first status update meets a real conflict (the stream changed after regprune read it:
    the server answers 409 for the stale resourceVersion), is read again and succeeds."""
    api, d = cluster["api"], cluster["digests"]
    kubeconfig = api.rbac_kubeconfig(tmp_path / "regprune.kubeconfig")
    out = tmp_path / "run"
    flags = ["--keep-tag-revisions=1", YOUNG_IS_NOW]
    code, _ = run(tmp_path, kubeconfig, *flags, "--out", str(out))
    assert code == 0
    api.add_imagestream("c", "again", {"x": [d[2]]}, created=OLD)

    replace = CustomObjectsApi.replace_namespaced_custom_object_status
    conflicts: list[int] = []

    def after_a_concurrent_change(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not conflicts:  # someone labels the stream meanwhile: its resourceVersion moves
            stream = api.imagestream("a", "app")
            assert stream is not None
            stream["metadata"].setdefault("labels", {})["touched"] = "yes"
            api.request("PUT", api.path_of("ImageStream", "a", "app"), stream)
        try:
            return replace(self, *args, **kwargs)
        except Exception as exc:
            conflicts.append(getattr(exc, "status", 0))
            raise

    monkeypatch.setattr(
        CustomObjectsApi, "replace_namespaced_custom_object_status", after_a_concurrent_change
    )
    code, report = run(tmp_path, kubeconfig, "--snapshot", str(out), *flags, "--confirm")

    assert code == 0
    assert conflicts == [409]
    assert report["mode"] == "delete"
    stream = api.imagestream("a", "app")
    assert stream is not None and stream["metadata"]["labels"] == {"touched": "yes"}
    items = {t["tag"]: [i["image"] for i in t["items"]] for t in stream["status"]["tags"]}
    assert items == {"latest": [d[0], d[4]], "v1": [d[5]]}
    remaining = {i["metadata"]["name"] for i in api.images()}
    assert remaining == {d[0], d[2], d[4], d[5]}
    assert report["summary"]["executed"] == {
        "Image:deleted": 2,
        "Image:kept": 1,
        "ImageStream:updated": 1,
    }


@pytest.mark.parametrize(
    ("without", "confirm", "missing"),
    [
        pytest.param(ALL_GRANTS, False, LISTS, id="dry-run-without-the-role"),
        pytest.param(ALL_GRANTS, True, ALL_GRANTS, id="confirm-without-the-role"),
        pytest.param(WRITES, True, WRITES, id="confirm-without-the-writes"),
    ],
)
def test_without_the_prune_images_grants_one_error_names_what_is_missing_and_nothing_changes(
    cluster: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    without: list[str],
    confirm: bool,
    missing: list[str],
) -> None:
    """The manifests applied without some of prune-images.yaml's rules: the up-front access
    review names exactly those, and nothing is listed, planned or changed."""
    api = cluster["api"]
    kubeconfig = api.rbac_kubeconfig(tmp_path / "regprune.kubeconfig", without=without)
    before = (api.images(), api.imagestreams())
    out = tmp_path / "run"
    flags = ["--keep-tag-revisions=1", YOUNG_IS_NOW, "--out", str(out)]
    code, report = run(tmp_path, kubeconfig, *flags, *(["--confirm"] if confirm else []))

    err = capsys.readouterr().err
    assert code == 1 and report is None
    (line,) = [line for line in err.splitlines() if line.startswith("regprune: error:")]
    assert line.startswith(
        f"regprune: error: forbidden: prune-images{' --confirm' if confirm else ''} needs "
        + ", ".join(missing)
        + ", which the API does not grant"
    ), line
    assert "regprune-prune-images" in line and "no changes made" in line
    assert "Traceback" not in err
    assert (api.images(), api.imagestreams()) == before
    assert not list(out.rglob("*.parquet"))  # nothing listed, nothing planned


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_confirm_hands_the_freed_storage_to_the_hard_prune(
    openshift_apiserver: RealOpenShiftAPI, tmp_path: Path
) -> None:
    """Revision 1 of a/app goes, its Image is deleted, then the hard prune deletes its blobs
    and manifest link; everything of the kept Image stays. As the RBAC manifests' account."""
    api = openshift_apiserver
    root = tmp_path / "registry"
    images = {}
    for name in ("keep", "gone"):
        manifest, layer, config = (f"{name}-{part}".encode() for part in ("m", "l", "c"))
        images[name] = [digest_of(manifest), digest_of(layer), digest_of(config)]
        files = {blob_data_path(digest_of(b)): b for b in (manifest, layer, config)}
        files[manifest_link_path("a/app", digest_of(manifest))] = link_content(digest_of(manifest))
        for key, data in files.items():
            path = root / V2_ROOT / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        api.add_image(
            digest=digest_of(manifest),
            repository="a/app",
            layers=[(digest_of(layer), 6)],
            config=digest_of(config),
            created=OLD,
        )
    api.add_imagestream("a", "app", {"latest": [images["keep"][0], images["gone"][0]]}, created=OLD)
    old = OLD.timestamp()
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    kubeconfig = api.rbac_kubeconfig(tmp_path / "regprune.kubeconfig")
    code, report = run(
        tmp_path,
        kubeconfig,
        "--keep-tag-revisions=1",
        YOUNG_IS_NOW,
        "--confirm",
        "--storage",
        str(root),
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 0
    assert [i["image"] for i in report["images"]] == [images["gone"][0]]
    assert api.image(images["gone"][0]) is None
    v2 = root / V2_ROOT  # the registry's files (the quarantine is beside them)
    stored = {p.relative_to(v2).as_posix() for p in v2.rglob("*") if p.is_file()}
    for digest in images["gone"]:
        assert blob_data_path(digest) not in stored
    assert manifest_link_path("a/app", images["gone"][0]) not in stored
    for digest in images["keep"]:
        assert blob_data_path(digest) in stored
    assert manifest_link_path("a/app", images["keep"][0]) in stored

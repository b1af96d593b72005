"""``regprune prune-images`` end to end: oc's options, the cluster through the API test server
(workload lists included) or a dump, the report JSON, and the refusals that remove nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import main
from regprune.permissions import PRUNE_IMAGES, READ_METADATA, Role, grant_label
from tests.openshift_api import OpenShiftAPIServer, fake_digest
from tests.workloads_api import add_workload

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=3)
HOST = "image-registry.openshift-image-registry.svc:5000"


def deployment(ns: str, name: str, image: str) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
    }


def pod(ns: str, name: str, image: str, phase: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "creationTimestamp": OLD.isoformat()},
        "spec": {"containers": [{"name": "app", "image": image}]},
        "status": {"phase": phase},
    }


@pytest.fixture(autouse=True)
def _run_folders_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs without --out go to regprune-runs/ of the working directory: keep it the test's."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cluster(openshift_api: OpenShiftAPIServer) -> dict[str, Any]:
    """Stream a/app tag latest with 5 revisions; v1 used by tag; revision 4 used by digest."""
    d = [fake_digest(f"rev{i}") for i in range(6)]
    for digest in d:
        openshift_api.add_image(digest=digest, repository="a/app", created=OLD)
    openshift_api.add_imagestream("a", "app", {"latest": d[:5], "v1": [d[5]]}, created=OLD)
    add_workload(openshift_api, deployment("a", "web", f"{HOST}/a/app:v1"))
    add_workload(openshift_api, pod("a", "old", f"{HOST}/a/app@{d[4]}", "Running"))
    add_workload(openshift_api, pod("a", "done", f"{HOST}/a/app@{d[3]}", "Succeeded"))
    return {"api": openshift_api, "digests": d}


def run(tmp_path: Path, kubeconfig: Path, *extra: str) -> tuple[int, dict | None]:
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    code = main(
        [
            "prune-images",
            "--kubeconfig",
            str(kubeconfig),
            "--page-size",
            "2",
            "--report",
            str(report),
            *extra,
        ]
    )
    return code, json.loads(report.read_text()) if report.exists() else None


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_dry_run_plans_what_oc_would_and_reports_why(
    cluster: dict[str, Any], openshift_kubeconfig: Path, tmp_path: Path, capsys
) -> None:
    d = cluster["digests"]
    api = cluster["api"]
    api.allow_roles(READ_METADATA, PRUNE_IMAGES)  # what deployments/rbac/ grants
    out = tmp_path / "run"

    def listings() -> dict[str, int]:  # lists started (pages after the first have continue)
        kinds = ("images", "imagestreams")
        return {
            kind: sum(
                1
                for r in api.requests
                if r.method == "GET" and r.path.endswith(f"/{kind}") and "continue" not in r.query
            )
            for kind in kinds
        }

    api.clear_requests()
    code, report = run(
        tmp_path,
        openshift_kubeconfig,
        "--keep-tag-revisions=1",
        "--keep-younger-than=60m",
        "--out",
        str(out),
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
    # its executor walked the plan over the listing this run just took: listed once
    assert report["summary"]["executed"] == {"Image:would-delete": 3, "ImageStream:would-update": 1}
    assert listings() == {"images": 1, "imagestreams": 1}
    # the snapshot is reusable, and the defaults are oc's (3 revisions, 60m); over a snapshot
    # the dry run reads the cluster as the confirmed run would (the streams twice, the Images)
    api.clear_requests()
    code, again = run(tmp_path, openshift_kubeconfig, "--snapshot", str(out))
    assert code == 0
    assert listings() == {"images": 1, "imagestreams": 2}
    assert [r["position"] for r in again["tag_revisions"]] == [3]
    assert again["settings"]["keep_tag_revisions"] == 3
    assert again["settings"]["keep_younger_than"] == "60m"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_workload_list_that_fails_means_nothing_is_planned(
    cluster: dict[str, Any], openshift_kubeconfig: Path, tmp_path: Path, capsys
) -> None:
    """Granted, but the list answers 403 anyway (a binding removed meanwhile, say)."""
    cluster["api"].inject("GET", r"/apis/apps/v1/deployments$", status=403, times=None)
    out = tmp_path / "run"
    code, report = run(tmp_path, openshift_kubeconfig, "--out", str(out))
    assert code == 1
    assert report is None
    assert not (out / "images_plan.parquet").exists()
    assert "forbidden" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_invalid_references_refuse_unless_ignored(
    cluster: dict[str, Any], openshift_kubeconfig: Path, tmp_path: Path, capsys
) -> None:
    add_workload(cluster["api"], deployment("b", "bad", f"{HOST}/b/App:1"))
    code, report = run(tmp_path, openshift_kubeconfig, "--keep-tag-revisions=1")
    assert code == 1
    assert report["mode"] == "refused" and report["images"] == []
    assert report["invalid_references"][0]["reference"] == f"{HOST}/b/App:1"
    err = capsys.readouterr().err
    assert "invalid-references" in err and "Deployment/bad namespace=b" in err
    code, report = run(
        tmp_path, openshift_kubeconfig, "--keep-tag-revisions=1", "--ignore-invalid-refs"
    )
    assert code == 0 and len(report["images"]) == 3


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_dump_of_oc_get_gives_the_same_plan(
    cluster: dict[str, Any], openshift_kubeconfig: Path, tmp_path: Path
) -> None:
    api = cluster["api"]
    from tests.workloads_api import _store

    items = api.images() + api.imagestreams()
    items += [obj for store in _store(api).values() for obj in store.values()]
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    code, from_dump = run(tmp_path, openshift_kubeconfig, "--metadata", str(dump), "--all=false")
    assert code == 0
    code, from_kube = run(tmp_path, openshift_kubeconfig, "--all=false")
    assert code == 0
    assert from_dump["tag_revisions"] == from_kube["tag_revisions"]
    assert from_dump["images"] == from_kube["images"] and from_kube["images"]


@pytest.mark.parametrize(
    "args",
    [
        ["--prune-over-size-limit", "--keep-tag-revisions=3"],
        ["--keep-tag-revisions=-1"],
        ["--keep-younger-than=soon"],
    ],
)
def test_bad_options_are_usage_errors(args: list[str], tmp_path: Path) -> None:
    assert main(["prune-images", "--metadata", str(tmp_path / "none.json"), *args]) == 2


def test_go_booleans_are_spelled_as_oc_spells_them() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["prune-images", "--all=maybe"])
    assert exited.value.code == 2


def test_stream_status_drops_planned_items_only_where_they_still_are() -> None:
    from regprune.images_execute import prune_stream_status

    a, b, c, n = (fake_digest(x) for x in "abcn")
    stream = {
        "metadata": {"name": "s", "resourceVersion": "7"},
        "status": {
            "tags": [
                {"tag": "t", "items": [{"image": n}, {"image": a}, {"image": b}]},
                {"tag": "u", "items": [{"image": c}]},
                {"tag": "v", "items": [{"image": b}]},
            ]
        },
    }
    planned = [
        {"tag": "t", "position": 1, "image": b},  # pushed over since: now at 2, still removed
        {"tag": "t", "position": 2, "image": a},  # moved up to 1: kept
        {"tag": "u", "position": 0, "image": c},  # the tag empties: dropped
    ]
    new, removed = prune_stream_status(stream, planned)
    assert removed == [
        {"tag": "t", "position": 2, "item": {"image": b}},
        {"tag": "u", "position": 0, "item": {"image": c}},
    ]
    assert new["status"]["tags"] == [
        {"tag": "t", "items": [{"image": n}, {"image": a}]},
        {"tag": "v", "items": [{"image": b}]},
    ]
    assert new["metadata"]["resourceVersion"] == "7"  # a conflict is the server's to detect
    assert stream["status"]["tags"][0]["items"][2] == {"image": b}  # the input is not changed


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_confirm_removes_revisions_and_images_and_keeps_what_is_held_again(
    cluster: dict[str, Any], openshift_kubeconfig: Path, tmp_path: Path
) -> None:
    api, d = cluster["api"], cluster["digests"]
    api.allow_roles(READ_METADATA, PRUNE_IMAGES)  # what deployments/rbac/ grants
    out = tmp_path / "run"
    code, _ = run(tmp_path, openshift_kubeconfig, "--keep-tag-revisions=1", "--out", str(out))
    assert code == 0
    # between plan and execution someone tags a planned image again: it must survive
    api.add_imagestream("c", "again", {"x": [d[2]]}, created=OLD)
    api.inject("PUT", r"/imagestreams/app/status", status=409, times=1)  # one conflict
    code, report = run(
        tmp_path,
        openshift_kubeconfig,
        "--snapshot",
        str(out),
        "--keep-tag-revisions=1",
        "--confirm",
    )
    assert code == 0
    assert report["mode"] == "delete"
    items = {
        t["tag"]: [i["image"] for i in t["items"]]
        for t in api.imagestream("a", "app")["status"]["tags"]
    }
    assert items == {"latest": [d[0], d[4]], "v1": [d[5]]}
    remaining = {i["metadata"]["name"] for i in api.images()}
    assert remaining == {d[0], d[2], d[4], d[5]}
    assert report["summary"]["executed"] == {
        "Image:deleted": 2,
        "Image:kept": 1,
        "ImageStream:updated": 1,
    }


LISTS_ONLY = Role(PRUNE_IMAGES.name, tuple(g for g in PRUNE_IMAGES.grants if g.verbs == ("list",)))
"""The prune-images role without its two writes."""


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    ("roles", "confirm", "missing"),
    [
        pytest.param(
            (READ_METADATA,),
            False,
            [grant_label(g, "list") for g in LISTS_ONLY.grants],
            id="dry-run-without-the-role",
        ),
        pytest.param(
            (READ_METADATA,),
            True,
            [grant_label(g, v) for g in PRUNE_IMAGES.grants for v in g.verbs],
            id="confirm-without-the-role",
        ),
        pytest.param(
            (READ_METADATA, LISTS_ONLY),
            True,
            ["update imagestreams/status.image.openshift.io", "delete images.image.openshift.io"],
            id="confirm-without-the-writes",
        ),
    ],
)
def test_without_the_prune_images_role_one_error_names_what_is_missing_and_nothing_changes(
    cluster: dict[str, Any],
    openshift_kubeconfig: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    roles: tuple[Role, ...],
    confirm: bool,
    missing: list[str],
) -> None:
    api = cluster["api"]
    api.allow_roles(*roles)
    images, stream = api.images(), api.imagestream("a", "app")
    flags = ["--keep-tag-revisions=1", "--out", str(tmp_path / "run")]
    code, report = run(tmp_path, openshift_kubeconfig, *flags, *(["--confirm"] if confirm else []))
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
    # Prefect's log lines (the flow's exception) are in the run folder's log, as every command's
    assert "Encountered exception" in (tmp_path / "run" / "regprune.log").read_text()
    # refused before anything was listed, planned or changed
    assert api.images() == images and api.imagestream("a", "app") == stream
    assert not [r for r in api.requests if r.method in ("PUT", "DELETE", "PATCH")]
    assert not [r for r in api.requests if r.method == "GET" and "/pods" in r.path]
    assert not (tmp_path / "run" / "images_plan.parquet").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_confirm_needs_the_cluster(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({"kind": "List", "items": []}))
    assert main(["prune-images", "--metadata", str(dump), "--confirm"]) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_only_prune_images_lists_workloads(
    cluster: dict[str, Any], openshift_kubeconfig: Path, tmp_path: Path
) -> None:
    """The hard prune's snapshot lists Images and ImageStreams only: it costs nothing more."""
    api = cluster["api"]
    storage = tmp_path / "registry" / "docker" / "registry" / "v2"
    (storage / "blobs").mkdir(parents=True)
    (storage / "repositories").mkdir()
    code = main(
        [
            "snapshot",
            "--storage",
            str(tmp_path / "registry"),
            "--kubeconfig",
            str(openshift_kubeconfig),
            "--out",
            str(tmp_path / "snap"),
            "--shards",
            "1",
        ]
    )
    assert code == 0
    workload_paths = ("/pods", "/deployments", "/limitranges", "/builds", "/cronjobs")
    listed = [r.path for r in api.requests if r.method == "GET"]
    assert not [p for p in listed if p.endswith(workload_paths)]
    assert any(p.endswith("/images") for p in listed)
    code, _ = run(tmp_path, openshift_kubeconfig)
    listed = [r.path for r in api.requests if r.method == "GET"]
    assert {p.rsplit("/", 1)[1] for p in listed if p.endswith(workload_paths)} == {
        "pods",
        "deployments",
        "limitranges",
        "builds",
        "cronjobs",
    }


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_confirm_hands_the_freed_storage_to_the_hard_prune(
    openshift_api: OpenShiftAPIServer, openshift_kubeconfig: Path, tmp_path: Path
) -> None:
    """Revision 1 of a/app goes, its Image is deleted, then the hard prune deletes its blobs
    and manifest link; everything of the kept Image stays."""
    import hashlib
    import os

    from regprune.layout import V2_ROOT, blob_data_path, link_content, manifest_link_path

    def digest_of(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

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
        openshift_api.add_image(
            digest=digest_of(manifest),
            repository="a/app",
            layers=[(digest_of(layer), 6)],
            config=digest_of(config),
            created=OLD,
        )
    openshift_api.add_imagestream(
        "a", "app", {"latest": [images["keep"][0], images["gone"][0]]}, created=OLD
    )
    old = OLD.timestamp()
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    code, report = run(
        tmp_path,
        openshift_kubeconfig,
        "--keep-tag-revisions=1",
        "--confirm",
        "--storage",
        str(root),
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 0
    assert [i["image"] for i in report["images"]] == [images["gone"][0]]
    v2 = root / V2_ROOT  # the registry's files (the quarantine is beside them)
    stored = {p.relative_to(v2).as_posix() for p in v2.rglob("*") if p.is_file()}
    for digest in images["gone"]:
        assert blob_data_path(digest) not in stored
    assert manifest_link_path("a/app", images["gone"][0]) not in stored
    for digest in images["keep"]:
        assert blob_data_path(digest) in stored
    assert manifest_link_path("a/app", images["keep"][0]) in stored

"""``regprune prune-images`` end to end: oc's options, the cluster through the API test server
(workload lists included) or a dump, the report JSON, and the refusals that remove nothing.

The plan, the RBAC refusals, ``--confirm`` (with a real conflict), ``oc get`` dumps and the
hand-over to the hard prune run against the real OpenShift API in
tests/test_prune_images_real.py. Here stays what needs the test server (an injected 403 on one
list, its request log) and what needs no server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import main
from regprune.permissions import PRUNE_IMAGES, READ_METADATA
from tests.harness.openshift_api import OpenShiftAPIServer, fake_digest
from tests.harness.workloads_api import add_workload

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
def test_a_dry_run_reads_the_cluster_once_and_over_a_snapshot_as_the_confirmed_run(
    cluster: dict[str, Any], openshift_kubeconfig: Path, tmp_path: Path, capsys
) -> None:
    """What the plan says is proven on the real API (test_prune_images_real); here, where every
    request is counted, how often the dry run reads the cluster."""
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
    """Granted, but the list answers 403 anyway (a binding removed meanwhile, say). (Test
    server: a 403 injected on that one list.)"""
    cluster["api"].inject("GET", r"/apis/apps/v1/deployments$", status=403, times=None)
    out = tmp_path / "run"
    code, report = run(tmp_path, openshift_kubeconfig, "--out", str(out))
    assert code == 1
    assert report is None
    assert not (out / "images_plan.parquet").exists()
    assert "forbidden" in capsys.readouterr().err


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
def test_confirm_needs_the_cluster(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({"kind": "List", "items": []}))
    assert main(["prune-images", "--metadata", str(dump), "--confirm"]) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_only_prune_images_lists_workloads(
    cluster: dict[str, Any], openshift_kubeconfig: Path, tmp_path: Path
) -> None:
    """The hard prune's snapshot lists Images and ImageStreams only: it costs nothing more.
    (Test server: its request log shows every path asked for.)"""
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

"""The hard-prune plan and the consistency check on registries written by the real registry,
with deliberate drift between storage and metadata (filesystem and S3).

The expectations are spelled out by hand from what was pushed and what was removed, following
the reference semantics (prune.go, restore.go) plus this project's additions (manifest-list
children count as in the stream, dangling layer links, stale uploads, the grace period).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import EXIT_FINDINGS, EXIT_OK, main
from tests.conftest import imagestream, rows, write_dump
from tests.harness.drift import (
    GHOST,
    HOST,
    Drift,
    build_drift,
    expected_plan,
    plan_from_report,
)
from tests.harness.registry_bench import Registry, push

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(scope="module")
def drift_fs(registry_fs: Registry, oci_layouts: Any, tmp_path_factory: pytest.TempPathFactory):
    return build_drift(registry_fs, oci_layouts, tmp_path_factory.mktemp("drift-fs"))


@pytest.fixture(scope="module")
def drift_s3(registry_s3: Registry, oci_layouts: Any, tmp_path_factory: pytest.TempPathFactory):
    return build_drift(registry_s3, oci_layouts, tmp_path_factory.mktemp("drift-s3"))


def run_prune(drift: Drift, tmp_path: Path, *extra: str) -> dict[str, Any]:
    report = tmp_path / "prune.json"
    args = ["prune", "--storage", drift.registry.storage_url, "--metadata", str(drift.dump)]
    args += ["--out", str(tmp_path / "run"), "--report", str(report), *extra]
    assert main(args) == EXIT_OK
    return json.loads(report.read_text())


def test_plan_on_filesystem(drift_fs: Drift, tmp_path: Path) -> None:
    report = run_prune(drift_fs, tmp_path)
    assert report["mode"] == "dry-run"
    assert plan_from_report(report) == expected_plan(drift_fs)
    summary = report["summary"]
    sizes = {r["digest"]: r["size"] for r in rows(tmp_path / "run" / "blobs.parquet")}
    uploads = {r["upload_id"]: r["size"] for r in rows(tmp_path / "run" / "uploads.parquet")}
    # what a confirmed run frees: the planned blobs and the stale upload (one count, both modes)
    assert summary["bytes_freed"] == (
        sum(sizes[d] for d in expected_plan(drift_fs)["blobs"]) + uploads[drift_fs.old_upload]
    )
    # the abandoned push and its link are young: kept and counted, not planned
    assert summary["blobs"]["kept_young"] == 1
    assert summary["uploads"]["delete"] == 1
    young = rows(tmp_path / "run" / "plan_blobs.parquet", "SELECT * FROM t WHERE action='keep'")
    assert [(r["digest"], r["kept_because"]) for r in young] == [(drift_fs.abandoned_blob, "young")]


def test_plan_with_no_grace_period_on_filesystem(drift_fs: Drift, tmp_path: Path) -> None:
    """0s: even the young abandoned push goes; the young upload is not stale yet (7d)."""
    report = run_prune(drift_fs, tmp_path, "--keep-younger-than", "0s")
    plan = plan_from_report(report)
    expected = expected_plan(drift_fs)
    assert plan["blobs"] == expected["blobs"] | {drift_fs.abandoned_blob}
    assert ("ns/app", drift_fs.abandoned_blob, "blob-deleted") in plan["layer_links"]
    assert report["summary"]["blobs"]["kept_young"] == 0


def test_plan_from_an_existing_snapshot_keeps_everything_young(
    drift_fs: Drift, tmp_path: Path
) -> None:
    """A grace period longer than the registry's age protects everything."""
    run_prune(drift_fs, tmp_path)
    report = tmp_path / "again.json"
    args = ["prune", "--snapshot", str(tmp_path / "run"), "--keep-younger-than", "60d"]
    assert main([*args, "--report", str(report)]) == EXIT_OK
    again = json.loads(report.read_text())
    assert all(not again[key] for key in plan_from_report(again))
    assert again["summary"]["blobs"]["kept_young"] == len(expected_plan(drift_fs)["blobs"]) + 1


def test_plan_on_s3(drift_s3: Drift, tmp_path: Path, s3_env: dict[str, str]) -> None:
    report = run_prune(drift_s3, tmp_path, "--keep-younger-than", "0s", "--upload-max-age", "0s")
    assert plan_from_report(report) == expected_plan(drift_s3)


def expected_check(drift: Drift, namespace: str | None = None) -> dict[str, Any]:
    images = drift.images
    v2 = images["app-v2"]
    layer11 = v2.layers[2].digest
    broken_tags = [
        {
            "namespace": "ns",
            "name": "app",
            "tag": "ghost",
            "position": 0,
            "image": GHOST,
            "missing": GHOST,
            "kind": "image",
        },
        {
            "namespace": "ns",
            "name": "app",
            "tag": "v2",
            "position": 0,
            "image": v2.digest,
            "missing": layer11,
            "kind": "layer",
        },
        {
            "namespace": "ns",
            "name": "other",
            "tag": "latest",
            "position": 0,
            "image": v2.digest,
            "missing": layer11,
            "kind": "layer",
        },
    ]
    lost = [
        ("ns", "app", images["app-v1"].digest),
        ("ns", "other", images["base"].digest),
    ]
    if namespace is None:
        lost.append(("gone", "tool", images["tool"].digest))
    return {
        "broken_imagestream_tags": broken_tags,
        "broken_images": [{"image": v2.digest, "missing": layer11, "kind": "layer"}],
        "lost_found": [
            {
                "namespace": ns,
                "name": name,
                "digest": digest,
                "tag": "lost-found-" + digest.removeprefix("sha256:"),
            }
            for ns, name, digest in sorted(lost)
        ],
        "invalid_manifests": [
            {"repository": "ns/broken", "digest": v2.digest, "reason": f"missing layer {layer11}"}
        ],
    }


def run_check(drift: Drift, tmp_path: Path, *extra: str) -> dict[str, Any]:
    report = tmp_path / "check.json"
    args = ["check", "--storage", drift.registry.storage_url, "--metadata", str(drift.dump)]
    args += ["--out", str(tmp_path / "run"), "--report", str(report), *extra]
    assert main(args) == EXIT_FINDINGS
    return json.loads(report.read_text())


def test_check_on_filesystem(drift_fs: Drift, tmp_path: Path, capsys: Any) -> None:
    report = run_check(drift_fs, tmp_path)
    assert report == expected_check(drift_fs)
    out = capsys.readouterr().out
    assert 'Broken imagestream tag "ns/app:ghost" in position 0' in out
    assert "Would add image" in out


def test_check_one_namespace_on_filesystem(drift_fs: Drift, tmp_path: Path) -> None:
    report = run_check(drift_fs, tmp_path, "--namespace", "ns")
    assert report == expected_check(drift_fs, namespace="ns")


def test_check_on_s3(drift_s3: Drift, tmp_path: Path, s3_env: dict[str, str]) -> None:
    assert run_check(drift_s3, tmp_path) == expected_check(drift_s3)


def test_a_push_reusing_old_orphan_layers_keeps_them(
    drift_fs: Drift, oci_layouts: Any, tmp_path: Path
) -> None:
    """app-v1 is pushed again (its Image not created yet): its layers are old orphans whose
    links are old too, so only the young manifest referencing them can keep them."""
    v1 = drift_fs.images["app-v1"]
    push(drift_fs.registry, *oci_layouts["app-v1"], "ns/app:again")
    report = run_prune(drift_fs, tmp_path)
    planned = plan_from_report(report)["blobs"]
    own_blobs = {v1.config.digest, v1.layers[2].digest}
    assert not own_blobs & planned
    links = rows(tmp_path / "run" / "layer_links.parquet")
    old = {r["digest"] for r in links if r["repository"] == "ns/app"}
    assert own_blobs <= old  # the push wrote no new layer links: the registry had them
    kept = rows(tmp_path / "run" / "plan_blobs.parquet", "SELECT * FROM t WHERE action='keep'")
    assert own_blobs <= {r["digest"] for r in kept}
    assert planned == expected_plan(drift_fs)["blobs"] - own_blobs - {v1.digest}


def test_consistent_registry_exits_zero(
    registry_fs: Registry, oci_layouts: Any, tmp_path: Path, drift_fs: Drift
) -> None:
    """Only the namespace nothing drifted in: 0 findings, exit code 0. (Runs last: it adds a
    repository the drift metadata does not know.)"""
    push(registry_fs, *oci_layouts["tool"], "clean/tool:1.0")
    items = [*drift_fs.images["tool"].openshift_images(HOST)]
    items.append(imagestream("clean", "tool", {"1.0": [drift_fs.images["tool"].digest]}, HOST))
    dump = write_dump(tmp_path / "dump.json", items)
    args = ["check", "--storage", registry_fs.storage_url, "--metadata", str(dump)]
    assert main([*args, "--namespace", "clean", "--out", str(tmp_path / "run")]) == EXIT_OK

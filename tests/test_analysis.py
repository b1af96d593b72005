"""The hard-prune plan and the consistency check on registries written by the real registry,
with deliberate drift between storage and metadata (filesystem and S3).

The expectations are spelled out by hand from what was pushed and what was removed, following
the reference semantics (prune.go, restore.go) plus this project's additions (manifest-list
children count as in the stream, dangling layer links, stale uploads, the grace period).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from regprune.flows.cli import EXIT_FINDINGS, EXIT_OK, main
from tests.conftest import imagestream, rows, write_dump
from tests.registry_bench import (
    PushedImage,
    Registry,
    push,
    start_upload,
    upload_blob_without_manifest,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
HOST = "image-registry.openshift-image-registry.svc:5000"
GHOST = "sha256:" + "d" * 64
MONTH = 30 * 86400


@dataclass
class Drift:
    """A registry with drift, and what the rules say about it."""

    registry: Registry
    images: dict[str, PushedImage]
    abandoned_blob: str
    old_upload: str
    young_upload: str
    backdated: bool
    dump: Path | None = None
    expected: dict[str, Any] = field(default_factory=dict)


def _blob_dir(registry: Registry, digest: str) -> str:
    hex_ = digest.removeprefix("sha256:")
    return f"blobs/sha256/{hex_[:2]}/{hex_}/"


def delete_blob_from_storage(registry: Registry, digest: str) -> None:
    """Data deleted behind the registry's back: the metadata still references it."""
    if registry.storage_root is not None:
        shutil.rmtree(registry.path(_blob_dir(registry, digest)))
        return
    assert registry.s3 is not None
    client = registry.s3.moto.client()
    key = registry.key(_blob_dir(registry, digest) + "data")
    client.delete_object(Bucket=registry.s3.bucket, Key=key)


def backdate(registry: Registry, keep_young: set[str]) -> None:
    """Make every stored file a month old except the ones under the given prefixes."""
    assert registry.storage_root is not None
    old = time.time() - MONTH
    for rel in registry.list_storage():
        if not any(rel.startswith(prefix) for prefix in keep_young):
            os.utime(registry.path(rel), (old, old))


def build_drift(registry: Registry, layouts: Any, tmp: Path) -> Drift:
    images = {
        "app-v1": push(registry, *layouts["app-v1"], "ns/app:v1"),
        "app-v2": push(registry, *layouts["app-v2"], "ns/app:v2"),
        "multi": push(registry, *layouts["multi"], "ns/multi:latest"),
        "tool": push(registry, *layouts["tool"], "gone/tool:1.0"),
        "base": push(registry, *layouts["base"], "ns/other:old"),
    }
    push(registry, *layouts["app-v2"], "ns/other:latest")
    push(registry, *layouts["app-v2"], "ns/broken:x")
    push(registry, *layouts["tool"], "lonely:1.0")
    abandoned = upload_blob_without_manifest(registry, "ns/app", b"an abandoned push")
    old_upload = start_upload(registry, "ns/app")
    young_upload = start_upload(registry, "ns/multi")
    delete_blob_from_storage(registry, images["app-v2"].layers[2].digest)
    backdated = registry.storage_root is not None
    if backdated:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - MONTH))
        registry.path(f"repositories/ns/app/_uploads/{old_upload}/startedat").write_text(started)
        backdate(
            registry,
            {
                _blob_dir(registry, abandoned),
                f"repositories/ns/app/_layers/sha256/{abandoned.removeprefix('sha256:')}/",
                f"repositories/ns/multi/_uploads/{young_upload}/",
            },
        )
    drift = Drift(registry, images, abandoned, old_upload, young_upload, backdated)
    drift.dump = metadata_dump(drift, tmp / "dump.json")
    return drift


def metadata_dump(drift: Drift, path: Path) -> Path:
    """app-v1 and tool (and the gone/tool stream) were deleted from the metadata."""
    images = drift.images
    items: list[dict] = []
    for name in ("app-v2", "multi", "base"):
        items.extend(images[name].openshift_images(HOST))
    app_v2 = images["app-v2"].digest
    items += [
        imagestream("ns", "app", {"v2": [app_v2], "ghost": [GHOST]}, HOST),
        imagestream("ns", "multi", {"latest": [images["multi"].digest]}, HOST),
        imagestream("ns", "other", {"latest": [app_v2]}, HOST),
        imagestream("ns", "broken", {}, HOST),
    ]
    return write_dump(path, items)


def expected_plan(drift: Drift) -> dict[str, set]:
    images = drift.images
    v1, v2, tool = images["app-v1"], images["app-v2"], images["tool"]
    layer11 = v2.layers[2].digest
    v1_only = {v1.digest, v1.config.digest, v1.layers[2].digest}
    tool_only = {tool.digest, tool.config.digest, *(layer.digest for layer in tool.layers)}
    blobs = v1_only | tool_only
    if not drift.backdated:  # everything is young on S3: run with a 0s grace period
        blobs.add(drift.abandoned_blob)
    uploads = {("ns/app", drift.old_upload)}
    if not drift.backdated:
        uploads.add(("ns/multi", drift.young_upload))
    layer_links = {
        ("ns/app", v1.config.digest, "blob-deleted"),
        ("ns/app", v1.layers[2].digest, "blob-deleted"),
        ("ns/app", layer11, "blob-missing"),
        ("ns/other", layer11, "blob-missing"),
        ("ns/broken", layer11, "blob-missing"),
    }
    if not drift.backdated:
        layer_links.add(("ns/app", drift.abandoned_blob, "blob-deleted"))
    return {
        "repositories": {("gone/tool", "imagestream-missing"), ("lonely", "invalid-name")},
        "manifest_links": {
            ("ns/app", v1.digest, "image-missing"),
            ("ns/other", images["base"].digest, "not-in-imagestream"),
            ("ns/broken", v2.digest, "not-in-imagestream"),
        },
        "blobs": blobs,
        "layer_links": layer_links,
        "uploads": uploads,
    }


def plan_from_report(report: dict[str, Any]) -> dict[str, set]:
    return {
        "repositories": {(r["repository"], r["reason"]) for r in report["repositories"]},
        "manifest_links": {
            (r["repository"], r["digest"], r["reason"]) for r in report["manifest_links"]
        },
        "blobs": {r["digest"] for r in report["blobs"]},
        "layer_links": {(r["repository"], r["digest"], r["reason"]) for r in report["layer_links"]},
        "uploads": {(r["repository"], r["upload_id"]) for r in report["uploads"]},
    }


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
    assert summary["bytes_freed"] == sum(sizes[d] for d in expected_plan(drift_fs)["blobs"])
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

"""A registry written by the real registry, with deliberate drift between storage and
metadata, and what the hard-prune rules say about it (shared by the analysis and the
execution tests)."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import imagestream, write_dump
from tests.harness.registry_bench import (
    PushedImage,
    Registry,
    push,
    start_upload,
    upload_blob_without_manifest,
)

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

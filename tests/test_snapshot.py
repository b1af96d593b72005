"""The snapshot tables against what the real registry wrote, on a folder and on S3."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import main
from tests.conftest import imagestream, rows, write_dump
from tests.harness.registry_bench import (
    Registry,
    push,
    start_upload,
    upload_blob_without_manifest,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
HOST = "image-registry.openshift-image-registry.svc:5000"
BLOB_KEY = re.compile(r"blobs/sha256/([0-9a-f]{2})/([0-9a-f]{64})/data")


class Pushed:
    """What a module pushed: images by repository:tag plus loose uploads."""

    def __init__(self, registry: Registry, layouts: Any):
        self.registry = registry
        self.images = {
            "ns/app:v1": push(registry, *layouts["app-v1"], "ns/app:v1"),
            "ns/app:v2": push(registry, *layouts["app-v2"], "ns/app:v2"),
            "ns/multi:latest": push(registry, *layouts["multi"], "ns/multi:latest"),
            "other/tool:1.0": push(registry, *layouts["tool"], "other/tool:1.0"),
        }
        self.images["ns/app:latest"] = push(registry, *layouts["app-v2"], "ns/app:latest")
        self.orphan_blob = upload_blob_without_manifest(registry, "ns/app", b"abandoned push")
        self.upload_id = start_upload(registry, "other/tool")

    def dump(self, path: Path) -> Path:
        items: list[dict] = []
        for image in self.images.values():
            items.extend(image.openshift_images(HOST))
        streams = {}
        for ref, image in self.images.items():
            repository, tag = ref.split(":")
            streams.setdefault(repository, {})[tag] = [image.digest]
        for repository, tags in streams.items():
            namespace, name = repository.split("/")
            items.append(imagestream(namespace, name, tags, HOST))
        return write_dump(path, items)

    def manifests(self) -> set[tuple[str, str]]:
        return {
            (image.repository, manifest.digest)
            for image in self.images.values()
            for manifest in image.all_manifests()
        }


def expected_blobs(registry: Registry) -> dict[str, int]:
    out = {}
    for key in registry.list_storage():
        match = BLOB_KEY.fullmatch(key)
        if match:
            out[f"sha256:{match.group(2)}"] = len(registry.read(key))
    return out


def check_tables(out: Path, pushed: Pushed) -> None:
    registry = pushed.registry
    blobs = {r["digest"]: r["size"] for r in rows(out / "blobs.parquet")}
    assert blobs == expected_blobs(registry)
    assert pushed.orphan_blob in blobs

    repositories = rows(out / "repositories.parquet")
    assert [(r["repository"], r["namespace"], r["name"]) for r in repositories] == [
        ("ns/app", "ns", "app"),
        ("ns/multi", "ns", "multi"),
        ("other/tool", "other", "tool"),
    ]
    assert all(r["valid_name"] for r in repositories)

    manifest_links = {(r["repository"], r["digest"]) for r in rows(out / "manifest_links.parquet")}
    assert manifest_links == pushed.manifests()

    layer_links = {(r["repository"], r["digest"]) for r in rows(out / "layer_links.parquet")}
    for image in pushed.images.values():
        assert {(image.repository, d) for d in image.layer_digests()} <= layer_links
    assert ("ns/app", pushed.orphan_blob) in layer_links

    tags = {(r["repository"], r["tag"]): r["digest"] for r in rows(out / "tags.parquet")}
    assert tags == {tuple(ref.split(":")): image.digest for ref, image in pushed.images.items()}
    tag_index = {(r["repository"], r["tag"], r["digest"]) for r in rows(out / "tag_index.parquet")}
    assert ("ns/app", "latest", pushed.images["ns/app:latest"].digest) in tag_index

    uploads = rows(out / "uploads.parquet")
    assert [(u["repository"], u["upload_id"]) for u in uploads] == [
        ("other/tool", pushed.upload_id)
    ]
    assert uploads[0]["started_at"] is not None
    assert rows(out / "storage_anomalies.parquet") == []

    summary = json.loads((out / "snapshot.json").read_text())
    assert summary["metadata_started_at"] <= summary["storage_started_at"]
    assert summary["rows"]["blobs"] == len(blobs)


def check_metadata_tables(out: Path, pushed: Pushed) -> None:
    images = {r["image"]: r for r in rows(out / "images.parquet")}
    image_blobs = rows(out / "image_blobs.parquet")
    for image in pushed.images.values():
        for manifest in image.all_manifests():
            row = images[manifest.digest]
            assert row["managed"] is True
            assert row["media_type"] == manifest.media_type
            assert row["config_digest"] == (manifest.config.digest if manifest.config else None)
            assert row["docker_image_reference"] == manifest.reference(HOST)
            layers = [
                (b["digest"], b["size"])
                for b in sorted(image_blobs, key=lambda b: b["position"] or 0)
                if b["image"] == manifest.digest and b["kind"] == "layer"
            ]
            assert layers == [(layer.digest, layer.size) for layer in manifest.layers]
        children = {
            b["digest"]
            for b in image_blobs
            if b["image"] == image.digest and b["kind"] == "manifest_list_child"
        }
        assert children == {child.digest for child in image.children}

    tags = rows(out / "imagestream_tags.parquet")
    found = {(t["namespace"], t["name"], t["tag"], t["position"]): t["image"] for t in tags}
    assert found[("ns", "app", "latest", 0)] == pushed.images["ns/app:latest"].digest
    assert len(rows(out / "imagestreams.parquet")) == 3


@pytest.fixture(scope="module")
def pushed_fs(registry_fs: Registry, oci_layouts: Any) -> Pushed:
    return Pushed(registry_fs, oci_layouts)


@pytest.fixture(scope="module")
def pushed_s3(registry_s3: Registry, oci_layouts: Any) -> Pushed:
    return Pushed(registry_s3, oci_layouts)


def test_snapshot_of_a_filesystem_registry(pushed_fs: Pushed, tmp_path: Path) -> None:
    dump = pushed_fs.dump(tmp_path / "dump.json")
    out = tmp_path / "snap"
    storage = str(pushed_fs.registry.storage_url)
    args = ["snapshot", "--storage", storage, "--metadata", str(dump), "--out", str(out)]
    assert main(args) == 0
    check_tables(out, pushed_fs)
    check_metadata_tables(out, pushed_fs)


def test_snapshot_through_the_registry_config(pushed_fs: Pushed, tmp_path: Path) -> None:
    dump = pushed_fs.dump(tmp_path / "dump.json")
    out = tmp_path / "snap"
    config = str(pushed_fs.registry.config_path)
    assert (
        main(["snapshot", "--registry-config", config, "--metadata", str(dump), "--out", str(out)])
        == 0
    )
    check_tables(out, pushed_fs)


def test_snapshot_of_an_s3_registry(
    pushed_s3: Pushed, tmp_path: Path, s3_env: dict[str, str]
) -> None:
    dump = pushed_s3.dump(tmp_path / "dump.json")
    out = tmp_path / "snap"
    storage = pushed_s3.registry.storage_url
    assert storage.startswith("s3://")
    assert main(["snapshot", "--storage", storage, "--metadata", str(dump), "--out", str(out)]) == 0
    check_tables(out, pushed_s3)
    check_metadata_tables(out, pushed_s3)


def test_s3_snapshot_through_the_registry_config(
    pushed_s3: Pushed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry's own config carries bucket, endpoint and keys: nothing else is needed."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    dump = pushed_s3.dump(tmp_path / "dump.json")
    out = tmp_path / "snap"
    config = str(pushed_s3.registry.config_path)
    assert (
        main(["snapshot", "--registry-config", config, "--metadata", str(dump), "--out", str(out)])
        == 0
    )
    check_tables(out, pushed_s3)

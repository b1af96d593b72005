"""Tests of the test bench itself: if these fail, every end-to-end test built on it is suspect.

They pin down the facts the bench encodes: where a push really puts files (filesystem and S3),
that digests are re-read from the registry after conversion, that the OpenShift Image objects
match the stored manifests, and that shared layers are stored once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from tests.harness.registry_bench import (
    BASE_LAYERS,
    DOCKER_CONFIG,
    DOCKER_IMAGE_METADATA_API_VERSION,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_V2,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    LayerSpec,
    MotoServer,
    OciLayouts,
    PushedImage,
    Registry,
    assert_pulls,
    blob_path,
    build_image,
    build_index,
    delete_blob_via_api,
    fetch_manifest,
    free_port,
    layer_blob,
    pull_ok,
    push,
    sha256_digest,
    start_upload,
    upload_blob_without_manifest,
)

HOST = "image-registry.openshift-image-registry.svc:5000"


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _revision(repo: str, digest: str) -> str:
    return f"repositories/{repo}/_manifests/revisions/sha256/{_hex(digest)}/link"


def _layer_link(repo: str, digest: str) -> str:
    return f"repositories/{repo}/_layers/sha256/{_hex(digest)}/link"


def _assert_stored(registry: Registry, image: PushedImage) -> None:
    """Every blob, revision and layer link of ``image`` is in storage with the right content."""
    repo = image.repository
    for manifest in image.all_manifests():
        assert registry.read(blob_path(manifest.digest)) == _manifest_bytes(registry, manifest)
        assert registry.read(_revision(repo, manifest.digest)) == manifest.digest.encode()
    for digest in image.layer_digests():
        data = registry.read(blob_path(digest))
        assert sha256_digest(data) == digest
        assert registry.read(_layer_link(repo, digest)) == digest.encode()
    if image.tag:
        tag_dir = f"repositories/{repo}/_manifests/tags/{image.tag}"
        assert registry.read(f"{tag_dir}/current/link") == image.digest.encode()
        assert registry.exists(f"{tag_dir}/index/sha256/{_hex(image.digest)}/link")


def _manifest_bytes(registry: Registry, image: PushedImage) -> bytes:
    body, _, digest = fetch_manifest(registry, image.repository, image.digest)
    assert digest == image.digest
    return body


# --------------------------------------------------------------------------- pure Python


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_layer_blob_is_deterministic_and_small() -> None:
    gz1, raw1 = layer_blob(7)
    gz2, raw2 = layer_blob(LayerSpec(7))
    assert (gz1, raw1) == (gz2, raw2)
    assert gzip.decompress(gz1) == raw1
    assert layer_blob(8)[0] != gz1
    assert 1024 < len(gz1) < 8192
    assert len(layer_blob(LayerSpec(7, size=10_000))[0]) > 10_000


def test_build_image_writes_a_valid_layout(tmp_path: Path) -> None:
    img = build_image(tmp_path, "t1", [1, LayerSpec(2, 3000)], ("linux", "arm64", "v8"))
    assert json.loads((tmp_path / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    index = json.loads((tmp_path / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["digest"] == img.digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "t1"

    def blob(digest: str) -> bytes:
        data = (tmp_path / "blobs" / "sha256" / _hex(digest)).read_bytes()
        assert sha256_digest(data) == digest
        return data

    manifest = json.loads(blob(img.digest))
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [OCI_LAYER, OCI_LAYER]
    config = json.loads(blob(manifest["config"]["digest"]))
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
    diff_ids = [
        sha256_digest(gzip.decompress(blob(layer["digest"]))) for layer in manifest["layers"]
    ]
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
    assert img.diff_ids == diff_ids

    # re-tagging replaces the entry, a second tag adds one
    build_image(tmp_path, "t1", [3])
    build_image(tmp_path, "t2", [1])
    tags = [
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in json.loads((tmp_path / "index.json").read_text())["manifests"]
    ]
    assert sorted(tags) == ["t1", "t2"]


def test_build_index_and_standard_layouts(oci_layouts: OciLayouts, tmp_path: Path) -> None:
    assert set(oci_layouts) == {"base", "app-v1", "app-v2", "tool", "multi"}
    layout_dir, tag = oci_layouts["app-v1"]
    assert tag == "app-v1" and (layout_dir / "index.json").is_file()
    built = oci_layouts.built
    base = [d.digest for d in built["base"].layers]
    assert len(base) == len(BASE_LAYERS)
    for name in ("app-v1", "app-v2"):
        assert [d.digest for d in built[name].layers][: len(base)] == base
    assert built["app-v1"].layers[-1] != built["app-v2"].layers[-1]
    multi = built["multi"]
    assert multi.media_type == OCI_INDEX
    assert [
        (c.platform.architecture, c.platform.variant) for c in multi.children if c.platform
    ] == [("amd64", None), ("arm64", "v8")]
    with pytest.raises(ValueError):
        build_index(tmp_path, "x", multi.children)  # children from another layout


# --------------------------------------------------------------------------- filesystem


@pytest.mark.slow
def test_push_v2s2_lands_at_documented_paths(
    registry_fs: Registry, oci_layouts: OciLayouts
) -> None:
    built = oci_layouts.built["app-v1"]
    image = push(registry_fs, *oci_layouts["app-v1"], "ns/app:v1")
    assert (image.repository, image.tag) == ("ns/app", "v1")
    assert image.media_type == DOCKER_V2
    assert image.digest != built.digest  # skopeo rewrote the manifest...
    assert image.config is not None and built.config is not None
    assert image.config.digest == built.config.digest  # ...but not the blobs
    assert image.config.media_type == DOCKER_CONFIG
    assert [(x.digest, x.size) for x in image.layers] == [(x.digest, x.size) for x in built.layers]
    assert {x.media_type for x in image.layers} == {DOCKER_LAYER}
    assert image.manifest_size == len(_manifest_bytes(registry_fs, image))

    root = registry_fs.storage_root
    assert root is not None and registry_fs.storage_url == str(root)
    v2 = root / "docker" / "registry" / "v2"
    hexd = _hex(image.digest)
    assert (v2 / "blobs" / "sha256" / hexd[:2] / hexd / "data").is_file()
    repo = v2 / "repositories" / "ns" / "app"
    assert (
        repo / "_manifests" / "revisions" / "sha256" / hexd / "link"
    ).read_text() == image.digest
    assert (repo / "_manifests" / "tags" / "v1" / "current" / "link").read_text() == image.digest
    layer_links = {p.parent.name for p in (repo / "_layers" / "sha256").glob("*/link")}
    assert layer_links == {_hex(d) for d in image.layer_digests()}
    _assert_stored(registry_fs, image)
    assert_pulls(registry_fs, "ns/app:v1")
    assert pull_ok(registry_fs, f"ns/app@{image.digest}")
    assert not pull_ok(registry_fs, "ns/app:missing")

    config = registry_fs.config()
    assert config["storage"]["delete"] == {"enabled": True}
    assert config["storage"]["cache"] == {"blobdescriptor": "inmemory"}
    assert "rootdirectory" in registry_fs.config_path.read_text()


@pytest.mark.slow
def test_push_index_as_manifest_list(registry_fs: Registry, oci_layouts: OciLayouts) -> None:
    image = push(registry_fs, *oci_layouts["multi"], "ns/multi:latest")
    assert image.media_type == DOCKER_LIST and image.is_list
    assert image.config is None and image.layers == []
    assert [c.media_type for c in image.children] == [DOCKER_V2, DOCKER_V2]
    plats = [
        (c.platform.os, c.platform.architecture, c.platform.variant)
        for c in image.children
        if c.platform
    ]
    assert plats == [("linux", "amd64", None), ("linux", "arm64", "v8")]
    listed = [m["digest"] for m in image.manifest["manifests"]]
    assert listed == [c.digest for c in image.children]
    assert all(c.tag is None and c.repository == "ns/multi" for c in image.children)
    _assert_stored(registry_fs, image)
    # children are revisions of the repository but have no tag of their own
    tags = registry_fs.path("repositories/ns/multi/_manifests/tags")
    assert [p.name for p in tags.iterdir()] == ["latest"]
    assert_pulls(registry_fs, "ns/multi:latest")
    assert_pulls(registry_fs, f"ns/multi@{image.children[1].digest}")


@pytest.mark.slow
def test_push_oci_keeps_digests(registry_fs: Registry, oci_layouts: OciLayouts) -> None:
    tool = push(registry_fs, *oci_layouts["tool"], "ns/tool:oci", format="oci")
    assert tool.media_type == OCI_MANIFEST
    assert tool.digest == oci_layouts.built["tool"].digest
    multi = push(registry_fs, *oci_layouts["multi"], "ns/multi-oci:latest", format="oci")
    assert multi.media_type == OCI_INDEX
    assert multi.digest == oci_layouts.built["multi"].digest
    assert [c.media_type for c in multi.children] == [OCI_MANIFEST, OCI_MANIFEST]
    assert multi.openshift_image(HOST)["dockerImageManifestMediaType"] == OCI_INDEX
    _assert_stored(registry_fs, multi)
    assert_pulls(registry_fs, "ns/multi-oci:latest")
    # without --all only this host's platform is copied and tagged
    one = push(registry_fs, *oci_layouts["multi"], "ns/multi-one:latest", all=False)
    assert one.media_type == DOCKER_V2 and one.children == []
    assert one.config_json is not None and one.config_json["architecture"] == "amd64"


@pytest.mark.slow
def test_openshift_images_match_manifests(registry_fs: Registry, oci_layouts: OciLayouts) -> None:
    app = push(registry_fs, *oci_layouts["app-v2"], "ns/os-app:v2")
    img = app.openshift_image(HOST)
    assert img["apiVersion"] == "image.openshift.io/v1" and img["kind"] == "Image"
    assert img["metadata"]["name"] == app.digest
    assert img["metadata"]["annotations"] == {
        "openshift.io/image.managed": "true",
        "image.openshift.io/dockerLayersOrder": "ascending",
        "image.openshift.io/manifestBlobStored": "true",
    }
    assert img["dockerImageReference"] == f"{HOST}/ns/os-app@{app.digest}"
    assert img["dockerImageManifestMediaType"] == DOCKER_V2
    assert img["dockerImageMetadataVersion"] == "1.0"
    meta = img["dockerImageMetadata"]
    assert meta["kind"] == "DockerImage"
    assert meta["apiVersion"] == DOCKER_IMAGE_METADATA_API_VERSION
    assert meta["Id"] == app.manifest["config"]["digest"]
    assert meta["Architecture"] == "amd64" and "Os" not in meta
    assert img["dockerImageLayers"] == [
        {"name": x["digest"], "size": x["size"], "mediaType": x["mediaType"]}
        for x in app.manifest["layers"]
    ]
    assert "dockerImageManifests" not in img

    multi = push(registry_fs, *oci_layouts["multi"], "ns/os-multi:latest")
    images = multi.openshift_images(HOST)
    assert [i["metadata"]["name"] for i in images] == [multi.digest] + [
        c.digest for c in multi.children
    ]
    top = images[0]
    assert "dockerImageLayers" not in top
    assert top["dockerImageMetadata"]["Id"] == multi.digest  # as openshift-apiserver fills it
    assert top["metadata"]["annotations"]["image.openshift.io/dockerLayersOrder"] == ""
    assert top["dockerImageManifests"] == [
        {
            "digest": m["digest"],
            "mediaType": m["mediaType"],
            "manifestSize": m["size"],
            "architecture": m["platform"]["architecture"],
            "os": m["platform"]["os"],
            **({"variant": m["platform"]["variant"]} if "variant" in m["platform"] else {}),
        }
        for m in multi.manifest["manifests"]
    ]
    assert top["dockerImageManifests"][1]["variant"] == "v8"
    for child, child_img in zip(multi.children, images[1:], strict=True):
        assert child_img["dockerImageReference"] == f"{HOST}/ns/os-multi@{child.digest}"
        assert child_img["dockerImageMetadata"]["Id"] == child.manifest["config"]["digest"]
        assert [x["name"] for x in child_img["dockerImageLayers"]] == [
            x["digest"] for x in child.manifest["layers"]
        ]
    json.dumps(images)  # plain JSON, ready for a fake API server


@pytest.mark.slow
def test_shared_layers_stored_once(registry_fs: Registry, oci_layouts: OciLayouts) -> None:
    pushed = [
        push(registry_fs, *oci_layouts[name], f"shared/{name}:latest")
        for name in ("base", "app-v1", "app-v2")
    ]
    base_layers = [x.digest for x in pushed[0].layers]
    for image in pushed:
        assert [x.digest for x in image.layers][: len(base_layers)] == base_layers
        for digest in base_layers:  # each repository links the shared layer...
            assert registry_fs.exists(_layer_link(image.repository, digest))
    for digest in base_layers:  # ...to the single copy of its data
        blob_dir = registry_fs.path(blob_path(digest)).parent
        assert [p.name for p in blob_dir.iterdir()] == ["data"]
    stored = [p for p in registry_fs.list_storage() if p.startswith("blobs/")]
    assert len(stored) == len(set(stored))
    for image in pushed:
        assert_pulls(registry_fs, f"{image.repository}:latest")


@pytest.mark.slow
def test_abandoned_and_unfinished_uploads(registry_fs: Registry) -> None:
    upload_id = start_upload(registry_fs, "ns/partial")
    started = registry_fs.read(f"repositories/ns/partial/_uploads/{upload_id}/startedat")
    datetime.fromisoformat(started.decode())  # RFC 3339
    assert not registry_fs.exists("repositories/ns/partial/_manifests")
    assert not registry_fs.path("repositories/ns/partial/_manifests").exists()

    data = b"orphan layer bytes"
    digest = upload_blob_without_manifest(registry_fs, "ns/orphan", data)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert registry_fs.read(blob_path(digest)) == data
    assert registry_fs.read(_layer_link("ns/orphan", digest)) == digest.encode()
    assert not registry_fs.path("repositories/ns/orphan/_manifests").exists()
    assert not any("_uploads/" in p and "ns/orphan" in p for p in registry_fs.list_storage())

    delete_blob_via_api(registry_fs, "ns/orphan", digest)
    assert not registry_fs.exists(_layer_link("ns/orphan", digest))
    assert registry_fs.exists(blob_path(digest))  # the API only unlinks; data needs a GC


@pytest.mark.slow
def test_restart_keeps_port_and_storage(registry_fs: Registry, oci_layouts: OciLayouts) -> None:
    image = push(registry_fs, *oci_layouts["tool"], "ns/restart:1")
    url = registry_fs.url
    registry_fs.restart()
    assert registry_fs.running and registry_fs.url == url
    assert_pulls(registry_fs, f"ns/restart@{image.digest}")


@pytest.mark.slow
def test_distribution_gc_baseline(tmp_path: Path, oci_layouts: OciLayouts) -> None:
    with Registry(tmp_path / "gc") as registry:
        image = push(registry, *oci_layouts["tool"], "ns/keep:1")
        orphan = upload_blob_without_manifest(registry, "ns/orphan", b"nobody refers to me")
        dry = registry.garbage_collect(dry_run=True)
        assert dry.returncode == 0, dry.stderr
        assert registry.exists(blob_path(orphan))
        done = registry.garbage_collect()
        assert done.returncode == 0, done.stderr
        assert not registry.exists(blob_path(orphan))
        assert registry.running
        assert_pulls(registry, f"ns/keep@{image.digest}")


# --------------------------------------------------------------------------- S3


@pytest.mark.slow
def test_push_to_s3_registry(
    registry_s3: Registry, moto: MotoServer, oci_layouts: OciLayouts
) -> None:
    assert registry_s3.s3 is not None
    bucket = registry_s3.s3.bucket
    assert registry_s3.storage_url == f"s3://{bucket}/registry"
    assert registry_s3.config()["storage"]["s3"]["rootdirectory"] == "/registry"
    app = push(registry_s3, *oci_layouts["app-v1"], "ns/app:v1")
    multi = push(registry_s3, *oci_layouts["multi"], "ns/multi:latest")

    client = moto.client()
    keys = {
        o["Key"]: o
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix="registry/docker/registry/v2/"
        )
        for o in page.get("Contents", [])
    }
    prefix = "registry/docker/registry/v2/"
    for image in (app, multi):
        for digest in image.blob_digests():
            assert f"{prefix}blobs/sha256/{_hex(digest)[:2]}/{_hex(digest)}/data" in keys
        _assert_stored(registry_s3, image)
    link = f"{prefix}{_revision('ns/app', app.digest)}"
    body = client.get_object(Bucket=bucket, Key=link)["Body"].read()
    assert body == app.digest.encode()
    # the listing's ETag of a link is md5 of its content: links can be checked without a GET
    assert keys[link]["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    current = f"{prefix}repositories/ns/multi/_manifests/tags/latest/current/link"
    assert client.get_object(Bucket=bucket, Key=current)["Body"].read() == multi.digest.encode()
    assert_pulls(registry_s3, "ns/app:v1")
    assert_pulls(registry_s3, "ns/multi:latest")

    upload_id = start_upload(registry_s3, "ns/partial")
    started = registry_s3.read(f"repositories/ns/partial/_uploads/{upload_id}/startedat")
    datetime.fromisoformat(started.decode())

    registry_s3.restart()  # same bucket and root after a restart
    assert_pulls(registry_s3, f"ns/app@{app.digest}")


@pytest.mark.slow
def test_moto_server_reset(tmp_path: Path) -> None:
    with MotoServer(log_dir=tmp_path) as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.endpoint_url)
        server.create_bucket("scratch")
        server.client().put_object(Bucket="scratch", Key="k", Body=b"v")
        assert [b["Name"] for b in server.client().list_buckets()["Buckets"]] == ["scratch"]
        server.reset()
        assert server.client().list_buckets()["Buckets"] == []

"""The nightly GC flow (flows/nightly_gc.py): prune-images, then the hard prune, in one run.

A dry run changes nothing in the cluster or the storage; with confirm the old revision's Image
is deleted and the hard prune of the same run deletes its manifest link and blobs, while the
kept Image's stay."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from regprune.flows.nightly_gc import nightly_gc_flow
from regprune.flows.prune import UnsafePlan
from regprune.layout import V2_ROOT, blob_data_path, link_content, manifest_link_path
from regprune.metadata import MetadataError
from regprune.permissions import PRUNE_IMAGES, READ_METADATA
from regprune.snapshots import SnapshotSource
from tests.openshift_api import OpenShiftAPIServer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

OLD = datetime.now(UTC) - timedelta(days=3)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stored(root: Path) -> set[str]:
    return {p.relative_to(root / V2_ROOT).as_posix() for p in root.rglob("*") if p.is_file()}


def test_nightly_gc_prunes_images_then_the_storage_they_freed(
    openshift_api: OpenShiftAPIServer, openshift_kubeconfig: Path, tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    images: dict[str, list[str]] = {}
    for name in ("new", "mid", "gone"):
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
    revisions = [images[name][0] for name in ("new", "mid", "gone")]
    openshift_api.add_imagestream("a", "app", {"latest": revisions}, created=OLD)
    old = OLD.timestamp()
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    source = SnapshotSource(
        storage=str(root), metadata="kube", kubeconfig=str(openshift_kubeconfig)
    )
    before = stored(root)

    # the service account of deployments/rbac/ without prune-images.yaml: refused, untouched
    openshift_api.allow_roles(READ_METADATA)
    with pytest.raises(MetadataError, match=r"needs list pods, .*regprune-prune-images"):
        nightly_gc_flow(source=source, confirm=True, out=str(tmp_path / "refused"))
    assert stored(root) == before
    assert openshift_api.image(images["gone"][0]) is not None
    assert not (tmp_path / "refused" / "hard-prune").exists()

    openshift_api.allow_roles(READ_METADATA, PRUNE_IMAGES)  # what deployments/rbac/ grants
    dry = nightly_gc_flow(source=source, keep_tag_revisions=2, out=str(tmp_path / "dry"))
    assert dry["prune_images"]["summary"]["images_deleted"] == 1, dry["text"]
    assert stored(root) == before
    assert openshift_api.image(images["gone"][0]) is not None

    done = nightly_gc_flow(
        source=source, keep_tag_revisions=2, confirm=True, out=str(tmp_path / "confirmed")
    )
    assert openshift_api.image(images["gone"][0]) is None
    [tag] = openshift_api.imagestream("a", "app")["status"]["tags"]
    assert [item["image"] for item in tag["items"]] == revisions[:2]
    after = stored(root)
    for digest in images["gone"]:
        assert blob_data_path(digest) not in after
    assert manifest_link_path("a/app", images["gone"][0]) not in after
    for name in ("new", "mid"):
        for digest in images[name]:
            assert blob_data_path(digest) in after
        assert manifest_link_path("a/app", images[name][0]) in after
    assert Path(done["hard_prune"]["run_dir"]).is_relative_to(tmp_path / "confirmed")


def test_nightly_gc_needs_the_cluster_and_the_storage(tmp_path: Path) -> None:
    with pytest.raises(UnsafePlan, match="metadata must be kube"):
        nightly_gc_flow(source=SnapshotSource(storage=str(tmp_path), metadata=str(tmp_path)))
    with pytest.raises(UnsafePlan, match="needs the registry's storage"):
        nightly_gc_flow(source=SnapshotSource(metadata="kube"))

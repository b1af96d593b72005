"""regprune on a registry OpenShift's own registry wrote, with the Images its pushes created.

The Images come in both forms a cluster can hold: as openshift-apiserver keeps them (metadata
filled from the manifest and config, texts dropped) and as the registry sends them
(``dockerImageMetadata`` null, manifest and config as text). Stored as sent, such an Image made
the reference and regprune plan its config blob for deletion: a pushed, tagged image would
lose its config. Skipped, saying how to build it, without the binary.

On the API test server, not the real one: openshift-apiserver always fills the metadata and
keeps no text of an Image whose manifest blob is stored, so the as-sent form exists only where
a server can keep an Image as the client sent it (``store_as_sent``). Storage written by
OpenShift's registry pushing into the real API is pruned and checked in
tests/test_openshift_registry_delete.py and tests/test_reference_diff.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import EXIT_OK, main
from tests.harness.drift import plan_from_report
from tests.harness.openshift_registry import OpenShiftRegistry, start_openshift_registry, stop_pair
from tests.harness.registry_bench import (
    OciLayouts,
    PushedImage,
    assert_pulls,
    blob_path,
    push,
    upload_blob_without_manifest,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@dataclass
class Pushed:
    registry: OpenShiftRegistry
    kept: PushedImage  # as the apiserver keeps it
    sent: PushedImage  # as the registry sends it
    sent_list: PushedImage  # a manifest list and its children, as sent
    orphan: str  # a blob no manifest references

    def images(self) -> list[PushedImage]:
        return [self.kept, self.sent, self.sent_list]


@pytest.fixture(scope="module")
def registry_on_test_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OpenShiftRegistry]:
    """OpenShift's registry on a folder with an HTTPS API test server of its own (see above)."""
    registry = start_openshift_registry(tmp_path_factory.mktemp("openshift-registry-forms"))
    try:
        yield registry
    finally:
        stop_pair(registry)


@pytest.fixture(scope="module")
def pushed(registry_on_test_server: OpenShiftRegistry, oci_layouts: OciLayouts) -> Pushed:
    reg = registry_on_test_server
    kept = push(reg, *oci_layouts["app-v1"], "ns1/app:v1")
    sent = push(reg, *oci_layouts["tool"], "ns2/tool:1.0")
    sent_list = push(reg, *oci_layouts["multi"], "ns2/multi:latest")
    # After describing them (a list Image without dockerImageManifests would not let the
    # registry serve its children by digest), keep these as the registry sent them.
    for image in (sent, *sent_list.all_manifests()):
        reg.api.store_as_sent(image.digest)
    orphan = upload_blob_without_manifest(reg, "ns1/app", b"nobody references this blob")
    return Pushed(reg, kept, sent, sent_list, orphan)


def kubeconfig(registry: OpenShiftRegistry, tmp_path: Path) -> Path:
    """regprune's kubeconfig: the same HTTPS server, its certificate as the CA."""
    return registry.api.kubeconfig(tmp_path / "kubeconfig")


def prune(
    registry: OpenShiftRegistry, tmp_path: Path, name: str, *extra: str
) -> tuple[int, dict[str, Any] | None]:
    report = tmp_path / f"{name}.json"
    args = ["prune", "--storage", registry.storage_url, "--metadata", "kube"]
    args += ["--kubeconfig", str(kubeconfig(registry, tmp_path)), "--shards", "1"]
    args += ["--keep-younger-than", "0s", "--out", str(tmp_path / name), "--report", str(report)]
    code = main([*args, *extra])
    return code, json.loads(report.read_text()) if report.exists() else None


def test_the_registry_sends_images_without_metadata(pushed: Pushed) -> None:
    """The premise: the Images of the ``sent`` pushes have no metadata, only texts."""
    api = pushed.registry.api
    for image in (pushed.sent, *pushed.sent_list.all_manifests()):
        stored = api.image(image.digest)
        assert stored is not None
        assert stored.get("dockerImageMetadata") is None
        assert stored.get("dockerImageManifest")
    kept = api.image(pushed.kept.digest)
    assert kept is not None and not kept.get("dockerImageManifest")
    assert kept["dockerImageMetadata"]["Id"] == pushed.kept.config.digest  # type: ignore[union-attr]


def test_plan_keeps_every_blob_of_images_in_either_form(pushed: Pushed, tmp_path: Path) -> None:
    """Only the orphan is planned: configs, layers, lists and their children (and the
    children's manifest links) are referenced whatever form their Image is in."""
    code, report = prune(pushed.registry, tmp_path, "plan")
    assert code == EXIT_OK and report is not None
    plan = plan_from_report(report)
    assert plan["blobs"] == {pushed.orphan}
    assert plan["manifest_links"] == set()
    needed = set().union(*(image.blob_digests() for image in pushed.images()))
    assert not needed & plan["blobs"]


def test_an_image_without_metadata_or_text_has_its_stored_manifest_read(
    pushed: Pushed, tmp_path: Path
) -> None:
    """An Image with neither metadata nor texts (config unknown from the API): the stored
    manifest is read and its config and layers are kept; when that manifest blob cannot be
    read either, the plan refuses to delete and says why, and nothing is lost."""
    api = pushed.registry.api
    bare = api.image(pushed.sent.digest)
    assert bare is not None
    for key in ("dockerImageManifest", "dockerImageConfig", "dockerImageLayers"):
        bare.pop(key, None)
    api.delete_image(pushed.sent.digest)
    api.add_image(bare)

    code, report = prune(pushed.registry, tmp_path, "bare")
    assert code == EXIT_OK and report is not None
    assert plan_from_report(report)["blobs"] == {pushed.orphan}

    manifest = pushed.registry.path(blob_path(pushed.sent.digest))
    saved = manifest.read_bytes()
    manifest.unlink()
    try:
        code, report = prune(pushed.registry, tmp_path, "unreadable", "--confirm")
        assert code != EXIT_OK
        assert pushed.sent.config is not None
        assert pushed.registry.exists(blob_path(pushed.sent.config.digest))
        assert pushed.registry.exists(blob_path(pushed.orphan))
    finally:
        manifest.write_bytes(saved)
    assert_pulls(pushed.registry, "ns2/tool:1.0")


def test_children_of_a_list_known_only_from_storage_keep_their_links(
    pushed: Pushed, tmp_path: Path
) -> None:
    """A list Image that names no children (no dockerImageManifests, no text): its stored
    manifest says which children the stream has, so their manifest links are kept (the
    reference deletes such links, and a child then no longer pulls by digest)."""
    api = pushed.registry.api
    bare = api.image(pushed.sent_list.digest)
    assert bare is not None
    for key in ("dockerImageManifest", "dockerImageManifests"):
        bare.pop(key, None)
    api.delete_image(pushed.sent_list.digest)
    api.add_image(bare)
    try:
        code, report = prune(pushed.registry, tmp_path, "list")
        assert code == EXIT_OK and report is not None
        plan = plan_from_report(report)
        assert plan["manifest_links"] == set()
        assert plan["blobs"] == {pushed.orphan}
    finally:
        api.store_as_sent(pushed.sent_list.digest)

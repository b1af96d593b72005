"""OpenShift's own registry as the registry under test: what its pushes record in the API.

Pushes with skopeo through ``dockerregistry`` (``auth: openshift``) into the real OpenShift API
(``tests/harness/openshift_apiserver.py``): the Images and ImageStreams the API holds afterwards
must be what a cluster records (the Image built by the registry, completed by openshift-apiserver's
image strategy), pulls work, and a token without the permission is refused by the registry's
access reviews against the real RBAC. Skipped, saying how to build it, without the binaries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.openshift_registry import OpenShiftRegistry, start_openshift_registry, stop_pair
from tests.harness.registry_bench import (
    BASE_LAYERS,
    DOCKER_LIST,
    DOCKER_V2,
    OCI_MANIFEST,
    OciLayouts,
    PushedImage,
    assert_pulls,
    build_image,
    fetch_manifest,
    pull_ok,
    push,
)

pytestmark = pytest.mark.slow


@dataclass
class Pushed:
    registry: OpenShiftRegistry
    app_v1: PushedImage
    app_v2: PushedImage
    base: PushedImage
    multi: PushedImage
    tool_oci: PushedImage


@pytest.fixture(scope="module")
def pushed(openshift_registry_fs: OpenShiftRegistry, oci_layouts: OciLayouts) -> Pushed:
    """Single images sharing base layers across two namespaces, a manifest list, an OCI
    manifest, and a re-push of the same image to the same tag."""
    reg = openshift_registry_fs
    app_v1 = push(reg, *oci_layouts["app-v1"], "ns1/app:v1")
    return Pushed(
        reg,
        app_v1,
        push(reg, *oci_layouts["app-v2"], "ns1/app:v2"),
        push(reg, *oci_layouts["base"], "ns2/base:latest"),
        push(reg, *oci_layouts["multi"], "ns1/multi:latest"),
        push(reg, *oci_layouts["tool"], "ns2/tool:1.0", format="oci"),
    )


def comparable(image: dict[str, Any]) -> dict[str, Any]:
    """The fields regprune and the reference read from an Image."""
    metadata = image.get("dockerImageMetadata") or {}
    return {
        "name": image["metadata"]["name"],
        "reference": image["dockerImageReference"],
        "media_type": image.get("dockerImageManifestMediaType"),
        "config": metadata.get("Id"),
        "layers": image.get("dockerImageLayers") or None,  # a list's are [] as sent
        "manifests": image.get("dockerImageManifests"),
        "annotations": image["metadata"].get("annotations"),
        "texts": [k for k in ("dockerImageManifest", "dockerImageConfig") if image.get(k)],
    }


def test_pushes_create_images_as_a_cluster_records_them(pushed: Pushed) -> None:
    """Every manifest (list children included, pushed by digest) is an Image whose config,
    layers (with sizes), children and annotations are those of the stored manifest — the
    Image ``PushedImage.openshift_image`` predicts — and the texts are dropped."""
    api = pushed.registry.api
    host = pushed.registry.advertised
    expected = {}
    for image in (pushed.app_v1, pushed.app_v2, pushed.base, pushed.multi, pushed.tool_oci):
        for manifest in image.all_manifests():
            expected[manifest.digest] = manifest
    stored = {image["metadata"]["name"]: image for image in api.images()}
    assert set(stored) == set(expected)
    for digest, manifest in expected.items():
        got = comparable(stored[digest])
        want = comparable(manifest.openshift_image(host))
        # A child is pushed by digest into the list's repository: its reference names it.
        assert got == want, digest
        assert stored[digest]["dockerImageMetadataVersion"] == "1.0"
    assert stored[pushed.multi.digest]["dockerImageManifestMediaType"] == DOCKER_LIST
    assert stored[pushed.tool_oci.digest]["dockerImageManifestMediaType"] == OCI_MANIFEST
    assert stored[pushed.app_v1.digest]["dockerImageManifestMediaType"] == DOCKER_V2


def test_streams_hold_one_tag_event_per_push(pushed: Pushed, oci_layouts: OciLayouts) -> None:
    """A tag event per tag push (children get none); pushing the same image to the same tag
    again changes nothing, another image on the tag goes on top of its history."""
    api = pushed.registry.api

    def tags(ns: str, name: str) -> dict[str, list[str]]:
        stream = api.imagestream(ns, name)
        assert stream is not None
        return {t["tag"]: [i["image"] for i in t["items"]] for t in stream["status"]["tags"]}

    assert tags("ns1", "app") == {"v1": [pushed.app_v1.digest], "v2": [pushed.app_v2.digest]}
    assert tags("ns1", "multi") == {"latest": [pushed.multi.digest]}
    assert tags("ns2", "base") == {"latest": [pushed.base.digest]}
    assert tags("ns2", "tool") == {"1.0": [pushed.tool_oci.digest]}
    before = api.imagestream("ns1", "app")

    again = push(pushed.registry, *oci_layouts["app-v1"], "ns1/app:v1")
    assert again.digest == pushed.app_v1.digest
    assert api.imagestream("ns1", "app") == before

    moved = push(pushed.registry, *oci_layouts["app-v2"], "ns2/base:latest")
    assert tags("ns2", "base") == {"latest": [moved.digest, pushed.base.digest]}
    assert api.image(moved.digest) is not None


def test_every_tag_and_child_pulls(pushed: Pushed) -> None:
    reg = pushed.registry
    for ref in ("ns1/app:v1", "ns1/app:v2", "ns1/multi:latest", "ns2/tool:1.0"):
        assert_pulls(reg, ref)
    for child in pushed.multi.children:
        assert_pulls(reg, f"ns1/multi@{child.digest}")


def test_shared_layers_are_stored_once_and_linked_per_repository(pushed: Pushed) -> None:
    reg = pushed.registry
    shared = {layer.digest for layer in pushed.base.layers}
    assert shared <= {layer.digest for layer in pushed.app_v1.layers}
    blobs = [p for p in reg.list_storage() if p.startswith("blobs/") and p.endswith("/data")]
    for digest in shared:
        hexd = digest.split(":", 1)[1]
        assert sum(hexd in path for path in blobs) == 1
        for repo in ("ns1/app", "ns2/base"):
            assert reg.exists(f"repositories/{repo}/_layers/sha256/{hexd}/link")


def test_access_reviews_decide_pulls_and_pushes(pushed: Pushed, oci_layouts: OciLayouts) -> None:
    """A token that may only pull from ns1 (a Role there granting ``get imagestreams/layers``,
    what OpenShift's ``system:image-puller`` grants): it pulls there, and is refused a pull from
    ns2 and a push to ns1 (the registry asked the API, and the API said no)."""
    reg = pushed.registry
    api = reg.api
    rule = {"apiGroups": ["image.openshift.io"], "resources": ["imagestreams/layers"]}
    reader = (
        "reader",
        api.token_with_rules("reader", [{**rule, "verbs": ["get"]}], namespace="ns1"),
    )
    assert pull_ok(reg, "ns1/app:v1", creds=reader)
    assert not pull_ok(reg, "ns2/tool:1.0", creds=reader)

    saved = reg.creds
    reg.creds = reader
    try:
        with pytest.raises(RuntimeError, match=r"denied|unauthorized|403|401"):
            push(reg, *oci_layouts["tool"], "ns1/tool:denied")
    finally:
        reg.creds = saved
    assert api.imagestream("ns1", "tool") is None
    stranger = ("stranger", "not-a-token")
    assert not pull_ok(reg, "ns1/app:v1", creds=stranger)


def test_the_image_as_the_registry_sends_it(tmp_path: Path) -> None:
    """Without the apiserver's strategy the Image is stored as sent: no metadata, the
    manifest and config as text (the form the issue found made both prunes drop the config).

    On the API test server: openshift-apiserver always runs its image strategy, so only a
    server that can switch it off shows what the registry itself sends."""
    registry = start_openshift_registry(tmp_path / "raw-registry", image_strategy=False)
    try:
        check_the_image_as_sent(registry, tmp_path)
    finally:
        stop_pair(registry)


def check_the_image_as_sent(registry: OpenShiftRegistry, tmp_path: Path) -> None:
    api = registry.api
    layout = tmp_path / "layout"
    build_image(layout, "raw", [*BASE_LAYERS, 40])
    sent = push(registry, layout, "raw", "ns3/raw:v1")
    image = api.image(sent.digest)
    assert image is not None
    assert image.get("dockerImageMetadata") is None
    assert image["dockerImageManifest"].encode() == fetch_manifest(registry, "ns3/raw", "v1")[0]
    assert sent.config is not None
    assert json.loads(image["dockerImageConfig"]) == sent.config_json
    assert image["metadata"]["annotations"]["image.openshift.io/manifestBlobStored"] == "true"
    assert [layer["name"] for layer in image["dockerImageLayers"]] == [
        layer.digest for layer in sent.layers
    ]
    assert "dockerImageManifests" not in image


def test_on_s3_pushes_record_images_and_pull(
    openshift_registry_s3: OpenShiftRegistry, oci_layouts: OciLayouts
) -> None:
    """The same on moto S3: the push writes under the bucket's root and creates the Images."""
    reg = openshift_registry_s3
    multi = push(reg, *oci_layouts["multi"], "s3ns/multi:latest")
    app = push(reg, *oci_layouts["app-v1"], "s3ns/app:v1")
    assert {i["metadata"]["name"] for i in reg.api.images()} == {
        m.digest for m in (*multi.all_manifests(), app)
    }
    stored = reg.list_storage()
    assert any(key.startswith("repositories/s3ns/multi/_manifests/") for key in stored)
    for image in (*multi.all_manifests(), app):
        assert reg.exists(f"blobs/sha256/{image.digest[7:9]}/{image.digest[7:]}/data")
    assert_pulls(reg, "s3ns/multi:latest")
    assert_pulls(reg, "s3ns/app:v1")

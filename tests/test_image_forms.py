"""The Image forms a cluster can hold, read into image rows (``metadata.image_rows``).

OpenShift's registry sends a new Image with ``dockerImageMetadata: null`` and the manifest and
config as text; openshift-apiserver's image strategy fills the metadata and drops the texts.
What an Image references must come out the same from either form, or from the stored manifest
when the metadata names nothing (tests/test_openshift_registry_prune.py runs the real thing).
The last test puts both forms through the real openshift-apiserver.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from regprune.metadata import image_rows
from tests.harness.openshift_api import _apply_image_strategy
from tests.harness.openshift_apiserver import RealOpenShiftAPI
from tests.harness.registry_bench import sha256_digest

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sent_image(manifest: dict[str, Any], config: bytes | None, media_type: str) -> dict[str, Any]:
    """An Image as OpenShift's registry POSTs it (manifestservice.go Put)."""
    text = json.dumps(manifest)
    digest = sha256_digest(text.encode())
    layers = [
        {"name": x["digest"], "size": x["size"], "mediaType": x["mediaType"]}
        for x in manifest.get("layers", [])
    ]
    image: dict[str, Any] = {
        "metadata": {
            "name": digest,
            "annotations": {
                "openshift.io/image.managed": "true",
                "image.openshift.io/manifestBlobStored": "true",
                "image.openshift.io/dockerLayersOrder": "ascending",
            },
        },
        "dockerImageReference": f"registry:5000/ns/app@{digest}",
        "dockerImageMetadata": None,
        "dockerImageManifest": text,
        "dockerImageManifestMediaType": media_type,
        "dockerImageLayers": layers,
    }
    if config is not None:
        image["dockerImageConfig"] = config.decode()
    return image


CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z"})
SINGLE = {
    "schemaVersion": 2,
    "mediaType": DOCKER_V2,
    "config": {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "digest": sha256_digest(CONFIG.encode()),
        "size": len(CONFIG),
    },
    "layers": [
        {"mediaType": LAYER, "digest": sha256_digest(b"a"), "size": 10},
        {"mediaType": LAYER, "digest": sha256_digest(b"b"), "size": 20},
    ],
}
LIST = {
    "schemaVersion": 2,
    "mediaType": DOCKER_LIST,
    "manifests": [
        {
            "mediaType": DOCKER_V2,
            "digest": sha256_digest(b"child"),
            "size": 500,
            "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
        }
    ],
}


def references(image: dict[str, Any]) -> set[tuple[str, str]]:
    row, blobs, anomalies = image_rows(image)
    assert row is not None and anomalies == []
    return {(b["kind"], b["digest"]) for b in blobs}


def test_an_image_as_sent_references_its_config_like_the_kept_one() -> None:
    sent = sent_image(SINGLE, CONFIG.encode(), DOCKER_V2)
    kept = copy.deepcopy(sent)
    _apply_image_strategy(kept)
    assert kept["dockerImageMetadata"]["Id"] == SINGLE["config"]["digest"]
    assert "dockerImageManifest" not in kept
    assert ("config", SINGLE["config"]["digest"]) in references(sent)
    assert references(sent) == references(kept)
    assert image_rows(sent)[0]["config_digest"] == SINGLE["config"]["digest"]  # type: ignore[index]


def test_a_list_as_sent_references_its_children_like_the_kept_one() -> None:
    sent = sent_image(LIST, None, DOCKER_LIST)
    sent["dockerImageLayers"] = []
    kept = copy.deepcopy(sent)
    _apply_image_strategy(kept)
    assert kept["dockerImageManifests"][0]["variant"] == "v8"
    child = ("manifest_list_child", LIST["manifests"][0]["digest"])
    assert child in references(sent)
    assert references(sent) == references(kept)


def test_layers_come_from_the_text_when_the_image_lists_none() -> None:
    sent = sent_image(SINGLE, CONFIG.encode(), DOCKER_V2)
    del sent["dockerImageLayers"]
    layers = {("layer", x["digest"]) for x in SINGLE["layers"]}
    assert layers <= references(sent)


def test_an_id_without_a_media_type_is_kept_as_a_config() -> None:
    image = {
        "metadata": {"name": sha256_digest(b"m")},
        "dockerImageMetadata": {"Id": sha256_digest(b"c")},
    }
    assert ("config", sha256_digest(b"c")) in references(image)


def test_a_text_that_does_not_parse_is_an_anomaly() -> None:
    image = sent_image(SINGLE, CONFIG.encode(), DOCKER_V2)
    image["dockerImageManifest"] = "{not json"
    _, _, anomalies = image_rows(image)
    assert [a["problem"] for a in anomalies] == [
        "dockerImageManifest does not parse: manifest is not JSON: JSONDecodeError"
    ]


@pytest.mark.slow
def test_the_real_server_keeps_forms_that_reference_the_same_blobs(
    openshift_apiserver: RealOpenShiftAPI,
) -> None:
    """The same Images through openshift-apiserver's own strategy (an ImageStreamMapping, what
    a push creates): the stored forms reference what the sent ones do, and the test server's
    strategy stores the same metadata and children."""
    api = openshift_apiserver
    api.add_imagestream("ns", "app")
    for manifest, config, media_type in (
        (SINGLE, CONFIG.encode(), DOCKER_V2),
        (LIST, None, DOCKER_LIST),
    ):
        sent = sent_image(manifest, config, media_type)
        if media_type == DOCKER_LIST:
            sent["dockerImageLayers"] = []
        stored = api.map_image("ns", "app", "latest", sent)
        assert "dockerImageManifest" not in stored  # dropped: the manifest blob is stored
        assert references(stored) == references(sent)
        kept = copy.deepcopy(sent)
        _apply_image_strategy(kept)
        for field in ("dockerImageLayers", "dockerImageManifests"):
            assert stored.get(field) == (kept.get(field) or None), field
        ours, theirs = kept["dockerImageMetadata"], dict(stored["dockerImageMetadata"])
        if media_type == DOCKER_LIST:  # dated by each server's clock
            ours, theirs = {**ours, "Created": None}, {**theirs, "Created": None}
        assert {k: v for k, v in ours.items() if v not in ("", None)} == {
            k: v for k, v in theirs.items() if v not in ("", None)
        }
        assert stored["metadata"]["annotations"] == kept["metadata"]["annotations"]

"""Parse manifests read from storage: media type, config, layers with sizes and order,
child manifests with platforms. Whether the referenced blobs exist is decided in SQL
(``check_invalid_manifests.sql``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from regprune.layout import is_digest
from regprune.mediatypes import (
    DOCKER_V1,
    DOCKER_V1_SIGNED,
    IMAGE_MEDIA_TYPES,
    LIST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution's own limit on a manifest's size
MANIFEST_TABLES = ("manifests", "manifest_references")


class ManifestError(ValueError):
    """A manifest that cannot be restored; the message is the reason reported."""


@dataclass(frozen=True)
class Reference:
    digest: str
    kind: str  # config | layer | manifest
    position: int | None
    size: int | None
    media_type: str | None
    platform: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedManifest:
    media_type: str
    layer_order: str  # ascending (base layer first) or descending (schema 1)
    references: list[Reference]


def parse_manifest(data: bytes) -> ParsedManifest:
    """Docker schema 2, OCI manifest, manifest list / OCI index, or schema 1."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"manifest is not JSON: {exc.__class__.__name__}") from exc
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    version = document.get("schemaVersion")
    if version == 1:
        return _schema1(document)
    if version != 2:
        raise ManifestError(f"unsupported schemaVersion {version!r}")
    media_type = document.get("mediaType") or (
        OCI_INDEX if "manifests" in document else OCI_MANIFEST
    )
    if media_type in LIST_MEDIA_TYPES:
        children = [
            _descriptor(entry, "manifest", position, with_platform=True)
            for position, entry in enumerate(_list(document, "manifests"))
        ]
        return ParsedManifest(media_type, "ascending", children)
    if media_type not in IMAGE_MEDIA_TYPES:
        raise ManifestError(f"unsupported media type {media_type}")
    config = document.get("config")
    if not isinstance(config, dict):
        raise ManifestError("manifest has no config")
    references = [_descriptor(config, "config", None)]
    references += [
        _descriptor(entry, "layer", position)
        for position, entry in enumerate(_list(document, "layers"))
    ]
    return ParsedManifest(media_type, "ascending", references)


def _schema1(document: dict[str, Any]) -> ParsedManifest:
    media_type = DOCKER_V1_SIGNED if "signatures" in document else DOCKER_V1
    layers = []
    for position, entry in enumerate(_list(document, "fsLayers")):
        digest = entry.get("blobSum") if isinstance(entry, dict) else None
        if not is_digest(digest):
            raise ManifestError(f"fsLayers[{position}].blobSum is not a sha256 digest")
        layers.append(Reference(digest, "layer", position, None, None))
    return ParsedManifest(media_type, "descending", layers)


def _list(document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key)
    if not isinstance(value, list):
        raise ManifestError(f"manifest has no {key} list")
    return value


def _descriptor(
    entry: Any, kind: str, position: int | None, with_platform: bool = False
) -> Reference:
    where = kind if position is None else f"{kind} {position}"
    if not isinstance(entry, dict) or not is_digest(entry.get("digest")):
        raise ManifestError(f"{where} has no sha256 digest")
    size = entry.get("size")
    if not isinstance(size, int) or size < 0:
        raise ManifestError(f"{where} has no valid size")
    platform = entry.get("platform") if with_platform else None
    platform = {
        key: str(value)
        for key, value in (platform or {}).items()
        if key in ("architecture", "os", "variant") and value
    }
    return Reference(entry["digest"], kind, position, size, entry.get("mediaType"), platform)

"""The media types of manifests and blobs regprune reads, writes or generates: the only place
in the product that spells one (SQL reads them through the macros of ``sql/macros.sql``, which
tests/test_mediatypes.py holds to these). Names as distribution's ``schema1``, ``schema2``,
``manifestlist`` and ``ocischema`` packages and the OCI image spec use them."""

from __future__ import annotations

# manifests
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

# blobs
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
SCHEMA1_LAYER = "application/vnd.docker.container.image.rootfs.diff+x-gtar"
"""What the registry says a schema 1 layer is (schema 1 manifests name no layer media type)."""

LIST_MEDIA_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
"""Manifests that list other manifests (children), no config and no layers."""
IMAGE_MEDIA_TYPES = frozenset({DOCKER_V2, OCI_MANIFEST})
"""Single-image manifests that name a config blob and layers."""
SCHEMA1_MEDIA_TYPES = frozenset({DOCKER_V1, DOCKER_V1_SIGNED})
"""Schema 1 manifests: layers only, no config blob."""

"""Synthetic registries: a storage tree, its OpenShift metadata dump and the ground truth.

Why: the demo, the benchmarks and the tests need registries with known drift without a
cluster. :func:`generate` builds a consistent registry in memory (namespaces -> ImageStreams ->
tags -> history of schema 2 images and manifest lists sharing a pool of base layers), applies
the drift kinds a real cluster accumulates, then writes

* the storage in the exact docker/distribution layout (paths from :mod:`layout` only) to a
  local folder (plain ``os`` calls, a forked process pool for large trees) or to any fsspec
  URL such as ``s3://bucket/root`` (``pipe`` of many files at once);
* the metadata as ``oc get images,imagestreams -A -o json`` prints it;
* ``truth.json``: what a hard prune must delete (with and without a grace period) and what
  a consistency check must report, computed from the model in plain Python, independently
  of the SQL it is meant to validate.

Times: every push happens at an "old" time (between ``age_days`` and twice that ago) or, for
a ``young_fraction`` of pushes, within the last hour; local files get these modification
times with ``os.utime``. S3 cannot backdate objects, so an S3 tree is all young: its truth
uses the time of writing for every object (``startedat`` contents keep the modelled times).

Two clocks: the model runs on a fixed clock (:data:`MODEL_NOW`), so what is hashed (image
configs carry a ``created`` time) and every seeded choice made in digest order are the same
for a seed whenever it runs; the times a prune reads (file modification times, the dump's
timestamps, ``startedat``) are the model's shifted to ``now``. Same seed: the same digests,
drift and truth at any time of day; only those times move.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import os
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple

from regprune import layout
from regprune.mediatypes import DOCKER_CONFIG as CONFIG_MEDIA_TYPE
from regprune.mediatypes import DOCKER_LAYER as LAYER_MEDIA_TYPE
from regprune.mediatypes import DOCKER_LIST as MANIFEST_LIST
from regprune.mediatypes import DOCKER_V2 as MANIFEST_V2

UPLOAD_MAX_AGE = timedelta(days=7)
"""Uploads started longer ago are stale (the registry's own upload purging age)."""

MODEL_NOW = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
"""The model's fixed clock: generated content never depends on when it is generated."""
_DAY = 86400.0
_YOUNG_WINDOW = 3600.0
_POOL_SIZE = 1 << 16
_PLATFORMS = (("amd64", "linux", ""), ("arm64", "linux", "v8"))
_UID_NAMESPACE = uuid.UUID("5b0c6f8e-3c1d-4a8e-9a55-7d5f0f2b9a10")
_POOL_MIN_FILES = 20_000
_TASK_FILES = 4_000
_PIPE_BATCH = 2_000


# --- the spec ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """Shape, drift and ages of a synthetic registry; every drift knob is a count or fraction."""

    namespaces: int = 3
    streams_per_namespace: int = 3
    tags_per_stream: int = 2
    history_per_tag: int = 3
    layers_per_image: int = 3
    base_layers_per_image: int = 1
    """How many of an image's layers come from the shared pool (the rest are its own)."""
    shared_layers: int = 6
    """Size of the pool of base layers shared across images, streams and namespaces."""
    manifest_list_fraction: float = 0.15
    cross_tagged_count: int = 1
    """Images also tagged (and linked) in a stream of another namespace."""
    deleted_image_fraction: float = 0.15
    """Drift 1: Images pruned from metadata (and their tag history entries), storage kept."""
    deleted_stream_fraction: float = 0.12
    """Drift 2: ImageStreams deleted (their Images too unless another stream has them)."""
    dangling_history_count: int = 1
    mounted_count: int = 2
    """Manifests linked into another stream's repository with no tag history entry there
    (a cross-repository mount whose ImageStreamMapping never happened): alternately an old
    link to an existing Image ("not-in-imagestream") and a young link to a deleted Image
    (its old blobs get a young link, which keeps them through a grace period)."""
    """Images deleted with ``oc delete image``: tag history entries point at nothing."""
    missing_blob_count: int = 3
    """Drift 3: blobs Images reference deleted from storage (layer, config, manifest, ...)."""
    lost_manifest_count: int = 2
    """Drift 4: manifests in storage with all blobs and links but no Image, no history entry."""
    invalid_repository_count: int = 4
    """Drift 5: repositories OpenShift cannot own (``lonely``, ``a/b/c``, uppercase); every
    fourth is young (kept whole by a grace period)."""
    upload_count: int = 4
    """Drift 6: unfinished uploads, alternately old and young."""
    age_days: float = 30.0
    """Drift 7: old objects are between ``age_days`` and twice that old."""
    young_fraction: float = 0.1
    """Fraction of pushes written within the last hour."""
    keep_younger_than_hours: float = 24.0
    """Grace period of the second prune truth in ``truth.json``."""
    min_blob_size: int = 64
    max_blob_size: int = 512
    seed: int = 0
    registry_host: str = "image-registry.openshift-image-registry.svc:5000"

    def __post_init__(self) -> None:
        if not 16 <= self.min_blob_size <= self.max_blob_size <= _POOL_SIZE // 2:
            raise ValueError(f"blob sizes must satisfy 16 <= min <= max <= {_POOL_SIZE // 2}")
        if min(self.namespaces, self.streams_per_namespace, self.tags_per_stream) < 1:
            raise ValueError("at least one namespace, stream and tag")
        if min(self.history_per_tag, self.layers_per_image) < 1:
            raise ValueError("at least one history entry and one layer per image")
        if self.base_layers_per_image < 0 or self.shared_layers < 0:
            raise ValueError("base and shared layer counts cannot be negative")

    @classmethod
    def demo(cls, seed: int = 0) -> SyntheticSpec:
        """A small registry (about 250 blobs) with at least one of every drift kind."""
        return cls(seed=seed)

    @classmethod
    def for_blobs(cls, blobs: int, seed: int = 0) -> SyntheticSpec:
        """A registry of roughly ``blobs`` blobs for benchmarks, drift scaled with it."""
        layers, base, lists = 4, 2, 0.1
        single = 2 + layers - base
        per_push = (1 - lists) * single + lists * (1 + len(_PLATFORMS) * single)
        shared = max(8, min(1000, blobs // 1000))
        pushes = max(1.0, (blobs - shared) / per_push)
        tags, history, streams = 3, 4, 10
        per_namespace = streams * tags * history
        namespaces = max(1, round(pushes / per_namespace))
        if pushes < per_namespace:
            streams = max(2, round(pushes / (tags * history)))
        return cls(
            namespaces=namespaces,
            streams_per_namespace=streams,
            tags_per_stream=tags,
            history_per_tag=history,
            layers_per_image=layers,
            base_layers_per_image=base,
            shared_layers=shared,
            manifest_list_fraction=lists,
            cross_tagged_count=max(1, blobs // 10_000),
            deleted_image_fraction=0.1,
            deleted_stream_fraction=0.02,
            dangling_history_count=max(1, blobs // 20_000),
            mounted_count=max(2, blobs // 20_000),
            missing_blob_count=max(3, blobs // 10_000),
            lost_manifest_count=max(2, blobs // 5_000),
            invalid_repository_count=max(4, blobs // 50_000),
            upload_count=max(4, blobs // 5_000),
            young_fraction=0.05,
            seed=seed,
        )


# --- the truth ---------------------------------------------------------------------------


class RepositoryItem(NamedTuple):
    repository: str
    reason: str


class LinkItem(NamedTuple):
    repository: str
    digest: str
    reason: str


class UploadItem(NamedTuple):
    repository: str
    upload_id: str
    started_at: str


class BrokenTag(NamedTuple):
    namespace: str
    name: str
    tag: str
    position: int
    image: str
    missing: str
    kind: str


class BrokenImage(NamedTuple):
    image: str
    missing: str
    kind: str


class LostManifest(NamedTuple):
    namespace: str
    name: str
    digest: str


class UnrestorableManifest(NamedTuple):
    namespace: str
    name: str
    digest: str
    missing: str


@dataclass(frozen=True, slots=True)
class PruneTruth:
    """What a hard prune deletes with a given grace period (0: everything that is garbage).

    Rules (those of ``sql/plan/``): keep set = every digest an Image references (its
    manifest, config, layers, list children; children are Images of their own). A
    repository goes whole when its name is not ``<namespace>/<name>`` of valid OpenShift
    names ("invalid-name") or its ImageStream is gone ("imagestream-missing"), unless any
    file in it is young; candidate repositories kept for youth are left untouched. Other
    repositories lose manifest links not in the keep set ("image-missing") or not in the
    stream's history incl. list children ("not-in-imagestream"), layer links whose blob is
    missing ("blob-missing") or deleted here ("blob-deleted"), and uploads started more than
    ``upload_max_age`` ago. A blob outside the keep set is young when its data or any link to
    it (layer or manifest, any repository) is young. Young items are listed in ``kept_young``.
    """

    keep_younger_than_seconds: float
    upload_max_age_seconds: float
    orphan_blobs: tuple[str, ...]
    orphan_bytes: int
    prunable_repositories: tuple[RepositoryItem, ...]
    prunable_manifest_links: tuple[LinkItem, ...]
    dangling_layer_links: tuple[LinkItem, ...]
    stale_uploads: tuple[UploadItem, ...]
    kept_young: dict[str, list[Any]]

    def to_json(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class CheckTruth:
    """What the consistency check reports (rules of ``sql/check/``).

    broken_images: managed Images missing their manifest, config, a layer or a child manifest
    in storage. broken_tags: every tag history item (any position) whose Image is gone
    (kind "image") or whose Image or list child Images miss a blob. lost_found: manifest
    links in repositories with valid OpenShift names that the stream's history lacks (or
    whose stream is gone) and whose manifest and direct references are all in storage;
    lost_unrestorable: the same candidates with something missing.
    """

    broken_tags: tuple[BrokenTag, ...]
    broken_images: tuple[BrokenImage, ...]
    lost_found: tuple[LostManifest, ...]
    lost_unrestorable: tuple[UnrestorableManifest, ...]

    def to_json(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(slots=True)
class Truth:
    """Everything a run must find. ``prune`` has no grace; ``prune_grace`` uses the spec's."""

    target: str
    now: str
    spec: dict[str, Any]
    counts: dict[str, int]
    drift: dict[str, Any]
    prune: PruneTruth
    prune_grace: PruneTruth
    check: CheckTruth
    seconds: dict[str, float] = field(default_factory=dict)
    _model: _Model | None = field(default=None, repr=False, compare=False)

    def prune_with_grace(
        self, keep_younger_than: timedelta, now: datetime | None = None
    ) -> PruneTruth:
        """The prune truth for another grace period (only on a Truth fresh from generate)."""
        if self._model is None:
            raise ValueError("the model is not kept in truth.json: use a Truth from generate()")
        at = self._model.now if now is None else now.timestamp() - self._model.shift
        return _prune_truth(self._model, keep_younger_than.total_seconds(), at)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "now": self.now,
            "spec": self.spec,
            "counts": self.counts,
            "drift": self.drift,
            "prune": self.prune.to_json(),
            "prune_grace": self.prune_grace.to_json(),
            "check": self.check.to_json(),
            "seconds": self.seconds,
        }


def load_truth(path: str | Path) -> Truth:
    """Read a ``truth.json`` back into typed tuples (for tests comparing sets)."""
    raw = json.loads(Path(path).read_text())

    def prune(data: dict[str, Any]) -> PruneTruth:
        return PruneTruth(
            keep_younger_than_seconds=data["keep_younger_than_seconds"],
            upload_max_age_seconds=data["upload_max_age_seconds"],
            orphan_blobs=tuple(data["orphan_blobs"]),
            orphan_bytes=data["orphan_bytes"],
            prunable_repositories=tuple(RepositoryItem(**i) for i in data["prunable_repositories"]),
            prunable_manifest_links=tuple(LinkItem(**i) for i in data["prunable_manifest_links"]),
            dangling_layer_links=tuple(LinkItem(**i) for i in data["dangling_layer_links"]),
            stale_uploads=tuple(UploadItem(**i) for i in data["stale_uploads"]),
            kept_young=data["kept_young"],
        )

    check = raw["check"]
    return Truth(
        target=raw["target"],
        now=raw["now"],
        spec=raw["spec"],
        counts=raw["counts"],
        drift=raw["drift"],
        prune=prune(raw["prune"]),
        prune_grace=prune(raw["prune_grace"]),
        check=CheckTruth(
            broken_tags=tuple(BrokenTag(**i) for i in check["broken_tags"]),
            broken_images=tuple(BrokenImage(**i) for i in check["broken_images"]),
            lost_found=tuple(LostManifest(**i) for i in check["lost_found"]),
            lost_unrestorable=tuple(UnrestorableManifest(**i) for i in check["lost_unrestorable"]),
        ),
        seconds=raw.get("seconds", {}),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: _jsonable(v) for k, v in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


# --- the model ---------------------------------------------------------------------------


class _Manifest(NamedTuple):
    media_type: str
    size: int
    config: str | None
    layers: tuple[str, ...]
    children: tuple[tuple[str, str, str, str], ...]  # digest, architecture, os, variant
    architecture: str
    created: float

    def refs(self) -> Iterator[tuple[str, str]]:
        """Direct references with their check kind (child manifests count as manifests)."""
        if self.config is not None:
            yield self.config, "config"
        for layer in self.layers:
            yield layer, "layer"
        for child in self.children:
            yield child[0], "manifest"


class _Event(NamedTuple):
    image: str
    created: float
    generation: int


@dataclass(slots=True)
class _Stream:
    namespace: str
    name: str
    tags: dict[str, list[_Event]] = field(default_factory=dict)  # newest first


@dataclass(slots=True)
class _Repo:
    manifests: dict[str, float] = field(default_factory=dict)
    layers: dict[str, float] = field(default_factory=dict)
    current: dict[str, tuple[str, float]] = field(default_factory=dict)
    index: dict[str, dict[str, float]] = field(default_factory=dict)
    uploads: dict[str, tuple[float, float, bytes]] = field(default_factory=dict)

    def file_count(self) -> int:
        tags = sum(len(i) for i in self.index.values()) + len(self.current)
        return len(self.manifests) + len(self.layers) + tags + 2 * len(self.uploads)

    def newest(self) -> float:
        times = [*self.manifests.values(), *self.layers.values()]
        times += [t for _, t in self.current.values()]
        times += [t for idx in self.index.values() for t in idx.values()]
        times += [u[1] for u in self.uploads.values()]
        return max(times, default=-math.inf)


@dataclass(slots=True)
class _Model:
    """The registry after drift: storage (what exists, with mtimes) and metadata."""

    now: float  # on the model's clock (MODEL_NOW)
    pool: bytes
    registry_host: str
    shift: float = 0.0  # model clock -> the wall clock of the files and the dump
    blob_time: dict[str, float] = field(default_factory=dict)  # present blobs -> mtime
    blob_size: dict[str, int] = field(default_factory=dict)  # every blob ever written
    layer_src: dict[str, tuple[int, int]] = field(default_factory=dict)
    json_blob: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, _Manifest] = field(default_factory=dict)
    repos: dict[str, _Repo] = field(default_factory=dict)
    images: dict[str, tuple[str, float]] = field(default_factory=dict)  # digest -> repo, time
    streams: dict[str, _Stream] = field(default_factory=dict)  # by repository name
    blob_order: list[str] = field(default_factory=list)
    repo_order: list[str] = field(default_factory=list)

    def blob_bytes(self, digest: str) -> bytes:
        data = self.json_blob.get(digest)
        if data is not None:
            return data
        serial, size = self.layer_src[digest]
        return _layer_bytes(self.pool, serial, size)

    def freeze_order(self) -> None:
        """Sorted write order: siblings together, so each folder is made once."""
        self.blob_order = sorted(self.blob_time)
        self.repo_order = sorted(self.repos)

    def blob_files(self, lo: int, hi: int) -> Iterator[tuple[str, bytes, float]]:
        for digest in self.blob_order[lo:hi]:
            path, mtime = layout.blob_data_path(digest), self.blob_time[digest] + self.shift
            yield path, self.blob_bytes(digest), mtime

    def repo_files(self, lo: int, hi: int) -> Iterator[tuple[str, bytes, float]]:
        s = self.shift
        for name in self.repo_order[lo:hi]:
            repo = self.repos[name]
            for digest, t in repo.layers.items():
                yield layout.layer_link_path(name, digest), layout.link_content(digest), t + s
            for digest, t in repo.manifests.items():
                yield layout.manifest_link_path(name, digest), layout.link_content(digest), t + s
            for tag, (digest, t) in repo.current.items():
                yield layout.tag_current_link_path(name, tag), layout.link_content(digest), t + s
                for old, ti in repo.index[tag].items():
                    path = layout.tag_index_link_path(name, tag, old)
                    yield path, layout.link_content(old), ti + s
            for upload_id, (started, t, data) in repo.uploads.items():
                startedat = self.stamp(started).encode()
                yield layout.upload_startedat_path(name, upload_id), startedat, t + s
                yield layout.upload_dir(name, upload_id) + "data", data, t + s

    def stamp(self, t: float) -> str:
        """A model time as the wall-clock RFC 3339 time the dump and ``startedat`` carry."""
        return _rfc3339(t + self.shift)

    def all_files(self) -> Iterator[tuple[str, bytes, float]]:
        yield from self.blob_files(0, len(self.blob_order))
        yield from self.repo_files(0, len(self.repo_order))

    def set_all_mtimes(self, wall: float) -> None:
        """S3 objects carry their write time (``wall``), whatever the model said."""
        t = wall - self.shift
        self.blob_time = dict.fromkeys(self.blob_time, t)
        for repo in self.repos.values():
            repo.manifests = dict.fromkeys(repo.manifests, t)
            repo.layers = dict.fromkeys(repo.layers, t)
            repo.current = {k: (d, t) for k, (d, _) in repo.current.items()}
            repo.index = {k: dict.fromkeys(v, t) for k, v in repo.index.items()}
            repo.uploads = {k: (s, t, d) for k, (s, _, d) in repo.uploads.items()}


def _layer_bytes(pool: bytes, serial: int, size: int) -> bytes:
    """Deterministic, unique, incompressible-looking bytes without keeping them in memory."""
    offset = (serial * 7919) % (len(pool) - size)
    return serial.to_bytes(8, "big") + pool[offset : offset + size - 8]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _count(fraction: float, total: int) -> int:
    if fraction <= 0 or total <= 0:
        return 0
    return min(total, max(1, round(fraction * total)))


# --- building ----------------------------------------------------------------------------


class _Builder:
    """Builds the consistent registry, then applies the drift; keeps the record of it."""

    def __init__(self, spec: SyntheticSpec, now: float) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.m = _Model(
            now=MODEL_NOW,
            pool=self.rng.randbytes(_POOL_SIZE),
            registry_host=spec.registry_host,
            shift=now - MODEL_NOW,
        )
        self.serial = 0
        self.shared: list[str | None] = [None] * spec.shared_layers
        self.cross: dict[str, str] = {}  # image -> source repository
        self.drift: dict[str, Any] = {}

    # times
    def push_time(self, young: bool | None = None) -> float:
        if young is None:
            young = self.rng.random() < self.spec.young_fraction
        if young:
            return self.m.now - self.rng.uniform(1.0, _YOUNG_WINDOW)
        age = self.spec.age_days * _DAY
        return self.m.now - age - self.rng.uniform(0.0, age)

    # blobs
    def written(self, digest: str, t: float) -> None:
        old = self.m.blob_time.get(digest)
        if old is None or t < old:
            self.m.blob_time[digest] = t

    def layer(self, t: float) -> str:
        self.serial += 1
        size = self.rng.randint(self.spec.min_blob_size, self.spec.max_blob_size)
        digest = _digest(_layer_bytes(self.m.pool, self.serial, size))
        self.m.layer_src[digest] = (self.serial, size)
        self.m.blob_size[digest] = size
        self.written(digest, t)
        return digest

    def json_blob(self, obj: dict[str, Any], t: float) -> tuple[str, int]:
        data = json.dumps(obj, separators=(",", ":")).encode()
        digest = _digest(data)
        self.m.json_blob[digest] = data
        self.m.blob_size[digest] = len(data)
        self.written(digest, t)
        return digest, len(data)

    # manifests
    def image(self, t: float, label: str, platform: tuple[str, str, str] = _PLATFORMS[0]) -> str:
        spec = self.spec
        base = min(spec.base_layers_per_image, spec.layers_per_image, spec.shared_layers)
        layers: list[str] = []
        for i in self.rng.sample(range(spec.shared_layers), base):
            shared = self.shared[i]
            if shared is None:
                shared = self.shared[i] = self.layer(t)
            else:
                self.written(shared, t)
            layers.append(shared)
        layers += [self.layer(t) for _ in range(spec.layers_per_image - base)]
        self.serial += 1
        arch, os_, variant = platform
        created = _rfc3339(t)  # the model's clock: hashed into the config's digest
        config = {
            "architecture": arch,
            "os": os_,
            **({"variant": variant} if variant else {}),
            "created": created,
            "config": {"Labels": {"regprune.synthetic/source": label}, "Cmd": ["/bin/true"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": [_digest(b"uncompressed " + d.encode()) for d in layers],
            },
            "history": [
                {"created": created, "created_by": f"layer {i}"} for i in range(len(layers))
            ],
            "serial": self.serial,
        }
        config_digest, config_size = self.json_blob(config, t)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "size": config_size,
                "digest": config_digest,
            },
            "layers": [
                {"mediaType": LAYER_MEDIA_TYPE, "size": self.m.blob_size[d], "digest": d}
                for d in layers
            ],
        }
        digest, size = self.json_blob(manifest, t)
        self.m.manifests[digest] = _Manifest(
            MANIFEST_V2, size, config_digest, tuple(layers), (), arch, t
        )
        return digest

    def manifest_list(self, t: float, label: str) -> str:
        children = tuple((self.image(t, label, platform), *platform) for platform in _PLATFORMS)
        obj = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_LIST,
            "manifests": [
                {
                    "mediaType": MANIFEST_V2,
                    "size": self.m.manifests[d].size,
                    "digest": d,
                    "platform": {"architecture": a, "os": o, **({"variant": v} if v else {})},
                }
                for d, a, o, v in children
            ],
        }
        digest, size = self.json_blob(obj, t)
        self.m.manifests[digest] = _Manifest(MANIFEST_LIST, size, None, (), children, "", t)
        return digest

    # storage
    def link(self, repo_name: str, digest: str, t: float) -> None:
        repo = self.m.repos.setdefault(repo_name, _Repo())
        manifest = self.m.manifests[digest]
        _set_min(repo.manifests, digest, t)
        if manifest.config is not None:
            _set_min(repo.layers, manifest.config, t)
        for layer in manifest.layers:
            _set_min(repo.layers, layer, t)
        for child in manifest.children:
            self.link(repo_name, child[0], t)

    def store_tag(self, repo_name: str, tag: str, digest: str, t: float) -> None:
        repo = self.m.repos[repo_name]
        current = repo.current.get(tag)
        if current is None or t >= current[1]:
            repo.current[tag] = (digest, t)
        _set_min(repo.index.setdefault(tag, {}), digest, t)

    def push(self, repo: str, t: float, tag: str | None, as_list: bool | None = None) -> str:
        """A docker push: blobs, links, optionally a storage tag; no metadata."""
        if as_list is None:
            as_list = self.rng.random() < self.spec.manifest_list_fraction
        label = f"{repo}:{tag or 'digest'}"
        digest = self.manifest_list(t, label) if as_list else self.image(t, label)
        self.link(repo, digest, t)
        if tag is not None:
            self.store_tag(repo, tag, digest, t)
        return digest

    def add_image(self, repo: str, digest: str, t: float) -> None:
        """The Image objects the integrated registry creates for a push (children too)."""
        self.m.images.setdefault(digest, (repo, t))
        for child in self.m.manifests[digest].children:
            self.m.images.setdefault(child[0], (repo, t))

    # the consistent registry
    def build(self) -> None:
        spec = self.spec
        for n in range(spec.namespaces):
            namespace = f"ns-{n:04d}"
            for s in range(spec.streams_per_namespace):
                stream = _Stream(namespace, f"app-{s:03d}")
                repo = f"{namespace}/{stream.name}"
                self.m.streams[repo] = stream
                for k in range(spec.tags_per_stream):
                    tag = "latest" if k == 0 else f"v{k}"
                    times = sorted(self.push_time() for _ in range(spec.history_per_tag))
                    events = []
                    for generation, t in enumerate(times, start=1):
                        digest = self.push(repo, t, tag)
                        self.add_image(repo, digest, t)
                        events.append(_Event(digest, t, generation))
                    stream.tags[tag] = events[::-1]
        self.cross_tag()

    def cross_tag(self) -> None:
        repos = list(self.m.streams)
        if len(repos) < 2:
            return
        sources = [(r, e) for r in repos for es in self.m.streams[r].tags.values() for e in es[:1]]
        for k in range(min(self.spec.cross_tagged_count, len(sources))):
            source, event = self.rng.choice(sources)
            if event.image in self.cross:
                continue
            namespace = source.partition("/")[0]
            others = [r for r in repos if not r.startswith(namespace + "/")] or [
                r for r in repos if r != source
            ]
            target = self.rng.choice(others)
            t = max(event.created, self.push_time())
            tag = f"shared-{k}"
            self.link(target, event.image, t)
            self.store_tag(target, tag, event.image, t)
            self.m.streams[target].tags[tag] = [_Event(event.image, t, 1)]
            self.cross[event.image] = source
        self.drift["cross_tagged"] = [
            {"image": d, "source": s} for d, s in sorted(self.cross.items())
        ]

    # drift
    def stream_images(self, repos: Iterable[str] | None = None) -> set[str]:
        """Images the histories of these streams have, list children included."""
        names = self.m.streams if repos is None else repos
        found: set[str] = set()
        for name in names:
            for events in self.m.streams[name].tags.values():
                for event in events:
                    found.add(event.image)
                    manifest = self.m.manifests.get(event.image)
                    if manifest is not None:
                        found.update(c[0] for c in manifest.children)
        return found

    def drop_images(self, candidates: Iterable[str]) -> list[str]:
        """Delete Image objects no remaining stream history has (children follow lists)."""
        keep = self.stream_images()
        dropped = []
        for digest in candidates:
            family = [digest, *(c[0] for c in self.m.manifests[digest].children)]
            for d in family:
                if d not in keep and self.m.images.pop(d, None) is not None:
                    dropped.append(d)
        return dropped

    def delete_images(self) -> None:
        """Drift 1: as ``oc adm prune images``: older history entries first."""
        current: dict[str, bool] = {}
        for stream in self.m.streams.values():
            for events in stream.tags.values():
                for pos, event in enumerate(events):
                    if event.image not in self.cross:
                        current[event.image] = current.get(event.image, False) or pos == 0
        older = [d for d, c in current.items() if not c]
        newest = [d for d, c in current.items() if c]
        self.rng.shuffle(older)
        self.rng.shuffle(newest)
        chosen = (older + newest)[: _count(self.spec.deleted_image_fraction, len(current))]
        gone = set(chosen)
        for stream in self.m.streams.values():
            for tag in list(stream.tags):
                events = [e for e in stream.tags[tag] if e.image not in gone]
                if events:
                    stream.tags[tag] = events
                else:
                    del stream.tags[tag]
        self.drift["deleted_images"] = sorted(self.drop_images(chosen))

    def delete_streams(self) -> None:
        """Drift 2: cross-tag sources first, so an Image another stream has survives."""
        repos = list(self.m.streams)
        n = _count(self.spec.deleted_stream_fraction, len(repos))
        if len(repos) > 1:
            n = min(n, len(repos) - 1)
        sources = sorted(set(self.cross.values()))
        self.rng.shuffle(sources)
        rest = [r for r in repos if r not in sources]
        self.rng.shuffle(rest)
        chosen = (sources + rest)[:n]
        images = self.stream_images(chosen)
        for name in chosen:
            del self.m.streams[name]
        self.drift["deleted_streams"] = sorted(chosen)
        self.drift["deleted_stream_images"] = sorted(self.drop_images(sorted(images)))

    def dangle_history(self) -> None:
        """``oc delete image``: the Image goes, tag history entries stay (broken tags)."""
        candidates = sorted(
            d
            for d in self.stream_images()
            if d in self.m.images
            and d not in self.cross
            and not self.m.manifests[d].children
            and self.m.images[d][0] in self.m.streams
            and any(
                e.image == d for es in self.m.streams[self.m.images[d][0]].tags.values() for e in es
            )
        )
        chosen = self.rng.sample(candidates, min(self.spec.dangling_history_count, len(candidates)))
        for d in chosen:
            del self.m.images[d]
        self.drift["dangling_history_images"] = sorted(chosen)

    def surviving_repos(self) -> list[str]:
        return [r for r in self.m.streams if r in self.m.repos]

    def mount(self) -> None:
        """Links without history: existing Images (old link) and deleted ones (young link)."""
        repos = self.surviving_repos()
        alive = sorted(
            d
            for d in self.stream_images()
            if d in self.m.images and not self.m.manifests[d].children
        )
        deleted = [
            d
            for d in self.drift.get("deleted_images", [])
            if d in self.m.manifests and not self.m.manifests[d].children
        ]
        # an old manifest under a young link: the young link alone keeps it (when one exists)
        old = self.m.now - _YOUNG_WINDOW
        deleted = [d for d in deleted if self.m.manifests[d].created < old] or deleted
        mounted = []
        for i in range(self.spec.mounted_count if repos else 0):
            young = i % 2 == 1
            pool = deleted if young and deleted else alive
            if not pool:
                continue
            digest = self.rng.choice(pool)
            targets = [r for r in repos if digest not in self.m.repos[r].manifests]
            if not targets:
                continue
            repo = self.rng.choice(targets)
            t = max(self.m.manifests[digest].created + 1.0, self.push_time(young=young))
            self.link(repo, digest, t)
            mounted.append({"repository": repo, "digest": digest, "image_exists": pool is alive})
        self.drift["mounted"] = mounted

    def lose_manifests(self) -> None:
        """Drift 4: pushes whose Image never made it into the metadata."""
        repos = self.surviving_repos()
        lost = []
        for i in range(self.spec.lost_manifest_count if repos else 0):
            repo = self.rng.choice(repos)
            digest = self.push(repo, self.push_time(young=i % 2 == 1), None, as_list=i % 3 == 2)
            lost.append({"repository": repo, "digest": digest})
        self.drift["lost_manifests"] = lost

    def invalid_repositories(self) -> None:
        """Drift 5: repositories no ImageStream can own, each with a tagged manifest."""
        repos = self.surviving_repos()
        names = []
        for i in range(self.spec.invalid_repository_count):
            kind = i % 3
            if kind == 0:
                name = f"lonely{i}"
            elif kind == 1:
                name = f"{self.rng.choice(repos)}/nested{i}" if repos else f"a{i}/b/c"
            else:
                name = f"Legacy{i}/app"
            self.push(name, self.push_time(young=i % 4 == 3), "latest", as_list=False)
            names.append(name)
        self.drift["invalid_repositories"] = names

    def delete_blobs(self) -> None:
        """Drift 3: blobs remaining Images reference vanish (layer, config, manifest, ...)."""
        shared = {d for d in self.shared if d is not None}
        singles = sorted(d for d in self.m.images if not self.m.manifests[d].children)
        pools = {
            "manifest": singles,
            "config": sorted({c for d in singles if (c := self.m.manifests[d].config)}),
            "layer": sorted(
                {x for d in singles for x in self.m.manifests[d].layers if x not in shared}
            ),
        }
        members = {kind: set(pool) for kind, pool in pools.items()}
        kinds = ("layer", "config", "manifest")
        missing = []
        taken: set[str] = set()
        for i in range(self.spec.missing_blob_count):
            wanted = kinds[i % 3] if i < 3 else "layer"
            for kind in (wanted, *kinds):
                free = len(pools[kind]) - len(taken & members[kind])
                if free > 0:
                    break
            else:
                break
            digest = self.rng.choice(pools[kind])
            while digest in taken:  # terminates: this pool still has a free digest
                digest = self.rng.choice(pools[kind])
            taken.add(digest)
            self.m.blob_time.pop(digest, None)
            missing.append({"digest": digest, "kind": kind})
        self.drift["missing_blobs"] = missing

    def uploads(self) -> None:
        """Drift 6: unfinished pushes, alternately old (stale) and young."""
        repos = self.surviving_repos()
        made = []
        for i in range(self.spec.upload_count if repos else 0):
            repo = self.rng.choice(repos)
            upload_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            started = self.push_time(young=i % 2 == 1)
            self.serial += 1
            data = _layer_bytes(self.m.pool, self.serial, self.spec.min_blob_size)
            self.m.repos[repo].uploads[upload_id] = (started, started, data)
            made.append(
                {"repository": repo, "upload_id": upload_id, "started_at": self.m.stamp(started)}
            )
        self.drift["uploads"] = made

    def run(self) -> _Model:
        with _no_gc():
            return self._run()

    def _run(self) -> _Model:
        self.build()
        self.delete_images()
        self.delete_streams()
        self.dangle_history()
        self.mount()
        self.lose_manifests()
        self.invalid_repositories()
        self.delete_blobs()
        self.uploads()
        self.m.freeze_order()
        return self.m


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Millions of small acyclic objects: the cyclic collector only rescans them (30% of
    the build time at a million blobs)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _set_min(d: dict[str, float], key: str, t: float) -> None:
    old = d.get(key)
    if old is None or t < old:
        d[key] = t


# --- truth -------------------------------------------------------------------------------


def _keep_set(m: _Model) -> set[str]:
    keep: set[str] = set()
    for digest in m.images:
        keep.add(digest)
        keep.update(d for d, _ in m.manifests[digest].refs())
    return keep


def _history(m: _Model, repo: str) -> set[str]:
    """stream_history: tagged digests (any position) plus children of lists that are Images."""
    stream = m.streams.get(repo)
    if stream is None:
        return set()
    found: set[str] = set()
    for events in stream.tags.values():
        for event in events:
            found.add(event.image)
            if event.image in m.images:
                found.update(c[0] for c in m.manifests[event.image].children)
    return found


def _repository_reason(m: _Model, repo: str) -> str | None:
    if not layout.is_openshift_repository(repo):
        return "invalid-name"
    if repo not in m.streams:
        return "imagestream-missing"
    return None


def _prune_truth(m: _Model, grace: float, now: float) -> PruneTruth:
    """Hard-prune ground truth; ``grace`` seconds (0: no grace, nothing is young)."""
    cutoff = now - grace

    def young(t: float) -> bool:
        return grace > 0 and t > cutoff

    keep = _keep_set(m)
    kept: dict[str, list[Any]] = {
        "blobs": [],
        "repositories": [],
        "manifest_links": [],
        "layer_links": [],
        "uploads": [],
    }
    candidates: set[str] = set()
    repositories = []
    for name in m.repo_order:
        reason = _repository_reason(m, name)
        if reason is None:
            continue
        candidates.add(name)
        if young(m.repos[name].newest()):
            kept["repositories"].append(name)
        else:
            repositories.append(RepositoryItem(name, reason))

    newest_link: dict[str, float] = {}
    for repo in m.repos.values():
        for links in (repo.layers, repo.manifests):
            for digest, t in links.items():
                if t > newest_link.get(digest, -math.inf):
                    newest_link[digest] = t
    orphans = []
    for digest in m.blob_order:
        if digest in keep:
            continue
        if young(m.blob_time[digest]) or young(newest_link.get(digest, -math.inf)):
            kept["blobs"].append(digest)
        else:
            orphans.append(digest)
    deleted = set(orphans)

    manifest_links: list[LinkItem] = []
    layer_links: list[LinkItem] = []
    uploads: list[UploadItem] = []
    stale_before = now - UPLOAD_MAX_AGE.total_seconds()
    for name in m.repo_order:
        if name in candidates:
            continue
        repo = m.repos[name]
        history = _history(m, name)
        for digest, t in sorted(repo.manifests.items()):
            reason = "image-missing" if digest not in keep else None
            if reason is None and digest not in history:
                reason = "not-in-imagestream"
            if reason is not None:
                _judge(
                    young(t), kept["manifest_links"], manifest_links, LinkItem(name, digest, reason)
                )
        for digest, t in sorted(repo.layers.items()):
            reason = None
            if digest not in m.blob_time:
                reason = "blob-missing"
            elif digest in deleted:
                reason = "blob-deleted"
            if reason is not None:
                _judge(young(t), kept["layer_links"], layer_links, LinkItem(name, digest, reason))
        for upload_id, (started, t, _) in sorted(repo.uploads.items()):
            if started < stale_before:
                item = UploadItem(name, upload_id, m.stamp(started))
                _judge(young(t), kept["uploads"], uploads, item)
    return PruneTruth(
        keep_younger_than_seconds=grace,
        upload_max_age_seconds=UPLOAD_MAX_AGE.total_seconds(),
        orphan_blobs=tuple(orphans),
        orphan_bytes=sum(m.blob_size[d] for d in orphans),
        prunable_repositories=tuple(repositories),
        prunable_manifest_links=tuple(manifest_links),
        dangling_layer_links=tuple(layer_links),
        stale_uploads=tuple(uploads),
        kept_young=kept,
    )


def _judge(is_young: bool, kept: list[Any], deleted: list[Any], item: Any) -> None:
    if is_young:
        kept.append(item)
    else:
        deleted.append(item)


def _check_truth(m: _Model) -> CheckTruth:
    present = m.blob_time

    def own_missing(image: str) -> list[tuple[str, str]]:
        manifest = m.manifests[image]
        refs = [(image, "manifest"), *manifest.refs()]
        return sorted({(d, kind) for d, kind in refs if d not in present})

    broken_images = [
        BrokenImage(image, missing, kind)
        for image in sorted(m.images)
        for missing, kind in own_missing(image)
    ]
    broken_tags = []
    for repo in sorted(m.streams):
        stream = m.streams[repo]
        for tag in sorted(stream.tags):
            for position, event in enumerate(stream.tags[tag]):
                image = event.image
                if image not in m.images:
                    rows = [(image, "image")]
                else:
                    found = set(own_missing(image))
                    for child in m.manifests[image].children:
                        if child[0] in m.images:
                            found.update(own_missing(child[0]))
                    rows = sorted(found)
                broken_tags += [
                    BrokenTag(stream.namespace, stream.name, tag, position, image, d, kind)
                    for d, kind in rows
                ]
    lost = []
    unrestorable = []
    for name in m.repo_order:
        if not layout.is_openshift_repository(name):
            continue
        namespace, stream_name = layout.split_repository(name)
        assert namespace is not None
        history = _history(m, name)
        for digest in sorted(m.repos[name].manifests):
            if digest in history:
                continue
            missing = own_missing(digest)
            if missing:
                unrestorable.append(
                    UnrestorableManifest(namespace, stream_name, digest, missing[0][0])
                )
            else:
                lost.append(LostManifest(namespace, stream_name, digest))
    return CheckTruth(tuple(broken_tags), tuple(broken_images), tuple(lost), tuple(unrestorable))


def _counts(m: _Model) -> dict[str, int]:
    repos = m.repos.values()
    return {
        "blobs": len(m.blob_time),
        "blob_bytes": sum(m.blob_size[d] for d in m.blob_time),
        "manifests": sum(1 for d in m.blob_time if d in m.manifests),
        "images": len(m.images),
        "imagestreams": len(m.streams),
        "repositories": len(m.repos),
        "manifest_links": sum(len(r.manifests) for r in repos),
        "layer_links": sum(len(r.layers) for r in repos),
        "tag_links": sum(len(r.current) + sum(len(i) for i in r.index.values()) for r in repos),
        "uploads": sum(len(r.uploads) for r in repos),
        "files": len(m.blob_time) + sum(r.file_count() for r in repos),
        "young_blobs": sum(1 for t in m.blob_time.values() if t > m.now - _YOUNG_WINDOW - 1),
    }


# --- metadata ----------------------------------------------------------------------------


def _image_object(m: _Model, digest: str) -> dict[str, Any]:
    repo, t = m.images[digest]
    manifest = m.manifests[digest]
    created = m.stamp(t)
    layers: list[dict[str, Any]] = [
        {"name": d, "size": m.blob_size[d], "mediaType": LAYER_MEDIA_TYPE} for d in manifest.layers
    ]
    metadata: dict[str, Any] = {"kind": "DockerImage", "apiVersion": "1.0", "Created": created}
    if manifest.config is not None:
        metadata |= {
            "Id": manifest.config,
            "Architecture": manifest.architecture,
            "Size": sum(x["size"] for x in layers) + m.blob_size[manifest.config],
        }
    obj: dict[str, Any] = {
        "apiVersion": "image.openshift.io/v1",
        "kind": "Image",
        "metadata": {
            "name": digest,
            "uid": str(uuid.uuid5(_UID_NAMESPACE, digest)),
            "resourceVersion": str(int(t)),
            "creationTimestamp": created,
            "annotations": {
                "image.openshift.io/dockerLayersOrder": "ascending",
                "image.openshift.io/manifestBlobStored": "true",
                "openshift.io/image.managed": "true",
            },
        },
        "dockerImageReference": f"{m.registry_host}/{repo}@{digest}",
        "dockerImageMetadata": metadata,
        "dockerImageMetadataVersion": "1.0",
        "dockerImageLayers": layers,
        "dockerImageManifestMediaType": manifest.media_type,
    }
    if manifest.children:
        obj["dockerImageManifests"] = [
            {
                "digest": d,
                "mediaType": m.manifests[d].media_type,
                "manifestSize": m.manifests[d].size,
                "architecture": arch,
                "os": os_,
                "variant": variant,
            }
            for d, arch, os_, variant in manifest.children
        ]
    return obj


def _stream_object(m: _Model, repo: str) -> dict[str, Any]:
    stream = m.streams[repo]
    times = [e.created for es in stream.tags.values() for e in es] or [m.now]
    host_repo = f"{m.registry_host}/{repo}"
    return {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {
            "namespace": stream.namespace,
            "name": stream.name,
            "uid": str(uuid.uuid5(_UID_NAMESPACE, repo)),
            "creationTimestamp": m.stamp(min(times)),
        },
        "spec": {"lookupPolicy": {"local": False}},
        "status": {
            "dockerImageRepository": host_repo,
            "tags": [
                {
                    "tag": tag,
                    "items": [
                        {
                            "created": m.stamp(e.created),
                            "dockerImageReference": f"{host_repo}@{e.image}",
                            "image": e.image,
                            "generation": e.generation,
                        }
                        for e in stream.tags[tag]
                    ],
                }
                for tag in sorted(stream.tags)
            ],
        },
    }


def _write_metadata(m: _Model, path: Path) -> None:
    """One JSON document, written item by item (a million-blob dump is hundreds of MB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    with path.open("w") as out:
        out.write('{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[\n')
        first = True
        for obj in (
            *(_image_object(m, d) for d in sorted(m.images)),
            *(_stream_object(m, r) for r in sorted(m.streams)),
        ):
            if not first:
                out.write(",\n")
            out.write(dumps(obj))
            first = False
        out.write("\n]}\n")


# --- writing storage ---------------------------------------------------------------------

_WRITE_STATE: tuple[str, _Model] | None = None
"""(v2 root, model), inherited by forked writer processes instead of pickling the model."""


def _make_dir(path: str) -> None:
    """One mkdir in the common case; parents only when missing (no stat calls)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except FileNotFoundError:
        _make_dir(path[: path.rfind("/")])
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)


def _write_local_files(root: str, files: Iterable[tuple[str, bytes, float]]) -> int:
    """mkdir (once per folder), open, write, futimens, close: nothing else per file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    by_fd = os.utime in os.supports_fd
    made = ""
    count = 0
    for rel, data, mtime in files:
        path = f"{root}/{rel}"
        parent = path[: path.rfind("/")]
        if parent != made:
            _make_dir(parent)
            made = parent
        fd = os.open(path, flags, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            ns = int(mtime * 1e9)
            if by_fd:
                os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)
        if not by_fd:
            os.utime(path, ns=(ns, ns))
        count += 1
    return count


def _write_task(task: tuple[str, int, int]) -> int:
    assert _WRITE_STATE is not None
    root, model = _WRITE_STATE
    kind, lo, hi = task
    files = model.blob_files(lo, hi) if kind == "blobs" else model.repo_files(lo, hi)
    return _write_local_files(root, files)


def _tasks(m: _Model) -> list[tuple[str, int, int]]:
    tasks = [
        ("blobs", lo, min(lo + _TASK_FILES, len(m.blob_order)))
        for lo in range(0, len(m.blob_order), _TASK_FILES)
    ]
    lo = size = 0
    for i, name in enumerate(m.repo_order):
        size += m.repos[name].file_count()
        if size >= _TASK_FILES:
            tasks.append(("repos", lo, i + 1))
            lo, size = i + 1, 0
    if lo < len(m.repo_order):
        tasks.append(("repos", lo, len(m.repo_order)))
    return tasks


def _write_local(m: _Model, root: Path, workers: int | None) -> int:
    global _WRITE_STATE
    v2 = root / layout.V2_ROOT
    if v2.exists() and any(v2.iterdir()):
        raise FileExistsError(f"{v2} is not empty: generate into a fresh folder")
    for prefix in layout.BLOB_PREFIXES:
        (v2 / layout.blob_shard_prefix(prefix)).mkdir(parents=True, exist_ok=True)
    (v2 / layout.REPOSITORIES_PREFIX).mkdir(parents=True, exist_ok=True)
    base = str(v2)
    files = len(m.blob_order) + sum(r.file_count() for r in m.repos.values())
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if workers <= 1 or files < _POOL_MIN_FILES or "fork" not in _start_methods():
        return _write_local_files(base, m.all_files())
    _WRITE_STATE = (base, m)
    try:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            return sum(pool.map(_write_task, _tasks(m)))
    finally:
        _WRITE_STATE = None


def _start_methods() -> list[str]:
    from multiprocessing import get_all_start_methods

    return get_all_start_methods()


def _write_fsspec(m: _Model, target: str, storage_options: dict[str, Any] | None) -> int:
    """Any fsspec URL; ``pipe`` with a dict lets s3fs send a batch of PUTs concurrently."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(target, **(storage_options or {}))
    base = f"{root.rstrip('/')}/{layout.V2_ROOT}"
    if any(fs.exists(f"{base}/{p}") for p in (layout.BLOBS_PREFIX, layout.REPOSITORIES_PREFIX)):
        raise FileExistsError(f"{target}/{layout.V2_ROOT} is not empty")
    count = 0
    batch: dict[str, bytes] = {}
    for rel, data, _ in m.all_files():
        batch[f"{base}/{rel}"] = data
        if len(batch) >= _PIPE_BATCH:
            fs.pipe(batch)
            count += len(batch)
            batch = {}
    if batch:
        fs.pipe(batch)
        count += len(batch)
    return count


def _is_local(target: str) -> bool:
    return "://" not in target or target.startswith("file://")


# --- entry points ------------------------------------------------------------------------


def build_model(spec: SyntheticSpec, now: datetime | None = None) -> _Model:
    """The drifted registry in memory only (for tests sizing specs without disk I/O)."""
    at = time.time() if now is None else now.timestamp()
    return _Builder(spec, at).run()


def generate(
    target: str | Path,
    spec: SyntheticSpec,
    metadata_path: str | Path,
    truth_path: str | Path | None = None,
    *,
    now: datetime | None = None,
    storage_options: dict[str, Any] | None = None,
    workers: int | None = None,
) -> Truth:
    """Write a synthetic registry to ``target`` and its metadata dump; return the truth.

    ``target`` is the registry's rootdirectory (the folder that will hold
    ``docker/registry/v2``; it must not hold a registry yet) or an fsspec URL such as
    ``s3://bucket/root`` (``storage_options`` go to fsspec, e.g. ``endpoint_url``).
    ``now`` (default: the current time) is where the modelled times end: it moves the files'
    modification times and the dump's timestamps only; the content, the drift and the truth's
    sets depend on the seed alone (same seed and ``now``: byte-identical output).
    ``workers`` caps the writer processes for large local trees (default: CPU count).
    """
    started = time.perf_counter()
    builder = _Builder(spec, time.time() if now is None else now.timestamp())
    model = builder.run()
    built = time.perf_counter()
    target = str(target)
    if _is_local(target):
        files = _write_local(model, Path(target.removeprefix("file://")), workers)
    else:
        files = _write_fsspec(model, target, storage_options)
        model.set_all_mtimes(time.time())
    written = time.perf_counter()
    _write_metadata(model, Path(metadata_path))
    dumped = time.perf_counter()
    grace = spec.keep_younger_than_hours * 3600.0
    truth = Truth(
        target=target,
        now=model.stamp(model.now),
        spec=asdict(spec),
        counts=_counts(model) | {"files_written": files},
        drift=builder.drift,
        prune=_prune_truth(model, 0.0, model.now),
        prune_grace=_prune_truth(model, grace, model.now),
        check=_check_truth(model),
        _model=model,
    )
    truth.seconds = {
        "model": round(built - started, 3),
        "storage": round(written - built, 3),
        "metadata": round(dumped - written, 3),
        "truth": round(time.perf_counter() - dumped, 3),
    }
    if truth_path is not None:
        path = Path(truth_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(truth.to_json(), indent=1) + "\n")
    return truth


__all__ = [
    "MANIFEST_LIST",
    "MANIFEST_V2",
    "UPLOAD_MAX_AGE",
    "BrokenImage",
    "BrokenTag",
    "CheckTruth",
    "LinkItem",
    "LostManifest",
    "PruneTruth",
    "RepositoryItem",
    "SyntheticSpec",
    "Truth",
    "UnrestorableManifest",
    "UploadItem",
    "build_model",
    "generate",
    "load_truth",
]

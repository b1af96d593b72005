"""The promise of a garbage collector, checked on random registries (hypothesis).

A random registry is a set of real manifests (schema 2, OCI, schema 1, manifest lists) over a
pool of shared layers, pushed into random repositories at random times (old, young, exactly
at the grace cutoff, in the future), plus drift: Images removed from the metadata,
ImageStreams removed, blobs missing from storage, cross-repository mounts, abandoned blobs,
unfinished uploads, repository names OpenShift cannot own (nested in valid ones too), young
manifests no Image knows yet, tag history items that are not digests.

* The plan, computed by the product's SQL over snapshot tables written directly (no
  storage, fast), never deletes a blob any Image references (manifest, config, layer, list
  child) or a young unknown manifest references, never deletes a manifest link the rules
  keep, and never deletes anything younger than the grace period.
* The check's findings equal a plain-Python reading of the rules (docs/prune.md "What the hard
  prune plans", the header comments of sql/check/check_*.sql).
* Executed by ``regprune prune --confirm`` on a real folder tree, the plan removes only the
  files of planned objects, and every referenced blob, kept link and young file is still
  there (slow: a Prefect server and a run per example).

Example counts: ``REGPRUNE_PROPERTY_EXAMPLES`` (default 60) for the table properties,
``REGPRUNE_PROPERTY_RUNS`` (default 10) for the executed one; the counts that ran are printed
at the end of the module.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regprune import layout
from regprune.cli.main import EXIT_OK, main
from regprune.models import CHECK_FINDINGS, SnapshotDatabase
from regprune.tables import SCHEMAS, SNAPSHOT_FILE, TableWriters
from regprune.tasks.analysis import find_unknown_manifests, plan_hard_prune

EXAMPLES = int(os.environ.get("REGPRUNE_PROPERTY_EXAMPLES", "60"))
RUNS = int(os.environ.get("REGPRUNE_PROPERTY_RUNS", "10"))
RAN: Counter[str] = Counter()

HOST = "image-registry.openshift-image-registry.svc:5000"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V1 = "application/vnd.docker.distribution.manifest.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
GHOST = "sha256:" + "d" * 64
"""A tag history item whose Image was deleted (`oc delete image`)."""

VALID_REPOSITORIES = ("ns1/app", "ns1/web", "ns2/app")
INVALID_REPOSITORIES = ("ns1", "ns1/app/old", "lonely", "Upper/app")
"""Names no ImageStream can own; ``ns1`` and ``ns1/app/old`` share folders with valid ones."""
REPOSITORIES = VALID_REPOSITORIES + INVALID_REPOSITORIES
TAGS = ("latest", "v1")

GRACE = {"24h": timedelta(hours=24), "0s": timedelta(0)}
UPLOAD_AGE = {"7d": timedelta(days=7), "0s": timedelta(0)}
AGES: dict[str, timedelta | None] = {
    "old": timedelta(days=30),
    "older": timedelta(days=40),
    "young": timedelta(hours=1),
    "cutoff": timedelta(hours=24),  # exactly the 24h grace cutoff: not younger than it
    "future": -timedelta(minutes=5),  # a clock ahead of ours
    "unknown": None,  # an unreadable startedat
}
STORAGE_AGES = ("old", "older", "young", "cutoff", "future", "unknown")
"""Folder and S3 walks always give a time today, but the rules say a time that cannot be
read counts as young: unknown times are drawn for stored files too."""
ON_DISK_AGES = ("old", "older", "young", "future")
STORAGE_AGES_OLDEST_FIRST = ("older", "old", "cutoff", "young", "future", "unknown")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- the model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A manifest with its real bytes (so its digest is real and it can be read back)."""

    digest: str
    media_type: str
    content: bytes
    config: str | None
    layers: tuple[str, ...]
    children: tuple[str, ...]

    @property
    def references(self) -> list[tuple[str, str, int | None]]:
        """(digest, kind, position) as the product's manifest reader reports them."""
        refs: list[tuple[str, str, int | None]] = []
        if self.config:
            refs.append((self.config, "config", None))
        refs += [(d, "layer", i) for i, d in enumerate(self.layers)]
        refs += [(d, "manifest", i) for i, d in enumerate(self.children)]
        return refs


@dataclass
class Registry:
    """Storage and metadata of one random registry; times are ages (None: unknown)."""

    grace: str
    upload_age: str
    namespace: str | None
    blob_bytes: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    blob_ages: dict[str, str] = field(default_factory=dict)
    """Stored blobs: digest -> age of the first write."""
    images: dict[str, bool] = field(default_factory=dict)
    """Images in the metadata: manifest digest -> managed."""
    image_repository: dict[str, str] = field(default_factory=dict)
    manifest_links: dict[tuple[str, str], str] = field(default_factory=dict)
    layer_links: dict[tuple[str, str], str] = field(default_factory=dict)
    tags: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    tag_index: dict[tuple[str, str, str], str] = field(default_factory=dict)
    uploads: dict[tuple[str, str], tuple[str, str, int]] = field(default_factory=dict)
    """(repository, id) -> (age of startedat, age of its newest file, size)."""
    streams: dict[str, dict[str, list[str | None]]] = field(default_factory=dict)
    """Valid repository -> tag -> history (position 0 first; None: not a digest)."""

    # -- what the metadata says

    def image_blobs(self, image: str) -> list[tuple[str, str, int | None]]:
        """(digest, kind, position) of image_blobs for one Image, as the snapshot writes."""
        manifest = self.manifests[image]
        out: list[tuple[str, str, int | None]] = [(image, "manifest", None)]
        if manifest.config:
            out.append((manifest.config, "config", None))
        out += [(d, "layer", i) for i, d in enumerate(manifest.layers)]
        out += [(d, "manifest_list_child", i) for i, d in enumerate(manifest.children)]
        return out

    def referenced(self) -> set[str]:
        """Every digest some Image references (all Images count, managed or not)."""
        return {d for image in self.images for d, _, _ in self.image_blobs(image)}

    def history(self, repository: str) -> set[str]:
        """stream_history: tagged digests (any position) plus children of lists that are
        Images of the stream's history."""
        found: set[str] = set()
        for items in self.streams.get(repository, {}).values():
            for image in items:
                if image is None:
                    continue
                found.add(image)
                if image in self.images:
                    found.update(self.manifests[image].children)
        return found

    def repositories(self) -> set[str]:
        return (
            {r for r, _ in self.manifest_links}
            | {r for r, _ in self.layer_links}
            | {r for r, _ in self.tags}
            | {r for r, _ in self.uploads}
        )

    # -- pushes

    def store(self, digest: str, age: str) -> None:
        self.blob_ages.setdefault(digest, age)

    def push(self, manifest: Manifest, repository: str, tag: str, age: str) -> None:
        """What a client pushing ``manifest`` writes: missing blobs, layer links it did not
        have, the manifest link (rewritten on every push), children first, the tag."""
        for child in manifest.children:
            self.push_untagged(self.manifests[child], repository, age)
        self.push_untagged(manifest, repository, age)
        self.tags[(repository, tag)] = (manifest.digest, age)
        self.tag_index.setdefault((repository, tag, manifest.digest), age)

    def mount(self, repository: str | None, digest: str, age: str) -> None:
        """A blob uploaded (or mounted) into a repository with no manifest (None: into none)."""
        self.store(digest, age)
        if repository is not None:
            self.layer_links.setdefault((repository, digest), age)

    def push_untagged(self, manifest: Manifest, repository: str, age: str) -> None:
        for digest, kind, _ in manifest.references:
            if kind != "manifest":
                self.store(digest, age)
                self.layer_links.setdefault((repository, digest), age)
        self.store(manifest.digest, age)
        self.manifest_links[(repository, manifest.digest)] = age


def _layer(index: int) -> bytes:
    return f"layer {index}\n".encode() * (index + 1)


def _image_manifest(
    index: int, kind: str, layers: list[str], sizes: dict[str, int]
) -> tuple[Manifest, bytes | None]:
    """The manifest and its config's bytes (schema 1 has no config)."""
    if kind == "schema1":
        document: dict[str, Any] = {
            "schemaVersion": 1,
            "name": f"image{index}",
            "tag": "latest",
            "architecture": "amd64",
            "fsLayers": [{"blobSum": d} for d in reversed(layers)],
            "history": [{"v1Compatibility": "{}"} for _ in layers],
        }
        content = json.dumps(document).encode()
        return Manifest(digest_of(content), DOCKER_V1, content, None, tuple(layers), ()), None
    config = json.dumps({"architecture": "amd64", "os": "linux", "image": index}).encode()
    media_type = OCI_MANIFEST if kind == "oci" else DOCKER_V2
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": digest_of(config)},
        "layers": [{"mediaType": DOCKER_LAYER, "size": sizes[d], "digest": d} for d in layers],
    }
    content = json.dumps(document).encode()
    return Manifest(
        digest_of(content), media_type, content, digest_of(config), tuple(layers), ()
    ), config


def _list_manifest(index: int, children: list[Manifest]) -> Manifest:
    document = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            {
                "mediaType": child.media_type,
                "size": len(child.content),
                "digest": child.digest,
                "platform": {"architecture": f"arch{i}", "os": "linux"},
            }
            for i, child in enumerate(children)
        ],
        "list": index,
    }
    content = json.dumps(document).encode()
    return Manifest(
        digest_of(content), DOCKER_LIST, content, None, (), tuple(c.digest for c in children)
    )


@st.composite
def registries(draw: st.DrawFn, ages: tuple[str, ...] = STORAGE_AGES) -> Registry:
    age = st.sampled_from(ages)
    started = st.sampled_from((*ages, "unknown"))
    model = Registry(
        grace=draw(st.sampled_from(sorted(GRACE))),
        upload_age=draw(st.sampled_from(sorted(UPLOAD_AGE))),
        namespace=draw(st.sampled_from([None, None, "ns1", "ns2"])),
    )
    pool = [_layer(i) for i in range(draw(st.integers(1, 6)))]
    sizes = {digest_of(b): len(b) for b in pool}
    model.blob_bytes.update({digest_of(b): b for b in pool})
    singles: list[Manifest] = []
    for index in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["schema2", "schema2", "oci", "schema1"]))
        layers = draw(st.lists(st.sampled_from(sorted(sizes)), min_size=1, max_size=3))
        manifest, config = _image_manifest(index, kind, layers, sizes)
        if config is not None:
            model.blob_bytes[digest_of(config)] = config
        singles.append(manifest)
    lists = [
        _list_manifest(
            index,
            draw(st.lists(st.sampled_from(singles), min_size=1, max_size=2, unique_by=id)),
        )
        for index in range(draw(st.integers(0, 2)))
    ]
    for manifest in singles + lists:
        model.manifests[manifest.digest] = manifest
        model.blob_bytes[manifest.digest] = manifest.content
    every = sorted(model.manifests)

    # writes, replayed oldest first: pushes (a list pushes its children too; the same
    # manifest in another repository is a cross-repository push; pushed again into the same
    # repository, only its manifest link is rewritten), mounts of a layer without a
    # manifest, abandoned blobs (an upload finished, never referenced)
    writes: list[tuple[str, Callable[[], None]]] = []
    for digest in every:
        manifest = model.manifests[digest]
        for repository in draw(st.lists(st.sampled_from(REPOSITORIES), max_size=2, unique=True)):
            for when in draw(st.lists(age, min_size=1, max_size=2)):
                tag = draw(st.sampled_from(TAGS))
                writes.append((when, partial(model.push, manifest, repository, tag, when)))
            model.image_repository.setdefault(digest, repository)
    for repository, digest in draw(
        st.lists(st.tuples(st.sampled_from(REPOSITORIES), st.sampled_from(sorted(sizes))))
    ):
        writes.append((when := draw(age), partial(model.mount, repository, digest, when)))
    for index in range(draw(st.integers(0, 2))):
        data = f"abandoned {index}".encode()
        model.blob_bytes[digest_of(data)] = data
        linked = draw(st.sampled_from((None, *REPOSITORIES)))
        writes.append((when := draw(age), partial(model.mount, linked, digest_of(data), when)))
    for _, write in sorted(writes, key=lambda w: STORAGE_AGES_OLDEST_FIRST.index(w[0])):
        write()
    for index in range(draw(st.integers(0, 3))):
        repository = draw(st.sampled_from(VALID_REPOSITORIES + REPOSITORIES))
        model.uploads[(repository, f"upload-{index}")] = (draw(started), draw(age), 10 + index)
    # drift: blobs missing from storage
    stored = sorted(model.blob_ages)
    for digest in (
        draw(st.lists(st.sampled_from(stored), max_size=3, unique=True)) if stored else []
    ):
        del model.blob_ages[digest]

    # metadata: Images (some removed), streams (some removed) with tag histories
    for digest in every:
        if draw(st.integers(0, 3)) > 0:  # one in four was deleted from the metadata
            model.images[digest] = draw(st.integers(0, 5)) > 0  # mostly managed
    choices = [*every, *(m.digest for m in lists), GHOST, None]  # lists: more often tagged
    for repository in VALID_REPOSITORIES:
        if draw(st.integers(0, 3)) == 0:  # the stream was deleted
            continue
        pushed = [d for (r, d) in model.manifest_links if r == repository]
        item = st.sampled_from(pushed + choices) if pushed else st.sampled_from(choices)
        model.streams[repository] = {
            tag: draw(st.lists(item, max_size=3))
            for tag in draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True))
        }
    return model


# --- snapshot tables ---------------------------------------------------------------------


def at(now: datetime, age: str) -> datetime | None:
    offset = AGES[age]
    return None if offset is None else now - offset


def snapshot_tables(model: Registry, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """The tables the snapshot would write for this storage and metadata."""
    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in SCHEMAS}
    tables["blobs"] = [
        {"digest": d, "size": len(model.blob_bytes[d]), "modified": at(now, a)}
        for d, a in model.blob_ages.items()
    ]
    for repository in sorted(model.repositories()):
        namespace, name = layout.split_repository(repository)
        tables["repositories"].append(
            {
                "repository": repository,
                "namespace": namespace,
                "name": name,
                "valid_name": layout.is_openshift_repository(repository),
            }
        )
    for table in ("manifest_links", "layer_links"):
        tables[table] = [
            {"repository": r, "digest": d, "modified": at(now, a)}
            for (r, d), a in getattr(model, table).items()
        ]
    tables["tags"] = [
        {"repository": r, "tag": t, "digest": d, "modified": at(now, a)}
        for (r, t), (d, a) in model.tags.items()
    ]
    tables["tag_index"] = [
        {"repository": r, "tag": t, "digest": d, "modified": at(now, a)}
        for (r, t, d), a in model.tag_index.items()
    ]
    tables["uploads"] = [
        {
            "repository": r,
            "upload_id": u,
            "started_at": at(now, started),
            "size": size,
            "modified": at(now, modified),
        }
        for (r, u), (started, modified, size) in model.uploads.items()
    ]
    for image, managed in model.images.items():
        manifest = model.manifests[image]
        tables["images"].append(
            {
                "image": image,
                "managed": managed,
                "media_type": manifest.media_type,
                "docker_image_reference": image_reference(model, image),
                "config_digest": manifest.config,
                "created": now - timedelta(days=60),
            }
        )
        tables["image_blobs"] += [
            {"image": image, "digest": d, "kind": kind, "position": position, "size": None}
            for d, kind, position in model.image_blobs(image)
        ]
    for repository, tags in model.streams.items():
        namespace, name = layout.split_repository(repository)
        tables["imagestreams"].append(
            {"namespace": namespace, "name": name, "uid": repository, "created": None}
        )
        for tag, items in tags.items():
            tables["imagestream_tags"] += [
                {
                    "namespace": namespace,
                    "name": name,
                    "tag": tag,
                    "position": position,
                    "image": image,
                    "docker_image_reference": None,
                    "created": None,
                }
                for position, image in enumerate(items)
            ]
    return tables


def write_snapshot(model: Registry, folder: Path, now: datetime) -> None:
    for table, table_rows in snapshot_tables(model, now).items():
        if table in ("actions", "manifests", "manifest_references"):
            continue
        table_data = pa.Table.from_pylist(table_rows, schema=SCHEMAS[table])
        pq.write_table(table_data, folder / f"{table}.parquet")
    (folder / SNAPSHOT_FILE).write_text(json.dumps({"metadata_started_at": now.isoformat()}))


def read_unknown_manifests(model: Registry, digests: list[str], folder: Path) -> list[dict]:
    """What tasks/manifests.py records for the manifests the plan asks to read."""
    parts = TableWriters(("manifests", "manifest_references"), folder, "read")
    for digest in digests:
        manifest = model.manifests.get(digest)
        if manifest is None or digest not in model.blob_ages:
            parts["manifests"].append(digest=digest, problem="manifest blob is missing")
            continue
        parts["manifests"].append(digest=digest, media_type=manifest.media_type)
        for reference, kind, position in manifest.references:
            parts["manifest_references"].append(
                digest=digest, reference=reference, kind=kind, position=position
            )
    return [parts.close()]


@pytest.fixture(scope="module", autouse=True)
def report_examples(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None and RAN:
        with capture.global_and_fixture_disabled():
            ran = ", ".join(f"{name}: {count}" for name, count in sorted(RAN.items()))
            print(f"\nhypothesis examples run: {ran}")


# --- the plan ------------------------------------------------------------------------------


def plan_of(model: Registry) -> tuple[dict[str, list[dict]], set[str], datetime]:
    """Write the snapshot tables, run the product's plan; returns the plan tables, the
    digests young unknown manifests reference, and the snapshot's start."""
    now = datetime(2026, 1, 15, 3, 0, tzinfo=UTC)
    with tempfile.TemporaryDirectory(prefix="property-") as tmp:
        folder = Path(tmp)
        write_snapshot(model, folder, now)
        unknown = find_unknown_manifests.fn(str(folder), model.grace)
        parts = read_unknown_manifests(model, unknown, folder / "_parts")
        plan_hard_prune.fn(str(folder), parts, model.grace, model.upload_age)
        plan = {  # read with pyarrow: a DuckDB connection per table was a quarter of the time
            table: pq.read_table(folder / f"{table}.parquet").to_pylist()
            for table in (
                "plan_blobs",
                "plan_manifest_links",
                "plan_repositories",
                "plan_layer_links",
                "plan_uploads",
            )
        }
    pending = {  # what the readable ones reference (a link whose manifest is gone: nothing)
        d
        for digest in unknown
        if digest in model.manifests and digest in model.blob_ages
        for d, _, _ in model.manifests[digest].references
    }
    return plan, pending, now


def deleted(plan: dict[str, list[dict]], table: str) -> list[dict]:
    return [row for row in plan[table] if row["action"] == "delete"]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registries())
def test_the_plan_never_deletes_what_is_referenced_kept_or_young(model: Registry) -> None:
    RAN["plan safety"] += 1
    plan, pending, now = plan_of(model)
    cutoff = now - GRACE[model.grace]

    def young(age: str) -> bool:
        moment = at(now, age)
        return moment is None or moment > cutoff

    referenced = model.referenced()
    links_to: dict[str, list[str]] = {}
    for links in (model.layer_links, model.manifest_links):
        for (_, digest), age in links.items():
            links_to.setdefault(digest, []).append(age)
    for row in deleted(plan, "plan_blobs"):
        digest = row["digest"]
        assert digest in model.blob_ages, "planned a blob that is not stored"
        assert digest not in referenced, f"deletes {digest}, which an Image references"
        assert digest not in pending, f"deletes {digest}, which a young unknown manifest uses"
        assert not young(model.blob_ages[digest]), "deletes a young blob"
        assert not any(young(a) for a in links_to.get(digest, [])), "deletes a fresh-linked blob"

    whole = {row["repository"] for row in plan["plan_repositories"]}
    for row in deleted(plan, "plan_repositories"):
        repository = row["repository"]
        assert not (layout.is_openshift_repository(repository) and repository in model.streams)
        ages = [a for (r, _), a in model.manifest_links.items() if r == repository]
        ages += [a for (r, _), a in model.layer_links.items() if r == repository]
        ages += [a for (r, _), (_, a) in model.tags.items() if r == repository]
        ages += [a for (r, _, _), a in model.tag_index.items() if r == repository]
        ages += [a for (r, _), (_, a, _) in model.uploads.items() if r == repository]
        assert ages and not any(young(a) for a in ages), f"deletes young repository {repository}"

    for row in deleted(plan, "plan_manifest_links"):
        repository, digest = row["repository"], row["digest"]
        assert repository not in whole
        assert layout.is_openshift_repository(repository) and repository in model.streams
        kept = digest in referenced and digest in model.history(repository)
        assert not kept, f"deletes the link {repository}@{digest} its ImageStream keeps"
        assert not young(model.manifest_links[(repository, digest)]), "deletes a young link"

    planned_blobs = {row["digest"] for row in deleted(plan, "plan_blobs")}
    for row in deleted(plan, "plan_layer_links"):
        repository, digest = row["repository"], row["digest"]
        assert repository not in whole
        assert digest not in model.blob_ages or digest in planned_blobs
        assert not young(model.layer_links[(repository, digest)]), "deletes a young layer link"

    stale_before = now - UPLOAD_AGE[model.upload_age]
    for row in deleted(plan, "plan_uploads"):
        started, modified, _ = model.uploads[(row["repository"], row["upload_id"])]
        started_at = at(now, started) or at(now, modified)
        assert started_at is not None and started_at < stale_before, "deletes a fresh upload"
        assert not young(modified), "deletes an upload written within the grace period"
        assert row["repository"] not in whole


# --- the check -----------------------------------------------------------------------------


def reference_namespace(model: Registry, image: str) -> str | None:
    """The namespace of ``<host>/<namespace>/<name...>@digest`` (None without one)."""
    parts = image_reference(model, image).split("/")
    return parts[1] if len(parts) >= 3 else None


def image_reference(model: Registry, image: str) -> str:
    return f"{HOST}/{model.image_repository.get(image, 'elsewhere/image')}@{image}"


def expected_check(model: Registry) -> dict[str, list[tuple]]:
    """sql/check/ read in plain Python: broken tags, broken images, lost candidates."""
    stored = set(model.blob_ages)
    scope = model.namespace

    def in_scope(namespace: str | None) -> bool:
        return scope is None or namespace == scope

    def own_missing(image: str) -> set[tuple[str, str]]:
        """Blobs of a managed Image missing from storage: (missing, kind)."""
        if not model.images.get(image):
            return set()
        kinds = {"manifest_list_child": "manifest"}
        return {
            (d, kinds.get(kind, kind)) for d, kind, _ in model.image_blobs(image) if d not in stored
        }

    scoped_images = {
        image
        for repository, tags in model.streams.items()
        if in_scope(layout.split_repository(repository)[0])
        for items in tags.values()
        for image in items
        if image is not None
    } | {i for i in model.images if in_scope(reference_namespace(model, i))}
    broken_images = sorted(
        (image, missing, kind)
        for image in model.images
        if image in scoped_images
        for missing, kind in own_missing(image)
    )
    broken_tags = []
    for repository, tags in model.streams.items():
        namespace, name = layout.split_repository(repository)
        if not in_scope(namespace):
            continue
        for tag, items in tags.items():
            for position, image in enumerate(items):
                if image is None:
                    continue
                if image not in model.images:
                    broken_tags.append((namespace, name, tag, position, image, image, "image"))
                    continue
                found = own_missing(image)
                for child in model.manifests[image].children:
                    found |= own_missing(child)
                broken_tags += [
                    (namespace, name, tag, position, image, missing, kind)
                    for missing, kind in found
                ]
    lost = sorted(
        (repository, digest)
        for (repository, digest) in model.manifest_links
        if layout.is_openshift_repository(repository)
        and in_scope(layout.split_repository(repository)[0])
        and digest not in model.history(repository)
    )
    return {
        "check_broken_imagestream_tags": sorted(broken_tags),
        "check_broken_images": broken_images,
        "check_lost_candidates": lost,
    }


def check_of(model: Registry) -> dict[str, list[tuple]]:
    now = datetime(2026, 1, 15, 3, 0, tzinfo=UTC)
    columns = {
        "check_broken_imagestream_tags": "namespace, name, tag, position, image, missing, kind",
        "check_broken_images": "image, missing, kind",
        "check_lost_candidates": "repository, digest",
    }
    with tempfile.TemporaryDirectory(prefix="property-") as tmp:
        write_snapshot(model, Path(tmp), now)
        with SnapshotDatabase(tmp, {"namespace": model.namespace}) as db:
            db.define(*CHECK_FINDINGS)
            return {
                model_name: sorted(
                    tuple(r.values()) for r in db.records(f"SELECT {cols} FROM {model_name}")
                )
                for model_name, cols in columns.items()
            }


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registries())
def test_the_check_finds_what_a_plain_reading_of_the_rules_finds(model: Registry) -> None:
    RAN["check equals plain reading"] += 1
    assert check_of(model) == expected_check(model)


# --- executed on a folder --------------------------------------------------------------------


def write_tree(model: Registry, root: Path, now: float) -> dict[str, float]:
    """The storage as files with their modification times; returns key -> mtime."""
    v2 = root / layout.V2_ROOT
    v2.mkdir(parents=True)
    files: dict[str, tuple[bytes, float]] = {}

    def moment(age: str) -> float:
        offset = AGES[age]
        assert offset is not None
        return now - offset.total_seconds()

    for digest, age in model.blob_ages.items():
        files[layout.blob_data_path(digest)] = (model.blob_bytes[digest], moment(age))
    for (repository, digest), age in model.manifest_links.items():
        path = layout.manifest_link_path(repository, digest)
        files[path] = (layout.link_content(digest), moment(age))
    for (repository, digest), age in model.layer_links.items():
        files[layout.layer_link_path(repository, digest)] = (
            layout.link_content(digest),
            moment(age),
        )
    for (repository, tag), (digest, age) in model.tags.items():
        path = layout.tag_current_link_path(repository, tag)
        files[path] = (layout.link_content(digest), moment(age))
    for (repository, tag, digest), age in model.tag_index.items():
        path = layout.tag_index_link_path(repository, tag, digest)
        files[path] = (layout.link_content(digest), moment(age))
    for (repository, upload_id), (started, modified, size) in model.uploads.items():
        started_text = (
            b"not a time"  # unreadable: the upload's newest file decides
            if AGES[started] is None
            else datetime.fromtimestamp(moment(started), UTC).isoformat().encode()
        )
        files[layout.upload_startedat_path(repository, upload_id)] = (
            started_text,
            moment(modified),
        )
        files[layout.upload_dir(repository, upload_id) + "data"] = (b"x" * size, moment(modified))
    for key, (data, mtime) in files.items():
        path = v2 / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))
    return {key: mtime for key, (_, mtime) in files.items()}


def metadata_dump(model: Registry, path: Path) -> None:
    items: list[dict[str, Any]] = []
    for image, managed in model.images.items():
        manifest = model.manifests[image]
        obj: dict[str, Any] = {
            "apiVersion": "image.openshift.io/v1",
            "kind": "Image",
            "metadata": {
                "name": image,
                "annotations": {"openshift.io/image.managed": "true" if managed else "false"},
            },
            "dockerImageReference": image_reference(model, image),
            "dockerImageManifestMediaType": manifest.media_type,
        }
        if manifest.children:
            obj["dockerImageManifests"] = [
                {"digest": d, "mediaType": DOCKER_V2, "manifestSize": 1} for d in manifest.children
            ]
        else:
            obj["dockerImageLayers"] = [
                {"name": d, "size": len(model.blob_bytes[d]), "mediaType": DOCKER_LAYER}
                for d in manifest.layers
            ]
            obj["dockerImageMetadata"] = {"Id": manifest.config} if manifest.config else {}
        items.append(obj)
    for repository, tags in model.streams.items():
        namespace, name = layout.split_repository(repository)
        items.append(
            {
                "apiVersion": "image.openshift.io/v1",
                "kind": "ImageStream",
                "metadata": {"namespace": namespace, "name": name},
                "status": {
                    "tags": [
                        {"tag": tag, "items": [{"image": image or "latest"} for image in history]}
                        for tag, history in tags.items()
                    ]
                },
            }
        )
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def files_of_planned(report: dict[str, Any], model: Registry) -> tuple[set[str], set[str]]:
    """The files of the planned objects, and the repositories planned whole."""
    keys = {layout.blob_data_path(row["digest"]) for row in report["blobs"]}
    for row in report["manifest_links"]:
        keys.add(layout.manifest_link_path(row["repository"], row["digest"]))
        keys |= {
            layout.tag_index_link_path(r, t, d)
            for (r, t, d) in model.tag_index
            if (r, d) == (row["repository"], row["digest"])
        }
    keys |= {layout.layer_link_path(r["repository"], r["digest"]) for r in report["layer_links"]}
    for row in report["uploads"]:
        keys.add(layout.upload_dir(row["repository"], row["upload_id"]) + "startedat")
        keys.add(layout.upload_dir(row["repository"], row["upload_id"]) + "data")
    repositories = {row["repository"] for row in report["repositories"]}
    return keys, repositories


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@settings(
    max_examples=RUNS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(registries(ages=ON_DISK_AGES))
def test_executing_the_plan_on_a_folder_keeps_everything_in_use(model: Registry) -> None:
    RAN["executed on a folder"] += 1
    with tempfile.TemporaryDirectory(prefix="property-run-") as tmp:
        root = Path(tmp) / "registry"
        started = time.time()
        before = write_tree(model, root, started)
        metadata_dump(model, Path(tmp) / "dump.json")
        report_path = Path(tmp) / "report.json"
        args = ["prune", "--storage", str(root), "--metadata", str(Path(tmp) / "dump.json")]
        args += ["--out", str(Path(tmp) / "run"), "--report", str(report_path), "--confirm"]
        args += ["--keep-younger-than", model.grace, "--upload-max-age", model.upload_age]
        args += ["--force"]  # random metadata may not know any stored manifest
        assert main(args) == EXIT_OK
        report = json.loads(report_path.read_text())
        v2 = root / layout.V2_ROOT
        after = {str(p.relative_to(v2)) for p in v2.rglob("*") if p.is_file()}

    gone = set(before) - after
    planned, repositories = files_of_planned(report, model)
    for key in gone:
        if key.startswith(layout.REPOSITORIES_PREFIX) and key not in planned:
            owner = layout.parse_repository_key(key).repository
            assert owner in repositories, f"{key} went, but nothing planned it"
        else:
            assert key in planned, f"{key} went, but nothing planned it"
    for digest in model.referenced():
        key = layout.blob_data_path(digest)
        assert key not in gone, f"referenced blob {digest} was deleted"
    for repository in model.streams:
        for digest in model.history(repository) & model.referenced():
            key = layout.manifest_link_path(repository, digest)
            assert key not in gone, f"kept link {repository}@{digest} was deleted"
    cutoff = started - GRACE[model.grace].total_seconds()
    young = {key for key, mtime in before.items() if mtime > cutoff}
    assert not young & gone, f"young files deleted: {sorted(young & gone)}"

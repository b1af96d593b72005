"""The quarantine operations of the storage interface, on every backend: the two-phase
delete moves keys into ``_regprune/quarantine/<id>/`` and back, lists and purges them
(regprune/storage/base.py). One suite, parametrised over a backend fixture that yields the
opened storage and a way to write objects directly (as tests/test_storage_conformance.py
does for the rest of the interface); the folder runs in the fast suite, the others start
their service (moto, gcp-storage-emulator, Azurite, the Swift all-in-one).

What must hold: a move sends no bytes through regprune and loses none (a round trip gives
the same keys with the same bytes, a Swift DLO keeps its segments until purged); a key that
is not there is GONE, not moved; a restore never overwrites a key that came back with other
bytes; the dry run's storage changes nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regprune.layout import (
    QUARANTINE_ROOT,
    blob_data_path,
    layer_link_path,
    link_content,
    manifest_link_path,
    new_quarantine_id,
    quarantine_time,
    tag_current_link_path,
    tag_index_link_path,
)
from regprune.storage import DryRunStorage, Storage, StorageSpec, open_storage
from regprune.storage.base import DELETED, GONE, MOVED, PRESENT, WOULD_DELETE, WOULD_MOVE

V2 = "docker/registry/v2"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


LAYER = b"layer bytes " * 300  # bigger than a Swift segment: a DLO of several
CONFIG = b'{"config": true}'
MANIFEST = b'{"schemaVersion": 2, "layers": []}'
OTHER = b"another layer"


def registry_objects() -> dict[str, bytes]:
    """A small tree as a registry writes it (keys relative to the v2 root)."""
    repo = "ns/app"
    return {
        blob_data_path(digest(LAYER)): LAYER,
        blob_data_path(digest(CONFIG)): CONFIG,
        blob_data_path(digest(MANIFEST)): MANIFEST,
        blob_data_path(digest(OTHER)): OTHER,
        layer_link_path(repo, digest(LAYER)): link_content(digest(LAYER)),
        layer_link_path(repo, digest(CONFIG)): link_content(digest(CONFIG)),
        manifest_link_path(repo, digest(MANIFEST)): link_content(digest(MANIFEST)),
        tag_current_link_path(repo, "v1"): link_content(digest(MANIFEST)),
        tag_index_link_path(repo, "v1", digest(MANIFEST)): link_content(digest(MANIFEST)),
        f"repositories/{repo}/_uploads/0c9e-upload/startedat": b"2026-01-01T00:00:00Z",
    }


DLO_BLOBS = {blob_data_path(digest(LAYER)), blob_data_path(digest(CONFIG))}
"""Blobs a Swift registry writes through its segment writer (uploads): DLOs."""


@dataclass
class Bench:
    """One backend: the opened storage and how to write or list its raw objects."""

    kind: str
    storage: Storage
    put: Any
    raw_keys: Any
    segments: Any = field(default=lambda: set())

    def contents(self, storage: Storage | None = None) -> dict[str, bytes]:
        """Every key of the v2 tree (or of ``storage``, an area) with its bytes."""
        storage = storage or self.storage
        keys = [obj.key for obj in storage.walk("") if obj.problem is None]
        read = storage.read_many(keys)
        assert all(isinstance(v, bytes) for v in read.values()), read
        return {key: bytes(value) for key, value in read.items()}  # type: ignore[arg-type]


def _name() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


def _folder(tmp_path: Path) -> Bench:
    root = tmp_path / "storage"

    def put(objects: dict[str, bytes], dlo: set[str] = frozenset()) -> None:
        for key, data in objects.items():
            path = root / V2 / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def raw_keys() -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    put({"blobs/.keep": b""})
    (root / V2 / "blobs/.keep").unlink()
    return Bench("folder", open_storage(StorageSpec(str(root))), put, raw_keys)


def _s3(moto: Any, monkeypatch: pytest.MonkeyPatch) -> Bench:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": moto.endpoint_url,
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = moto.create_bucket(_name())
    client = moto.client()

    def put(objects: dict[str, bytes], dlo: set[str] = frozenset()) -> None:
        for key, data in objects.items():
            client.put_object(Bucket=bucket, Key=f"root/{V2}/{key}", Body=data)

    def raw_keys() -> set[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    return Bench("s3", open_storage(StorageSpec(f"s3://{bucket}/root")), put, raw_keys)


def _emulated(kind: str, emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Bench:
    for name, value in emulator.env.items():
        monkeypatch.setenv(name, value)
    bucket = emulator.create_bucket(_name())
    base = {"gcs": f"{V2}/", "azure": f"/{V2}/", "swift": f"files/{V2}/"}[kind]

    def put(objects: dict[str, bytes], dlo: set[str] = frozenset()) -> None:
        for key, data in objects.items():
            if kind == "swift" and key in dlo:
                segments = f"segments/{uuid.uuid4().hex[:3]}/{uuid.uuid4().hex}"
                for number, start in enumerate(range(0, len(data), 1024), 1):
                    emulator.put_object(bucket, f"{segments}/{number:016d}", data[start:][:1024])
                manifest = {"X-Object-Manifest": f"{bucket}/{segments}"}
                emulator.put_object(bucket, base + key, b"", manifest)
            else:
                emulator.put_object(bucket, base + key, data)

    def raw_keys() -> set[str]:
        return set(emulator.list_keys(bucket))

    def segments() -> set[str]:
        return {key for key in emulator.list_keys(bucket) if key.startswith("segments/")}

    scheme = {"gcs": "gs", "azure": "az", "swift": "swift"}[kind]
    storage = open_storage(StorageSpec(f"{scheme}://{bucket}"))
    return Bench(kind, storage, put, raw_keys, segments)


BACKENDS = [
    "folder",
    pytest.param("s3", marks=pytest.mark.slow),
    pytest.param("gcs", marks=pytest.mark.slow),
    pytest.param("azure", marks=pytest.mark.slow),
    pytest.param("swift", marks=pytest.mark.slow),
]


@pytest.fixture(params=BACKENDS)
def bench(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bench]:
    kind = request.param
    if kind == "folder":
        bench = _folder(tmp_path)
    elif kind == "s3":
        bench = _s3(request.getfixturevalue("moto"), monkeypatch)
    else:
        fixture = {"gcs": "gcs_emulator", "azure": "azurite", "swift": "swift_aio"}[kind]
        bench = _emulated(kind, request.getfixturevalue(fixture), monkeypatch)
    bench.put(registry_objects(), DLO_BLOBS)
    yield bench


def quarantine_id() -> str:
    return new_quarantine_id(datetime(2026, 3, 1, 3, 0, tzinfo=UTC))


def test_a_quarantine_round_trip_gives_the_same_keys_and_bytes(bench: Bench) -> None:
    before, segments = bench.contents(), bench.segments()
    qid = quarantine_id()
    moving = [*sorted(before)[:6], blob_data_path(digest(b"never stored"))]

    outcome = bench.storage.quarantine_many(qid, moving)

    assert outcome == {**dict.fromkeys(moving[:6], MOVED), moving[6]: GONE}
    after = bench.contents()
    assert after == {k: v for k, v in before.items() if k not in moving}
    assert bench.storage.quarantine_ids() == [qid]
    quarantined = {obj.key: obj.size for obj in bench.storage.quarantined(qid)}
    assert quarantined == {key: len(before[key]) for key in moving[:6]}
    assert bench.segments() == segments  # a DLO's data stays where it is
    assert not any(key.startswith(V2) and key in moving for key in bench.raw_keys())

    back = bench.storage.restore_many(qid, moving)

    assert back == {**dict.fromkeys(moving[:6], MOVED), moving[6]: GONE}
    assert bench.contents() == before
    assert bench.storage.quarantine_ids() == []
    assert not any(QUARANTINE_ROOT in key for key in bench.raw_keys())
    assert bench.segments() == segments


def test_a_restore_never_overwrites_other_bytes(bench: Bench) -> None:
    repo = "ns/app"
    tag = tag_current_link_path(repo, "v1")
    link = layer_link_path(repo, digest(LAYER))
    qid = quarantine_id()
    assert bench.storage.quarantine_many(qid, [tag, link]) == {tag: MOVED, link: MOVED}
    retagged = link_content(digest(OTHER))
    bench.put({tag: retagged, link: link_content(digest(LAYER))})  # pushes wrote them again

    back = bench.storage.restore_many(qid, [tag, link])

    assert back[link] == PRESENT  # the same bytes: the quarantined copy is dropped
    assert "other bytes" in back[tag]
    assert bench.contents()[tag] == retagged
    assert [obj.key for obj in bench.storage.quarantined(qid)] == [tag]


def test_a_purge_deletes_the_quarantined_keys_and_a_dlos_segments(bench: Bench) -> None:
    before, segments = bench.contents(), bench.segments()
    layer = blob_data_path(digest(LAYER))
    qid = quarantine_id()
    bench.storage.quarantine_many(qid, [layer])

    assert bench.storage.purge_many(qid, [layer]) == {layer: DELETED}

    assert bench.storage.quarantined(qid) == []
    assert bench.storage.quarantine_ids() == []
    assert bench.contents() == {k: v for k, v in before.items() if k != layer}
    if bench.kind == "swift":  # the layer's DLO segments went with it, the config's stay
        assert bench.segments() < segments
        assert len(segments - bench.segments()) == -(-len(LAYER) // 1024)
    assert bench.storage.restore_many(qid, [layer]) == {layer: GONE}


def test_the_dry_run_storage_changes_nothing(bench: Bench) -> None:
    before, raw = bench.contents(), bench.raw_keys()
    dry = DryRunStorage(bench.storage)
    layer = blob_data_path(digest(LAYER))
    qid = quarantine_id()

    assert dry.quarantine_many(qid, [layer]) == {layer: WOULD_MOVE}
    assert dry.purge_many(qid, [layer]) == {layer: WOULD_DELETE}
    bench.storage.quarantine_many(qid, [layer])
    assert dry.restore_many(qid, [layer]) == {layer: WOULD_MOVE}
    bench.storage.restore_many(qid, [layer])

    assert bench.contents() == before
    assert bench.raw_keys() == raw


def test_quarantine_ids_tell_their_time() -> None:
    when = datetime(2026, 3, 1, 3, 0, 12, 345678, tzinfo=UTC)
    first, second = new_quarantine_id(when), new_quarantine_id(when)
    assert first != second
    assert quarantine_time(first) == when

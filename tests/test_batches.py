"""What a deletion batch and the re-verification walk read, on a real folder tree.

On S3 every read is a request, and the issue's target is about one request per thousand
deleted blobs: a batch must re-read its targets together (one listing of their common folder),
and the walk before each phase must read only the links it compares.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from regprune.audit import AuditTrail
from regprune.layout import (
    V2_ROOT,
    blob_data_path,
    layer_link_path,
    link_content,
    new_quarantine_id,
    tag_current_link_path,
    upload_startedat_path,
)
from regprune.prune_execute import QUARANTINED, SKIPPED, Batch, ExecutionSettings
from regprune.storage import LocalStorage, StorageObject, StorageSpec
from regprune.storage_walk import REPOSITORY_TABLES, RepositoryShardWalker, prefix_listings
from regprune.tables import TableWriters

OLD = datetime(2026, 1, 1, tzinfo=UTC)
SNAPSHOT_STARTED = OLD + timedelta(days=10)


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


class CountingStorage(LocalStorage):
    """The real folder storage, counting the calls that are requests on S3."""

    def __init__(self, spec: StorageSpec):
        super().__init__(spec)
        self.stat_calls: list[list[str]] = []
        self.read_calls: list[list[str]] = []

    def stat_many(self, keys: Sequence[str]) -> dict[str, StorageObject | None]:
        self.stat_calls.append(list(keys))
        return super().stat_many(keys)

    def read_many(self, keys: Sequence[str]) -> dict[str, bytes | Exception]:
        self.read_calls.append(list(keys))
        return super().read_many(keys)


def write(root: Path, key: str, content: bytes, modified: datetime = OLD) -> None:
    path = root / V2_ROOT / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (modified.timestamp(), modified.timestamp()))


def run_batch(root: Path, items: list[dict[str, Any]]) -> tuple[CountingStorage, list[dict]]:
    storage = CountingStorage(StorageSpec(str(root)))
    qid = new_quarantine_id(SNAPSHOT_STARTED)
    settings = ExecutionSettings(
        StorageSpec(str(root)), str(root / "audit"), "run-1", SNAPSHOT_STARTED, qid
    )
    audit = AuditTrail(root / "audit", "batch")
    Batch(settings, storage, audit).run(items)
    parts = audit.close()
    rows = [row for part in parts for row in pq.read_table(part).to_pylist()]
    return storage, [row for row in rows if row["status"] != "quarantining"]


def test_a_batch_rereads_its_targets_together_and_still_protects_each(tmp_path: Path) -> None:
    """Two reads for the whole batch (the targets, then the blobs of its layer links), and
    each item still judged on its own: a blob touched after the snapshot and a layer link
    whose blob came back are skipped, the rest deleted."""
    old_blobs = [digest(f"old-{i}") for i in range(5)]
    touched = digest("touched")
    back = digest("back")
    for blob in old_blobs:
        write(tmp_path, blob_data_path(blob), b"x")
    write(tmp_path, blob_data_path(touched), b"x", SNAPSHOT_STARTED + timedelta(minutes=1))
    write(tmp_path, blob_data_path(back), b"x")
    for layer in (back, old_blobs[0]):
        write(tmp_path, layer_link_path("ns/app", layer), link_content(layer))
    missing = digest("missing")
    write(tmp_path, layer_link_path("ns/app", missing), link_content(missing))

    items = [{"phase": 2, "action": "delete_blob", "digest": d} for d in [*old_blobs, touched]] + [
        {"phase": 2, "action": "delete_layer_link", "repository": "ns/app", "digest": d}
        for d in (back, missing)
    ]
    storage, audit = run_batch(tmp_path, items)

    assert len(storage.stat_calls) == 2
    assert len(storage.stat_calls[0]) == len(items)  # every target, in one call
    assert storage.stat_calls[1] == [blob_data_path(back), blob_data_path(missing)]
    outcome = {(row["action"], row["digest"]): (row["status"], row["reason"]) for row in audit}
    assert outcome[("delete_blob", touched)] == (SKIPPED, "modified after the snapshot started")
    assert outcome[("delete_layer_link", back)] == (SKIPPED, "its blob exists (again)")
    assert outcome[("delete_layer_link", missing)] == (QUARANTINED, None)
    assert all(outcome[("delete_blob", d)] == (QUARANTINED, None) for d in old_blobs)
    assert (tmp_path / V2_ROOT / blob_data_path(touched)).exists()
    assert (tmp_path / V2_ROOT / layer_link_path("ns/app", back)).exists()
    assert not (tmp_path / V2_ROOT / blob_data_path(old_blobs[0])).exists()


@pytest.mark.parametrize("links_only", [False, True])
def test_the_walk_before_deleting_reads_no_tag_or_upload_file(
    tmp_path: Path, links_only: bool
) -> None:
    """The re-verification compares links only: reading every tag's ``current`` link and
    every upload's ``startedat`` (one GET each on S3) would be requests thrown away."""
    layer = digest("layer")
    write(tmp_path, layer_link_path("ns/app", layer), link_content(layer))
    write(tmp_path, tag_current_link_path("ns/app", "v1"), link_content(layer))
    write(tmp_path, upload_startedat_path("ns/app", "u-1"), b"2026-01-01T00:00:00Z")
    storage = CountingStorage(StorageSpec(str(tmp_path)))
    out = TableWriters(REPOSITORY_TABLES, tmp_path / "parts", "shard")
    walker = RepositoryShardWalker(StorageSpec(str(tmp_path)), out)
    walker.storage = storage
    for listing in prefix_listings(storage, ["repositories/ns/"]):
        walker.record(listing)
    walker.finish(links_only=links_only)
    parts = out.close()

    assert bool(storage.read_calls) is not links_only
    assert pq.read_table(parts["layer_links"])["digest"].to_pylist() == [layer]
    assert pq.read_table(parts["tags"]).num_rows == (0 if links_only else 1)

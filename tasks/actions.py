"""Execute a hard-prune plan, batch by batch, safe while the registry keeps serving.

Each batch expands its actions into the files they remove, re-reads them right before
deleting (the modification time of every target file; for a dangling layer link, whether its
blob came back), skips anything touched after the snapshot started, and records every
outcome, done, skipped or failed, with its files, in the run's audit trail
(``actions/*.parquet``). Deleting something already gone counts as done, so a batch can always
be run again: that is what ``--resume`` does.

A dry run runs the same batches against a storage that only records what would go
(regprune/storage/dryrun.py): its outcome is ``would-delete``. It re-reads nothing (on S3 each
re-read is a request; the dry run takes the snapshot as current) and clears no registry cache.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task

from regprune import interrupts, progress
from regprune.layout import (
    blob_data_path,
    blob_data_paths,
    layer_link_paths,
    manifest_link_paths,
    repository_dir,
    tag_index_link_paths,
    upload_dir,
)
from regprune.registry import RegistryAPI
from regprune.storage import DryRunStorage, Storage, StorageObject, StorageSpec, open_storage
from regprune.tables import TableWriter

DONE, WOULD_DELETE, SKIPPED, FAILED = "done", "would-delete", "skipped", "failed"
BATCH_SIZE = 1000
QUEUE_SCHEMA = pa.schema(
    [
        ("phase", pa.int32()),
        ("action", pa.string()),
        ("repository", pa.string()),
        ("digest", pa.string()),
        ("upload_id", pa.string()),
        ("size", pa.int64()),
        ("shard", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("blob_repositories", pa.list_(pa.string())),
        ("skip_reason", pa.string()),
    ]
)
"""The columns of sql/execution_queue.sql that a batch reads."""
AUDIT_FROM_QUEUE = ("phase", "action", "repository", "digest", "upload_id", "size")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
QUEUE_ORDER = ("shard", "action", "repository", "digest", "upload_id")
"""The order batches are cut in (tasks/execution.py build_execution_queue counts on it)."""


@dataclass(frozen=True)
class ExecutionSettings:
    """What every batch of one run shares."""

    spec: StorageSpec
    audit_dir: str
    run_id: str
    touched_after: datetime
    """Anything modified after this (the snapshot's start) was written since: skip it."""
    registry: RegistryAPI | None = None
    dry_run: bool = False
    """Delete nothing (record ``would-delete``), re-read nothing, call no registry."""


class _Batch:
    """One batch: resolve targets, re-verify, delete, record. The files of blob and link
    actions come built in bulk with the rows (queue_rows) and the outcomes go into the audit
    part as columns, once per batch: per action, only the checks stay Python."""

    def __init__(self, settings: ExecutionSettings, storage: Storage, audit: TableWriter):
        self.settings = settings
        self.storage = storage
        self.audit = audit
        self.done = WOULD_DELETE if settings.dry_run else DONE
        self._rows: list[tuple[dict[str, Any], str, str | None, list[str] | None]] = []

    def record(
        self,
        item: dict[str, Any],
        status: str,
        reason: str | None = None,
        files: list[str] | None = None,
    ) -> None:
        """Keep an outcome for write_records; ``files`` are the objects it removed (or would),
        without the folders a local walk also names (empty ones are removed with their
        repository; object stores have none), so the trail reads alike on every storage."""
        if files is not None:
            files = [key for key in files if not key.endswith("/")]
        self._rows.append((item, status, reason, files))

    def write_records(self) -> None:
        """The batch's outcomes, as columns into the audit part (one call, not one a row)."""
        rows, self._rows = self._rows, []
        if not rows:
            return
        now = datetime.now(UTC)
        micros = (now - EPOCH) // timedelta(microseconds=1)  # TIMESTAMP, without a conversion a row
        items = [item for item, *_ in rows]
        self.audit.write_columns(
            {
                "run_id": [self.settings.run_id] * len(rows),
                **{name: [item.get(name) for item in items] for name in AUDIT_FROM_QUEUE},
                "status": [status for _, status, _, _ in rows],
                "reason": [reason for _, _, reason, _ in rows],
                "time": [micros] * len(rows),
                "files": [files for *_, files in rows],
            }
        )

    def targets(self, item: dict[str, Any]) -> list[str]:
        """The files this action removes: blob and link actions come with theirs
        (``planned_files``, built in bulk); a repository or upload is listed now."""
        if item.get("files") is not None:
            return item["files"]
        if item["action"] == "delete_repository":
            # only its own _layers, _manifests and _uploads: a repository nested in its folder
            # (ns/app inside ns) is another repository, judged on its own
            own = repository_dir(item["repository"]) + "_"
            walked = self.storage.walk(repository_dir(item["repository"]))
            return [obj.key for obj in walked if obj.key.startswith(own)]
        walked = self.storage.walk(upload_dir(item["repository"], item["upload_id"]))
        return [obj.key for obj in walked]

    def verify(
        self,
        item: dict[str, Any],
        targets: list[str],
        stats: dict[str, StorageObject | None],
        blobs: dict[str, StorageObject | None],
    ) -> str | None:
        """Why this action must not run now, or None (``stats``: the batch's targets re-read
        just now; ``blobs``: the blobs of its layer links)."""
        files = [key for key in targets if not key.endswith("/")]  # folders' times move
        times = [stat.modified for key in files if (stat := stats.get(key)) and stat.modified]
        if times and max(times) > self.settings.touched_after:
            return "modified after the snapshot started"
        if item["action"] == "delete_layer_link" and blobs.get(blob_data_path(item["digest"])):
            return "its blob exists (again)"
        return None

    def clear_registry_cache(self, item: dict[str, Any], targets: list[str]) -> str | None:
        """Unlink through the registry before the bytes go, so its cache forgets them."""
        registry = self.settings.registry
        if registry is None:
            return None
        if item["action"] == "delete_blob":
            pairs = [(repo, item["digest"]) for repo in item.get("blob_repositories") or []]
        elif item["action"] == "delete_repository":
            pairs = [
                (item["repository"], f"sha256:{key.rsplit('/', 2)[-2]}")
                for key in targets
                if "/_layers/sha256/" in key and key.endswith("/link")
            ]
        else:
            return None
        for repository, digest in pairs:
            error = registry.unlink(repository, digest)
            if error:
                return f"registry cache not cleared for {repository}@{digest}: {error}"
        return None

    def reread(self, keys: list[str]) -> dict[str, StorageObject | None]:
        """The keys as they are now; nothing in a dry run (it takes the snapshot as current,
        and every key read is a request on S3)."""
        if self.settings.dry_run or not keys:
            return {}
        return self.storage.stat_many(keys)

    def run(self, items: list[dict[str, Any]]) -> None:
        """Re-read the whole batch at once (on S3 one listing of its common folder, not a
        request per object), then delete what is still as planned in one call. ``items``:
        rows of the queue as :func:`queue_rows` gives them (dicts may leave columns out)."""
        if any("files" not in item for item in items):
            items = queue_rows(_as_queue(items))
        pending: list[tuple[dict[str, Any], list[str]]] = []
        for item in items:
            if item.get("skip_reason"):
                self.record(item, SKIPPED, item["skip_reason"])
            else:
                pending.append((item, self.targets(item)))
        stats = self.reread([key for _, keys in pending for key in keys if not key.endswith("/")])
        linked = [item["digest"] for item, _ in pending if item["action"] == "delete_layer_link"]
        blobs = self.reread([blob_data_path(d) for d in linked])
        ready: list[tuple[dict[str, Any], list[str]]] = []
        for item, targets in pending:
            reason = self.verify(item, targets, stats, blobs) or self.clear_registry_cache(
                item, targets
            )
            if reason:
                self.record(item, SKIPPED, reason)
            else:
                ready.append((item, targets))
        outcome = self.storage.delete_many([key for _, targets in ready for key in targets])
        for item, targets in ready:
            errors = [outcome[key] for key in targets if outcome.get(key)]
            status = FAILED if errors else self.done
            if status == DONE and item["action"] == "delete_blob" and self.settings.registry:
                error = self.settings.registry.forget(item["digest"])
                if error:
                    status = FAILED
                    errors = [f"deleted, but the registry cache may still claim it: {error}"]
            self.record(item, status, errors[0] if errors else None, targets)
        progress.advance("delete", len(items), sum(item.get("size") or 0 for item, _ in ready))
        self.write_records()


def planned_files(batch: pa.Table) -> list[list[str] | None]:
    """The files each blob or link action of ``batch`` removes, built for all at once with
    the layout module's bulk functions (one Python call per action costs more than the dry
    run's work); None for a repository or upload (listed when its batch runs) and for an
    action already skipped."""
    files: list[list[str] | None] = [None] * batch.num_rows
    todo = pc.invert(pc.fill_null(pc.is_valid(batch["skip_reason"]), False))
    for action, paths in (
        ("delete_blob", lambda t: blob_data_paths(t["digest"])),
        ("delete_manifest_link", lambda t: manifest_link_paths(t["repository"], t["digest"])),
        ("delete_layer_link", lambda t: layer_link_paths(t["repository"], t["digest"])),
    ):
        rows = pc.indices_nonzero(pc.and_(pc.equal(batch["action"], action), todo)).to_pylist()
        if not rows:
            continue
        chosen = batch.take(rows)
        for row, path in zip(rows, paths(chosen).to_pylist(), strict=True):
            files[row] = [path]
        if action == "delete_manifest_link":
            tags = chosen["tags"].combine_chunks()
            parents = pc.list_parent_indices(tags)
            tagged = tag_index_link_paths(
                pc.take(chosen["repository"], parents),
                pc.list_flatten(tags),
                pc.take(chosen["digest"], parents),
            )
            for parent, path in zip(parents.to_pylist(), tagged.to_pylist(), strict=True):
                files[rows[parent]].append(path)
    return files


def queue_rows(batch: pa.Table) -> list[dict[str, Any]]:
    """Rows of the queue as a batch runs them: dicts with their ``files`` (planned_files)."""
    rows = batch.to_pylist()
    for row, files in zip(rows, planned_files(batch), strict=True):
        row["files"] = files
    return rows


def _as_queue(items: list[dict[str, Any]]) -> pa.Table:
    """Queue rows given as dicts (columns left out are null), as a batch table."""
    return pa.Table.from_pylist(
        [{name: item.get(name) for name in QUEUE_SCHEMA.names} for item in items],
        schema=QUEUE_SCHEMA,
    )


@dataclass(frozen=True)
class BatchRef:
    """One batch of a phase's queue: up to ``BATCH_SIZE`` actions of one shard from ``start``
    (one S3 ``DeleteObjects`` request for blobs), with the name of its audit part."""

    shard: str
    start: int
    name: str


PART_ACTIONS = 10_000
PART_SECONDS = 5.0
"""A task's audit part is closed (readable: what it records counts as done on --resume) and
a new one started after this many actions or seconds, between batches: few files for a big
plan, little work redone after a kill."""


@task(name="execute-batches", retries=2, retry_delay_seconds=[5, 30])
def execute_batches(settings: ExecutionSettings, queue: str, batches: list[BatchRef]) -> list[str]:
    """Run batches of one phase's queue one after the other, reading their actions at once
    (a task, a query and a file per thousand objects would cost more than a dry run's work).
    The audit trail is written in parts (PART_ACTIONS, PART_SECONDS); a part not closed, as
    after a kill, is not readable, so its actions count as not done and run again on
    --resume, as does every batch on a retry: deleting what is gone counts as done."""
    storage = open_storage(settings.spec)
    if settings.dry_run:
        storage = DryRunStorage(storage)
    queued = _queued(queue, sorted({batch.shard for batch in batches}))
    parts: list[str] = []
    audit: TableWriter | None = None
    recorded, opened = 0, 0.0
    try:
        for batch in batches:
            interrupts.check()  # an interrupted run starts no batch (nothing half-done)
            if audit is None:
                audit = TableWriter("actions", Path(settings.audit_dir) / f"{batch.name}.parquet")
                recorded, opened = 0, time.monotonic()
            rows = queued.get(batch.shard, [])[batch.start : batch.start + BATCH_SIZE]
            _Batch(settings, storage, audit).run(rows)
            recorded += len(rows)
            if recorded >= PART_ACTIONS or time.monotonic() - opened >= PART_SECONDS:
                parts.append(str(audit.close()))
                audit = None
        if audit is not None:
            parts.append(str(audit.close()))
    except BaseException:
        if audit is not None:
            audit.abort()
        raise
    return parts


_read_lock = threading.Lock()
_last_read: tuple[tuple[str, int, int], pa.Table] | None = None


def _read_queue(queue: str) -> pa.Table:
    """The whole queue file in batch order, read once per process and phase: the phase's
    tasks run in threads of one process (each would otherwise read and sort it again)."""
    global _last_read
    status = Path(queue).stat()
    key = (queue, status.st_mtime_ns, status.st_size)
    with _read_lock:
        if _last_read is None or _last_read[0] != key:
            _last_read = None  # let the previous phase's queue go before reading this one
            table = pq.read_table(queue, columns=QUEUE_SCHEMA.names).cast(QUEUE_SCHEMA)
            table = table.sort_by([(name, "ascending") for name in QUEUE_ORDER])
            _last_read = (key, table.combine_chunks())
        return _last_read[1]


def _queued(queue: str, shards: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The queued actions of ``shards`` (queue_rows), per shard in the order batches are
    cut."""
    table = _read_queue(queue)
    wanted = pc.indices_nonzero(pc.is_in(table["shard"], pa.array(shards, pa.string())))
    out: dict[str, list[dict[str, Any]]] = {}
    for row in queue_rows(table.take(wanted)):
        out.setdefault(str(row["shard"]), []).append(row)
    return out

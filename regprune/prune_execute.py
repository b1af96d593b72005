"""The hard prune's batch executor: a plan executed batch by batch, safe while the registry
keeps serving (as regprune/images_execute.py is prune-images'). The task that runs a
phase's batches in rounds is ``execute-batches`` (tasks/actions.py).

Each batch expands its actions into the files they remove, re-reads them right before
moving (the modification time of every target file; for a dangling layer link, whether its
blob came back), skips anything touched after the snapshot started, and moves the rest into
the run's quarantine (``Storage.quarantine_many``): the first phase of the two-phase delete
(flows/execute.py re-checks and purges; docs/safety.md). Batches run in rounds of about
``BATCH_SIZE`` actions: a round's intents go into the audit trail (``actions/*.parquet``,
regprune/audit.py) before any of its files moves, its outcomes after, with the files each
action moved. What is already gone is recorded as ``gone``, never counted as removed, and
moving what is gone moves nothing, so a batch can always be run again: that is what
``--resume`` does.

A dry run runs the same batches, re-reads and all, against a storage that only answers what
it would do (regprune/storage/dryrun.py); the outcome is then ``would-quarantine``. The one
place that picks the storage is :func:`run_storage`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from regprune import progress
from regprune.audit import AuditTrail
from regprune.layout import (
    blob_data_path,
    blob_data_paths,
    layer_link_paths,
    manifest_link_paths,
    quarantine_area,
    repository_dir,
    tag_index_link_paths,
    upload_dir,
)
from regprune.storage import DryRunStorage, Storage, StorageObject, StorageSpec, open_storage
from regprune.storage.base import MOVED, WOULD_MOVE, is_error

QUARANTINING, QUARANTINED, WOULD_QUARANTINE = "quarantining", "quarantined", "would-quarantine"
RESTORING, RESTORED, WOULD_RESTORE = "restoring", "restored", "would-restore"
PURGING, PURGED, WOULD_PURGE = "purging", "purged", "would-purge"
GONE, SKIPPED, FAILED = "gone", "skipped", "failed"
INTENTS = (QUARANTINING, RESTORING, PURGING)
"""Written before a change (regprune/audit.py): an action whose latest status is one of
these is not known to be done."""
STATUS_OF_MOVE = {MOVED: QUARANTINED, WOULD_MOVE: WOULD_QUARANTINE}
NOT_MOVED = "not moved: another of its files failed to move"
BATCH_SIZE = 1000
ROUND_ACTIONS = BATCH_SIZE
ROUND_SECONDS = 1.0
"""A round (batches whose intents are written together, then moved) closes at ROUND_ACTIONS
actions or once its first batch was re-read this long ago: a re-read stays close to its
move, and a plan of many small batches (links, per repository) writes a part per round, not
per batch."""
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
        ("blob_removed", pa.bool_()),
        ("skip_reason", pa.string()),
    ]
)
"""The columns of sql/execution/execution_queue.sql that a batch reads."""
AUDIT_FROM_QUEUE = ("phase", "action", "repository", "digest", "upload_id", "size")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
QUEUE_ORDER = ("shard", "action", "repository", "digest", "upload_id")
"""The order batches are cut in (tasks/execution.py build_execution_queue counts on it)."""

Outcome = tuple[dict[str, Any], str, str | None, list[str] | None]
"""An action's row of the queue, its status, the reason, the files it moved."""


@dataclass(frozen=True)
class ExecutionSettings:
    """What every batch of one run shares."""

    spec: StorageSpec
    audit_dir: str
    run_id: str
    touched_after: datetime
    """Anything modified after this (the snapshot's start) was written since: skip it."""
    quarantine_id: str = ""
    """Where this run's removals go (regprune/layout.py quarantine_area)."""
    dry_run: bool = False
    """Change nothing: :func:`run_storage` gives the storage that answers instead."""


def run_storage(settings: ExecutionSettings) -> Storage:
    """The storage a run changes: the real one, or for a dry run the one that answers what
    it would do. The one place the mode decides anything."""
    storage = open_storage(settings.spec)
    return DryRunStorage(storage) if settings.dry_run else storage


def audit_columns(run_id: str, rows: list[Outcome]) -> dict[str, list[Any]]:
    """Outcomes as the audit trail's columns. ``files`` leave out the folders a local walk
    also names (empty ones go with their repository; object stores have none), so the trail
    reads alike on every storage."""
    micros = (datetime.now(UTC) - EPOCH) // timedelta(microseconds=1)
    items = [item for item, *_ in rows]
    return {
        "run_id": [run_id] * len(rows),
        **{name: [item.get(name) for item in items] for name in AUDIT_FROM_QUEUE},
        "status": [status for _, status, _, _ in rows],
        "reason": [reason for _, _, reason, _ in rows],
        "time": [micros] * len(rows),
        "files": [
            None if files is None else [key for key in files if not key.endswith("/")]
            for *_, files in rows
        ],
    }


@dataclass
class Ready:
    """An action that passed its re-read: its files in moving order (the one the plan knows
    it by last) and the empty folders a local walk named in it."""

    item: dict[str, Any]
    files: list[str]
    folders: list[str]


class Batch:
    """One batch: resolve targets, re-read them at once, verify each action
    (:meth:`prepare`); a round of prepared batches then moves together (:func:`move`)."""

    def __init__(self, settings: ExecutionSettings, storage: Storage, audit: AuditTrail):
        self.settings = settings
        self.storage = storage
        self.audit = audit
        self.outcomes: list[Outcome] = []
        self.moved = 0
        """Actions whose files this batch moved for real (a dry run's storage moves none)."""

    def record(
        self,
        item: dict[str, Any],
        status: str,
        reason: str | None = None,
        files: list[str] | None = None,
    ) -> None:
        self.outcomes.append((item, status, reason, files))

    def targets(self, item: dict[str, Any]) -> list[str]:
        """The files this action removes, the one the plan knows it by last: blob and link
        actions come with theirs (``planned_files``, built in bulk); a repository or upload
        is listed now (any file left of those keeps it planned)."""
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
        just now; ``blobs``: the blobs of its layer links). A dangling layer link whose blob
        exists again is kept, unless this run removed that blob itself (``blob_removed``: a
        dry run moved nothing; after a confirmed run's move, the re-check decides)."""
        files = [key for key in targets if not key.endswith("/")]  # folders' times move
        times = [stat.modified for key in files if (stat := stats.get(key)) and stat.modified]
        if times and max(times) > self.settings.touched_after:
            return "modified after the snapshot started"
        if (
            item["action"] == "delete_layer_link"
            and not item.get("blob_removed")
            and blobs.get(blob_data_path(item["digest"]))
        ):
            return "its blob exists (again)"
        return None

    def reread(self, keys: list[str]) -> dict[str, StorageObject | None]:
        """The keys as they are now (on S3 one listing of their common folder when narrow)."""
        return self.storage.stat_many(keys) if keys else {}

    def prepare(self, items: list[dict[str, Any]]) -> list[Ready]:
        """Re-read the whole batch at once and judge each action: skipped (and why), already
        gone (nothing of it left to move), or ready to move. ``items``: rows of the queue as
        :func:`queue_rows` gives them (dicts may leave columns out)."""
        if any("files" not in item for item in items):
            items = queue_rows(_as_queue(items))
        pending: list[tuple[dict[str, Any], list[str]]] = []
        for item in items:
            if item.get("skip_reason"):
                self.record(item, SKIPPED, item["skip_reason"])
            else:
                pending.append((item, self.targets(item)))
        stats = self.reread([key for _, keys in pending for key in keys if not key.endswith("/")])
        linked = [
            item["digest"]
            for item, _ in pending
            if item["action"] == "delete_layer_link" and not item.get("blob_removed")
        ]
        blobs = self.reread([blob_data_path(d) for d in linked])
        ready: list[Ready] = []
        gone: list[tuple[dict[str, Any], list[str]]] = []
        for item, targets in pending:
            reason = self.verify(item, targets, stats, blobs)
            files = [key for key in targets if not key.endswith("/") and stats.get(key)]
            if reason:
                self.record(item, SKIPPED, reason)
            elif not files:
                gone.append((item, [key for key in targets if not key.endswith("/")]))
            else:
                ready.append(Ready(item, files, [key for key in targets if key.endswith("/")]))
        self.record_gone(gone)
        progress.advance("delete", len(items) - len(ready))
        return ready

    def record_gone(self, gone: list[tuple[dict[str, Any], list[str]]]) -> None:
        """Actions with nothing left to move: moved by an earlier attempt of this run that
        was killed before recording it (the run's quarantine holds their files), or gone
        for another reason, which this run does not count as its own."""
        if not gone:
            return
        quarantine = self.storage.area(quarantine_area(self.settings.quarantine_id))
        held = quarantine.stat_many([key for _, keys in gone for key in keys])
        for item, keys in gone:
            mine = [key for key in keys if held.get(key)]
            if mine:
                reason = "moved by an earlier attempt of this run"
                self.record(item, QUARANTINED, reason, mine)
            else:
                self.record(item, GONE, "already gone: nothing left to move")

    def move(self, ready: list[Ready]) -> None:
        """Write the intents of ``ready`` (and the outcomes recorded so far) ahead — no
        record, no move; a failed write raises AuditWriteError before anything moves — then
        move their files into the quarantine: every action's other files first, then the
        files the plan knows them by, so a kill in between strands nothing (the action is
        planned again and finishes). Each outcome is recorded with the files it moved; what
        was gone by then is not counted."""
        outcomes, self.outcomes = self.outcomes, []
        if ready:
            intents: list[Outcome] = [(r.item, QUARANTINING, None, r.files) for r in ready]
            self.audit.ahead(audit_columns(self.settings.run_id, outcomes + intents))
        elif outcomes:
            self.audit.record(audit_columns(self.settings.run_id, outcomes))
        qid = self.settings.quarantine_id
        first = [key for r in ready for key in r.files[:-1]]
        moved = self.storage.quarantine_many(qid, first) if first else {}
        last = [r.files[-1] for r in ready if not any(is_error(moved[k]) for k in r.files[:-1])]
        moved.update(self.storage.quarantine_many(qid, last) if last else {})
        folders = [key for r in ready for key in r.folders]
        if folders:
            self.storage.delete_many(folders)  # empty folders of a repository: nothing to keep
        for r in ready:
            found = {
                key: moved.get(key, "not moved: another of its files failed") for key in r.files
            }
            errors = [f"{key}: {value}" for key, value in found.items() if is_error(value)]
            done = [key for key, value in found.items() if value in STATUS_OF_MOVE]
            if errors:
                self.record(r.item, FAILED, errors[0], done)
            elif not done:
                self.record(r.item, GONE, "already gone when moved", [])
            else:
                status = STATUS_OF_MOVE[found[done[0]]]
                self.moved += status == QUARANTINED
                self.record(r.item, status, None, done)
        progress.advance("delete", len(ready), sum(r.item.get("size") or 0 for r in ready))
        outcomes, self.outcomes = self.outcomes, []
        if outcomes:
            self.audit.record(audit_columns(self.settings.run_id, outcomes))

    def run(self, items: list[dict[str, Any]]) -> None:
        """Prepare and move one batch (a round of one)."""
        self.move(self.prepare(items))


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
                files[rows[parent]].insert(-1, path)  # the revision link stays last
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
class BatchesDone:
    """What one execute-batches run leaves: its audit parts, and how many actions it moved
    for real (the executor reads the links again before the next phase only if any did)."""

    parts: list[str]
    moved: int


@dataclass(frozen=True)
class BatchRef:
    """One batch of a phase's queue: up to ``BATCH_SIZE`` actions of one shard from ``start``
    (one S3 ``DeleteObjects`` request for blobs), with the name of its audit part."""

    shard: str
    start: int
    name: str


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


def queued_actions(queue: str, shards: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The queued actions of ``shards`` (queue_rows), per shard in the order batches are
    cut."""
    table = _read_queue(queue)
    wanted = pc.indices_nonzero(pc.is_in(table["shard"], pa.array(shards, pa.string())))
    out: dict[str, list[dict[str, Any]]] = {}
    for row in queue_rows(table.take(wanted)):
        out.setdefault(str(row["shard"]), []).append(row)
    return out

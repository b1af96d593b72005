"""Executing a hard-prune plan inside the prune flow: ``prune --confirm``, ``--resume``, and
the dry run, which runs every step with a storage that only answers what it would do
(regprune/prune_execute.py ``run_storage``: the one place the mode decides).

The two-phase delete (docs/safety.md). DAG, phase by phase (1: repositories and manifest
links, 2: blobs, 3: dangling layer links and stale uploads)::

    re-read metadata + repositories -> plan again (the plan's own sql/plan/)
    (before phase 1, and before phase 2 once phase 1 moved something: "Reads" below)
        -> queue (sql/execution/execution_queue.sql) -> execute-batches x N (parallel; rounds of at
           most BATCH_SIZE actions, intents written ahead): moved into the quarantine
    -> tell a caching registry (--registry-url) of what moved
    -> settle (--settle, once something moved: pushes in flight write their links)
    -> re-check (flows/quarantine.py): every link and the metadata read again (once
       something moved; else the last read stands), every
       quarantine laid back under them, the plan run again, what gained a reference moved
       back; the quarantines due (--quarantine-retention) purged, the registry told
    ... -> merge audit trail (actions.parquet, quarantine_log.parquet)

Reads. The links and the cluster are read again before phase 1 always (the snapshot is a
past read: ``--snapshot RUN`` may be days old); before phase 2 only if phase 1 moved
something; before the quarantine's re-check only if the run moved anything (then after the
settle time). A read stands until the storage changes under it: a run that moved nothing
(every dry run: its storage answers instead of moving) judges its later phases and the
older quarantines by the read it took first, seconds before. Pushes in the meantime are
what the re-check after a confirmed run's moves is for (docs/safety.md).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect.futures import wait

from regprune import hooks, progress
from regprune.audit import clear_stop
from regprune.flows.quarantine import SecondPhase, recheck_quarantines
from regprune.flows.snapshot import snapshot_storage, submit_metadata_snapshot
from regprune.layout import quarantine_time
from regprune.lock import StorageLock
from regprune.metadata import MetadataSource
from regprune.models import (
    PROJECTED_TABLES,
    PROJECTION_FILE,
    SnapshotDatabase,
    is_projected,
    plan_variables,
)
from regprune.prune_execute import QUARANTINED, BatchRef, ExecutionSettings, run_storage
from regprune.quarantine import QUARANTINE_LOG, own_keys, quarantine_of_run
from regprune.registry import RegistryAPI
from regprune.snapshots import metadata_of_snapshot, read_snapshot_summary
from regprune.storage import StorageSpec
from regprune.storage_walk import default_shard_tasks
from regprune.tables import METADATA_TABLES, SNAPSHOT_TABLES, merge_parts
from regprune.tasks.actions import execute_batches
from regprune.tasks.analysis import IMAGES_PLAN_TABLES, merge_manifest_parts
from regprune.tasks.execution import (
    build_execution_queue,
    overlay,
    readable_parts,
    replan,
    unknown_manifests,
)
from regprune.tasks.manifests import read_manifests_in_batches
from regprune.tasks.quarantine import tell_the_registry
from regprune.tasks.storage_snapshot import merge_snapshot_tables
from regprune.twophase import default_retention, default_settle
from regprune.units import parse_duration

PHASES = (1, 2, 3)
RECHECK_BEFORE = (1, 2)
RECHECKED_STORAGE = ("repositories", "layer_links", "manifest_links")
"""What the walk before moving reads again (no blob walk, no tag or upload file read),
laid over the snapshot's rows (tasks/execution.py overlay)."""
TASKS_PER_PHASE = 32
"""Batches of a phase are shared among at most this many tasks on an object store: enough to
keep the task runner's workers busy (16 threads by default) with requests in flight, few
enough that Prefect's cost per task stays small next to the work (links are sharded per
repository: 10,000 repositories are 10,000 batches). On a folder, as many as the walk uses
(regprune/storage_walk.py default_shard_tasks: system calls on more threads than cores only
contend; 96 task runs were 1.3 s of a 100k dry run's 4 s of batches)."""


def tasks_per_phase(spec: StorageSpec) -> int:
    return TASKS_PER_PHASE if spec.scheme != "file" else default_shard_tasks(spec)


def reread(
    run_dir: str, spec: StorageSpec, metadata: MetadataSource, folder: Path
) -> dict[str, Path]:
    """Re-list the cluster (a dump cannot change: the snapshot's tables stand) and re-walk
    the repositories' links into ``folder``: the tables read now, by name. With a projected
    plan (a nightly GC's dry run) the cluster is laid out as prune-images' plan would leave
    it, as the snapshot's is."""
    parts = folder / "_parts"
    shutil.rmtree(folder, ignore_errors=True)
    parts.mkdir(parents=True)
    listings = submit_metadata_snapshot(metadata, str(parts)) if metadata.is_kube else []
    listed = [listing.result() for listing in listings]
    walked = snapshot_storage(spec, str(parts), None, links_only=True)
    tables = (*(METADATA_TABLES if metadata.is_kube else ()), *RECHECKED_STORAGE)
    merge_snapshot_tables([listing.parts for listing in listed] + walked, str(folder), tables)
    shutil.rmtree(parts, ignore_errors=True)
    read = {table: folder / f"{table}.parquet" for table in tables}
    if metadata.is_kube and is_projected(run_dir):
        read.update(project(run_dir, read, folder))
    return read


def project(run_dir: str, read: dict[str, Path], folder: Path) -> dict[str, Path]:
    """The cluster tables read again, as prune-images' plan (the run's projection) would
    leave them (sql/images/projected_*.sql)."""
    images_run = json.loads((Path(run_dir) / PROJECTION_FILE).read_text())["images_plan"]
    plan = {table: Path(images_run) / f"{table}.parquet" for table in IMAGES_PLAN_TABLES}
    out = {}
    with SnapshotDatabase(run_dir, {}, extra_tables={**read, **plan}, projected=False) as db:
        db.define(*PROJECTED_TABLES.values())
        for table, model in PROJECTED_TABLES.items():
            out[table] = folder / f"{model}.parquet"
            db.write(model, out[table])
    return out


@dataclass(frozen=True)
class Recheck:
    """One read of the cluster and the links (:func:`reread`, storage tables laid over the
    snapshot's) and the plan made again over it."""

    read: dict[str, Path]
    replanned: str
    """The re-plan's plan_actions (tasks/execution.py replan)."""


def recheck(
    run_dir: str, spec: StorageSpec, metadata: MetadataSource, variables: dict, name: str
) -> Recheck:
    """Read the cluster and the links again (:func:`reread`), laid over the snapshot's rows,
    read the manifests linked since that no Image knows, and run the plan's own models over
    that."""
    folder = Path(run_dir) / name
    read = reread(run_dir, spec, metadata, folder)
    for table in RECHECKED_STORAGE:
        overlay(table, read[table], Path(run_dir) / f"{table}.parquet")
    unknown = unknown_manifests(run_dir, read, variables)
    parts = folder / "_manifests"
    parts.mkdir()
    manifests = read_manifests_in_batches(spec, unknown, str(parts))
    young = merge_manifest_parts(manifests, folder, "young")
    shutil.rmtree(parts, ignore_errors=True)
    return Recheck(read, replan(run_dir, {**read, **young}, variables, str(folder)))


def execute_plan(
    run_dir: str,
    spec: StorageSpec,
    keep_younger_than: str,
    upload_max_age: str,
    registry_url: str | None = None,
    registry_token_file: str | None = None,
    force_unlock: bool = False,
    dry_run: bool = False,
    settle: str | None = None,
    retention: str | None = None,
    registry_cluster: MetadataSource | None = None,
) -> dict[str, Any]:
    """Run the plan of ``run_dir`` inside the prune flow (not a subflow: flow parameters are
    stored, and the storage spec may carry credentials); what an earlier attempt did (its
    audit trail) is skipped. The storage's lock (regprune/lock.py) is held throughout a
    confirmed run.

    ``settle``, ``retention``: None takes regprune/twophase.py's defaults.

    ``dry_run``: the same phases, re-reads, queues, batches, re-check and purge, against a
    storage that changes nothing (outcomes ``would-quarantine``, ``would-restore``,
    ``would-purge``): its lock is held in memory (it writes nothing, needs no write access),
    and as nothing moves, no registry is called and no settle time waited.

    ``registry_cluster``: whose credentials' token the registry gets when there is no
    ``registry_token_file`` (regprune/registry.py)."""
    summary = read_snapshot_summary(run_dir)
    started = datetime.fromisoformat(summary["metadata_started_at"])
    variables = plan_variables(
        started, parse_duration(keep_younger_than), parse_duration(upload_max_age)
    )
    audit_dir = Path(run_dir) / "actions"
    audit_dir.mkdir(exist_ok=True)
    clear_stop(audit_dir)
    attempt = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    quarantine = quarantine_of_run(run_dir, spec, dry_run)
    settings = ExecutionSettings(
        spec=spec,
        audit_dir=str(audit_dir),
        run_id=attempt,
        touched_after=started,
        quarantine_id=quarantine.id,
        dry_run=dry_run,
    )
    registry = (
        RegistryAPI(registry_url, registry_token_file, registry_cluster) if registry_url else None
    )
    metadata = metadata_of_snapshot(run_dir)
    last: Recheck | None = None
    moved_since_read = False
    tasks = tasks_per_phase(spec)
    lock = StorageLock(spec, attempt, run_dir, force_unlock, run_storage(settings))
    lock.acquire()
    try:
        for phase in PHASES:
            if phase in RECHECK_BEFORE and (last is None or moved_since_read):  # Reads
                last = recheck(run_dir, spec, metadata, variables, f"recheck-phase{phase}")
                moved_since_read = False
                hooks.reached(hooks.RECHECKED, phase=phase, run_dir=run_dir)
            batches = [
                BatchRef(shard, start, f"{attempt}-p{phase}-{n:05d}")
                for n, (shard, start) in enumerate(
                    build_execution_queue(
                        run_dir, last.replanned if last else None, variables, phase, str(audit_dir)
                    )
                )
            ]
            queue = str(Path(run_dir) / f"queue-phase{phase}.parquet")
            futures = [
                execute_batches.submit(settings, queue, batches[n::tasks])
                for n in range(min(tasks, len(batches)))
            ]
            wait(futures)
            moved_since_read |= any(future.result().moved for future in futures)
        moved = moved_by(settings)
        registry_errors = tell_the_registry(settings, registry, moved) if registry and moved else []
        hooks.reached(hooks.QUARANTINED, run_dir=run_dir)
        if moved:
            settle_for(parse_duration(settle or default_settle()).total_seconds())
        keep = parse_duration(retention or default_retention())
        standing = last.read if last and not moved else None  # Reads: settled, read again
        second = second_phase(run_dir, settings, metadata, variables, keep, standing)
    finally:
        lock.release()
    merge_parts("actions", readable_parts(str(audit_dir)), Path(run_dir) / "actions.parquet")
    log = Path(run_dir) / QUARANTINE_LOG
    merge_parts(
        QUARANTINE_LOG, readable_parts(str(log)), Path(run_dir) / f"{QUARANTINE_LOG}.parquet"
    )
    return {
        "run_id": attempt,
        "quarantine": quarantine.id,
        "moved": len(moved),
        "registry_errors": registry_errors,
        **second.summary(),
    }


def moved_by(settings: ExecutionSettings) -> list[dict[str, Any]]:
    """The keys this attempt moved for real (a dry run moves nothing: no registry call, no
    wait), as rows of ``quarantined_keys``."""
    folder = Path(settings.audit_dir).parent / "recheck-quarantine"
    folder.mkdir(exist_ok=True)
    parts = [
        p for p in readable_parts(settings.audit_dir) if Path(p).name.startswith(settings.run_id)
    ]
    if not parts:
        return []
    merged = folder / "moved-actions.parquet"
    merge_parts("actions", parts, merged)
    own_keys(merged, settings.quarantine_id, (QUARANTINED,), folder / "moved.parquet")
    return pq.read_table(folder / "moved.parquet").to_pylist()


def settle_for(seconds: float) -> None:
    """Wait so that a push in flight when its blob moved has written its links before the
    re-check reads them."""
    if seconds <= 0:
        return
    progress.phase(f"Waiting {seconds:g} s before the re-check (--settle): pushes in flight finish")
    time.sleep(seconds)


def second_phase(
    run_dir: str,
    settings: ExecutionSettings,
    metadata: MetadataSource,
    variables: dict[str, Any],
    retention: Any,
    standing: dict[str, Path] | None = None,
) -> SecondPhase:
    """The re-check of this run's quarantine and of every older one the storage holds (what
    gained a reference moves back), then the purge of what is due: this run's when the
    retention is 0, older ones once the retention has passed since they moved.
    ``standing``: the last read, when the run moved nothing (Reads); else read again."""
    storage = run_storage(settings)
    now = datetime.now(UTC)
    older = [q for q in storage.quarantine_ids() if q != settings.quarantine_id]
    due = {q for q in older if quarantine_time(q) <= now - retention}
    if not retention:
        due.add(settings.quarantine_id)
    folder = Path(run_dir) / "recheck-quarantine"
    read = standing or reread(run_dir, settings.spec, metadata, folder / "read")
    tables = {t: read.get(t, Path(run_dir) / f"{t}.parquet") for t in SNAPSHOT_TABLES}
    return recheck_quarantines(
        run_dir,
        settings,
        tables,
        variables,
        [settings.quarantine_id, *older],
        due,
        folder,
        stale=frozenset(SNAPSHOT_TABLES) - set(read),
    )

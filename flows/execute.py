"""Executing a hard-prune plan inside the prune flow: ``prune --confirm``, ``--resume``, and
the dry run, which runs every step but the last call (its storage only records what would go).

DAG, phase by phase (1: repositories and manifest links, 2: blobs, 3: dangling layer links
and stale uploads)::

    re-read metadata + repositories -> plan again (the plan's own sql/plan_*.sql)
    (before phases 1 and 2; --confirm only)
        -> queue (sql/execution_queue.sql) -> execute-batches x N (parallel; batches of at
           most BATCH_SIZE actions of one shard each)
    ... -> merge audit trail (actions.parquet)
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.futures import wait

from regprune.flows.snapshot import snapshot_storage, submit_metadata_snapshot
from regprune.lock import StorageLock
from regprune.metadata import MetadataSource
from regprune.models import plan_variables
from regprune.registry import RegistryAPI
from regprune.snapshots import metadata_of_snapshot, read_snapshot_summary
from regprune.storage import StorageSpec
from regprune.tables import METADATA_TABLES, merge_parts
from regprune.tasks.actions import BatchRef, ExecutionSettings, execute_batches
from regprune.tasks.analysis import merge_manifest_parts
from regprune.tasks.execution import (
    build_execution_queue,
    overlay,
    readable_parts,
    replan,
    unknown_manifests,
)
from regprune.tasks.manifests import read_manifests_in_batches
from regprune.tasks.storage_snapshot import merge_snapshot_tables
from regprune.units import parse_duration

PHASES = (1, 2, 3)
RECHECK_BEFORE = (1, 2)
RECHECKED_STORAGE = ("repositories", "layer_links", "manifest_links")
"""What the walk before deleting reads again (no blob walk, no tag or upload file read),
laid over the snapshot's rows (tasks/execution.py overlay)."""
TASKS_PER_PHASE = 32
"""Batches of a phase are shared among at most this many tasks: enough to keep the task
runner's workers busy (16 threads by default), few enough that Prefect's cost per task stays
small next to the work (links are sharded per repository: 10,000 repositories are 10,000
batches)."""


def recheck(
    run_dir: str, spec: StorageSpec, metadata: MetadataSource, variables: dict, name: str
) -> str:
    """Re-list the cluster (a dump cannot change: the snapshot's tables stand), re-walk the
    repositories, read the manifests linked since that no Image knows, and run the plan's
    own models over that. Returns the re-plan's plan_actions (tasks/execution.py replan)."""
    folder = Path(run_dir) / name
    parts = folder / "_parts"
    shutil.rmtree(folder, ignore_errors=True)
    parts.mkdir(parents=True)
    listings = submit_metadata_snapshot(metadata, str(parts)) if metadata.is_kube else []
    listed = [listing.result() for listing in listings]
    walked = snapshot_storage(spec, str(parts), None, links_only=True)
    tables = (*(METADATA_TABLES if metadata.is_kube else ()), *RECHECKED_STORAGE)
    merge_snapshot_tables([listing.parts for listing in listed] + walked, str(folder), tables)
    reread = {table: folder / f"{table}.parquet" for table in tables}
    for table in RECHECKED_STORAGE:
        overlay(table, reread[table], Path(run_dir) / f"{table}.parquet")
    unknown = unknown_manifests(run_dir, reread, variables)
    manifests = read_manifests_in_batches(spec, unknown, str(parts))
    reread.update(merge_manifest_parts(manifests, folder, "young"))
    shutil.rmtree(parts, ignore_errors=True)
    return replan(run_dir, reread, variables, str(folder))


def execute_plan(
    run_dir: str,
    spec: StorageSpec,
    keep_younger_than: str,
    upload_max_age: str,
    registry_url: str | None = None,
    registry_token_file: str | None = None,
    force_unlock: bool = False,
    dry_run: bool = False,
    registry_cluster: MetadataSource | None = None,
) -> dict[str, Any]:
    """Run the plan of ``run_dir`` inside the prune flow (not a subflow: flow parameters are
    stored, and the storage spec may carry credentials); what an earlier attempt did (its
    audit trail) is skipped. The storage's lock (regprune/lock.py) is held throughout.

    ``dry_run``: the same phases, queues and batches, against a storage that deletes nothing
    (audit status ``would-delete``); no lock (it writes nothing, and needs no write access),
    no re-read of metadata or storage and no registry call: it takes the snapshot as current,
    so it costs no storage request beyond listing the repositories and uploads it would
    remove. ``registry_cluster``: whose credentials' token the registry gets when there is
    no ``registry_token_file`` (regprune/registry.py)."""
    summary = read_snapshot_summary(run_dir)
    started = datetime.fromisoformat(summary["metadata_started_at"])
    variables = plan_variables(
        started, parse_duration(keep_younger_than), parse_duration(upload_max_age)
    )
    audit_dir = Path(run_dir) / "actions"
    audit_dir.mkdir(exist_ok=True)
    attempt = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    deleting = not dry_run
    settings = ExecutionSettings(
        spec=spec,
        audit_dir=str(audit_dir),
        run_id=attempt,
        touched_after=started,
        registry=RegistryAPI(registry_url, registry_token_file, registry_cluster)
        if registry_url and deleting
        else None,
        dry_run=dry_run,
    )
    metadata = metadata_of_snapshot(run_dir)
    replanned: str | None = None
    lock = StorageLock(spec, attempt, run_dir, force_unlock) if deleting else None
    if lock:
        lock.acquire()
    try:
        for phase in PHASES:
            if phase in RECHECK_BEFORE and deleting:
                replanned = recheck(run_dir, spec, metadata, variables, f"recheck-phase{phase}")
            batches = [
                BatchRef(shard, start, f"{attempt}-p{phase}-{n:05d}")
                for n, (shard, start) in enumerate(
                    build_execution_queue(run_dir, replanned, variables, phase, str(audit_dir))
                )
            ]
            queue = str(Path(run_dir) / f"queue-phase{phase}.parquet")
            futures = [
                execute_batches.submit(settings, queue, batches[n::TASKS_PER_PHASE])
                for n in range(min(TASKS_PER_PHASE, len(batches)))
            ]
            wait(futures)
            for future in futures:
                future.result()
    finally:
        if lock:
            lock.release()
    merge_parts("actions", readable_parts(str(audit_dir)), Path(run_dir) / "actions.parquet")
    return {"run_id": attempt, "cache": "registry API" if settings.registry else None}

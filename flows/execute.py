"""Executing a hard-prune plan (``prune --confirm``, ``--resume``), inside the prune flow.

DAG, phase by phase (1: repositories and manifest links, 2: blobs, 3: dangling layer links
and stale uploads)::

    re-read metadata + repositories -> queue (sql/execution_queue.sql) -> execute-batch x N
    (before phases 1 and 2)                                                (per shard, parallel)
    ... -> merge audit trail (actions.parquet)
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.futures import wait

from regprune.flows.snapshot import (
    merge_snapshot_tables,
    snapshot_storage,
    submit_metadata_snapshot,
)
from regprune.tasks.actions import ExecutionSettings, RegistryAPI, execute_batch
from regprune.tasks.analysis import merge_manifest_parts, read_snapshot_summary
from regprune.tasks.lock import StorageLock
from regprune.tasks.manifests import read_manifests_in_batches
from regprune.tasks.metadata import MetadataSource
from regprune.tasks.queries import (
    EXECUTION_MODELS,
    PLAN_OUTPUTS,
    UNKNOWN_MANIFEST_MODELS,
    SnapshotDatabase,
    plan_variables,
)
from regprune.tasks.storage import StorageSpec
from regprune.tasks.tables import METADATA_TABLES, merge_parts, sql_literal
from regprune.tasks.units import parse_duration

PHASES = (1, 2, 3)
RECHECK_BEFORE = (1, 2)
RECHECKED_STORAGE = ("layer_links", "manifest_links")


def metadata_of_snapshot(run_dir: str) -> MetadataSource:
    """Re-read the metadata the way the snapshot read it (snapshot.json keeps how)."""
    recorded = read_snapshot_summary(run_dir).get("metadata_source") or {}
    return MetadataSource(
        recorded.get("source", "kube"),
        kubeconfig=recorded.get("kubeconfig"),
        context=recorded.get("context"),
        page_size=recorded.get("page_size", 500),
    )


def recheck(
    run_dir: str, spec: StorageSpec, metadata: MetadataSource, variables: dict, name: str
) -> dict[str, Path]:
    """Re-list the cluster (a dump cannot change: the snapshot's tables stand) and re-walk the
    repositories; read the manifests linked since that no Image knows. Returns the
    ``recheck_*`` views for sql/recheck_protected.sql."""
    folder = Path(run_dir) / name
    parts = folder / "_parts"
    shutil.rmtree(folder, ignore_errors=True)
    parts.mkdir(parents=True)
    listings = submit_metadata_snapshot(metadata, str(parts)) if metadata.is_kube else []
    listed = [listing.result() for listing in listings]
    walked = snapshot_storage(spec, str(parts), None, links_only=True)
    tables = (*(METADATA_TABLES if metadata.is_kube else ()), *RECHECKED_STORAGE)
    merge_snapshot_tables([lst["parts"] for lst in listed] + walked, str(folder), tables)
    views = {f"recheck_{t}": folder / f"{t}.parquet" for t in tables}
    for table in METADATA_TABLES:
        views.setdefault(f"recheck_{table}", Path(run_dir) / f"{table}.parquet")
    unknown = unknown_manifests(run_dir, views, variables)
    manifests = read_manifests_in_batches(spec, unknown, str(parts))
    views.update(
        {
            f"recheck_{k.removeprefix('recheck_')}": v
            for k, v in merge_manifest_parts(manifests, folder, "recheck").items()
        }
    )
    shutil.rmtree(parts, ignore_errors=True)
    return views


@task(name="find-manifests-pushed-since")
def unknown_manifests(run_dir: str, views: dict[str, Path], variables: dict) -> list[str]:
    """sql/plan_unknown_manifests.sql over the re-read tables."""
    fresh = {
        "manifest_links": views["recheck_manifest_links"],
        "image_blobs": views["recheck_image_blobs"],
    }
    with SnapshotDatabase(run_dir, variables, extra_tables=fresh) as db:
        db.define(*UNKNOWN_MANIFEST_MODELS)
        return [row["digest"] for row in db.records("SELECT digest FROM plan_unknown_manifests")]


@task(name="build-execution-queue")
def build_execution_queue(
    run_dir: str, views: dict[str, Path], variables: dict, phase: int, audit_dir: str
) -> list[tuple[str, int]]:
    """Write the queue of one phase (what is left of the plan, with protections) and return
    its batches as (shard, offset) pairs."""
    done = Path(run_dir) / "completed_actions.parquet"
    merge_parts("actions", readable_parts(audit_dir), done)
    plan = {model: Path(run_dir) / f"{model}.parquet" for model in PLAN_OUTPUTS}
    extra = {**plan, **views, "completed_actions": done}
    queue = Path(run_dir) / f"queue-phase{phase}.parquet"
    with SnapshotDatabase(run_dir, variables, extra_tables=extra) as db:
        db.define(*EXECUTION_MODELS)
        db.con.execute(
            f"COPY (SELECT * FROM execution_queue WHERE phase = {int(phase)}) "
            f"TO {sql_literal(queue)} (FORMAT parquet)"
        )
        shards = db.records(
            f"SELECT shard, count(*) AS n FROM read_parquet({sql_literal(queue)}) GROUP BY shard"
        )
    return [(str(row["shard"]), start) for row in shards for start in range(0, row["n"], 1000)]


def readable_parts(audit_dir: str) -> list[str]:
    """Audit parts that were closed: a batch killed mid-way left no readable part, so its
    actions count as not done (and deleting what is already gone counts as done)."""
    import pyarrow.parquet as pq

    out = []
    for path in sorted(Path(audit_dir).glob("*.parquet")):
        try:
            pq.read_metadata(path)
        except (OSError, ValueError):
            continue
        out.append(str(path))
    return out


def execute_plan(
    run_dir: str,
    spec: StorageSpec,
    keep_younger_than: str,
    upload_max_age: str,
    registry_url: str | None = None,
    registry_token_file: str | None = None,
    force_unlock: bool = False,
) -> dict[str, Any]:
    """Run the plan of ``run_dir`` inside the prune flow (not a subflow: flow parameters are
    stored, and the storage spec may carry credentials); what an earlier attempt did (its
    audit trail) is skipped. The storage's lock (tasks/lock.py) is held throughout."""
    summary = read_snapshot_summary(run_dir)
    started = datetime.fromisoformat(summary["metadata_started_at"])
    variables = plan_variables(
        started, parse_duration(keep_younger_than), parse_duration(upload_max_age)
    )
    audit_dir = Path(run_dir) / "actions"
    audit_dir.mkdir(exist_ok=True)
    attempt = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    settings = ExecutionSettings(
        spec=spec,
        audit_dir=str(audit_dir),
        run_id=attempt,
        touched_after=started,
        registry=RegistryAPI(registry_url, registry_token_file) if registry_url else None,
    )
    metadata = metadata_of_snapshot(run_dir)
    views: dict[str, Path] = {}
    lock = StorageLock(spec, attempt, run_dir, force_unlock)
    lock.acquire()
    try:
        for phase in PHASES:
            if phase in RECHECK_BEFORE:
                views = recheck(run_dir, spec, metadata, variables, f"recheck-phase{phase}")
            batches = build_execution_queue(run_dir, views, variables, phase, str(audit_dir))
            queue = str(Path(run_dir) / f"queue-phase{phase}.parquet")
            futures = [
                execute_batch.submit(settings, queue, shard, start, f"{attempt}-p{phase}-{n:05d}")
                for n, (shard, start) in enumerate(batches)
            ]
            wait(futures)
            for future in futures:
                future.result()
    finally:
        lock.release()
    merge_parts("actions", readable_parts(str(audit_dir)), Path(run_dir) / "actions.parquet")
    return {"run_id": attempt, "cache": "registry API" if registry_url else None}

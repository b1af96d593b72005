"""Tasks of executing a plan: what was pushed since the plan, and the queue of each phase."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from regprune.models import (
    EXECUTION_MODELS,
    PLAN_OUTPUTS,
    UNKNOWN_MANIFEST_MODELS,
    SnapshotDatabase,
)
from regprune.tables import merge_parts, sql_literal


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

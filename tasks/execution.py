"""Tasks of executing a plan: what was pushed since the plan, the plan again over the tables
re-read before deleting, and the queue of each phase."""

from __future__ import annotations

from pathlib import Path

import duckdb
from prefect import task

from regprune.models import (
    EXECUTION_MODELS,
    PLAN_OUTPUTS,
    UNKNOWN_MANIFEST_MODELS,
    SnapshotDatabase,
)
from regprune.prune_execute import BATCH_SIZE
from regprune.tables import SORT_KEYS, merge_parts, sql_literal
from regprune.tasks.analysis import write_plan

REPLANNED = "plan_actions.parquet"
"""What the re-plan leaves in its folder for sql/execution/execution_queue.sql
(recheck_plan_actions)."""


@task(name="find-manifests-pushed-since")
def unknown_manifests(run_dir: str, tables: dict[str, Path], variables: dict) -> list[str]:
    """sql/plan/plan_unknown_manifests.sql over the re-read tables (the snapshot's where a table
    was not read again)."""
    with SnapshotDatabase(run_dir, variables, extra_tables=tables) as db:
        db.define(*UNKNOWN_MANIFEST_MODELS)
        return [row["digest"] for row in db.records("SELECT digest FROM plan_unknown_manifests")]


def overlay(table: str, reread: Path, snapshot: Path) -> None:
    """Lay the re-read rows of a storage table over the snapshot's, in place of ``reread``:
    a row read again replaces the snapshot's (same key: a link rewritten since is young
    now), a row not read again stays. Storage re-read can then only add or refresh what the
    plan judges, never drop it, so what went since the snapshot (deleted by an attempt that
    was killed before recording it, or by someone else) is still planned and its rest goes
    (a repository's other files, a manifest link's tag index entries): deleting what is
    gone counts as done."""
    keys = " AND ".join(f'old."{key}" = new."{key}"' for key in SORT_KEYS[table])
    merged = reread.with_suffix(".overlay.parquet")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(
            f"COPY (SELECT * FROM read_parquet({sql_literal(reread)}) UNION ALL "
            f"SELECT * FROM read_parquet({sql_literal(snapshot)}) AS old "
            f"ANTI JOIN read_parquet({sql_literal(reread)}) AS new ON {keys}) "
            f"TO {sql_literal(merged)} (FORMAT parquet)"
        )
    merged.replace(reread)


@task(name="plan-again")
def replan(run_dir: str, tables: dict[str, Path], variables: dict, out: str) -> str:
    """The plan's own models (tasks/analysis.py write_plan) over the re-read tables: what is
    planned now, as ``out/plan_actions.parquet`` (``out/plan_*.parquet`` beside it)."""
    folder = Path(out)
    with SnapshotDatabase(run_dir, variables, extra_tables=tables) as db:
        write_plan(db, folder)
        db.define("plan_actions")
        db.write("plan_actions", folder / REPLANNED)
    return str(folder / REPLANNED)


@task(name="build-execution-queue")
def build_execution_queue(
    run_dir: str, replanned: str | None, variables: dict, phase: int, audit_dir: str
) -> list[tuple[str, int]]:
    """Write the queue of one phase (what is left of the plan, with protections) and return
    its batches as (shard, offset) pairs. ``replanned``: plan_actions of the re-plan; None in
    a dry run, which takes the snapshot as the re-read (the re-plan would equal the plan)."""
    done = Path(run_dir) / "completed_actions.parquet"
    merge_parts("actions", readable_parts(audit_dir), done)
    plan = {model: Path(run_dir) / f"{model}.parquet" for model in PLAN_OUTPUTS}
    extra = {**plan, "completed_actions": done}
    if replanned is not None:
        extra["recheck_plan_actions"] = Path(replanned)
    queue = Path(run_dir) / f"queue-phase{phase}.parquet"
    with SnapshotDatabase(run_dir, variables, extra_tables=extra) as db:
        plan_actions, *queue_models = EXECUTION_MODELS
        db.define(plan_actions)
        if replanned is None:
            db.con.execute(f"CREATE TEMP VIEW recheck_plan_actions AS FROM {plan_actions}")
        db.define(*queue_models)
        db.con.execute(
            f"COPY (SELECT * FROM execution_queue WHERE phase = {int(phase)}) "
            f"TO {sql_literal(queue)} (FORMAT parquet)"
        )
        shards = db.records(
            f"SELECT shard, count(*) AS n FROM read_parquet({sql_literal(queue)}) GROUP BY shard"
        )
    return [
        (str(row["shard"]), start) for row in shards for start in range(0, row["n"], BATCH_SIZE)
    ]


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

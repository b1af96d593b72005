#!/usr/bin/env python3
"""Time the dry run's executor alone, in this process, without Prefect (its tasks' ``.fn``).

Why: the executor's cost per action is Python; a whole ``prune`` run mixes it with the plan,
Prefect's start-up and the task runner's threads. On a run folder that a dry ``prune
--snapshot`` already planned (``plan_*.parquet``), this builds the queue of each phase and
runs every batch of it one after the other, as ``flows/execute.py`` does, and prints wall and
CPU seconds (user+sys of this process) per step. Each run writes a fresh audit folder.

    python bench/dryrun_executor.py RUN_DIR [--repeat 3] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import shutil
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from regprune.layout import new_quarantine_id
from regprune.models import plan_variables
from regprune.prune_execute import BatchRef, ExecutionSettings
from regprune.snapshots import read_snapshot_summary
from regprune.storage import StorageSpec
from regprune.tasks.actions import execute_batches
from regprune.tasks.execution import build_execution_queue
from regprune.units import parse_duration


def run_once(run_dir: Path, audit: Path) -> dict[str, float]:
    """One dry run of every phase; seconds per step."""
    summary = read_snapshot_summary(str(run_dir))
    started = datetime.fromisoformat(summary["metadata_started_at"])
    variables = plan_variables(started, parse_duration("0s"), parse_duration("7d"))
    shutil.rmtree(audit, ignore_errors=True)
    audit.mkdir(parents=True)
    spec = StorageSpec(summary["storage"])
    settings = ExecutionSettings(
        spec, str(audit), "bench", started, new_quarantine_id(datetime.now(UTC)), dry_run=True
    )
    out: dict[str, float] = {}
    for phase in (1, 2, 3):
        w, c = time.perf_counter(), time.process_time()
        pairs = build_execution_queue.fn(str(run_dir), None, variables, phase, str(audit))
        out[f"queue{phase}"] = time.perf_counter() - w
        out[f"queue{phase}_cpu"] = time.process_time() - c
        batches = [BatchRef(s, n, f"bench-p{phase}-{i:05d}") for i, (s, n) in enumerate(pairs)]
        queue = str(run_dir / f"queue-phase{phase}.parquet")
        w, c = time.perf_counter(), time.process_time()
        for k in range(32):  # as flows/execute.py TASKS_PER_PHASE shares them
            if batches[k::32]:
                execute_batches.fn(settings, queue, batches[k::32])
        out[f"batches{phase}"] = time.perf_counter() - w
        out[f"batches{phase}_cpu"] = time.process_time() - c
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    audit = args.run_dir / "bench-actions"
    if args.profile:
        cProfile.runctx("run_once(args.run_dir, audit)", globals(), locals(), str(args.profile))
        return
    runs = [run_once(args.run_dir, audit) for _ in range(args.repeat)]
    with duckdb.connect() as con:
        n, files = con.execute(
            f"SELECT count(*), sum(len(files)) FROM read_parquet('{audit}/*.parquet')"
        ).fetchone()
    print(f"{n} actions, {files} files; medians of {len(runs)} ({datetime.now(UTC):%H:%M} UTC)")
    for key in runs[0]:
        print(f"  {key:14s} {statistics.median(r[key] for r in runs):8.2f} s")
    for kind in ("", "_cpu"):
        total = [sum(v for k, v in r.items() if k.endswith(kind) == bool(kind)) for r in runs]
        if kind == "":
            total = [sum(v for k, v in r.items() if not k.endswith("_cpu")) for r in runs]
        print(f"  total{kind or ' wall':9s} {statistics.median(total):8.2f} s")


if __name__ == "__main__":
    main()

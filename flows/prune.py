"""The hard-prune flow: snapshot (or reuse one), plan in SQL, report.

DAG::

    snapshot (subflow) -> find-unknown-manifests -> read-manifests x N
        -> plan-hard-prune (sql/plan_*.sql) -> publish-prune-report

Dry-run is the default; executing the plan is the actions issue's work and refused here.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefect import flow

from regprune.flows.run_folder import run_storage, snapshot_for_run
from regprune.flows.snapshot import SnapshotSource
from regprune.tasks.analysis import find_unknown_manifests, plan_hard_prune
from regprune.tasks.manifests import read_manifests_in_batches
from regprune.tasks.queries import DuckDBSettings
from regprune.tasks.reports import publish_prune_report
from regprune.tasks.units import parse_duration


class ConfirmNotAvailable(RuntimeError):
    """Deleting is not implemented yet: a plan is all this version makes."""


@flow(name="regprune-prune", log_prints=True)
def prune_flow(
    source: SnapshotSource | None = None,
    snapshot: str | None = None,
    out: str | None = None,
    keep_younger_than: str = "24h",
    upload_max_age: str = "7d",
    report: str | None = None,
    confirm: bool = False,
    duckdb: DuckDBSettings | None = None,
) -> dict[str, Any]:
    """Plan a hard prune: what no Image or ImageStream keeps, older than the grace period.

    Args:
        source: storage and metadata to snapshot (ignored when `snapshot` is given).
        snapshot: an existing snapshot folder to analyse instead of listing again.
        out: folder for the snapshot and results (default: regprune-runs/prune-<time>).
        keep_younger_than: grace period; nothing modified less than this before the snapshot
            started is planned for deletion (e.g. 24h, 0s).
        upload_max_age: unfinished uploads older than this are stale (e.g. 7d).
        report: also write the report JSON to this path.
        confirm: delete for real (not available in this version).
        duckdb: memory limit, spill directory and threads for the analysis.
    """
    parse_duration(keep_younger_than)
    parse_duration(upload_max_age)
    if confirm:
        raise ConfirmNotAvailable(
            "--confirm is not available yet: this version plans a hard prune (dry-run) but "
            "does not delete; run without --confirm to see the plan"
        )
    run_dir = snapshot_for_run("prune", snapshot, source, out)
    unknown = find_unknown_manifests(run_dir, keep_younger_than, duckdb)
    parts_dir = str(Path(run_dir) / "_parts")
    manifests = read_manifests_in_batches(run_storage(run_dir, source), unknown, parts_dir)
    plan_hard_prune(run_dir, manifests, keep_younger_than, upload_max_age, duckdb)
    shutil.rmtree(parts_dir, ignore_errors=True)
    settings = {"keep_younger_than": keep_younger_than, "upload_max_age": upload_max_age}
    published = publish_prune_report(run_dir, "dry-run", settings, report)
    return {"run_dir": run_dir, **published}

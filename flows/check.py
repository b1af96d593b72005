"""The consistency-check flow (fsck): broken tags, broken images, lost-found candidates, and
with ``recover`` their restoration as ``lost-found-<hex>`` tags.

DAG::

    snapshot (subflow) -> find-inconsistencies (sql/check/)
        -> read-manifests x N (parallel batches, storage reads)
        -> verify-lost-manifests (sql/check/check_lost_found.sql)
        [-> plan-recovery (sql/check/recover_images.sql)
            [-> recover-lost-found-batch x M (one after another, threads inside)
                -> write-recover-results]]
        -> publish-check-report
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefect import flow

from regprune import progress
from regprune.flows.snapshot import run_storage, snapshot_for_run
from regprune.metadata import MetadataSource
from regprune.models import DuckDBSettings
from regprune.recovery import (
    DEFAULT_RECOVER_RATE,
    RECOVER_BATCH,
    RESULTS_FILE,
    RecoveryError,
    check_recovery_target,
)
from regprune.results import CheckResult
from regprune.runners import ChosenTaskRunner
from regprune.snapshots import SnapshotSource
from regprune.storage import StorageSpec
from regprune.tasks.analysis import find_inconsistencies, verify_lost_manifests
from regprune.tasks.html_report import write_html_report
from regprune.tasks.manifests import read_manifests_in_batches
from regprune.tasks.recovery import merge_results, plan_recovery, recover_batch
from regprune.tasks.reports import publish_check_report
from regprune.tasks.warehouse import publish_to_warehouse


def recover_lost_found(
    run_dir: str,
    plan: dict[str, Any],
    cluster: MetadataSource,
    rate: float,
    storage: StorageSpec | None = None,
) -> str:
    """Create the mappings batch after batch; after a 401/403 the rest is recorded as skipped
    and the recovery fails with the API's message (which names the missing permission)."""
    parts_dir = Path(run_dir) / "_recover"
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts: list[str] = []
    not_restored: list[str] = []
    stopped: str | None = None
    added = 0
    for offset in range(0, plan["count"], RECOVER_BATCH):
        batch = recover_batch(
            cluster, plan["path"], offset, rate, not_restored, stopped, str(parts_dir), storage
        )
        parts.append(batch["results"])
        not_restored += batch["not_restored"]
        stopped = batch["stopped"]
        added += batch["added"]
    results = merge_results(parts, run_dir)
    shutil.rmtree(parts_dir, ignore_errors=True)
    if stopped:
        raise RecoveryError(
            f"recovery stopped: {stopped}; {added} of {plan['count']} lost-found tags were "
            f"added before (results in {results})"
        )
    return results


@flow(name="regprune-check", log_prints=True, task_runner=ChosenTaskRunner())
def check_flow(
    source: SnapshotSource | None = None,
    snapshot: str | None = None,
    out: str | None = None,
    namespace: str | None = None,
    report: str | None = None,
    duckdb: DuckDBSettings | None = None,
    recover: bool = False,
    confirm: bool = False,
    registry_host: str | None = None,
    recover_rate: float = DEFAULT_RECOVER_RATE,
    warehouse: str | None = None,
) -> CheckResult:
    """Check that metadata and storage agree; find manifests that can be recovered and, with
    `recover` and `confirm`, restore them.

    Args:
        source: storage and metadata to snapshot (ignored when `snapshot` is given); with
            `recover`, its metadata part is the cluster to recover into.
        snapshot: an existing snapshot folder to analyse instead of listing again.
        out: folder for the snapshot and results (default: regprune-runs/check-<time>).
        namespace: limit the check (and the recovery) to one namespace.
        report: also write the report JSON to this path.
        duckdb: memory limit, spill directory and threads for the analysis.
        recover: build the Image of every lost-found candidate (dry-run unless `confirm`).
        confirm: with `recover`, create the ImageStreamMappings in the cluster.
        registry_host: host of the restored Images' dockerImageReference (default: the host
            most managed Images in the snapshot name).
        recover_rate: API requests per second while recovering.
        warehouse: also keep the snapshot and findings as a new run in this warehouse (a
            folder or s3://BUCKET/PREFIX); the run's report.html then shows the trend.
    """
    if confirm and not recover:
        raise ValueError("confirm goes with recover: it creates the lost-found tags")
    if recover_rate <= 0:
        raise ValueError(f"recover_rate must be positive, not {recover_rate}")
    run_dir = snapshot_for_run("check", snapshot, source, out)
    cluster = (source or SnapshotSource()).metadata_source()
    if confirm:
        check_recovery_target(run_dir, cluster)
    (Path(run_dir) / RESULTS_FILE).unlink(missing_ok=True)  # a report shows this run's only
    progress.phase("Checking tags, images and stored manifests")
    digests = find_inconsistencies(run_dir, namespace, duckdb)
    parts_dir = str(Path(run_dir) / "_parts")
    parts = read_manifests_in_batches(run_storage(run_dir, source), digests, parts_dir)
    verify_lost_manifests(run_dir, parts, namespace, duckdb)
    shutil.rmtree(parts_dir, ignore_errors=True)
    if recover:
        plan = plan_recovery(run_dir, registry_host, duckdb)
        if confirm:
            with progress.activity(
                "restore",
                f"Restoring {plan['count']:,} lost-found tags",
                expected=plan["count"],
                unit="tags",
            ):
                recover_lost_found(
                    run_dir, plan, cluster, recover_rate, run_storage(run_dir, source)
                )
    progress.phase("Writing the report")
    published = publish_check_report(run_dir, report)
    if warehouse:
        settings = {"namespace": namespace, "recover": recover, "confirm": confirm}
        publish_to_warehouse(run_dir, warehouse, "check", settings)
    write_html_report(run_dir, "check", warehouse, duckdb)
    return CheckResult(
        run_dir,
        published["text"],
        findings=published["findings"],
        counts=published["counts"],
    )

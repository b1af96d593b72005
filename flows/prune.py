"""The hard-prune flow: snapshot (or reuse one), plan in SQL, report.

DAG::

    snapshot (subflow) -> find-unknown-manifests -> read-manifests x N
        -> plan-hard-prune (sql/plan/) -> publish-prune-report

    -> check-plan-sanity (sql/plan/plan_sanity.sql; refuses --confirm on unfit metadata)
    -> execute the plan (flows/execute.py: phases, queues, batches; with --confirm also
       the lock and the re-read before deleting)

Dry-run is the default: the plan is executed against a storage that only answers what it
would do (actions.parquet, status would-quarantine); --confirm deletes in two phases:
quarantine, then, after a settle time, a re-check that moves back what gained a reference
and purges quarantines that are due (flows/execute.py, docs/safety.md).

``project_images_plan`` (a dry run only): before planning, project-prune-images-plan
(sql/images/projected_*.sql) lays prune-images' plan over the snapshot's Images and tag histories,
so the plan says what a hard prune after that plan's execution would delete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import flow

from regprune import progress
from regprune.flows.execute import execute_plan
from regprune.flows.snapshot import run_storage, snapshot_for_run
from regprune.metadata import MetadataSource
from regprune.models import DuckDBSettings, is_projected
from regprune.registry import RegistryAPI
from regprune.results import RunResult, UnsafePlan
from regprune.resume import ResumeError, check_same_job, given_storage, record_plan
from regprune.runners import ChosenTaskRunner
from regprune.snapshots import SnapshotSource, metadata_of_snapshot
from regprune.tasks.analysis import (
    check_plan_sanity,
    clear_projection,
    find_unknown_manifests,
    plan_hard_prune,
)
from regprune.tasks.analysis import project_images_plan as project_images_plan_task
from regprune.tasks.html_report import write_html_report
from regprune.tasks.manifests import read_manifests_in_batches
from regprune.tasks.registry_restart import require_restart_access
from regprune.tasks.registry_restart import restart_registry as restart_registry_task
from regprune.tasks.reports import publish_prune_report
from regprune.tasks.warehouse import publish_to_warehouse
from regprune.twophase import default_retention, default_settle
from regprune.units import Duration, parse_duration


def cache_handling(registry_url: str | None, restart_registry: str | None) -> list[str]:
    """What clears the registry's blob-descriptor cache in this run (empty: nothing)."""
    done = []
    if registry_url:
        done.append("the registry API told of every blob and layer link moved")
    if restart_registry:
        done.append(f"registry {restart_registry} restarted")
    return done


PROJECTED_REFUSAL = (
    "refusing to delete: {what} is planned over the cluster as prune-images' plan would leave "
    "it, but its Images and tag revisions still exist, so it would delete blobs and links they "
    "use. A projection is a dry run's report only: run prune-images --confirm, then the hard "
    "prune on a new snapshot"
)


def same_job(run_dir: str, source: SnapshotSource | None) -> None:
    """--resume executes the plan of ``run_dir`` on its own storage and metadata only, while
    its snapshot is the plan's (regprune/resume.py); refused before anything is deleted."""
    metadata = source.metadata_source() if source else None
    try:
        check_same_job(run_dir, given_storage(source), metadata)
    except ResumeError as exc:
        raise UnsafePlan(str(exc)) from exc


def cluster_of_run(run_dir: str, source: SnapshotSource | None) -> MetadataSource:
    """The cluster to talk to: the source's kubeconfig/context, else the snapshot's."""
    metadata = source.metadata_source() if source else metadata_of_snapshot(run_dir)
    if metadata.is_kube:
        return metadata
    return MetadataSource("kube", kubeconfig=metadata.kubeconfig, context=metadata.context)


@flow(name="regprune-prune", log_prints=True, task_runner=ChosenTaskRunner())
def prune_flow(
    source: SnapshotSource | None = None,
    snapshot: str | None = None,
    out: str | None = None,
    keep_younger_than: Duration = "24h",
    upload_max_age: Duration = "7d",
    report: str | None = None,
    confirm: bool = False,
    duckdb: DuckDBSettings | None = None,
    resume: str | None = None,
    registry_url: str | None = None,
    registry_token_file: str | None = None,
    restart_registry: str | None = None,
    warehouse: str | None = None,
    force: bool = False,
    force_unlock: bool = False,
    project_images_plan: str | None = None,
    settle: Duration | None = None,
    quarantine_retention: Duration | None = None,
) -> RunResult:
    """Plan a hard prune: what no Image or ImageStream keeps, older than the grace period.

    Args:
        source: storage and metadata to snapshot (ignored when `snapshot` is given).
        snapshot: an existing snapshot folder to analyse instead of listing again.
        out: folder for the snapshot and results (default: regprune-runs/prune-<time>).
        keep_younger_than: grace period; nothing modified less than this before the snapshot
            started is planned for deletion (e.g. 24h, 0s).
        upload_max_age: unfinished uploads older than this are stale (e.g. 7d).
        report: also write the report JSON to this path.
        confirm: delete for real: execute the plan, re-verifying every object first.
        duckdb: memory limit, spill directory and threads for the analysis.
        resume: the folder of a run that stopped while deleting: its plan is executed again,
            skipping what its audit trail records as done.
        registry_url: the running registry (e.g. https://registry:5000): layer links of
            deleted blobs are removed through its API, which clears its blob cache.
        registry_token_file: a file holding the registry's bearer token (default: the
            cluster credentials' token, as oc adm prune images sends; a confirmed run asks
            the registry once with it before deleting anything).
        restart_registry: NAMESPACE/DEPLOYMENT of the registry, restarted through the
            Kubernetes API after deleting so that no cache claims deleted blobs exist.
        warehouse: also keep the snapshot and plan as a new run in this warehouse (a folder
            or s3://BUCKET/PREFIX); the run's report.html then shows the trend.
        force: execute the plan even when the metadata looks unfit to decide deletions in
            this storage (empty, of another registry, Images not readable in full).
        force_unlock: remove the storage's lock (regprune/lock.py) left by a run that died.
        project_images_plan: a prune-images run folder: plan over the cluster as its plan
            would leave it (its Images deleted, its tag revisions removed), so a dry run
            reports what the hard prune after prune-images --confirm frees. Refused with
            confirm or resume: those Images still exist.
        settle: how long to wait after the last move before the re-check (e.g. 5m, 0s;
            default regprune/twophase.py's).
        quarantine_retention: how long a quarantine is kept before a confirmed run purges
            it (0s: this run's is purged right after its re-check; default
            regprune/twophase.py's).
    """
    settle = settle or default_settle()
    quarantine_retention = quarantine_retention or default_retention()
    for duration in (keep_younger_than, upload_max_age, settle, quarantine_retention):
        parse_duration(duration)
    if project_images_plan and (confirm or resume):
        raise UnsafePlan(PROJECTED_REFUSAL.format(what="a hard prune with project_images_plan"))
    projection = None
    if resume:
        run_dir = resume
        same_job(run_dir, source)
        if is_projected(run_dir):
            raise UnsafePlan(PROJECTED_REFUSAL.format(what=f"the plan of {run_dir}"))
    else:
        run_dir = snapshot_for_run("prune", snapshot, source, out)
        if project_images_plan:
            projection = project_images_plan_task(run_dir, project_images_plan, duckdb)
        else:
            clear_projection(run_dir)
        unknown = find_unknown_manifests(run_dir, keep_younger_than, duckdb)
        parts_dir = str(Path(run_dir) / "_parts")
        manifests = read_manifests_in_batches(run_storage(run_dir, source), unknown, parts_dir)
        progress.phase("Planning the hard prune")
        plan_hard_prune(run_dir, manifests, keep_younger_than, upload_max_age, duckdb)
        record_plan(
            run_dir, {"keep_younger_than": keep_younger_than, "upload_max_age": upload_max_age}
        )
        shutil.rmtree(parts_dir, ignore_errors=True)
    settings = {
        "keep_younger_than": keep_younger_than,
        "upload_max_age": upload_max_age,
        "settle": settle,
        "quarantine_retention": quarantine_retention,
        **({"projected_from": projection} if projection else {}),
    }
    problems = check_plan_sanity(run_dir, duckdb)
    if problems and (confirm or resume) and not force:
        raise UnsafePlan(
            "refusing to delete: " + "; ".join(problems) + ". Check --metadata and --storage; "
            "--force executes the plan anyway"
        )
    for problem in problems:
        progress.warning(problem)
    deleting = bool(confirm or resume)
    if deleting and is_projected(run_dir):
        raise UnsafePlan(PROJECTED_REFUSAL.format(what=f"the plan of {run_dir}"))
    title = (
        "Quarantining (3 phases, each object re-read first)"
        if deleting
        else "Listing what would be deleted (the same 3 phases, nothing moved)"
    )
    cluster = cluster_of_run(run_dir, source) if deleting else None
    if cluster is not None and registry_url:
        # Before the first delete: a token the registry refuses would leave its cache
        # claiming deleted blobs (and fail every batch after deleting).
        RegistryAPI(registry_url, registry_token_file, cluster).preflight()
    if cluster is not None and restart_registry:
        require_restart_access(cluster, restart_registry)  # the same, for the restart
    with progress.activity("delete", title):
        executed = execute_plan(
            run_dir,
            run_storage(run_dir, source),
            keep_younger_than,
            upload_max_age,
            registry_url,
            registry_token_file,
            force_unlock,
            dry_run=not deleting,
            registry_cluster=cluster,
            settle=settle,
            retention=quarantine_retention,
        )
    moved = executed["moved"] > 0
    if moved and restart_registry:
        restart_registry_task(cluster or cluster_of_run(run_dir, source), restart_registry)
    settings["registry_cache"] = cache_handling(
        registry_url if moved else None, restart_registry if moved else None
    )
    for error in executed["registry_errors"]:
        progress.warning(error)
    mode = "delete" if deleting else "dry-run"
    progress.phase("Writing the report")
    published = publish_prune_report(run_dir, mode, settings, report)
    if warehouse:
        publish_to_warehouse(run_dir, warehouse, "prune", {"mode": mode, **settings})
    write_html_report(run_dir, "prune", warehouse, duckdb)
    summary = published["summary"]
    return RunResult(run_dir, published["text"], summary, int(summary.get("failed", 0) or 0))

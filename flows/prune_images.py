"""The prune-images flow: what ``oc adm prune images`` removes, planned in SQL.

DAG::

    list images ─┐
    list streams ┤
    list pods, rc, rs, deploy, dc, ds, sts, jobs, cronjobs, builds, bc, limitranges (one task)
                 └─> merge tables ─> plan-prune-images (sql/images/images_*.sql) ─> sanity
        -> execute-prune-images (streams' status, then Images; each saved in the run's
           journal before it changes, for regprune/images_undo.py)
        -> publish-prune-images-report
        -> with confirm and a storage: the hard prune (flows/prune.py) as a subflow, on what
           that freed

A dump is read by one task instead of the listings. Every listing must complete: a workload
list that fails fails the run before anything is planned, so nothing is removed on a partial
view of what is in use. Dry run unless ``confirm``: the executor runs all the same, over a
cluster that records instead of changing (regprune/images_cluster.py ``cluster_for``, the one
place the mode is decided). Over an existing snapshot (``snapshot``) the dry run reads the
cluster again as the confirmed run would, and says what it would do now; over the listing
this run just took it reads that listing's tables instead (the cluster of seconds ago), and
its journal saves nothing (a dry run changes nothing to undo). Before any of it, from the
cluster, the API is asked whether it grants what this run uses (regprune/permissions.py): a
missing grant stops the run there, named.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow

from regprune.flows.snapshot import new_run_folder, submit_metadata_snapshot
from regprune.images_plan import PruneImagesSettings
from regprune.images_report import INVALID_SHOWN, invalid_references
from regprune.metadata import Listed, MetadataError, MetadataSource
from regprune.models import DuckDBSettings
from regprune.permissions import PRUNE_IMAGES, READ_METADATA, denied
from regprune.registry import RegistryAPI
from regprune.results import PruneImagesResult, UnsafePlan
from regprune.runners import ChosenTaskRunner
from regprune.snapshots import SnapshotError, SnapshotSource
from regprune.tables import SNAPSHOT_FILE
from regprune.tasks.metadata_snapshot import merge_metadata_tables
from regprune.tasks.prune_images import execute_images, plan_images, publish_images_report
from regprune.tasks.workload_snapshot import merge_workload_tables
from regprune.units import Duration
from regprune.version import tool_version

CLUSTER_FILE = "cluster.json"
"""Written last by a prune-images snapshot (metadata and workloads, no storage)."""


class UnsafeImagesPlan(UnsafePlan):
    """The metadata cannot decide what prune-images removes: nothing is removed."""


def snapshot_cluster(
    out_dir: Path, metadata: MetadataSource, duckdb: DuckDBSettings | None = None
) -> dict[str, Any]:
    """Images, ImageStreams, workloads and LimitRanges into ``out_dir`` as Parquet tables
    (merged within ``duckdb``'s limits)."""
    parts_dir = out_dir / "_parts"
    (out_dir / CLUSTER_FILE).unlink(missing_ok=True)
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir(parents=True)
    started = datetime.now(UTC)
    futures = submit_metadata_snapshot(metadata, str(parts_dir), workloads=True)
    listings: list[Listed] = []
    for future in futures:  # any failed list ends the run here
        result = future.result()
        listings += result if isinstance(result, list) else [result]
    rows = merge_metadata_tables(listings, str(out_dir), duckdb) | merge_workload_tables(
        listings, str(out_dir), duckdb
    )
    shutil.rmtree(parts_dir, ignore_errors=True)
    objects: dict[str, int] = {}
    for listing in listings:
        objects.update(listing.objects)
    summary = {
        "tool": "regprune",
        "version": tool_version(),
        "metadata": metadata.display,
        "metadata_started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "metadata_objects": objects,
        "apis_missing": sorted(
            kind for listing in listings if listing.missing for kind in listing.objects
        ),
        "rows": rows,
    }
    (out_dir / CLUSTER_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def snapshot_started_at(run_dir: Path) -> datetime:
    """When the listing of an existing snapshot started: the plan's "now"."""
    for name in (CLUSTER_FILE, SNAPSHOT_FILE):
        path = run_dir / name
        if path.exists():
            return datetime.fromisoformat(json.loads(path.read_text())["metadata_started_at"])
    raise SnapshotError(
        f"{run_dir} is not a complete prune-images snapshot (no {CLUSTER_FILE}); "
        "take one with 'regprune prune-images --out DIR'"
    )


@flow(name="regprune-prune-images", log_prints=True, task_runner=ChosenTaskRunner())
def prune_images_flow(
    settings: PruneImagesSettings,
    metadata: MetadataSource | None = None,
    snapshot: str | None = None,
    out: str | None = None,
    report: str | None = None,
    confirm: bool = False,
    duckdb: DuckDBSettings | None = None,
    hard_prune: SnapshotSource | None = None,
    hard_prune_keep_younger_than: Duration = "24h",
    registry_url: str | None = None,
    registry_token_file: str | None = None,
) -> PruneImagesResult:
    """Plan what ``oc adm prune images`` removes — tag revisions and Images — with the reason
    for every kept one.

    Args:
        settings: oc's options (keep_tag_revisions, keep_younger_than, prune_over_size_limit,
            all_images, namespace, ignore_invalid_refs).
        metadata: the cluster (kube) or a dump of images, streams, workloads and LimitRanges.
        snapshot: an existing prune-images snapshot folder instead of listing again.
        out: folder for the tables and results (default regprune-runs/prune-images-<time>).
        report: also write the report JSON to this path.
        confirm: remove for real (needs the cluster, not a dump): the streams' revisions, then
            the Images; the storage they free is the hard prune's to delete afterwards.
        duckdb: memory limit, spill directory and threads for the plan.
        hard_prune: with confirm, the registry's storage (and this cluster): after the Images
            are deleted, the hard prune (flows/prune.py) deletes what they freed — links and
            blobs in batches, re-verified, audited, resumable — as a subflow of this run.
        hard_prune_keep_younger_than: the hard prune's grace period on storage times.
        registry_url: the running registry, for the hard prune's cache handling.
        registry_token_file: its bearer token.
    """
    if confirm and not (metadata or MetadataSource()).is_kube:
        raise UnsafeImagesPlan(
            "prune-images --confirm changes the cluster: it needs --metadata kube, not a dump"
        )
    if (metadata or MetadataSource()).is_kube:
        require_access(metadata or MetadataSource(), confirm=confirm)
    if snapshot:
        run_dir = Path(snapshot)
        now = snapshot_started_at(run_dir)
    else:
        run_dir = Path(out or new_run_folder("prune-images"))
        run_dir.mkdir(parents=True, exist_ok=True)
        cluster = snapshot_cluster(run_dir, metadata or MetadataSource(), duckdb)
        now = datetime.fromisoformat(cluster["metadata_started_at"])
        for kind in cluster["apis_missing"]:
            print(f"Note: the API of {kind} is not served (404): none listed")
    planned = plan_images(str(run_dir), settings, now, duckdb)
    problems = planned["sanity"]["problems"]
    summary = planned["summary"]
    mode = "refused" if problems else ("delete" if confirm else "dry-run")
    if mode == "delete" and hard_prune is not None and registry_url:
        # the registry is asked before the first change, not only before the hard prune
        RegistryAPI(registry_url, registry_token_file, metadata or MetadataSource()).preflight()
    if not problems:  # the dry run too: the same code, its cluster records instead of changing
        summary = {
            **summary,
            "executed": execute_images(
                str(run_dir), metadata or MetadataSource(), confirm, listed=not snapshot
            ),
        }
    published = publish_images_report(
        str(run_dir), mode, settings.effective(), summary, problems, report
    )
    if problems:
        raise UnsafeImagesPlan(_refusal(run_dir, problems))
    text = published["text"]
    if "executed" in summary:
        text += "\nExecuted: " + ", ".join(f"{k} {v}" for k, v in summary["executed"].items())
    freed = None
    if mode == "delete" and hard_prune is not None:
        # imported here: the hard prune's flow, its tasks and theirs cost a dry run (and any
        # run without a storage) a third of a CPU second of start-up for nothing
        from regprune.flows.prune import prune_flow

        freed = prune_flow(
            source=hard_prune,
            out=str(run_dir / "hard-prune"),
            keep_younger_than=hard_prune_keep_younger_than,
            confirm=True,
            duckdb=duckdb,
            registry_url=registry_url,
            registry_token_file=registry_token_file,
        )
        text += "\nHard prune of the freed storage:\n" + freed.text
    return PruneImagesResult(
        str(run_dir), text, summary, failed=freed.failed if freed else 0, hard_prune=freed
    )


def require_access(source: MetadataSource, confirm: bool) -> None:
    """Refuse before listing or changing anything when the API denies a grant this run uses
    (regprune/permissions.py): one error naming every missing one, instead of a 403 halfway.
    Every run lists (the confirmed run's executor lists the streams and Images again)."""
    verbs = {"list"} | ({"get", "update", "delete"} if confirm else set())
    missing = denied(source, (READ_METADATA, PRUNE_IMAGES), verbs)
    if missing:
        raise MetadataError(
            f"forbidden: prune-images{' --confirm' if confirm else ''} needs "
            f"{', '.join(missing)}, which the API does not grant this user (the ClusterRoles "
            f"{READ_METADATA.name} and {PRUNE_IMAGES.name} of deployments/rbac/ do) "
            "- no changes made"
        )


def _refusal(run_dir: Path, problems: list[str]) -> str:
    lines = ["refusing to prune images: " + "; ".join(problems) + " - no changes made"]
    if "invalid-references" in problems:
        invalid = invalid_references(run_dir)
        lines.append("The following objects have invalid references:")
        lines += [
            f"  {r['kind']}/{r['name']} namespace={r['namespace']}: "
            f"{r['field']} {r['container'] or ''}: invalid reference {r['reference']!r}: "
            f"{r['problem']}"
            for r in invalid[:INVALID_SHOWN]
        ]
        if len(invalid) > INVALID_SHOWN:
            lines.append(f"  ... and {len(invalid) - INVALID_SHOWN} more (see the report)")
        lines.append("Either fix the references or delete the objects, or --ignore-invalid-refs")
    return "\n".join(lines)

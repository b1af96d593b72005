"""The snapshot flow: cluster metadata first, then storage, into one folder of Parquet tables.

DAG::

    list images ─┐     ┌──────────────────────────────> merge metadata tables ──┐
    list streams ┴─────┤                                                          ├─> snapshot.json
                       └ plan storage ─┬ walk blob shard x N ───────┬─> merge ──┘
                         shards        └ walk repository shard x M ─┘   storage tables

The cluster is listed before storage is walked; a metadata dump (fixed already) is read
while storage is walked.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.futures import PrefectFuture

from regprune import progress
from regprune.metadata import MetadataSource
from regprune.resume import metadata_identity, storage_identity
from regprune.runners import ChosenTaskRunner
from regprune.snapshots import SnapshotSource, new_run_folder, read_snapshot_summary
from regprune.storage import (
    StorageSpec,
)
from regprune.tables import (
    SNAPSHOT_FILE,
    STORAGE_TABLES,
)
from regprune.tasks.metadata_snapshot import (
    list_cluster_objects,
    merge_metadata_tables,
    read_metadata_dump,
)
from regprune.tasks.storage_snapshot import (
    merge_snapshot_tables,
    plan_storage_shards,
    record_stray_files,
    walk_blob_shard,
    walk_repository_shard,
)
from regprune.tasks.warehouse import publish_to_warehouse
from regprune.version import tool_version

LISTED = ("images", "imagestreams")


def submit_metadata_snapshot(
    source: MetadataSource, parts_dir: str, workloads: bool = False
) -> list[PrefectFuture]:
    """Both listings run at once; a dump is one task. With ``workloads`` (prune-images), the
    workloads, LimitRanges and Image sizes too (the tables of ``WORKLOAD_TABLES``)."""
    if not source.is_kube:
        return [read_metadata_dump.submit(source, parts_dir, workloads)]
    if not workloads:
        return [list_cluster_objects.submit(source, plural, parts_dir) for plural in LISTED]
    from regprune.tasks.workload_snapshot import list_workloads

    return [
        list_cluster_objects.submit(source, "images", parts_dir, ("image_sizes",)),
        list_cluster_objects.submit(source, "imagestreams", parts_dir),
        list_workloads.submit(source, parts_dir),  # a list of listings
    ]


def snapshot_storage(
    spec: StorageSpec, parts_dir: str, shard_tasks: int | None, links_only: bool = False
) -> list[dict[str, str]]:
    """Walk blob and repository shards in parallel; with ``links_only``, only the layer and
    manifest links (what the re-verification before deleting compares): no blob walk, no
    tag or upload file read."""
    title = f"Re-reading the links in {spec.display}" if links_only else f"Walking {spec.display}"
    # the previous snapshot's count (regprune/cli) estimates a full walk, not the links alone
    with progress.activity("walk", title, expected=0 if links_only else None) as walking:
        shards = plan_storage_shards(spec, shard_tasks)
        blob_groups = [] if links_only else shards.blob_groups
        futures = [
            walk_blob_shard.submit(spec, group, parts_dir, i) for i, group in enumerate(blob_groups)
        ] + [
            walk_repository_shard.submit(spec, group, parts_dir, i, links_only)
            for i, group in enumerate(shards.repository_groups)
        ]
        progress.wait_for(futures, walking)
    parts = [future.result() for future in futures]
    if shards.stray_files:
        parts.append(record_stray_files(shards.stray_files, parts_dir))
    return parts


@flow(name="regprune-snapshot", log_prints=True, task_runner=ChosenTaskRunner())
def snapshot_flow(out: str, source: SnapshotSource, warehouse: str | None = None) -> str:
    """Snapshot cluster metadata, then registry storage, into ``out/<table>.parquet`` (and,
    given a ``warehouse`` folder or s3:// URL, keep the tables there as a new run).

    The cluster is listed before storage is walked: anything pushed in between shows up in
    storage without metadata, and the analysis protects it by its age (both start times are
    recorded in ``snapshot.json``).

    Args:
        out: folder for the tables (created; a snapshot already there is replaced).
        source: storage and metadata to snapshot.
        warehouse: also keep the tables as a new run in this warehouse (a folder or
            s3://BUCKET/PREFIX).
    """
    spec = source.storage_spec()
    metadata = source.metadata_source()
    out_dir = Path(out)
    parts_dir = out_dir / "_parts"
    (out_dir / SNAPSHOT_FILE).unlink(missing_ok=True)  # written last: marks a complete snapshot
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir(parents=True)
    started = time.monotonic()

    metadata_started_at = datetime.now(UTC)
    if metadata.is_kube:  # listed before the walk starts; a dump is fixed, read meanwhile
        with progress.activity(
            "metadata", f"Listing images and imagestreams of {metadata.display}", unit="objects"
        ) as listing_all:
            metadata_tasks = submit_metadata_snapshot(metadata, str(parts_dir))
            progress.wait_for(metadata_tasks, listing_all)
        for listing in metadata_tasks:
            listing.result()  # a failed listing ends the run here, before any walking
    else:
        progress.phase(f"Reading the metadata dump {metadata.display}")
        metadata_tasks = submit_metadata_snapshot(metadata, str(parts_dir))
    metadata_merged = merge_metadata_tables.submit(metadata_tasks, str(out_dir))
    storage_started_at = datetime.now(UTC)
    storage_parts = snapshot_storage(spec, str(parts_dir), source.shard_tasks)

    progress.phase("Writing the snapshot tables")
    counts = merge_snapshot_tables(storage_parts, str(out_dir), STORAGE_TABLES)
    listings = [listing.result() for listing in metadata_tasks]  # a bad dump fails here
    counts = metadata_merged.result() | counts
    shutil.rmtree(parts_dir, ignore_errors=True)
    objects: dict[str, int] = {}
    for listing in listings:
        objects.update(listing.objects)
    summary = {
        "tool": "regprune",
        "version": tool_version(),
        "storage": spec.display,
        "metadata": metadata.display,
        "metadata_source": {
            "source": metadata.source,
            "kubeconfig": metadata.kubeconfig,
            "context": metadata.context,
            "page_size": metadata.page_size,
        },
        "storage_identity": storage_identity(spec),
        "metadata_identity": metadata_identity(metadata),
        "metadata_started_at": metadata_started_at.isoformat(),
        "storage_started_at": storage_started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_seconds": round(time.monotonic() - started, 3),
        "metadata_objects": objects,
        "rows": counts,
    }
    (out_dir / SNAPSHOT_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"snapshot of {spec.display} + {metadata.display}: {counts['blobs']} blobs, "
        f"{counts['repositories']} repositories, {counts['images']} images, "
        f"{counts['imagestreams']} imagestreams in {summary['duration_seconds']} s -> {out_dir}"
    )
    if warehouse:
        publish_to_warehouse(str(out_dir), warehouse, "snapshot")
    return str(out_dir)


def snapshot_for_run(
    kind: str, snapshot: str | None, source: SnapshotSource | None, out: str | None
) -> str:
    """Analyse an existing snapshot folder, or take a fresh one (as a subflow)."""
    if snapshot:
        if source is not None and (source.storage or source.registry_config) and out:
            raise ValueError("give either an existing snapshot or a source to snapshot, not both")
        return snapshot
    if source is None:
        raise ValueError("nothing to analyse: give a snapshot folder or a storage to snapshot")
    return snapshot_flow(out=out or new_run_folder(kind), source=source)


def run_storage(run_dir: str, source: SnapshotSource | None) -> StorageSpec:
    """The storage a run reads and changes: the one given, else the snapshot's own (its URL
    carries no credentials; those come from the environment as usual)."""
    if source is not None and (source.storage or source.registry_config):
        return source.storage_spec()
    return StorageSpec(read_snapshot_summary(run_dir)["storage"])

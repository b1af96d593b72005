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
from typing import Any

from prefect import flow, task
from prefect.futures import PrefectFuture, wait
from pydantic import BaseModel, Field, field_validator

from regprune.flows.runners import ChosenTaskRunner
from regprune.tasks.metadata import MetadataSource
from regprune.tasks.metadata_snapshot import list_cluster_objects, read_metadata_dump
from regprune.tasks.storage import (
    StorageConfigError,
    StorageSpec,
    check_options_hold_no_secrets,
    resolve_storage,
)
from regprune.tasks.storage_snapshot import (
    plan_storage_shards,
    record_stray_files,
    walk_blob_shard,
    walk_repository_shard,
)
from regprune.tasks.tables import (
    METADATA_TABLES,
    SNAPSHOT_FILE,
    SNAPSHOT_TABLES,
    STORAGE_TABLES,
    merge_parts,
)
from regprune.tasks.version import tool_version
from regprune.tasks.warehouse import publish_to_warehouse

LISTED = ("images", "imagestreams")


def submit_metadata_snapshot(source: MetadataSource, parts_dir: str) -> list[PrefectFuture]:
    """Both listings run at once; a dump is one task."""
    if not source.is_kube:
        return [read_metadata_dump.submit(source, parts_dir)]
    return [list_cluster_objects.submit(source, plural, parts_dir) for plural in LISTED]


def snapshot_storage(
    spec: StorageSpec, parts_dir: str, shard_tasks: int | None, links_only: bool = False
) -> list[dict[str, str]]:
    """Walk blob and repository shards in parallel; with ``links_only``, only the layer and
    manifest links (what the re-verification before deleting compares): no blob walk, no
    tag or upload file read."""
    shards = plan_storage_shards(spec, shard_tasks)
    blob_groups = [] if links_only else shards.blob_groups
    futures = [
        walk_blob_shard.submit(spec, group, parts_dir, i) for i, group in enumerate(blob_groups)
    ] + [
        walk_repository_shard.submit(spec, group, parts_dir, i, links_only)
        for i, group in enumerate(shards.repository_groups)
    ]
    wait(futures)
    parts = [future.result() for future in futures]
    if shards.stray_files:
        parts.append(record_stray_files(shards.stray_files, parts_dir))
    return parts


@task(name="merge-snapshot-tables")
def merge_snapshot_tables(
    parts: list[dict[str, str]], out: str, tables: tuple[str, ...] = SNAPSHOT_TABLES
) -> dict[str, int]:
    """One sorted Parquet file per table; metadata rows are de-duplicated (overlapping dumps)."""
    counts = {}
    for table in tables:
        files = [p[table] for p in parts if table in p]
        dest = Path(out) / f"{table}.parquet"
        counts[table] = merge_parts(table, files, dest, distinct=table in METADATA_TABLES)
    return counts


@task(name="merge-metadata-tables")
def merge_metadata_tables(listings: list[dict[str, Any]], out: str) -> dict[str, int]:
    """The cluster's tables, merged while storage is still being walked."""
    return merge_snapshot_tables.fn([lst["parts"] for lst in listings], out, METADATA_TABLES)


class SnapshotSource(BaseModel):
    """Where a snapshot reads from: the registry's storage and the cluster's metadata."""

    storage: str | None = Field(
        None,
        description="Registry rootdirectory: PATH, file:///PATH or s3://BUCKET[/ROOT]; "
        "S3 credentials come from the AWS_* environment, never from here.",
    )
    registry_config: str | None = Field(
        None, description="Path of the registry's config.yml (instead of storage)."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra fsspec options (no credentials)."
    )
    metadata: str = Field(
        "kube",
        description="'kube' for the cluster API, or the path of an "
        "'oc get images,imagestreams -A -o json' dump (or a folder of dumps).",
    )
    kubeconfig: str | None = Field(None, description="kubeconfig path (default: the usual).")
    context: str | None = Field(None, description="kubeconfig context.")
    page_size: int = Field(500, ge=1, le=10_000, description="Objects per list request.")
    shard_tasks: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Parallel storage walk tasks (default: 16 on S3, the CPU count on a "
        "local folder, where more walkers than cores only contend in the kernel).",
    )

    @field_validator("storage_options")
    @classmethod
    def _no_credentials(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Parameters are stored with the flow run: refuse credentials before they are."""
        try:
            check_options_hold_no_secrets(options)
        except StorageConfigError as exc:
            raise ValueError(str(exc)) from exc
        return options

    def storage_spec(self) -> StorageSpec:
        return resolve_storage(self.storage, self.storage_options, self.registry_config)

    def metadata_source(self) -> MetadataSource:
        return MetadataSource(
            self.metadata,
            kubeconfig=self.kubeconfig,
            context=self.context,
            page_size=self.page_size,
        )


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
    metadata_tasks = submit_metadata_snapshot(metadata, str(parts_dir))
    if metadata.is_kube:  # listed before the walk starts; a dump is fixed, read meanwhile
        for listing in metadata_tasks:
            listing.result()  # a failed listing ends the run here, before any walking
    metadata_merged = merge_metadata_tables.submit(metadata_tasks, str(out_dir))
    storage_started_at = datetime.now(UTC)
    storage_parts = snapshot_storage(spec, str(parts_dir), source.shard_tasks)

    counts = merge_snapshot_tables(storage_parts, str(out_dir), STORAGE_TABLES)
    listings = [listing.result() for listing in metadata_tasks]  # a bad dump fails here
    counts = metadata_merged.result() | counts
    shutil.rmtree(parts_dir, ignore_errors=True)
    objects: dict[str, int] = {}
    for listing in listings:
        objects.update(listing["objects"])
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

"""Prefect tasks that walk registry storage in parallel shards and write Parquet parts: the
shards planned, each blob and repository shard walked by one task run, the parts merged into
the snapshot's tables (how a shard is walked: regprune/storage_walk.py).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from prefect import task
from prefect.logging import get_run_logger

from regprune.layout import BLOBS_PREFIX, REPOSITORIES_PREFIX, classify_blob_keys
from regprune.models import DuckDBSettings
from regprune.retries import retry_unless
from regprune.storage import EMPTY_FOLDER, StorageConfigError, StorageSpec, open_storage
from regprune.storage_walk import (
    BLOB_TABLES,
    REPOSITORY_TABLES,
    RepositoryShardWalker,
    StorageShards,
    default_shard_tasks,
    prefix_listings,
    record_listing_problems,
    shard_groups,
)
from regprune.tables import METADATA_TABLES, SNAPSHOT_TABLES, TableParts, TableWriters, merge_parts


@task(
    name="plan-storage-shards",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_unless(StorageConfigError),
)
def plan_storage_shards(spec: StorageSpec, shard_tasks: int | None = None) -> StorageShards:
    """List the two top levels (a handful of requests) and split the walk into task runs."""
    shard_tasks = shard_tasks or default_shard_tasks(spec)
    storage = open_storage(spec)
    storage.check_root()
    blob_prefixes, blob_files = storage.list_children(BLOBS_PREFIX)
    repo_roots, repo_files = storage.list_children(REPOSITORIES_PREFIX)
    top_blob_dirs, top_blob_files = storage.list_children("blobs/")
    stray = [
        (obj.key, obj.problem or "unexpected file")
        for obj in (*top_blob_files, *blob_files, *repo_files)
        if obj.problem != EMPTY_FOLDER  # an S3 folder marker of the listed folder itself
    ]
    extra_blob_roots = [f"blobs/{d}/" for d in top_blob_dirs if d != "sha256"]
    blob_roots = [f"{BLOBS_PREFIX}{p}/" for p in blob_prefixes] + extra_blob_roots
    return StorageShards(
        blob_groups=shard_groups(blob_roots, shard_tasks),
        repository_groups=shard_groups(
            [f"{REPOSITORIES_PREFIX}{r}/" for r in repo_roots], shard_tasks
        ),
        stray_files=stray,
    )


@task(
    name="walk-blob-shard",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_unless(StorageConfigError),  # a 403 stays a 403
)
def walk_blob_shard(
    spec: StorageSpec, prefixes: list[str], parts_dir: str, shard: int
) -> TableParts:
    """Record every ``blobs/sha256/<2hex>/<hex>/data`` below the given prefix folders."""
    storage = open_storage(spec)
    out = TableWriters(BLOB_TABLES, Path(parts_dir), f"blobs-{shard:04d}")
    try:
        for listing in prefix_listings(storage, prefixes):
            files = listing.filter(pc.is_null(listing["problem"]))
            keys = classify_blob_keys(files["key"])
            fits = pc.is_null(keys["problem"])
            out["blobs"].write_table(
                pa.table(
                    {
                        "digest": keys["digest"].filter(fits),
                        "size": files["size"].filter(fits),
                        "modified": files["modified"].filter(fits),
                    }
                )
            )
            misfits = pc.invert(fits)
            out["storage_anomalies"].write_table(
                pa.table(
                    {
                        "path": files["key"].filter(misfits),
                        "problem": keys["problem"].filter(misfits),
                    }
                )
            )
            record_listing_problems(listing, out)
    except BaseException:
        out.abort()
        raise
    return out.close()


@task(
    name="walk-repository-shard",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_unless(StorageConfigError),  # a 403 stays a 403
)
def walk_repository_shard(
    spec: StorageSpec, prefixes: list[str], parts_dir: str, shard: int, links_only: bool = False
) -> dict:
    """Record links, tags and uploads of every repository below the given namespace folders
    (with ``links_only``, tags and uploads stay empty)."""
    out = TableWriters(REPOSITORY_TABLES, Path(parts_dir), f"repositories-{shard:04d}")
    try:
        walker = RepositoryShardWalker(spec, out)
        for listing in prefix_listings(walker.storage, prefixes):
            walker.record(listing)
        walker.finish(links_only)
    except BaseException:
        out.abort()
        raise
    get_run_logger().debug("shard %s: %d repositories", shard, len(walker.repositories))
    return out.close()


@task(name="record-stray-files")
def record_stray_files(stray: list[tuple[str, str]], parts_dir: str) -> TableParts:
    out = TableWriters(("storage_anomalies",), Path(parts_dir), "stray")
    for path, problem in stray:
        out["storage_anomalies"].append(path=path, problem=problem)
    return out.close()


@task(name="merge-snapshot-tables")
def merge_snapshot_tables(
    parts: list[dict[str, str]],
    out: str,
    tables: tuple[str, ...] = SNAPSHOT_TABLES,
    duckdb: DuckDBSettings | None = None,
) -> dict[str, int]:
    """One sorted Parquet file per table; metadata rows are de-duplicated (overlapping dumps).
    ``duckdb``: the run's limits for the merges (default: MERGE_MEMORY_LIMIT)."""
    counts = {}
    for table in tables:
        files = [p[table] for p in parts if table in p]
        dest = Path(out) / f"{table}.parquet"
        counts[table] = merge_parts(table, files, dest, table in METADATA_TABLES, duckdb)
    return counts

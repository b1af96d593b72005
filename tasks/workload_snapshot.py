"""Prefect tasks that list what the workloads use (for ``prune-images``) into Parquet parts.

One task lists every kind, a few at a time, each paginated and retried like the Image listing. Any
list that cannot complete fails its task, and the flow with it: a pruner that has not seen
every workload cannot know what is in use. A 404 on the OpenShift-only groups
(DeploymentConfigs, Builds, BuildConfigs) means the API is not installed: no such objects.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from regprune.metadata import (
    MAX_LIST_RESTARTS,
    Listed,
    ListingRestart,
    MetadataError,
    MetadataSource,
    api_client,
)
from regprune.models import DuckDBSettings
from regprune.retries import retry_unless
from regprune.tables import WORKLOAD_TABLES, TableWriters
from regprune.tasks.storage_snapshot import merge_snapshot_tables
from regprune.workloads import (
    LISTINGS,
    WORKLOAD_KINDS,
    ApiGroupMissing,
    Listing,
    limit_range_rows,
    list_workload_pages,
    workload_rows,
)

LIST_THREADS = 4


def write_workload_object(out: TableWriters, obj: dict[str, Any]) -> bool:
    """Write one workload or LimitRange; False for any other kind (the caller decides)."""
    kind = obj.get("kind")
    if kind in WORKLOAD_KINDS:
        rows, anomalies = workload_rows(obj)
        out["workload_references"].extend(rows)
    elif kind == "LimitRange":
        rows, anomalies = limit_range_rows(obj)
        out["limit_ranges"].extend(rows)
    else:
        return False
    out["metadata_anomalies"].extend(anomalies)
    return True


def _list_kind(source: MetadataSource, listing: Listing, parts_dir: str, logger: Any) -> Listed:
    """List every object of one workload kind (or LimitRanges), page by page; a 410 restarts
    it, a 404 of an OpenShift-only group is "none"."""
    kind = listing.kind
    tables = ("workload_references", "limit_ranges", "metadata_anomalies")
    for restart in range(MAX_LIST_RESTARTS + 1):
        out = TableWriters(tables, Path(parts_dir), f"workloads-{kind}")
        objects = pages = 0
        try:
            for page in list_workload_pages(api_client(source), listing, source):
                pages += 1
                for obj in page:
                    objects += 1
                    write_workload_object(out, obj)
        except ApiGroupMissing:
            out.abort()
            logger.info("%s: the API is not served (404): none listed", kind)
            out = TableWriters(tables, Path(parts_dir), f"workloads-{kind}")
            return Listed(out.close(), {kind: 0}, missing=True)
        except ListingRestart:
            out.abort()
            logger.warning("list of %s expired mid-way (410 Gone); restarting (%d)", kind, restart)
            continue
        except BaseException:
            out.abort()
            raise
        logger.info("listed %d %s in %d pages", objects, kind, pages)
        return Listed(out.close(), {kind: objects}, pages)
    raise MetadataError(f"list of {kind} kept expiring (410 Gone): try a larger --page-size")


@task(
    name="list-workloads",
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=retry_unless(MetadataError),
)
def list_workloads(source: MetadataSource, parts_dir: str) -> list[Listed]:
    """Every workload kind and LimitRanges, LIST_THREADS lists at a time (one task: a dozen
    small tasks cost more in orchestration than the lists take). Any list that fails fails
    the task: the run stops before anything is planned."""
    logger = get_run_logger()  # the run context does not follow into the pool's threads
    with ThreadPoolExecutor(LIST_THREADS, thread_name_prefix="list-workloads") as pool:
        futures = [
            pool.submit(_list_kind, source, listing, parts_dir, logger) for listing in LISTINGS
        ]
        return [future.result() for future in futures]


@task(name="merge-workload-tables")
def merge_workload_tables(
    listings: list[Any], out: str, duckdb: DuckDBSettings | None = None
) -> dict[str, int]:
    """``workload_references``, ``limit_ranges``, ``image_sizes`` of a prune-images snapshot."""
    parts = [listing.parts for listing in listings]
    return merge_snapshot_tables.fn(parts, out, WORKLOAD_TABLES, duckdb)

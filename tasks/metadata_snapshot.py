"""Prefect tasks that turn cluster metadata into Parquet parts.

``images`` and ``imagestreams`` are listed by two concurrent tasks; a dump is read by one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from regprune import progress
from regprune.metadata import (
    MAX_LIST_RESTARTS,
    Listed,
    ListingRestart,
    MetadataError,
    MetadataSource,
    api_client,
    fewer_collections,
    image_rows,
    imagestream_rows,
    list_pages,
    read_dump_objects,
)
from regprune.models import DuckDBSettings
from regprune.retries import retry_unless
from regprune.tables import (
    METADATA_TABLES,
    WORKLOAD_TABLES,
    TableWriters,
)
from regprune.tasks.storage_snapshot import merge_snapshot_tables

RowFunction = Callable[[dict[str, Any]], tuple[dict | None, list[dict], list[dict]]]
LISTINGS: dict[str, tuple[str, str, RowFunction]] = {
    # plural: (object table, child table, row function)
    "images": ("images", "image_blobs", image_rows),
    "imagestreams": ("imagestreams", "imagestream_tags", imagestream_rows),
}


def _write(out: TableWriters, plural: str, objects: list[dict[str, Any]]) -> None:
    """The rows of a page of objects, written table by table (one call per page)."""
    table, child_table, row_function = LISTINGS[plural]
    rows: list[dict] = []
    children: list[dict] = []
    anomalies: list[dict] = []
    for obj in objects:
        row, obj_children, obj_anomalies = row_function(obj)
        if row is not None:
            rows.append(row)
        children += obj_children
        anomalies += obj_anomalies
    out[table].extend(rows)
    out[child_table].extend(children)
    out["metadata_anomalies"].extend(anomalies)
    if plural == "images" and "image_sizes" in out.writers:  # a snapshot for prune-images
        from regprune.workloads import image_size_row

        sizes = [image_size_row(obj) for obj in objects]
        out["image_sizes"].extend([size for size in sizes if size is not None])


@task(
    name="list-cluster-objects",
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=retry_unless(MetadataError),
)
def list_cluster_objects(
    source: MetadataSource, plural: str, parts_dir: str, extra_tables: tuple[str, ...] = ()
) -> Listed:
    """List every ``images`` or ``imagestreams`` object, page by page, into Parquet parts.

    A 410 on a continue token restarts the list from the beginning (the parts written so far
    are dropped); any other failure that outlives the retries fails the task.
    """
    table, child_table, _ = LISTINGS[plural]
    logger = get_run_logger()
    for restart in range(MAX_LIST_RESTARTS + 1):
        tables = (table, child_table, "metadata_anomalies", *extra_tables)
        out = TableWriters(tables, Path(parts_dir), plural)
        try:
            api = api_client(source)
            pages = objects = 0
            with fewer_collections():
                for page in list_pages(api, plural, source):
                    pages += 1
                    objects += len(page)
                    _write(out, plural, page)
                    progress.advance("metadata", len(page))
        except ListingRestart:
            out.abort()
            logger.warning(
                "list of %s expired mid-way (410 Gone); restarting (%d)", plural, restart + 1
            )
            continue
        except BaseException:
            out.abort()
            raise
        logger.info("listed %d %s in %d pages", objects, plural, pages)
        return Listed(out.close(), {plural: objects}, pages)
    raise MetadataError(
        f"list of {plural} kept expiring (410 Gone {MAX_LIST_RESTARTS + 1} times): the cluster "
        "changes faster than it can be listed; try a larger --page-size"
    )


@task(name="read-metadata-dump")
def read_metadata_dump(source: MetadataSource, parts_dir: str, workloads: bool = False) -> Listed:
    """Read an ``oc get images,imagestreams -A -o json`` dump (or a folder of them); with
    ``workloads``, also the workloads and LimitRanges of ``oc get images,imagestreams,pods,...``
    (:mod:`regprune.workloads`)."""
    tables: tuple[str, ...] = (
        "images",
        "image_blobs",
        "imagestreams",
        "imagestream_tags",
        "metadata_anomalies",
    )
    if workloads:
        tables = (*tables, *WORKLOAD_TABLES)
    out = TableWriters(tables, Path(parts_dir), "dump")
    kinds: Counter[str] = Counter()
    try:
        with fewer_collections():
            _read_dump(source, out, kinds, workloads)
    except BaseException:
        out.abort()
        raise
    counts = {"images": kinds["Image"], "imagestreams": kinds["ImageStream"]}
    if workloads:
        from regprune.workloads import WORKLOAD_KINDS

        counts |= {k: kinds[k] for k in (*WORKLOAD_KINDS, "LimitRange")}
    return Listed(out.close(), dict(counts))


def _read_dump(
    source: MetadataSource, out: TableWriters, kinds: Counter[str], workloads: bool
) -> None:
    """Every object of the dump into its tables, counted by kind in ``kinds``."""
    from regprune.tasks.workload_snapshot import write_workload_object

    for obj in read_dump_objects(source.source):
        kind = obj.get("kind")
        if kind == "Image":
            _write(out, "images", [obj])
        elif kind == "ImageStream":
            _write(out, "imagestreams", [obj])
        elif workloads and write_workload_object(out, obj):
            pass
        else:
            meta = obj.get("metadata")
            name = meta.get("name") if isinstance(meta, dict) else None
            out["metadata_anomalies"].append(
                kind=str(kind),
                namespace=None,
                name=str(name),
                problem="unexpected kind, ignored",
            )
        kinds[str(kind)] += 1


@task(name="merge-metadata-tables")
def merge_metadata_tables(
    listings: list[Any], out: str, duckdb: DuckDBSettings | None = None
) -> dict[str, int]:
    """The cluster's tables, merged while storage is still being walked (``listings``: the
    listing tasks' results, or their futures, which Prefect resolves)."""
    parts = [listing.parts for listing in listings]
    return merge_snapshot_tables.fn(parts, out, METADATA_TABLES, duckdb)

"""Prefect tasks of the recovery of lost manifests: plan it (``sql/check/recover_images.sql``),
create the mappings batch after batch, merge the results (the client: regprune/recovery.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
from prefect import task

from regprune import progress
from regprune.metadata import MetadataSource, custom_objects_api
from regprune.models import DuckDBSettings, SnapshotDatabase
from regprune.recovery import (
    RECOVER_BATCH,
    RECOVER_MODEL,
    RESULT_SCHEMA,
    RESULTS_FILE,
    MappingCreator,
    RateLimiter,
    RecoveryError,
    attach_texts,
    candidate_key,
    read_plan_rows,
    write_results,
)
from regprune.storage import StorageSpec
from regprune.tables import sql_literal


def _lost_found_tables(run_dir: Path) -> dict[str, Path]:
    names = ("check_lost_found", "lost_manifests", "lost_manifest_references")
    return {name: run_dir / f"{name}.parquet" for name in names}


@task(name="plan-recovery")
def plan_recovery(
    run_dir: str, registry_host: str | None, settings: DuckDBSettings | None = None
) -> dict[str, Any]:
    """Write ``recover_images.parquet`` (one Image per candidate); fails when no registry
    host is known, since every Image names one."""
    out = Path(run_dir)
    variables = {"registry_host": registry_host, "namespace": None}
    with SnapshotDatabase(out, variables, settings, _lost_found_tables(out)) as db:
        db.define(RECOVER_MODEL)
        path = out / f"{RECOVER_MODEL}.parquet"
        count = db.write(RECOVER_MODEL, path)
        [unnamed] = db.records(
            f"SELECT count(*) AS n FROM read_parquet({sql_literal(path)}) "
            "WHERE docker_image_reference IS NULL"
        )
    if unnamed["n"]:
        raise RecoveryError(
            "no registry host for the restored Images' dockerImageReference: no managed Image "
            "in the snapshot names one; give --registry-host (e.g. "
            "image-registry.openshift-image-registry.svc:5000)"
        )
    return {"path": str(path), "count": count}


@task(name="recover-lost-found-batch")
def recover_batch(
    cluster: MetadataSource,
    images_path: str,
    offset: int,
    rate: float,
    not_restored: list[str],
    stopped: str | None,
    parts_dir: str,
    storage: StorageSpec | None = None,
) -> dict[str, Any]:
    """Create the mappings of rows ``offset``..``offset + RECOVER_BATCH`` of the plan.

    Returns the results part, the candidates not restored (lists whose children are among
    them are skipped later) and, after a 401/403, why the recovery stopped. Once stopped,
    every row is recorded as skipped without a call. With ``storage`` each Image carries its
    manifest and config texts (see :func:`attach_texts`).
    """
    rows = read_plan_rows(images_path, offset, RECOVER_BATCH)
    if storage is not None and not stopped:
        attach_texts(rows, storage)
    api = None if stopped else custom_objects_api(cluster)
    try:
        creator = MappingCreator(api, RateLimiter(rate), cluster, stopped)
        results = creator.restore(rows, set(not_restored))
    finally:
        if api is not None:
            api.api_client.close()
    part = write_results(results, Path(parts_dir) / f"results-{offset:09d}.parquet")
    progress.advance("restore", len(results))
    return {
        "results": str(part),
        "not_restored": [candidate_key(r) for r in results if r["status"] != "added"],
        "stopped": creator.stopped,
        "added": sum(r["status"] == "added" for r in results),
    }


@task(name="write-recover-results")
def merge_results(parts: list[str], run_dir: str) -> str:
    """``recover_results.parquet`` next to the snapshot, sorted like the check's report."""
    dest = Path(run_dir) / RESULTS_FILE
    if not parts:
        return str(write_results([], dest))
    files = "[" + ", ".join(sql_literal(p) for p in parts) + "]"
    columns = ", ".join(RESULT_SCHEMA.names)
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT {columns} FROM read_parquet({files}) ORDER BY namespace, name, digest) "
            f"TO {sql_literal(dest)} (FORMAT parquet)"
        )
    return str(dest)

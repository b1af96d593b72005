"""The consistency-check flow (fsck): broken tags, broken images, lost-found candidates.

DAG::

    snapshot (subflow) -> find-inconsistencies (sql/check_*.sql)
        -> read-lost-manifests x N (parallel batches, storage reads)
        -> verify-lost-manifests (sql/check_lost_found.sql) -> publish-check-report
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefect import flow

from regprune.flows.run_folder import snapshot_for_run
from regprune.flows.snapshot import SnapshotSource
from regprune.tasks.analysis import (
    find_inconsistencies,
    read_snapshot_summary,
    verify_lost_manifests,
)
from regprune.tasks.manifests import read_manifests
from regprune.tasks.queries import DuckDBSettings
from regprune.tasks.reports import publish_check_report
from regprune.tasks.storage import StorageSpec

MANIFEST_BATCH = 200


def manifest_storage(run_dir: str, source: SnapshotSource | None) -> StorageSpec:
    """The storage to read manifests from: the one given, else the snapshot's own (its URL
    carries no credentials; those come from the environment as usual)."""
    if source is not None and (source.storage or source.registry_config):
        return source.storage_spec()
    return StorageSpec(read_snapshot_summary(run_dir)["storage"])


@flow(name="regprune-check", log_prints=True)
def check_flow(
    source: SnapshotSource | None = None,
    snapshot: str | None = None,
    out: str | None = None,
    namespace: str | None = None,
    report: str | None = None,
    duckdb: DuckDBSettings | None = None,
) -> dict[str, Any]:
    """Check that metadata and storage agree; find manifests that can be recovered.

    Args:
        source: storage and metadata to snapshot (ignored when `snapshot` is given).
        snapshot: an existing snapshot folder to analyse instead of listing again.
        out: folder for the snapshot and results (default: regprune-runs/check-<time>).
        namespace: limit the check to one namespace.
        report: also write the report JSON to this path.
        duckdb: memory limit, spill directory and threads for the analysis.
    """
    run_dir = snapshot_for_run("check", snapshot, source, out)
    digests = find_inconsistencies(run_dir, namespace, duckdb)
    spec = manifest_storage(run_dir, source)
    parts_dir = str(Path(run_dir) / "_parts")
    futures = [
        read_manifests.submit(spec, digests[i : i + MANIFEST_BATCH], parts_dir, n)
        for n, i in enumerate(range(0, len(digests), MANIFEST_BATCH))
    ]
    parts = [future.result() for future in futures]
    verify_lost_manifests(run_dir, parts, namespace, duckdb)
    shutil.rmtree(parts_dir, ignore_errors=True)
    published = publish_check_report(run_dir, report)
    return {"run_dir": run_dir, **published}

"""Publish a finished run into the warehouse (a task, retried unless the warehouse refused)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from regprune.retries import retry_unless
from regprune.snapshots import SnapshotError
from regprune.warehouse import WarehouseError, publish_run


@task(
    name="publish-to-warehouse",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless(WarehouseError, SnapshotError),
)
def publish_to_warehouse(
    run_dir: str, warehouse: str, command: str, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Keep this run's snapshot and results in the warehouse (a retry publishes a new run;
    a half-written one has no ``runs`` row and is never read)."""
    from prefect.runtime import flow_run

    published = publish_run(run_dir, warehouse, command, settings, flow_run_id=flow_run.id)
    get_run_logger().info(
        "published %s tables to %s as snapshot_date=%s/run=%s",
        published["tables"],
        published["warehouse"],
        published["snapshot_date"],
        published["run"],
    )
    return published

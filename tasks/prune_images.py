"""Prefect tasks of ``prune-images``: plan in SQL, execute (regprune/images_execute.py), undo,
publish the report (JSON, terminal, artifacts; the report itself: regprune/images_report.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from regprune.images_cluster import cluster_for
from regprune.images_execute import execute_images_plan
from regprune.images_plan import PruneImagesSettings, plan_prune_images
from regprune.images_report import summary_text, view_records, write_images_report
from regprune.images_undo import ImagesUndone, undo_images
from regprune.metadata import MetadataSource
from regprune.models import DuckDBSettings


@task(name="plan-prune-images")
def plan_images(
    run_dir: str, settings: PruneImagesSettings, now: datetime, duckdb: DuckDBSettings | None
) -> dict[str, Any]:
    """sql/images/images_*.sql over the snapshot: writes images_tag_revisions and images_plan."""
    return plan_prune_images(run_dir, run_dir, settings, now, duckdb)


@task(name="execute-prune-images")
def execute_images(
    run_dir: str, metadata: MetadataSource, confirm: bool, listed: bool = False
) -> dict[str, int]:
    """Tag revisions out of the streams' status (conflicts retried), then the Images deleted
    (each re-checked against the streams as they are now, each saved first in the run's
    journal): regprune/images_execute.py. Without ``confirm`` the same walk over a cluster
    that records instead of changing (regprune/images_cluster.py cluster_for); ``listed``:
    ``run_dir``'s tables are this run's own listing, which a dry run reads instead."""
    return execute_images_plan(run_dir, cluster_for(metadata, confirm, run_dir if listed else None))


@task(name="undo-prune-images")
def undo_prune_images(run_dir: str, metadata: MetadataSource, confirm: bool = True) -> ImagesUndone:
    """The Images the prune-images run of ``run_dir`` deleted created again, the tag history
    items it removed put back (regprune/images_undo.py); without ``confirm`` only recorded."""
    return undo_images(run_dir, cluster_for(metadata, confirm))


@task(name="publish-prune-images-report")
def publish_images_report(
    run_dir: str,
    mode: str,
    settings: dict[str, Any],
    summary: dict[str, Any],
    problems: list[str],
    report_path: str | None,
) -> dict[str, Any]:
    """Write the JSON report, log the summary, publish keyed artifacts."""
    if report_path:
        write_images_report(Path(report_path), run_dir, mode, settings, summary, problems)
    text = summary_text(mode, summary, problems)
    get_run_logger().info("%s", text)
    create_markdown_artifact(
        key="regprune-prune-images-summary",
        markdown=f"# prune-images ({mode})\n\nResults in `{run_dir}`\n\n"
        + "\n".join(f"- {line}" for line in text.splitlines()),
        description="Tag revisions and Images prune-images removes, and why the rest is kept",
    )
    create_table_artifact(
        key="regprune-prune-images-streams",
        table=view_records(
            Path(run_dir) / "images_tag_revisions.parquet",
            "SELECT namespace, name, count(*) AS removed FROM t WHERE action = 'remove' "
            "GROUP BY ALL ORDER BY removed DESC, namespace, name LIMIT 20",
        )
        if mode != "refused"
        else [],
        description="Streams with the most tag revisions removed",
    )
    return {"text": text}

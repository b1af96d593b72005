"""Prefect tasks of ``prune-images``: plan in SQL, report (JSON, terminal, artifacts)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from regprune.images_plan import PruneImagesSettings, plan_prune_images
from regprune.models import DuckDBSettings
from regprune.tables import sql_literal

INVALID_SHOWN = 20
"""Invalid references named in a refusal's message (all are in the report and the table)."""


@task(name="plan-prune-images")
def plan_images(
    run_dir: str, settings: PruneImagesSettings, now: datetime, duckdb: DuckDBSettings | None
) -> dict[str, Any]:
    """sql/images_*.sql over the snapshot: writes images_tag_revisions and images_plan."""
    return plan_prune_images(run_dir, run_dir, settings, now, duckdb)


def _records(path: Path, query: str) -> list[dict[str, Any]]:
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({sql_literal(path)})")
        cursor = con.execute(query)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def invalid_references(run_dir: str | Path) -> list[dict[str, Any]]:
    """Workload references that do not parse (what ``--ignore-invalid-refs`` skips)."""
    return _records(
        Path(run_dir) / "workload_references.parquet",
        "SELECT kind, namespace, name, container, field, reference, problem FROM t "
        "WHERE problem IS NOT NULL ORDER BY namespace, kind, name, field, container",
    )


def images_report(
    run_dir: str | Path,
    mode: str,
    settings: dict[str, Any],
    summary: dict[str, Any],
    problems: list[str],
) -> dict[str, Any]:
    """The ``--report`` JSON: removed tag revisions and deleted Images, each with its reason
    (what is kept, and why, is in images_tag_revisions/images_plan.parquet)."""
    run = Path(run_dir)
    refused = mode == "refused"
    revisions = (
        []
        if refused
        else _records(
            run / "images_tag_revisions.parquet",
            "SELECT namespace, name, tag, position, image, reason FROM t WHERE action = 'remove' "
            "ORDER BY namespace, name, tag, position",
        )
    )
    images = (
        []
        if refused
        else _records(
            run / "images_plan.parquet",
            "SELECT image, reason FROM t WHERE action = 'delete' ORDER BY image",
        )
    )
    report = {
        "mode": mode,
        "settings": settings,
        "summary": summary,
        "tag_revisions": revisions,
        "images": images,
    }
    if problems:
        report["problems"] = problems
        report["invalid_references"] = invalid_references(run)
    return report


def summary_text(mode: str, summary: dict[str, Any], problems: list[str]) -> str:
    """oc's ``Summary:`` line, then what is kept and why."""
    if mode == "refused":
        return "Refused: " + "; ".join(problems) + " - no changes made"
    verb = "deleted" if mode == "delete" else "would delete"
    parts = [
        f"{verb} {summary['images_deleted']} image object(s)",
        f"{verb} {summary['revisions_removed']} image stream tag item(s)",
        f"{'updated' if mode == 'delete' else 'would update'} "
        f"{summary['streams_updated']} image stream(s)",
    ]
    lines = ["Summary: " + ", ".join(parts)]
    kept_revisions = summary.get("revisions_kept_by_reason") or {}
    kept_images = summary.get("images_kept_by_reason") or {}
    if kept_revisions:
        lines.append(
            "Kept tag revisions: " + ", ".join(f"{k} {v}" for k, v in kept_revisions.items())
        )
    if kept_images:
        lines.append("Kept images: " + ", ".join(f"{k} {v}" for k, v in kept_images.items()))
    return "\n".join(lines)


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
    report = images_report(run_dir, mode, settings, summary, problems)
    if report_path:
        Path(report_path).write_text(json.dumps(report, indent=2, default=str) + "\n")
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
        table=_records(
            Path(run_dir) / "images_tag_revisions.parquet",
            "SELECT namespace, name, count(*) AS removed FROM t WHERE action = 'remove' "
            "GROUP BY ALL ORDER BY removed DESC, namespace, name LIMIT 20",
        )
        if mode != "refused"
        else [],
        description="Streams with the most tag revisions removed",
    )
    return {"text": text}

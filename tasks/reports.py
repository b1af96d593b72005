"""Prefect tasks that publish what a person reads: the report JSON, the terminal summary and
the Prefect artifacts (the texts and the JSON: regprune/reports.py).

A prune's summary is gathered here: it reads the run's quarantine record (regprune/quarantine.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from regprune.reports import (
    check_findings_count,
    check_report,
    check_text,
    execution_outcome,
    parquet_records,
    prune_report,
    prune_summary_text,
    with_anomalies,
)
from regprune.units import format_bytes

TOP_NAMESPACES = 10


def prune_summary(run_dir: str | Path, mode: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Counts, bytes and top namespaces of a prune (and its outcome after executing): what
    the terminal, the artifacts and the report JSON share, without the object lists. The
    bytes freed are the same sum in both modes: blobs and uploads this run removed from the
    registry's tree (a dry run: would remove)."""
    run = Path(run_dir)
    summary: dict[str, Any] = {}
    for row in parquet_records(run / "plan_summary.parquet", "category, action, count, size"):
        entry = summary.setdefault(row["category"], {"delete": 0, "bytes": 0, "kept_young": 0})
        if row["action"] == "delete":
            entry["delete"], entry["bytes"] = row["count"], row["size"]
        else:
            entry["kept_young"] = row["count"]
    summary["bytes_freed"] = summary["blobs"]["bytes"] + summary["uploads"]["bytes"]
    summary["namespaces"] = parquet_records(
        run / "plan_namespaces.parquet", "*", order="size DESC, namespace NULLS LAST"
    )[:TOP_NAMESPACES]
    executed = execution_outcome(run) if (run / "actions.parquet").exists() else None
    if executed:  # a dry run executes too (its outcome: would-quarantine): the same shape
        for key in ("failed", "skipped", "gone", "restored", "files"):
            summary[key] = sum(e[key] for e in executed.values())
        summary["bytes_freed"] = sum(executed[c]["bytes"] for c in FREEING)
    quarantine = quarantine_outcome(run)
    if quarantine:
        summary["quarantine"] = quarantine
    if settings.get("projected_from"):
        summary["projected_from"] = settings["projected_from"]
    return {
        "executed": executed,
        "mode": mode,
        "settings": settings,
        "summary": summary,
        "run_dir": str(run_dir),
    }


FREEING = ("blobs", "uploads")
"""The categories whose bytes a prune frees (links and repositories are counted only)."""


def quarantine_outcome(run_dir: Path) -> dict[str, Any] | None:
    """The run's quarantine (quarantine.json) and what its re-check did to every quarantine
    (quarantine_log.parquet): keys moved back, purged, per quarantine."""
    from regprune.quarantine import QUARANTINE_LOG, RunQuarantine

    own = RunQuarantine.read(run_dir)
    if own is None:
        return None
    found: dict[str, Any] = {"id": own.id, "storage": own.storage, "others": {}}
    log = run_dir / f"{QUARANTINE_LOG}.parquet"
    if log.exists():
        rows = parquet_records(
            log,
            "quarantine, status, count(*) AS count, coalesce(sum(size), 0) AS bytes",
            where="status NOT IN ('restoring', 'purging') GROUP BY quarantine, status",
            order="quarantine, status",
        )
        for row in rows:
            entry = found["others"].setdefault(row["quarantine"], {})
            entry[row["status"]] = {"count": row["count"], "bytes": row["bytes"]}
    found["own"] = found["others"].pop(own.id, {})
    return found


def _namespace_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "namespace": row["namespace"] or "(not linked)",
            "reclaimable": format_bytes(row["size"]),
            "bytes": row["size"],
            "blobs": row["blobs"],
            "manifest_links": row["manifest_links"],
            "repositories": row["repositories"],
        }
        for row in report["summary"]["namespaces"]
    ]


@task(name="publish-prune-report")
def publish_prune_report(
    run_dir: str, mode: str, settings: dict[str, Any], report_path: str | None
) -> dict[str, Any]:
    """Write the JSON report, print the summary, publish keyed artifacts (the Prefect UI
    shows their history run after run)."""
    report = prune_summary(run_dir, mode, settings)
    if report_path:
        full = prune_report(report, run_dir)
        Path(report_path).write_text(json.dumps(full, indent=2, default=str) + "\n")
    text = with_anomalies(prune_summary_text(report), run_dir)
    projected = "projected_from" in report["summary"]
    get_run_logger().info("%s", text)
    create_markdown_artifact(
        key="regprune-prune-summary",
        markdown=f"# Hard prune ({mode}{', projected' if projected else ''})\n\n"
        f"Results in `{run_dir}`\n\n" + "\n".join(f"- {line}" for line in text.splitlines()),
        description="What the hard prune deletes and frees",
    )
    create_table_artifact(
        key="regprune-top-namespaces",
        table=_namespace_rows(report),
        description="Top namespaces by reclaimable bytes",
    )
    return {"summary": report["summary"], "text": text}


@task(name="publish-check-report")
def publish_check_report(run_dir: str, report_path: str | None) -> dict[str, Any]:
    report = check_report(run_dir)
    if report_path:
        Path(report_path).write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = with_anomalies(check_text(report), run_dir)
    get_run_logger().info("%s", text)
    counts = {key: len(rows) for key, rows in report.items()}
    create_markdown_artifact(
        key="regprune-check-summary",
        markdown=f"# Consistency check\n\nResults in `{run_dir}`\n\n"
        + "\n".join(f"- {key.replace('_', ' ')}: {n}" for key, n in counts.items()),
        description="Broken references and lost-found candidates",
    )
    return {"counts": counts, "findings": check_findings_count(report), "text": text}

"""Prefect task that writes the run report a person opens, ``report.html`` in the run folder
(read and drawn by regprune/html_report.py), and links it from the Prefect run."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact

from regprune.html_report import REPORT_FILE, read_report_data, render_report
from regprune.models import DuckDBSettings


@task(name="write-html-report")
def write_html_report(
    run_dir: str,
    command: str,
    warehouse: str | None = None,
    settings: DuckDBSettings | None = None,
) -> str:
    """Write ``report.html`` into the run folder and link it from the Prefect run."""
    path = Path(run_dir) / REPORT_FILE
    path.write_text(render_report(read_report_data(run_dir, command, warehouse, settings)))
    create_link_artifact(
        key=f"regprune-{command}-report",
        link=path.resolve().as_uri(),
        link_text=f"{REPORT_FILE} of {Path(run_dir).name}",
        description="The run's HTML report: storage by namespace, reclaimable vs kept, trend",
    )
    return str(path)

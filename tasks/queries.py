"""Run the ``sql/`` queries over a snapshot folder with DuckDB.

Every table of the snapshot becomes a view; every query file is a model that becomes a view
named after the file, so later queries read earlier ones by name (dbt's habit). Results
are written next to the snapshot as Parquet.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
from pydantic import BaseModel, ConfigDict, Field

from regprune.tasks.tables import SNAPSHOT_TABLES, sql_literal

PLAN_INTERMEDIATES = ("unreferenced_blobs", "unreferenced_links")
"""Models the plan writes once (to a scratch folder, not into DuckDB's memory) because several
outputs read them: recomputing them would cost a pass over every blob or link each time."""
PLAN_MODELS = (
    "list_children_without_images",
    *PLAN_INTERMEDIATES,
    "stream_history",
    "repository_activity",
    "plan_repositories",
    "plan_manifest_links",
    "plan_blobs",
    "plan_layer_links",
    "plan_uploads",
    "plan_summary",
    "plan_namespaces",
)
UNKNOWN_MANIFEST_MODELS = ("keep_set", "list_children_without_images", "plan_unknown_manifests")
EXECUTION_MODELS = ("recheck_protected", "prune_actions", "execution_queue")
PLAN_OUTPUTS = tuple(m for m in PLAN_MODELS if m.startswith("plan_"))
CHECK_MODELS = (
    "stream_history",
    "image_missing_blobs",
    "check_broken_imagestream_tags",
    "check_broken_images",
    "check_lost_candidates",
)
CHECK_FINDINGS = (
    "check_broken_imagestream_tags",
    "check_broken_images",
    "check_lost_candidates",
)
LOST_FOUND_MODELS = ("check_invalid_manifests", "check_lost_found")
CHECK_OUTPUTS = (
    "check_broken_imagestream_tags",
    "check_broken_images",
    "check_lost_found",
    "check_invalid_manifests",
)


def fetch_records(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The rows of an executed DuckDB query as dicts keyed by column name."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def query_text(name: str) -> str:
    """The text of ``sql/<name>.sql`` (shipped inside the installed package)."""
    return files("regprune.sql").joinpath(f"{name}.sql").read_text()


class DuckDBSettings(BaseModel):
    """Resource limits so analysis memory does not grow with the registry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_limit: str | None = Field(
        None,
        pattern=r"^\s*\d+(\.\d+)?\s*([KMGTkmgt]([Ii][Bb]|[Bb])?|[Bb]|%)\s*$",
        description="DuckDB's memory cap, e.g. 2GB, 512MiB or 50% (of the machine); past it "
        "DuckDB spills to temp_directory. Default: 80% of the machine's memory.",
    )
    temp_directory: str | None = Field(
        None,
        min_length=1,
        description="Folder for DuckDB's spill files (created when needed). Default: .tmp in "
        "the working directory.",
    )
    threads: int | None = Field(
        None, ge=1, le=1024, description="DuckDB threads. Default: one per CPU core."
    )


class SnapshotDatabase:
    """A DuckDB connection over one snapshot folder."""

    def __init__(
        self,
        snapshot_dir: str | os.PathLike[str],
        variables: dict[str, Any],
        settings: DuckDBSettings | None = None,
        extra_tables: dict[str, Path] | None = None,
    ):
        self.snapshot_dir = Path(snapshot_dir)
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        settings = settings or DuckDBSettings()
        if settings.memory_limit:
            self.con.execute(f"SET memory_limit = {sql_literal(settings.memory_limit)}")
        if settings.temp_directory:
            self.con.execute(f"SET temp_directory = {sql_literal(settings.temp_directory)}")
        if settings.threads:
            self.con.execute(f"SET threads = {int(settings.threads)}")
        for table in SNAPSHOT_TABLES:
            self.attach(table, self.snapshot_dir / f"{table}.parquet")
        for table, path in (extra_tables or {}).items():
            self.attach(table, path)
        for name, value in variables.items():
            self.con.execute(f"SET VARIABLE {name} = ?", [value])
        self.con.execute(query_text("macros"))

    def attach(self, table: str, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"snapshot table {path} is missing: is this a snapshot folder?")
        self.con.execute(
            f'CREATE OR REPLACE VIEW "{table}" AS SELECT * FROM read_parquet({sql_literal(path)})'
        )

    def define(self, *models: str) -> None:
        for model in models:
            body = query_text(model).strip().rstrip(";")
            self.con.execute(f'CREATE OR REPLACE TEMP VIEW "{model}" AS {body}')

    def write(self, model: str, dest: Path) -> int:
        """Materialize a model as Parquet and point its view at the file, so the models
        that read it later do not compute it again; returns the row count."""
        query = f'COPY (SELECT * FROM "{model}") TO {sql_literal(dest)} (FORMAT parquet)'
        result = self.con.execute(query).fetchone()
        self.con.execute(
            f'CREATE OR REPLACE TEMP VIEW "{model}" AS '
            f"SELECT * FROM read_parquet({sql_literal(dest)})"
        )
        return int(result[0]) if result else 0

    def records(self, query: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        return fetch_records(self.con.execute(query, params or []))

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> SnapshotDatabase:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def plan_variables(
    snapshot_started_at: datetime,
    keep_younger_than: timedelta,
    upload_max_age: timedelta,
) -> dict[str, Any]:
    return {
        "young_after": snapshot_started_at - keep_younger_than,
        "uploads_stale_before": snapshot_started_at - upload_max_age,
        "namespace": None,
    }

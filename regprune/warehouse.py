"""The warehouse: every run's tables kept side by side for data teams, never overwritten.

This is the only module that knows the warehouse layout::

    <URL>/<table>/snapshot_date=YYYY-MM-DD/run=<run id>/<table>.parquet

Table first, then Hive partitions: one glob per table, ``<URL>/<table>/*/*/*.parquet`` read
with ``hive_partitioning``, is that table over every run with ``snapshot_date`` and ``run``
columns, and DuckDB lists only that table's folder. Partition first would make every table's
glob walk every run's folder and filter on the file name. ``snapshot_date`` is the UTC date
the snapshot started (not the publishing date), so re-analysing an old snapshot files under
its own day. A run id is ``<snapshot start, UTC>-<random hex>``: runs sort by snapshot time,
two runs never share an id, and an id that exists is refused rather than overwritten.

``runs`` (one row per published run, from ``snapshot.json``) is written last: a run without
its ``runs`` row is incomplete (a publish that died half-way) and :class:`WarehouseCatalog`
leaves it out.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from regprune.snapshots import read_snapshot_summary
from regprune.tables import TIMESTAMP, sql_literal

RUNS_TABLE = "runs"
RUNS_SCHEMA = pa.schema(
    [
        ("command", pa.string()),
        ("flow_run_id", pa.string()),
        ("published_at", TIMESTAMP),
        ("version", pa.string()),
        ("storage", pa.string()),
        ("metadata", pa.string()),
        ("metadata_started_at", TIMESTAMP),
        ("storage_started_at", TIMESTAMP),
        ("finished_at", TIMESTAMP),
        ("duration_seconds", pa.float64()),
        ("settings", pa.string()),
        ("snapshot_json", pa.string()),
        ("tables", pa.list_(pa.string())),
    ]
)
_TABLE_NAME = re.compile(r"[a-z][a-z0-9_]*")
_RUN_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]*")
_PARTITION_FILE = re.compile(
    r"(?P<table>[a-z][a-z0-9_]*)/snapshot_date=(?P<date>\d{4}-\d{2}-\d{2})"
    r"/run=(?P<run>[^/]+)/(?P=table)\.parquet"
)
HIVE_TYPES = "{'snapshot_date': DATE, 'run': VARCHAR}"


class WarehouseError(ValueError):
    """The warehouse URL cannot be used, or a run would overwrite one that exists."""


@dataclass(frozen=True)
class Warehouse:
    """A warehouse location: a local folder or ``s3://bucket[/prefix]`` (credentials from the
    AWS_* environment, as for the registry storage)."""

    url: str

    def __post_init__(self) -> None:
        parsed = urlparse(self.url)
        if parsed.username or parsed.password:  # checked first: the URL is not echoed then
            raise WarehouseError(
                "warehouse URL holds credentials: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY in the environment instead"
            )
        if not self.url.strip():
            raise WarehouseError("warehouse URL is empty")
        if parsed.scheme not in ("", "file", "s3"):
            raise WarehouseError(
                f"warehouse {self.url!r}: use a local folder, file:///PATH or s3://BUCKET/PREFIX"
            )
        if parsed.scheme == "s3" and not parsed.netloc:
            raise WarehouseError(f"warehouse {self.url!r} names no bucket")

    @property
    def is_local(self) -> bool:
        return urlparse(self.url).scheme in ("", "file")

    @property
    def root(self) -> str:
        """The location without a trailing slash: an absolute path, or ``s3://bucket/prefix``."""
        if not self.is_local:
            return self.url.rstrip("/")
        path = urlparse(self.url).path if self.url.startswith("file:") else self.url
        return os.path.abspath(path)

    def filesystem(self) -> fsspec.AbstractFileSystem:
        if self.is_local:
            return fsspec.filesystem("file")
        return fsspec.filesystem("s3", use_listings_cache=False, skip_instance_cache=True)

    def table_path(self, table: str, snapshot_date: date, run: str) -> str:
        partition = f"snapshot_date={snapshot_date.isoformat()}/run={run}"
        return f"{self.root}/{table}/{partition}/{table}.parquet"


def new_run_id(snapshot_started_at: datetime) -> str:
    """``20260105T030001Z-3f9a1c``: sorts by snapshot time, unique by its random tail."""
    stamp = snapshot_started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def run_tables(run_dir: str | Path) -> dict[str, Path]:
    """Every table of a run folder: the snapshot tables and whatever results sit next to them."""
    found = {
        path.stem: path
        for path in sorted(Path(run_dir).glob("*.parquet"))
        if _TABLE_NAME.fullmatch(path.stem) and path.stem != RUNS_TABLE
    }
    if not found:
        raise WarehouseError(f"{run_dir} holds no tables to publish")
    return found


def _timestamp(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def runs_row(
    summary: dict[str, Any],
    command: str,
    settings: dict[str, Any] | None,
    tables: list[str],
    flow_run_id: str | None,
) -> pa.Table:
    """The ``runs`` table of one run: what was snapshotted, when, by which command."""
    row = {
        "command": command,
        "flow_run_id": flow_run_id,
        "published_at": datetime.now(UTC),
        "version": summary.get("version"),
        "storage": summary.get("storage"),
        "metadata": summary.get("metadata"),
        "metadata_started_at": _timestamp(summary.get("metadata_started_at")),
        "storage_started_at": _timestamp(summary.get("storage_started_at")),
        "finished_at": _timestamp(summary.get("finished_at")),
        "duration_seconds": summary.get("duration_seconds"),
        "settings": json.dumps(settings or {}, sort_keys=True),
        "snapshot_json": json.dumps(summary, sort_keys=True),
        "tables": tables,
    }
    return pa.Table.from_pylist([row], schema=RUNS_SCHEMA)


class _Writer:
    """Put files into the warehouse without ever replacing one."""

    def __init__(self, warehouse: Warehouse):
        self.warehouse = warehouse
        self.fs = warehouse.filesystem()

    def exists(self, dest: str) -> bool:
        return bool(self.fs.exists(dest))

    def put(self, source: Path, dest: str) -> None:
        if not self.warehouse.is_local:
            self.fs.put_file(str(source), dest)  # an S3 PUT appears whole or not at all
            return
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
        shutil.copyfile(source, partial)
        try:
            os.link(partial, target)  # unlike rename, a link never replaces an existing file
        except FileExistsError as exc:
            raise WarehouseError(f"{dest} exists: the warehouse never overwrites a run") from exc
        finally:
            partial.unlink()


def publish_run(
    run_dir: str | Path,
    url: str,
    command: str,
    settings: dict[str, Any] | None = None,
    run_id: str | None = None,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Copy a run folder's tables into the warehouse under a new run; ``runs`` goes last."""
    warehouse = Warehouse(url)
    summary = read_snapshot_summary(run_dir)
    started = datetime.fromisoformat(summary["metadata_started_at"])
    snapshot_date = started.astimezone(UTC).date()
    run = run_id or new_run_id(started)
    if not _RUN_ID.fullmatch(run):
        raise WarehouseError(f"run id {run!r}: letters, digits, '.', '_' and '-' only")
    tables = run_tables(run_dir)
    writer = _Writer(warehouse)
    destinations = {t: warehouse.table_path(t, snapshot_date, run) for t in (*tables, RUNS_TABLE)}
    taken = [dest for dest in destinations.values() if writer.exists(dest)]
    if taken:
        raise WarehouseError(
            f"run {run} already exists in the warehouse ({taken[0]}): runs are never overwritten"
        )
    for table, source in tables.items():
        writer.put(source, destinations[table])
    with tempfile.TemporaryDirectory(prefix="regprune-runs-") as scratch:
        runs_file = Path(scratch) / f"{RUNS_TABLE}.parquet"
        row = runs_row(summary, command, settings, sorted(tables), flow_run_id)
        pq.write_table(row, runs_file, compression="zstd")
        writer.put(runs_file, destinations[RUNS_TABLE])
    return {
        "warehouse": warehouse.root,
        "snapshot_date": snapshot_date.isoformat(),
        "run": run,
        "tables": len(tables) + 1,
    }


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedFile:
    table: str
    snapshot_date: str
    run: str
    path: str


class WarehouseCatalog:
    """What the warehouse holds: the files of every complete run, listed once."""

    def __init__(self, warehouse: Warehouse):
        self.warehouse = warehouse
        self.fs = warehouse.filesystem()
        if not self.fs.isdir(warehouse.root):
            raise WarehouseError(f"no warehouse at {warehouse.root}")
        files = [self._parse(p) for p in self.fs.glob(f"{warehouse.root}/*/*/*/*.parquet")]
        published = [f for f in files if f is not None]
        complete = {(f.snapshot_date, f.run) for f in published if f.table == RUNS_TABLE}
        self.files = [f for f in published if (f.snapshot_date, f.run) in complete]

    def _parse(self, path: str) -> PublishedFile | None:
        """fsspec lists S3 keys without ``s3://``; put it back for DuckDB."""
        root = self.warehouse.root.removeprefix("s3://")
        match = _PARTITION_FILE.fullmatch(path.removeprefix(root).lstrip("/"))
        if match is None:
            return None
        full = path if self.warehouse.is_local else f"s3://{path}"
        return PublishedFile(match["table"], match["date"], match["run"], full)

    def tables(self) -> dict[str, list[PublishedFile]]:
        by_table: dict[str, list[PublishedFile]] = {}
        for published in sorted(self.files, key=lambda f: (f.table, f.snapshot_date, f.run)):
            by_table.setdefault(published.table, []).append(published)
        return by_table


def connect_warehouse(url: str, con: duckdb.DuckDBPyConnection | None = None) -> list[str]:
    """Views over every complete run: ``<table>`` (all runs, with ``snapshot_date`` and ``run``
    columns); ``latest.<table>``, the newest run alone; and ``latest_<command>.<table>``, the
    newest run of that command (``latest_prune.plan_namespaces``). A view of one run never
    mixes runs: a table that run lacks (``plan_*`` of a check) is empty. Returns the names."""
    warehouse = Warehouse(url)
    con = con if con is not None else duckdb.connect()
    if not warehouse.is_local:
        con.register_filesystem(warehouse.filesystem())  # httpfs is not needed (nor fetched)
    catalog = WarehouseCatalog(warehouse)
    tables = catalog.tables()
    names = []
    for table, published in tables.items():
        con.execute(f'CREATE OR REPLACE VIEW "{table}" AS {_select_runs(published)}')
        names.append(table)
    if not names:
        return names
    newest = {"latest": max((f.snapshot_date, f.run) for f in catalog.files)}
    if RUNS_TABLE in tables:
        for command, date, run in con.execute(
            f'SELECT command, snapshot_date::VARCHAR, run FROM "{RUNS_TABLE}" QUALIFY '
            "row_number() OVER (PARTITION BY command ORDER BY snapshot_date DESC, run DESC) = 1"
        ).fetchall():
            if command and re.fullmatch(r"[a-z]+", command):
                newest[f"latest_{command}"] = (date, run)
    for schema, key in newest.items():
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for table, published in tables.items():
            of_run = [f for f in published if (f.snapshot_date, f.run) == key]
            select = _select_runs(of_run or published[-1:]) + ("" if of_run else " LIMIT 0")
            con.execute(f'CREATE OR REPLACE VIEW {schema}."{table}" AS {select}')
    return names


def _select_runs(published: list[PublishedFile]) -> str:
    """The runs' files with their partition columns first; columns a run lacks (an older
    version) read as NULL."""
    files = "[" + ", ".join(sql_literal(f.path) for f in published) + "]"
    return (
        "SELECT snapshot_date, run, * EXCLUDE (snapshot_date, run) "
        f"FROM read_parquet({files}, hive_partitioning = true, hive_types = {HIVE_TYPES}, "
        "union_by_name = true)"
    )


def connect_snapshot(run_dir: str, con: duckdb.DuckDBPyConnection | None = None) -> list[str]:
    """Views over one run folder: ``<table>`` and, so warehouse queries on ``latest.`` work on
    a single snapshot too, ``latest.<table>``. Returns the names."""
    con = con if con is not None else duckdb.connect()
    folder = Path(run_dir)
    if not folder.is_dir():
        raise WarehouseError(f"no snapshot folder at {run_dir}")
    tables = run_tables(folder)
    con.execute("CREATE SCHEMA IF NOT EXISTS latest")
    for table, path in tables.items():
        for view in (f'"{table}"', f'latest."{table}"'):
            con.execute(
                f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet({sql_literal(path)})"
            )
    return list(tables)

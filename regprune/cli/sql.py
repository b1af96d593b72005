"""``regprune sql``: DuckDB over the warehouse (every run) or over one snapshot folder.

Each table is a view: over a warehouse ``<table>`` spans every complete run with its
``snapshot_date`` and ``run`` columns, ``latest.<table>`` is the newest run alone (empty
where that run lacks the table) and ``latest_<command>.<table>`` the newest run of a command;
over a snapshot folder ``<table>`` and ``latest.<table>`` are that folder's table. A query on
``latest.`` views therefore runs unchanged on either.

By default a query reads the snapshot or the warehouse and nothing else: DuckDB's external
access is limited to that folder (``allowed_directories``, then ``enable_external_access``
off and the configuration locked), no extension is installed or loaded, and only statements
that read (``SELECT``, ``EXPLAIN`` of one) run, so no query writes a file, changes a
snapshot a later ``prune --snapshot`` trusts, or reads ``/etc/passwd``. ``--unrestricted``
gives the whole of DuckDB (docs/limits.md).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from regprune.cli.common import EXIT_FAILURE, EXIT_OK, UsageError

if TYPE_CHECKING:  # DuckDB is imported when a query runs: `regprune --help` stays quick
    import duckdb

FORMATS = ("table", "csv", "json", "parquet")
READING = {"SELECT"}
"""Statement types a restricted query may run (``EXPLAIN`` of one of them too)."""
_EXPLAIN = re.compile(r"\s*explain(\s+analy[sz]e)?\s+(?P<rest>.*)", re.IGNORECASE | re.DOTALL)
ONLY_READS = "regprune sql reads the snapshot or warehouse only"
UNRESTRICTED_HINT = "--unrestricted: the whole of DuckDB, any file, any statement"
PROMPT, CONTINUATION = "regprune> ", "     ...> "


def warehouse_url(text: str) -> str:
    """argparse type for ``--warehouse``: a bad URL is a usage error before anything runs."""
    from regprune.warehouse import Warehouse, WarehouseError

    try:
        Warehouse(text)
    except WarehouseError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def add_sql_parser(commands: Any) -> None:
    """Register ``regprune sql`` on the command line's subparsers."""
    sql = commands.add_parser(
        "sql",
        help="query snapshots with DuckDB: a view per table over the warehouse or a snapshot",
        description="Open DuckDB with one view per table and run QUERY (or, without QUERY, "
        "an interactive prompt; the list of views when input is not a terminal). Over a "
        "warehouse, <table> spans every run (columns snapshot_date, run) and "
        "latest.<table> is the newest run alone (latest_prune.<table>, latest_check.<table>: "
        "the newest run of that command).",
    )
    sql.add_argument("query", nargs="?", metavar="QUERY", help="SQL to run (DuckDB dialect)")
    source = sql.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--warehouse",
        metavar="URL",
        type=warehouse_url,
        help="warehouse folder or s3://BUCKET/PREFIX (AWS_* environment for credentials)",
    )
    source.add_argument("--snapshot", metavar="DIR", help="one snapshot (run) folder")
    sql.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default table)"
    )
    sql.add_argument("--output", metavar="FILE", help="write the result here (needed for parquet)")
    sql.add_argument(
        "--unrestricted",
        action="store_true",
        help="the whole of DuckDB: read and write any file, install and load extensions, run "
        "any statement (default: read the snapshot or warehouse and nothing else, SELECT "
        "only; see docs/limits.md)",
    )
    sql.set_defaults(run=run_sql)


class RefusedQuery(ValueError):
    """A statement a restricted ``regprune sql`` does not run; the message says why."""


def check_reads_only(query: str) -> None:
    """Refuse any statement but one that reads (COPY, ATTACH, INSTALL, SET, CREATE, ...);
    ``EXPLAIN ANALYZE`` runs what it explains, so that is checked too."""
    import duckdb

    for statement in duckdb.extract_statements(query):
        kind = statement.type.name
        if kind == "EXPLAIN":
            explained = _EXPLAIN.match(statement.query)
            inner = duckdb.extract_statements(explained["rest"]) if explained else []
            if inner and all(i.type.name in READING for i in inner):
                continue
        elif kind in READING:
            continue
        raise RefusedQuery(f"{ONLY_READS}: {kind} statements are refused ({UNRESTRICTED_HINT})")


def restrict(con: duckdb.DuckDBPyConnection, folders: list[str], files: list[str]) -> None:
    """DuckDB may read under ``folders`` and write ``files`` (the --output file) and
    nothing else; no extension installs or loads; the configuration is locked."""
    con.execute("SET allowed_directories = ?", [folders])
    con.execute("SET allowed_paths = ?", [files])
    for setting in (
        "autoinstall_known_extensions",
        "autoload_known_extensions",
        "allow_community_extensions",
        "enable_external_access",
    ):
        con.execute(f"SET {setting} = false")
    con.execute("SET lock_configuration = true")


def source_folder(warehouse: str | None, snapshot: str | None) -> str:
    """The folder a restricted query reads: the snapshot's, or the warehouse's root (a local
    path or s3://BUCKET/PREFIX), with a trailing slash."""
    from regprune.warehouse import Warehouse

    root = Warehouse(warehouse).root if warehouse else os.path.abspath(str(snapshot))
    return root.rstrip("/") + "/"


def _inside(path: str, folder: str) -> bool:
    if "://" in folder:
        return path.startswith(folder)
    return os.path.realpath(path).startswith(os.path.realpath(folder).rstrip("/") + "/")


def run_sql(args: argparse.Namespace) -> int:
    import duckdb

    from regprune.warehouse import WarehouseError

    if args.format == "parquet" and not args.output:
        raise UsageError("--format parquet writes a file: give --output FILE")
    if args.output and not args.query:
        raise UsageError("--output goes with a QUERY")
    folder = source_folder(args.warehouse, args.snapshot)
    if args.output and not args.unrestricted and _inside(args.output, folder):
        raise UsageError(
            f"--output {args.output} is inside {folder}, which the query reads: write the "
            "result elsewhere"
        )
    check = None if args.unrestricted else check_reads_only
    try:
        if args.query and check:
            check(args.query)
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            snapshot = os.path.abspath(args.snapshot) if args.snapshot else None
            views = open_views(con, args.warehouse, snapshot)
            if not args.unrestricted:
                output = [os.path.abspath(args.output)] if args.output else []
                restrict(con, [folder], output)
            if args.query:
                write_result(con, args.query, args.format, args.output, sys.stdout)
            elif sys.stdin.isatty():
                repl(con, views, sys.stdout, check)
            else:
                print_views(con, sys.stdout)
    except BrokenPipeError:
        raise  # the reader left (`| head`): main() stops quietly
    except (WarehouseError, RefusedQuery, duckdb.Error, OSError) as exc:
        print(f"regprune: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _one_line(exc: BaseException) -> str:
    """DuckDB's messages run over lines (a caret under the query): the first says it; a
    refused file access also says how to allow it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "disabled by configuration" in text or "disabled through configuration" in text:
        text += f" ({ONLY_READS}; {UNRESTRICTED_HINT})"
    return text


def open_views(con: duckdb.DuckDBPyConnection, warehouse: str | None, snapshot: str | None) -> int:
    from regprune.warehouse import WarehouseError, connect_snapshot, connect_warehouse

    names = connect_warehouse(warehouse, con) if warehouse else connect_snapshot(str(snapshot), con)
    if not names:
        raise WarehouseError(f"no complete run in the warehouse at {warehouse}")
    return len(names)


def write_result(
    con: duckdb.DuckDBPyConnection, query: str, fmt: str, output: str | None, out: TextIO
) -> None:
    """Run ``query`` (the last statement's result is shown) and write it as ``fmt``."""
    result = con.sql(query)
    if result is None:
        return
    if fmt == "parquet":
        result.write_parquet(str(output))
        return
    rows = result.fetchall()
    text = FORMATTERS[fmt](result.columns, rows)
    if output:
        Path(output).write_text(text)
    else:
        out.write(text)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "NULL" if value is None else str(value)


def format_table(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    """Aligned columns, numbers to the right, every row (no truncation: it is for reading
    and for pipes alike)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float | Decimal) or r[i] is None for r in rows)
        for i in range(len(columns))
    ]

    def line(values: Iterable[str]) -> str:
        return "  ".join(
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    lines = [line(columns), line("-" * w for w in widths), *(line(r) for r in cells)]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


def format_csv(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(["" if v is None else _cell(_json_value(v)) for v in row] for row in rows)
    return buffer.getvalue()


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def format_json(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    """A JSON array of objects, one per row."""
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    return json.dumps(records, indent=1, default=_json_value) + "\n"


FORMATTERS: dict[str, Callable[[list[str], list[tuple[Any, ...]]], str]] = {
    "table": format_table,
    "csv": format_csv,
    "json": format_json,
}


def print_views(con: duckdb.DuckDBPyConnection, out: TextIO) -> None:
    """Every view with its columns."""
    rows = con.execute(
        "SELECT table_schema, table_name, string_agg(column_name, ', ' ORDER BY ordinal_position) "
        "FROM information_schema.columns WHERE table_schema IN ('main', 'latest') "
        "GROUP BY table_schema, table_name ORDER BY table_schema = 'latest', table_name"
    ).fetchall()
    main = [(name, cols) for schema, name, cols in rows if schema == "main"]
    width = max(len(name) for name, _ in main)
    out.write("".join(f"{name.ljust(width)}  {cols}\n" for name, cols in main))
    if any(schema == "latest" for schema, _, _ in rows):
        out.write(
            "(each also as latest.<name>: over a warehouse the newest run alone, and as "
            "latest_<command>.<name>: the newest run of that command)\n"
        )


def repl(
    con: duckdb.DuckDBPyConnection,
    views: int,
    out: TextIO,
    check: Callable[[str], None] | None = None,
) -> None:
    """A small prompt: statements end with ';', '.tables' lists the views, '.quit' leaves;
    ``check`` refuses what a restricted session does not run."""
    import readline  # noqa: F401  (line editing and history for input())

    import duckdb

    out.write(f"regprune sql: {views} views. End statements with ';'. .tables, .quit\n")
    pending: list[str] = []
    while True:
        try:
            line = input(CONTINUATION if pending else PROMPT)
        except EOFError:
            out.write("\n")
            return
        command = line.strip()
        if not pending and command.startswith("."):
            if command in (".quit", ".exit"):
                return
            if command == ".tables":
                print_views(con, out)
            else:
                out.write(f"unknown command {command}: .tables or .quit\n")
            continue
        if command:
            pending.append(line)
        if command.endswith(";"):
            query, pending = "\n".join(pending), []
            try:
                if check:
                    check(query)
                write_result(con, query, "table", None, out)
            except (duckdb.Error, RefusedQuery) as exc:
                out.write(f"Error: {exc}\n")
        out.flush()

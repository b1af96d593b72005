"""``regprune sql``: DuckDB over the warehouse (every run) or over one snapshot folder.

Each table is a view: over a warehouse ``<table>`` spans every complete run with its
``snapshot_date`` and ``run`` columns, ``latest.<table>`` is the newest run alone (empty
where that run lacks the table) and ``latest_<command>.<table>`` the newest run of a command;
over a snapshot folder ``<table>`` and ``latest.<table>`` are that folder's table. A query on
``latest.`` views therefore runs unchanged on either.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # DuckDB is imported when a query runs: `regprune --help` stays quick
    import duckdb

FORMATS = ("table", "csv", "json", "parquet")
PROMPT, CONTINUATION = "regprune> ", "     ...> "
EXIT_OK, EXIT_FAILURE = 0, 1


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
    sql.set_defaults(run=run_sql)


def run_sql(args: argparse.Namespace) -> int:
    import duckdb

    from regprune.cli.main import UsageError  # cli imports this module: import at call time
    from regprune.warehouse import WarehouseError

    if args.format == "parquet" and not args.output:
        raise UsageError("--format parquet writes a file: give --output FILE")
    if args.output and not args.query:
        raise UsageError("--output goes with a QUERY")
    try:
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            views = open_views(con, args.warehouse, args.snapshot)
            if args.query:
                write_result(con, args.query, args.format, args.output, sys.stdout)
            elif sys.stdin.isatty():
                repl(con, views, sys.stdout)
            else:
                print_views(con, sys.stdout)
    except BrokenPipeError:
        raise  # the reader left (`| head`): main() stops quietly
    except (WarehouseError, duckdb.Error, OSError) as exc:
        print(f"regprune: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


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


def repl(con: duckdb.DuckDBPyConnection, views: int, out: TextIO) -> None:
    """A small prompt: statements end with ';', '.tables' lists the views, '.quit' leaves."""
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
                write_result(con, query, "table", None, out)
            except duckdb.Error as exc:
                out.write(f"Error: {exc}\n")
        out.flush()

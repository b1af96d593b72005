"""The reference pages of the documentation, written from what the code holds: the command
line's parsers and the tables' schemas. A test holds ``docs/reference/`` to this output, so
the reference cannot drift from the code.

    python -m regprune.cli.reference docs/reference      # rewrite the pages
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from regprune import tables

WIDTH = "100"
"""argparse wraps help to the terminal's width: a fixed one makes the page reproducible."""


@contextmanager
def _fixed_width() -> Iterator[None]:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_page() -> str:
    """Every command's ``--help``, as the command prints it."""
    from regprune.cli.main import build_parser

    with _fixed_width():
        parser = build_parser()
        parts = [
            "# Command-line reference",
            "",
            "Written by `python -m regprune.cli.reference docs/reference` from the parsers "
            "(`regprune/cli/`); each block is what `--help` prints.",
            "",
            "```text",
            parser.format_help().rstrip(),
            "```",
        ]
        for name, sub in _subcommands(parser).items():
            parts += ["", f"## `regprune {name}`", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(parts) + "\n"


def _type_name(kind: pa.DataType) -> str:
    if pa.types.is_timestamp(kind):
        return "TIMESTAMPTZ" if kind.tz else "TIMESTAMP"
    if pa.types.is_list(kind):
        return f"{_type_name(kind.value_type)}[]"
    return {
        pa.string(): "VARCHAR",
        pa.int64(): "BIGINT",
        pa.int32(): "INTEGER",
        pa.bool_(): "BOOLEAN",
    }.get(kind, str(kind).upper())


def _table_section(name: str) -> list[str]:
    schema = tables.SCHEMAS[name]
    columns = ", ".join(f"`{field.name}` {_type_name(field.type)}" for field in schema)
    key = ", ".join(tables.SORT_KEYS.get(name, ())) or "—"
    return [
        f"### `{name}`",
        "",
        f"One row per {tables.ROWS[name]}.",
        "",
        f"- Columns: {columns}",
        f"- Sorted by: {key}",
        "",
    ]


def tables_page() -> str:
    """The tables' contract: names, columns with their DuckDB types, what a row is."""
    groups = [
        ("Storage", tables.STORAGE_TABLES, "Walked from the registry's storage."),
        ("Cluster", tables.METADATA_TABLES, "Listed from the cluster or read from a dump."),
        (
            "Workloads",
            tables.WORKLOAD_TABLES,
            "Only in a snapshot for `prune-images` (the hard prune's snapshot lists no workloads).",
        ),
        (
            "Execution and manifests",
            tuple(
                name
                for name in tables.SCHEMAS
                if name
                not in (*tables.STORAGE_TABLES, *tables.METADATA_TABLES, *tables.WORKLOAD_TABLES)
            ),
            "Written by runs: the audit trail and the manifests read from storage.",
        ),
    ]
    parts = [
        "# Table reference",
        "",
        "Written by `python -m regprune.cli.reference docs/reference` from "
        "`regprune/tables.py` (`SCHEMAS`, `ROWS`, `SORT_KEYS`). One Parquet file per table; "
        "the names and columns are a public contract. Times are UTC.",
        "",
    ]
    for title, names, what in groups:
        parts += [f"## {title}", "", what, ""]
        for name in names:
            parts += _table_section(name)
    return "\n".join(parts).rstrip() + "\n"


def _model_summary(name: str) -> str:
    """The header's opening sentence(s): what the model returns and its rules."""
    from regprune.models import query_text

    text = []
    for line in query_text(name).splitlines():
        if not line.startswith("--") or line.startswith("-- One row per"):
            break
        text.append(line[2:].strip())
    return " ".join(text).removeprefix(f"{name}:").strip()


def models_page() -> str:
    """Every model of ``sql/``: its header (what it returns, one row per what, its columns,
    the variables it reads) and the relations DuckDB's parser finds it reading."""
    from regprune.models import model_file, model_header, model_names, model_reads

    parts = [
        "# SQL model reference",
        "",
        "Written by `python -m regprune.cli.reference docs/reference` from the headers of "
        "`sql/*/*.sql` (which a test holds every model to) and the relations DuckDB's parser finds "
        "each one reading. A model's result is a view of that name; the outputs a command writes "
        "are Parquet files of the same name next to the snapshot.",
        "",
    ]
    for name in model_names():
        header = model_header(name)
        columns = ", ".join(
            f"`{column}` {kind}" if kind else f"`{column}`" for column, kind in header.columns
        )
        reads = ", ".join(f"`{relation}`" for relation in sorted(model_reads(name))) or "—"
        variables = ", ".join(f"`{v}`" for v in sorted(header.variables)) or "none"
        parts += [
            f"## `{name}`",
            "",
            _model_summary(name),
            "",
            f"- File: `{model_file(name)}`",
            f"- One row per {header.row}.",
            f"- Columns: {columns}",
            f"- Variables: {variables}",
            f"- Reads: {reads}",
            "",
        ]
    return "\n".join(parts).rstrip() + "\n"


PAGES = {"cli.md": cli_page, "tables.md": tables_page, "models.md": models_page}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m regprune.cli.reference DIR", file=sys.stderr)
        return 2
    folder = Path(args[0])
    folder.mkdir(parents=True, exist_ok=True)
    for name, page in PAGES.items():
        (folder / name).write_text(page())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

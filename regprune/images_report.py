"""The report of ``prune-images``: the ``--report`` JSON (its long lists streamed from DuckDB),
the terminal summary in oc's words, the workload references that do not parse. The tasks that
plan, undo and publish: tasks/prune_images.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb

from regprune.tables import sql_literal

INVALID_SHOWN = 20
"""Invalid references named in a refusal's message (all are in the report and the table)."""


def view_records(path: Path, query: str) -> list[dict[str, Any]]:
    """The rows of ``query`` over ``path`` (as view ``t``)."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({sql_literal(path)})")
        cursor = con.execute(query)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def invalid_references(run_dir: str | Path) -> list[dict[str, Any]]:
    """Workload references that do not parse (what ``--ignore-invalid-refs`` skips)."""
    return view_records(
        Path(run_dir) / "workload_references.parquet",
        "SELECT kind, namespace, name, container, field, reference, problem FROM t "
        "WHERE problem IS NOT NULL ORDER BY namespace, kind, name, field, container",
    )


REPORT_BATCH_ROWS = 10_000
"""Rows of the report's lists read from DuckDB and written at a time."""

REVISIONS_REMOVED = (
    "images_tag_revisions.parquet",
    "SELECT namespace, name, tag, position, image, reason FROM t WHERE action = 'remove' "
    "ORDER BY namespace, name, tag, position",
)
IMAGES_DELETED = (
    "images_plan.parquet",
    "SELECT image, reason FROM t WHERE action = 'delete' ORDER BY image",
)


def images_report(
    run_dir: str | Path,
    mode: str,
    settings: dict[str, Any],
    summary: dict[str, Any],
    problems: list[str],
) -> dict[str, Any]:
    """The ``--report`` JSON as one object: removed tag revisions and deleted Images, each
    with its reason (what is kept, and why, is in images_tag_revisions/images_plan.parquet).
    :func:`write_images_report` writes the same JSON without holding the lists."""
    run = Path(run_dir)
    refused = mode == "refused"
    report: dict[str, Any] = {
        "mode": mode,
        "settings": settings,
        "summary": summary,
        "tag_revisions": []
        if refused
        else view_records(run / REVISIONS_REMOVED[0], REVISIONS_REMOVED[1]),
        "images": [] if refused else view_records(run / IMAGES_DELETED[0], IMAGES_DELETED[1]),
    }
    if problems:
        report["problems"] = problems
        report["invalid_references"] = invalid_references(run)
    return report


def write_images_report(
    path: Path,
    run_dir: str | Path,
    mode: str,
    settings: dict[str, Any],
    summary: dict[str, Any],
    problems: list[str],
) -> None:
    """Write :func:`images_report` as ``json.dumps(report, indent=2)`` would, the two long
    lists streamed from DuckDB in batches: a million removals as Python dicts and one JSON
    string were the end-to-end run's peak memory (about 1.2 KiB per removal)."""
    run = Path(run_dir)
    refused = mode == "refused"
    head: dict[str, Any] = {"mode": mode, "settings": settings, "summary": summary}
    tail: dict[str, Any] = {}
    if problems:
        tail = {"problems": problems, "invalid_references": invalid_references(run)}
    lists = {"tag_revisions": REVISIONS_REMOVED, "images": IMAGES_DELETED}
    part = path.with_name(path.name + ".part")  # renamed when complete: no half a report
    try:
        with part.open("w", encoding="utf-8") as out:
            out.write("{")
            for key, value in head.items():
                out.write(f"\n  {json.dumps(key)}: {_nested(value)},")
            for number, (key, (table, query)) in enumerate(lists.items()):
                out.write(f"\n  {json.dumps(key)}: ")
                _write_list(out, [] if refused else _record_batches(run / table, query))
                out.write("," if tail or number < len(lists) - 1 else "")
            for number, (key, value) in enumerate(tail.items()):
                out.write(f"\n  {json.dumps(key)}: {_nested(value)}")
                out.write("," if number < len(tail) - 1 else "")
            out.write("\n}\n")
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(path)


def _nested(value: Any, depth: int = 1) -> str:
    """``value`` as json.dumps(indent=2) writes it ``depth`` levels in."""
    return json.dumps(value, indent=2, default=str).replace("\n", "\n" + "  " * depth)


_SCALAR = json.JSONEncoder(default=str).encode
_STRING = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str, in C


def _record(record: dict[str, Any]) -> str:
    """One row of a list, two levels in: the scalars encoded one by one (json's indenting
    encoder is pure Python and creating one per row doubles the report's time)."""
    if not record or any(isinstance(v, (dict, list, tuple)) for v in record.values()):
        return _nested(record, 2)
    fields = ",\n      ".join(f"{_SCALAR(k)}: {_SCALAR(v)}" for k, v in record.items())
    return "{\n      " + fields + "\n    }"


def _scalars(values: list[Any]) -> list[str]:
    """A column's values as json.dumps writes each (str, int, bool and None by hand, the
    rest through :data:`_SCALAR`)."""
    encoded = []
    for value in values:
        kind = type(value)
        if kind is str:
            encoded.append(_STRING(value))
        elif value is None:
            encoded.append("null")
        elif kind is int:
            encoded.append(int.__repr__(value))
        else:
            encoded.append(_SCALAR(value))
    return encoded


def _records(names: list[str], columns: list[list[Any]]) -> list[str]:
    """:func:`_record` of every row of ``columns`` (scalars only), a column at a time."""
    template = (
        "{\n      "
        + ",\n      ".join(_SCALAR(n).replace("%", "%%") + ": %s" for n in names)
        + "\n    }"
    )
    return [template % row for row in zip(*map(_scalars, columns), strict=True)]


def _write_list(out: Any, batches: Iterable[list[str]]) -> None:
    """``batches``: records already encoded (:func:`_records`)."""
    empty = True
    for batch in batches:
        if not batch:
            continue
        out.write(("[\n    " if empty else ",\n    ") + ",\n    ".join(batch))
        empty = False
    out.write("[]" if empty else "\n  ]")


def _record_batches(path: Path, query: str) -> Iterator[list[str]]:
    """The rows of ``query`` over ``path`` (as view ``t``), REPORT_BATCH_ROWS at a time, each
    encoded as :func:`_record` would: read as Arrow columns (DuckDB's own Python rows, then a
    dict per row, cost twice the time of the whole report)."""
    import pyarrow as pa

    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({sql_literal(path)})")
        reader = con.sql(query).to_arrow_reader(REPORT_BATCH_ROWS)
        names = reader.schema.names
        nested = any(pa.types.is_nested(field.type) for field in reader.schema)
        for batch in reader:
            columns = [column.to_pylist() for column in batch.columns]
            if nested or not names:
                rows = zip(*columns, strict=True)
                yield [_record(dict(zip(names, row, strict=True))) for row in rows]
            else:
                yield _records(names, columns)


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

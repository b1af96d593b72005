"""Does a plan (``plan_*.parquet``) equal the ground truth? Sets compared, category by category.

Two sources of truth: ``truth.json`` of ``bench/generate`` (its ``prune`` or ``prune_grace``
section) and the ``expected/`` tables of ``bench/snapshot_tables.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from regprune.tables import sql_literal

# plan table -> (columns compared, truth.json key of the deleted items, kept_young key)
CATEGORIES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "plan_blobs": (("digest",), "orphan_blobs", "blobs"),
    "plan_repositories": (("repository", "reason"), "prunable_repositories", "repositories"),
    "plan_manifest_links": (
        ("repository", "digest", "reason"),
        "prunable_manifest_links",
        "manifest_links",
    ),
    "plan_layer_links": (("repository", "digest", "reason"), "dangling_layer_links", "layer_links"),
    "plan_uploads": (("repository", "upload_id"), "stale_uploads", "uploads"),
}


@dataclass(frozen=True)
class CategoryCheck:
    """One category of the plan against the truth: counts and both differences."""

    category: str
    expected: int
    planned: int
    missing: int
    extra: int

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.extra == 0

    def describe(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        detail = "" if self.ok else f" (missing {self.missing}, extra {self.extra})"
        counts = f"{self.planned} planned, {self.expected} expected"
        return f"{verdict} {self.category}: {counts}{detail}"


def _planned(run_dir: Path, table: str, columns: tuple[str, ...], action: str) -> set[tuple]:
    cols = ", ".join(columns)
    path = sql_literal(run_dir / f"{table}.parquet")
    with duckdb.connect() as con:
        query = f"SELECT {cols} FROM read_parquet({path}) WHERE action = ?"
        return set(con.execute(query, [action]).fetchall())


def _as_tuple(item: Any, columns: tuple[str, ...]) -> tuple:
    if isinstance(item, str):
        return (item,)
    return tuple(item[c] for c in columns)


def _check(name: str, expected: set[tuple], planned: set[tuple]) -> CategoryCheck:
    return CategoryCheck(
        name, len(expected), len(planned), len(expected - planned), len(planned - expected)
    )


def against_truth(run_dir: str | Path, prune_truth: dict[str, Any]) -> list[CategoryCheck]:
    """Compare deleted and kept-young items with one prune section of ``truth.json``."""
    run = Path(run_dir)
    checks = []
    for table, (columns, deleted_key, kept_key) in CATEGORIES.items():
        label = table.removeprefix("plan_")
        for action, items in (
            ("delete", prune_truth[deleted_key]),
            ("keep", prune_truth["kept_young"][kept_key]),
        ):
            # truth.json lists a repository kept for youth by name only
            cols = ("repository",) if (kept_key, action) == ("repositories", "keep") else columns
            expected = {_as_tuple(item, cols) for item in items}
            name = label if action == "delete" else f"{label} kept young"
            checks.append(_check(name, expected, _planned(run, table, cols, action)))
    return checks


def against_expected_tables(run_dir: str | Path, expected_dir: str | Path) -> list[CategoryCheck]:
    """Compare the deleted items with ``expected/<table>.parquet`` (sets, in DuckDB: millions
    of rows stay out of Python)."""
    run, expected = Path(run_dir), Path(expected_dir)
    checks = []
    with duckdb.connect() as con:
        for path in sorted(expected.glob("*.parquet")):
            table = path.stem
            columns = ", ".join(duckdb.read_parquet(str(path), connection=con).columns)
            want = f"SELECT {columns} FROM read_parquet({sql_literal(path)})"
            plan = sql_literal(run / f"plan_{table}.parquet")
            got = f"SELECT {columns} FROM read_parquet({plan}) WHERE action = 'delete'"
            counts = con.execute(
                f"""SELECT
                    (SELECT count(*) FROM ({want})),
                    (SELECT count(*) FROM ({got})),
                    (SELECT count(*) FROM ({want} EXCEPT {got})),
                    (SELECT count(*) FROM ({got} EXCEPT {want}))"""
            ).fetchone()
            checks.append(CategoryCheck(table, *counts))
        for table in ("uploads",):  # nothing to delete there by construction
            plan = sql_literal(run / f"plan_{table}.parquet")
            found = con.execute(f"SELECT count(*) FROM read_parquet({plan})").fetchone()[0]
            checks.append(CategoryCheck(table, 0, found, 0, found))
    return checks


def all_ok(checks: list[CategoryCheck]) -> bool:
    return all(check.ok for check in checks)

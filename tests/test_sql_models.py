"""Every ``sql/`` model on its own: its header is its contract, and a few hand-written rows in,
the rows it must return out (dbt's unit tests).

Fast and self-contained: no registry, no Prefect, no snapshot. Every model runs over empty
tables and must return the columns (and types) its header comment states; then each model is
given a handful of rows chosen to hit one rule each. The models of the execution path
(recheck_protected, prune_actions, execution_queue) are tested with the executor.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regprune.manifests import MANIFEST_TABLES
from regprune.models import (
    PLAN_OUTPUTS,
    SnapshotDatabase,
    model_dependencies,
    model_functions,
    model_header,
    model_names,
    model_reads,
    models_in_order,
    query_text,
)
from regprune.tables import SCHEMAS, SNAPSHOT_TABLES, empty_table
from regprune.warehouse import RUNS_SCHEMA, RUNS_TABLE

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=30)
YOUNG = NOW - timedelta(hours=1)
VARIABLES = {
    "young_after": NOW - timedelta(hours=24),
    "uploads_stale_before": NOW - timedelta(days=7),
    "namespace": None,
    "registry_host": None,
}

# Tables the product attaches besides the snapshot's, by the table whose columns they have:
# manifests read from storage (young_* for the plan, lost_* for the check), the re-read
# before deleting (recheck_*), the audit trail (actions, completed_actions).
EXTRA_TABLES = {
    **{f"{prefix}_{table}": table for prefix in ("young", "lost") for table in MANIFEST_TABLES},
    **{f"recheck_{table}": table for table in (*SNAPSHOT_TABLES, *MANIFEST_TABLES)},
    "actions": "actions",
    "completed_actions": "actions",
}
WAREHOUSE_TABLES = {RUNS_TABLE}
"""A model that reads these runs over the warehouse's views, not over a snapshot folder."""


def digest(name: str) -> str:
    """A readable stand-in for a digest: sha256:<name>."""
    return f"sha256:{name}"


def table(columns: str, *values: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Rows from a column list and tuples: ``table("digest size", ("a", 1), ("b", 2))``;
    a column not listed is NULL."""
    names = columns.split()
    assert all(len(v) == len(names) for v in values), "a row does not match its columns"
    return [dict(zip(names, v, strict=True)) for v in values]


def pick(rows: list[dict[str, Any]], columns: str) -> list[tuple[Any, ...]]:
    """The named columns of rows as sorted tuples (a model's row order is not the contract)."""
    names = columns.split()
    return sorted((tuple(row[n] for n in names) for row in rows), key=repr)


def _model_schema(model: str) -> pa.Schema:
    """Arrow columns of a model's header (to give a model's output as another's input)."""
    header = model_header(model)
    select = ", ".join(f'NULL::{kind} AS "{name}"' for name, kind in header.columns)
    with duckdb.connect() as con:
        relation = con.sql(f"SELECT {select} LIMIT 0")
        # DuckDB 2 renamed arrow() to to_arrow_table()
        fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
        return fetch().schema


def schema_of(name: str) -> pa.Schema:
    if name in SCHEMAS:
        return SCHEMAS[name]
    if name in EXTRA_TABLES:
        return SCHEMAS[EXTRA_TABLES[name]]
    return _model_schema(name)


@pytest.fixture(scope="module")
def empty_snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A snapshot folder of empty tables, and the empty extra tables."""
    folder = tmp_path_factory.mktemp("empty-snapshot")
    for name in SNAPSHOT_TABLES:
        pq.write_table(empty_table(name), folder / f"{name}.parquet")
    extra = {}
    for name, like in EXTRA_TABLES.items():
        extra[name] = folder / f"{name}.parquet"
        pq.write_table(empty_table(like), extra[name])
    return folder, extra


@pytest.fixture
def run(empty_snapshot: tuple[Path, dict[str, Path]]) -> Iterator[Any]:
    """``run(model, variables=..., **tables)``: the model's rows over the given tables (any
    other table empty). A table named like a model stands in for that model."""
    folder, extra = empty_snapshot
    opened: list[SnapshotDatabase] = []

    def run_model(
        model: str, variables: dict[str, Any] | None = None, **given: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        db = SnapshotDatabase(folder, {**VARIABLES, **(variables or {})}, extra_tables=extra)
        opened.append(db)
        for name, rows in given.items():
            db.con.register(f"given_{name}", pa.Table.from_pylist(rows, schema=schema_of(name)))
            db.con.execute(f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM "given_{name}"')
        db.define(model)
        return db.records(f'SELECT * FROM "{model}"')

    yield run_model
    for db in opened:
        db.close()


# --- the model graph ------------------------------------------------------------------------


def test_every_relation_a_model_reads_is_a_model_or_a_known_table() -> None:
    known = set(model_names()) | set(SNAPSHOT_TABLES) | set(EXTRA_TABLES) | WAREHOUSE_TABLES
    unknown = {m: sorted(model_reads(m) - known) for m in model_names()}
    assert {m: r for m, r in unknown.items() if r} == {}


def test_models_come_after_what_they_read() -> None:
    order = models_in_order(model_names())
    assert sorted(order) == sorted(model_names())
    for position, model in enumerate(order):
        assert model_dependencies(model) <= set(order[:position]), model


def test_the_plan_pulls_in_what_it_reads_and_nothing_else() -> None:
    order = models_in_order(PLAN_OUTPUTS)
    assert set(order) == {
        *PLAN_OUTPUTS,
        "keep_set",
        "stream_history",
        "repository_activity",
        "unreferenced_blobs",
        "unreferenced_links",
    }
    assert order.index("keep_set") < order.index("unreferenced_blobs") < order.index("plan_blobs")
    # a dependency already attached (a plan output read from Parquet) is not defined again
    assert models_in_order(("plan_summary",), present=frozenset(PLAN_OUTPUTS)) == ["plan_summary"]


def test_names_in_comments_are_not_dependencies() -> None:
    """plan_blobs's header names plan_unknown_manifests; the query does not read it."""
    assert "plan_unknown_manifests" in query_text("plan_blobs")
    assert "plan_unknown_manifests" not in model_dependencies("plan_blobs")


# --- headers: every model over empty tables -------------------------------------------------


def _macro_variables() -> dict[str, set[str]]:
    text = query_text("macros")
    macros = re.findall(r"MACRO (\w+)\(.*?;", text, flags=re.S)
    bodies = re.split(r"CREATE OR REPLACE TEMP MACRO ", text)[1:]
    return {
        name: set(re.findall(r"getvariable\('(\w+)'\)", body))
        for name, body in zip(macros, bodies, strict=True)
    }


def variables_used(model: str) -> set[str]:
    """The variables a model reads itself: getvariable() calls and the macros it calls."""
    code = "\n".join(line.split("--")[0] for line in query_text(model).splitlines())
    used = set(re.findall(r"getvariable\('(\w+)'\)", code))
    for macro, variables in _macro_variables().items():
        if macro in model_functions(model):
            used |= variables
    return used


def _canonical_type(con: duckdb.DuckDBPyConnection, kind: str) -> str:
    return con.execute(f"SELECT typeof(NULL::{kind})").fetchone()[0]


def _warehouse_describe(model: str) -> list[tuple[str, str]]:
    """A warehouse model over empty warehouse views (every table with snapshot_date, run)."""
    with duckdb.connect() as con:
        partitions = "NULL::DATE AS snapshot_date, NULL::VARCHAR AS run"
        con.register("runs_empty", RUNS_SCHEMA.empty_table())
        con.execute(f"CREATE VIEW runs AS SELECT *, {partitions} FROM runs_empty")
        con.register("blobs_empty", empty_table("blobs"))
        con.execute(f"CREATE VIEW blobs AS SELECT *, {partitions} FROM blobs_empty")
        con.register("plan_summary_empty", _model_schema("plan_summary").empty_table())
        con.execute(f"CREATE VIEW plan_summary AS SELECT *, {partitions} FROM plan_summary_empty")
        body = query_text(model).strip().rstrip(";")
        return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {body}").fetchall()]


@pytest.mark.parametrize("model", model_names())
def test_model_over_empty_tables_returns_the_columns_its_header_states(
    model: str, empty_snapshot: tuple[Path, dict[str, Path]]
) -> None:
    header = model_header(model)
    if model_reads(model) & WAREHOUSE_TABLES:
        described = _warehouse_describe(model)
    else:
        folder, extra = empty_snapshot
        with SnapshotDatabase(folder, VARIABLES, extra_tables=extra) as db:
            db.define(model)
            assert db.records(f'SELECT * FROM "{model}"') in ([], *_ONE_ROW.get(model, []))
            described = [
                (r["column_name"], r["column_type"])
                for r in db.records(f'DESCRIBE SELECT * FROM "{model}"')
            ]
    assert [name for name, _ in described] == list(header.column_names)
    with duckdb.connect() as con:
        stated = {n: _canonical_type(con, t) for n, t in header.columns if t is not None}
    assert {n: t for n, t in described if n in stated} == stated
    assert header.variables == variables_used(model)


_ONE_ROW: dict[str, list[list[dict[str, Any]]]] = {
    "plan_sanity": [
        [
            {
                "images": 0,
                "blobs": 0,
                "stored_manifests": 0,
                "known_manifests": 0,
                "known_fraction": None,
                "image_anomalies": 0,
                "problems": [],
            }
        ]
    ],
}
"""Models that return rows even over empty tables (plan_summary is tested below)."""
_ONE_ROW["plan_summary"] = [
    [
        {"category": c, "action": a, "count": 0, "size": 0}
        for c in sorted(("blobs", "layer_links", "manifest_links", "repositories", "uploads"))
        for a in ("delete", "keep")
    ]
]

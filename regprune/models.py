"""Run the ``sql/`` queries over a snapshot folder with DuckDB.

Every table of the snapshot becomes a view; every query file is a model that becomes a view
named after the file, so later queries read earlier ones by name (dbt's habit). Results
are written next to the snapshot as Parquet.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib.resources import files
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb

from regprune.duck import DuckDBSettings, sql_literal
from regprune.tables import SNAPSHOT_TABLES

PLAN_INTERMEDIATES = ("unreferenced_blobs", "unreferenced_links")
"""Models the plan writes once (to a scratch folder, not into DuckDB's memory) because several
outputs read them: recomputing them would cost a pass over every blob or link each time."""

# What each command outputs. The models these read (keep_set, stream_history, ...) are found
# in the SQL itself (see model_reads) and defined first: no list here says what runs before what.
PLAN_OUTPUTS = (
    "plan_repositories",
    "plan_manifest_links",
    "plan_blobs",
    "plan_layer_links",
    "plan_uploads",
    "plan_summary",
    "plan_namespaces",
)
UNKNOWN_MANIFEST_MODELS = ("image_manifests_to_read", "plan_unknown_manifests")
EXECUTION_MODELS = ("plan_actions", "prune_actions", "execution_queue")
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
PROJECTED_TABLES = {
    "images": "projected_images",
    "image_blobs": "projected_image_blobs",
    "imagestream_tags": "projected_imagestream_tags",
}
"""Cluster tables a hard prune's dry run can plan over as prune-images' plan would leave them
(flows/prune.py project_images_plan): table -> the model that projects it."""
PROJECTION_FILE = "projection.json"
"""Written into a run folder whose plan is projected (its PROJECTED_TABLES models written
beside the snapshot's tables): while it is there, the folder's database reads those models'
files under the tables' names, and nothing executes the folder's plan for real."""
MACROS = "macros"
"""sql/macros.sql: the shared macros, not a model."""


def fetch_records(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The rows of an executed DuckDB query as dicts keyed by column name."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@cache
def model_files() -> dict[str, str]:
    """Each query's name -> its file under ``sql/``: the macros at the top, the models in one
    folder per layer (``plan/plan_blobs.sql``). A model is read by its name alone, wherever
    its file sits, so two files of one name would be ambiguous: refused."""
    found: dict[str, str] = {}
    top = files("regprune.sql")
    for entry in sorted(top.iterdir(), key=lambda e: e.name):
        inner = sorted(entry.iterdir(), key=lambda e: e.name) if entry.is_dir() else [entry]
        for item in inner:
            if not item.is_file() or not item.name.endswith(".sql"):
                continue
            where = item.name if item is entry else f"{entry.name}/{item.name}"
            name = item.name.removesuffix(".sql")
            if name in found:
                raise ModelGraphError(
                    f"two queries named {name}: sql/{found[name]} and sql/{where}"
                )
            found[name] = where
    return found


def model_file(name: str) -> str:
    """Where a query's file is, for messages: ``sql/plan/plan_blobs.sql``."""
    return f"sql/{model_files().get(name, f'{name}.sql')}"


def query_text(name: str) -> str:
    """The text of a query (shipped inside the installed package), by its name."""
    where = model_files().get(name)
    if where is None:
        raise ModelGraphError(f"no query named {name} under sql/")
    return files("regprune.sql").joinpath(*where.split("/")).read_text()


@cache
def model_names() -> tuple[str, ...]:
    """Every model: each query under ``sql/`` but the macros."""
    return tuple(sorted(name for name in model_files() if name != MACROS))


@dataclass(frozen=True)
class ModelHeader:
    """The contract a model's header comment states: what one row is, its columns (with
    their DuckDB types where given) and the variables it reads. A test holds every model to
    its header."""

    name: str
    row: str
    columns: tuple[tuple[str, str | None], ...]
    variables: frozenset[str]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


_LABEL = re.compile(r"^-- (One row per|Columns:|Variables:)\s*(.*)$")


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside parentheses (STRUCT(a X, b Y)[] is one column type)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [part for part in parts if part]


@cache
def model_header(name: str) -> ModelHeader:
    """Parse the header of ``sql/<name>.sql``: its leading comment lines, starting
    ``-- <name>: <what it returns>`` and holding the lines ``-- One row per <what>.``,
    ``-- Columns: <name> [TYPE], ...`` and ``-- Variables: <name>, ... | none`` (a line
    indented after ``--`` continues the one before)."""
    lines = []
    for line in query_text(name).splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    if not lines or not lines[0].startswith(f"-- {name}: "):
        raise ModelGraphError(f"{model_file(name)} must start with '-- {name}: <what it returns>'")
    fields: dict[str, str] = {}
    label = None
    for line in lines[1:]:
        match = _LABEL.match(line)
        if match:
            label = match.group(1)
            fields[label] = match.group(2)
        elif label and re.match(r"--\s{2,}\S", line):
            fields[label] += " " + line[2:].strip()
        else:
            label = None
    missing = [label for label in ("One row per", "Columns:", "Variables:") if label not in fields]
    if missing:
        raise ModelGraphError(f"{model_file(name)} header lacks {', '.join(missing)}")
    columns = []
    for column in _split_top_level(fields["Columns:"]):
        column_name, _, column_type = column.partition(" ")
        columns.append((column_name, column_type.strip() or None))
    variables = _split_top_level(fields["Variables:"])
    return ModelHeader(
        name,
        fields["One row per"].rstrip("."),
        tuple(columns),
        frozenset() if variables == ["none"] else frozenset(variables),
    )


class ModelGraphError(ValueError):
    """A model's SQL cannot be parsed, shadows a model with a CTE, or models read in a cycle."""


def _walk(node: Any, relations: set[str], ctes: set[str], functions: set[str]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE" and node.get("table_name"):
            relations.add(node["table_name"])
        if node.get("class") == "FUNCTION" and node.get("function_name"):
            functions.add(node["function_name"])
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            ctes.update(entry["key"] for entry in cte_map.get("map", []))
        for value in node.values():
            _walk(value, relations, ctes, functions)
    elif isinstance(node, list):
        for value in node:
            _walk(value, relations, ctes, functions)


@cache
def _parsed(name: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(relations read, CTE names, functions called) of a model, from DuckDB's own parser.

    The parser, not a regular expression and not a hand-kept header line: names in comments
    and strings do not count, a CTE is told apart from a table, and nothing can drift from
    what the query really reads. ``json_serialize_sql`` only parses: it needs no tables."""
    with duckdb.connect() as con:
        row = con.execute("SELECT json_serialize_sql(?)", [query_text(name)]).fetchone()
    if row is None:
        raise ModelGraphError(f"{model_file(name)}: DuckDB's parser returned nothing")
    text = row[0]
    tree = json.loads(text)
    if tree.get("error"):
        raise ModelGraphError(f"{model_file(name)} cannot be parsed: {tree.get('error_message')}")
    relations: set[str] = set()
    ctes: set[str] = set()
    functions: set[str] = set()
    _walk(tree["statements"], relations, ctes, functions)
    return frozenset(relations - ctes), frozenset(ctes), frozenset(functions)


def model_reads(name: str) -> frozenset[str]:
    """The relations (models, snapshot or extra tables) that ``sql/<name>.sql`` reads."""
    relations, ctes, _ = _parsed(name)
    shadowed = ctes & set(model_names())
    if shadowed:
        raise ModelGraphError(
            f"{model_file(name)} names a CTE like a model ({', '.join(sorted(shadowed))}): "
            "rename the CTE so what the model reads stays unambiguous"
        )
    return relations


def model_functions(name: str) -> frozenset[str]:
    """The functions and macros ``sql/<name>.sql`` calls."""
    return _parsed(name)[2]


def model_dependencies(name: str) -> frozenset[str]:
    """The models ``sql/<name>.sql`` reads."""
    return model_reads(name) & frozenset(model_names())


def models_in_order(
    models: tuple[str, ...] | list[str], present: frozenset[str] = frozenset()
) -> list[str]:
    """``models`` with every model they read, each after what it reads (dependencies first).

    A dependency in ``present`` (a relation the database already has: a table attached from a
    file, or a model written before) is taken as it is, not defined again; the models asked
    for are always in the result."""
    known = set(model_names())
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(model: str, path: tuple[str, ...]) -> None:
        if state.get(model) == "done":
            return
        if state.get(model) == "visiting":
            cycle = " -> ".join((*path[path.index(model) :], model))
            raise ModelGraphError(f"models read each other in a cycle: {cycle}")
        if model not in known:
            raise ModelGraphError(f"no model named {model} under sql/")
        state[model] = "visiting"
        for dependency in sorted(model_dependencies(model)):
            if dependency not in present:
                visit(dependency, (*path, model))
        state[model] = "done"
        order.append(model)

    for model in models:
        visit(model, ())
    return order


def is_projected(run_dir: str | os.PathLike[str]) -> bool:
    """Whether the plan of ``run_dir`` is over the cluster as prune-images' plan would leave
    it (a dry run's report only: see PROJECTION_FILE)."""
    return (Path(run_dir) / PROJECTION_FILE).exists()


class SnapshotDatabase:
    """A DuckDB connection over one snapshot folder."""

    def __init__(
        self,
        snapshot_dir: str | os.PathLike[str],
        variables: dict[str, Any],
        settings: DuckDBSettings | None = None,
        extra_tables: dict[str, Path] | None = None,
        tables: Sequence[str] = SNAPSHOT_TABLES,
        kind: str = "a snapshot folder",
        projected: bool = True,
    ):
        """``tables``: the snapshot tables the folder must hold (``kind`` names such a
        folder in the error when one is missing). A folder with a PROJECTION_FILE reads its
        projected tables instead of the snapshot's (``projected=False``: the snapshot's)."""
        self.snapshot_dir = Path(snapshot_dir)
        self.kind = kind
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        (settings or DuckDBSettings()).apply(self.con)
        projection = projected and is_projected(self.snapshot_dir)
        for table in tables:
            model = PROJECTED_TABLES.get(table) if projection else None
            self.attach(table, self.snapshot_dir / f"{model or table}.parquet")
        for table, path in (extra_tables or {}).items():
            self.attach(table, path)
        for name, value in variables.items():
            self.con.execute(f"SET VARIABLE {name} = ?", [value])
        self.con.execute(query_text("macros"))

    def attach(self, table: str, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"snapshot table {path} is missing: is this {self.kind}?")
        self.con.execute(
            f'CREATE OR REPLACE VIEW "{table}" AS SELECT * FROM read_parquet({sql_literal(path)})'
        )

    def relations(self) -> frozenset[str]:
        """Names of the tables and views this database has (snapshot tables, extra tables,
        models defined or written so far)."""
        rows = self.con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal "
            "UNION SELECT table_name FROM duckdb_tables()"
        ).fetchall()
        return frozenset(name for (name,) in rows)

    def define(self, *models: str) -> list[str]:
        """Define ``models`` as views, each after the models it reads (found in its SQL);
        a model read but not asked for is defined only when the database lacks a relation of
        that name (an attached plan output is used as it is). Returns what was defined, in
        order."""
        order = models_in_order(models, present=self.relations() - set(models))
        for model in order:
            body = query_text(model).strip().rstrip(";")
            self.con.execute(f'CREATE OR REPLACE TEMP VIEW "{model}" AS {body}')
        return order

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

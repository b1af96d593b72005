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

from regprune.categories import ACTION_CATEGORY, CHECK_FINDINGS, PLAN_CATEGORIES
from regprune.manifests import MANIFEST_TABLES
from regprune.models import (
    PLAN_OUTPUTS,
    SnapshotDatabase,
    model_dependencies,
    model_file,
    model_files,
    model_functions,
    model_header,
    model_names,
    model_reads,
    models_in_order,
    query_text,
)
from regprune.tables import SCHEMAS, SNAPSHOT_TABLES, WORKLOAD_TABLES, empty_table
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
    "quarantined_keys": "quarantined_keys",
    **{table: table for table in WORKLOAD_TABLES},  # a prune-images snapshot's
}
EXTRA_MODEL_OUTPUTS = {"recheck_plan_actions": "plan_actions"}
"""Outputs of a model run over other tables (the re-check's plan), given to a model as a table."""
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
    return _model_schema(EXTRA_MODEL_OUTPUTS.get(name, name))


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
    for name, model in EXTRA_MODEL_OUTPUTS.items():
        extra[name] = folder / f"{name}.parquet"
        pq.write_table(_model_schema(model).empty_table(), extra[name])
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
    known = (
        set(model_names())
        | set(SNAPSHOT_TABLES)
        | set(EXTRA_TABLES)
        | set(EXTRA_MODEL_OUTPUTS)
        | WAREHOUSE_TABLES
    )
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
        # what the manifests read from storage for Images name (not spelled out in metadata)
        "image_manifests_to_read",
        "list_children_without_images",
    }
    assert order.index("keep_set") < order.index("unreferenced_blobs") < order.index("plan_blobs")
    # a dependency already attached (a plan output read from Parquet) is not defined again
    assert models_in_order(("plan_summary",), present=frozenset(PLAN_OUTPUTS)) == ["plan_summary"]


def test_names_in_comments_are_not_dependencies() -> None:
    """plan_blobs's header names plan_unknown_manifests; the query does not read it."""
    assert "plan_unknown_manifests" in query_text("plan_blobs")
    assert "plan_unknown_manifests" not in model_dependencies("plan_blobs")


def test_every_query_file_under_sql_is_found_by_its_name() -> None:
    """The loader reads the top and one folder per layer: a file deeper down, or beside the
    package's, would be a model nothing runs."""
    sql = Path(__file__).resolve().parent.parent / "sql"
    on_disk = sorted(str(p.relative_to(sql)) for p in sql.rglob("*.sql"))
    assert sorted(model_files().values()) == on_disk
    assert model_file("plan_blobs") == "sql/plan/plan_blobs.sql"


def test_two_queries_of_one_name_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import regprune.models as models

    for layer in ("plan", "check"):
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "twice.sql").write_text("SELECT 1")
    monkeypatch.setattr(models, "files", lambda package: tmp_path)
    with pytest.raises(
        models.ModelGraphError, match=r"two queries named twice: sql/check/twice\.sql and sql/plan"
    ):
        models.model_files.__wrapped__()


def test_a_cycle_is_refused_with_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import regprune.models as models

    reads = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    monkeypatch.setattr(models, "model_names", lambda: tuple(reads))
    monkeypatch.setattr(models, "model_dependencies", lambda m: frozenset(reads[m]))
    with pytest.raises(models.ModelGraphError, match="a -> b -> c -> a"):
        models.models_in_order(("a",))


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
                "unresolved_images": 0,
                "problems": [],
            }
        ]
    ],
    "view_coverage": [
        [
            {
                "image_namespaces": 0,
                "stream_namespaces": 0,
                "unseen_namespaces": [],
                "unseen_repositories": 0,
                "tagged_manifests": 0,
                "tagged_without_image": 0,
                "problems": [],
            }
        ]
    ],
    "plan_summary": [
        [
            {"category": name, "action": action, "count": 0, "size": 0}
            for name in sorted(c.name for c in PLAN_CATEGORIES)
            for action in ("delete", "keep")
        ]
    ],
    "images_sanity": [
        [
            {
                "invalid_references": 0,
                "image_anomalies": 0,
                "images": 0,
                "revisions": 0,
                "problems": [],
            }
        ]
    ],
    "images_summary": [
        [
            {
                "revisions": 0,
                "revisions_removed": 0,
                "streams_updated": 0,
                "images": 0,
                "images_deleted": 0,
                "revisions_kept_by_reason": None,
                "images_kept_by_reason": None,
            }
        ]
    ],
}
"""Models that return rows even over empty tables."""


# --- given / expect: the safety-critical models first ---------------------------------------

A, B, C, L1, L2, CFG = (digest(n) for n in ("a", "b", "c", "l1", "l2", "cfg"))
LIST, CHILD = digest("list"), digest("child")


def image_blobs(*values: tuple[Any, ...]) -> list[dict[str, Any]]:
    return table("image digest kind position", *values)


def test_keep_set_is_every_digest_any_image_references(run: Any) -> None:
    given = image_blobs(
        (A, A, "manifest", 0),
        (A, CFG, "config", 0),
        (A, L1, "layer", 0),
        (B, B, "manifest", 0),
        (B, L1, "layer", 0),
        (LIST, LIST, "manifest", 0),
        (LIST, CHILD, "manifest_list_child", 0),
    )
    rows = run("keep_set", image_blobs=given)
    # one row per reference: L1 twice (two Images share it), the child through its list
    assert pick(rows, "digest") == sorted([(A,), (CFG,), (L1,), (B,), (L1,), (LIST,), (CHILD,)])


def test_stream_history_is_every_history_item_and_the_children_of_its_lists(run: Any) -> None:
    tags = table(
        "namespace name tag position image",
        ("ns", "app", "latest", 0, A),
        ("ns", "app", "latest", 1, B),  # an older item of the history counts
        ("ns", "app", "v1", 0, A),  # the same image under two tags: one row
        ("ns", "app", "multi", 0, LIST),
        ("ns", "other", "x", 0, None),  # a tag item without an image has no digest
    )
    blobs = image_blobs(
        (LIST, LIST, "manifest", 0),
        (LIST, CHILD, "manifest_list_child", 0),
        (LIST, L1, "layer", 0),  # not a child: a list's own layers are not manifests
        (A, CFG, "config", 0),
    )
    rows = run("stream_history", imagestream_tags=tags, image_blobs=blobs)
    assert pick(rows, "namespace name digest") == sorted(
        [("ns", "app", A), ("ns", "app", B), ("ns", "app", LIST), ("ns", "app", CHILD)]
    )


def test_projected_images_lack_the_images_prune_images_plans_to_delete(run: Any) -> None:
    given = {
        "images": table("image managed", (A, True), (B, True), (C, None)),
        # C is no row of the plan (an Image created since it was made): it stays
        "images_plan": table(
            "image action reason", (A, "delete", "unreferenced"), (B, "keep", "young")
        ),
    }
    assert pick(run("projected_images", **given), "image managed") == [(B, True), (C, None)]


def test_projected_image_blobs_keep_only_the_references_of_kept_images(run: Any) -> None:
    given = {
        "image_blobs": image_blobs(
            (A, A, "manifest", 0),
            (A, L1, "layer", 0),
            (A, CFG, "config", 0),
            (B, B, "manifest", 0),
            (B, L1, "layer", 0),  # shared with the deleted A: kept through B's row
        ),
        "images_plan": table("image action", (A, "delete"), (B, "keep")),
    }
    rows = run("projected_image_blobs", **given)
    assert pick(rows, "image digest kind") == [(B, B, "manifest"), (B, L1, "layer")]


def test_projected_imagestream_tags_drop_the_removed_revisions_at_or_below_their_place(
    run: Any,
) -> None:
    items = table(
        "namespace name tag position image",
        ("ns", "app", "latest", 0, digest("new")),  # pushed since the plan: C moved down
        ("ns", "app", "latest", 1, A),
        ("ns", "app", "latest", 2, B),  # planned at 1, now 2: still removed
        ("ns", "app", "latest", 3, C),  # planned at 3: removed
        ("ns", "app", "v1", 0, C),  # C under another tag: not planned, stays
        ("ns", "other", "latest", 3, C),  # another stream: stays
        ("ns", "up", "latest", 0, C),  # planned at 2, moved up to 0: kept, as the executor does
        ("ns", "app", None, 0, C),  # an anomalous tag is never removed
    )
    removals = table(
        "namespace name tag position image action reason",
        ("ns", "app", "latest", 1, B, "remove", "old-revision"),
        ("ns", "app", "latest", 3, C, "remove", "old-revision"),
        ("ns", "app", "latest", 0, A, "keep", "within-keep-revisions"),
        ("ns", "up", "latest", 2, C, "remove", "old-revision"),
    )
    rows = run("projected_imagestream_tags", imagestream_tags=items, images_tag_revisions=removals)
    assert pick(rows, "namespace name tag position image") == sorted(
        [
            ("ns", "app", "latest", 0, digest("new")),
            ("ns", "app", "latest", 1, A),
            ("ns", "app", "v1", 0, C),
            ("ns", "other", "latest", 3, C),
            ("ns", "up", "latest", 0, C),
            ("ns", "app", None, 0, C),
        ],
        key=repr,
    )


def test_the_projection_feeds_the_hard_prunes_own_rules(run: Any) -> None:
    """Over the projected tables the plan's keep_set and stream_history lose what the deleted
    Image and the removed revision held, and nothing else (the rules are not restated)."""
    given_blobs = image_blobs((A, A, "manifest", 0), (A, L1, "layer", 0), (B, B, "manifest", 0))
    plan = table("image action", (A, "delete"), (B, "keep"))
    projected = run("projected_image_blobs", image_blobs=given_blobs, images_plan=plan)
    assert pick(run("keep_set", image_blobs=projected), "digest") == [(B,)]
    tags = table(
        "namespace name tag position image", ("ns", "app", "t", 0, B), ("ns", "app", "t", 1, A)
    )
    removals = table("namespace name tag position image action", ("ns", "app", "t", 1, A, "remove"))
    kept = run("projected_imagestream_tags", imagestream_tags=tags, images_tag_revisions=removals)
    history = run("stream_history", imagestream_tags=kept, image_blobs=projected)
    assert pick(history, "namespace name digest") == [("ns", "app", B)]


def test_unreferenced_blobs_are_the_blobs_no_image_references(run: Any) -> None:
    blobs = table("digest size modified", (A, 1, OLD), (B, 2, OLD), (C, 3, None))
    rows = run("unreferenced_blobs", blobs=blobs, keep_set=table("digest", (A,), (A,)))
    assert pick(rows, "digest size modified") == [(B, 2, OLD), (C, 3, None)]


def test_unreferenced_links_are_the_layer_and_manifest_links_of_unreferenced_blobs(
    run: Any,
) -> None:
    layer_links = table("repository digest modified", ("r1", A, OLD), ("r1", B, YOUNG))
    manifest_links = table("repository digest modified", ("r2", B, OLD), ("r2", C, OLD))
    rows = run(
        "unreferenced_links",
        layer_links=layer_links,
        manifest_links=manifest_links,
        unreferenced_blobs=table("digest size modified", (B, 1, OLD)),
    )
    assert pick(rows, "repository digest modified") == [("r1", B, YOUNG), ("r2", B, OLD)]


def test_plan_blobs_deletes_only_what_is_old_and_unlinked_lately(run: Any) -> None:
    d = {n: digest(n) for n in ("old", "young", "unknown", "fresh_link", "unknown_link", "pushed")}
    candidates = table(
        "digest size modified",
        (d["old"], 10, OLD),
        (d["young"], 20, YOUNG),
        (d["unknown"], 30, None),  # an unreadable time cannot prove the blob old
        (d["fresh_link"], 40, OLD),
        (d["unknown_link"], 50, OLD),
        (d["pushed"], 60, OLD),
    )
    links = table(
        "repository digest modified",
        ("r", d["old"], OLD),
        ("r", d["fresh_link"], OLD),
        ("s", d["fresh_link"], YOUNG),  # a mount of an old layer writes a young link
        ("r", d["unknown_link"], OLD),
        ("s", d["unknown_link"], None),
    )
    references = table("digest reference kind", (digest("m"), d["pushed"], "layer"))
    rows = run(
        "plan_blobs",
        unreferenced_blobs=candidates,
        unreferenced_links=links,
        young_manifest_references=references,
    )
    assert pick(rows, "digest size action kept_because") == sorted(
        [
            (d["old"], 10, "delete", None),
            (d["young"], 20, "keep", "young"),
            (d["unknown"], 30, "keep", "young"),
            (d["fresh_link"], 40, "keep", "young"),
            (d["unknown_link"], 50, "keep", "young"),
            (d["pushed"], 60, "keep", "young"),
        ],
        key=repr,
    )


def test_repository_activity_is_the_newest_time_inside_unknown_when_any_is(run: Any) -> None:
    repositories = table("repository", ("ns/a",), ("ns/b",), ("ns/c",), ("ns/empty",))
    rows = run(
        "repository_activity",
        repositories=repositories,
        layer_links=table("repository modified", ("ns/a", OLD), ("ns/b", OLD)),
        manifest_links=table("repository modified", ("ns/a", YOUNG)),
        tags=table("repository modified", ("ns/b", None)),
        tag_index=table("repository modified", ("ns/c", OLD)),
        uploads=table("repository modified", ("ns/c", YOUNG)),
    )
    assert pick(rows, "repository modified") == sorted(
        [("ns/a", YOUNG), ("ns/b", None), ("ns/c", YOUNG), ("ns/empty", None)], key=repr
    )


def repositories(*names: str) -> list[dict[str, Any]]:
    """Repository rows as the snapshot reads them: <namespace>/<name> when valid."""
    rows = []
    for repository in names:
        parts = repository.split("/")
        valid = len(parts) == 2 and all(re.fullmatch(r"[a-z0-9][a-z0-9-]*", p) for p in parts)
        namespace, name = (parts[0], parts[1]) if len(parts) == 2 else (None, None)
        rows.append(
            {"repository": repository, "namespace": namespace, "name": name, "valid_name": valid}
        )
    return rows


def test_plan_repositories_removes_old_repositories_without_an_imagestream(run: Any) -> None:
    rows = run(
        "plan_repositories",
        repositories=repositories("ns/kept", "ns/gone", "ns/busy", "Bad/Name/x", "ns/unknown"),
        imagestreams=table("namespace name", ("ns", "kept")),
        repository_activity=table(
            "repository modified",
            ("ns/kept", OLD),
            ("ns/gone", OLD),
            ("ns/busy", YOUNG),
            ("Bad/Name/x", OLD),
            ("ns/unknown", None),
        ),
    )
    assert pick(rows, "repository reason action kept_because") == sorted(
        [
            ("ns/gone", "imagestream-missing", "delete", None),
            ("ns/busy", "imagestream-missing", "keep", "young"),
            ("Bad/Name/x", "invalid-name", "delete", None),
            ("ns/unknown", "imagestream-missing", "keep", "young"),
        ],
        key=repr,
    )


def test_plan_manifest_links_keeps_a_link_only_when_an_image_and_the_stream_have_it(
    run: Any,
) -> None:
    links = table(
        "repository digest modified",
        ("ns/app", A, OLD),  # an Image and the stream have it: kept, not listed
        ("ns/app", CHILD, OLD),  # a child of a list the stream has: kept
        ("ns/app", B, OLD),  # an Image exists, the stream lacks it
        ("ns/app", C, OLD),  # no Image at all
        ("ns/app", L1, YOUNG),  # no Image, but young
        ("ns/gone", C, OLD),  # the repository goes whole: not listed here
    )
    rows = run(
        "plan_manifest_links",
        manifest_links=links,
        repositories=repositories("ns/app", "ns/gone"),
        keep_set=table("digest", (A,), (B,), (CHILD,)),
        stream_history=table("namespace name digest", ("ns", "app", A), ("ns", "app", CHILD)),
        plan_repositories=table("repository action", ("ns/gone", "delete")),
    )
    assert pick(rows, "repository digest reason action kept_because") == sorted(
        [
            ("ns/app", B, "not-in-imagestream", "delete", None),
            ("ns/app", C, "image-missing", "delete", None),
            ("ns/app", L1, "image-missing", "keep", "young"),
        ],
        key=repr,
    )


def test_plan_layer_links_are_the_links_whose_blob_is_gone_or_goes(run: Any) -> None:
    links = table(
        "repository digest modified",
        ("ns/app", A, OLD),  # blob stored and kept: fine
        ("ns/app", B, OLD),  # blob missing
        ("ns/app", C, OLD),  # blob deleted by this plan
        ("ns/app", L1, YOUNG),  # blob missing, link young
        ("ns/gone", B, OLD),  # the repository goes whole
    )
    rows = run(
        "plan_layer_links",
        layer_links=links,
        blobs=table("digest size modified", (A, 1, OLD), (C, 1, OLD)),
        plan_blobs=table("digest action", (C, "delete")),
        plan_repositories=table("repository action", ("ns/gone", "delete")),
    )
    assert pick(rows, "repository digest reason action kept_because") == sorted(
        [
            ("ns/app", B, "blob-missing", "delete", None),
            ("ns/app", C, "blob-deleted", "delete", None),
            ("ns/app", L1, "blob-missing", "keep", "young"),
        ],
        key=repr,
    )


def test_plan_uploads_are_the_stale_uploads_outside_removed_repositories(run: Any) -> None:
    stale = NOW - timedelta(days=10)
    uploads = table(
        "repository upload_id started_at size modified",
        ("ns/app", "stale", stale, 5, stale),
        ("ns/app", "no-start", None, 6, stale),  # the newest file's time decides
        ("ns/app", "recent", NOW - timedelta(days=2), 7, NOW - timedelta(days=2)),
        ("ns/app", "written-now", stale, 8, YOUNG),  # stale start, still written to
        ("ns/gone", "stale", stale, 9, stale),
    )
    rows = run(
        "plan_uploads",
        uploads=uploads,
        plan_repositories=table("repository action", ("ns/gone", "delete")),
    )
    assert pick(rows, "repository upload_id size action kept_because") == sorted(
        [
            ("ns/app", "stale", 5, "delete", None),
            ("ns/app", "no-start", 6, "delete", None),
            ("ns/app", "written-now", 8, "keep", "young"),
        ],
        key=repr,
    )


def test_plan_unknown_manifests_are_young_links_no_image_knows(run: Any) -> None:
    links = table(
        "repository digest modified",
        ("r", A, YOUNG),  # known
        ("r", B, YOUNG),
        ("s", B, YOUNG),  # one row per digest
        ("r", C, OLD),  # old: judged as a manifest link instead
        ("r", L1, None),  # unknown time counts as young
    )
    rows = run("plan_unknown_manifests", manifest_links=links, keep_set=table("digest", (A,)))
    assert pick(rows, "digest") == [(B,), (L1,)]


def test_image_missing_blobs_are_the_blobs_of_managed_images_absent_from_storage(
    run: Any,
) -> None:
    rows = run(
        "image_missing_blobs",
        images=table("image managed", (A, True), (B, False)),
        image_blobs=image_blobs(
            (A, A, "manifest", 0),
            (A, CFG, "config", 0),
            (A, L1, "layer", 0),
            (A, CHILD, "manifest_list_child", 0),
            (B, L2, "layer", 0),  # unmanaged: lives elsewhere
        ),
        blobs=table("digest", (A,), (L1,)),
    )
    assert pick(rows, "image missing kind") == sorted(
        [(A, CFG, "config"), (A, CHILD, "manifest")], key=repr
    )


def test_check_broken_imagestream_tags_names_the_item_and_what_it_misses(run: Any) -> None:
    tags = table(
        "namespace name tag position image",
        ("ns", "app", "latest", 0, A),  # the Image misses its config
        ("ns", "app", "latest", 1, C),  # no such Image
        ("ns", "app", "multi", 0, LIST),  # a child of the list misses a layer
        ("ns", "app", "ok", 0, B),
        ("other", "app", "latest", 0, C),  # out of --namespace
    )
    given = {
        "imagestream_tags": tags,
        "images": table("image managed", (A, True), (B, True), (LIST, True), (CHILD, True)),
        "image_blobs": image_blobs((LIST, CHILD, "manifest_list_child", 0)),
        "image_missing_blobs": table(
            "image missing kind", (A, CFG, "config"), (CHILD, L2, "layer")
        ),
    }
    rows = run("check_broken_imagestream_tags", {"namespace": "ns"}, **given)
    assert pick(rows, "namespace name tag position image missing kind") == sorted(
        [
            ("ns", "app", "latest", 0, A, CFG, "config"),
            ("ns", "app", "latest", 1, C, C, "image"),
            ("ns", "app", "multi", 0, LIST, L2, "layer"),
        ],
        key=repr,
    )
    everywhere = run("check_broken_imagestream_tags", **given)
    assert ("other", "app", "latest", 0, C, C, "image") in pick(
        everywhere, "namespace name tag position image missing kind"
    )


def test_check_broken_images_are_limited_to_the_namespace_by_stream_or_reference(
    run: Any,
) -> None:
    given = {
        "image_missing_blobs": table(
            "image missing kind", (A, L1, "layer"), (B, L2, "layer"), (C, CFG, "config")
        ),
        "imagestream_tags": table("namespace name tag position image", ("ns", "app", "t", 0, A)),
        "images": table(
            "image docker_image_reference",
            (A, "host:5000/other/app@" + A),
            (B, "host:5000/ns/app@" + B),  # untagged, but its reference points into ns
            (C, "host:5000/other/app@" + C),
        ),
    }
    rows = run("check_broken_images", {"namespace": "ns"}, **given)
    assert pick(rows, "image missing kind") == sorted([(A, L1, "layer"), (B, L2, "layer")])
    assert len(run("check_broken_images", **given)) == 3


def test_check_lost_candidates_are_stored_manifests_the_stream_lacks(run: Any) -> None:
    rows = run(
        "check_lost_candidates",
        manifest_links=table(
            "repository digest modified",
            ("ns/app", A, OLD),  # the stream has it
            ("ns/app", B, OLD),  # lost
            ("ns/gone", C, OLD),  # no ImageStream at all: lost too
            ("Bad/Name/x", C, OLD),  # cannot belong to an ImageStream
        ),
        repositories=repositories("ns/app", "ns/gone", "Bad/Name/x"),
        stream_history=table("namespace name digest", ("ns", "app", A)),
    )
    assert pick(rows, "repository namespace name digest") == sorted(
        [("ns/app", "ns", "app", B), ("ns/gone", "ns", "gone", C)]
    )


def _lost_found_given() -> dict[str, list[dict[str, Any]]]:
    return {
        "check_lost_candidates": table(
            "repository namespace name digest",
            ("ns/app", "ns", "app", A),  # restorable
            ("ns/app", "ns", "app", B),  # unreadable
            ("ns/app", "ns", "app", C),  # misses its config
        ),
        "lost_manifests": table(
            "digest media_type problem",
            (A, "application/vnd.oci.image.manifest.v1+json", None),
            (B, None, "not JSON"),
            (C, "application/vnd.oci.image.manifest.v1+json", None),
        ),
        "lost_manifest_references": table(
            "digest reference kind", (A, L1, "layer"), (C, CFG, "config"), (C, L1, "layer")
        ),
        "blobs": table("digest", (L1,)),
    }


def test_check_invalid_manifests_say_why_a_lost_manifest_cannot_be_restored(run: Any) -> None:
    rows = run("check_invalid_manifests", **_lost_found_given())
    assert pick(rows, "repository digest reason") == sorted(
        [("ns/app", B, "not JSON"), ("ns/app", C, f"missing config {CFG}")]
    )


def test_check_lost_found_are_the_lost_manifests_that_can_be_restored(run: Any) -> None:
    rows = run("check_lost_found", **_lost_found_given())
    assert pick(rows, "namespace name repository digest tag media_type") == [
        ("ns", "app", "ns/app", A, "lost-found-a", "application/vnd.oci.image.manifest.v1+json")
    ]


# --- the categories: one Python list, and the SQL that must agree with it --------------------


def test_every_category_lists_columns_its_model_has() -> None:
    for category in PLAN_CATEGORIES:
        assert set(category.columns) <= set(model_header(category.model).column_names)
        assert {"action", "kept_because"} <= set(model_header(category.model).column_names)
    for finding in CHECK_FINDINGS:
        assert set(finding.columns) <= set(model_header(finding.model).column_names)


def test_plan_actions_turns_each_category_into_its_action() -> None:
    code = query_text("plan_actions")
    for category in PLAN_CATEGORIES:
        assert re.search(rf"'{category.action}'.*?FROM {category.model}\b", code, flags=re.S)
    assert set(re.findall(r"'(delete_\w+)'", code)) == set(ACTION_CATEGORY)


def test_plan_summary_counts_every_category_and_the_bytes_of_those_that_free_them(
    run: Any,
) -> None:
    given = {
        c.model: table(
            "action size",
            ("delete", 100),
            ("delete", 10),
            ("keep", 1),
        )
        for c in PLAN_CATEGORIES
    }
    rows = run("plan_summary", **given)
    expected = []
    for c in PLAN_CATEGORIES:
        expected.append((c.name, "delete", 2, 110 if c.frees_bytes else 0))
        expected.append((c.name, "keep", 1, 1 if c.frees_bytes else 0))
    assert pick(rows, "category action count size") == sorted(expected, key=repr)
    # over nothing: every category and action, with zeros
    empty = run("plan_summary")
    assert pick(empty, "category action count size") == sorted(
        ((c.name, a, 0, 0) for c in PLAN_CATEGORIES for a in ("delete", "keep")), key=repr
    )


# --- the keep/delete decision: one macro -----------------------------------------------------


def test_decide_keeps_what_is_young_and_what_cannot_be_proven_old(
    empty_snapshot: tuple[Path, dict[str, Path]],
) -> None:
    folder, extra = empty_snapshot
    with SnapshotDatabase(folder, VARIABLES, extra_tables=extra) as db:
        rows = db.records(
            "SELECT is_young, unnest(decide(is_young)) "
            "FROM (VALUES (true), (false), (NULL)) AS t (is_young)"
        )
    assert pick(rows, "is_young action kept_because") == sorted(
        [(True, "keep", "young"), (False, "delete", None), (None, "keep", "young")], key=repr
    )


@pytest.mark.parametrize("category", PLAN_CATEGORIES, ids=lambda c: c.name)
def test_every_plan_decides_through_the_one_macro(category: Any) -> None:
    code = "\n".join(line.split("--")[0] for line in query_text(category.model).splitlines())
    assert "decide" in model_functions(category.model)
    assert "'keep'" not in code and "'young'" not in code


# --- given / expect: the reports' models -----------------------------------------------------


def test_plan_namespaces_splits_a_blobs_bytes_between_the_namespaces_that_link_it(
    run: Any,
) -> None:
    X, Y, Z = digest("x"), digest("y"), digest("z")
    rows = run(
        "plan_namespaces",
        repositories=repositories("ns1/a", "ns1/c", "ns2/b"),
        plan_blobs=table(
            "digest size action", (X, 90, "delete"), (Y, 10, "delete"), (Z, 1000, "keep")
        ),
        unreferenced_links=table(
            "repository digest",
            ("ns1/a", X),
            ("ns1/c", X),  # one namespace, two repositories: one share
            ("ns2/b", X),
            ("ns2/b", Z),  # kept: not counted
        ),
        plan_manifest_links=table("namespace action", ("ns1", "delete"), ("ns1", "keep")),
        plan_repositories=table("namespace action", ("ns2", "delete")),
        plan_layer_links=table("repository action", ("ns1/a", "delete")),
        plan_uploads=table("repository size action", ("ns2/b", 7, "delete"), ("ns2/b", 9, "keep")),
    )
    columns = "namespace size blobs manifest_links repositories layer_links uploads"
    assert pick(rows, columns) == sorted(
        [("ns1", 45, 1, 1, 0, 1, 0), ("ns2", 52, 1, 0, 1, 0, 1), (None, 10, 1, 0, 0, 0, 0)],
        key=repr,
    )


def test_storage_namespaces_adds_up_to_the_bytes_stored(run: Any) -> None:
    X, Y, Z, GONE = digest("x"), digest("y"), digest("z"), digest("gone")
    rows = run(
        "storage_namespaces",
        repositories=repositories("ns1/a", "ns2/b"),
        blobs=table("digest size", (X, 100), (Y, 30), (Z, 5)),
        layer_links=table("repository digest", ("ns1/a", X), ("ns1/a", Y), ("ns1/a", GONE)),
        manifest_links=table("repository digest", ("ns2/b", X)),
        uploads=table("repository size", ("ns2/b", 8)),
    )
    assert pick(rows, "namespace size blobs uploads") == sorted(
        [("ns1", 80, 2, 0), ("ns2", 58, 1, 1), (None, 5, 1, 0)], key=repr
    )


CONFIG = digest("config")
"""An Image's config: an Image that names none has its manifest read (image_manifests_to_read)."""


@pytest.mark.parametrize(
    ("given", "problems"),
    [
        ({"blobs": table("digest", (A,))}, ["no-images"]),
        (
            {
                "images": table("image config_digest", (A, CONFIG)),
                "manifest_links": table("repository digest", ("ns/app", B)),
            },
            ["no-known-manifests"],
        ),
        (
            {
                "images": table("image config_digest", (A, CONFIG)),
                "manifest_links": table("repository digest", ("ns/app", A), ("ns/app", B)),
                "metadata_anomalies": table("kind", ("Image",), ("ImageStream",)),
            },
            ["unreadable-images"],
        ),
        (
            {
                "images": table("image config_digest", (A, CONFIG)),
                "blobs": table("digest", (A,)),
                "manifest_links": table("repository digest", ("ns/app", A), ("ns/other", A)),
            },
            [],
        ),
        (
            {
                "images": table("image", (A,)),
                "blobs": table("digest", (A,)),
                "manifest_links": table("repository digest", ("ns/app", A)),
            },
            ["unresolved-images"],
        ),
    ],
    ids=["no-images", "no-known-manifests", "unreadable-images", "sane", "unresolved-images"],
)
def test_plan_sanity_says_why_this_metadata_may_not_decide(
    run: Any, given: dict[str, list[dict[str, Any]]], problems: list[str]
) -> None:
    [row] = run("plan_sanity", **given)
    assert row["problems"] == problems
    if not problems:
        assert (row["stored_manifests"], row["known_manifests"], row["known_fraction"]) == (1, 1, 1)


def streams(*names: str) -> list[dict[str, Any]]:
    return table("namespace name", *(tuple(n.split("/")) for n in names))


ONE_NAMESPACE_DUMPED = {
    # every Image (cluster-scoped), the streams of ns-a only: oc get ... -n ns-a
    "images": table("image", (A,), (B,), (C,)),
    "repositories": repositories("ns-a/app", "ns-b/app", "ns-c/app", "ns-c/tool"),
    "manifest_links": table(
        "repository digest", ("ns-a/app", A), ("ns-b/app", B), ("ns-c/app", C), ("ns-c/tool", C)
    ),
    "imagestreams": streams("ns-a/app"),
}
A_PROJECT_DELETED = {
    # a whole view: project ns-c deleted (its streams gone, its Image not pruned yet) and the
    # stream ns-a/old deleted, with the streams of ns-a and ns-b
    "images": table("image", (A,), (B,), (C,)),
    "repositories": repositories("ns-a/app", "ns-a/old", "ns-b/app", "ns-c/app"),
    "manifest_links": table(
        "repository digest", ("ns-a/app", A), ("ns-a/old", A), ("ns-b/app", B), ("ns-c/app", C)
    ),
    "imagestreams": streams("ns-a/app", "ns-b/app"),
}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (ONE_NAMESPACE_DUMPED, (["ns-b", "ns-c"], 3, 3, 1, ["streams-missing"])),
        (A_PROJECT_DELETED, (["ns-c"], 1, 3, 2, [])),
        (  # as many namespaces without streams as with: taken for partial (no proof either way)
            {
                "images": table("image", (A,), (C,)),
                "repositories": repositories("ns-a/app", "ns-c/app"),
                "manifest_links": table("repository digest", ("ns-a/app", A), ("ns-c/app", C)),
                "imagestreams": streams("ns-a/app"),
            },
            (["ns-c"], 1, 2, 1, ["streams-missing"]),
        ),
        (  # Images but no ImageStream at all (oc get images)
            {**A_PROJECT_DELETED, "imagestreams": []},
            (["ns-a", "ns-b", "ns-c"], 4, 3, 0, ["streams-missing"]),
        ),
        (  # a repository whose name is not an OpenShift one is not a namespace's
            {
                **A_PROJECT_DELETED,
                "repositories": repositories("ns-a/app", "ns-b/app", "lonely"),
                "manifest_links": table(
                    "repository digest", ("ns-a/app", A), ("ns-b/app", B), ("lonely", C)
                ),
            },
            ([], 0, 2, 2, []),
        ),
    ],
    ids=["one-namespace-dumped", "project-deleted", "as-many-unseen", "no-streams", "invalid-name"],
)
def test_view_coverage_tells_a_partial_stream_view_from_deleted_streams(
    run: Any, given: dict[str, list[dict[str, Any]]], expected: tuple[Any, ...]
) -> None:
    [row] = run("view_coverage", **given)
    got = (
        row["unseen_namespaces"],
        row["unseen_repositories"],
        row["image_namespaces"],
        row["stream_namespaces"],
        row["problems"],
    )
    assert got == expected


def tagged(*digests: str) -> list[dict[str, Any]]:
    """History items of one stream ns-a/app, one tag each."""
    return table(
        "namespace name tag position image",
        *(("ns-a", "app", f"t{i}", 0, d) for i, d in enumerate(digests)),
    )


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ([digest(f"m{i}") for i in range(40)], (40, 0, [])),
        ([digest(f"m{i}") for i in range(39)], (40, 1, [])),  # oc delete image: one dangles
        ([digest(f"m{i}") for i in range(20)], (40, 20, ["images-missing"])),
        ([digest(f"m{i}") for i in range(38)], (40, 2, ["images-missing"])),  # 5%
    ],
    ids=["whole", "one-image-deleted-by-hand", "half-the-images", "two-of-forty"],
)
def test_view_coverage_tells_a_partial_image_view_from_images_deleted_by_hand(
    run: Any, images: list[str], expected: tuple[Any, ...]
) -> None:
    stored = [digest(f"m{i}") for i in range(40)]
    given = {
        "images": table("image", *((d,) for d in images)),
        "repositories": repositories("ns-a/app"),
        "manifest_links": table("repository digest", *(("ns-a/app", d) for d in stored)),
        "imagestreams": streams("ns-a/app"),
        # a tag naming a manifest this registry does not store (an external image) counts not
        "imagestream_tags": tagged(*stored, digest("external")),
    }
    [row] = run("view_coverage", **given)
    assert (row["tagged_manifests"], row["tagged_without_image"], row["problems"]) == expected


def test_plan_sanity_says_a_partial_view_may_not_decide(run: Any) -> None:
    given = {**ONE_NAMESPACE_DUMPED, "blobs": table("digest", (A,), (B,), (C,))}
    given["images"] = table("image config_digest", (A, CONFIG), (B, CONFIG), (C, CONFIG))
    [row] = run("plan_sanity", **given)
    assert row["problems"] == ["streams-missing"]


def test_execution_summary_counts_the_latest_outcome_of_each_action(run: Any) -> None:
    actions = table(
        "action repository digest upload_id size status reason time",
        ("delete_blob", None, A, None, 10, "failed", "timeout", OLD),
        ("delete_blob", None, A, None, 10, "quarantining", None, YOUNG),  # retried: the
        ("delete_blob", None, A, None, 10, "quarantined", None, YOUNG),  # outcome counts
        ("delete_blob", None, B, None, 20, "skipped", "an Image references it now", OLD),
        ("delete_upload", "ns/app", None, "u1", 5, "quarantined", None, OLD),
        ("delete_upload", "ns/app", None, "u2", 6, "quarantined", None, OLD),
    )
    rows = run("execution_summary", actions=actions)
    assert pick(rows, "action status count size reasons") == sorted(
        [
            ("delete_blob", "quarantined", 1, 10, None),
            ("delete_blob", "skipped", 1, 20, ["an Image references it now"]),
            ("delete_upload", "quarantined", 2, 11, None),
        ],
        key=repr,
    )


def test_quarantine_restore_moves_back_what_the_plan_run_again_no_longer_deletes(
    run: Any,
) -> None:
    """Each quarantined key follows the action that removes it in the re-plan: a blob the
    re-plan keeps (a push linked it since: young) comes back with its layer link; a manifest
    link comes back with its tag index link; a repository still deleted keeps every file in
    quarantine, even one whose own action the re-plan would not take; a key that fits no
    layout comes back; what is still garbage stays."""
    q1, q2 = "20260101T030000000000Z-aaaaaa", "20260102T030000000000Z-bbbbbb"
    keys = table(
        "quarantine key kind repository digest tag upload_id size",
        (q1, "blobs/a", "blob", None, A, None, None, 10),
        (q1, "repositories/ns/app/_layers/a", "layer_link", "ns/app", A, None, None, 71),
        (q1, "blobs/b", "blob", None, B, None, None, 20),
        (q1, "repositories/ns/app/_manifests/rev/c", "manifest_link", "ns/app", C, None, None, 71),
        (
            q1,
            "repositories/ns/app/_manifests/tags/v1/index/c",
            "tag_index",
            "ns/app",
            C,
            "v1",
            None,
            71,
        ),
        (q2, "repositories/gone/app/_layers/a", "layer_link", "gone/app", A, None, None, 71),
        (
            q2,
            "repositories/gone/app/_manifests/tags/v1/current/link",
            "tag_current",
            "gone/app",
            None,
            "v1",
            None,
            71,
        ),
        (q2, "repositories/ns/app/_uploads/u1/data", "upload_file", "ns/app", None, None, "u1", 5),
        (q2, "odd/file", None, None, None, None, None, 1),
    )
    replan = table(
        "action repository digest upload_id verdict kept_because",
        ("delete_blob", None, A, None, "keep", "young"),
        ("delete_blob", None, B, None, "delete", None),
        ("delete_repository", "gone/app", None, None, "delete", None),
        ("delete_upload", "ns/app", None, "u1", "delete", None),
    )
    rows = run("quarantine_restore", quarantined_keys=keys, recheck_plan_actions=replan)
    assert pick(rows, "quarantine key reason") == sorted(
        [
            (q1, "blobs/a", "kept when re-checked: young"),
            (
                q1,
                "repositories/ns/app/_layers/a",
                "no longer planned when re-checked: something refers to it again",
            ),
            (
                q1,
                "repositories/ns/app/_manifests/rev/c",
                "no longer planned when re-checked: something refers to it again",
            ),
            (
                q1,
                "repositories/ns/app/_manifests/tags/v1/index/c",
                "no longer planned when re-checked: something refers to it again",
            ),
            (q2, "odd/file", "not a file the plan judges"),
        ],
        key=repr,
    )


def test_recover_images_builds_each_image_and_lists_before_their_children(run: Any) -> None:
    M, LST, X = digest("m"), digest("lst"), digest("x")
    schema2 = "application/vnd.docker.distribution.manifest.v2+json"
    index = "application/vnd.oci.image.index.v1+json"
    given = {
        "check_lost_found": table(
            "namespace name repository digest tag",
            ("ns", "app", "ns/app", M, "lost-found-m"),
            ("ns", "app", "ns/app", LST, "lost-found-lst"),
        ),
        "lost_manifests": table(
            "digest media_type layer_order", (M, schema2, "ascending"), (LST, index, None)
        ),
        "lost_manifest_references": table(
            "digest reference kind position size media_type architecture os",
            (M, CFG, "config", 0, 3, "config", None, None),
            (M, L2, "layer", 1, None, "tar", None, None),  # no size: the stored blob's
            (M, L1, "layer", 0, 11, "tar", None, None),
            (LST, M, "manifest", 0, 100, schema2, "amd64", "linux"),
            (LST, X, "manifest", 1, 100, schema2, "arm64", "linux"),
        ),
        "blobs": table("digest size", (L2, 22)),
        "images": table(
            "image managed docker_image_reference",
            (A, True, "registry.local:5000/ns/other@" + A),
            (B, True, "registry.local:5000/ns/other@" + B),
            (C, True, "elsewhere:5000/ns/other@" + C),
        ),
    }
    rows = run("recover_images", **given)
    assert [row["digest"] for row in rows] == [M, LST]  # a list after its children
    image, listed = rows
    assert image["docker_image_reference"] == f"registry.local:5000/ns/app@{M}"
    assert (image["is_list"], image["config_digest"]) == (False, CFG)
    assert [(la["digest"], la["size"]) for la in image["layers"]] == [(L1, 11), (L2, 22)]
    assert (listed["is_list"], listed["missing_children"]) == (True, [X])
    assert [m["architecture"] for m in listed["manifests"]] == ["amd64", "arm64"]
    named = run("recover_images", {"registry_host": "given:443"}, **given)
    assert named[0]["docker_image_reference"] == f"given:443/ns/app@{M}"


def test_warehouse_trend_is_stored_and_reclaimable_bytes_per_prune_run() -> None:
    day1, day2 = OLD.date(), YOUNG.date()
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(
            "CREATE TABLE runs AS SELECT * FROM (VALUES "
            f"(DATE '{day1}', 'r1', TIMESTAMPTZ '{OLD}'), "
            f"(DATE '{day2}', 'r2', TIMESTAMPTZ '{YOUNG}'), "
            f"(DATE '{day2}', 'check', TIMESTAMPTZ '{YOUNG}')"  # a check run has no plan
            ") AS t (snapshot_date, run, metadata_started_at)"
        )
        con.execute(
            "CREATE TABLE blobs AS SELECT * FROM (VALUES "
            f"(DATE '{day1}', 'r1', 10), (DATE '{day1}', 'r1', 20), (DATE '{day2}', 'r2', 5), "
            f"(DATE '{day2}', 'check', 99)"
            ") AS t (snapshot_date, run, size)"
        )
        con.execute(
            "CREATE TABLE plan_summary AS SELECT * FROM (VALUES "
            f"(DATE '{day1}', 'r1', 'blobs', 'delete', 7), "
            f"(DATE '{day1}', 'r1', 'blobs', 'keep', 1000), "
            f"(DATE '{day1}', 'r1', 'uploads', 'delete', 1000), "
            f"(DATE '{day2}', 'r2', 'blobs', 'delete', 3)"
            ") AS t (snapshot_date, run, category, action, size)"
        )
        rows = con.execute(query_text("warehouse_trend")).fetchall()
    assert rows == [(day1, "r1", OLD, 30, 7), (day2, "r2", YOUNG, 5, 3)]

"""Given/expect tests of the models that decide what is deleted, and in which order.

Each model runs over small hand-written tables (given) and its rows are compared with the
rows written out by hand (expect): sql/execution/plan_actions.sql (the plan as actions),
sql/execution/prune_actions.sql (what is left to delete, with tag index entries),
sql/execution/execution_queue.sql (what the re-check protects), and the re-check itself: the
plan's own models run again over re-read tables (tasks/execution.py replan), then the queue of
each phase.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regprune.models import SnapshotDatabase, plan_variables, query_text
from regprune.tables import SCHEMAS, SNAPSHOT_TABLES
from regprune.tasks.analysis import write_plan
from regprune.tasks.execution import build_execution_queue, overlay, replan

STARTED = datetime(2026, 1, 15, 3, 0, tzinfo=UTC)
OLD = STARTED - timedelta(days=30)
YOUNG = STARTED + timedelta(minutes=5)
"""Written after the snapshot started: inside any grace period."""
VARIABLES = plan_variables(STARTED, timedelta(hours=24), timedelta(days=7))


def digest(name: str) -> str:
    return "sha256:" + name * 64 if len(name) == 1 else "sha256:" + name.ljust(64, "0")


S = pa.string()
PLAN_SCHEMAS = {
    "plan_repositories": pa.schema([("repository", S), ("action", S), ("kept_because", S)]),
    "plan_manifest_links": pa.schema(
        [("repository", S), ("digest", S), ("action", S), ("kept_because", S)]
    ),
    "plan_blobs": pa.schema(
        [("digest", S), ("size", pa.int64()), ("action", S), ("kept_because", S)]
    ),
    "plan_layer_links": pa.schema(
        [("repository", S), ("digest", S), ("action", S), ("kept_because", S)]
    ),
    "plan_uploads": pa.schema(
        [
            ("repository", S),
            ("upload_id", S),
            ("size", pa.int64()),
            ("action", S),
            ("kept_because", S),
        ]
    ),
}
ACTION_COLUMNS = [
    ("phase", pa.int32()),
    ("action", S),
    ("repository", S),
    ("digest", S),
    ("upload_id", S),
    ("size", pa.int64()),
    ("shard", S),
]
GIVEN_SCHEMAS = {
    **SCHEMAS,
    **PLAN_SCHEMAS,
    "plan_actions": pa.schema([*ACTION_COLUMNS, ("verdict", S), ("kept_because", S)]),
    "recheck_plan_actions": pa.schema([*ACTION_COLUMNS, ("verdict", S), ("kept_because", S)]),
    "prune_actions": pa.schema([*ACTION_COLUMNS, ("tags", pa.list_(S))]),
    "completed_actions": SCHEMAS["actions"],
}


def run_model(model: str, given: dict[str, list[dict[str, Any]]], columns: str) -> list[tuple]:
    """``model`` over the given tables only (every other table it reads is missing)."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        for name, value in VARIABLES.items():
            con.execute(f"SET VARIABLE {name} = ?", [value])
        con.execute(query_text("macros"))
        for table, rows in given.items():
            data = pa.Table.from_pylist(rows, schema=GIVEN_SCHEMAS[table])
            con.register(f"_{table}", data)
            con.execute(f'CREATE TEMP TABLE "{table}" AS SELECT * FROM "_{table}"')
        con.execute(f'CREATE TEMP VIEW "{model}" AS {query_text(model).strip().rstrip(";")}')
        return con.execute(f'SELECT {columns} FROM "{model}"').fetchall()


# --- sql/execution/plan_actions.sql ---------------------------------------------------------------


def test_plan_actions_maps_every_plan_row_to_its_action_phase_and_shard() -> None:
    blob, kept_blob, link = digest("ab"), digest("cd"), digest("ef")
    given = {
        "plan_repositories": [
            {"repository": "gone/app", "action": "delete", "kept_because": None},
            {"repository": "gone/new", "action": "keep", "kept_because": "young"},
        ],
        "plan_manifest_links": [
            {"repository": "ns/app", "digest": link, "action": "delete", "kept_because": None}
        ],
        "plan_blobs": [
            {"digest": blob, "size": 10, "action": "delete", "kept_because": None},
            {"digest": kept_blob, "size": 20, "action": "keep", "kept_because": "young"},
        ],
        "plan_layer_links": [
            {"repository": "ns/app", "digest": blob, "action": "delete", "kept_because": None}
        ],
        "plan_uploads": [
            {
                "repository": "ns/app",
                "upload_id": "u1",
                "size": 5,
                "action": "delete",
                "kept_because": None,
            }
        ],
    }
    columns = "phase, action, repository, digest, upload_id, size, shard, verdict, kept_because"
    assert sorted(run_model("plan_actions", given, columns), key=str) == sorted(
        [
            (1, "delete_repository", "gone/app", None, None, None, "gone/app", "delete", None),
            (1, "delete_repository", "gone/new", None, None, None, "gone/new", "keep", "young"),
            (1, "delete_manifest_link", "ns/app", link, None, None, "ns/app", "delete", None),
            (2, "delete_blob", None, blob, None, 10, "ab", "delete", None),
            (2, "delete_blob", None, kept_blob, None, 20, "cd", "keep", "young"),
            (3, "delete_layer_link", "ns/app", blob, None, None, "ns/app", "delete", None),
            (3, "delete_upload", "ns/app", None, "u1", 5, "ns/app", "delete", None),
        ],
        key=str,
    )


# --- sql/execution/prune_actions.sql --------------------------------------------------------------


def action(
    phase: int,
    name: str,
    repository: str | None = None,
    digest: str | None = None,
    upload_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    shard = repository or (digest[7:9] if digest else None)
    return {
        "phase": phase,
        "action": name,
        "repository": repository,
        "digest": digest,
        "upload_id": upload_id,
        "size": None,
        "shard": shard,
        **extra,
    }


def test_prune_actions_are_the_deletions_with_their_tags_minus_what_is_done() -> None:
    """Kept rows are no actions; a manifest link carries the tags whose index lists it; an
    action an earlier attempt quarantined, purged or found gone is left out; one skipped,
    failed, only intended (killed before its outcome), would-quarantine (a dry run), or
    quarantined and then restored by its re-check is not: its latest outcome decides."""
    a, b, c, d = digest("a1"), digest("b2"), digest("c3"), digest("d4")
    e, f, g, h = digest("e5"), digest("f6"), digest("g7"), digest("h8")
    plan_actions = [
        action(1, "delete_repository", "gone/app", verdict="delete"),
        action(1, "delete_manifest_link", "ns/app", a, verdict="delete"),
        action(1, "delete_manifest_link", "ns/app", b, verdict="keep", kept_because="young"),
        action(2, "delete_blob", None, a, verdict="delete"),
        action(2, "delete_blob", None, b, verdict="delete"),
        action(2, "delete_blob", None, c, verdict="delete"),
        action(2, "delete_blob", None, d, verdict="delete"),
        *(action(2, "delete_blob", None, x, verdict="delete") for x in (e, f, g, h)),
        action(3, "delete_upload", "ns/app", None, "u1", verdict="delete"),
    ]
    tag_index = [
        {"repository": "ns/app", "tag": tag, "digest": a, "modified": OLD} for tag in ("v2", "v1")
    ] + [{"repository": "other/app", "tag": "v9", "digest": a, "modified": OLD}]

    def outcome(
        digest: str | None, status: str, name: str = "delete_blob", time: datetime = OLD
    ) -> dict[str, Any]:
        return {"action": name, "digest": digest, "status": status, "time": time}

    later = OLD + timedelta(seconds=1)
    completed = [
        outcome(b, "quarantining"),
        outcome(b, "quarantined", time=later),
        outcome(c, "skipped"),
        outcome(d, "would-quarantine"),
        outcome(a, "failed"),
        outcome(e, "quarantining"),  # killed before its outcome was written
        outcome(f, "gone"),
        outcome(g, "quarantined"),
        outcome(g, "restored", time=later),  # the re-check found a reference
        outcome(h, "purged"),
        {
            **outcome(None, "quarantined", "delete_upload"),
            "repository": "ns/app",
            "upload_id": "u2",
        },
    ]
    given = {"plan_actions": plan_actions, "tag_index": tag_index, "completed_actions": completed}
    got = run_model("prune_actions", given, "phase, action, repository, digest, upload_id, tags")
    assert got == [
        (1, "delete_repository", "gone/app", None, None, None),
        (1, "delete_manifest_link", "ns/app", a, None, ["v1", "v2"]),
        (2, "delete_blob", None, a, None, None),
        (2, "delete_blob", None, c, None, None),
        (2, "delete_blob", None, d, None, None),
        (2, "delete_blob", None, e, None, None),
        (2, "delete_blob", None, g, None, None),
        (3, "delete_upload", "ns/app", None, "u1", None),
    ]


# --- sql/execution/execution_queue.sql ------------------------------------------------------------


def test_the_queue_skips_what_was_planned_before_and_is_not_planned_now() -> None:
    """An action runs only if the re-plan deletes it too (the key matches with NULLs: a
    blob has no repository); kept now: skipped as kept; gone from the re-plan: skipped."""
    same, kept, gone = digest("a1"), digest("b2"), digest("c3")
    planned = [
        action(1, "delete_repository", "gone/app", tags=None),
        action(1, "delete_repository", "back/app", tags=None),
        action(2, "delete_blob", None, same, tags=None),
        action(2, "delete_blob", None, kept, tags=None),
        action(2, "delete_blob", None, gone, tags=None),
        action(3, "delete_upload", "ns/app", None, "u1", tags=None),
    ]
    now = [
        action(1, "delete_repository", "gone/app", verdict="delete"),
        action(2, "delete_blob", None, same, verdict="delete"),
        action(2, "delete_blob", None, kept, verdict="keep", kept_because="young"),
        action(3, "delete_upload", "ns/app", None, "u1", verdict="delete"),
        action(3, "delete_upload", "ns/app", None, "u2", verdict="delete"),  # not planned before
    ]
    links = [
        {"repository": repository, "digest": same, "modified": OLD}
        for repository in ("ns/web", "ns/app")
    ]
    given = {
        "prune_actions": planned,
        "recheck_plan_actions": now,
        "layer_links": links,
        "completed_actions": [],
    }
    columns = "action, coalesce(repository, digest), blob_repositories, skip_reason"
    assert run_model("execution_queue", given, columns) == [
        ("delete_repository", "back/app", None, NOT_PLANNED),
        ("delete_repository", "gone/app", None, None),
        ("delete_blob", same, ["ns/app", "ns/web"], None),
        ("delete_blob", kept, None, "kept when re-read: young"),
        ("delete_blob", gone, None, NOT_PLANNED),
        ("delete_upload", "ns/app", None, None),
    ]


NOT_PLANNED = "not planned when re-read: kept by the metadata or storage as they are now"


def test_the_queue_says_which_layer_links_lost_their_blob_to_this_run() -> None:
    """A dangling link whose blob this run quarantined (or, dry, would) is not kept by that
    blob's presence: its latest outcome decides, a blob moved back by the re-check or only
    intended does not count."""
    moved, back, intended, other = (digest(n) for n in ("m1", "b2", "i3", "o4"))
    later = OLD + timedelta(seconds=1)
    planned = [
        action(3, "delete_layer_link", "ns/app", d, tags=None)
        for d in (moved, back, intended, other)
    ]
    now = [{**row, "verdict": "delete"} for row in planned]
    completed = [
        {"action": "delete_blob", "digest": moved, "status": "would-quarantine", "time": OLD},
        {"action": "delete_blob", "digest": back, "status": "quarantined", "time": OLD},
        {"action": "delete_blob", "digest": back, "status": "restored", "time": later},
        {"action": "delete_blob", "digest": intended, "status": "quarantining", "time": OLD},
    ]
    given = {
        "prune_actions": planned,
        "recheck_plan_actions": now,
        "completed_actions": completed,
        "layer_links": [],
    }
    got = run_model("execution_queue", given, "digest, blob_removed")
    assert sorted(got) == sorted([(moved, True), (back, False), (intended, False), (other, False)])


# --- the re-check: the plan's own models over re-read tables, then the queue ----------------


def write_tables(folder: Path, tables: dict[str, list[dict[str, Any]]]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for table, rows in tables.items():
        schema = SCHEMAS.get(table) or SCHEMAS[table.removeprefix("young_")]
        out[table] = folder / f"{table}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out[table])
    return out


def image(manifest: str, *layers: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    row = {"image": manifest, "managed": True, "created": OLD}
    blobs = [{"image": manifest, "digest": manifest, "kind": "manifest"}]
    blobs += [
        {"image": manifest, "digest": layer, "kind": "layer", "position": i}
        for i, layer in enumerate(layers)
    ]
    return row, blobs


def repository(name: str) -> dict[str, Any]:
    namespace, _, short = name.partition("/")
    return {"repository": name, "namespace": namespace, "name": short, "valid_name": True}


def link(repository: str, digest: str, modified: datetime = OLD) -> dict[str, Any]:
    return {"repository": repository, "digest": digest, "modified": modified}


M1, L1, M2, G1, G2, G3, M3 = (digest(x) for x in ("a1", "a2", "b1", "c1", "c2", "c3", "d1"))


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    """ns/app has Image M1 (layer L1) tagged; M2 was pushed to it and its Image deleted (tag
    v0's index keeps it); G1, G2 are layers nobody references; gone/old's stream is gone."""
    run = tmp_path / "run"
    m1, m1_blobs = image(M1, L1)
    tables: dict[str, list[dict[str, Any]]] = {table: [] for table in SNAPSHOT_TABLES}
    tables |= {
        "blobs": [{"digest": d, "size": 100, "modified": OLD} for d in (M1, L1, M2, G1, G2, G3)],
        "repositories": [repository("ns/app"), repository("gone/old")],
        "layer_links": [link("ns/app", d) for d in (L1, G1, G2)] + [link("gone/old", G3)],
        "manifest_links": [link("ns/app", M1), link("ns/app", M2)],
        "tag_index": [
            {"repository": "ns/app", "tag": "latest", "digest": M1, "modified": OLD},
            {"repository": "ns/app", "tag": "v0", "digest": M2, "modified": OLD},
        ],
        "images": [m1],
        "image_blobs": m1_blobs,
        "imagestreams": [{"namespace": "ns", "name": "app"}],
        "imagestream_tags": [
            {"namespace": "ns", "name": "app", "tag": "latest", "position": 0, "image": M1}
        ],
        "young_manifests": [],
        "young_manifest_references": [],
    }
    paths = write_tables(run, tables)
    with SnapshotDatabase(run, VARIABLES, extra_tables=paths) as db:
        write_plan(db, run)
    return run


def queue(run: Path, replanned: str | None) -> list[tuple]:
    got = []
    for phase in (1, 2, 3):
        build_execution_queue.fn(str(run), replanned, VARIABLES, phase, str(run / "actions"))
        with duckdb.connect() as con:
            got += con.execute(
                "SELECT phase, action, coalesce(repository, '') || '@' || coalesce(digest, ''),"
                " tags, skip_reason FROM read_parquet(?)",
                [str(run / f"queue-phase{phase}.parquet")],
            ).fetchall()
    return got


PLANNED = [
    (1, "delete_repository", "gone/old@", None),
    (1, "delete_manifest_link", f"ns/app@{M2}", ["v0"]),
    (2, "delete_blob", f"@{G1}", None),
    (2, "delete_blob", f"@{G2}", None),
    (2, "delete_blob", f"@{M2}", None),
    (2, "delete_blob", f"@{G3}", None),
    (3, "delete_layer_link", f"ns/app@{G1}", None),
    (3, "delete_layer_link", f"ns/app@{G2}", None),
]


def test_a_dry_run_queues_the_plan_as_it_is(snapshot: Path) -> None:
    assert sorted(queue(snapshot, None)) == sorted((*row, None) for row in PLANNED)


def test_the_recheck_protects_what_the_plan_made_again_over_the_reread_no_longer_deletes(
    snapshot: Path,
) -> None:
    """Re-read: an Image created since references G1 and M2 (its manifest), the stream of
    gone/old exists again, a push mounted G2 into ns/new (a young link) and M3 (a young
    manifest no Image knows yet, referencing G3). Only the layer links of G1/G2 lose their
    reason (their blobs stay) and M2's link in ns/app (not in that stream's history) stays
    planned."""
    reread = snapshot / "recheck"
    m1, m1_blobs = image(M1, L1)
    m2, m2_blobs = image(M2, G1)
    tables = {
        "images": [m1, m2],
        "image_blobs": m1_blobs + m2_blobs,
        "imagestreams": [{"namespace": "ns", "name": "app"}, {"namespace": "gone", "name": "old"}],
        "repositories": [repository("ns/app"), repository("gone/old"), repository("ns/new")],
        "layer_links": [link("ns/app", d) for d in (L1, G1, G2)]
        + [link("gone/old", G3), link("ns/new", G2, YOUNG)],
        "manifest_links": [link("ns/app", M1), link("ns/app", M2), link("ns/new", M3, YOUNG)],
        "young_manifests": [{"digest": M3}],
        "young_manifest_references": [{"digest": M3, "reference": G3, "kind": "layer"}],
    }
    replanned = replan.fn(str(snapshot), write_tables(reread, tables), VARIABLES, str(reread))
    skipped = {
        f"@{G1}": NOT_PLANNED,  # an Image references it now
        f"@{M2}": NOT_PLANNED,
        "gone/old@": NOT_PLANNED,  # its ImageStream exists now
        f"@{G2}": "kept when re-read: young",  # linked since
        f"@{G3}": "kept when re-read: young",  # a manifest pushed since references it
        f"ns/app@{G1}": NOT_PLANNED,  # its blob is no longer deleted
        f"ns/app@{G2}": NOT_PLANNED,
    }
    assert sorted(queue(snapshot, replanned)) == sorted(
        (*row, skipped.get(row[2])) for row in PLANNED
    )


def test_the_reread_storage_is_laid_over_the_snapshot(tmp_path: Path) -> None:
    """A link read again replaces the snapshot's (its new time decides), one gone since
    stays (still planned: its rest goes, and deleting what is gone counts as done), a new
    one is added."""
    snapshot = write_tables(tmp_path / "snap", {"layer_links": [link("a/b", G1), link("a/b", G2)]})
    reread = write_tables(
        tmp_path / "reread", {"layer_links": [link("a/b", G2, YOUNG), link("c/d", G3, YOUNG)]}
    )
    overlay("layer_links", reread["layer_links"], snapshot["layer_links"])
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        got = con.execute(
            "SELECT repository, digest, modified FROM read_parquet(?) ORDER BY ALL",
            [str(reread["layer_links"])],
        ).fetchall()
    assert got == [("a/b", G1, OLD), ("a/b", G2, YOUNG), ("c/d", G3, YOUNG)]

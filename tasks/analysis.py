"""Prefect tasks that run the ``sql/`` models over a snapshot and write their results.

The set logic is all in ``sql/``: these tasks choose the models, bind the parameters
(grace period, upload age, namespace) and write ``plan_*.parquet`` / ``check_*.parquet``
next to the snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pyarrow.parquet as pq
from prefect import task

from regprune.manifests import MANIFEST_TABLES
from regprune.models import (
    CHECK_FINDINGS,
    LOST_FOUND_MODELS,
    PLAN_INTERMEDIATES,
    PLAN_OUTPUTS,
    PROJECTED_TABLES,
    PROJECTION_FILE,
    UNKNOWN_MANIFEST_MODELS,
    DuckDBSettings,
    SnapshotDatabase,
    plan_variables,
)
from regprune.snapshots import snapshot_started_at
from regprune.tables import empty_table, merge_parts
from regprune.units import parse_duration


def _plan_variables(snapshot_dir: str, keep_younger_than: str, upload_max_age: str) -> dict:
    return plan_variables(
        snapshot_started_at(snapshot_dir),
        parse_duration(keep_younger_than),
        parse_duration(upload_max_age),
    )


@task(name="find-unknown-manifests")
def find_unknown_manifests(
    snapshot_dir: str,
    keep_younger_than: str = "24h",
    settings: DuckDBSettings | None = None,
) -> list[str]:
    """Digests of young manifests no Image knows: their references must be read."""
    variables = _plan_variables(snapshot_dir, keep_younger_than, "0s")
    with SnapshotDatabase(snapshot_dir, variables, settings) as db:
        db.define(*UNKNOWN_MANIFEST_MODELS)
        return [row["digest"] for row in db.records("SELECT digest FROM plan_unknown_manifests")]


@task(name="plan-hard-prune")
def plan_hard_prune(
    snapshot_dir: str,
    manifest_parts: list[dict[str, str]],
    keep_younger_than: str = "24h",
    upload_max_age: str = "7d",
    settings: DuckDBSettings | None = None,
) -> dict[str, int]:
    """Write ``plan_*.parquet``; returns row counts per output."""
    variables = _plan_variables(snapshot_dir, keep_younger_than, upload_max_age)
    extra = merge_manifest_parts(manifest_parts, Path(snapshot_dir), "young")
    with SnapshotDatabase(snapshot_dir, variables, settings, extra) as db:
        return write_plan(db, Path(snapshot_dir))


IMAGES_PLAN_TABLES = ("images_plan", "images_tag_revisions")
"""What a projection reads of a prune-images run folder (its plan's Parquet)."""


class ProjectionError(ValueError):
    """The folder given to project from holds no prune-images plan."""


@task(name="project-prune-images-plan")
def project_images_plan(
    snapshot_dir: str, images_run_dir: str, settings: DuckDBSettings | None = None
) -> dict[str, Any]:
    """Write the snapshot's cluster tables as prune-images' plan in ``images_run_dir`` would
    leave them (sql/images/projected_*.sql) and PROJECTION_FILE, so the hard prune plans over them;
    returns what the projection removed. For a dry run's report only."""
    out = Path(snapshot_dir)
    (out / PROJECTION_FILE).unlink(missing_ok=True)
    plan = {table: Path(images_run_dir) / f"{table}.parquet" for table in IMAGES_PLAN_TABLES}
    missing = [str(path) for path in plan.values() if not path.exists()]
    if missing:
        raise ProjectionError(
            f"{images_run_dir} holds no prune-images plan ({', '.join(missing)} missing): "
            "give the run folder of a prune-images run that planned"
        )
    with SnapshotDatabase(out, {}, settings, plan, projected=False) as db:
        db.define(*PROJECTED_TABLES.values())
        removed = {
            table: db.records(f'SELECT count(*) AS n FROM "{table}"')[0]["n"]
            - db.write(model, out / f"{model}.parquet")
            for table, model in PROJECTED_TABLES.items()
        }
    projection = {
        "images_plan": str(images_run_dir),
        "images_deleted": removed["images"],
        "revisions_removed": removed["imagestream_tags"],
    }
    (out / PROJECTION_FILE).write_text(json.dumps(projection, indent=2) + "\n")
    return projection


def clear_projection(snapshot_dir: str) -> None:
    """Plan over the snapshot's own tables again (a folder projected before, reused)."""
    out = Path(snapshot_dir)
    (out / PROJECTION_FILE).unlink(missing_ok=True)
    for model in PROJECTED_TABLES.values():
        (out / f"{model}.parquet").unlink(missing_ok=True)


def write_plan(db: SnapshotDatabase, out: Path) -> dict[str, int]:
    """The plan's models over the tables ``db`` holds, written as ``out/plan_*.parquet``
    (the views then read the files): the plan, and the re-plan over the tables re-read
    before deleting (tasks/execution.py), so both judge by one rule set."""
    with TemporaryDirectory(prefix="_plan-", dir=out) as scratch:
        db.define(*PLAN_INTERMEDIATES, *PLAN_OUTPUTS)
        for model in PLAN_INTERMEDIATES:
            db.write(model, Path(scratch) / f"{model}.parquet")
        return {m: db.write(m, out / f"{m}.parquet") for m in PLAN_OUTPUTS}


def _check_variables(namespace: str | None) -> dict[str, Any]:
    return {"namespace": namespace or None}


@task(name="find-inconsistencies")
def find_inconsistencies(
    snapshot_dir: str, namespace: str | None = None, settings: DuckDBSettings | None = None
) -> list[str]:
    """Write broken tags, broken images and the lost-found candidates; return the distinct
    manifest digests of the candidates, which must be read from storage."""
    out = Path(snapshot_dir)
    with SnapshotDatabase(snapshot_dir, _check_variables(namespace), settings) as db:
        db.define(*CHECK_FINDINGS)
        for model in CHECK_FINDINGS:
            db.write(model, out / f"{model}.parquet")
        found = db.records("SELECT DISTINCT digest FROM check_lost_candidates ORDER BY digest")
    return [row["digest"] for row in found]


def merge_manifest_parts(parts: list[dict[str, str]], out: Path, prefix: str) -> dict[str, Path]:
    """Merge read manifests into ``<prefix>_manifests.parquet`` and
    ``<prefix>_manifest_references.parquet``; returns view name -> file."""
    views = {}
    for table in MANIFEST_TABLES:
        view = f"{prefix}_{table}"
        views[view] = out / f"{view}.parquet"
        merge_parts(table, [p[table] for p in parts], views[view])
    return views


@task(name="verify-lost-manifests")
def verify_lost_manifests(
    snapshot_dir: str,
    manifest_parts: list[dict[str, str]],
    namespace: str | None = None,
    settings: DuckDBSettings | None = None,
) -> dict[str, int]:
    """Merge the parsed manifests and decide which candidates are restorable."""
    out = Path(snapshot_dir)
    extra = merge_manifest_parts(manifest_parts, out, "lost")
    with SnapshotDatabase(snapshot_dir, _check_variables(namespace), settings, extra) as db:
        db.define(*LOST_FOUND_MODELS)
        return {m: db.write(m, out / f"{m}.parquet") for m in LOST_FOUND_MODELS}


SANITY_PROBLEMS = {
    "no-images": "the metadata lists no Images while the storage holds {blobs} blobs: every "
    "one of them would be deleted (an empty or failed dump?)",
    "no-known-manifests": "none of the {stored_manifests} manifests stored is among the "
    "metadata's {images} Images: metadata of another cluster or registry? Every image would "
    "be deleted",
    "unreadable-images": "{image_anomalies} Image(s) could not be read in full (see "
    "metadata_anomalies): what they reference cannot be proven, so blobs in use could be "
    "deleted",
    "unresolved-images": "{unresolved_images} Image(s) name neither their config nor their "
    "children (no dockerImageMetadata, no dockerImageManifest) and their stored manifest cannot "
    "be read: what they reference cannot be proven, so blobs in use could be deleted",
    "streams-missing": "the metadata is a partial view: {unseen_repositories} repositories in "
    "{unseen_count} namespace(s) ({unseen_shown}) hold Images but no ImageStream of their "
    "namespace is in it, while it has the streams of {stream_namespaces} namespace(s) only "
    "(a dump of some namespaces?): they would be deleted whole. Take a whole-cluster dump "
    "('oc get images,imagestreams -A -o json') or list the cluster (--metadata kube); if "
    "those projects were deleted, prune their Images first (prune-images)",
    "images-missing": "the metadata is a partial view: {tagged_without_image} of the "
    "{tagged_manifests} stored manifests that its ImageStreams' tags name are not among its "
    "Images (a dump of some Images?): their blobs would be deleted. Take a whole-cluster dump "
    "('oc get images,imagestreams -A -o json') or list the cluster (--metadata kube)",
}
UNSEEN_SHOWN = 3
"""Namespaces a 'streams-missing' message names (the rest are counted)."""


@task(name="check-plan-sanity")
def check_plan_sanity(run_dir: str, settings: DuckDBSettings | None = None) -> list[str]:
    """Why this metadata may not decide deletions in this storage (sql/plan/plan_sanity.sql),
    one sentence per reason; empty when it may."""
    return sanity_problems(run_dir, settings)


@task(name="check-purge-sanity")
def check_purge_sanity(run_dir: str, settings: DuckDBSettings | None = None) -> list[str]:
    """Why a purge's fresh snapshot may not judge what the quarantines hold: the plan's
    reasons (a partial view would purge what the rest of the cluster uses), but for Images
    whose manifest a purge has not read yet (its re-check reads them)."""
    return sanity_problems(run_dir, settings, ignore=frozenset({"unresolved-images"}))


def sanity_problems(
    run_dir: str, settings: DuckDBSettings | None = None, ignore: frozenset[str] = frozenset()
) -> list[str]:
    """sql/plan/plan_sanity.sql's problems of a snapshot folder (but ``ignore``), as sentences."""
    read = Path(run_dir) / "young_manifests.parquet"
    if not read.exists():  # a plan made before manifests of Images were read
        pq.write_table(empty_table("manifests"), read)
    with SnapshotDatabase(run_dir, {}, settings, {"young_manifests": read}) as db:
        db.define("image_manifests_to_read", "plan_sanity")
        row = db.records("SELECT * FROM plan_sanity")[0]
        coverage = db.records("SELECT * FROM view_coverage")[0]
    unseen = coverage["unseen_namespaces"]
    shown = ", ".join(unseen[:UNSEEN_SHOWN]) + (", ..." if len(unseen) > UNSEEN_SHOWN else "")
    values = {**coverage, **row, "unseen_count": len(unseen), "unseen_shown": shown}
    return [
        SANITY_PROBLEMS[problem].format(**values)
        for problem in row["problems"]
        if problem not in ignore
    ]

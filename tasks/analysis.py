"""Prefect tasks that run the ``sql/`` models over a snapshot and write their results.

The set logic is all in ``sql/``: these tasks choose the models, bind the parameters
(grace period, upload age, namespace) and write ``plan_*.parquet`` / ``check_*.parquet``
next to the snapshot.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from prefect import task

from regprune.tasks.manifests import MANIFEST_TABLES
from regprune.tasks.queries import (
    CHECK_FINDINGS,
    CHECK_MODELS,
    LOST_FOUND_MODELS,
    PLAN_INTERMEDIATES,
    PLAN_MODELS,
    PLAN_OUTPUTS,
    UNKNOWN_MANIFEST_MODELS,
    DuckDBSettings,
    SnapshotDatabase,
    plan_variables,
)
from regprune.tasks.tables import SNAPSHOT_FILE, merge_parts
from regprune.tasks.units import parse_duration


class SnapshotError(RuntimeError):
    """The folder is not a complete snapshot."""


def read_snapshot_summary(snapshot_dir: str | Path) -> dict[str, Any]:
    """``snapshot.json`` is written last: without it the snapshot is incomplete."""
    path = Path(snapshot_dir) / SNAPSHOT_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SnapshotError(
            f"{snapshot_dir} is not a complete snapshot (no {SNAPSHOT_FILE}); "
            "take one with 'regprune snapshot'"
        ) from exc
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"cannot read {path}: {exc}") from exc


def snapshot_started_at(snapshot_dir: str | Path) -> datetime:
    """The earliest start: metadata is listed first, so grace periods count from it."""
    return datetime.fromisoformat(read_snapshot_summary(snapshot_dir)["metadata_started_at"])


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
    with (
        SnapshotDatabase(snapshot_dir, variables, settings, extra) as db,
        TemporaryDirectory(prefix="_plan-", dir=snapshot_dir) as scratch,
    ):
        db.define("keep_set", *PLAN_MODELS)
        for model in PLAN_INTERMEDIATES:
            db.write(model, Path(scratch) / f"{model}.parquet")
        return {m: db.write(m, Path(snapshot_dir) / f"{m}.parquet") for m in PLAN_OUTPUTS}


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
        db.define(*CHECK_MODELS)
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
        db.define(*CHECK_MODELS, *LOST_FOUND_MODELS)
        return {m: db.write(m, out / f"{m}.parquet") for m in LOST_FOUND_MODELS}

"""Prefect tasks that run the ``sql/`` models over a snapshot and write their results.

The set logic is all in ``sql/``: these tasks choose the models, bind the parameters
(grace period, upload age, namespace) and write ``plan_*.parquet`` / ``check_*.parquet``
next to the snapshot.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import task

from regprune.tasks.queries import (
    CHECK_FINDINGS,
    CHECK_MODELS,
    LOST_FOUND_MODELS,
    PLAN_MODELS,
    PLAN_OUTPUTS,
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


@task(name="plan-hard-prune")
def plan_hard_prune(
    snapshot_dir: str,
    keep_younger_than: str = "24h",
    upload_max_age: str = "7d",
    settings: DuckDBSettings | None = None,
) -> dict[str, int]:
    """Write ``plan_*.parquet``; returns row counts per output."""
    variables = plan_variables(
        snapshot_started_at(snapshot_dir),
        parse_duration(keep_younger_than),
        parse_duration(upload_max_age),
    )
    with SnapshotDatabase(snapshot_dir, variables, settings) as db:
        db.define(*PLAN_MODELS)
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


@task(name="verify-lost-manifests")
def verify_lost_manifests(
    snapshot_dir: str,
    manifest_parts: list[dict[str, str]],
    namespace: str | None = None,
    settings: DuckDBSettings | None = None,
) -> dict[str, int]:
    """Merge the parsed manifests and decide which candidates are restorable."""
    out = Path(snapshot_dir)
    extra = {}
    for table in ("lost_manifests", "lost_manifest_references"):
        extra[table] = out / f"{table}.parquet"
        merge_parts(table, [p[table] for p in manifest_parts], extra[table])
    with SnapshotDatabase(snapshot_dir, _check_variables(namespace), settings, extra) as db:
        db.define(*CHECK_MODELS, *LOST_FOUND_MODELS)
        return {m: db.write(m, out / f"{m}.parquet") for m in LOST_FOUND_MODELS}

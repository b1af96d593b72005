"""The second phase of the two-phase delete, the library part: the run's quarantine record
(``quarantine.json``), what the quarantines hold as rows, the tables that lay them back under
the storage as it is now, and moving keys back or purging them, each recorded ahead in the
run's ``quarantine_log/`` (regprune/audit.py). Its tasks (list, judge with
sql/execution/quarantine_restore.sql, restore, purge, tell the registry) are
tasks/quarantine.py; the first phase's batch executor is regprune/prune_execute.py.

A run's quarantine is ``_regprune/quarantine/<id>/`` (regprune/layout.py); the run folder's
``quarantine.json`` says which id is the run's and of which storage (``regprune undo`` and
``regprune purge`` read it)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from regprune import interrupts
from regprune.audit import AuditTrail
from regprune.layout import (
    classify_blob_keys,
    classify_repository_keys,
    new_quarantine_id,
)
from regprune.prune_execute import (
    EPOCH,
    INTENTS,
    PURGED,
    RESTORED,
    WOULD_PURGE,
    WOULD_RESTORE,
    ExecutionSettings,
    run_storage,
)
from regprune.resume import Identity, storage_identity
from regprune.storage import StorageSpec
from regprune.storage.base import DELETED, MOVED, PRESENT, WOULD_DELETE, WOULD_MOVE, is_error
from regprune.tables import SCHEMAS, SORT_KEYS, STORAGE_TABLES, sql_literal
from regprune.twophase import QUARANTINE_FILE, read_quarantine_record

QUARANTINE_LOG = "quarantine_log"
"""The run folder's key-level audit of restores and purges (a folder of parts, merged into
``quarantine_log.parquet``; regprune/tables.py)."""
RESTORE_STATUS = {MOVED: RESTORED, PRESENT: RESTORED, WOULD_MOVE: WOULD_RESTORE}
PURGE_STATUS = {DELETED: PURGED, WOULD_DELETE: WOULD_PURGE}
CHUNK = 1000
"""Keys a restore or purge records ahead and moves at once (one bulk request on S3)."""
JUDGED_TABLES = tuple(t for t in STORAGE_TABLES if t != "storage_anomalies")
"""The storage tables a quarantine's walk adds to the re-check's (its anomalies stay out:
what the registry's tree holds is judged, not the quarantine's oddities)."""


@dataclass(frozen=True)
class RunQuarantine:
    """What ``quarantine.json`` records."""

    id: str
    storage: str
    started_at: str
    dry_run: bool = False
    storage_identity: Identity | None = None
    """Where the storage is (regprune/resume.py: a folder's real path, a bucket with its
    endpoint); None in a quarantine.json of an older regprune."""

    @classmethod
    def read(cls, run_dir: str | Path) -> RunQuarantine | None:
        """The record, checked (:func:`regprune.twophase.read_quarantine_record`)."""
        record = read_quarantine_record(run_dir)
        return None if record is None else cls(**record)

    def write(self, run_dir: str | Path) -> None:
        path = Path(run_dir) / QUARANTINE_FILE
        part = path.with_suffix(".part")
        part.write_text(json.dumps(asdict(self), indent=2) + "\n")
        part.replace(path)


def other_storage(spec: StorageSpec, quarantine: RunQuarantine) -> str | None:
    """Why ``spec`` is not the storage the run quarantined in (None: it is): the same
    folder however written, the same bucket through the same endpoint (an ``undo`` or
    ``purge`` of a run is that run's job, as ``--resume`` is: regprune/resume.py)."""
    recorded = quarantine.storage_identity
    if recorded is None:  # an older quarantine.json: its storage as displayed
        other = StorageSpec(quarantine.storage)
        if spec.scheme == "file" and other.scheme == "file":
            same = spec.local_root().resolve() == other.local_root().resolve()
        else:
            same = spec.display.rstrip("/") == quarantine.storage.rstrip("/")
        return None if same else f"in {quarantine.storage}, not in {spec.display}"
    now = storage_identity(spec)
    if now == recorded:
        return None
    return f"in {_where(quarantine.storage, recorded)}, not in {_where(spec.display, now)}"


def _where(display: str, identity: Identity) -> str:
    """A storage as a message names it: as displayed, with the endpoint it is reached at."""
    endpoint = identity.get("endpoint")
    return f"{display} (endpoint {endpoint})" if endpoint else display


def quarantine_of_run(run_dir: str, spec: StorageSpec, dry_run: bool) -> RunQuarantine:
    """The run's quarantine: the one an earlier attempt chose (``--resume``), or a new one
    (a dry run's does not stand for a confirmed run's: its id tells when moving began)."""
    found = RunQuarantine.read(run_dir)
    if found is not None and (dry_run or not found.dry_run):
        return found
    now = datetime.now(UTC)
    chosen = RunQuarantine(
        new_quarantine_id(now), spec.display, now.isoformat(), dry_run, storage_identity(spec)
    )
    chosen.write(run_dir)
    return chosen


# --- what the quarantines hold ------------------------------------------------------------


def classify_keys(quarantine: str, keys: list[str], sizes: list[int]) -> pa.Table:
    """Keys as the layout reads them, as rows of ``quarantined_keys``."""
    schema = SCHEMAS["quarantined_keys"]
    if not keys:
        return schema.empty_table()
    array = pa.array(keys, pa.string())
    blobs, repos = classify_blob_keys(array), classify_repository_keys(array)
    is_blob = pc.is_valid(blobs["digest"])
    is_repo = pc.and_(pc.invert(is_blob), pc.is_valid(repos["kind"]))
    none = pa.nulls(len(keys), pa.string())
    return pa.table(
        {
            "quarantine": pa.array([quarantine] * len(keys), pa.string()),
            "key": array,
            "kind": pc.if_else(is_blob, "blob", pc.if_else(is_repo, repos["kind"], none)),
            "repository": pc.if_else(is_repo, repos["repository"], none),
            "digest": pc.if_else(
                is_blob, blobs["digest"], pc.if_else(is_repo, repos["digest"], none)
            ),
            "tag": pc.if_else(is_repo, repos["tag"], none),
            "upload_id": pc.if_else(is_repo, repos["upload_id"], none),
            "size": pa.array(sizes, pa.int64()),
        },
        schema=schema,
    )


def own_keys(actions: Path, quarantine: str, statuses: Iterable[str], dest: Path) -> int:
    """The files of the run's actions whose latest status is one of ``statuses``, as rows
    of ``quarantined_keys`` in ``dest``: what a dry run would have quarantined (a dry run's
    quarantine holds nothing)."""
    wanted = ", ".join(sql_literal(s) for s in statuses)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(
            f"SELECT DISTINCT unnest(files) AS key FROM read_parquet({sql_literal(actions)}) "
            "QUALIFY row_number() OVER (PARTITION BY action, repository, digest, upload_id "
            f"ORDER BY time DESC, status IN {tuple(INTENTS)}) = 1 "
            f"AND status IN ({wanted})"
        ).fetchall()
    files = sorted(row[0] for row in rows)
    pq.write_table(classify_keys(quarantine, files, [0] * len(files)), dest)
    return len(files)


# --- the tables of the re-check -----------------------------------------------------------


def lay_under(
    now: dict[str, Path], quarantined: list[dict[str, Path]], out: Path, stale: set[str]
) -> None:
    """Each storage table with the quarantines' rows laid under it, into
    ``out/<table>.parquet``: a quarantined object counts as present and old (it was judged
    garbage when it moved; what refers to it since is young). A key both in a quarantine
    and in ``now`` is taken from ``now`` when that table was read again (a push wrote it
    since), from the quarantine when ``now`` holds the snapshot's rows (``stale``: the
    snapshot still lists what this run moved, with its times from before)."""
    out.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        for table in JUDGED_TABLES:
            current = f"read_parquet({sql_literal(now[table])})"
            parts = [sql_literal(q[table]) for q in quarantined if table in q]
            dest = out / f"{table}.parquet"
            if not parts:
                con.execute(f"COPY (FROM {current}) TO {sql_literal(dest)} (FORMAT parquet)")
                continue
            keys = SORT_KEYS[table]
            old = (
                " REPLACE (TIMESTAMPTZ '1970-01-01 00:00:00+00' AS modified)"
                if "modified" in SCHEMAS[table].names
                else ""
            )
            on = " AND ".join(f'a."{k}" IS NOT DISTINCT FROM b."{k}"' for k in keys)
            distinct = ", ".join(f'"{k}"' for k in keys)
            held = (
                f"(SELECT DISTINCT ON ({distinct}) *{old} FROM read_parquet([{', '.join(parts)}]))"
            )
            first, second = (held, current) if table in stale else (current, held)
            con.execute(
                f"COPY (SELECT * FROM {first} UNION ALL "
                f"SELECT * FROM {second} AS a ANTI JOIN {first} AS b ON {on}) "
                f"TO {sql_literal(dest)} (FORMAT parquet)"
            )


# --- moving keys back, purging them --------------------------------------------------------


def log_columns(
    run_id: str, quarantine: str, rows: list[tuple[str, str | None, int | None, str, str | None]]
) -> dict[str, list[Any]]:
    """(key, kind, size, status, reason) rows as ``quarantine_log`` columns."""
    micros = (datetime.now(UTC) - EPOCH) // timedelta(microseconds=1)
    return {
        "run_id": [run_id] * len(rows),
        "quarantine": [quarantine] * len(rows),
        "key": [r[0] for r in rows],
        "kind": [r[1] for r in rows],
        "size": [r[2] for r in rows],
        "status": [r[3] for r in rows],
        "reason": [r[4] for r in rows],
        "time": [micros] * len(rows),
    }


@dataclass(frozen=True)
class KeyOutcome:
    key: str
    kind: str | None
    size: int | None
    status: str
    reason: str | None


def move_keys(
    settings: ExecutionSettings,
    quarantine: str,
    keys: list[dict[str, Any]],
    stem: str,
    intent: str,
    statuses: dict[str, str],
    change: str,
) -> list[KeyOutcome]:
    """Restore or purge ``keys`` (rows with key, kind, size, reason) chunk by chunk, each
    chunk's intent written ahead (no record, no change)."""
    storage = run_storage(settings)
    folder = Path(settings.audit_dir).parent / QUARANTINE_LOG
    audit = AuditTrail(folder, stem, QUARANTINE_LOG)
    out: list[KeyOutcome] = []
    for start in range(0, len(keys), CHUNK):
        if interrupts.requested():  # an interrupted run starts no chunk; what is done is kept
            audit.close()
            interrupts.check()
        chunk = keys[start : start + CHUNK]
        rows = [(k["key"], k.get("kind"), k.get("size"), intent, k.get("reason")) for k in chunk]
        audit.ahead(log_columns(settings.run_id, quarantine, rows))
        names = [k["key"] for k in chunk]
        done = getattr(storage, change)(quarantine, names)
        outcomes = []
        for k in chunk:
            result = done.get(k["key"], "no answer for this key")
            status = statuses.get(result, "failed" if is_error(result) else result)
            reason = result if is_error(result) else k.get("reason")
            outcomes.append(KeyOutcome(k["key"], k.get("kind"), k.get("size"), status, reason))
        audit.record(
            log_columns(
                settings.run_id,
                quarantine,
                [(o.key, o.kind, o.size, o.status, o.reason) for o in outcomes],
            )
        )
        out += outcomes
    audit.close()
    return out

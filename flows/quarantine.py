"""The second phase of the two-phase delete, shared by the prune flow (after its settle time)
and the purge flow: judge quarantined keys against the registry as it is now, move back
what gained a reference, purge what is due, tell a caching registry (docs/safety.md).

DAG::

    list the quarantines' keys ─┐
    walk each quarantine ───────┴─> lay them under the tables read now (old, present)
        -> read the manifests linked since that no Image knows (from the registry's tree, or
           a quarantine) -> the plan's own models again -> sql/execution/quarantine_restore.sql
        -> restore-quarantined x quarantine -> purge-quarantined x quarantine due

(A caching registry is told right after the first phase, before its settle time:
flows/execute.py.)
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from regprune import progress
from regprune.audit import AuditTrail
from regprune.layout import quarantine_area, quarantine_time
from regprune.models import SnapshotDatabase
from regprune.prune_execute import (
    PURGED,
    QUARANTINED,
    RESTORED,
    WOULD_PURGE,
    WOULD_QUARANTINE,
    WOULD_RESTORE,
    ExecutionSettings,
    Outcome,
    audit_columns,
)
from regprune.quarantine import KeyOutcome, lay_under, own_keys
from regprune.tables import STORAGE_TABLES, merge_parts
from regprune.tasks.analysis import merge_manifest_parts
from regprune.tasks.execution import readable_parts, replan, unknown_manifests
from regprune.tasks.manifests import read_manifests_in_batches
from regprune.tasks.quarantine import (
    judge,
    list_quarantined_keys,
    purge_quarantined,
    restore_quarantined,
)
from regprune.tasks.storage_snapshot import merge_snapshot_tables


@dataclass
class SecondPhase:
    """What the re-check did, per quarantine: keys judged, moved back, purged."""

    held: Counter[str] = field(default_factory=Counter)
    restored: dict[str, list[KeyOutcome]] = field(default_factory=dict)
    purged: dict[str, list[KeyOutcome]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        def count(outcomes: dict[str, list[KeyOutcome]]) -> dict[str, dict[str, int]]:
            return {q: dict(Counter(o.status for o in found)) for q, found in outcomes.items()}

        return {
            "held": dict(self.held),
            "restored": count(self.restored),
            "purged": count(self.purged),
            "purged_bytes": {
                q: sum(o.size or 0 for o in found if o.status in (PURGED, WOULD_PURGE))
                for q, found in self.purged.items()
            },
        }


def recheck_quarantines(
    run_dir: str,
    settings: ExecutionSettings,
    now: dict[str, Path],
    variables: dict[str, Any],
    judged: list[str],
    due: set[str],
    folder: Path,
    stale: frozenset[str] = frozenset(),
) -> SecondPhase:
    """Judge every key of the quarantines ``judged`` (and, for the run's own quarantine,
    what this attempt would have moved, which a dry run's quarantine does not hold) against
    ``now`` (every snapshot table: read now, or the snapshot's for the tables in
    ``stale``), move back what gained a reference, then purge the rest of the quarantines
    ``due``. Whatever was linked since the oldest of them counts as young."""
    progress.phase("Re-checking what is quarantined against the registry as it is now")
    spec = settings.spec
    folder.mkdir(parents=True, exist_ok=True)
    held = folder / "quarantined_keys.parquet"
    listed = folder / "listed_keys.parquet"
    own = folder / "own_keys.parquet"
    list_quarantined_keys(settings, judged, str(listed))
    actions = folder / "actions.parquet"
    merge_parts("actions", attempt_parts(settings), actions)
    own_keys(actions, settings.quarantine_id, (WOULD_QUARANTINE,), own)
    keys = pa.concat_tables([pq.read_table(listed), pq.read_table(own)])
    pq.write_table(keys, held)
    present = sorted(set(keys["quarantine"].to_pylist()))
    result = SecondPhase(held=Counter(keys["quarantine"].to_pylist()))
    if not present:
        return result

    walked: list[dict[str, Path]] = []
    for qid in sorted(set(pq.read_table(listed)["quarantine"].to_pylist())):
        area = spec.in_area(quarantine_area(qid))
        parts = folder / f"walk-{qid}"
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
        found = _walk(area, parts)
        if found:
            walked.append(found)
    laid = folder / "tables"
    lay_under(now, walked, laid, set(stale))
    tables = {
        **now,
        **{t: laid / f"{t}.parquet" for t in STORAGE_TABLES if t != "storage_anomalies"},
    }
    young_after = min(
        [variables["young_after"], *(quarantine_time(q) for q in present if q in judged)]
    )
    judging = {**variables, "young_after": young_after}
    unknown = unknown_manifests(run_dir, tables, judging)
    manifests = folder / "_manifests"
    shutil.rmtree(manifests, ignore_errors=True)
    manifests.mkdir()
    fallbacks = tuple(spec.in_area(quarantine_area(q)) for q in present)
    read = read_manifests_in_batches(spec, unknown, str(manifests), fallbacks)
    tables.update(merge_manifest_parts(read, folder, "young"))
    (folder / "replan").mkdir(exist_ok=True)
    replanned = replan(run_dir, tables, judging, str(folder / "replan"))
    back = judge(run_dir, str(held), replanned)

    progress.phase(f"Moving back {len(back):,} quarantined objects that gained a reference")
    for qid in present:
        mine = [row for row in back if row["quarantine"] == qid]
        if mine:
            result.restored[qid] = restore_quarantined(
                settings, qid, mine, f"{settings.run_id}-restore-{qid}"
            )
    restored = {(q, o.key) for q, found in result.restored.items() for o in found}
    rows = keys.to_pylist()
    for qid in sorted(due & set(present)):
        rest = [r for r in rows if r["quarantine"] == qid and (qid, r["key"]) not in restored]
        if rest:
            progress.phase(f"Purging {len(rest):,} quarantined objects of {qid}")
            result.purged[qid] = purge_quarantined(
                settings, qid, rest, f"{settings.run_id}-purge-{qid}"
            )
    record_own_actions(settings, actions, result)
    return result


def attempt_parts(settings: ExecutionSettings) -> list[str]:
    """The readable audit parts this attempt wrote (their names start with its run id)."""
    return [
        part
        for part in readable_parts(settings.audit_dir)
        if Path(part).name.startswith(settings.run_id)
    ]


def _walk(area: Any, parts: Path) -> dict[str, Path]:
    """The storage tables of one quarantine (the snapshot's own walk over its area)."""
    from regprune.flows.snapshot import snapshot_storage

    walked = snapshot_storage(area, str(parts), None)
    merge_snapshot_tables(walked, str(parts), STORAGE_TABLES)
    return {table: parts / f"{table}.parquet" for table in STORAGE_TABLES}


def record_own_actions(settings: ExecutionSettings, actions: Path, result: SecondPhase) -> None:
    """This run's actions whose files were moved back or purged, as rows of its audit
    trail: an action all of whose files came back is ``restored``; one partly restored
    stays ``quarantined`` with the files left; a purged one is ``purged``."""
    qid = settings.quarantine_id
    changed = {o.key: o for o in [*result.restored.get(qid, []), *result.purged.get(qid, [])]}
    if not changed or not actions.exists():
        return
    with SnapshotDatabase(
        Path(settings.audit_dir).parent, {}, extra_tables={"actions": actions}
    ) as db:
        db.define("latest_actions")
        latest = db.records(
            f"SELECT * FROM latest_actions WHERE status IN ('{QUARANTINED}', '{WOULD_QUARANTINE}')"
        )
    rows: list[Outcome] = []
    for item in latest:
        files = item["files"] or []
        touched = [changed[f] for f in files if f in changed]
        if not touched:
            continue
        back = [o.key for o in touched if o.status in (RESTORED, WOULD_RESTORE)]
        gone = [o.key for o in touched if o.status in (PURGED, WOULD_PURGE)]
        left = [f for f in files if f not in back]
        if gone and len(gone) == len(left):
            status = PURGED if touched[0].status == PURGED else WOULD_PURGE
            rows.append((item, status, None, gone))
        elif back and not left:
            reason = next((o.reason for o in touched if o.reason), None)
            status = RESTORED if touched[0].status == RESTORED else WOULD_RESTORE
            rows.append((item, status, reason, back))
        elif back:
            reason = f"{len(back)} of {len(files)} files moved back after the re-check"
            rows.append((item, item["status"], reason, left))
    if rows:
        audit = AuditTrail(settings.audit_dir, f"{settings.run_id}-recheck")
        audit.record(audit_columns(settings.run_id, rows))
        audit.close()

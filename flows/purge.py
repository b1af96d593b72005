"""``regprune purge RUN | --older-than DURATION``: empty quarantines before a confirmed prune
would, after the same re-check (what gained a reference since is moved back first). A dry
run unless ``confirm``.

DAG::

    snapshot (subflow: the registry's tree and the cluster as they are now)
        -> check-purge-sanity (sql/plan/plan_sanity.sql: a partial view refuses --confirm)
        -> lock -> re-check the chosen quarantines (flows/quarantine.py): restore what
           gained a reference, purge the rest, tell a caching registry
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow

from regprune import progress
from regprune.flows.quarantine import recheck_quarantines
from regprune.flows.snapshot import snapshot_flow
from regprune.layout import quarantine_time
from regprune.lock import StorageLock
from regprune.models import plan_variables
from regprune.prune_execute import EPOCH, PURGED, WOULD_PURGE, ExecutionSettings, run_storage
from regprune.quarantine import QUARANTINE_LOG, RunQuarantine, other_storage
from regprune.results import RunResult
from regprune.runners import ChosenTaskRunner
from regprune.snapshots import SnapshotSource, new_run_folder, snapshot_started_at
from regprune.tables import SNAPSHOT_TABLES, merge_parts
from regprune.tasks.analysis import check_purge_sanity
from regprune.tasks.execution import readable_parts
from regprune.twophase import QuarantineError
from regprune.units import Duration, format_bytes, parse_duration


def quarantines_to_purge(
    storage_ids: list[str], run_dir: str | None, older_than: str | None, now: datetime
) -> list[str]:
    """The quarantine of the run folder ``run_dir``, or every one older than ``older_than``."""
    if run_dir:
        quarantine = RunQuarantine.read(run_dir)
        if quarantine is None:
            raise QuarantineError(f"{run_dir} quarantined nothing (no quarantine.json)")
        return [quarantine.id] if quarantine.id in storage_ids else []
    cutoff = now - parse_duration(older_than or "0s")
    return [q for q in storage_ids if quarantine_time(q) <= cutoff]


@flow(name="regprune-purge", log_prints=True, task_runner=ChosenTaskRunner())
def purge_flow(
    source: SnapshotSource,
    run: str | None = None,
    older_than: Duration | None = None,
    out: str | None = None,
    confirm: bool = False,
    force_unlock: bool = False,
) -> RunResult:
    """Purge the quarantine of a confirmed prune (``run``, its folder) or every quarantine
    older than ``older_than``, after re-checking it against the registry as it is now.

    Args:
        source: the registry's storage and the cluster (a fresh snapshot of both is taken).
        run: the folder of the confirmed prune whose quarantine to purge.
        older_than: purge every quarantine at least this old (e.g. 7d).
        out: folder for this run's snapshot and audit (default regprune-runs/purge-<time>).
        confirm: purge for real (a dry run otherwise: it says what it would).
        force_unlock: remove the storage's lock left by a run that died elsewhere.
    """
    spec = source.storage_spec()
    if run:
        recorded = RunQuarantine.read(run)
        elsewhere = other_storage(spec, recorded) if recorded is not None else None
        if elsewhere:
            raise QuarantineError(f"{run} quarantined {elsewhere}: give that storage to purge it")
    folder = out or new_run_folder("purge")
    Path(folder).mkdir(parents=True, exist_ok=True)
    snapshot_flow(out=folder, source=source)
    started = snapshot_started_at(folder)
    attempt = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    settings = ExecutionSettings(
        spec, str(Path(folder) / "actions"), attempt, EPOCH, "", dry_run=not confirm
    )
    storage = run_storage(settings)
    chosen = quarantines_to_purge(storage.quarantine_ids(), run, older_than, started)
    if not chosen:
        what = f"the quarantine of {run}" if run else f"no quarantine older than {older_than}"
        text = f"Nothing to purge: {what} holds nothing in {spec.display}"
        if run:
            text += " (purged, or undone, already)"
        print(text)
        return RunResult(folder, text, {"purged": {}, "restored": {}})
    problems = check_purge_sanity(folder)
    if problems and confirm:  # before the lock: nothing restored, nothing purged
        raise QuarantineError(
            "refusing to purge: " + "; ".join(problems) + ". Check --metadata and --storage"
        )
    for problem in problems:
        progress.warning(problem)
    lock = StorageLock(spec, attempt, folder, force_unlock, storage)
    lock.acquire()
    try:
        variables = plan_variables(started, timedelta(0), timedelta(0))
        now = {t: Path(folder) / f"{t}.parquet" for t in SNAPSHOT_TABLES}
        second = recheck_quarantines(
            folder,
            settings,
            now,
            variables,
            chosen,
            set(chosen),
            Path(folder) / "recheck-quarantine",
        )
    finally:
        lock.release()
    log = Path(folder) / QUARANTINE_LOG
    merge_parts(QUARANTINE_LOG, readable_parts(str(log)), log.with_suffix(".parquet"))
    lines = []
    for qid in chosen:
        purged = [o for o in second.purged.get(qid, []) if o.status in (PURGED, WOULD_PURGE)]
        back = second.restored.get(qid, [])
        size = format_bytes(sum(o.size or 0 for o in purged))
        verb = "Purged" if confirm else "Would purge"
        line = f"{verb} {len(purged):,} objects ({size}) of the quarantine {qid}"
        if back:
            line += f"; {'moved' if confirm else 'would move'} back {len(back):,} first"
            line += " (something refers to them again)"
        lines.append(line)
    text = "\n".join(lines)
    print(text)
    failed = sum(
        1
        for found in [*second.purged.values(), *second.restored.values()]
        for o in found
        if o.status == "failed"
    )
    return RunResult(folder, text, second.summary(), failed)

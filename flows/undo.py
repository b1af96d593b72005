"""``regprune undo RUN``: put back what a confirmed run removed, whole.

A run folder holds one or more parts, each undone by a step registered here by what the
folder holds (:data:`UNDO_STEPS`): a hard prune's quarantine (``quarantine.json``: the run
folder of ``prune --confirm``, or its ``hard-prune/`` folder inside a nightly GC's or a
``prune-images --confirm`` run's), and whatever else registers a step (prune-images' deleted
Images and tag history items). Steps run in the reverse order of the runs that made them:
storage first, so that an Image recreated afterwards finds its blobs.

DAG::

    find the parts (UNDO_STEPS) -> for each, newest first:
        hard prune: lock -> list its quarantine -> restore-quarantined (write-ahead)
            -> record the run's actions as restored
        prune-images: access review -> undo-prune-images (Images created again, then the
            tag history items put back; its audit trail RUN/images_undo/)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow

from regprune import progress
from regprune.flows.quarantine import SecondPhase, record_own_actions
from regprune.images_journal import JOURNAL_DIR, journal_files
from regprune.lock import StorageLock
from regprune.metadata import MetadataError, MetadataSource
from regprune.permissions import READ_METADATA, UNDO_PRUNE_IMAGES, denied
from regprune.prune_execute import EPOCH, RESTORED, ExecutionSettings, run_storage
from regprune.quarantine import QUARANTINE_LOG, RunQuarantine, classify_keys, other_storage
from regprune.results import UndoResult
from regprune.runners import ChosenTaskRunner
from regprune.snapshots import SnapshotSource
from regprune.storage import StorageSpec
from regprune.tables import merge_parts
from regprune.tasks.execution import readable_parts
from regprune.tasks.prune_images import undo_prune_images
from regprune.tasks.quarantine import restore_quarantined
from regprune.twophase import QuarantineError
from regprune.units import format_bytes


@dataclass(frozen=True)
class UndoContext:
    """What the command line gives every step: the storage to use (None: the run's own, as
    recorded; a source, not a spec: flow parameters are stored and a spec may hold
    credentials) and the cluster (for steps that change it)."""

    source: SnapshotSource | None = None
    kubeconfig: str | None = None
    context: str | None = None
    force_unlock: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UndoStep:
    """One kind of part a run folder may hold. ``finds``: the folders of that kind in a run
    folder (none when it holds no such part); ``undo``: puts one back, returns its summary
    (``text`` a person reads; ``failed`` how many objects could not be put back);
    ``order``: higher runs first (the part a run made last is undone first)."""

    name: str
    finds: Callable[[Path], list[Path]]
    undo: Callable[[Path, UndoContext], dict[str, Any]]
    order: int


UNDO_STEPS: list[UndoStep] = []


def register(step: UndoStep) -> None:
    """Add a kind of part ``regprune undo`` puts back (prune-images registers its own)."""
    UNDO_STEPS[:] = [s for s in UNDO_STEPS if s.name != step.name] + [step]


class NothingToUndo(QuarantineError):
    """The folder holds no part any step undoes."""


def hard_prune_parts(run_dir: Path) -> list[Path]:
    """The run folder itself (``prune --confirm``) and its ``hard-prune/`` (a nightly GC's,
    a ``prune-images --confirm`` run's) when they hold a quarantine."""
    return [p for p in (run_dir, run_dir / "hard-prune") if RunQuarantine.read(p) is not None]


def undo_hard_prune(part: Path, given: UndoContext) -> dict[str, Any]:
    """Move back everything the run's quarantine still holds (a key that exists again with
    other bytes is left, and said); the registry is not called (it caches only blobs that
    exist, and every one moved back exists again: docs/safety.md)."""
    quarantine = RunQuarantine.read(part)
    assert quarantine is not None
    spec = given.source.storage_spec() if given.source else StorageSpec(quarantine.storage)
    elsewhere = other_storage(spec, quarantine)
    if elsewhere:
        raise QuarantineError(
            f"{part} quarantined {elsewhere}: give that storage (or none) to undo it"
        )
    if quarantine.dry_run:
        raise NothingToUndo(f"{part} is a dry run: it moved nothing, there is nothing to undo")
    attempt = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    settings = ExecutionSettings(spec, str(part / "actions"), attempt, EPOCH, quarantine.id)
    lock = StorageLock(spec, attempt, str(part), given.force_unlock)
    lock.acquire()
    try:
        held = run_storage(settings).quarantined(quarantine.id)
        if not held:
            raise QuarantineError(
                f"cannot undo {part}: its quarantine {quarantine.id} in {quarantine.storage} "
                "holds nothing any more (purged, or undone already)"
            )
        keys = classify_keys(quarantine.id, [o.key for o in held], [o.size for o in held])
        progress.phase(f"Moving back {len(held):,} objects of {part} from {quarantine.id}")
        outcomes = restore_quarantined(settings, quarantine.id, keys.to_pylist(), f"{attempt}-undo")
        actions = part / "undo-actions.parquet"
        merge_parts("actions", readable_parts(settings.audit_dir), actions)
        record_own_actions(settings, actions, SecondPhase(restored={quarantine.id: outcomes}))
    finally:
        lock.release()
    merge_parts("actions", readable_parts(settings.audit_dir), part / "actions.parquet")
    log = part / QUARANTINE_LOG
    merge_parts(QUARANTINE_LOG, readable_parts(str(log)), log.with_suffix(".parquet"))
    back = [o for o in outcomes if o.status == RESTORED]
    failed = [o for o in outcomes if o.status != RESTORED]
    lines = [
        f"Moved back {len(back):,} objects ({format_bytes(sum(o.size or 0 for o in back))}) "
        f"of {part} from {quarantine.storage}/_regprune/quarantine/{quarantine.id}"
    ]
    if failed:
        lines.append(f"Not moved back: {len(failed)} objects")
        lines += [f"  - {o.key}: {o.reason}" for o in failed[:20]]
    text = "\n".join(lines)
    return {"part": str(part), "restored": len(back), "failed": len(failed), "text": text}


register(UndoStep("hard prune", hard_prune_parts, undo_hard_prune, order=10))


def prune_images_parts(run_dir: Path) -> list[Path]:
    """The run folder itself (``prune-images --confirm``) and its ``prune-images/`` (a nightly
    GC's) when they hold prune-images' journal."""
    return [p for p in (run_dir, run_dir / "prune-images") if journal_files(p / JOURNAL_DIR)]


def undo_prune_images_part(part: Path, given: UndoContext) -> dict[str, Any]:
    """Create the Images the run deleted again and put the tag history items it removed back
    (regprune/images_undo.py, docs/undo.md), after asking the API for the grants it needs."""
    source = MetadataSource(kubeconfig=given.kubeconfig, context=given.context)
    missing = denied(source, (READ_METADATA, UNDO_PRUNE_IMAGES), {"get", "create", "update"})
    if missing:
        raise MetadataError(
            f"forbidden: undo of {part} needs {', '.join(missing)}, which the API does not "
            f"grant this user (the ClusterRoles {READ_METADATA.name} and "
            f"{UNDO_PRUNE_IMAGES.name} of deployments/rbac/ do) - nothing undone there"
        )
    done = undo_prune_images(str(part), source)
    return {
        "part": str(part),
        "counts": done.counts,
        "items": done.items,
        "failed": done.failed,
        "text": done.text,
    }


register(UndoStep("prune-images", prune_images_parts, undo_prune_images_part, order=0))


@flow(name="regprune-undo", log_prints=True, task_runner=ChosenTaskRunner())
def undo_flow(run_dir: str, context: UndoContext | None = None) -> UndoResult:
    """Undo the confirmed run in ``run_dir``: every part it holds, storage first.

    Args:
        run_dir: the run folder of ``prune --confirm``, ``prune-images --confirm`` or a
            nightly GC.
        context: the storage (default: the run's own) and cluster to put things back into.
    """
    folder = Path(run_dir)
    given = context or UndoContext()
    parts = [
        (step, part)
        for step in sorted(UNDO_STEPS, key=lambda s: -s.order)
        for part in step.finds(folder)
    ]
    if not parts:
        kinds = ", ".join(step.name for step in UNDO_STEPS)
        raise NothingToUndo(f"{run_dir} holds nothing regprune can undo (looked for: {kinds})")
    done = [step.undo(part, given) for step, part in parts]
    text = "\n".join(result["text"] for result in done)
    print(text)
    failed = sum(r.get("failed", 0) for r in done)
    return UndoResult(run_dir, text, failed=failed, parts=done)

"""Where a run keeps its snapshot and results: a folder given, or a new one per run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from regprune.flows.snapshot import SnapshotSource, snapshot_flow
from regprune.tasks.analysis import read_snapshot_summary
from regprune.tasks.storage import StorageSpec

DEFAULT_RUNS = Path("regprune-runs")


def new_run_folder(kind: str, base: Path = DEFAULT_RUNS) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return str(base / f"{kind}-{stamp}")


def snapshot_for_run(
    kind: str, snapshot: str | None, source: SnapshotSource | None, out: str | None
) -> str:
    """Analyse an existing snapshot folder, or take a fresh one (as a subflow)."""
    if snapshot:
        if source is not None and (source.storage or source.registry_config) and out:
            raise ValueError("give either an existing snapshot or a source to snapshot, not both")
        return snapshot
    if source is None:
        raise ValueError("nothing to analyse: give a snapshot folder or a storage to snapshot")
    return snapshot_flow(out=out or new_run_folder(kind), source=source)


def run_storage(run_dir: str, source: SnapshotSource | None) -> StorageSpec:
    """The storage a run reads and changes: the one given, else the snapshot's own (its URL
    carries no credentials; those come from the environment as usual)."""
    if source is not None and (source.storage or source.registry_config):
        return source.storage_spec()
    return StorageSpec(read_snapshot_summary(run_dir)["storage"])

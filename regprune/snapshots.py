"""A snapshot folder: its ``snapshot.json`` (written last) and what it records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from regprune.metadata import MetadataSource
from regprune.storage import (
    StorageConfigError,
    StorageSpec,
    check_options_hold_no_secrets,
    resolve_storage,
)
from regprune.tables import SNAPSHOT_FILE


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


def anomalies_text(run_dir: str | Path) -> str | None:
    """The summary's line on what the snapshot recorded as anomalies (files the walk found
    wrong, objects that do not parse), never acted upon: how many, and where to read them;
    None when there are none."""
    try:
        rows = read_snapshot_summary(run_dir).get("rows") or {}
    except SnapshotError:
        return None
    found = [
        (int(rows.get(table) or 0), what, table)
        for table, what in (
            ("storage_anomalies", "in storage"),
            ("metadata_anomalies", "in the cluster's metadata"),
        )
        if rows.get(table)
    ]
    if not found:
        return None
    counts = " and ".join(f"{n:,} {what}" for n, what, _ in found)
    more = f" (and {found[1][2]})" if len(found) > 1 else ""
    return (
        f"Anomalies, recorded and never acted upon: {counts}; read them with: regprune sql "
        f'--snapshot {run_dir} "SELECT * FROM {found[0][2]}"{more}'
    )


def snapshot_started_at(snapshot_dir: str | Path) -> datetime:
    """The earliest start: metadata is listed first, so grace periods count from it."""
    return datetime.fromisoformat(read_snapshot_summary(snapshot_dir)["metadata_started_at"])


def metadata_of_snapshot(run_dir: str) -> MetadataSource:
    """Re-read the metadata the way the snapshot read it (snapshot.json keeps how)."""
    recorded = read_snapshot_summary(run_dir).get("metadata_source") or {}
    return MetadataSource(
        recorded.get("source", "kube"),
        kubeconfig=recorded.get("kubeconfig"),
        context=recorded.get("context"),
        page_size=recorded.get("page_size", 500),
    )


class SnapshotSource(BaseModel):
    """Where a snapshot reads from: the registry's storage and the cluster's metadata."""

    storage: str | None = Field(
        None,
        description="Registry rootdirectory: PATH, file:///PATH or s3://BUCKET[/ROOT]; "
        "S3 credentials come from the AWS_* environment, never from here.",
    )
    registry_config: str | None = Field(
        None, description="Path of the registry's config.yml (instead of storage)."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="Extra fsspec options (no credentials)."
    )
    metadata: str = Field(
        "kube",
        description="'kube' for the cluster API, or the path of an "
        "'oc get images,imagestreams -A -o json' dump (or a folder of dumps).",
    )
    kubeconfig: str | None = Field(None, description="kubeconfig path (default: the usual).")
    context: str | None = Field(None, description="kubeconfig context.")
    page_size: int = Field(500, ge=1, le=10_000, description="Objects per list request.")
    shard_tasks: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Parallel storage walk tasks (default: 16 on S3, the CPU count on a "
        "local folder, where more walkers than cores only contend in the kernel).",
    )

    @field_validator("storage_options")
    @classmethod
    def _no_credentials(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Parameters are stored with the flow run: refuse credentials before they are."""
        try:
            check_options_hold_no_secrets(options)
        except StorageConfigError as exc:
            raise ValueError(str(exc)) from exc
        return options

    def storage_spec(self) -> StorageSpec:
        return resolve_storage(self.storage, self.storage_options, self.registry_config)

    def metadata_source(self) -> MetadataSource:
        return MetadataSource(
            self.metadata,
            kubeconfig=self.kubeconfig,
            context=self.context,
            page_size=self.page_size,
        )


DEFAULT_RUNS = Path("regprune-runs")


def new_run_folder(kind: str, base: Path = DEFAULT_RUNS) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return str(base / f"{kind}-{stamp}")

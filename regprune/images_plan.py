"""The plan of ``prune-images`` (oc adm prune images' decisions) over a cluster snapshot.

The set logic is in ``sql/images/images_*.sql``; this module holds the settings (oc's options, names
and defaults), opens DuckDB over the snapshot's tables and writes the models' results.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from regprune.models import DuckDBSettings, SnapshotDatabase
from regprune.tables import METADATA_TABLES, WORKLOAD_TABLES
from regprune.units import Duration, parse_duration

IMAGES_MODELS = ("images_workload_uses", "images_plan", "images_summary", "images_sanity")
"""What prune-images reads; the models these read come with them (regprune.models)."""
IMAGES_OUTPUTS = ("images_tag_revisions", "images_plan")
IMAGES_TABLES = (*METADATA_TABLES, *WORKLOAD_TABLES)


class PruneImagesSettings(BaseModel):
    """``oc adm prune images``' options with its defaults and spellings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep_tag_revisions: int | None = Field(
        None,
        ge=0,
        description="Revisions kept per tag (oc's default 3; unset with --prune-over-size-limit).",
    )
    keep_younger_than: Duration | None = Field(
        None,
        description="Age below which nothing is removed (oc's default 60m; unset with "
        "--prune-over-size-limit).",
    )
    prune_over_size_limit: bool = Field(
        False,
        description="Remove only revisions whose Image exceeds its namespace's "
        "openshift.io/Image LimitRange; cannot be combined with the two keep options.",
    )
    all_images: bool = Field(
        True, description="Also prune Images not managed by OpenShift (oc's --all, default true)."
    )
    namespace: str | None = Field(
        None, min_length=1, description="Prune only this namespace's streams; no Image deleted."
    )
    ignore_invalid_refs: bool = Field(
        False, description="Skip references that do not parse instead of refusing the plan."
    )

    @model_validator(mode="after")
    def _size_mode_alone(self) -> PruneImagesSettings:
        if self.prune_over_size_limit and (
            self.keep_tag_revisions is not None or self.keep_younger_than is not None
        ):
            raise ValueError(
                "--prune-over-size-limit cannot be specified with --keep-tag-revisions nor "
                "--keep-younger-than"
            )
        return self

    @property
    def revisions(self) -> int:
        if self.prune_over_size_limit:
            return 0
        return 3 if self.keep_tag_revisions is None else self.keep_tag_revisions

    @property
    def grace(self) -> timedelta:
        if self.prune_over_size_limit:
            return timedelta(0)
        return parse_duration(self.keep_younger_than or "60m")

    def effective(self) -> dict[str, Any]:
        """The settings as applied (defaults filled in), for reports."""
        return {
            "keep_tag_revisions": None if self.prune_over_size_limit else self.revisions,
            "keep_younger_than": None
            if self.prune_over_size_limit
            else (self.keep_younger_than or "60m"),
            "prune_over_size_limit": self.prune_over_size_limit,
            "all": self.all_images,
            "namespace": self.namespace,
            "ignore_invalid_refs": self.ignore_invalid_refs,
        }

    def variables(self, now: datetime) -> dict[str, Any]:
        return {
            "young_after": now - self.grace,
            "keep_tag_revisions": self.revisions,
            "prune_over_size_limit": self.prune_over_size_limit,
            "all_images": self.all_images,
            "namespace": self.namespace,
            "ignore_invalid_refs": self.ignore_invalid_refs,
        }


class ImagesDatabase(SnapshotDatabase):
    """DuckDB over a prune-images snapshot: metadata and workloads, no storage tables."""

    def __init__(
        self,
        snapshot_dir: str | os.PathLike[str],
        variables: dict[str, Any],
        settings: DuckDBSettings | None = None,
    ):
        super().__init__(
            snapshot_dir,
            variables,
            settings,
            tables=IMAGES_TABLES,
            kind="a snapshot taken for prune-images (with workloads)",
        )
        self.define(*IMAGES_MODELS)


def plan_prune_images(
    snapshot_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    settings: PruneImagesSettings,
    now: datetime,
    duckdb_settings: DuckDBSettings | None = None,
) -> dict[str, Any]:
    """Write ``images_tag_revisions.parquet`` and ``images_plan.parquet`` into ``out_dir``;
    return the summary row and the sanity row (``problems``: why not to execute)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with ImagesDatabase(snapshot_dir, settings.variables(now), duckdb_settings) as db:
        for model in ("images_workload_uses", *IMAGES_OUTPUTS):
            db.write(model, out / f"{model}.parquet")
        summary = db.records("SELECT * FROM images_summary")[0]
        sanity = db.records("SELECT * FROM images_sanity")[0]
    for key in ("revisions_kept_by_reason", "images_kept_by_reason"):
        summary[key] = dict(sorted((summary[key] or {}).items()))
    return {"summary": summary, "sanity": sanity}

"""Reading back what the session's Prefect server recorded for the runs a test started.

The server is shared by the whole session and holds hundreds of runs and artifacts by the time
a late test asks; the API's default order is by id (random UUIDs), so one ``limit=200`` page
is a random sample. These helpers narrow by time and run first and read every page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)

PAGE = 200


def flow_runs_started_since(since: datetime) -> list[Any]:
    """Every flow run (subflows too) created after ``since``."""
    runs: list[Any] = []
    after = FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since))
    with get_client(sync_client=True) as client:
        while batch := client.read_flow_runs(flow_run_filter=after, limit=PAGE, offset=len(runs)):
            runs += batch
    return runs


def artifacts_of(flow_runs: list[Any], keys: list[str] | None = None) -> list[Any]:
    """Every artifact the given flow runs (and their tasks) created, optionally by key."""
    found: list[Any] = []
    wanted = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[run.id for run in flow_runs]),
        key=ArtifactFilterKey(any_=keys) if keys is not None else None,
    )
    with get_client(sync_client=True) as client:
        while batch := client.read_artifacts(artifact_filter=wanted, limit=PAGE, offset=len(found)):
            found += batch
    return found

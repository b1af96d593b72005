"""The demo: a real run with no cluster, on a generated registry with every kind of drift.

DAG::

    generate-demo-registry -> prune (flow: snapshot + plan) -> check (flow, same snapshot)
        -> compare-with-ground-truth
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from regprune.flows.check import check_flow
from regprune.flows.prune import prune_flow
from regprune.results import DemoResult
from regprune.snapshots import SnapshotSource
from regprune.tasks.demo import compare_with_ground_truth, generate_demo_registry

DEFAULT_DEMO = "regprune-demo"


@flow(name="regprune-demo", log_prints=True)
def demo_flow(out: str = DEFAULT_DEMO, seed: int = 0) -> DemoResult:
    """Generate a demo registry and metadata dump, plan a hard prune, check consistency."""
    paths = generate_demo_registry(out, seed)
    run = str(Path(out) / "run")
    source = SnapshotSource(storage=paths["storage"], metadata=paths["metadata"])
    prune_report, check_report = str(Path(out) / "prune.json"), str(Path(out) / "check.json")
    prune = prune_flow(source=source, out=run, report=prune_report)
    check = check_flow(snapshot=run, report=check_report)
    agreement = compare_with_ground_truth(paths["truth"], prune_report, check_report)
    return DemoResult(
        run, paths["storage"], paths["metadata"], paths["truth"], prune, check, agreement
    )

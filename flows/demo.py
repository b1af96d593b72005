"""The demo: a real run with no cluster, on a generated registry with every kind of drift.

DAG::

    generate-demo-registry -> prune (flow: snapshot + plan) -> check (flow, same snapshot)
        -> compare-with-ground-truth
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, task

from regprune.flows.check import check_flow
from regprune.flows.prune import prune_flow
from regprune.flows.snapshot import SnapshotSource
from regprune.tasks.synthetic import SyntheticSpec, generate

DEFAULT_DEMO = "regprune-demo"


@task(name="generate-demo-registry")
def generate_demo_registry(out: str, seed: int) -> dict[str, str]:
    """A small drift-complete registry; reused when the folder already holds one."""
    folder = Path(out)
    paths = {
        "storage": str(folder / "registry"),
        "metadata": str(folder / "metadata.json"),
        "truth": str(folder / "truth.json"),
    }
    if not Path(paths["truth"]).exists():
        folder.mkdir(parents=True, exist_ok=True)
        generate(paths["storage"], SyntheticSpec.demo(seed), paths["metadata"], paths["truth"])
    return paths


@task(name="compare-with-ground-truth")
def compare_with_ground_truth(truth_path: str, prune: str, check: str) -> list[str]:
    """The generator knows what is garbage and what is broken: say whether the run agrees."""
    truth = json.loads(Path(truth_path).read_text())
    plan, found = json.loads(Path(prune).read_text()), json.loads(Path(check).read_text())
    expected, checked = truth["prune_grace"], truth["check"]
    pairs = {
        "orphan blobs": (
            {b["digest"] for b in plan["blobs"]},
            set(expected["orphan_blobs"]),
        ),
        "repositories": (
            {(r["repository"], r["reason"]) for r in plan["repositories"]},
            {(r["repository"], r["reason"]) for r in expected["prunable_repositories"]},
        ),
        "manifest links": (
            {(r["repository"], r["digest"]) for r in plan["manifest_links"]},
            {(r["repository"], r["digest"]) for r in expected["prunable_manifest_links"]},
        ),
        "broken tags": (
            {
                (r["namespace"], r["name"], r["tag"], r["position"], r["missing"])
                for r in found["broken_imagestream_tags"]
            },
            {
                (r["namespace"], r["name"], r["tag"], r["position"], r["missing"])
                for r in checked["broken_tags"]
            },
        ),
        "lost-found": (
            {(r["namespace"], r["name"], r["digest"]) for r in found["lost_found"]},
            {(r["namespace"], r["name"], r["digest"]) for r in checked["lost_found"]},
        ),
    }
    return [
        f"{name}: {len(got)} found, {'matches' if got == want else 'DIFFERS FROM'} "
        f"the generator's ground truth ({len(want)})"
        for name, (got, want) in pairs.items()
    ]


@flow(name="regprune-demo", log_prints=True)
def demo_flow(out: str = DEFAULT_DEMO, seed: int = 0) -> dict[str, Any]:
    """Generate a demo registry and metadata dump, plan a hard prune, check consistency."""
    paths = generate_demo_registry(out, seed)
    run = str(Path(out) / "run")
    source = SnapshotSource(storage=paths["storage"], metadata=paths["metadata"])
    prune_report, check_report = str(Path(out) / "prune.json"), str(Path(out) / "check.json")
    prune = prune_flow(source=source, out=run, report=prune_report)
    check = check_flow(snapshot=run, report=check_report)
    agreement = compare_with_ground_truth(paths["truth"], prune_report, check_report)
    return {"prune": prune, "check": check, "agreement": agreement, **paths, "run_dir": run}

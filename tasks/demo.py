"""Tasks of the demo: generate a drift-complete registry, compare a run with its ground truth."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from regprune.demo.synthetic import SyntheticSpec, generate


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

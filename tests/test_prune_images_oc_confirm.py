"""Differential with ``--confirm`` on OpenShift's registry: ``oc adm prune images --confirm``
on one cluster, ``regprune prune-images --confirm`` (with its hard prune of the storage) on an
identical second one; both remove the same tag revisions and Images, and every image a
workload uses still pulls through the registry afterwards.

The clusters are built, one after the other, by pushing through OpenShift's registry
(tests/harness/openshift_registry.py) into the real OpenShift API
(tests/harness/openshift_apiserver.py), so the API holds what a cluster records for a push; the same
tag is pushed several times for tag histories of different depths; the workloads are real objects.
Needs ``oc`` (see tests/test_prune_images_oc.py), the registry binary and skopeo; skips, saying what
is missing, without them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from regprune.cli.main import main
from tests.harness.openshift_apiserver import RealOpenShiftAPI
from tests.harness.openshift_registry import OpenShiftRegistry, start_openshift_registry, stop_pair
from tests.harness.registry_bench import LayerSpec, assert_pulls, build_image, pull_ok, push
from tests.test_prune_images_oc import OC, real_workload

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

OPTIONS = ["--keep-tag-revisions=2", "--keep-younger-than=0s"]
HISTORIES = {"ns1/app:latest": 5, "ns1/app:v1": 1, "ns2/tool:1.0": 3, "ns2/web:latest": 4}
"""Tag -> pushes (a new image each time): histories of depth 5, 1, 3 and 4."""


@dataclass
class Cluster:
    registry: OpenShiftRegistry
    pushed: dict[str, list[str]]  # tag -> digests, oldest first
    used: list[str]  # references the workloads make (ns/name:tag or ns/name@digest)

    def images(self) -> set[str]:
        return {image["metadata"]["name"] for image in self.registry.api.images()}

    def revisions(self) -> set[tuple[str, str, str]]:
        found = set()
        for stream in self.registry.api.imagestreams():
            meta = stream["metadata"]
            for tag in stream["status"].get("tags") or []:
                for item in tag["items"]:
                    found.add((f"{meta['namespace']}/{meta['name']}", tag["tag"], item["image"]))
        return found


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """One OCI layout per push: a shared base layer and a layer of its own."""
    root = tmp_path_factory.mktemp("layouts")
    built: dict[str, list[Path]] = {}
    seed = 100
    for tag, depth in HISTORIES.items():
        for _ in range(depth):
            seed += 1
            layout = root / f"img{seed}"
            build_image(layout, "t", [LayerSpec(1), LayerSpec(seed)])
            built.setdefault(tag, []).append(layout)
    return built


def build_cluster(registry: OpenShiftRegistry, layouts: dict[str, list[Path]]) -> Cluster:
    """Push every history through OpenShift's registry; real workloads by digest and by tag."""
    pushed = {
        tag: [push(registry, layout, "t", tag).digest for layout in history]
        for tag, history in layouts.items()
    }
    host = registry.advertised
    app, tool = pushed["ns1/app:latest"], pushed["ns2/tool:1.0"]
    used = [f"ns1/app@{app[0]}", f"ns1/app@{app[1]}", "ns2/tool:1.0", f"ns2/tool@{tool[0]}"]
    kinds = ["Pod", "Job", "Deployment", "DeploymentConfig"]
    for i, (kind, ref) in enumerate(zip(kinds, used, strict=True)):
        ns = ref.split("/")[0]
        registry.api.create(real_workload(kind, ns, f"w{i}", f"{host}/{ref}"))
        if kind == "Pod":
            registry.api.set_status("Pod", ns, f"w{i}", {"phase": "Running"})
    return Cluster(registry, pushed, used)


@dataclass
class Outcome:
    """One tool's run on a fresh cluster: what was there, what is left."""

    pushed: dict[str, list[str]]
    before: tuple[set[str], set[tuple[str, str, str]]]
    after: tuple[set[str], set[tuple[str, str, str]]]
    blobs_before: set[str]
    blobs_after: set[str]


def on_a_fresh_cluster(
    api: RealOpenShiftAPI,
    workdir: Path,
    layouts: dict[str, list[Path]],
    prune: Callable[[Cluster], None],
) -> Outcome:
    """Empty the real API, push the histories into a new registry, prune, and check every
    image a workload uses and every tag still pulls, while the gone revisions do not."""
    api.reset()
    registry = start_openshift_registry(workdir / "registry", api=api)
    try:
        cluster = build_cluster(registry, layouts)
        for ref in cluster.used:
            assert_pulls(registry, ref)
        before = (cluster.images(), cluster.revisions())
        blobs_before = blobs(registry)
        prune(cluster)
        after = (cluster.images(), cluster.revisions())
        for ref in cluster.used:
            assert_pulls(registry, ref)
        for tag in HISTORIES:
            assert_pulls(registry, tag)
        for repo, tag, digest in before[1] - after[1]:
            assert not pull_ok(registry, f"{repo}@{digest}"), (repo, tag)
        return Outcome(cluster.pushed, before, after, blobs_before, blobs(registry))
    finally:
        stop_pair(registry)
        api.reset()


def test_oc_and_regprune_confirm_remove_the_same(
    openshift_apiserver: RealOpenShiftAPI, layouts: dict[str, list[Path]], tmp_path: Path
) -> None:
    """The same pushes into the real API twice (the same digests: identical clusters); oc
    prunes one through the registry's API, regprune the other (and its storage, clearing the
    registry's cache with the kubeconfig's token)."""
    if not OC.exists():
        pytest.skip(f"oc not found at {OC} (set REGPRUNE_OC)")
    api = openshift_apiserver
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    oc_output: list[str] = []

    def by_oc(cluster: Cluster) -> None:
        done = subprocess.run(
            [
                *(str(OC), "--kubeconfig", str(kubeconfig), "adm", "prune", "images"),
                *(*OPTIONS, "--confirm", f"--registry-url={cluster.registry.base_url}"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        oc_output.append(done.stdout)

    def by_regprune(cluster: Cluster) -> None:
        code = main(
            [
                *("prune-images", "--kubeconfig", str(kubeconfig), *OPTIONS, "--confirm"),
                *("--storage", cluster.registry.storage_url, "--hard-prune-keep-younger-than=0s"),
                *("--registry-url", cluster.registry.base_url, "--out", str(tmp_path / "run")),
            ]
        )
        assert code == 0

    oc = on_a_fresh_cluster(api, tmp_path / "oc", layouts, by_oc)
    regprune = on_a_fresh_cluster(api, tmp_path / "regprune", layouts, by_regprune)

    assert oc.pushed == regprune.pushed and oc.before == regprune.before
    assert oc.blobs_before == regprune.blobs_before
    images_removed = oc.before[0] - oc.after[0]
    revisions_removed = oc.before[1] - oc.after[1]
    app, tool = oc.pushed["ns1/app:latest"], oc.pushed["ns2/tool:1.0"]
    # Depth 5 keeps 2 revisions; revisions 0 and 1 are used by workloads by digest, which
    # keeps the revisions as well as their Images (oc: in use by digest): only app[2] goes.
    # tool keeps 2 of 3 and tool[0] is used by digest: nothing goes.
    # web, used by nothing, loses its 2 oldest revisions and their Images.
    web = oc.pushed["ns2/web:latest"]
    assert images_removed == {app[2], web[0], web[1]}, oc_output
    assert revisions_removed == {
        ("ns1/app", "latest", app[2]),
        ("ns2/web", "latest", web[0]),
        ("ns2/web", "latest", web[1]),
    }, oc_output
    assert tool[0] in oc.after[0]
    assert regprune.before[0] - regprune.after[0] == images_removed
    assert regprune.before[1] - regprune.after[1] == revisions_removed
    # What is left in the storage: oc deleted through the registry's API, regprune's hard
    # prune in the storage; the blobs left are the same: the 3 manifests, their 3 configs and
    # their 3 own layers (the base layer is shared with kept Images).
    assert len(oc.blobs_before - oc.blobs_after) == 9, sorted(oc.blobs_before - oc.blobs_after)
    assert oc.blobs_after == regprune.blobs_after


def blobs(registry: OpenShiftRegistry) -> set[str]:
    return {
        key for key in registry.list_storage() if key.startswith("blobs/") and key.endswith("/data")
    }

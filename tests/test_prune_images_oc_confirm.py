"""Differential with ``--confirm`` on OpenShift's registry: ``oc adm prune images --confirm``
on one cluster, ``regprune prune-images --confirm`` (with its hard prune of the storage) on an
identical second one; both remove the same tag revisions and Images, and every image a
workload uses still pulls through the registry afterwards.

The clusters are built by pushing through OpenShift's registry (tests/openshift_registry.py), so
the API holds what a cluster records for a push; the same tag is pushed several times for tag
histories of different depths. Needs ``oc`` (see tests/test_prune_images_oc.py), the registry
binary and skopeo; skips, saying what is missing, without them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from regprune.cli.main import main
from tests.openshift_registry import OpenShiftRegistry, start_openshift_registry, stop_pair
from tests.registry_bench import LayerSpec, assert_pulls, build_image, pull_ok, push
from tests.test_prune_images_oc import OC, _require_oc_and_tls, _workload
from tests.workloads_api import add_workload

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


def build_cluster(workdir: Path, layouts: dict[str, list[Path]]) -> Cluster:
    """Push every history through OpenShift's registry; workloads by digest and by tag."""
    registry = start_openshift_registry(workdir)
    try:
        pushed = {
            tag: [push(registry, layout, "t", tag).digest for layout in history]
            for tag, history in layouts.items()
        }
        host = registry.api.registry_host
        app, tool = pushed["ns1/app:latest"], pushed["ns2/tool:1.0"]
        used = [f"ns1/app@{app[0]}", f"ns1/app@{app[1]}", "ns2/tool:1.0", f"ns2/tool@{tool[0]}"]
        kinds = ["Pod", "Job", "Deployment", "DeploymentConfig"]
        for i, (kind, ref) in enumerate(zip(kinds, used, strict=True)):
            ns = ref.split("/")[0]
            add_workload(registry.api, _workload(kind, ns, f"w{i}", f"{host}/{ref}"))
        return Cluster(registry, pushed, used)
    except BaseException:
        stop_pair(registry)
        raise


@pytest.fixture(scope="module")
def clusters(
    tmp_path_factory: pytest.TempPathFactory, layouts: dict[str, list[Path]]
) -> Iterator[tuple[Cluster, Cluster]]:
    """Two identical clusters: one for oc, one for regprune."""
    if not OC.exists():
        pytest.skip(
            f"oc not found at {OC} (set REGPRUNE_OC); build it as "
            "/work/shared/openshift-oc/README.md says"
        )
    made: list[Cluster] = []
    try:
        for name in ("oc", "regprune"):
            made.append(build_cluster(tmp_path_factory.mktemp(f"cluster-{name}"), layouts))
        yield made[0], made[1]
    finally:
        for cluster in made:
            stop_pair(cluster.registry)


def test_oc_and_regprune_confirm_remove_the_same(
    clusters: tuple[Cluster, Cluster], tmp_path: Path
) -> None:
    by_oc, by_regprune = clusters
    _require_oc_and_tls(by_oc.registry.api)
    assert by_oc.pushed == by_regprune.pushed  # the same digests: identical clusters
    before = (by_oc.images(), by_oc.revisions())
    assert before == (by_regprune.images(), by_regprune.revisions())
    for cluster in clusters:
        for ref in cluster.used:
            assert_pulls(cluster.registry, ref)

    stored_before = blobs(by_oc.registry)
    assert stored_before == blobs(by_regprune.registry)

    kubeconfig = by_oc.registry.api.kubeconfig(tmp_path / "oc-kubeconfig")
    done = subprocess.run(
        [
            str(OC),
            "--kubeconfig",
            str(kubeconfig),
            "adm",
            "prune",
            "images",
            *OPTIONS,
            "--confirm",
            f"--registry-url=http://{by_oc.registry.api.registry_host}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    kubeconfig = by_regprune.registry.api.kubeconfig(tmp_path / "regprune-kubeconfig")
    code = main(
        [
            "prune-images",
            "--kubeconfig",
            str(kubeconfig),
            *OPTIONS,
            "--confirm",
            "--storage",
            by_regprune.registry.storage_url,
            "--hard-prune-keep-younger-than=0s",
            "--out",
            str(tmp_path / "regprune-run"),
        ]
    )
    assert code == 0

    images_removed = before[0] - by_oc.images()
    revisions_removed = before[1] - by_oc.revisions()
    app, tool = by_oc.pushed["ns1/app:latest"], by_oc.pushed["ns2/tool:1.0"]
    # Depth 5 keeps 2 revisions; revisions 0 and 1 are used by workloads by digest, which
    # keeps the revisions as well as their Images (oc: in use by digest): only app[2] goes.
    # tool keeps 2 of 3 and tool[0] is used by digest: nothing goes.
    # web, used by nothing, loses its 2 oldest revisions and their Images.
    web = by_oc.pushed["ns2/web:latest"]
    assert images_removed == {app[2], web[0], web[1]}, done.stdout
    assert revisions_removed == {
        ("ns1/app", "latest", app[2]),
        ("ns2/web", "latest", web[0]),
        ("ns2/web", "latest", web[1]),
    }, done.stdout
    assert tool[0] in by_oc.images()
    assert before[0] - by_regprune.images() == images_removed
    assert before[1] - by_regprune.revisions() == revisions_removed

    for cluster in clusters:
        for ref in cluster.used:
            assert_pulls(cluster.registry, ref)
        for tag in HISTORIES:
            assert_pulls(cluster.registry, tag)
        for repo, digest in (("ns1/app", app[2]), ("ns2/web", web[0]), ("ns2/web", web[1])):
            assert not pull_ok(cluster.registry, f"{repo}@{digest}")
    # What is left in the storage: oc deleted through the registry's API, regprune's hard
    # prune in the storage; the blobs left are the same: the 3 manifests, their 3 configs and
    # their 3 own layers (the base layer is shared with kept Images).
    left = blobs(by_oc.registry)
    assert len(stored_before - left) == 9, sorted(stored_before - left)
    assert left == blobs(by_regprune.registry)


def blobs(registry: OpenShiftRegistry) -> set[str]:
    return {
        key for key in registry.list_storage() if key.startswith("blobs/") and key.endswith("/data")
    }

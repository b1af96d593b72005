"""The work pool's image, run as OpenShift runs a pod: the nightly GC inside it.

The image is built with podman from deployments/Containerfile on a Debian base made here
(tests/harness/container.py), then every run is a pod of
``deployments/kubernetes-job-template.json`` rendered as Prefect's Kubernetes worker renders it: UID
1000790000 in group 0, a read-only root with only the template's ``emptyDir`` volumes writable, no
capabilities, the template's memory and CPU limits, the S3 Secret's keys as environment, and what
the kubelet gives a pod of ServiceAccount ``regprune``: its token and the cluster CA at the standard
path and ``KUBERNETES_SERVICE_HOST``/``PORT`` pointing at the real OpenShift API
(tests/harness/openshift_apiserver.py). The token is minted for the ServiceAccount of
``deployments/rbac/`` with exactly its grants; no kubeconfig exists in the pod, so the
kubernetes client takes the in-cluster configuration.

The cluster: OpenShift's registry storing on S3 (moto) with Images pushed through it into the
real API, tag histories deeper than the two revisions kept, and workloads using an old revision
by digest and a tag. Two nights, each checked against ``oc adm prune images`` run as a dry run
just before: first ``regprune prune-images --confirm`` with its hard prune (the command, in a
pod that starts its own temporary Prefect server); then, after more pushes, the
``nightly-image-gc`` deployment of ``deployments/prefect.yaml``, deployed from inside the image
and run by a ``process`` worker in a pod, reporting to a Prefect server on the machine. After
each: the Images and tag revisions oc would remove are gone, the storage holds exactly the
blobs of the Images left, every image a workload uses still pulls, and the report and audit
trail are in the run folder (the template's ``runs`` volume).

Skips, saying what to install or build, without podman/runc/mmdebstrap, the API binaries, oc,
etcd, OpenShift's registry or skopeo.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from tests.harness.container import (
    OPENSHIFT_USER,
    REPO,
    BuiltImage,
    Pod,
    build_image,
    empty_dir,
    podman,
    render_job,
    require_podman,
    service_account_folder,
)
from tests.harness.openshift_apiserver import RealOpenShiftAPI
from tests.harness.openshift_registry import OpenShiftRegistry
from tests.harness.prefect_runs import artifacts_of, flow_runs_started_since
from tests.harness.registry_bench import (
    MOTO_KEY,
    MOTO_REGION,
    MOTO_SECRET,
    LayerSpec,
    assert_pulls,
    push,
)
from tests.harness.registry_bench import (
    build_image as build_oci_image,
)

pytestmark = pytest.mark.slow

KEEP = ["--keep-tag-revisions=2", "--keep-younger-than=0s"]
#: tag -> pushes the first night finds (a new image each); the second night adds more.
FIRST = {"team-a/app:latest": 4, "team-b/tool:1.0": 3, "team-b/web:latest": 3}
SECOND = {"team-a/app:latest": 2, "team-b/web:latest": 1}
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
RUN_TIMEOUT = 900.0


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """The image, built once per session (podman's cache keeps its dependency layer)."""
    require_podman()
    return build_image(tmp_path_factory.mktemp("image") / "build.log")


def stored_blobs(registry: OpenShiftRegistry) -> set[str]:
    """Digests of the blobs in the registry's storage."""
    return {
        "sha256:" + key.split("/")[-2]
        for key in registry.list_storage()
        if key.startswith("blobs/") and key.endswith("/data")
    }


def blobs_of(image: dict[str, Any]) -> set[str]:
    """The blobs an Image holds in the storage: its manifest, config and layers."""
    config = (image.get("dockerImageMetadata") or {}).get("Id")
    layers = {layer["name"] for layer in image.get("dockerImageLayers") or []}
    return {image["metadata"]["name"], *layers, *([config] if config else [])}


@dataclass
class Cluster:
    registry: OpenShiftRegistry
    layouts: Path
    pushed: dict[str, list[str]] = field(default_factory=dict)  # tag -> digests, oldest first
    used: list[str] = field(default_factory=list)  # what workloads use, relative to the registry
    seed: int = 100

    @property
    def api(self) -> RealOpenShiftAPI:
        api = self.registry.api
        assert isinstance(api, RealOpenShiftAPI)
        return api

    def push(self, histories: dict[str, int]) -> None:
        """Push each tag that many times, a new image each time (a base layer all share)."""
        for tag, count in histories.items():
            for _ in range(count):
                self.seed += 1
                layout = self.layouts / f"img{self.seed}"
                build_oci_image(layout, "t", [LayerSpec(1), LayerSpec(self.seed)])
                self.pushed.setdefault(tag, []).append(push(self.registry, layout, "t", tag).digest)

    def images(self) -> dict[str, dict[str, Any]]:
        return {image["metadata"]["name"]: image for image in self.api.images()}

    def revisions(self) -> set[tuple[str, str, str]]:
        """(namespace/name, tag, image) of every tag history item."""
        found = set()
        for stream in self.api.imagestreams():
            meta = stream["metadata"]
            for tag in stream["status"].get("tags") or []:
                for item in tag["items"]:
                    found.add((f"{meta['namespace']}/{meta['name']}", tag["tag"], item["image"]))
        return found


@dataclass
class OcPlan:
    """What ``oc adm prune images`` (dry run) says it would remove."""

    images: set[str]
    revisions: Counter[str]  # namespace/name -> tag revisions
    output: str


def oc_dry_run(cluster: Cluster) -> OcPlan:
    done = cluster.api.oc(
        "adm",
        "prune",
        "images",
        *KEEP,
        f"--registry-url=http://{cluster.registry.url}",
        timeout=300,
    )
    revisions: Counter[str] = Counter()
    for m in re.finditer(r"Deleting (\d+) items from image stream (\S+)", done.stdout):
        revisions[m.group(2)] += int(m.group(1))
    images = set(re.findall(r"^Deleting image (\S+)$", done.stdout, re.MULTILINE))
    return OcPlan(images, revisions, done.stdout + done.stderr)


@dataclass
class Night:
    """One night's GC: the cluster before, oc's expectation, and what the run left."""

    oc: OcPlan
    images_before: dict[str, dict[str, Any]]
    revisions_before: set[tuple[str, str, str]]
    images_after: dict[str, dict[str, Any]]
    revisions_after: set[tuple[str, str, str]]
    stored_after: set[str]
    run_dir: Path
    logs: Path
    prefect: tuple[Any, datetime] | None = None  # the deployment's flow run, when created


def workload(kind: str, namespace: str, name: str, image: str) -> dict[str, Any]:
    container = {"name": "main", "image": image}
    if kind == "Pod":
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [container]},
        }
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


@pytest.fixture(scope="module")
def cluster(
    image: BuiltImage,
    openshift_registry_s3: OpenShiftRegistry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Cluster:
    """The first night's cluster: histories of 4, 3 and 3 revisions; a Pod using app's oldest
    revision by digest, a Deployment using tool:1.0."""
    registry = openshift_registry_s3
    for namespace in ("team-a", "team-b"):
        registry.api.namespace(namespace)
    cluster = Cluster(registry, tmp_path_factory.mktemp("layouts"))
    cluster.push(FIRST)
    host = registry.advertised
    oldest = f"team-a/app@{cluster.pushed['team-a/app:latest'][0]}"
    cluster.api.create(workload("Pod", "team-a", "uses-old-app", f"{host}/{oldest}"))
    cluster.api.create(workload("Deployment", "team-b", "tool", f"{host}/team-b/tool:1.0"))
    cluster.used = [oldest, "team-b/tool:1.0"]
    return cluster


@dataclass
class PodFactory:
    """Pods of the rendered job template in this cluster, as the ServiceAccount of
    deployments/rbac/ with exactly its grants."""

    image: BuiltImage
    cluster: Cluster
    service_account: Path
    runs: Path
    logs: Path

    def pod(self, command: list[str], env: dict[str, str] | None = None) -> Pod:
        # the suite's settle time (tests/conftest.py), as a deployment sets it in its env:
        # the default 5 minutes would be waited by every confirmed run in a pod
        settle = {"REGPRUNE_SETTLE": os.environ["REGPRUNE_SETTLE"]}
        manifest = render_job(
            {
                "image": self.image.name,
                "command": shlex.join(command),
                "env": {**settle, **(env or {})},
                "name": "regprune",
            }
        )
        s3 = self.cluster.registry.s3
        assert s3 is not None
        return Pod(
            manifest,
            api=self.cluster.api.url.removeprefix("https://"),
            service_account=self.service_account,
            secret={  # the aws_credentials_secret's keys
                "AWS_ACCESS_KEY_ID": MOTO_KEY,
                "AWS_SECRET_ACCESS_KEY": MOTO_SECRET,
                "AWS_REGION": MOTO_REGION,
                "AWS_ENDPOINT_URL": s3.moto.endpoint_url,
            },
            volumes={"runs": self.runs},
        )


@pytest.fixture(scope="module")
def pods(
    image: BuiltImage, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> PodFactory:
    api = cluster.api
    token = api.rbac_token()  # oc apply -f deployments/rbac/, oc create token regprune
    folder = tmp_path_factory.mktemp("pod")
    return PodFactory(
        image,
        cluster,
        service_account_folder(folder / "serviceaccount", token, api.ca_pem, "regprune"),
        empty_dir(folder / "regprune-runs"),
        folder,
    )


def new_folder(runs: Path, before: set[Path], prefix: str) -> Path:
    """The run folder a pod made in the ``runs`` volume (besides DuckDB's spill folder)."""
    [made] = {path for path in set(runs.iterdir()) - before if path.name.startswith(prefix)}
    return made


@pytest.fixture(scope="module")
def first_night(cluster: Cluster, pods: PodFactory) -> Night:
    """``regprune prune-images --confirm`` with the storage: its hard prune follows."""
    images_before, revisions_before = cluster.images(), cluster.revisions()
    expected = oc_dry_run(cluster)
    runs_before = set(pods.runs.iterdir())
    command = [
        "regprune",
        "prune-images",
        "--confirm",
        *KEEP,
        "--storage",
        cluster.registry.storage_url,
        "--hard-prune-keep-younger-than=0s",
    ]
    log = pods.logs / "prune-images.log"
    done = pods.pod(command).run(log=log)
    assert done.returncode == 0, log.read_text()[-6000:]
    return Night(
        expected,
        images_before,
        revisions_before,
        cluster.images(),
        cluster.revisions(),
        stored_blobs(cluster.registry),
        new_folder(pods.runs, runs_before, "prune-images-"),
        log,
    )


def check_night(cluster: Cluster, night: Night) -> None:
    """What oc would have removed is gone, nothing else; the storage holds exactly the blobs
    of the Images left; what workloads use and every tag still pull."""
    removed = set(night.images_before) - set(night.images_after)
    assert night.oc.images, f"oc would remove nothing: the test proves nothing\n{night.oc.output}"
    assert removed == night.oc.images, night.oc.output
    gone = night.revisions_before - night.revisions_after
    assert Counter(stream for stream, _, _ in gone) == night.oc.revisions, night.oc.output
    kept = set().union(*(blobs_of(image) for image in night.images_after.values()))
    freed = set().union(*(blobs_of(night.images_before[name]) for name in removed)) - kept
    assert freed, "no blob only removed Images held"
    assert night.stored_after == kept, (
        f"left over: {sorted(night.stored_after - kept)}; lost: {sorted(kept - night.stored_after)}"
    )
    for ref in cluster.used:
        assert_pulls(cluster.registry, ref)
    for tag in cluster.pushed:
        assert_pulls(cluster.registry, tag)


def test_the_image_runs_as_an_arbitrary_uid_with_a_read_only_root(
    image: BuiltImage, tmp_path: Path
) -> None:
    """What OpenShift relies on: a non-root default user in group 0; and every storage client
    imports (the image once had only S3's)."""
    inspected = subprocess.run(
        [*podman(), "image", "inspect", image.name, "--format", "{{.Config.User}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert inspected.stdout.strip() == "1001:0"
    clients = sorted(
        {
            module
            for path in (REPO / "regprune" / "storage").glob("*.py")
            for module in re.findall(r'cloud\.require\("([\w.]+)"', path.read_text())
        }
    )
    assert {"gcsfs.core", "azure.storage.blob", "swiftclient.client"} <= set(clients)
    imports = "; ".join(f"import {module}" for module in clients)
    code = f"{imports}; import os; print(os.getuid(), os.getgid())"
    manifest = render_job({"image": image.name, "command": shlex.join(["python", "-c", code])})
    pod = Pod(manifest, api="127.0.0.1:1", service_account=tmp_path)
    done = pod.run(log=tmp_path / "pod.log", timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == OPENSHIFT_USER.split(":")


def test_prune_images_then_the_hard_prune_in_a_pod(cluster: Cluster, first_night: Night) -> None:
    check_night(cluster, first_night)


def check_audit_trail(night: Night, images_run: Path, hard_prune_run: Path) -> None:
    """prune-images' audit trail names every Image deleted, the hard prune's every blob it
    removed (moved into its quarantine, or purged: the two-phase delete), and its report is
    beside them: in the pod's ``runs`` volume."""
    removed = set(night.images_before) - set(night.images_after)
    deleted_images = duckdb.sql(
        f"SELECT name FROM '{images_run / 'images_actions.parquet'}' "
        "WHERE kind = 'Image' AND status = 'deleted'"
    ).fetchall()
    assert {name for (name,) in deleted_images} == removed
    kept = set().union(*(blobs_of(image) for image in night.images_after.values()))
    freed = set().union(*(blobs_of(night.images_before[name]) for name in removed)) - kept
    deleted_blobs = duckdb.sql(
        f"SELECT digest FROM '{hard_prune_run / 'actions.parquet'}' "
        "WHERE action = 'delete_blob' AND status IN ('quarantined', 'purged')"
    ).fetchall()
    assert {digest for (digest,) in deleted_blobs} == freed
    assert (hard_prune_run / "report.html").stat().st_size > 0


def test_the_pods_run_folder_holds_the_report_and_the_audit_trail(first_night: Night) -> None:
    run_dir = first_night.run_dir
    assert run_dir.name.startswith("prune-images-")
    check_audit_trail(first_night, run_dir, run_dir / "hard-prune")
    # no PREFECT_API_URL in the pod: the command started Prefect's temporary server, its
    # database in PREFECT_HOME, under the read-only root
    assert "Starting a temporary Prefect server" in first_night.logs.read_text()


@pytest.fixture(scope="module")
def second_night(
    cluster: Cluster, pods: PodFactory, first_night: Night, prefect_server: None
) -> Night:
    """More pushes, then the deployment path: ``prefect deploy`` from inside the image (the
    working directory it records is the image's /opt/regprune), a run of nightly-image-gc
    created as the UI's Run button does, and a ``process`` worker in a pod that picks it up."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    cluster.push(SECOND)
    images_before, revisions_before = cluster.images(), cluster.revisions()
    expected = oc_dry_run(cluster)
    env = {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    pool = yaml.safe_load(PREFECT_FILE.read_text())["definitions"]["work_pool"]["name"]
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        deploy = ["prefect", "--no-prompt", "deploy", "--all"]
        log = pods.logs / "deploy.log"
        done = pods.pod([*deploy, "--prefect-file", "deployments/prefect.yaml"], env).run(log=log)
        assert done.returncode == 0, log.read_text()[-6000:]
        deployment = client.read_deployment_by_name("regprune-nightly-gc/nightly-image-gc")
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/regprune"}}
        ]
        since = datetime.now(UTC)
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "source": {"storage": cluster.registry.storage_url, "metadata": "kube"},
                "keep_tag_revisions": 2,
                "keep_younger_than": "0s",
                "hard_prune_keep_younger_than": "0s",
                "confirm": True,
            },
        )
        runs_before = set(pods.runs.iterdir())
        worker = ["prefect", "worker", "start", "--pool", pool, "--type", "process"]
        log = pods.logs / "worker.log"
        done = pods.pod([*worker, "--run-once", "--limit", "1"], env).run(
            log=log, timeout=RUN_TIMEOUT
        )
        assert done.returncode == 0, log.read_text()[-6000:]
        flow_run = client.read_flow_run(run.id)
    assert flow_run.state is not None and flow_run.state.is_completed(), (
        f"{flow_run.state_name}: {flow_run.state and flow_run.state.message}\n"
        + log.read_text()[-6000:]
    )
    return Night(
        expected,
        images_before,
        revisions_before,
        cluster.images(),
        cluster.revisions(),
        stored_blobs(cluster.registry),
        new_folder(pods.runs, runs_before, "nightly-gc-"),
        log,
        (flow_run, since),
    )


def test_the_nightly_image_gc_deployment_run_by_a_worker_in_a_pod(
    cluster: Cluster, second_night: Night
) -> None:
    check_night(cluster, second_night)


def test_the_deployments_run_is_completed_in_prefect_with_its_artifacts(
    second_night: Night,
) -> None:
    assert second_night.prefect is not None
    flow_run, since = second_night.prefect
    assert flow_run.parameters["confirm"] is True
    # the run and its subflows (prune-images, the hard prune): nothing else ran since
    runs = flow_runs_started_since(since)
    assert flow_run.id in {r.id for r in runs}
    keys = {a.key for a in artifacts_of(runs)}
    assert {
        "regprune-prune-images-summary",
        "regprune-prune-summary",
        "regprune-top-namespaces",
    } <= keys
    run_dir = second_night.run_dir
    check_audit_trail(second_night, run_dir / "prune-images", run_dir / "hard-prune")

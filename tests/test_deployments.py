"""The deployments of deployments/prefect.yaml on a real Prefect server, run by a process worker.

On the session's Prefect test server (over HTTP, with a PREFECT_HOME of the module's own), the
module creates the work pools and registers the deployments with the commands docs/operations.md
gives, starts a worker, and
triggers runs the way the UI's Run button does (a flow run created from the deployment, with
parameters). The runs read the real registry and the OpenShift API test server, which allows
only what the RBAC manifests grant (regprune/permissions.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import duckdb
import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import LogSort
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL

from regprune.layout import blob_data_path
from regprune.permissions import PRUNE_IMAGES, READ_METADATA, RECOVER, Role
from tests.harness.openshift_api import OpenShiftAPIServer
from tests.harness.registry_bench import (
    PushedImage,
    Registry,
    push,
    upload_blob_without_manifest,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
K8S_TEMPLATE = REPO / "deployments" / "kubernetes-job-template.json"
POOL = "regprune"
PREFECT = [sys.executable, "-m", "prefect"]
"""The ``prefect`` command of this interpreter (a virtual environment may lack the script)."""
RUN_TIMEOUT = 300.0


@dataclass
class PrefectServer:
    url: str
    env: dict[str, str]
    logs: Path

    def cli(self, *args: str, cwd: Path = REPO) -> str:
        """A ``prefect`` command against this server, as a user types it."""
        proc = subprocess.run(
            [*PREFECT, *args], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=300
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"prefect {' '.join(args)} failed:\n{output}"
        return output

    def log_tail(self, name: str) -> str:
        path = self.logs / name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGINT (a worker shuts down cleanly), then SIGKILL for the process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


@pytest.fixture(scope="module")
def prefect_api(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> PrefectServer:
    """The session's Prefect test server (one server per session), reached by the ``prefect``
    commands and the worker started here as a user reaches a server: PREFECT_API_URL."""
    home = tmp_path_factory.mktemp("prefect-home")
    url = str(PREFECT_API_URL.value())
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
    }
    return PrefectServer(url, env, home)


@pytest.fixture(scope="module")
def deployed(prefect_api: PrefectServer) -> PrefectServer:
    """The steps of docs/operations.md: both pools, then every deployment of the file."""
    # --overwrite: the session's server is shared, and test_container may have made this pool
    prefect_api.cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
    prefect_api.cli(
        "work-pool",
        "create",
        f"{POOL}-kubernetes",
        "--overwrite",
        "--type",
        "kubernetes",
        "--base-job-template",
        str(K8S_TEMPLATE),
    )
    prefect_api.cli("--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE))
    return prefect_api


@pytest.fixture(scope="module")
def worker(deployed: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A process worker started elsewhere than the repository: the deployments' pull step
    decides where runs execute."""
    with (deployed.logs / "worker.log").open("wb") as log:
        proc = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", POOL, "--type", "process"],
            cwd=tmp_path_factory.mktemp("worker"),
            env=deployed.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield
    finally:
        stop(proc)


@dataclass
class Cluster:
    """The registry's storage and the cluster's image metadata, drifted apart on purpose."""

    registry: Registry
    api: OpenShiftAPIServer
    kubeconfig: Path
    app_v1: PushedImage
    app_v2: PushedImage
    tool: PushedImage
    lost: PushedImage
    orphan_blob: str
    missing_layer: str

    def source(self) -> dict[str, Any]:
        return {
            "storage": self.registry.storage_url,
            "metadata": "kube",
            "kubeconfig": str(self.kubeconfig),
            "shard_tasks": 2,
        }

    def allow(self, *roles: Role) -> None:
        """Restrict the API to what the roles grant (what the RBAC manifests bind)."""
        self.api.allow(
            {
                (verb, grant.resource)
                for role in roles
                for grant in role.grants
                for verb in grant.verbs
            }
        )


@pytest.fixture(scope="module")
def cluster(
    registry_fs: Registry, oci_layouts: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """ns/app v1 and v2 and other/tool are registered; ns/app:old (the base image) was pushed
    but is unknown to the API (lost); an abandoned upload left an orphan blob; a layer of
    other/tool was deleted from storage."""
    app_v1 = push(registry_fs, *oci_layouts["app-v1"], "ns/app:v1")
    app_v2 = push(registry_fs, *oci_layouts["app-v2"], "ns/app:v2")
    tool = push(registry_fs, *oci_layouts["tool"], "other/tool:1.0")
    lost = push(registry_fs, *oci_layouts["base"], "ns/app:old")
    orphan_blob = upload_blob_without_manifest(registry_fs, "ns/app", b"an abandoned push")
    (missing_layer,) = (layer.digest for layer in tool.layers)
    registry_fs.path(blob_data_path(missing_layer)).unlink()

    api = OpenShiftAPIServer().start()
    try:
        for image in (app_v1, app_v2, tool):
            api.add_image(image.openshift_image(api.registry_host))
        api.add_imagestream("ns", "app", {"v1": [app_v1.digest], "v2": [app_v2.digest]})
        api.add_imagestream("other", "tool", {"1.0": [tool.digest]})
        kubeconfig = api.kubeconfig(tmp_path_factory.mktemp("kube") / "config")
        yield Cluster(
            registry_fs, api, kubeconfig, app_v1, app_v2, tool, lost, orphan_blob, missing_layer
        )
    finally:
        api.stop()


def deployment_id(client: SyncPrefectClient, name: str) -> UUID:
    return client.read_deployment_by_name(name).id


def run_button(client: SyncPrefectClient, deployment: str, parameters: dict[str, Any]) -> UUID:
    """What the UI's Run button (with custom parameters) does."""
    run = client.create_flow_run_from_deployment(
        deployment_id(client, deployment), parameters=parameters
    )
    return run.id


def finished(client: SyncPrefectClient, run_id: UUID, server: PrefectServer) -> FlowRun:
    """Wait for the run to end; a run that did not complete fails with its logs."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            break
        if time.monotonic() > deadline:
            pytest.fail(f"run {run.name} still {run.state_name}\n{server.log_tail('worker.log')}")
        time.sleep(1)
    if not run.state.is_completed():
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), sort=LogSort.TIMESTAMP_ASC
        )
        text = "\n".join(log.message for log in logs)[-4000:]
        pytest.fail(f"run {run.name} ended {run.state_name}: {run.state.message}\n{text}")
    return run


def artifacts(client: SyncPrefectClient, run_id: UUID) -> dict[str, Any]:
    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    )
    return {artifact.key: artifact for artifact in found if artifact.key}


@pytest.fixture(scope="module")
def client(deployed: PrefectServer) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as client:
        yield client


def test_deployments_are_registered_as_the_file_says(
    deployed: PrefectServer, client: SyncPrefectClient
) -> None:
    spec = yaml.safe_load(PREFECT_FILE.read_text())
    for entry in spec["deployments"]:
        flow_name = {
            "prune_flow": "prune",
            "check_flow": "check",
            "snapshot_flow": "snapshot",
            "nightly_gc_flow": "nightly-gc",
        }
        flow = "regprune-" + flow_name[entry["entrypoint"].rsplit(":", 1)[1]]
        deployment = client.read_deployment_by_name(f"{flow}/{entry['name']}")
        assert deployment.work_pool_name == POOL
        assert deployment.entrypoint == entry["entrypoint"]
        # Runs execute in the folder deployed from, where the entrypoints are.
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        ]
        assert deployment.enforce_parameter_schema
        schema = deployment.parameter_openapi_schema
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{entry['name']}: parameter {name} undescribed"
        for model, definition in schema.get("definitions", {}).items():
            for name, prop in definition["properties"].items():
                assert prop.get("description"), f"{model}.{name} undescribed"

    gc = client.read_deployment_by_name("regprune-prune/nightly-gc")
    assert gc.global_concurrency_limit is not None
    assert gc.global_concurrency_limit.limit == 1
    [schedule] = gc.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 3 * * *", "UTC")
    assert gc.parameters["confirm"] is False

    whole = client.read_deployment_by_name("regprune-nightly-gc/nightly-image-gc")
    assert whole.global_concurrency_limit is not None
    assert whole.global_concurrency_limit.limit == 1
    [schedule] = whole.schedules
    assert schedule.schedule.cron == "0 3 * * *"
    assert not schedule.active  # on instead of nightly-gc's, never beside it
    assert whole.parameters["confirm"] is False
    assert (whole.parameters["keep_tag_revisions"], whole.parameters["keep_younger_than"]) == (
        3,
        "60m",
    )

    pool = client.read_work_pool(f"{POOL}-kubernetes")
    assert pool.base_job_template == json.loads(K8S_TEMPLATE.read_text())


def test_a_parameter_the_form_would_refuse_is_refused(
    deployed: PrefectServer, client: SyncPrefectClient
) -> None:
    """Parameters are checked against the flow's schema before a run exists."""
    with pytest.raises(PrefectHTTPStatusError) as refused:
        run_button(client, "regprune-prune/nightly-gc", {"duckdb": {"memory_limit": "2Gi"}})
    assert refused.value.response.status_code == 409
    assert "duckdb.memory_limit" in refused.value.response.json()["detail"]


@pytest.mark.usefixtures("worker")
def test_nightly_gc_run_plans_the_garbage_and_publishes_its_artifacts(
    deployed: PrefectServer, client: SyncPrefectClient, cluster: Cluster, tmp_path: Path
) -> None:
    cluster.allow(READ_METADATA)
    report = tmp_path / "prune.json"
    run_id = run_button(
        client,
        "regprune-prune/nightly-gc",
        {
            "source": cluster.source(),
            "out": str(tmp_path / "run"),
            "keep_younger_than": "0s",
            "report": str(report),
            "duckdb": {"memory_limit": "1GB", "temp_directory": str(tmp_path / "spill")},
        },
    )
    run = finished(client, run_id, deployed)
    assert run.parameters["confirm"] is False  # the deployment's default: a dry run

    plan = json.loads(report.read_text())
    assert plan["mode"] == "dry-run"
    deleted = {blob["digest"] for blob in plan["blobs"]}
    assert cluster.orphan_blob in deleted
    assert cluster.lost.digest in deleted
    assert not deleted & (cluster.app_v1.blob_digests() | cluster.tool.blob_digests())
    assert (cluster.registry.path(blob_data_path(cluster.orphan_blob))).exists()

    found = artifacts(client, run_id)
    summary = found["regprune-prune-summary"].data
    assert f"Would delete {len(plan['blobs'])} blobs" in summary
    top = json.loads(found["regprune-top-namespaces"].data)
    assert "ns" in {row["namespace"] for row in top}


@pytest.mark.usefixtures("worker")
def test_two_gc_runs_never_overlap(
    deployed: PrefectServer, client: SyncPrefectClient, cluster: Cluster, tmp_path: Path
) -> None:
    cluster.allow(READ_METADATA)
    runs = [
        run_button(
            client,
            "regprune-prune/nightly-gc",
            {"source": cluster.source(), "out": str(tmp_path / f"run-{n}")},
        )
        for n in range(2)
    ]
    first, second = sorted(
        (finished(client, run_id, deployed) for run_id in runs), key=lambda r: r.start_time
    )
    assert first.end_time <= second.start_time


@pytest.mark.usefixtures("worker")
def test_the_whole_nightly_gc_is_one_run_and_a_dry_run_by_default(
    deployed: PrefectServer, client: SyncPrefectClient, cluster: Cluster, tmp_path: Path
) -> None:
    """prune-images lists workloads too: regprune-prune-images grants that."""
    cluster.allow(READ_METADATA, PRUNE_IMAGES)
    out = tmp_path / "run"
    run_id = run_button(
        client,
        "regprune-nightly-gc/nightly-image-gc",
        {"source": cluster.source(), "out": str(out), "hard_prune_keep_younger_than": "0s"},
    )
    run = finished(client, run_id, deployed)
    assert run.parameters["confirm"] is False
    assert run.parameters["keep_tag_revisions"] == 3
    assert (out / "prune-images" / "cluster.json").exists()
    planned = duckdb.sql(
        f"SELECT digest FROM '{out / 'hard-prune' / 'plan_blobs.parquet'}' WHERE action = 'delete'"
    ).fetchall()
    deleted = {digest for (digest,) in planned}
    assert {cluster.orphan_blob, cluster.lost.digest} <= deleted
    assert not deleted & (cluster.app_v1.blob_digests() | cluster.tool.blob_digests())
    assert (cluster.registry.path(blob_data_path(cluster.orphan_blob))).exists()
    assert {image["metadata"]["name"] for image in cluster.api.images()} == {
        cluster.app_v1.digest,
        cluster.app_v2.digest,
        cluster.tool.digest,
    }


@pytest.mark.usefixtures("worker")
def test_check_run_reports_broken_tags_and_lost_manifests(
    deployed: PrefectServer, client: SyncPrefectClient, cluster: Cluster, tmp_path: Path
) -> None:
    cluster.allow(READ_METADATA)
    report = tmp_path / "check.json"
    run_id = run_button(
        client,
        "regprune-check/check",
        {"source": cluster.source(), "out": str(tmp_path / "run"), "report": str(report)},
    )
    finished(client, run_id, deployed)

    found = json.loads(report.read_text())
    broken = {
        (r["namespace"], r["name"], r["tag"], r["missing"])
        for r in found["broken_imagestream_tags"]
    }
    assert ("other", "tool", "1.0", cluster.missing_layer) in broken
    assert ("ns", "app", cluster.lost.digest) in {
        (r["namespace"], r["name"], r["digest"]) for r in found["lost_found"]
    }
    summary = artifacts(client, run_id)["regprune-check-summary"].data
    assert f"lost found: {len(found['lost_found'])}" in summary


@pytest.mark.usefixtures("worker")
def test_recover_run_is_a_dry_run_until_confirmed(
    deployed: PrefectServer, client: SyncPrefectClient, cluster: Cluster, tmp_path: Path
) -> None:
    cluster.allow(READ_METADATA)  # a dry run needs no write access
    dry = run_button(
        client, "regprune-check/recover", {"source": cluster.source(), "out": str(tmp_path / "dry")}
    )
    finished(client, dry, deployed)
    assert "regprune-check-summary" in artifacts(client, dry)
    assert set(tags(cluster.api, "ns", "app")) == {"v1", "v2"}

    cluster.allow(READ_METADATA, RECOVER)
    confirmed = run_button(
        client,
        "regprune-check/recover",
        {"source": cluster.source(), "out": str(tmp_path / "confirmed"), "confirm": True},
    )
    finished(client, confirmed, deployed)
    restored = {
        tag: images
        for tag, images in tags(cluster.api, "ns", "app").items()
        if tag.startswith("lost-found-")
    }
    assert list(restored.values()) == [[cluster.lost.digest]]


def tags(api: OpenShiftAPIServer, namespace: str, name: str) -> dict[str, list[str]]:
    stream = api.imagestream(namespace, name)
    assert stream is not None
    return {t["tag"]: [i["image"] for i in t["items"]] for t in stream["status"].get("tags") or []}


@pytest.mark.usefixtures("worker")
def test_snapshot_run_writes_the_tables(
    deployed: PrefectServer, client: SyncPrefectClient, cluster: Cluster, tmp_path: Path
) -> None:
    cluster.allow(READ_METADATA)
    out = tmp_path / "snapshot"
    run_id = run_button(
        client, "regprune-snapshot/snapshot", {"source": cluster.source(), "out": str(out)}
    )
    finished(client, run_id, deployed)
    summary = json.loads((out / "snapshot.json").read_text())
    stored = [
        key
        for key in cluster.registry.list_storage()
        if key.startswith("blobs/") and key.endswith("/data")
    ]
    assert summary["rows"]["blobs"] == len(stored)
    assert summary["rows"]["imagestreams"] == len(cluster.api.imagestreams())

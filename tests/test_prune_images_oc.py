"""Differential: ``oc adm prune images`` (dry run) next to ``regprune prune-images`` with the
same options, on the same cluster: the same tag revisions and Images are removed.

On the real OpenShift API (``tests/harness/openshift_apiserver.py``) with real workloads of every
kind oc reads; and on the API test server for the ages only it can give (Images created days
ago: the real server dates every Image now, so there every run uses --keep-younger-than=0s).

Needs ``oc`` (``$REGPRUNE_OC`` or ../shared/openshift-oc/oc; how it is built:
/work/shared/openshift-oc/README.md). Skips with the reason when it is missing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import main
from tests.harness.openshift_api import DOCKER_MANIFEST_LIST, OpenShiftAPIServer, fake_digest
from tests.harness.openshift_apiserver import RealOpenShiftAPI
from tests.harness.workloads_api import add_workload

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

OC = Path(os.environ.get("REGPRUNE_OC", "/work/shared/openshift-oc/oc"))
OLD = datetime.now(UTC) - timedelta(days=3)
YOUNG = datetime.now(UTC) - timedelta(minutes=5)
HOST = "image-registry.openshift-image-registry.svc:5000"


@pytest.fixture
def tls_api() -> Iterator[OpenShiftAPIServer]:
    """The image API over HTTPS: oc (Go's client) sends a kubeconfig's token only there."""
    server = OpenShiftAPIServer(tls=True).start()
    try:
        yield server
    finally:
        server.stop()


def _require_oc_and_tls(server: OpenShiftAPIServer) -> None:
    if not OC.exists():
        pytest.skip(
            f"oc not found at {OC} (set REGPRUNE_OC); build it as "
            "/work/shared/openshift-oc/README.md says"
        )
    if not server.url.startswith("https://"):
        pytest.skip(
            "the OpenShift API test server does not serve TLS yet: oc sends its bearer token "
            "only over HTTPS (see /work/shared/openshift-oc/README.md)"
        )


def _workload(kind: str, ns: str, name: str, image: str, **extra: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": "app", "image": image}]}
    body: dict[str, Any] = {"kind": kind, "metadata": {"namespace": ns, "name": name}}
    if kind == "Pod":
        body["metadata"]["creationTimestamp"] = OLD.isoformat()
        body |= {"spec": spec, "status": {"phase": extra.get("phase", "Running")}}
    elif kind == "CronJob":
        body["spec"] = {"jobTemplate": {"spec": {"template": {"spec": spec}}}}
    else:
        body["spec"] = {"template": {"spec": spec}}
    return body


WORKLOAD_KINDS = (
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "DeploymentConfig",
    "DaemonSet",
    "StatefulSet",
    "Job",
    "CronJob",
)


def build_cluster(api: OpenShiftAPIServer) -> None:
    """Histories of different depths and ages, every workload kind by tag and by digest, a
    manifest list, unmanaged Images, a LimitRange."""
    digests: dict[str, list[str]] = {}
    for ns, name, depth, created in (
        ("a", "deep", 7, OLD),
        ("a", "young", 4, YOUNG),
        ("b", "shallow", 2, OLD),
    ):
        digests[name] = [fake_digest(f"{name}{i}") for i in range(depth)]
        for digest in digests[name]:
            api.add_image(digest=digest, repository=f"{ns}/{name}", created=created)
        api.add_imagestream(ns, name, {"latest": digests[name]}, created=created)
    child = fake_digest("child")
    api.add_image(digest=child, repository="b/list", created=OLD)
    api.add_image(
        digest=fake_digest("list"),
        repository="b/list",
        media_type=DOCKER_MANIFEST_LIST,
        manifests=[child],
        created=OLD,
    )
    api.add_imagestream("b", "list", {"v": [fake_digest("list")]}, created=OLD)
    api.add_image(digest=fake_digest("external"), managed=False, created=OLD)
    deep = digests["deep"]
    kinds = [
        "Pod",
        "ReplicationController",
        "ReplicaSet",
        "Deployment",
        "DeploymentConfig",
        "DaemonSet",
        "StatefulSet",
        "Job",
        "CronJob",
    ]
    for i, kind in enumerate(kinds):
        image = f"{HOST}/a/deep@{deep[3 + i % 4]}" if i % 2 else f"{HOST}/a/deep:latest"
        add_workload(api, _workload(kind, "a", f"w{i}", image))
    add_workload(api, _workload("Pod", "a", "done", f"{HOST}/a/deep@{deep[6]}", phase="Failed"))


def oc_plan(kubeconfig: Path, *options: str) -> tuple[Counter, set]:
    done = subprocess.run(
        [str(OC), "--kubeconfig", str(kubeconfig), "adm", "prune", "images", *options],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    streams = Counter()
    for m in re.finditer(r"Deleting (\d+) items from image stream (\S+)", done.stdout):
        streams[m.group(2)] += int(m.group(1))
    images = set(re.findall(r"^Deleting image (\S+)$", done.stdout, re.MULTILINE))
    return streams, images


def test_regprune_removes_what_oc_removes_by_age(
    tls_api: OpenShiftAPIServer, tmp_path: Path
) -> None:
    """Images and revisions days and minutes old, with oc's 60m. (Test server: the real one
    dates every Image now.)"""
    _require_oc_and_tls(tls_api)
    build_cluster(tls_api)
    kubeconfig = tls_api.kubeconfig(tmp_path / "kubeconfig")
    options = ["--keep-tag-revisions=3", "--keep-younger-than=60m"]
    compare_with_oc(kubeconfig, tmp_path, options)


def real_workload(kind: str, ns: str, name: str, image: str) -> dict[str, Any]:
    """A valid object of ``kind`` whose pod template runs ``image``."""
    labels = {"app": name}
    pod_spec: dict[str, Any] = {"containers": [{"name": "app", "image": image}]}
    template = {"metadata": {"labels": labels}, "spec": pod_spec}
    group = {
        "Pod": "v1",
        "ReplicationController": "v1",
        "DeploymentConfig": "apps.openshift.io/v1",
        "Job": "batch/v1",
        "CronJob": "batch/v1",
    }.get(kind, "apps/v1")
    body: dict[str, Any] = {
        "apiVersion": group,
        "kind": kind,
        "metadata": {"namespace": ns, "name": name},
    }
    if kind == "Pod":
        body["spec"] = pod_spec
    elif kind in ("ReplicationController", "DeploymentConfig"):
        body["spec"] = {"replicas": 1, "selector": labels, "template": template}
    elif kind == "Job":
        template["spec"] = {**pod_spec, "restartPolicy": "Never"}
        body["spec"] = {"template": template}
    elif kind == "CronJob":
        template["spec"] = {**pod_spec, "restartPolicy": "Never"}
        body["spec"] = {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        body["spec"] = {"selector": {"matchLabels": labels}, "template": template}
        if kind == "StatefulSet":
            body["spec"]["serviceName"] = name
    return body


def build_real_cluster(api: RealOpenShiftAPI) -> None:
    """build_cluster's histories, list, unmanaged Image and workloads on the real API."""
    digests: dict[str, list[str]] = {}
    for ns, name, depth, created in (
        ("a", "deep", 7, OLD),
        ("a", "young", 4, YOUNG),
        ("b", "shallow", 2, OLD),
    ):
        digests[name] = [fake_digest(f"{name}{i}") for i in range(depth)]
        for digest in digests[name]:
            api.add_image(digest=digest, repository=f"{ns}/{name}", created=created)
        api.add_imagestream(ns, name, {"latest": digests[name]}, created=created)
    child = fake_digest("child")
    api.add_image(digest=child, repository="b/list", created=OLD)
    api.add_image(
        digest=fake_digest("list"),
        repository="b/list",
        media_type=DOCKER_MANIFEST_LIST,
        manifests=[child],
        created=OLD,
    )
    api.add_imagestream("b", "list", {"v": [fake_digest("list")]}, created=OLD)
    api.add_image(digest=fake_digest("external"), managed=False, created=OLD)
    deep = digests["deep"]
    for i, kind in enumerate(WORKLOAD_KINDS):
        image = f"{HOST}/a/deep@{deep[3 + i % 4]}" if i % 2 else f"{HOST}/a/deep:latest"
        api.create(real_workload(kind, "a", f"w{i}", image))
        if kind == "Pod":
            api.set_status("Pod", "a", f"w{i}", {"phase": "Running"})
    api.create(real_workload("Pod", "a", "done", f"{HOST}/a/deep@{deep[6]}"))
    api.set_status("Pod", "a", "done", {"phase": "Failed"})
    api.create(
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"namespace": "a", "name": "images"},
            "spec": {"limits": [{"type": "openshift.io/Image", "max": {"storage": "1Gi"}}]},
        }
    )


@pytest.mark.parametrize(
    "options",
    [
        ["--keep-tag-revisions=3", "--keep-younger-than=0s"],
        ["--keep-tag-revisions=1", "--keep-younger-than=0s", "--all=false"],
        ["--keep-tag-revisions=1", "--keep-younger-than=0s", "--prune-over-size-limit"],
    ],
)
def test_regprune_removes_what_oc_removes(
    openshift_apiserver: RealOpenShiftAPI, tmp_path: Path, options: list[str]
) -> None:
    """Both read the real API: its pagination, its workload lists and their objects."""
    if not OC.exists():
        pytest.skip(f"oc not found at {OC} (set REGPRUNE_OC)")
    build_real_cluster(openshift_apiserver)
    kubeconfig = openshift_apiserver.kubeconfig(tmp_path / "kubeconfig")
    if "--prune-over-size-limit" in options:
        options = [o for o in options if not o.startswith("--keep-")]
    compare_with_oc(kubeconfig, tmp_path, options)


def compare_with_oc(kubeconfig: Path, tmp_path: Path, options: list[str]) -> None:
    oc_streams, oc_images = oc_plan(kubeconfig, *options)
    report = tmp_path / "report.json"
    code = main(
        ["prune-images", "--kubeconfig", str(kubeconfig), "--report", str(report), *options]
    )
    assert code == 0
    got = json.loads(report.read_text())
    streams = Counter(f"{r['namespace']}/{r['name']}" for r in got["tag_revisions"])
    assert streams == oc_streams
    assert {r["image"] for r in got["images"]} == oc_images
    assert oc_images or "--prune-over-size-limit" in options  # a comparison of something

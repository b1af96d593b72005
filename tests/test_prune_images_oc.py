"""Differential: ``oc adm prune images`` (dry run) next to ``regprune prune-images`` with the
same options, on the same API test server: the same tag revisions and Images are removed.

Needs ``oc`` (``$REGPRUNE_OC`` or ../shared/openshift-oc/oc; how it is built:
/work/shared/openshift-oc/README.md) and an API test server served over TLS (oc's client sends
a kubeconfig's bearer token only over HTTPS). Skips with the reason when either is missing.
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
from tests.openshift_api import DOCKER_MANIFEST_LIST, OpenShiftAPIServer, fake_digest
from tests.workloads_api import add_workload

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


def oc_plan(api: OpenShiftAPIServer, kubeconfig: Path, *options: str) -> tuple[Counter, set]:
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


@pytest.mark.parametrize(
    "options",
    [
        ["--keep-tag-revisions=3", "--keep-younger-than=60m"],
        ["--keep-tag-revisions=1", "--keep-younger-than=0s", "--all=false"],
    ],
)
def test_regprune_removes_what_oc_removes(
    tls_api: OpenShiftAPIServer, tmp_path: Path, options: list[str]
) -> None:
    _require_oc_and_tls(tls_api)
    build_cluster(tls_api)
    kubeconfig = tls_api.kubeconfig(tmp_path / "kubeconfig")
    oc_streams, oc_images = oc_plan(tls_api, kubeconfig, *options)
    report = tmp_path / "report.json"
    code = main(
        ["prune-images", "--kubeconfig", str(kubeconfig), "--report", str(report), *options]
    )
    assert code == 0
    got = json.loads(report.read_text())
    streams = Counter(f"{r['namespace']}/{r['name']}" for r in got["tag_revisions"])
    assert streams == oc_streams
    assert {r["image"] for r in got["images"]} == oc_images

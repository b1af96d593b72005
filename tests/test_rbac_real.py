"""The RBAC manifests of ``deployments/rbac/`` proven on the real OpenShift API
(``tests/harness/openshift_apiserver.py``): applied with ``oc apply``, their ServiceAccount's token
(``oc create token``) runs every command; with one rule left out, the run is refused before it
changes anything, naming the grant.

The other commands' cases are with their subjects: prune-images (tests/test_prune_images_real.py),
check --recover (tests/test_recovery.py), the nightly GC (tests/test_nightly_gc.py), the
snapshot's 403 (tests/test_metadata_snapshot_real.py) and the registry's cache calls
(tests/test_registry_token.py). tests/test_rbac.py compares the manifests with
regprune/permissions.py without a server.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from regprune.cli.main import EXIT_FAILURE, EXIT_FINDINGS, EXIT_OK, main
from regprune.layout import (
    V2_ROOT,
    blob_data_path,
    layer_link_path,
    link_content,
    manifest_link_path,
)
from regprune.permissions import REGISTRY_DEPLOYMENT, REGISTRY_NAMESPACE
from tests.harness.openshift_apiserver import RealOpenShiftAPI

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

OLD = datetime.now(UTC) - timedelta(days=3)
RESTART = f"{REGISTRY_NAMESPACE}/{REGISTRY_DEPLOYMENT}"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def storage_with_one_kept_and_one_orphan(root: Path) -> dict[str, str]:
    """ns/app: a kept manifest (its config and layer linked; an Image names them) and an
    orphan manifest no Image names; everything old."""
    files: dict[str, bytes] = {}
    digests = {}
    for name in ("kept", "orphan", "config", "layer"):
        data = f"{name} blob".encode()
        digests[name] = digest_of(data)
        files[blob_data_path(digests[name])] = data
    for name in ("kept", "orphan"):
        files[manifest_link_path("ns/app", digests[name])] = link_content(digests[name])
    for name in ("config", "layer"):
        files[layer_link_path("ns/app", digests[name])] = link_content(digests[name])
    for key, content in files.items():
        path = root / V2_ROOT / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    old = OLD.timestamp()
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    return digests


@pytest.fixture
def cluster(openshift_apiserver: RealOpenShiftAPI, tmp_path: Path) -> dict:
    """The storage, its Image and stream, and the registry's Deployment to restart."""
    api = openshift_apiserver
    root = tmp_path / "registry"
    digests = storage_with_one_kept_and_one_orphan(root)
    api.add_image(
        digest=digests["kept"],
        repository="ns/app",
        layers=[(digests["layer"], len(b"layer blob"))],
        config=digests["config"],
    )
    api.add_imagestream("ns", "app", {"latest": [digests["kept"]]}, created=OLD)
    labels = {"app": REGISTRY_DEPLOYMENT}
    api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"namespace": REGISTRY_NAMESPACE, "name": REGISTRY_DEPLOYMENT},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "registry", "image": "registry:2"}]},
                },
            },
        }
    )
    return {"api": api, "root": root, "digests": digests}


def regprune(command: str, cluster: dict, kubeconfig: Path, out: Path, *extra: str) -> int:
    args = [command, "--storage", str(cluster["root"]), "--metadata", "kube"]
    args += ["--kubeconfig", str(kubeconfig), "--shards", "1", "--out", str(out)]
    return main([*args, *extra])


def restarted(api: RealOpenShiftAPI) -> bool:
    deployment = api.get("Deployment", REGISTRY_DEPLOYMENT, REGISTRY_NAMESPACE)
    assert deployment is not None
    annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    return RESTARTED_AT in annotations


def stored(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_the_manifests_token_runs_snapshot_prune_and_check(cluster: dict, tmp_path: Path) -> None:
    """Snapshot, a dry run, check, and ``prune --confirm --restart-registry``: the orphan
    goes, the Deployment's pod template is stamped (what a rollout restart does)."""
    api = cluster["api"]
    kubeconfig = api.rbac_kubeconfig(tmp_path / "regprune.kubeconfig")
    no_grace = ("--keep-younger-than", "0s")

    assert regprune("snapshot", cluster, kubeconfig, tmp_path / "snap") == EXIT_OK
    report = tmp_path / "plan.json"
    code = regprune(
        "prune", cluster, kubeconfig, tmp_path / "dry", *no_grace, "--report", str(report)
    )
    assert code == EXIT_OK
    planned = json.loads(report.read_text())
    assert {r["digest"] for r in planned["blobs"]} == {cluster["digests"]["orphan"]}
    assert regprune("check", cluster, kubeconfig, tmp_path / "check") in (EXIT_OK, EXIT_FINDINGS)

    code = regprune(
        "prune", cluster, kubeconfig, tmp_path / "confirm", *no_grace, "--confirm",
        "--restart-registry", RESTART,
    )  # fmt: skip
    assert code == EXIT_OK
    assert restarted(api)
    left = stored(cluster["root"])
    assert f"{V2_ROOT}/{blob_data_path(cluster['digests']['orphan'])}" not in left
    assert f"{V2_ROOT}/{blob_data_path(cluster['digests']['kept'])}" in left


def test_without_the_restart_rule_the_prune_is_refused_before_deleting(
    cluster: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The manifests minus restart-registry.yaml's ``patch deployments``: the access review
    before the first delete names it; storage and Deployment stay as they were."""
    api = cluster["api"]
    kubeconfig = api.rbac_kubeconfig(
        tmp_path / "regprune.kubeconfig", without=["patch deployments.apps"]
    )
    before = stored(cluster["root"])

    code = regprune(
        "prune", cluster, kubeconfig, tmp_path / "confirm", "--keep-younger-than", "0s",
        "--confirm", "--restart-registry", RESTART,
    )  # fmt: skip

    assert code == EXIT_FAILURE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(
        f"regprune: error: forbidden: --restart-registry {RESTART} needs "
        f"patch deployments.apps {REGISTRY_DEPLOYMENT} in namespace {REGISTRY_NAMESPACE}"
    ), err[0]
    assert "nothing deleted" in err[0]
    assert stored(cluster["root"]) == before
    assert not restarted(api)


def test_a_token_that_may_not_list_images_plans_nothing(
    cluster: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The manifests minus read-images.yaml's ``list imagestreams``: the prune's snapshot
    stops at the 403 naming it; nothing is planned or deleted."""
    api = cluster["api"]
    kubeconfig = api.rbac_kubeconfig(
        tmp_path / "regprune.kubeconfig", without=["list imagestreams.image.openshift.io"]
    )
    before = stored(cluster["root"])
    out = tmp_path / "confirm"
    code = regprune("prune", cluster, kubeconfig, out, "--keep-younger-than", "0s", "--confirm")
    assert code == EXIT_FAILURE
    assert "cannot list imagestreams.image.openshift.io" in capsys.readouterr().err
    assert stored(cluster["root"]) == before
    assert not list(out.glob("plan_*.parquet"))

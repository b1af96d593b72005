"""`prune --confirm` end to end on the real registry (filesystem and S3): nothing the
metadata references is lost, everything planned is gone, a second run plans nothing, the
registry's cache is handled, pushes between snapshot and deletion survive, and a run killed
while deleting resumes to the same end state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL

from regprune.cli.main import EXIT_OK, main
from regprune.demo.synthetic import SyntheticSpec, generate
from tests.conftest import rows, write_dump
from tests.harness.drift import Drift, build_drift, expected_plan, plan_from_report
from tests.harness.registry_bench import Registry, assert_pulls, pull_ok, push

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
METADATA_TAGS = ("ns/app:v2", "ns/multi:latest", "ns/other:latest")
"""The tags the drift's metadata keeps (tests.harness.drift.metadata_dump)."""


def prune(drift: Drift, tmp_path: Path, name: str, *extra: str) -> dict[str, Any]:
    report = tmp_path / f"{name}.json"
    args = ["prune", "--storage", drift.registry.storage_url, "--metadata", str(drift.dump)]
    args += ["--out", str(tmp_path / name), "--report", str(report), *extra]
    assert main(args) == EXIT_OK
    return json.loads(report.read_text())


def assert_executed_plan(drift: Drift, tmp_path: Path, *extra: str) -> dict[str, Any]:
    planned = prune(drift, tmp_path, "plan", *extra)
    done = prune(drift, tmp_path, "run", "--confirm", *extra)
    assert plan_from_report(done) == plan_from_report(planned) == expected_plan(drift)
    storage = set(drift.registry.list_storage())
    for digest in plan_from_report(planned)["blobs"]:
        hex_ = digest.removeprefix("sha256:")
        assert f"blobs/sha256/{hex_[:2]}/{hex_}/data" not in storage
    for repository, digest, _ in plan_from_report(planned)["manifest_links"]:
        hex_ = digest.removeprefix("sha256:")
        assert f"repositories/{repository}/_manifests/revisions/sha256/{hex_}/link" not in storage
    for repository, _ in plan_from_report(planned)["repositories"]:
        assert not any(key.startswith(f"repositories/{repository}/") for key in storage)
    executed = done["executed"]
    assert all(entry["failed"] == 0 and entry["skipped"] == 0 for entry in executed.values())
    assert done["summary"]["bytes_freed"] == planned["summary"]["bytes_freed"]
    again = prune(drift, tmp_path, "again", *extra)
    assert all(not again[key] for key in plan_from_report(again))
    return done


@pytest.fixture(scope="module")
def drift_fs(registry_fs: Registry, oci_layouts: Any, tmp_path_factory: pytest.TempPathFactory):
    return build_drift(registry_fs, oci_layouts, tmp_path_factory.mktemp("drift-fs"))


def test_confirm_deletes_the_plan_and_every_referenced_image_still_pulls(
    drift_fs: Drift, oci_layouts: Any, tmp_path: Path
) -> None:
    """With --registry-url the registry's per-repository cache forgets the deleted layers:
    pushing a deleted image again uploads them. (Its manifest needs a restart: see the
    cache test below.)"""
    registry = drift_fs.registry
    pulled_before = {ref for ref in METADATA_TAGS if pull_ok(registry, ref)}
    assert pulled_before == {"ns/multi:latest"}  # app-v2 lost a layer in the drift
    done = assert_executed_plan(drift_fs, tmp_path, "--registry-url", registry.base_url)
    for ref in pulled_before:
        assert_pulls(registry, ref)
    assert done["settings"]["registry_cache"]
    v1 = drift_fs.images["app-v1"]
    assert not pull_ok(registry, f"ns/app@{v1.digest}")
    registry.restart()  # distribution's global cache still holds v1's manifest blob
    push(registry, *oci_layouts["app-v1"], "ns/app:v1-again")
    assert_pulls(registry, "ns/app:v1-again")
    push(registry, *oci_layouts["tool"], "gone/tool:again")
    assert_pulls(registry, "gone/tool:again")


def test_the_registry_cache_problem_and_its_fix(oci_layouts: Any, tmp_path: Path) -> None:
    """The problem, on the real registry with its inmemory cache: storage deleted behind its
    back, the same image pushed again "succeeds" but no longer pulls. A restart (what
    --restart-registry does) fixes it. --registry-url makes the registry forget the deleted
    layers and config (they are uploaded again), but distribution's global cache keeps the
    manifest blob until a restart: the summary says so."""
    dump = write_dump(tmp_path / "empty.json", [])  # an empty cluster: everything goes
    with Registry(tmp_path / "registry") as registry:

        def prune_everything(name: str, *extra: str) -> None:
            args = ["prune", "--storage", registry.storage_url, "--metadata", str(dump)]
            args += ["--keep-younger-than", "0s", "--out", str(tmp_path / name), "--confirm"]
            args += ["--force"]  # an empty cluster on purpose: plan_sanity would refuse
            assert main([*args, *extra]) == EXIT_OK
            assert registry.list_storage() == []

        push(registry, *oci_layouts["tool"], "cache/tool:1")
        prune_everything("plain")
        with pytest.raises(RuntimeError, match="manifest unknown"):  # the push "succeeds" ...
            push(registry, *oci_layouts["tool"], "cache/tool:1")
        assert not pull_ok(registry, "cache/tool:1")  # ... but nothing was uploaded again
        assert registry.list_storage() != []  # only links: the registry thinks it has it all
        assert not any(key.startswith("blobs/") for key in registry.list_storage())
        registry.restart()
        push(registry, *oci_layouts["tool"], "cache/tool:1")
        assert_pulls(registry, "cache/tool:1")

        tool = push(registry, *oci_layouts["tool"], "cache/tool:2")
        prune_everything("through-the-api", "--registry-url", registry.base_url)
        with pytest.raises(RuntimeError, match="manifest unknown"):
            push(registry, *oci_layouts["tool"], "cache/tool:2")
        for blob in (tool.config, *tool.layers):
            hex_ = blob.digest.removeprefix("sha256:")
            assert registry.exists(f"blobs/sha256/{hex_[:2]}/{hex_}/data")
        registry.restart()
        push(registry, *oci_layouts["tool"], "cache/tool:2")
        assert_pulls(registry, "cache/tool:2")


def test_a_push_between_plan_and_deletion_survives(
    registry_s3: Registry, oci_layouts: Any, tmp_path: Path, s3_env: dict[str, str]
) -> None:
    """On S3 (all young: 0s grace). A push after the plan reuses the planned orphan layers;
    the re-read before deleting keeps them and the new image pulls; the rest goes."""
    (tmp_path / "drift").mkdir()
    drift = build_drift(registry_s3, oci_layouts, tmp_path / "drift")
    planned = prune(drift, tmp_path, "plan", "--keep-younger-than", "0s", "--upload-max-age", "0s")
    assert plan_from_report(planned) == expected_plan(drift)
    v1 = drift.images["app-v1"]
    push(registry_s3, *oci_layouts["app-v1"], "ns/fresh:1")
    report = tmp_path / "resume.json"
    args = [
        "prune",
        "--resume",
        str(tmp_path / "plan"),
        "--keep-younger-than",
        "0s",
        "--upload-max-age",
        "0s",
        "--report",
        str(report),
    ]
    assert main(args) == EXIT_OK
    executed = json.loads(report.read_text())["executed"]
    assert executed["blobs"]["skipped"] == 3  # v1's manifest, config and own layer
    actions = rows(tmp_path / "plan" / "actions.parquet")
    skipped = {r["digest"] for r in actions if r["status"] == "skipped"}
    assert {v1.digest, v1.config.digest, v1.layers[2].digest} <= skipped
    assert_pulls(registry_s3, "ns/fresh:1")
    assert_pulls(registry_s3, "ns/multi:latest")
    tool = drift.images["tool"]
    assert not registry_s3.exists(f"blobs/sha256/{tool.digest[7:9]}/{tool.digest[7:]}/data")


def test_a_run_killed_while_deleting_resumes_to_the_same_end_state(tmp_path: Path) -> None:
    """Two identical synthetic registries: one pruned in one go, one killed mid-deletion
    (SIGKILL) and resumed. Their remaining files must be the same."""
    now = datetime.now(UTC)
    spec = SyntheticSpec.for_blobs(3000, seed=7)
    trees = {}
    for name in ("straight", "killed"):
        folder = tmp_path / name
        generate(folder / "registry", spec, folder / "metadata.json", now=now)
        trees[name] = folder
    base = ["prune", "--keep-younger-than", "24h"]

    def args(name: str, *extra: str) -> list[str]:
        folder = trees[name]
        return [
            *base,
            "--storage",
            str(folder / "registry"),
            "--metadata",
            str(folder / "metadata.json"),
            *extra,
        ]

    assert main(args("straight", "--out", str(tmp_path / "straight-run"), "--confirm")) == 0
    run = tmp_path / "killed-run"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "regprune.cli.main",
            *args("killed", "--out", str(run), "--confirm"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        parts = list((run / "actions").glob("*-p2-*.parquet")) if (run / "actions").exists() else []
        if len(parts) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run / "actions.parquet").exists()
    assert main([*base, "--resume", str(run)]) == EXIT_OK

    def remaining(name: str) -> set[str]:
        """The registry's files and the quarantine's (its id left out: each run has its own)."""
        root = trees[name] / "registry"
        files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        held = {f.split("/", 3)[3] for f in files if f.startswith("_regprune/quarantine/")}
        return {f for f in files if not f.startswith("_regprune/")} | {f"held:{f}" for f in held}

    assert remaining("killed") == remaining("straight")
    assert {f for f in remaining("straight") if not f.startswith("held:")} != set()
    assert {f for f in remaining("straight") if f.startswith("held:")} != set()


def test_restart_registry_through_the_kubernetes_api(
    openshift_api: Any, openshift_kubeconfig: Path, tmp_path: Path
) -> None:
    """--restart-registry patches the Deployment's pod template like `kubectl rollout
    restart`, with no more permission than that patch."""
    generate(tmp_path / "registry", SyntheticSpec.demo(), tmp_path / "metadata.json")
    openshift_api.add_deployment("openshift-image-registry", "image-registry")
    openshift_api.allow({("patch", "deployments")})
    args = [
        "prune",
        "--storage",
        str(tmp_path / "registry"),
        "--metadata",
        str(tmp_path / "metadata.json"),
        "--kubeconfig",
        str(openshift_kubeconfig),
        "--out",
        str(tmp_path / "run"),
        "--confirm",
        "--report",
        str(tmp_path / "r.json"),
        "--restart-registry",
        "openshift-image-registry/image-registry",
    ]
    assert main(args) == EXIT_OK
    template = openshift_api.deployment("openshift-image-registry", "image-registry")
    annotations = template["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["registry_cache"] == [
        "registry openshift-image-registry/image-registry restarted"
    ]

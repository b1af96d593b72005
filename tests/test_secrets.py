"""Credentials never reach an output: a full ``prune --confirm``, ``check``, ``purge`` of the
prune's quarantine, ``prune-images --confirm`` (its journal and its hard prune) and ``undo``
of it with secrets in play, and every output of them grepped for each secret.

Secrets: AWS keys in the environment (an S3 registry on moto, which accepts any keys), a
bearer token in ``--registry-token-file`` (sent to the real registry's API), and a kubeconfig
whose user has a token (the OpenShift API test server checks it). Outputs: stdout and stderr
(Prefect at DEBUG level), every file the runs write (report JSON, snapshot.json, report.html,
every Parquet file read back row by row, the warehouse, the audit trails and quarantine
records, prune-images' journals decompressed), and what Prefect keeps: flow and task runs with
their parameters, logs, artifacts, and the server's database file itself.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_DATABASE_CONNECTION_URL

from regprune.cli.main import EXIT_FINDINGS, EXIT_OK
from tests.harness.drift import build_drift
from tests.harness.openshift_api import OpenShiftAPIServer
from tests.harness.prefect_runs import flow_runs_started_since
from tests.harness.registry_bench import MotoServer, OciLayouts, Registry

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def leaks(text: str | bytes, secret_values: dict[str, str]) -> list[str]:
    """The names of the secrets found in ``text`` (as is, or base64-encoded)."""
    data = text.encode() if isinstance(text, str) else text
    found = []
    for name, value in secret_values.items():
        forms = [value.encode(), base64.b64encode(value.encode())]
        if any(form in data for form in forms):
            found.append(name)
    return found


def parquet_text(path: Path) -> str:
    """Every value of a Parquet file (and its schema metadata), as text."""
    table = pq.read_table(path)
    metadata = {
        k.decode(): v.decode(errors="replace") for k, v in (table.schema.metadata or {}).items()
    }
    return json.dumps([table.to_pylist(), metadata], default=str)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regprune.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def prefect_records(flow_runs: list[Any]) -> list[str]:
    """The flow runs (with their parameters), their task runs, logs and artifacts, as JSON."""
    ids = [run.id for run in flow_runs]
    out = [run.model_dump_json() for run in flow_runs]
    with get_client(sync_client=True) as client:
        of_runs = FlowRunFilter(id=FlowRunFilterId(any_=ids))
        task_runs: list[Any] = []
        while batch := client.read_task_runs(
            flow_run_filter=of_runs, limit=200, offset=len(task_runs)
        ):
            task_runs += batch
        out += [t.model_dump_json() for t in task_runs]
        logs, read = LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), 0
        while batch := client.read_logs(log_filter=logs, limit=200, offset=read):
            out += [log.model_dump_json() for log in batch]
            read += len(batch)
        assert read > 0, "no logs to search: the test would prove nothing"
        artifacts = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        read = 0
        while batch := client.read_artifacts(artifact_filter=artifacts, limit=200, offset=read):
            out += [a.model_dump_json() for a in batch]
            read += len(batch)
    return out


@pytest.fixture
def secret_values() -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "registry token": "reg-" + secrets.token_urlsafe(24),
        "kubeconfig token": "sha256~" + secrets.token_urlsafe(32),
    }


def test_no_secret_reaches_any_output(
    registry_s3: Registry,
    moto: MotoServer,
    oci_layouts: OciLayouts,
    tmp_path: Path,
    secret_values: dict[str, str],
) -> None:
    drift = build_drift(registry_s3, oci_layouts, tmp_path)
    assert drift.dump is not None
    api = OpenShiftAPIServer(token=secret_values["kubeconfig token"]).start()
    try:
        for item in json.loads(drift.dump.read_text())["items"]:
            if item["kind"] == "Image":
                api.add_image(item)
            else:
                tags = {
                    t["tag"]: [i["image"] for i in t["items"]]
                    for t in item["status"].get("tags", [])
                }
                api.add_imagestream(item["metadata"]["namespace"], item["metadata"]["name"], tags)
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        token_file = tmp_path / "registry-token"
        token_file.write_text(secret_values["registry token"] + "\n")
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": secret_values["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": secret_values["AWS_SECRET_ACCESS_KEY"],
            "AWS_ENDPOINT_URL": moto.endpoint_url,
            "AWS_REGION": "us-east-1",
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_LOGGING_LEVEL": "DEBUG",
        }
        env.pop("AWS_PROFILE", None)
        common = ["--storage", registry_s3.storage_url, "--metadata", "kube"]
        common += ["--kubeconfig", str(kubeconfig), "--warehouse", str(tmp_path / "warehouse")]
        since = datetime.now(UTC)
        prune = cli(
            "prune",
            *common,
            "--out",
            str(tmp_path / "prune"),
            "--report",
            str(tmp_path / "prune.json"),
            "--keep-younger-than",
            "0s",
            "--confirm",
            "--registry-url",
            registry_s3.base_url,
            "--registry-token-file",
            str(token_file),
            env=env,
        )
        assert prune.returncode == EXIT_OK, prune.stderr[-3000:]
        check = cli(
            "check",
            *common,
            "--out",
            str(tmp_path / "check"),
            "--report",
            str(tmp_path / "check.json"),
            env=env,
        )
        assert check.returncode == EXIT_FINDINGS, check.stderr[-3000:]
        # the quarantine of the prune, purged (its storage and metadata as the run recorded)
        purge = cli(
            "purge", str(tmp_path / "prune"), "--out", str(tmp_path / "purge"), "--confirm",
            env=env,
        )  # fmt: skip
        assert purge.returncode == EXIT_OK, purge.stderr[-3000:]
        images = cli(
            "prune-images", "--kubeconfig", str(kubeconfig), "--keep-tag-revisions=1",
            "--keep-younger-than=0s", "--hard-prune-keep-younger-than=0s",
            "--storage", registry_s3.storage_url, "--registry-url", registry_s3.base_url,
            "--registry-token-file", str(token_file), "--out", str(tmp_path / "images"),
            "--report", str(tmp_path / "images.json"), "--confirm",
            env=env,
        )  # fmt: skip
        assert images.returncode == EXIT_OK, images.stderr[-3000:]
        undo = cli("undo", str(tmp_path / "images"), "--kubeconfig", str(kubeconfig), env=env)
        assert undo.returncode == EXIT_OK, undo.stderr[-3000:]
        assert api.count("GET", "/images") > 0  # the kube token was used ...
    finally:
        api.stop()
    report = json.loads((tmp_path / "prune.json").read_text())
    assert report["executed"]["blobs"]["done"] > 0  # ... the AWS keys and the registry token too

    outputs: dict[str, str | bytes] = {
        "prune stdout": prune.stdout,
        "prune stderr": prune.stderr,
        "check stdout": check.stdout,
        "check stderr": check.stderr,
        **{
            f"{name} {stream}": getattr(run, stream)
            for name, run in (("purge", purge), ("prune-images", images), ("undo", undo))
            for stream in ("stdout", "stderr")
        },
    }
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    written = [p for p in written if p not in (kubeconfig, token_file)]
    for path in written:
        outputs[str(path)] = path.read_bytes()
        if path.suffix == ".parquet":
            outputs[f"{path} (values)"] = parquet_text(path)
        if path.suffix == ".gz":
            outputs[f"{path} (text)"] = gzip.decompress(path.read_bytes())
    names = {p.name for p in written}
    assert {"actions.parquet", "snapshot.json", "report.html", "quarantine.json"} <= names
    assert "quarantine_log.parquet" in names  # the purge's audit
    assert any(p.parent.name == "images_journal" for p in written)  # prune-images' journal
    assert any(p.parent.name == "images_undo" for p in written)  # the undo's

    runs = flow_runs_started_since(since)
    assert len(runs) >= 4  # prune, check and their snapshots
    for n, record in enumerate(prefect_records(runs)):
        outputs[f"prefect record {n}"] = record
    database = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    for path in database.parent.glob(database.name + "*"):  # the database, its WAL
        outputs[str(path)] = path.read_bytes()

    found = {name: leaks(text, secret_values) for name, text in outputs.items()}
    assert {name: names for name, names in found.items() if names} == {}


def test_no_cloud_storage_credential_reaches_any_output(
    registry_fs: Registry,
    oci_layouts: OciLayouts,
    azurite: Any,
    swift_aio: Any,
    tmp_path: Path,
) -> None:
    """The Azure account key (given as the operator gives it, ``REGISTRY_STORAGE_AZURE_
    ACCOUNTKEY`` over a registry config without it) and the Swift password (``OS_PASSWORD``
    of an RC file) are used by a ``prune --confirm`` and appear in no output."""
    from tests.harness.storage_emulators import AZURITE_ACCOUNT, AZURITE_KEY, copy_registry_tree

    drift = build_drift(registry_fs, oci_layouts, tmp_path)
    assert drift.dump is not None and registry_fs.storage_root is not None
    secret_values = {"Azure account key": AZURITE_KEY, "Swift password": swift_aio.env["ST_KEY"]}
    container = azurite.create_bucket(f"secrets-{os.urandom(4).hex()}")
    copy_registry_tree(registry_fs.storage_root, azurite, container)
    swift_container = swift_aio.create_bucket(f"secrets-{os.urandom(4).hex()}")
    copy_registry_tree(registry_fs.storage_root, swift_aio, swift_container)
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\nstorage:\n  azure:\n"
        f"    accountname: {AZURITE_ACCOUNT}\n    container: {container}\n"
        f"    serviceurl: {azurite.endpoint}\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OS_", "ST_"))}
    base |= {
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_LOGGING_LEVEL": "DEBUG",
    }
    since = datetime.now(UTC)
    outputs: dict[str, str | bytes] = {}
    for name, storage, env in (
        (
            "azure",
            ["--registry-config", str(config)],
            {**base, "REGISTRY_STORAGE_AZURE_ACCOUNTKEY": AZURITE_KEY},
        ),
        (
            "swift",
            ["--storage", f"swift://{swift_container}"],
            {**base, **{k: v for k, v in swift_aio.env.items() if k.startswith("OS_")}},
        ),
    ):
        run = cli(
            "prune",
            *storage,
            "--metadata",
            str(drift.dump),
            "--out",
            str(tmp_path / name),
            "--report",
            str(tmp_path / f"{name}.json"),
            "--keep-younger-than",
            "0s",
            "--confirm",
            env=env,
        )
        assert run.returncode == EXIT_OK, run.stderr[-3000:]
        report = json.loads((tmp_path / f"{name}.json").read_text())
        assert report["executed"]["blobs"]["done"] > 0  # the credentials were used
        outputs[f"{name} stdout"] = run.stdout
        outputs[f"{name} stderr"] = run.stderr
    for path in [p for p in tmp_path.rglob("*") if p.is_file() and p != config]:
        outputs[str(path)] = path.read_bytes()
        if path.suffix == ".parquet":
            outputs[f"{path} (values)"] = parquet_text(path)
    runs = flow_runs_started_since(since)
    assert len(runs) >= 4  # two prunes and their snapshots
    for n, record in enumerate(prefect_records(runs)):
        outputs[f"prefect record {n}"] = record
    found = {name: leaks(text, secret_values) for name, text in outputs.items()}
    assert {name: names for name, names in found.items() if names} == {}


def test_secrets_in_storage_options_and_urls_are_refused_before_they_reach_anything(
    tmp_path: Path,
) -> None:
    """A credential at any depth of a ``--storage-option`` (a key that names one, a URL with
    a password in a JSON value) and a user or password in ``--registry-url`` or ``--storage``
    are refused before any flow run exists. A run given a harmless nested option beside them
    shows where a secret would have gone: its value is in the flow run's parameters, and the
    refused ones are in no output at all."""
    from regprune.demo.synthetic import SyntheticSpec, generate

    generate(tmp_path / "registry", SyntheticSpec.demo(0), tmp_path / "metadata.json")
    secret_values = {
        name: f"{name}-{secrets.token_urlsafe(16)}"
        for name in ("option key", "option URL", "registry URL", "storage URL")
    }
    marker = "harmless-" + secrets.token_hex(8)
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_LOGGING_LEVEL": "DEBUG",
    }
    dump = ["--metadata", str(tmp_path / "metadata.json")]
    storage = ["--storage", str(tmp_path / "registry"), *dump]
    refused = {
        "option key": [
            *storage,
            "--storage-option",
            "client_kwargs="
            + json.dumps({"config": {"aws_secret_access_key": secret_values["option key"]}}),
        ],
        "option URL": [
            *storage,
            "--storage-option",
            "client_kwargs="
            + json.dumps({"endpoint_url": f"https://minio:{secret_values['option URL']}@minio"}),
        ],
        "registry URL": [
            *storage,
            "--confirm",
            "--registry-url",
            f"https://admin:{secret_values['registry URL']}@registry:5000",
        ],
        "storage URL": ["--storage", f"s3://AKIA:{secret_values['storage URL']}@b", *dump],
    }
    since = datetime.now(UTC)
    outputs: dict[str, str | bytes] = {}
    for name, args in refused.items():
        run = cli("prune", *args, "--out", str(tmp_path / name.replace(" ", "-")), env=env)
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr
        outputs[f"{name} stdout"], outputs[f"{name} stderr"] = run.stdout, run.stderr
    assert flow_runs_started_since(since) == []  # refused before Prefect heard of them

    accepted = cli(
        "snapshot",
        *storage,
        "--storage-option",
        f'client_kwargs={{"region_name": "{marker}"}}',
        "--out",
        str(tmp_path / "accepted"),
        env=env,
    )
    assert accepted.returncode == 0, accepted.stderr
    outputs["accepted stdout"], outputs["accepted stderr"] = accepted.stdout, accepted.stderr
    runs = flow_runs_started_since(since)
    records = prefect_records(runs)
    assert any(marker in record for record in records)  # options reach the parameters...
    for n, record in enumerate(records):
        outputs[f"prefect record {n}"] = record
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        outputs[str(path)] = path.read_bytes()
    database = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    for path in database.parent.glob(database.name + "*"):
        outputs[str(path)] = path.read_bytes()
    found = {name: leaks(text, secret_values) for name, text in outputs.items()}
    assert {name: names for name, names in found.items() if names} == {}  # ...secrets don't

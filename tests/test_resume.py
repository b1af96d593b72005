"""``prune --resume RUN`` is the same job as RUN's or nothing (regprune/resume.py).

The decision at the library: what identifies a storage and a metadata source (locations and
endpoints, not credentials), a folder that is not a planned run, a plan made from another
snapshot. The contract through the command: issue 20's case 3 (``--resume RUN_A --storage B
--metadata B.json`` ran A's plan on B) and issue 21's ``--resume nope`` (it created ``nope/``)
are refused in one line, exit 2, with nothing deleted or created; the run's own storage still
resumes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from regprune.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from regprune.demo.synthetic import SyntheticSpec, generate
from regprune.metadata import MetadataSource
from regprune.quarantine import RunQuarantine, other_storage, quarantine_of_run
from regprune.resume import (
    ResumeError,
    check_resumable,
    check_same_job,
    metadata_identity,
    record_plan,
    storage_identity,
)
from regprune.storage import StorageSpec

NOW = datetime(2026, 1, 1, tzinfo=UTC)
KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- {name: a, cluster: {server: "https://a.example:6443/"}}
- {name: b, cluster: {server: "https://b.example:6443"}}
contexts:
- {name: ca, context: {cluster: a, user: u}}
- {name: cb, context: {cluster: b, user: u}}
current-context: ca
users:
- {name: u, user: {token: secret-token}}
"""


# --- the decision ------------------------------------------------------------------------


def test_a_folder_is_the_same_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "registry").mkdir()
    absolute = storage_identity(StorageSpec(str(tmp_path / "registry")))
    monkeypatch.chdir(tmp_path)
    assert storage_identity(StorageSpec("registry")) == absolute
    assert storage_identity(StorageSpec(f"file://{tmp_path}/registry/")) == absolute
    monkeypatch.chdir(tmp_path.parent)
    assert storage_identity(StorageSpec("registry")) != absolute


def test_an_object_store_is_its_bucket_root_and_endpoint_not_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio-a:9000/")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-a")
    a = storage_identity(StorageSpec("s3://bucket/registry/"))
    assert a == {"storage": "s3", "location": "bucket/registry", "endpoint": "http://minio-a:9000"}
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-b")
    assert storage_identity(StorageSpec("s3://bucket/registry")) == a
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio-b:9000")
    assert storage_identity(StorageSpec("s3://bucket/registry")) != a
    options = {"client_kwargs": {"endpoint_url": "http://minio-a:9000"}}
    assert storage_identity(StorageSpec("s3://bucket/registry", options)) == a
    assert storage_identity(StorageSpec("s3://bucket/other")) != a
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://key:secret-c@minio-a:9000")
    assert storage_identity(StorageSpec("s3://bucket/registry")) == a


def test_an_azure_connection_string_names_its_endpoint_not_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AZURE_STORAGE_BLOB_ENDPOINT", "AZURE_STORAGE_ACCOUNT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        "DefaultEndpointsProtocol=http;AccountName=dev;AccountKey=c2VjcmV0;"
        "BlobEndpoint=http://127.0.0.1:10000/dev;",
    )
    identity = storage_identity(StorageSpec("az://container/registry"))
    assert identity["endpoint"] == "http://127.0.0.1:10000/dev"
    assert "c2VjcmV0" not in json.dumps(identity)


def test_metadata_is_the_dump_path_or_the_context_s_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    a = metadata_identity(MetadataSource("kube", kubeconfig=str(kubeconfig)))
    assert a == {"metadata": "kube", "location": "https://a.example:6443"}
    assert "secret-token" not in json.dumps(a)
    b = metadata_identity(MetadataSource("kube", kubeconfig=str(kubeconfig), context="cb"))
    assert b["location"] == "https://b.example:6443"
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert metadata_identity(MetadataSource("kube")) == a
    monkeypatch.chdir(tmp_path)
    dump = metadata_identity(MetadataSource("dump.json"))
    assert dump == {"metadata": "dump", "location": str(tmp_path / "dump.json")}


def planned_folder(folder: Path, storage: StorageSpec, metadata: MetadataSource) -> Path:
    """A run folder as a snapshot and a plan leave it (what resuming reads of it)."""
    folder.mkdir(parents=True)
    summary = {
        "storage": storage.display,
        "metadata": metadata.display,
        "metadata_source": {"source": metadata.source},
        "storage_identity": storage_identity(storage),
        "metadata_identity": metadata_identity(metadata),
        "metadata_started_at": NOW.isoformat(),
    }
    (folder / "snapshot.json").write_text(json.dumps(summary))
    record_plan(folder, {"keep_younger_than": "24h"})
    return folder


def test_only_a_planned_run_folder_resumes(tmp_path: Path) -> None:
    with pytest.raises(ResumeError, match="no such run folder"):
        check_resumable(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResumeError, match=r"not a planned prune run folder \(snapshot.json"):
        check_resumable(tmp_path / "empty")
    run = planned_folder(tmp_path / "run", StorageSpec("/a"), MetadataSource("/a.json"))
    check_resumable(run)
    (run / "plan.json").unlink()
    with pytest.raises(ResumeError, match=r"\(plan.json missing\)"):
        check_resumable(run)


def test_a_plan_made_from_another_snapshot_does_not_resume(tmp_path: Path) -> None:
    run = planned_folder(tmp_path / "run", StorageSpec("/a"), MetadataSource("/a.json"))
    summary = json.loads((run / "snapshot.json").read_text())
    summary["metadata_started_at"] = datetime(2026, 2, 1, tzinfo=UTC).isoformat()
    (run / "snapshot.json").write_text(json.dumps(summary))  # snapshot taken again
    with pytest.raises(ResumeError, match="made from another snapshot"):
        check_resumable(run)


def test_another_storage_or_metadata_is_another_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3-a:9000")
    a, b = StorageSpec("s3://bucket-a/registry"), StorageSpec("s3://bucket-b/registry")
    dump_a, dump_b = (
        MetadataSource(str(tmp_path / "a.json")),
        MetadataSource(str(tmp_path / "b.json")),
    )
    run = planned_folder(tmp_path / "run", a, dump_a)
    check_same_job(run)  # its own storage and dump, as they resolve here
    check_same_job(run, a, dump_a)
    with pytest.raises(ResumeError, match="another job: its storage is s3 bucket-a/registry"):
        check_same_job(run, b, dump_b)
    with pytest.raises(ResumeError, match=r"another job: its metadata is dump .*a\.json"):
        check_same_job(run, None, dump_b)
    with pytest.raises(ResumeError, match="its metadata is dump"):
        check_same_job(run, a, MetadataSource("kube"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3-b:9000")  # the same names elsewhere
    with pytest.raises(
        ResumeError, match="http://s3-a:9000, this run's s3 bucket-a/registry http://s3-b"
    ):
        check_same_job(run)


def test_undo_and_purge_of_a_run_are_that_run_s_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quarantine.json records where its storage is, as snapshot.json does: the same bucket
    name reached at another endpoint is another storage (its display alone is the same)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3-a:9000")
    spec = StorageSpec("s3://bucket/registry")
    quarantine_of_run(str(tmp_path), spec, dry_run=False)
    recorded = RunQuarantine.read(tmp_path)
    assert recorded is not None
    assert recorded.storage_identity == storage_identity(spec)
    assert other_storage(StorageSpec("s3://bucket/registry/"), recorded) is None
    assert other_storage(StorageSpec("s3://other/registry"), recorded) == (
        "in s3://bucket/registry (endpoint http://s3-a:9000), not in s3://other/registry "
        "(endpoint http://s3-a:9000)"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3-b:9000")
    assert "not in s3://bucket/registry (endpoint http://s3-b:9000)" in str(
        other_storage(spec, recorded)
    )
    older = RunQuarantine(recorded.id, recorded.storage, recorded.started_at)  # no identity
    assert other_storage(spec, older) is None  # as displayed: all an older run recorded
    assert other_storage(StorageSpec("s3://other/registry"), older) is not None


# --- the contract --------------------------------------------------------------------------


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_resume_of_a_folder_that_does_not_exist_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["prune", "--resume", "nope"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("regprune: error: --resume nope: no such run folder")
    )
    assert "Traceback" not in err and err.count("error:") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_resume_of_run_a_on_storage_b_deletes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, seed in (("a", 1), ("b", 2)):
        spec = SyntheticSpec(namespaces=2, streams_per_namespace=2, tags_per_stream=2, seed=seed)
        generate(tmp_path / name, spec, tmp_path / f"{name}.json", now=NOW)
    run_a = tmp_path / "run-a"
    plan = ["prune", "--storage", str(tmp_path / "a"), "--metadata", str(tmp_path / "a.json")]
    assert main([*plan, "--out", str(run_a)]) == EXIT_OK  # a dry run: its plan
    capsys.readouterr()
    before = {name: files(tmp_path / name) for name in ("a", "b", "run-a")}

    for other in (
        ["--storage", str(tmp_path / "b"), "--metadata", str(tmp_path / "b.json")],  # issue 20
        ["--storage", str(tmp_path / "b")],
        ["--metadata", str(tmp_path / "b.json")],
    ):
        assert main(["prune", "--resume", str(run_a), *other]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert f"regprune: error: --resume {run_a} is another job" in err, err
        assert "Traceback" not in err
        assert {name: files(tmp_path / name) for name in ("a", "b", "run-a")} == before

    # its own storage (named again, the metadata not: the run's dump) resumes and deletes
    assert main(["prune", "--resume", str(run_a), "--storage", str(tmp_path / "a")]) == EXIT_OK
    assert files(tmp_path / "a") != before["a"]
    assert files(tmp_path / "b") == before["b"]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_undo_or_purge_at_another_endpoint_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``undo RUN`` and ``purge RUN`` of a run that quarantined in s3://bucket through one
    endpoint refuse the same bucket name through another: one line, exit 1, no request made
    (the endpoints do not exist)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3-a.invalid:9000")
    spec = StorageSpec("s3://bucket/registry")
    run = planned_folder(tmp_path / "run", spec, MetadataSource(str(tmp_path / "a.json")))
    quarantine_of_run(str(run), spec, dry_run=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3-b.invalid:9000")
    for command in (
        ["undo", str(run)],
        ["purge", str(run), "--out", str(tmp_path / "purge"), "--confirm"],
    ):
        assert main(command) == EXIT_FAILURE
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert "(endpoint http://s3-a.invalid:9000), not in s3://bucket/registry (endpoint " in err

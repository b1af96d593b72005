"""One storage client per process and configuration (regprune/storage/clients.py): the same
spec in the same environment shares a client, anything that changes its endpoint, credentials
or timeouts, or the process, gets another; a few are kept; a secret is never kept. No network:
the clients are made, never used."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from regprune.storage import StorageSpec, clients, open_storage
from regprune.storage.s3 import S3Storage

AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "a-secret-never-kept",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in AWS.items():
        monkeypatch.setenv(name, value)
    return AWS


def fs(url: str = "s3://bucket/root", **options: Any) -> Any:
    storage = open_storage(StorageSpec(url, options))
    assert isinstance(storage, S3Storage)
    return storage.fs


def test_the_same_spec_and_environment_share_one_client(aws: dict[str, str]) -> None:
    first = fs()
    assert fs() is first
    assert fs("s3://bucket/other-root") is first  # the bucket and root are not the client's
    assert open_storage(StorageSpec("s3://bucket/root")).area("quarantine").fs is first


def test_another_endpoint_credential_or_retry_setting_gets_another_client(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = fs()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")  # another server
    second = fs()
    assert second is not first
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # any AWS_* variable botocore reads
    assert fs() is not second
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another")
    third = fs()
    assert third is not first and third is not second
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.delenv("AWS_MAX_ATTEMPTS")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS["AWS_SECRET_ACCESS_KEY"])
    assert fs() is first  # back to the first configuration: its client


def test_other_options_or_timeouts_get_another_client(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = fs()
    assert fs(client_kwargs={"region_name": "eu-west-1"}) is not first
    assert fs(config_kwargs={"read_timeout": 5}) is not first
    monkeypatch.setenv("REGPRUNE_CONNECT_TIMEOUT", "3s")
    assert fs() is not first
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert fs() is not first


def test_another_process_gets_its_own_client(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked child (a Dask worker, a process pool) never uses its parent's client: it is
    bound to the parent's event loop and connections. Simulated: another process id."""
    first = fs()
    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)
    child = fs()
    assert child is not first
    assert fs() is child


def test_a_fork_starts_with_no_clients(aws: dict[str, str]) -> None:
    fs()
    clients._after_fork()
    assert not clients._clients and not clients._making


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_makes_its_own_client() -> None:
    """A real fork: the child's first ask makes a client, whatever its parent holds."""
    parent = clients.shared("t", {}, {}, object)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer whether it got its parent's object, and leave at once
        os.write(write, b"parent's" if clients.shared("t", {}, {}, object) is parent else b"own")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"own"
    assert clients.shared("t", {}, {}, object) is parent


def test_threads_asking_at_once_share_one_client_made_once() -> None:
    made: list[object] = []

    def make() -> object:
        time.sleep(0.05)  # long enough for every thread to ask while it is being made
        made.append(object())
        return made[-1]

    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(clients.shared("t", {}, {}, make)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and got == made * 8


def test_a_failing_make_is_not_kept() -> None:
    def failing() -> object:
        raise ValueError("no credentials")

    with pytest.raises(ValueError):
        clients.shared("t", {}, {}, failing)
    assert clients.shared("t", {}, {}, object) is clients.shared("t", {}, {}, object)
    assert not clients._making


def test_a_few_configurations_are_kept_the_least_recently_used_let_go() -> None:
    first = clients.shared("t", {"n": 0}, {}, object)
    made = [clients.shared("t", {"n": n}, {}, object) for n in range(1, clients.KEPT)]
    assert clients.shared("t", {"n": 0}, {}, object) is first  # used again: the newest
    clients.shared("t", {"n": clients.KEPT}, {}, object)  # one too many: n=1 goes
    assert len(clients._clients) == clients.KEPT
    assert clients.shared("t", {"n": 0}, {}, object) is first
    assert clients.shared("t", {"n": 1}, {}, object) is not made[0]


def test_secrets_are_never_kept(aws: dict[str, str]) -> None:
    """Only a digest of the configuration is kept: no secret in what the cache holds."""
    fs()
    held = repr(list(clients._clients)) + repr(list(clients._making))
    assert AWS["AWS_SECRET_ACCESS_KEY"] not in held
    assert "testing" not in held


def test_the_environment_a_client_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "p")
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/key.json")
    env = clients.environment(("AWS_",))
    assert env["AWS_PROFILE"] == "p" and env["https_proxy"] == "http://proxy:3128"
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env


def test_gcs_shares_its_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gcsfs")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    first = open_storage(StorageSpec("gs://bucket/root"))
    assert open_storage(StorageSpec("gs://bucket/root")).fs is first.fs  # type: ignore[attr-defined]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:2")
    assert open_storage(StorageSpec("gs://bucket/root")).fs is not first.fs  # type: ignore[attr-defined]


def test_azure_shares_its_service_client(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("azure.storage.blob")
    from regprune.storage import azure

    for name in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY"):
        monkeypatch.delenv(name, raising=False)
    made: list[Any] = []
    service = azure._service

    def counted(blob: Any, options: dict[str, Any]) -> Any:
        made.append(service(blob, options))
        return made[-1]

    monkeypatch.setattr(azure, "_service", counted)

    def connection(port: int) -> str:
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw"
            f"==;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection(1))
    open_storage(StorageSpec("az://container/root"))
    open_storage(StorageSpec("az://container/other"))
    assert len(made) == 1
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection(2))
    storage = open_storage(StorageSpec("az://container/root"))
    assert len(made) == 2
    assert ":2/" in storage.container.url  # type: ignore[attr-defined]

"""Every network call is bounded (regprune/timeouts.py): the Kubernetes client against a
server that never answers, one that trickles its answer (body or headers) and one that
answers HTML; the storage backends against a silent endpoint; an interrupted run's requests
end at once. Small timeouts, local servers (tests/harness/hostile_servers.py), no sleeps."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from regprune import timeouts
from regprune.metadata import MetadataError, MetadataSource, custom_objects_api, list_pages
from regprune.storage import StorageSpec, open_storage
from regprune.timeouts import RequestTimeout, Timeouts, parse_timeout
from tests.harness.hostile_servers import HostileServer


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> Timeouts:
    """What the command line's --connect/--read/--request-timeout set, kept small."""
    monkeypatch.setenv("REGPRUNE_CONNECT_TIMEOUT", "2s")
    monkeypatch.setenv("REGPRUNE_READ_TIMEOUT", "300ms")
    monkeypatch.setenv("REGPRUNE_REQUEST_TIMEOUT", "600ms")
    return Timeouts.current()


@pytest.fixture
def silent_timeouts(monkeypatch: pytest.MonkeyPatch) -> Timeouts:
    """The same, with a shorter read timeout for a server that never sends a byte: nothing
    can arrive within any read timeout, so it only decides how long each attempt waits (the
    trickling servers keep 300 ms, well above their 20 ms between bytes)."""
    monkeypatch.setenv("REGPRUNE_CONNECT_TIMEOUT", "2s")
    monkeypatch.setenv("REGPRUNE_READ_TIMEOUT", "100ms")
    monkeypatch.setenv("REGPRUNE_REQUEST_TIMEOUT", "600ms")
    return Timeouts.current()


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[HostileServer]:
    server = HostileServer(request.param).start()
    try:
        yield server
    finally:
        server.stop()


def kube_api(server: HostileServer, tmp_path: Path) -> Any:
    source = MetadataSource("kube", kubeconfig=str(server.kubeconfig(tmp_path / "kubeconfig")))
    return custom_objects_api(source)


def list_images(api: Any) -> Any:
    return api.list_cluster_custom_object("image.openshift.io", "v1", "images", limit=500)


def test_timeouts_are_durations_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_timeout("10s") == 10.0
    assert parse_timeout("500ms") == 0.5
    assert parse_timeout("1h") == 3600.0
    for bad, says in (("0s", "longer than 0s"), ("2h", "longer than"), ("10", "not a duration")):
        with pytest.raises(ValueError, match=says):
            parse_timeout(bad)
    for name in ("REGPRUNE_CONNECT_TIMEOUT", "REGPRUNE_READ_TIMEOUT", "REGPRUNE_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    assert Timeouts.current() == Timeouts(connect=10.0, read=30.0, request=60.0)
    monkeypatch.setenv("REGPRUNE_READ_TIMEOUT", "forever")
    with pytest.raises(ValueError, match="REGPRUNE_READ_TIMEOUT: not a duration"):
        Timeouts.current()


@pytest.mark.parametrize("hostile", ["silent"], indirect=True)
def test_a_server_that_never_answers_fails_the_request_after_the_read_timeout(
    hostile: HostileServer, silent_timeouts: Timeouts, tmp_path: Path
) -> None:
    api = kube_api(hostile, tmp_path)
    with pytest.raises(RequestTimeout, match=r"no answer for 0\.1 s \(--read-timeout\)"):
        list_images(api)
    assert hostile.wait_for(1) == 1  # urllib3 retries nothing itself: the callers' backoff does


@pytest.mark.parametrize("hostile", ["trickle", "trickle-headers"], indirect=True)
def test_an_answer_that_trickles_fails_the_request_after_the_request_timeout(
    hostile: HostileServer, short_timeouts: Timeouts, tmp_path: Path
) -> None:
    """A byte every 20 ms: the read timeout never fires, the answer never ends; the request
    timeout cuts it, in the headers as in the body."""
    api = kube_api(hostile, tmp_path)
    with pytest.raises(RequestTimeout, match=r"no complete answer within 0\.6 s"):
        list_images(api)


@pytest.mark.parametrize("hostile", ["html"], indirect=True)
def test_an_html_page_is_no_list_page(
    hostile: HostileServer, short_timeouts: Timeouts, tmp_path: Path
) -> None:
    """A proxy's login page answered 200 stops the listing, saying what came instead."""
    source = MetadataSource("kube", kubeconfig=str(hostile.kubeconfig(tmp_path / "kubeconfig")))
    api = custom_objects_api(source)
    with pytest.raises(MetadataError, match="not a Kubernetes list") as caught:
        next(list_pages(api, "images", source))
    assert "Log in" in str(caught.value)
    assert "cluster's API server" in str(caught.value)


@pytest.mark.parametrize(
    "page",
    [
        {"kind": "ImageList", "items": "all of them"},
        {"kind": "ImageList", "items": ["not an object"]},
        {"kind": "ImageList", "items": [], "metadata": "none"},
        {"kind": "ImageList", "items": [], "metadata": {"continue": 7}},
        ["a", "list"],
    ],
)
def test_a_page_that_is_no_list_stops_the_listing(
    page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import regprune.metadata

    monkeypatch.setattr(regprune.metadata, "get_json", lambda *args: page)  # the page served
    with pytest.raises(MetadataError, match="not a Kubernetes list"):
        next(list_pages(object(), "images", MetadataSource("kube")))


@pytest.mark.parametrize("hostile", ["silent"], indirect=True)
def test_an_interrupted_run_ends_its_requests_at_once(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Default timeouts (30 s without a byte): abort_requests ends the wait now."""
    for name in ("REGPRUNE_CONNECT_TIMEOUT", "REGPRUNE_READ_TIMEOUT", "REGPRUNE_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    api = kube_api(hostile, tmp_path)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            list_images(api)
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    assert hostile.arrived.wait(30)
    while caller.is_alive() and not timeouts.abort_requests():
        caller.join(0.01)  # the request reached the server before its watch was attached
    caller.join(10)
    assert not caller.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RequestTimeout), outcome


SILENT_STORAGE = {
    # each backend at the silent server, its own retries off: one request, one timeout
    "s3": (
        "s3://bucket",
        {
            "client_kwargs": {"endpoint_url": "{url}"},
            "config_kwargs": {"retries": {"max_attempts": 1}},
            "anon": True,
        },
        {},
    ),
    "gcs": ("gs://bucket", {"endpoint_url": "{url}", "token": "anon"}, {}),
    "azure": (
        "az://container",
        {"account_url": "{url}/devstoreaccount1", "retry_total": 0},
        {"AZURE_STORAGE_ACCOUNT_NAME": "devstoreaccount1", "AZURE_STORAGE_ACCOUNT_KEY": "a2V5"},
    ),
    "swift": (
        "swift://container",
        {"retries": 0},
        {"OS_AUTH_URL": "{url}/auth/v1.0", "OS_USERNAME": "u", "OS_PASSWORD": "p"},
    ),
}


@pytest.mark.parametrize("hostile", ["silent"], indirect=True)
@pytest.mark.parametrize("backend", sorted(SILENT_STORAGE))
def test_every_storage_backend_gives_up_on_a_silent_endpoint(
    backend: str,
    hostile: HostileServer,
    silent_timeouts: Timeouts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connect and read timeouts reach each backend's client: a listing of a storage
    that never answers fails (after the client's own retries, off here) instead of
    waiting for ever."""
    url, options, env = SILENT_STORAGE[backend]
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(url=hostile.url))
    if backend == "gcs":  # gcsfs tries six times, 31 s of backoff between: none here
        import gcsfs.retry

        monkeypatch.setattr(gcsfs.retry, "asyncio", SimpleNamespace(sleep=_no_wait))
    if backend == "s3":  # s3fs tries five times (botocore's attempts each): once here
        import s3fs

        monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    filled = _fill(options, hostile.url)
    storage = open_storage(StorageSpec(url, filled))
    with pytest.raises(Exception) as caught:  # each client's own error type
        storage.stat_many(["blobs/sha256/00/00/data"])
    assert hostile.wait_for(1) >= 1
    chain = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    assert any(word in " ".join(chain).lower() for word in ("timeout", "timed out")), chain


async def _no_wait(seconds: float) -> None:
    return None


def _fill(value: Any, url: str) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, url) for k, v in value.items()}
    return value.format(url=url) if isinstance(value, str) else value


@pytest.mark.parametrize("hostile", ["silent"], indirect=True)
def test_the_registry_api_gives_up_on_a_silent_registry(
    hostile: HostileServer, silent_timeouts: Timeouts
) -> None:
    """Clearing the registry's cache: an answer that never comes is an error for that
    action (it is then not counted as done), after the read timeout."""
    from regprune.registry import RegistryAPI

    error = RegistryAPI(hostile.url).unlink("ns/app", "sha256:" + "a" * 64)
    assert error is not None and "timed out" in error


@pytest.mark.parametrize("hostile", ["silent"], indirect=True)
def test_a_call_that_times_out_is_tried_three_times_not_seven(
    hostile: HostileServer, silent_timeouts: Timeouts, tmp_path: Path
) -> None:
    """Each attempt took a whole timeout: three of them, then the listing fails."""
    from regprune.metadata import call_with_retries

    api = kube_api(hostile, tmp_path)
    with pytest.raises(MetadataError, match=r"--read-timeout\) \(after 3 attempts\)"):
        call_with_retries(lambda: list_images(api), "list images", 6, sleep=lambda _: None)
    assert hostile.wait_for(3) == 3

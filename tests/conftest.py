"""Shared fixtures: the test bench plugins, one Prefect test server per session, and the
tiny helpers every flow test uses."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

# A confirmed prune waits --settle (default 5m) before its re-check; the tests drive the
# moments that matter with regprune/hooks.py instead of waiting.
os.environ.setdefault("REGPRUNE_SETTLE", "0s")

pytest_plugins = [
    "tests.harness.openshift_api",
    "tests.harness.openshift_apiserver",
    "tests.harness.registry_bench",
    "tests.harness.openshift_registry",
    "tests.harness.storage_emulators",
]


SERVICES = frozenset(
    {
        "prefect_server",
        "moto",
        "s3_env",
        "registry_fs",
        "registry_s3",
        "gcs_emulator",
        "azurite",
        "swift_aio",
        "openshift_registry_fs",
        "openshift_registry_s3",
        "openshift_apiserver_session",
    }
)
"""Fixtures that start a service (a process that serves requests): a test that uses one, even
through another fixture, is ``slow``. The in-process fakes (``openshift_api``) are not."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` means "starts a service": a test that uses a service fixture unmarked would put
    a server start into the fast suite (``-m "not slow"``), so collection stops there."""
    unmarked = [
        f"{item.nodeid} (uses {', '.join(sorted(SERVICES & set(item.fixturenames)))})"
        for item in items
        if SERVICES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("slow")
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests that start a service must be marked slow:\n  " + "\n  ".join(unmarked)
        )


def regprune_tasks() -> Iterator[Any]:
    """Every Prefect task of ``regprune.tasks`` (each module imported)."""
    import importlib
    import pkgutil

    from prefect import Task

    import regprune.tasks

    for module in pkgutil.iter_modules(regprune.tasks.__path__, "regprune.tasks."):
        for value in vars(importlib.import_module(module.name)).values():
            if isinstance(value, Task):
                yield value


@pytest.fixture(autouse=True)
def fresh_storage_clients() -> Iterator[None]:
    """A process shares one storage client per configuration (regprune/storage/clients.py);
    each test starts with none, so what a test does to its clients (an event handler, a retry
    quota spent on a fault proxy, connections to a server it stopped) stays in that test."""
    from regprune.storage import clients

    clients.clear()
    yield
    clients.clear()


@pytest.fixture(scope="session")
def no_retry_waits() -> Iterator[None]:
    """Retries are tested, waiting is not: for the session, every Prefect task retries at once
    (their delays are 2 s to 30 s) and regprune's own client loops (the metadata listing, the
    bulk deletes of every backend: cloud.delete_in_batches) back off by 0 s. The one
    mechanism for every test that runs a flow (``prefect_server`` uses it) or retries."""
    from regprune import metadata
    from regprune.storage import cloud

    with pytest.MonkeyPatch.context() as patch:
        for task in regprune_tasks():
            delays = task.retry_delay_seconds
            if delays:
                zero = [0.0] * len(delays) if isinstance(delays, list) else 0.0
                patch.setattr(task, "retry_delay_seconds", zero)
        patch.setattr(metadata, "RETRY_BASE_SECONDS", 0.0)
        patch.setattr(metadata, "RETRY_MAX_SECONDS", 0.0)
        patch.setattr(cloud, "DELETE_BACKOFF_SECONDS", 0.0)
        yield


@pytest.fixture(scope="session")
def prefect_server(no_retry_waits: None) -> Iterator[None]:
    """Prefect's temporary server takes seconds to start: one for the whole session."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # Prefect joins the flow-run heartbeat thread at the end of every run, in one-second
    # steps: a second per flow call that tests nothing.
    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


@pytest.fixture
def s3_env(moto: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Credentials and endpoint the standard AWS way, as a user would set them."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": moto.endpoint_url,
        "AWS_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return env


def rows(path: Path | str, query: str = "SELECT * FROM t") -> list[dict[str, Any]]:
    """Rows of a Parquet file as dicts, through DuckDB (``t`` is the file)."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{Path(path)}')")
        cursor = con.execute(query)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def write_dump(path: Path, items: list[dict[str, Any]]) -> Path:
    """An ``oc get images,imagestreams -A -o json`` style dump."""
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return path


def imagestream(namespace: str, name: str, tags: dict[str, list[str]], host: str) -> dict:
    """An ImageStream whose tags hold the given digests (position 0 first)."""
    return {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{namespace}-{name}"},
        "status": {
            "dockerImageRepository": f"{host}/{namespace}/{name}",
            "tags": [
                {
                    "tag": tag,
                    "items": [
                        {
                            "image": digest,
                            "dockerImageReference": f"{host}/{namespace}/{name}@{digest}",
                            "created": "2026-01-01T00:00:00Z",
                            "generation": 1,
                        }
                        for digest in digests
                    ],
                }
                for tag, digests in sorted(tags.items())
            ],
        },
    }


os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DO_NOT_TRACK", "1")  # no telemetry from test runs
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

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
    "tests.openshift_api",
    "tests.openshift_apiserver",
    "tests.registry_bench",
    "tests.openshift_registry",
    "tests.storage_emulators",
]


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
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

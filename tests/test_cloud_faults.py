"""GCS, Azure Blob and Swift misbehaving during a snapshot and a deletion, with nothing lost.

The S3 fault proxy, taught the other services (tests/harness/cloud_proxy.py), sits between regprune
and each emulator: 503s, 500s and reset connections on listing pages (first pages and pages in the
middle of a listing), listings that keep failing or are refused (403), failing HEADs of Swift's
Dynamic Large Object manifests (the snapshot's only way to a DLO's size) and bulk deletes that
partly fail. Listings page by :data:`PAGE` objects so that there are middle pages: Azure and
Swift honour a small page size (``LIST_PAGE``, the SDKs' ``results_per_page``/``limit``); the
GCS emulator ignores ``maxResults`` and never pages, so on GCS the paging comes from
:class:`GcsPagingFront` (the emulator's answers cut into GCS-style pages with tokens) between
the proxy and the emulator.

Whatever happens, a snapshot's tables equal the fault-free snapshot's, or the run fails with
one line naming the backend and the path and deletes nothing; a batch that partly failed
reports the objects it did not delete as failed, and a re-run finishes them.

The clients' own retries are kept (that is what absorbs a single 503 in production) but made
fast: Azure's and Swift's backoff through ``--storage-option``, gcsfs' sleep patched here;
regprune's backoffs and the tasks' retry delays are zero (``no_retry_waits``, through
``prefect_server``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from regprune import layout
from regprune.cli.main import EXIT_FAILURE, EXIT_OK, main
from regprune.demo.synthetic import SyntheticSpec, generate
from regprune.storage import azure, swift
from tests.conftest import rows
from tests.harness.cloud_proxy import CloudFaultProxy
from tests.harness.storage_emulators import (
    V2,
    GcsPagingFront,
    copy_registry_tree,
    folder_files,
    uploaded_blobs,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

SPEC = SyntheticSpec(namespaces=2, streams_per_namespace=2, tags_per_stream=2, history_per_tag=2)
PAGE = 4
"""Objects per listing page on every backend: each repository shard is many pages."""
AGES = ["--keep-younger-than", "0s", "--upload-max-age", "0s"]
"""Objects copied into an emulator are all new: no grace periods."""
FAST_CLIENT = {
    "gcs": [],  # gcsfs takes no retry settings: its sleep is patched (fast_gcsfs)
    "azure": ["retry_total=2", "initial_backoff=0", "increment_base=0", "random_jitter_range=0"],
    "swift": ["retries=2", "starting_backoff=0"],
}
"""Three attempts per request, without waiting (gcsfs makes six)."""
ATTEMPTS = {"gcs": 6, "azure": 3, "swift": 3}
"""How often each client tries a request with :data:`FAST_CLIENT`."""
BACKEND = {
    "gcs": ("GCS", "gs://"),
    "azure": ("Azure Blob", "az://"),
    "swift": ("Swift", "swift://"),
}


@dataclass
class Source:
    root: Path
    dump: Path


@dataclass
class FolderRun:
    report: dict[str, Any]
    kept: set[str]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    tmp = tmp_path_factory.mktemp("cloud-faults")
    generate(tmp / "storage", SPEC, tmp / "metadata.json", now=datetime.now(UTC))
    return Source(tmp / "storage", tmp / "metadata.json")


@pytest.fixture(scope="module")
def folder(source: Source, tmp_path_factory: pytest.TempPathFactory) -> FolderRun:
    """The fault-free prune on the folder: what every bucket must end with."""
    tmp = tmp_path_factory.mktemp("folder-run")
    root = tmp / "storage"
    shutil.copytree(source.root, root, symlinks=True)
    code, report, _ = run("prune", str(root), source.dump, tmp / "prune", *AGES, "--confirm")
    assert code == EXIT_OK, report
    assert report["executed"]["blobs"]["done"] > 0
    return FolderRun(report, set(folder_files(root)))


@pytest.fixture(scope="module")
def gcs_pages(gcs_emulator: Any) -> Iterator[GcsPagingFront]:
    front = GcsPagingFront(gcs_emulator.endpoint, max_page=PAGE)
    front.start()
    try:
        yield front
    finally:
        front.stop()


@pytest.fixture(params=["gcs", "azure", "swift"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Bucket:
    """A copy of the source tree in one emulator, reached through a fault proxy."""

    kind: str
    emulator: Any
    name: str
    proxy: CloudFaultProxy

    @property
    def url(self) -> str:
        return f"{BACKEND[self.kind][1]}{self.name}"

    def keys(self) -> list[str]:
        """Every object, read from the emulator directly (not through faults)."""
        return self.emulator.list_keys(self.name)

    def kept(self) -> set[str]:
        """``docker/registry/v2/...`` paths of the objects left (segments apart)."""
        keys = self.keys()
        if self.kind == "swift":
            keys = [k.removeprefix("files/") for k in keys if k.startswith("files/")]
        return {k.lstrip("/") for k in keys if k.lstrip("/").startswith(V2 + "/")}


@pytest.fixture
def bucket(
    request: pytest.FixtureRequest, kind: str, source: Source, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bucket]:
    emulator = request.getfixturevalue(
        {"gcs": "gcs_emulator", "azure": "azurite", "swift": "swift_aio"}[kind]
    )
    name = emulator.create_bucket(f"faults-{uuid.uuid4().hex[:12]}")
    dlo = uploaded_blobs(source.root) if kind == "swift" else []
    copy_registry_tree(source.root, emulator, name, swift_dlo=dlo, segment_size=512)
    env = dict(emulator.env)
    if kind == "gcs":
        upstream = request.getfixturevalue("gcs_pages").url
    elif kind == "azure":
        upstream = emulator.endpoint.rsplit("/", 1)[0]
    else:
        upstream = emulator.endpoint
    with CloudFaultProxy(upstream, kind) as proxy:
        if kind == "gcs":
            env["STORAGE_EMULATOR_HOST"] = proxy.url
            fast_gcsfs(monkeypatch)
        elif kind == "azure":
            conn = env["AZURE_STORAGE_CONNECTION_STRING"]
            env["AZURE_STORAGE_CONNECTION_STRING"] = conn.replace(upstream, proxy.url)
            env["AZURE_STORAGE_BLOB_ENDPOINT"] = env["AZURE_STORAGE_BLOB_ENDPOINT"].replace(
                upstream, proxy.url
            )
        else:
            env["OS_AUTH_URL"] = env["ST_AUTH"] = proxy.url + "/auth/v1.0"
        for variable in [n for n in os.environ if n.startswith(("AZURE_", "OS_", "ST_"))]:
            monkeypatch.delenv(variable)
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        monkeypatch.setattr(azure, "LIST_PAGE", PAGE)
        monkeypatch.setattr(swift, "LIST_PAGE", PAGE)
        yield Bucket(kind, emulator, name, proxy)


def fast_gcsfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """gcsfs sleeps 1 s, 2 s, 4 s... between its six attempts: no sleeping here."""
    import asyncio

    import gcsfs.retry

    async def no_sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    monkeypatch.setattr(gcsfs.retry, "asyncio", SimpleNamespace(sleep=no_sleep))


def run(
    command: str, url: str, dump: Path, out: Path, *extra: str
) -> tuple[int, dict[str, Any], str]:
    """A command in-process: its exit code, its report (when written) and its error lines."""
    report = out.parent / f"{out.name}.json"
    args = [command, "--storage", url, "--metadata", str(dump), "--out", str(out)]
    if command not in ("snapshot", "purge"):
        args += ["--report", str(report)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([*args, *extra])
    errors = [line for line in err.getvalue().splitlines() if line.startswith("regprune: error")]
    return code, json.loads(report.read_text()) if report.exists() else {}, "\n".join(errors)


def client_options(kind: str) -> list[str]:
    return [arg for option in FAST_CLIENT[kind] for arg in ("--storage-option", option)]


def snapshot(bucket: Bucket, source: Source, out: Path) -> dict[str, list[str]]:
    """``regprune snapshot`` through the proxy; its tables, each as sorted JSON rows."""
    code, _, errors = run(
        "snapshot", bucket.url, source.dump, out, "--shards", "4", *client_options(bucket.kind)
    )
    assert code == EXIT_OK, (
        errors,
        "".join(e.outcome[0] for e in bucket.proxy.log if e.operation == "list"),
    )
    tables = {}
    for path in sorted(out.glob("*.parquet")):
        tables[path.stem] = sorted(
            json.dumps(row, sort_keys=True, default=str) for row in rows(path)
        )
    assert tables.get("blobs") and tables.get("manifest_links"), sorted(tables)
    return tables


def prune(bucket: Bucket, source: Source, out: Path) -> tuple[int, dict[str, Any], str]:
    return run(
        "prune", bucket.url, source.dump, out, *AGES, "--confirm", *client_options(bucket.kind)
    )


# --------------------------------------------------------------------------- listings


def test_transient_listing_faults_are_retried(
    bucket: Bucket, source: Source, tmp_path: Path
) -> None:
    """503s and 500s on first pages and on pages in the middle of a listing, and connections
    reset on both: the snapshot's tables equal the fault-free snapshot's."""
    clean = snapshot(bucket, source, tmp_path / "clean")
    assert bucket.proxy.count("list") > 0
    bucket.proxy.clear()
    faults = [
        bucket.proxy.inject("list", "slowdown", times=2, continued=False, after=2),
        bucket.proxy.inject("list", "internal", times=2, continued=True),
        bucket.proxy.inject("list", "reset", times=1, continued=True, after=3),
        bucket.proxy.inject("list", "reset", times=1, continued=False, after=5),
        # one page failing once more than the client tries: the task retries
        bucket.proxy.inject("list", "slowdown", times=ATTEMPTS[bucket.kind] + 1, after=6),
    ]
    faulted = snapshot(bucket, source, tmp_path / "faulted")
    assert [f.fired for f in faults] == [2, 2, 1, 1, ATTEMPTS[bucket.kind] + 1]
    assert faulted == clean  # the continued=True faults fired: the listings had middle pages


@pytest.mark.parametrize("fault", ["internal", "forbidden"])
def test_a_listing_that_keeps_failing_fails_the_run_and_deletes_nothing(
    bucket: Bucket, source: Source, tmp_path: Path, fault: str
) -> None:
    """Every page after the first answered 500 (or 403) for ever: ``prune --confirm`` exits
    non-zero with one error naming the backend and the path, and no object goes."""
    before = bucket.keys()
    bucket.proxy.inject("list", fault, times=None, continued=True)  # type: ignore[arg-type]
    code, _, errors = prune(bucket, source, tmp_path / "prune")
    assert code == EXIT_FAILURE
    assert len(errors.splitlines()) == 1, errors
    name, scheme = BACKEND[bucket.kind]
    assert name in errors and f"{scheme}{bucket.name}/" in errors, errors
    if fault == "forbidden":
        assert "access denied" in errors
    assert bucket.proxy.count("bulk_delete") == 0
    assert bucket.keys() == before


# --------------------------------------------------------------------------- Swift DLOs


@pytest.mark.parametrize("kind", ["swift"])
def test_swift_dlo_size_heads_that_fail(bucket: Bucket, source: Source, tmp_path: Path) -> None:
    """The HEAD that gives a DLO manifest its size: 503s and resets are retried (tables
    equal); one that keeps failing fails the run, naming the object, and nothing goes."""
    clean = snapshot(bucket, source, tmp_path / "clean")
    manifests = [e for e in bucket.proxy.log if e.operation == "head" and "/files/" in e.path]
    assert manifests  # the snapshot HEADs the 0-byte manifests
    bucket.proxy.clear()
    faults = [
        bucket.proxy.inject("head", "slowdown", times=3, where="/files/"),
        bucket.proxy.inject("head", "reset", times=1, where="/files/", after=4),
        bucket.proxy.inject("head", "slowdown", times=3, where="/files/", after=8),
    ]
    assert snapshot(bucket, source, tmp_path / "faulted") == clean
    assert [f.fired for f in faults] == [3, 1, 3]

    bucket.proxy.clear()
    victim = manifests[0].path.split("/files/", 1)[1]
    bucket.proxy.inject("head", "slowdown", times=None, where=victim)
    before = bucket.keys()
    code, _, errors = prune(bucket, source, tmp_path / "prune")
    assert code == EXIT_FAILURE
    assert len(errors.splitlines()) == 1 and "Swift HEAD of swift://" in errors, errors
    assert victim in errors
    assert bucket.proxy.count("bulk_delete") == 0
    assert bucket.keys() == before


# --------------------------------------------------------------------------- bulk deletes


def test_a_partly_failed_bulk_delete_is_reported_and_a_rerun_finishes(
    bucket: Bucket, source: Source, folder: FolderRun, tmp_path: Path
) -> None:
    """Every bulk delete answers 503 for one blob's objects (and does not delete them), the
    rest of each batch goes: that blob's actions are failed (none done), the run exits 1, the
    blob is still there whole; a re-run without the fault ends where the folder run did."""
    uploaded = set(uploaded_blobs(source.root))
    removed_whole = tuple(
        f"{V2}/repositories/{r['repository']}/" for r in folder.report["repositories"]
    )
    gone = set(folder_files(source.root)) - folder.kept

    def fails_alone(digest: str) -> bool:
        """A blob no other action names (no manifest link, no repository removed whole holds
        its hex): its failing objects fail only its own actions."""
        hex_ = digest.removeprefix("sha256:")
        return all(
            "/blobs/" in key or ("/_layers/" in key and not key.startswith(removed_whole))
            for key in gone
            if hex_ in key
        )

    victim = next(
        row["digest"]
        for row in folder.report["blobs"]
        if f"{V2}/{layout.blob_data_path(row['digest'])}" in uploaded and fails_alone(row["digest"])
    )
    hex_ = victim.removeprefix("sha256:")
    fault = bucket.proxy.inject("bulk_delete", "fail_keys", times=None, keys=hex_)
    code, report, errors = prune(bucket, source, tmp_path / "prune")
    assert code == EXIT_FAILURE, report
    assert fault.fired > 0 and fault.keys_failed
    actions = rows(tmp_path / "prune" / "actions.parquet")
    failed = [r for r in actions if r["status"] == "failed"]
    assert failed and all(hex_ in json.dumps(r, default=str) for r in failed), failed
    blob = [r for r in actions if r["action"] == "delete_blob" and r["digest"] == victim]
    # the intent written ahead of the move, then its outcome: it failed, nothing done
    assert [r["status"] for r in blob] == ["quarantining", "failed"]
    assert "503" in blob[-1]["reason"]
    assert report["executed"]["blobs"]["failed"] == 1
    assert f"{V2}/{layout.blob_data_path(victim)}" in bucket.kept()
    if bucket.kind == "swift":  # the manifest failed to go: its segments stayed with it
        data = bucket.emulator.connection().get_object(
            bucket.name, f"files/{V2}/{layout.blob_data_path(victim)}"
        )[1]
        blob_file = source.root / V2 / layout.blob_data_path(victim)
        assert data == blob_file.read_bytes()

    bucket.proxy.clear()
    code, report, errors = prune(bucket, source, tmp_path / "rerun")
    assert code == EXIT_OK, errors
    assert bucket.kept() == folder.kept
    if bucket.kind == "swift":  # once both runs' quarantines are purged: the kept DLOs' segments
        code, _, errors = run(
            "purge", bucket.url, source.dump, tmp_path / "purge", "--older-than", "0s",
            "--confirm", *client_options(bucket.kind),
        )  # fmt: skip
        assert code == EXIT_OK, errors
        sizes = [(source.root / rel).stat().st_size for rel in uploaded if rel in folder.kept]
        expected = sum(math.ceil(max(size, 1) / 512) for size in sizes)
        assert len(bucket.emulator.list_keys(bucket.name, "segments/")) == expected

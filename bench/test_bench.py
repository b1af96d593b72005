"""Tests of the bench's own tools: the counting proxy, the Parquet generator, the truth check
and the process-tree sampler. Run with ``python -m pytest bench/test_bench.py`` (not timed:
figures belong to bench/run)."""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import plan_truth
import proctree
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3count
import snapshot_tables

from regprune.tasks.tables import SCHEMAS, SNAPSHOT_TABLES, sql_literal


@pytest.mark.parametrize(
    ("method", "path", "query", "operation"),
    [
        ("GET", "/b", {"list-type": ["2"], "prefix": ["x/"]}, "ListObjectsV2"),
        ("GET", "/b", {"prefix": ["x/"]}, "ListObjects"),
        ("POST", "/b", {"delete": [""]}, "DeleteObjects"),
        ("GET", "/b/docker/registry/v2/blobs/sha256/ab/ab/data", {}, "GetObject"),
        ("HEAD", "/b/k", {}, "HeadObject"),
        ("PUT", "/b/k", {}, "PutObject"),
        ("PUT", "/b/k", {"uploadId": ["1"], "partNumber": ["1"]}, "UploadPart"),
        ("DELETE", "/b/k", {}, "DeleteObject"),
    ],
)
def test_requests_are_classified_as_s3_operations(
    method: str, path: str, query: dict, operation: str
) -> None:
    assert s3count.operation(method, path, query, copy=False) == operation


@pytest.fixture
def counted_s3(tmp_path: Path) -> Iterator[tuple[str, s3count.Counts]]:
    """moto_server and the counting proxy in front of it, in this process."""
    from tests.registry_bench import MotoServer

    with MotoServer(log_dir=tmp_path) as moto:
        server = s3count.serve(0, moto.endpoint_url)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}", server.RequestHandlerClass.counts
        finally:
            server.shutdown()
            server.server_close()


def test_proxy_counts_what_reaches_the_server(counted_s3: tuple[str, s3count.Counts]) -> None:
    import s3fs

    endpoint, counts = counted_s3
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        client_kwargs={"endpoint_url": endpoint},
        use_listings_cache=False,
        skip_instance_cache=True,
    )
    fs.mkdir("counted")
    fs.pipe({f"counted/k/{i:04d}": b"x" for i in range(1100)})
    counts.reset()
    assert len(fs.find("counted/k")) == 1100
    fs.rm([f"counted/k/{i:04d}" for i in range(3)])
    found = counts.as_json()
    assert found["requests"]["ListObjectsV2"] == 2  # 1,000 keys a page
    assert found["listed_keys"] == 1100
    assert found["requests"]["DeleteObjects"] == 1
    assert found["deleted_keys"] == 3
    assert found["total"] == 3


@pytest.fixture(scope="module")
def small_tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tables") / "snapshot"
    snapshot_tables.write_tables(out, images=300, blobs=3_000)
    return out


def test_generated_tables_follow_the_snapshot_schemas(small_tables: Path) -> None:
    for table in SNAPSHOT_TABLES:
        schema = pq.read_schema(small_tables / f"{table}.parquet")
        # DuckDB marks constant columns NOT NULL; names and types are the contract
        assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in SCHEMAS[table]]
    spec = snapshot_tables.TablesSpec.for_size(300, 3_000)
    with duckdb.connect() as con:
        blobs = sql_literal(small_tables / "blobs.parquet")
        distinct = con.execute(f"SELECT count(DISTINCT digest) FROM {blobs}").fetchone()[0]
    assert distinct == spec.blobs


def test_plan_of_generated_tables_equals_the_expected_tables(
    small_tables: Path, tmp_path: Path
) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from regprune.flows.prune import prune_flow

    run = tmp_path / "run"
    shutil.copytree(small_tables, run)
    with prefect_test_harness(server_startup_timeout=120):
        prune_flow(snapshot=str(run), keep_younger_than="0s")
    checks = plan_truth.against_expected_tables(run, run / "expected")
    assert plan_truth.all_ok(checks), [c.describe() for c in checks]
    # 30 streams, 3 of them deleted; one deleted image of 7 own layers in each stream
    assert snapshot_tables.TablesSpec.for_size(300, 3_000).own_layers == 7
    planned = {c.category: c.planned for c in checks if c.planned}
    assert planned == {
        "blobs": 30 * (2 + 7),
        "layer_links": 27 * (1 + 7),
        "manifest_links": 27,
        "repositories": 3,
    }

    # the check can fail: one expected blob less is one planned blob too many
    expected = run / "expected" / "blobs.parquet"
    pq.write_table(pq.read_table(expected).slice(1), expected)
    blobs = next(c for c in plan_truth.against_expected_tables(run, run / "expected"))
    assert (blobs.category, blobs.ok, blobs.extra) == ("blobs", False, 1)


def test_truth_check_reports_missing_and_extra_items(tmp_path: Path) -> None:
    digests = ["sha256:" + c * 64 for c in "abc"]
    pq.write_table(
        pa.table({"digest": digests[:2], "action": ["delete", "delete"]}),
        tmp_path / "plan_blobs.parquet",
    )
    columns = ("repository", "digest", "reason", "upload_id", "action")
    empty = pa.schema([(name, pa.string()) for name in columns]).empty_table()
    for table in ("repositories", "manifest_links", "layer_links", "uploads"):
        pq.write_table(empty, tmp_path / f"plan_{table}.parquet")
    kinds = ("blobs", "repositories", "manifest_links", "layer_links", "uploads")
    truth = {
        "orphan_blobs": [digests[0], digests[2]],
        "prunable_repositories": [],
        "prunable_manifest_links": [],
        "dangling_layer_links": [],
        "stale_uploads": [],
        "kept_young": {kind: [] for kind in kinds},
    }
    checks = plan_truth.against_truth(tmp_path, truth)
    blobs = checks[0]
    assert (blobs.expected, blobs.planned, blobs.missing, blobs.extra) == (2, 2, 1, 1)
    assert not plan_truth.all_ok(checks)


def test_peak_rss_covers_the_whole_process_tree(tmp_path: Path) -> None:
    child = "x = bytearray(300 << 20); import time; time.sleep(1)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    measured = proctree.run([sys.executable, "-c", parent], log=tmp_path / "log")
    assert measured.peak_rss >= 300 << 20
    assert measured.returncode == 0
    with pytest.raises(proctree.CommandFailed):
        proctree.run([sys.executable, "-c", "raise SystemExit(3)"])

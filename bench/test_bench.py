"""Tests of the bench's own tools: the counting proxy, the Parquet generator, the truth checks
(of a plan and of a storage after a real prune), the process-tree sampler and bench/run's
request accounting. Part of the suite (``python -m pytest`` collects ``bench/``); alone:
``python -m pytest bench/test_bench.py``. Not timed: figures belong to bench/run."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import json
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import deletion_truth
import duckdb
import plan_truth
import proctree
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3count
import snapshot_tables

from regprune.tables import SCHEMAS, SNAPSHOT_TABLES, sql_literal
from tests.harness.registry_bench import MotoServer


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
def counted_s3(moto: MotoServer) -> Iterator[tuple[str, s3count.Counts]]:
    """The counting proxy in front of the session's moto_server, in this process."""
    server = s3count.serve(0, moto.endpoint_url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.RequestHandlerClass.counts
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_proxy_counts_what_reaches_the_server(counted_s3: tuple[str, s3count.Counts]) -> None:
    import s3fs

    endpoint, counts = counted_s3
    bucket = f"counted-{uuid.uuid4().hex[:8]}"
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        client_kwargs={"endpoint_url": endpoint},
        use_listings_cache=False,
        skip_instance_cache=True,
    )
    fs.mkdir(bucket)
    fs.pipe({f"{bucket}/k/{i:04d}": b"x" for i in range(1100)})
    counts.reset()
    assert len(fs.find(f"{bucket}/k")) == 1100
    fs.rm([f"{bucket}/k/{i:04d}" for i in range(3)])
    found = counts.as_json()
    assert found["requests"]["ListObjectsV2"] == 2  # 1,000 keys a page
    assert found["listed_keys"] == 1100
    assert found["requests"]["DeleteObjects"] == 1
    assert found["deleted_keys"] == 3
    assert found["total"] == 3
    assert found["by_area"] == {"ListObjectsV2 k": 2, "DeleteObjects k": 1}


@pytest.mark.parametrize(
    ("key", "area"),
    [
        ("registry/docker/registry/v2/blobs/sha256/ab/", "blobs"),
        ("registry/docker/registry/v2/repositories/ns/app/_layers/sha256/x/link", "repositories"),
        ("registry/docker/registry/v2/", "v2"),
        ("docker/registry/v2/blobs", "blobs"),
        ("registry/_regprune/lock", "_regprune"),
        ("", "/"),
    ],
)
def test_keys_are_placed_in_the_registry(key: str, area: str) -> None:
    assert s3count.area(key) == area


def test_requests_name_their_key_prefix_or_first_deleted_key() -> None:
    body = b"<Delete><Object><Key>r/docker/registry/v2/blobs/x</Key></Object></Delete>"
    assert s3count.target_key("/b", {"prefix": ["r/a/"]}, b"", "ListObjectsV2") == "r/a/"
    assert s3count.target_key("/b", {}, body, "DeleteObjects") == "r/docker/registry/v2/blobs/x"
    assert s3count.target_key("/b/r/_regprune/lock", {}, b"", "PutObject") == "r/_regprune/lock"
    assert s3count.target_key("/b/a%20b", {}, b"", "GetObject") == "a b"


def test_every_request_is_logged_as_one_json_line() -> None:
    log = io.StringIO()
    counts = s3count.Counts(log)
    counts.add("DeleteObjects", 200, 0, 3, "r/docker/registry/v2/blobs/x", received=1.5)
    counts.add("HeadObject", 404, 0, 0, "r/docker/registry/v2/blobs/y", received=2.5)
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert lines == [
        {
            "t": 1.5,
            "op": "DeleteObjects",
            "status": 200,
            "key": "r/docker/registry/v2/blobs/x",
            "deleted": 3,
        },
        {"t": 2.5, "op": "HeadObject", "status": 404, "key": "r/docker/registry/v2/blobs/y"},
    ]
    assert counts.as_json()["errors"] == {"HeadObject 404": 1}
    assert counts.as_json()["by_area"] == {"DeleteObjects blobs": 1, "HeadObject blobs": 1}


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


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_plan_of_generated_tables_equals_the_expected_tables(
    small_tables: Path, tmp_path: Path
) -> None:
    from regprune.flows.prune import prune_flow

    run = tmp_path / "run"
    shutil.copytree(small_tables, run)
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


# --- the storage after a real prune against truth.json ----------------------------------------

V2 = "b/r/docker/registry/v2/"
HEX = {name: char * 64 for name, char in (("orphan", "a"), ("kept", "b"), ("link", "c"))}


def _prune_truth(**items: list) -> dict:
    empty = {
        "orphan_blobs": [],
        "prunable_repositories": [],
        "prunable_manifest_links": [],
        "dangling_layer_links": [],
        "stale_uploads": [],
    }
    return empty | items


def _small_bucket() -> tuple[set[str], dict]:
    """Keys of a tiny registry and a truth deleting one of each kind."""
    link = HEX["link"]
    keys = {
        f"{V2}blobs/sha256/aa/{HEX['orphan']}/data",
        f"{V2}blobs/sha256/bb/{HEX['kept']}/data",
        # a repository deleted whole, with a repository nested in its folder that stays
        f"{V2}repositories/ns1/_layers/sha256/{link}/link",
        f"{V2}repositories/ns1/_manifests/revisions/sha256/{link}/link",
        f"{V2}repositories/ns1/app/_layers/sha256/{link}/link",
        # a manifest link with its tag index entry; the tag's current link stays
        f"{V2}repositories/ns/app/_manifests/revisions/sha256/{link}/link",
        f"{V2}repositories/ns/app/_manifests/tags/v1/index/sha256/{link}/link",
        f"{V2}repositories/ns/app/_manifests/tags/v1/current/link",
        f"{V2}repositories/ns/app/_layers/sha256/{HEX['orphan']}/link",
        f"{V2}repositories/ns/app/_layers/sha256/{HEX['kept']}/link",
        f"{V2}repositories/ns/app/_uploads/u1/data",
        f"{V2}repositories/ns/app/_uploads/u1/startedat",
        f"{V2}repositories/ns/app/_uploads/u2/startedat",
    }
    truth = _prune_truth(
        orphan_blobs=[f"sha256:{HEX['orphan']}"],
        prunable_repositories=[{"repository": "ns1", "reason": "invalid-name"}],
        prunable_manifest_links=[
            {"repository": "ns/app", "digest": f"sha256:{link}", "reason": "image-missing"}
        ],
        dangling_layer_links=[
            {"repository": "ns/app", "digest": f"sha256:{HEX['orphan']}", "reason": "blob-deleted"}
        ],
        stale_uploads=[{"repository": "ns/app", "upload_id": "u1", "started_at": None}],
    )
    return keys, truth


def test_storage_equal_to_the_truth_passes_and_names_what_went() -> None:
    before, truth = _small_bucket()
    gone = {
        key
        for key in before
        if HEX["orphan"] in key
        or "/ns1/_" in key
        or "/u1/" in key
        or (f"{HEX['link']}/link" in key and "/ns/app/_manifests/" in key)
    }
    checks = deletion_truth.against_truth(before, before - gone, truth, "b/r/")
    assert all(check.ok for check in checks), [check.describe() for check in checks]
    objects = {check.category: (check.objects, check.gone) for check in checks}
    assert objects == {
        "repositories": (2, 2),
        "manifest_links": (2, 2),
        "layer_links": (1, 1),
        "uploads": (2, 2),
        "blobs": (1, 1),
        "kept": (5, 0),
    }


@pytest.mark.parametrize("mistake", ["kept-gone", "deleted-stays", "new-key", "unmatched"])
def test_storage_check_fails_on_each_kind_of_mistake(mistake: str) -> None:
    before, truth = _small_bucket()
    gone = {key for key in before if HEX["orphan"] in key or "/ns1/_" in key or "/u1/" in key}
    gone |= {key for key in before if "/ns/app/_manifests/" in key and HEX["link"] in key}
    after = before - gone
    if mistake == "kept-gone":
        after.discard(f"{V2}repositories/ns1/app/_layers/sha256/{HEX['link']}/link")
    elif mistake == "deleted-stays":
        after.add(f"{V2}repositories/ns/app/_uploads/u1/data")
    elif mistake == "new-key":
        after.add("b/r/_regprune/lock")
    else:
        truth["stale_uploads"].append({"repository": "ns/app", "upload_id": "u9"})
    failed = [c for c in deletion_truth.against_truth(before, after, truth, "b/r/") if not c.ok]
    expected = {"kept-gone": "kept", "deleted-stays": "uploads", "new-key": "kept"}
    assert [c.category for c in failed] == [expected.get(mistake, "uploads")]
    assert "FAIL" in failed[0].describe()


def test_every_truth_item_of_a_generated_registry_has_its_objects(tmp_path: Path) -> None:
    """The layout rules fit the generator's real trees: every item the truth deletes matches
    an object, and with nothing deleted every category but the kept rest fails."""
    from regprune.demo.synthetic import SyntheticSpec, generate

    root = tmp_path / "storage"
    generate(root, SyntheticSpec.demo(), tmp_path / "metadata.json", tmp_path / "truth.json")
    truth = json.loads((tmp_path / "truth.json").read_text())["prune"]
    keys = {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}
    checks = deletion_truth.against_truth(keys, keys, truth)
    assert all(check.unmatched == 0 for check in checks)
    assert [c.category for c in checks if not c.ok] == list(deletion_truth.CATEGORIES)
    assert all(check.objects for check in checks)


# --- bench/run's accounting of requests ----------------------------------------------------


@pytest.fixture(scope="module")
def bench_run() -> ModuleType:
    """bench/run, a script without .py, imported as a module."""
    path = Path(__file__).parent / "run"
    loader = importlib.machinery.SourceFileLoader("bench_run", str(path))
    spec = importlib.util.spec_from_loader("bench_run", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    loader.exec_module(module)
    return module


def _request(t: float, op: str, status: int = 200, **extra: int) -> dict:
    return {"t": t, "op": op, "status": status, "key": "k", **extra}


def test_requests_are_attributed_to_the_task_under_way(bench_run: ModuleType) -> None:
    windows = [(10.0, 20.0, "walk-repository-shard"), (15.0, 18.0, "walk-repository-shard")]
    windows += [(30.0, 40.0, "execute-batch")]
    requests = [
        _request(5.0, "PutObject"),
        _request(12.0, "ListObjectsV2"),
        _request(16.0, "ListObjectsV2"),
        _request(31.0, "HeadObject"),
        _request(40.0, "DeleteObjects", deleted=3),
        _request(45.0, "DeleteObject"),
    ]
    assert bench_run.requests_by_step(requests, windows) == {
        bench_run.FLOW_ITSELF: {"PutObject": 1, "DeleteObject": 1},
        "walk-repository-shard": {"ListObjectsV2": 2},
        "execute-batch": {"HeadObject": 1, "DeleteObjects": 1},
    }


def test_the_gc_sweep_starts_at_its_first_delete(bench_run: ModuleType) -> None:
    requests = [
        _request(3.0, "ListObjects", listed=2),
        _request(1.0, "GetObject"),
        _request(4.0, "DeleteObjects", deleted=1),
        _request(5.0, "ListObjects", status=500),
        _request(6.0, "DeleteObjects", deleted=1),
    ]
    marking, sweep = bench_run.split_at_first(requests, "DeleteObjects")
    assert [r["t"] for r in marking] == [1.0, 3.0]
    assert bench_run.tally(sweep) == {
        "requests": {"DeleteObjects": 2, "ListObjects": 1},
        "total": 3,
        "listed_keys": 0,
        "deleted_keys": 2,
        "errors": {"ListObjects 500": 1},
    }
    figures = bench_run.request_figures(bench_run.tally(requests))
    assert figures == {
        "requests": 5,
        "deletes": 2,
        "keys": 2,
        "lists": 2,
        "reads": 1,
        "other": 0,
        "errors": 1,
    }
    assert bench_run.split_at_first(requests[:2], "DeleteObjects")[1] == []


def test_the_request_log_yields_the_lines_of_one_command(
    bench_run: ModuleType, tmp_path: Path
) -> None:
    log = bench_run.RequestLog(tmp_path / "requests.jsonl")
    assert log.mark() == 0
    (tmp_path / "requests.jsonl").write_text(json.dumps(_request(1.0, "GetObject")) + "\n")
    mark = log.mark()
    with open(tmp_path / "requests.jsonl", "a") as out:
        out.write(json.dumps(_request(2.0, "HeadObject")) + "\n")
    assert [r["op"] for r in log.since(mark)] == ["HeadObject"]
    assert [r["op"] for r in log.since(0)] == ["GetObject", "HeadObject"]


# --- the reference section (OpenShift's hard prune) ----------------------------------------


REFERENCE_OUTPUT = "\n".join(
    [
        'time="2026-12-04T21:30:06Z" level=warning msg="pullthrough can\'t be disabled anymore"',
        json.dumps({"level": "info", "msg": "start prune (dry-run mode)"}),
        json.dumps({"level": "info", "msg": "Would delete repository: gone/tool"}),
        json.dumps(
            {"level": "info", "msg": "Would delete manifest link: ns/app@sha256:" + "a" * 64}
        ),
        json.dumps({"level": "info", "msg": "Would delete manifest link: ns/x@sha256:" + "b" * 64}),
        json.dumps({"level": "info", "msg": "Would delete blob: sha256:" + "c" * 64}),
        json.dumps({"level": "info", "msg": "Would delete blob: sha256:" + "d" * 64}),
        "Would delete 2 blobs",
        "Would free up 1.5KiB of disk space",
        "Use -prune=delete to actually delete the data",
    ]
)


def test_reference_output_is_counted_from_the_interleaved_log() -> None:
    import reference_bench

    counts = reference_bench.reference_counts(REFERENCE_OUTPUT)
    assert counts == reference_bench.ReferenceCounts(2, 2, 1, 2, "1.5KiB")


def test_reference_section_reads_the_metadata_through_the_served_api(
    bench_run: ModuleType, tmp_path: Path
) -> None:
    """The generated dump is served as the API the reference reads, with the token and the
    address its environment names; its storage config points at the generated tree."""
    import urllib.request

    import reference_bench

    image = {
        "apiVersion": "image.openshift.io/v1",
        "kind": "Image",
        "metadata": {"name": "sha256:" + "a" * 64},
        "dockerImageReference": "r/ns/app@sha256:" + "a" * 64,
    }
    stream = {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {"namespace": "ns", "name": "app"},
        "status": {"tags": [{"tag": "v1", "items": [{"image": image["metadata"]["name"]}]}]},
    }
    dump = tmp_path / "metadata.json"
    dump.write_text(json.dumps({"kind": "List", "items": [image, stream]}))
    with reference_bench.served_metadata(dump) as api:
        env = reference_bench.reference_env(api)
        assert env["OPENSHIFT_MASTER"] == api.url and env["REGISTRY_OPENSHIFT_SERVER_ADDR"]
        request = urllib.request.Request(
            f"{env['OPENSHIFT_MASTER']}/apis/image.openshift.io/v1/namespaces/ns/imagestreams/app",
            headers={"Authorization": f"Bearer {env['BEARER_TOKEN']}"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            served = json.load(response)
        assert served["status"]["tags"][0]["items"][0]["image"] == image["metadata"]["name"]
        assert [i["metadata"]["name"] for i in api.images()] == [image["metadata"]["name"]]
    storage = reference_bench.fs_storage(tmp_path / "storage")
    config = reference_bench.reference_config(storage, tmp_path / "reference.yml")
    import yaml

    written = yaml.safe_load(config.read_text())
    assert written["storage"]["filesystem"] == {"rootdirectory": str(tmp_path / "storage")}
    assert reference_bench.prune_check_command(Path("/x/dockerregistry"), config) == [
        "/x/dockerregistry",
        "-prune=check",
        str(config),
    ]
    assert "reference" in bench_run.SECTIONS


def test_reference_section_fails_saying_how_to_build_the_binary(
    bench_run: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REGPRUNE_OPENSHIFT_REGISTRY", str(tmp_path / "absent"))
    with pytest.raises(RuntimeError, match=r"go build .* \./cmd/dockerregistry"):
        bench_run.reference(None)


def test_reference_comparison_explains_list_children_and_flags_the_rest() -> None:
    import reference_bench

    child, other = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    lst = "sha256:" + "3" * 64
    metadata = {
        "items": [
            {
                "kind": "Image",
                "metadata": {"name": lst},
                "dockerImageManifests": [{"digest": child}],
            },
            {
                "kind": "ImageStream",
                "metadata": {"namespace": "ns", "name": "m"},
                "status": {"tags": [{"tag": "t", "items": [{"image": lst}]}]},
            },
        ]
    }

    def line(msg: str) -> str:
        return json.dumps({"level": "info", "msg": msg})

    output = "\n".join(
        [line(f"Would delete manifest link: ns/m@{child}"), line("Would delete blob: " + other)]
    )
    report = {"blobs": [{"digest": other}], "manifest_links": [], "repositories": []}
    comparison = reference_bench.compare(output, report, metadata)
    assert comparison.explained() and comparison.list_children == 1
    output += "\n" + line(f"Would delete manifest link: ns/m@{other}")
    assert not reference_bench.compare(output, report, metadata).explained()
    assert not reference_bench.compare(output, {**report, "blobs": []}, metadata).same_blobs


def test_rm_files_removes_what_the_listing_names_and_nothing_else(tmp_path: Path) -> None:
    import rm_files

    for name in ("a/b/f1", "a/b/f2", "a/c/f3", "d/f4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    before = rm_files.tree(tmp_path)
    assert before == {"a/", "a/b/", "a/c/", "d/", "a/b/f1", "a/b/f2", "a/c/f3", "d/f4"}
    listing = tmp_path.parent / "listing.txt"
    listing.write_text("a/b/f1\na/b/f2\na/b/\na/c/f3\n")
    assert rm_files.remove(tmp_path, listing) == (3, 1)
    assert rm_files.tree(tmp_path) == {"a/", "a/c/", "d/", "d/f4"}


def test_oc_removals_are_read_from_its_output() -> None:
    import prune_images_oc

    text = (
        "Deleting 7 items from image stream ns0/s0\n"
        "Deleting 3 items from image stream ns1/s1\n"
        "Deleting image sha256:aa\nDeleting image sha256:bb\n"
        "Summary: deleted 2 objects\n"
    )
    assert prune_images_oc.oc_counts(text) == (10, 2)

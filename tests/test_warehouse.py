"""The warehouse and ``regprune sql``: the example queries of docs/warehouse.md over two
snapshots of a changing registry, answered through the command line and checked against
values computed here in plain Python from the run folders and the generator's ground truth.

The registry changes between the snapshots: a week later it has another namespace, other
images, and promoted tags (``stable``, ``prod``) pointing at images already tagged.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regprune.cli.main import EXIT_FAILURE, EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, main
from regprune.demo.synthetic import PruneTruth, SyntheticSpec, generate
from regprune.tables import SCHEMAS
from regprune.warehouse import WarehouseError, connect_warehouse, publish_run

QUERIES_PAGE = Path(__file__).resolve().parent.parent / "docs" / "warehouse.md"
WEEK = timedelta(days=7)
PROMOTED = ("stable", "prod")


# --- the documented queries --------------------------------------------------------------------


def documented_queries() -> dict[str, str]:
    """Every SQL statement of docs/warehouse.md, by its leading ``--`` title."""
    queries = {}
    for block in re.findall(r"```sql\n(.*?)```", QUERIES_PAGE.read_text(), re.S):
        for statement in block.split(";"):
            lines = statement.strip().splitlines()
            if lines:
                assert lines[0].startswith("-- "), f"documented query without a title: {lines[0]}"
                queries[lines[0].removeprefix("-- ")] = statement.strip()
    return queries


def sql_json(
    capsys: pytest.CaptureFixture[str], source: list[str], query: str
) -> list[dict[str, Any]]:
    """Run ``regprune sql`` as a user would and read its JSON answer."""
    capsys.readouterr()
    assert main(["sql", *source, "--format", "json", query]) == EXIT_OK, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


# --- the changing registry and its runs ------------------------------------------------------


@dataclass
class Snapshot:
    folder: Path
    truth: PruneTruth
    date: str


@dataclass
class Registry:
    before: Snapshot
    after: Snapshot
    after_storage: Path
    after_metadata: Path


def table(folder: Path, name: str) -> list[dict[str, Any]]:
    return pq.read_table(folder / f"{name}.parquet").to_pylist()


def promote_tags(metadata: Path) -> None:
    """Tag the current image of some streams again, as a release promotion does."""
    dump = json.loads(metadata.read_text())
    streams = [item for item in dump["items"] if item["kind"] == "ImageStream"]
    for count, stream in zip((2, 1, 1), streams[:3], strict=True):
        current = stream["status"]["tags"][0]["items"][0]
        for tag in PROMOTED[:count]:
            stream["status"]["tags"].append({"tag": tag, "items": [dict(current)]})
    metadata.write_text(json.dumps(dump))


def shift_back(folder: Path, delta: timedelta) -> None:
    """The first snapshot was taken a week ago: its recorded times say so."""
    path = folder / "snapshot.json"
    summary = json.loads(path.read_text())
    for key in ("metadata_started_at", "storage_started_at", "finished_at"):
        summary[key] = (datetime.fromisoformat(summary[key]) - delta).isoformat()
    path.write_text(json.dumps(summary, indent=2) + "\n")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Registry:
    """Week 1: a registry generated a week ago, snapshotted then (times shifted back).
    Week 2: the registry changed (another namespace, other images, promoted tags)."""
    base = tmp_path_factory.mktemp("changing-registry")
    week_ago = datetime.now(UTC) - WEEK
    before_truth = generate(
        base / "before-storage", SyntheticSpec.demo(seed=1), base / "before.json", now=week_ago
    )
    before = base / "before-run"
    args = ["--storage", str(base / "before-storage"), "--metadata", str(base / "before.json")]
    assert main(["snapshot", *args, "--out", str(before)]) == EXIT_OK
    shift_back(before, WEEK)
    after_truth = generate(
        base / "after-storage",
        SyntheticSpec(namespaces=4, streams_per_namespace=3, seed=2),
        base / "after.json",
    )
    promote_tags(base / "after.json")
    started = json.loads((before / "snapshot.json").read_text())["metadata_started_at"]
    return Registry(
        Snapshot(before, before_truth.prune, datetime.fromisoformat(started).date().isoformat()),
        Snapshot(base / "after-run", after_truth.prune, datetime.now(UTC).date().isoformat()),
        base / "after-storage",
        base / "after.json",
    )


def publish_history(registry: Registry, warehouse: str, fresh_after: bool) -> None:
    """Week 1's prune from its snapshot; week 2's prune (a fresh snapshot, or the folder
    again) and a check of the same snapshot: three runs on two dates."""
    before, after = str(registry.before.folder), str(registry.after.folder)
    grace = ["--keep-younger-than", "0s", "--warehouse", warehouse]
    assert main(["prune", "--snapshot", before, *grace]) == EXIT_OK
    if fresh_after:
        source = ["--storage", str(registry.after_storage), "--metadata"]
        source += [str(registry.after_metadata), "--out", after]
    else:
        source = ["--snapshot", after]
    assert main(["prune", *source, *grace]) == EXIT_OK
    check = main(["check", "--snapshot", after, "--warehouse", warehouse])
    assert check in (EXIT_OK, EXIT_FINDINGS)


@pytest.fixture(scope="module")
def local_warehouse(registry: Registry) -> str:
    warehouse = str(registry.before.folder.parent / "warehouse")
    publish_history(registry, warehouse, fresh_after=True)
    return warehouse


# --- answers computed here -------------------------------------------------------------------


def published_runs(warehouse: str) -> set[tuple[str, str]]:
    """(snapshot_date, run) of every run, from a plain listing of the ``runs`` folder."""
    fs, root = fsspec.core.url_to_fs(warehouse)
    found = set()
    for path in fs.glob(f"{root}/runs/*/*/runs.parquet"):
        date, run = path.split("/")[-3:-1]
        found.add((date.removeprefix("snapshot_date="), run.removeprefix("run=")))
    return found


def reclaimable_by_namespace(folder: Path, truth: PruneTruth) -> dict[str, int]:
    """The generator's orphan blobs, each split evenly between the namespaces linking it,
    plus the stale uploads' bytes."""
    namespaces = {r["repository"]: r["namespace"] for r in table(folder, "repositories")}
    sizes = {b["digest"]: b["size"] for b in table(folder, "blobs")}
    linked: dict[str, set[str | None]] = defaultdict(set)
    for link in table(folder, "layer_links") + table(folder, "manifest_links"):
        if link["repository"] in namespaces:
            linked[link["digest"]].add(namespaces[link["repository"]])
    shares: dict[str | None, float] = defaultdict(float)
    for digest in truth.orphan_blobs:
        owners = linked.get(digest) or {None}
        for namespace in owners:
            shares[namespace] += sizes[digest] / len(owners)
    upload_sizes = {(u["repository"], u["upload_id"]): u["size"] for u in table(folder, "uploads")}
    for upload in truth.stale_uploads:
        shares[namespaces[upload.repository]] += upload_sizes[(upload.repository, upload.upload_id)]
    return {ns or "(not linked)": round(size) for ns, size in shares.items()}


def close_enough(got: dict[str, int], want: dict[str, int]) -> None:
    """Equal up to the rounding of split bytes; a namespace with only link deletions has a
    row of 0 bytes."""
    assert set(want) <= set(got), (got, want)
    for namespace in set(got) | set(want):
        assert abs(got.get(namespace, 0) - want.get(namespace, 0)) <= 1, (namespace, got, want)


def stored(folder: Path) -> dict[str, int]:
    blobs = table(folder, "blobs")
    return {"blobs": len(blobs), "bytes": sum(b["size"] for b in blobs)}


def biggest_streams(folder: Path) -> list[dict[str, Any]]:
    tags = table(folder, "imagestream_tags")
    blobs = table(folder, "image_blobs")
    children = defaultdict(set)
    layers: dict[str, dict[str, int]] = defaultdict(dict)
    for blob in blobs:
        if blob["kind"] == "manifest_list_child":
            children[blob["image"]].add(blob["digest"])
        elif blob["kind"] == "layer":
            layers[blob["image"]][blob["digest"]] = blob["size"]
    streams: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for tag in tags:
        if tag["position"] == 0:
            for image in {tag["image"], *children[tag["image"]]}:
                streams[(tag["namespace"], tag["name"])].update(layers[image])
    rows = [
        {"namespace": ns, "name": name, "bytes": sum(found.values()), "layers": len(found)}
        for (ns, name), found in streams.items()
        if found
    ]
    return sorted(rows, key=lambda r: (-r["bytes"], r["namespace"], r["name"]))[:10]


def most_tagged(folder: Path) -> list[dict[str, Any]]:
    tagged = defaultdict(list)
    for tag in table(folder, "imagestream_tags"):
        if tag["position"] == 0:
            tagged[tag["image"]].append((tag["namespace"], tag["name"], tag["tag"]))
    rows = [
        {
            "image": image,
            "tags": len(refs),
            "tagged_as": " ".join(f"{ns}/{name}:{tag}" for ns, name, tag in sorted(refs)),
        }
        for image, refs in tagged.items()
    ]
    return sorted(rows, key=lambda r: (-r["tags"], r["image"]))[:10]


def most_shared(folder: Path) -> list[dict[str, Any]]:
    images, sizes = defaultdict(set), defaultdict(int)
    for blob in table(folder, "image_blobs"):
        if blob["kind"] == "layer":
            images[blob["digest"]].add(blob["image"])
            sizes[blob["digest"]] = max(sizes[blob["digest"]], blob["size"] or 0)
    rows = [{"digest": d, "images": len(i), "size": sizes[d]} for d, i in images.items()]
    return sorted(rows, key=lambda r: (-r["images"], r["digest"]))[:10]


def check_answers(
    capsys: pytest.CaptureFixture[str], registry: Registry, warehouse: str
) -> set[str]:
    """Run every documented query over ``warehouse`` and compare; returns the titles checked."""
    before, after = registry.before, registry.after
    runs = published_runs(warehouse)
    assert {date for date, _ in runs} == {before.date, after.date}
    assert len(runs) == 3  # week 1's prune; week 2's prune and check
    folders = {before.date: before.folder, after.date: after.folder}
    source = ["--warehouse", warehouse]
    checked = set()
    for title, query in documented_queries().items():
        if "'snap/" in query or "'warehouse/" in query:
            continue
        rows = sql_json(capsys, source, query)
        checked.add(title)
        if title == "reclaimable bytes per namespace over time":
            by_run = defaultdict(dict)
            for row in rows:
                by_run[(row["snapshot_date"], row["run"])][row["namespace"]] = row["reclaimable"]
            assert {date for date, _ in by_run} == {before.date, after.date}
            assert set(by_run) <= runs
            for (date, _), got in by_run.items():
                snapshot = before if date == before.date else after
                close_enough(got, reclaimable_by_namespace(snapshot.folder, snapshot.truth))
            assert "ns-0003" in by_run[max(by_run)]  # the namespace added in week 2
            assert "ns-0003" not in by_run[min(by_run)]
        elif title == "stored blobs and bytes per run":
            assert {(r["snapshot_date"], r["run"]) for r in rows} == runs
            for row in rows:
                want = stored(folders[row["snapshot_date"]])
                assert {"blobs": row["blobs"], "bytes": row["bytes"]} == want
        elif title.startswith("the biggest image streams"):
            assert rows == biggest_streams(after.folder)
            assert rows != biggest_streams(before.folder)  # latest means week 2
        elif title.startswith("images with the most tags"):
            assert rows == most_tagged(after.folder)
            assert rows[0]["tags"] >= 1 + len(PROMOTED)
        elif title == "blobs shared by the most images":
            assert rows == most_shared(after.folder)
        else:
            pytest.fail(f"documented query {title!r} has no check here: add one")
    return checked


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.slow
def test_documented_queries_over_a_local_warehouse(
    registry: Registry, local_warehouse: str, capsys: pytest.CaptureFixture[str]
) -> None:
    checked = check_answers(capsys, registry, local_warehouse)
    assert len(checked) == 5, checked


@pytest.mark.slow
def test_documented_plain_duckdb_queries(registry: Registry, local_warehouse: str) -> None:
    """The plain-DuckDB examples of docs/warehouse.md, on the week-2 folder and the warehouse
    folder."""
    plain = {t: q for t, q in documented_queries().items() if "'snap/" in q or "'warehouse/" in q}
    assert len(plain) == 2
    after = registry.after
    for title, query in plain.items():
        query = query.replace("'snap/", f"'{after.folder}/")
        query = query.replace("'warehouse/", f"'{local_warehouse}/")
        with duckdb.connect() as con:
            cursor = con.execute(query)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        if "one snapshot" in title:
            want = reclaimable_by_namespace(after.folder, after.truth)
            close_enough({r["namespace"] or "(not linked)": r["size"] for r in rows}, want)
        else:
            assert {(r["snapshot_date"].isoformat(), r["run"]) for r in rows} == published_runs(
                local_warehouse
            )


@pytest.mark.slow
def test_documented_queries_over_an_s3_warehouse(
    registry: Registry,
    local_warehouse: str,
    moto: Any,
    s3_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same history published to S3 (moto) by the flows, read back through s3fs."""
    bucket = moto.create_bucket(f"warehouse-{os.getpid()}-{int(time.time())}")
    warehouse = f"s3://{bucket}/regprune"
    publish_history(registry, warehouse, fresh_after=False)
    assert moto.client().list_objects_v2(Bucket=bucket, Prefix="regprune/runs/")["KeyCount"] == 3
    checked = check_answers(capsys, registry, warehouse)
    assert len(checked) == 5, checked


@pytest.mark.slow
def test_snapshot_command_publishes_the_snapshot_tables(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = str(tmp_path / "warehouse")
    source = ["--storage", str(registry.after_storage), "--metadata", str(registry.after_metadata)]
    out = ["--out", str(tmp_path / "snap"), "--warehouse", warehouse]
    assert main(["snapshot", *source, *out]) == EXIT_OK
    rows = sql_json(capsys, ["--warehouse", warehouse], "SELECT command, tables FROM runs")
    assert len(rows) == 1 and rows[0]["command"] == "snapshot"
    assert sorted(rows[0]["tables"]) == sorted(
        p.stem for p in (tmp_path / "snap").glob("*.parquet")
    )


# --- publishing rules and the command, on a tiny hand-made run folder ------------------------


def tiny_run(folder: Path, started: datetime, sizes: list[int]) -> Path:
    """A run folder with a ``blobs`` table and ``snapshot.json``, as a snapshot leaves it."""
    folder.mkdir(parents=True)
    blobs = [
        {"digest": f"sha256:{i:064x}", "size": s, "modified": started} for i, s in enumerate(sizes)
    ]
    pq.write_table(pa.Table.from_pylist(blobs, schema=SCHEMAS["blobs"]), folder / "blobs.parquet")
    summary = {
        "tool": "regprune",
        "storage": "/registry",
        "metadata": "dump.json",
        "metadata_started_at": started.isoformat(),
        "storage_started_at": started.isoformat(),
        "finished_at": started.isoformat(),
        "duration_seconds": 1.0,
    }
    (folder / "snapshot.json").write_text(json.dumps(summary))
    return folder


JAN = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)


def test_a_run_id_that_exists_is_refused_and_nothing_is_overwritten(tmp_path: Path) -> None:
    warehouse = str(tmp_path / "wh")
    publish_run(tiny_run(tmp_path / "a", JAN, [10, 20]), warehouse, "snapshot", run_id="r1")
    published = tmp_path / "wh/blobs/snapshot_date=2026-01-05/run=r1/blobs.parquet"
    before = published.read_bytes()
    with pytest.raises(WarehouseError, match="already exists"):
        publish_run(tiny_run(tmp_path / "b", JAN, [99]), warehouse, "snapshot", run_id="r1")
    assert published.read_bytes() == before
    second = publish_run(tmp_path / "b", warehouse, "snapshot")
    assert second["run"].startswith("20260105T030000Z-")
    assert second["snapshot_date"] == "2026-01-05"


def test_views_span_complete_runs_and_latest_is_the_newest(tmp_path: Path) -> None:
    warehouse = str(tmp_path / "wh")
    publish_run(tiny_run(tmp_path / "a", JAN, [10, 20]), warehouse, "prune")
    newer = publish_run(tiny_run(tmp_path / "b", JAN + WEEK, [5]), warehouse, "prune")
    died = publish_run(tiny_run(tmp_path / "c", JAN + 2 * WEEK, [7]), warehouse, "prune")
    partition = f"snapshot_date={died['snapshot_date']}/run={died['run']}"
    (tmp_path / "wh/runs" / partition / "runs.parquet").unlink()  # as if the publish died
    with duckdb.connect() as con:
        assert sorted(connect_warehouse(warehouse, con)) == ["blobs", "runs"]
        totals = con.execute(
            "SELECT snapshot_date::VARCHAR, sum(size) FROM blobs GROUP BY ALL ORDER BY 1"
        ).fetchall()
        assert totals == [("2026-01-05", 30), ("2026-01-12", 5)]
        latest = con.execute("SELECT run, size FROM latest.blobs").fetchall()
        assert latest == [(newer["run"], 5)]


def test_latest_is_one_run_even_when_the_newest_prune_is_older_than_the_newest_check(
    tmp_path: Path,
) -> None:
    """latest.<table> is the newest run alone: a table it lacks is empty, never an older
    run's; latest_<command>.<table> is the newest run of that command."""
    warehouse = str(tmp_path / "wh")
    pruned = tiny_run(tmp_path / "a", JAN, [10, 20])
    pq.write_table(
        pa.table({"namespace": ["ns"], "size": [30]}), pruned / "plan_namespaces.parquet"
    )
    prune = publish_run(pruned, warehouse, "prune")
    check = publish_run(tiny_run(tmp_path / "b", JAN + WEEK, [5]), warehouse, "check")
    with duckdb.connect() as con:
        connect_warehouse(warehouse, con)
        assert con.execute("SELECT run, size FROM latest.blobs").fetchall() == [(check["run"], 5)]
        assert con.execute("SELECT * FROM latest.plan_namespaces").fetchall() == []
        assert con.execute("SELECT run, command FROM latest.runs").fetchall() == [
            (check["run"], "check")
        ]
        prune_views = "SELECT DISTINCT run FROM latest_prune.{}"
        for table in ("blobs", "plan_namespaces", "runs"):
            assert con.execute(prune_views.format(table)).fetchall() == [(prune["run"],)]
        assert con.execute("SELECT run FROM latest_check.blobs").fetchall() == [(check["run"],)]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/wh", "use a local folder"),
        ("s3://", "names no bucket"),
        ("s3://key:secret@bucket/wh", "credentials"),
    ],
)
def test_a_bad_warehouse_url_is_a_usage_error(
    url: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["sql", "--warehouse", url, "SELECT 1"],
        ["snapshot", "--out", "x", "--warehouse", url],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == EXIT_USAGE
        assert message in capsys.readouterr().err


def test_sql_output_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tiny_run(tmp_path / "run", JAN, [10, 20, 30])
    query = "SELECT size, size > 15 AS big FROM blobs ORDER BY size"
    source = ["--snapshot", str(run)]
    assert main(["sql", *source, query]) == EXIT_OK
    table_lines = capsys.readouterr().out.splitlines()
    assert table_lines[0].split() == ["size", "big"]
    assert [line.split() for line in table_lines[2:5]] == [
        ["10", "false"],
        ["20", "true"],
        ["30", "true"],
    ]
    assert table_lines[-1] == "(3 rows)"
    assert main(["sql", *source, "--format", "csv", query]) == EXIT_OK
    assert capsys.readouterr().out == "size,big\n10,false\n20,true\n30,true\n"
    assert main(["sql", *source, "--format", "json", "SELECT 'a' AS s, NULL AS n"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == [{"s": "a", "n": None}]
    out = tmp_path / "out.parquet"
    assert main(["sql", *source, "--format", "parquet", "--output", str(out), query]) == EXIT_OK
    assert pq.read_table(out).to_pylist()[0] == {"size": 10, "big": False}


def test_sql_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tiny_run(tmp_path / "run", JAN, [10])
    source = ["--snapshot", str(run)]
    assert main(["sql", *source, "--format", "parquet", "SELECT 1"]) == EXIT_USAGE
    assert "--output" in capsys.readouterr().err
    assert main(["sql", *source, "SELEC 1"]) == EXIT_FAILURE
    assert "syntax error" in capsys.readouterr().err
    assert main(["sql", *source, "SELECT * FROM nothing_here"]) == EXIT_FAILURE
    assert "nothing_here" in capsys.readouterr().err
    assert main(["sql", "--warehouse", str(tmp_path / "none"), "SELECT 1"]) == EXIT_FAILURE
    assert "no warehouse at" in capsys.readouterr().err


def regprune_sql(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "regprune.cli.main", "sql", *args]
    return subprocess.run(command, capture_output=True, timeout=120, check=False, **kwargs)


def test_without_a_query_and_a_terminal_the_views_are_listed(tmp_path: Path) -> None:
    run = tiny_run(tmp_path / "run", JAN, [10])
    done = regprune_sql(["--snapshot", str(run)], stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0].split() == ["blobs", "digest,", "size,", "modified"]
    assert "latest.<name>" in lines[-1]


def test_interactive_prompt_on_a_terminal(tmp_path: Path) -> None:
    import pty

    run = tiny_run(tmp_path / "run", JAN, [10, 32])
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "regprune.cli.main", "sql", "--snapshot", str(run)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    typed = "SELECT sum(size)\n  AS total FROM blobs;\nSELEC 1;\n.tables\n.quit\n"
    os.write(controller, typed.encode())
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not select.select([controller], [], [], 1)[0]:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the program left and closed the terminal
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=30)
    os.close(controller)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert "regprune>" in text and "...>" in text
    assert re.search(r"total\r?\n-+\r?\n\s*42\r?\n", text), text
    assert "Error:" in text and "syntax error" in text
    assert "blobs  digest, size, modified" in text

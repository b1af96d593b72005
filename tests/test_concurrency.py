"""Concurrency: two deleting runs on one storage, and pushes while a prune deletes.

* Two runs at once: the storage's lock (regprune/lock.py) makes the second ``prune --confirm``
  refuse before it deletes anything, naming the run that holds it. A lock whose process is
  gone (killed on this host) is taken over; one left on another host needs --force-unlock.
  The lock object is created atomically: racing threads, on a folder and on S3, get exactly
  one winner.
* Pushes while a prune runs against the real registry (``--keep-younger-than 0s``): every
  image pushed during the run still pulls afterwards, including pushes that reuse the very
  blobs the plan deletes and pushes into a repository planned for deletion.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import EXIT_FAILURE, EXIT_OK, main
from regprune.demo.synthetic import SyntheticSpec, generate
from regprune.lock import LOCK_KEY, LockHolder, StorageLock, StorageLocked
from regprune.storage import StorageSpec, open_storage
from tests.conftest import imagestream, rows, write_dump
from tests.harness.drift import HOST
from tests.harness.registry_bench import (
    MotoServer,
    OciLayouts,
    Registry,
    assert_pulls,
    push,
    upload_blob_without_manifest,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

SPEC = SyntheticSpec(namespaces=1, streams_per_namespace=2, tags_per_stream=2, history_per_tag=2)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def registry(tmp_path: Path) -> dict[str, Path]:
    root, dump = tmp_path / "registry", tmp_path / "metadata.json"
    generate(root, SPEC, dump)
    return {"root": root, "dump": dump}


def prune_args(registry: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "prune",
        "--storage",
        str(registry["root"]),
        "--metadata",
        str(registry["dump"]),
        "--out",
        str(out),
        "--confirm",
        *extra,
    ]


@pytest.fixture
def holder(registry: dict[str, Path]) -> Iterator[subprocess.Popen[str]]:
    """Another regprune process holding the lock of ``registry`` (until it is stopped)."""
    script = (
        "import sys\n"
        "from regprune.lock import StorageLock\n"
        "from regprune.storage import StorageSpec\n"
        f"StorageLock(StorageSpec({str(registry['root'])!r}), 'other-run').acquire()\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_second_run_refuses_while_another_holds_the_lock(
    registry: dict[str, Path],
    holder: subprocess.Popen[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = files(registry["root"])
    assert main(prune_args(registry, tmp_path / "second")) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "is locked by another regprune run" in err
    assert f"run other-run on host {socket.gethostname()}, pid {holder.pid}" in err
    assert "--force-unlock" in err
    assert files(registry["root"]) == before  # nothing deleted, the lock left as it was
    assert not (tmp_path / "second" / "actions.parquet").exists()

    holder.kill()  # killed: its lock stays behind, its process is gone
    holder.wait()
    assert (registry["root"] / LOCK_KEY).exists()
    report = tmp_path / "third.json"
    assert main([*prune_args(registry, tmp_path / "third"), "--report", str(report)]) == EXIT_OK
    assert json.loads(report.read_text())["summary"]["blobs"]["delete"] > 0
    assert files(registry["root"]) != before
    assert not (registry["root"] / LOCK_KEY).exists()  # released at the end


def test_a_lock_left_on_another_host_needs_force_unlock(
    registry: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = LockHolder(
        run_id="20260101T030000000000",
        host="regprune-nightly-gc-7d9f",
        pid=1,
        started_at="2026-01-01T03:00:00+00:00",
        flow_run_id="0b1c2d3e-flow-run",
        run_dir="regprune-runs/prune-20260101T030000Z",
    )
    lock = registry["root"] / LOCK_KEY
    lock.parent.mkdir()
    lock.write_bytes(elsewhere.encode())
    before = files(registry["root"])
    assert main(prune_args(registry, tmp_path / "refused")) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "host regprune-nightly-gc-7d9f, pid 1" in err
    assert "Prefect flow run 0b1c2d3e-flow-run" in err
    assert files(registry["root"]) == before

    assert main([*prune_args(registry, tmp_path / "forced"), "--force-unlock"]) == EXIT_OK
    assert files(registry["root"]) != before and not lock.exists()


def test_force_flags_go_with_confirm(
    registry: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["prune", "--storage", str(registry["root"]), "--metadata", str(registry["dump"])]
    for flag in ("--force", "--force-unlock"):
        assert main([*args, flag]) == 2
        assert f"{flag} goes with --confirm or --resume" in capsys.readouterr().err


def race(spec: StorageSpec, contenders: int) -> list[str]:
    """``contenders`` threads try to take the lock at once; returns the winners' run ids."""
    start = threading.Barrier(contenders)

    def contend(n: int) -> str | None:
        lock = StorageLock(spec, f"run-{n}")
        start.wait()
        try:
            lock.acquire()
        except StorageLocked:
            return None
        return f"run-{n}"

    with ThreadPoolExecutor(contenders) as pool:
        outcome = list(pool.map(contend, range(contenders)))
    return [winner for winner in outcome if winner]


def test_the_lock_has_one_winner_on_a_folder(tmp_path: Path) -> None:
    spec = StorageSpec(str(tmp_path))
    for _ in range(5):
        winners = race(spec, 8)
        assert len(winners) == 1
        holder = LockHolder.decode(open_storage(spec).lock_read(LOCK_KEY) or b"")
        assert holder is not None and holder.run_id == winners[0]
        open_storage(spec).lock_remove(LOCK_KEY)


def test_the_lock_has_one_winner_on_s3(moto: MotoServer, s3_env: dict[str, str]) -> None:
    """A conditional PUT (If-None-Match: *): moto answers 412 to all but the first."""
    bucket = moto.create_bucket(f"lock-race-{os.getpid()}")
    spec = StorageSpec(f"s3://{bucket}/registry")
    for _ in range(3):
        winners = race(spec, 6)
        assert len(winners) == 1
        holder = LockHolder.decode(open_storage(spec).lock_read(LOCK_KEY) or b"")
        assert holder is not None and holder.run_id == winners[0]
        keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == [f"registry/{LOCK_KEY}"]
        open_storage(spec).lock_remove(LOCK_KEY)


# --- pushes during a prune ------------------------------------------------------------------

PUSHES_WHILE_PLANNING = (
    ("app-v1", "ns/app:again"),  # the deleted Image's blobs, into the repository they are in
    ("base", "gone/tool:back"),  # into a repository planned for deletion
    ("multi", "ns/newlist:1"),
)
PUSHES_WHILE_DELETING = (
    ("tool", "ns/fresh:1"),  # blobs planned for deletion, into a new repository
    ("tool", "gone/tool:again"),  # ... and into the repository they are linked in
    ("app-v1", "ns/fresh:2"),
)


def test_images_pushed_during_a_prune_still_pull(
    registry_fs: Registry, oci_layouts: OciLayouts, tmp_path: Path
) -> None:
    before = {
        "app-v1": push(registry_fs, *oci_layouts["app-v1"], "ns/app:v1"),
        "app-v2": push(registry_fs, *oci_layouts["app-v2"], "ns/app:v2"),
        "multi": push(registry_fs, *oci_layouts["multi"], "ns/multi:latest"),
        "base": push(registry_fs, *oci_layouts["base"], "ns/base:1"),
        "tool": push(registry_fs, *oci_layouts["tool"], "gone/tool:1"),
    }
    abandoned = [  # garbage no push reuses: the prune has something to delete
        upload_blob_without_manifest(registry_fs, "ns/app", f"abandoned {n}".encode())
        for n in range(3)
    ]
    items: list[dict[str, Any]] = []  # app-v1 and tool (and gone/tool) left the metadata
    for name in ("app-v2", "multi", "base"):
        items += before[name].openshift_images(HOST)
    items += [
        imagestream("ns", "app", {"v2": [before["app-v2"].digest]}, HOST),
        imagestream("ns", "multi", {"latest": [before["multi"].digest]}, HOST),
        imagestream("ns", "base", {"1": [before["base"].digest]}, HOST),
    ]
    dump = write_dump(tmp_path / "dump.json", items)

    run = tmp_path / "run"
    pushed: list[tuple[str, float]] = []
    errors: list[BaseException] = []

    def pusher(start: str, pushes: tuple[tuple[str, str], ...]) -> None:
        """Push once the run has reached ``start``: the snapshot (its _parts folder) or the
        deletion (the re-read before phase 1). Not earlier: with a dump, the metadata's time
        is when the snapshot reads it (docs/reliability.md, known limits)."""
        deadline = time.monotonic() + 120
        while not (run / start).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        for name, ref in pushes:
            try:
                push(registry_fs, *oci_layouts[name], ref)
                pushed.append((ref, time.time()))
            except BaseException as exc:  # reported after the run
                errors.append(exc)
            time.sleep(0.2)

    threads = [
        threading.Thread(target=pusher, args=("_parts", PUSHES_WHILE_PLANNING)),
        threading.Thread(target=pusher, args=("recheck-phase1", PUSHES_WHILE_DELETING)),
    ]
    for thread in threads:
        thread.start()
    args = ["prune", "--storage", registry_fs.storage_url, "--metadata", str(dump)]
    args += ["--out", str(run), "--confirm"]
    args += ["--keep-younger-than", "0s", "--registry-url", registry_fs.base_url]
    try:
        code = main(args)
    finally:
        for thread in threads:
            thread.join()
    started = json.loads((run / "snapshot.json").read_text())["metadata_started_at"]
    actions = rows(run / "actions.parquet")
    times = sorted(r["time"].isoformat()[11:23] for r in actions)
    done = [(ref, datetime.fromtimestamp(t, UTC).isoformat()[11:23]) for ref, t in pushed]
    skipped = sorted({r["reason"] for r in actions if r["status"] == "skipped"})
    print(f"snapshot {started[11:23]}, deleting {times[0]}-{times[-1]}, pushes done {done}")
    print(f"skipped because: {skipped}")
    assert not errors, errors
    assert code == EXIT_OK and len(pushed) == len(PUSHES_WHILE_PLANNING + PUSHES_WHILE_DELETING)
    deleted = {r["digest"] for r in actions if r["status"] == "quarantined"}
    assert set(abandoned) <= deleted  # the prune did delete
    for ref, _ in pushed:
        assert_pulls(registry_fs, ref)
    for ref in ("ns/app:v2", "ns/multi:latest", "ns/base:1"):
        assert_pulls(registry_fs, ref)

#!/usr/bin/env python3
"""Bench: the hard prune's deleting phase, two-phase (files moved into the run's quarantine;
purged by a later run) against the direct delete it replaced, on a folder and on S3 (moto).

    python bench/twophase_delete.py [--blobs 10000] [--s3-blobs 1000] [--repeat 3]

Why this level: a confirmed prune's executor is the same code in both (the re-read, the audit
trail written ahead, one round per ``BATCH_SIZE`` actions); what changed is the storage call of
each round — ``Storage.delete_many`` then, ``Storage.quarantine_many`` now, and
``Storage.purge_many`` of the quarantine one retention later. So this times those calls, in
rounds of ``regprune/prune_execute.py`` ``BATCH_SIZE`` keys, on the same files: each blob's ``data``
and a layer link to it (``--blobs`` of each), a fresh copy per run (``cp -al`` of one tree; on
S3 a new root written straight to moto, not timed). Variants alternate within each repeat
(direct, two-phase, direct, ...), so the ratios are of runs made side by side.

Per run: wall seconds, CPU seconds of this process (user+sys: the client), of moto (S3: the
server's work is most of an object store's cost here), and on S3 the requests that reached the
server by operation (bench/s3count.py in front of moto). Prints one JSON line per run, then the
medians and ratios (two-phase ÷ direct: the moves alone, and the moves plus the purge).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from regprune.layout import new_quarantine_id  # noqa: E402
from regprune.prune_execute import BATCH_SIZE  # noqa: E402
from regprune.storage import StorageSpec  # noqa: E402
from regprune.storage.config import open_storage  # noqa: E402

MOTO = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def keys(blobs: int) -> list[str]:
    """Each blob's data file and a layer link to it (relative to docker/registry/v2)."""
    out = []
    for i in range(blobs):
        digest = hashlib.sha256(str(i).encode()).hexdigest()
        out.append(f"blobs/sha256/{digest[:2]}/{digest}/data")
        out.append(f"repositories/ns{i % 50}/app/_layers/sha256/{digest}/link")
    return out


def rounds(all_keys: list[str]) -> list[list[str]]:
    return [all_keys[i : i + BATCH_SIZE] for i in range(0, len(all_keys), BATCH_SIZE)]


def timed(step: Callable[[], None], server: psutil.Process | None) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    server_cpu = sum(server.cpu_times()[:2]) if server else 0.0
    step()
    out = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    if server:
        out["server_cpu_s"] = sum(server.cpu_times()[:2]) - server_cpu
    return out


def run_variant(
    storage: Any, variant: str, all_keys: list[str], server: psutil.Process | None, counts: Any
) -> dict[str, Any]:
    """The deleting phase of one variant over ``all_keys``; every key checked gone after."""
    batches = rounds(all_keys)
    qid = new_quarantine_id(datetime.now(UTC))
    steps: dict[str, Any] = {}

    def check(outcomes: dict[str, Any], ok: set[Any]) -> None:
        bad = {k: v for k, v in outcomes.items() if v not in ok}
        if bad:
            raise SystemExit(f"{variant}: {len(bad)} keys failed, e.g. {next(iter(bad.items()))}")

    if variant == "direct":

        def delete() -> None:
            for batch in batches:
                check(storage.delete_many(batch), {None})

        counts(reset=True)
        steps["delete"] = timed(delete, server) | {"requests": counts(reset=True)}
    else:

        def move() -> None:
            for batch in batches:
                check(storage.quarantine_many(qid, batch), {"moved"})

        def purge() -> None:
            for batch in batches:
                check(storage.purge_many(qid, batch), {"deleted"})

        counts(reset=True)
        steps["move"] = timed(move, server) | {"requests": counts(reset=True)}
        steps["purge"] = timed(purge, server) | {"requests": counts(reset=True)}
    left = storage.stat_many(all_keys[:: max(1, len(all_keys) // 200)])
    if any(left.values()):
        raise SystemExit(f"{variant}: keys still there after the run")
    return steps


# --- a folder ---------------------------------------------------------------------------------


def folder_runs(blobs: int, repeat: int, work: Path) -> Iterator[dict[str, Any]]:
    template = work / "template"
    all_keys = keys(blobs)
    v2 = template / "docker/registry/v2"
    for key in all_keys:
        path = v2 / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 64)
    for n in range(repeat):
        for variant in ("direct", "two-phase") if n % 2 == 0 else ("two-phase", "direct"):
            root = work / f"run-{n}-{variant}"
            subprocess.run(["cp", "-al", str(template), str(root)], check=True)
            storage = open_storage(StorageSpec(str(root)))
            load = os.getloadavg()[0]
            steps = run_variant(storage, variant, all_keys, None, lambda reset: {})
            shutil.rmtree(root)
            yield {
                "storage": "folder",
                "blobs": blobs,
                "repeat": n,
                "variant": variant,
                "load": [load, os.getloadavg()[0]],
                **steps,
            }


# --- S3 on moto -------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            NO_PROXY.open(url, timeout=5).read()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@contextlib.contextmanager
def s3_endpoint(work: Path) -> Iterator[tuple[str, str, psutil.Process]]:
    """moto_server and bench/s3count.py in front of it: (moto URL, proxy URL, moto)."""
    moto_port, proxy_port = free_port(), free_port()
    procs = []
    try:
        with open(work / "moto.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                    env=os.environ | MOTO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        moto = f"http://127.0.0.1:{moto_port}"
        wait_http(f"{moto}/moto-api/")
        with open(work / "proxy.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(BENCH / "s3count.py"),
                        "--port",
                        str(proxy_port),
                        "--upstream",
                        moto,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        proxy = f"http://127.0.0.1:{proxy_port}"
        wait_http(f"{proxy}/__s3count__")
        yield moto, proxy, psutil.Process(procs[0].pid)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def s3_runs(blobs: int, repeat: int, work: Path) -> Iterator[dict[str, Any]]:
    import boto3

    all_keys = keys(blobs)
    with s3_endpoint(work) as (moto, proxy, server):
        os.environ.update(MOTO | {"AWS_ENDPOINT_URL": proxy})
        client = boto3.client("s3", endpoint_url=moto, **_boto_credentials())
        client.create_bucket(Bucket="bench")

        def counts(reset: bool) -> dict[str, int]:
            request = urllib.request.Request(
                f"{proxy}/__s3count__", method="DELETE" if reset else "GET"
            )
            return json.loads(NO_PROXY.open(request, timeout=30).read())["requests"]

        for n in range(repeat):
            for variant in ("direct", "two-phase") if n % 2 == 0 else ("two-phase", "direct"):
                root = f"run-{n}-{variant}"

                def put(key: str, root: str = root) -> None:
                    client.put_object(
                        Bucket="bench", Key=f"{root}/docker/registry/v2/{key}", Body=b"x" * 64
                    )

                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(put, all_keys))
                storage = open_storage(StorageSpec(f"s3://bench/{root}"))
                load = os.getloadavg()[0]
                steps = run_variant(storage, variant, all_keys, server, counts)
                yield {
                    "storage": "s3",
                    "blobs": blobs,
                    "repeat": n,
                    "variant": variant,
                    "load": [load, os.getloadavg()[0]],
                    **steps,
                }


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": MOTO["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": MOTO["AWS_SECRET_ACCESS_KEY"],
        "region_name": MOTO["AWS_REGION"],
    }


# --- summary ----------------------------------------------------------------------------------


def summary(rows: list[dict[str, Any]]) -> None:
    for storage in sorted({r["storage"] for r in rows}):
        mine = [r for r in rows if r["storage"] == storage]

        def median(variant: str, step: str, what: str, mine: list = mine) -> float:
            return statistics.median(r[step][what] for r in mine if r["variant"] == variant)

        files = 2 * mine[0]["blobs"]
        loads = [x for r in mine for x in r["load"]]
        print(
            f"\n{storage}, {files:,} files ({mine[0]['blobs']:,} blobs + a layer link each), "
            f"medians of {len(mine) // 2}, load {min(loads):.1f}-{max(loads):.1f}:"
        )
        whats = ["wall_s", "cpu_s"] + (["server_cpu_s"] if storage == "s3" else [])
        for what in whats:
            direct = median("direct", "delete", what)
            move = median("two-phase", "move", what)
            purge = median("two-phase", "purge", what)
            print(
                f"  {what:13} direct {direct:7.2f}  move {move:7.2f} ({move / direct:.2f}x)  "
                f"move+purge {move + purge:7.2f} ({(move + purge) / direct:.2f}x)"
            )
        if storage == "s3":
            for variant, step in (
                ("direct", "delete"),
                ("two-phase", "move"),
                ("two-phase", "purge"),
            ):
                requests = next(r[step]["requests"] for r in mine if r["variant"] == variant)
                total = sum(requests.values())
                print(
                    f"  requests {variant} {step}: {total} ({total / files:.3f} per file) "
                    f"{json.dumps(requests, sort_keys=True)}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=10000, help="on a folder (0: skip)")
    parser.add_argument("--s3-blobs", type=int, default=1000, help="on S3 (0: skip)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-twophase-") as tmp:
        work = Path(tmp)
        runs = []
        if args.blobs:
            runs.append(folder_runs(args.blobs, args.repeat, work))
        if args.s3_blobs:
            runs.append(s3_runs(args.s3_blobs, args.repeat, work))
        for run in runs:
            for row in run:
                print(json.dumps(row), flush=True)
                rows.append(row)
    summary(rows)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""S3 requests of a dry run, of ``--confirm`` (the two-phase delete) and of the purge after:
what the executor costs in each mode, per blob it removes.

Why: the dry run goes through the executor (the plan expanded into files, batch by batch,
re-reads and re-check included); the confirmed run moves what it removes into a quarantine (a
CopyObject per object, then DeleteObjects) and re-checks it; the purge re-checks on a fresh
snapshot and deletes. A synthetic registry is generated into a moto_server bucket,
bench/s3count.py counts every request that reaches it, and four commands run in this process
(one Prefect test server for all):

1. ``prune`` (dry run): snapshot + plan (+ executor);
2. ``prune --snapshot RUN`` (dry run): the plan again (+ executor) without the walk: what the
   dry run costs beyond the snapshot;
3. ``prune --snapshot RUN --confirm --settle 0s``: the same plan quarantined (lock, re-reads,
   per-batch stat, copies, bulk deletes, the re-check);
4. ``purge RUN --confirm``: a fresh snapshot, the re-check, the purge.

    python bench/dryrun_requests.py [--blobs 3000]   # prints one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.registry_bench import MotoServer, free_port  # noqa: E402

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


def counts(proxy: str, reset: bool = False) -> dict[str, Any]:
    request = urllib.request.Request(f"{proxy}/__s3count__", method="DELETE" if reset else "GET")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=0, help="0: the demo registry")
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    from prefect.testing.utilities import prefect_test_harness

    from regprune.cli.main import main as regprune
    from regprune.demo.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec.for_blobs(args.blobs) if args.blobs else SyntheticSpec.demo()
    work = Path(tempfile.mkdtemp(prefix="dryrun-requests-"))
    with MotoServer(log_dir=work) as moto:
        bucket = moto.create_bucket("dryrun")
        generate(
            f"s3://{bucket}/registry",
            spec,
            work / "metadata.json",
            storage_options=moto.storage_options,
        )
        port = free_port()
        proxy_log = open(work / "proxy.log", "wb")  # noqa: SIM115
        counter = [sys.executable, str(ROOT / "bench" / "s3count.py"), "--port", str(port)]
        proxy_process = subprocess.Popen(
            [*counter, "--upstream", moto.endpoint_url],
            stdout=proxy_log,
            stderr=subprocess.STDOUT,
        )
        proxy = f"http://127.0.0.1:{port}"
        try:
            wait(f"{proxy}/__s3count__")
            os.environ["AWS_ENDPOINT_URL"] = proxy
            storage = ["--storage", f"s3://{bucket}/registry"]
            run = str(work / "run")
            dump = str(work / "metadata.json")
            prune = ["prune", "--keep-younger-than", "0s"]
            report = str(work / "confirm.json")
            commands = {
                "prune (dry run)": [*prune, *storage, "--metadata", dump, "--out", run],
                "prune --snapshot (dry run)": [*prune, "--snapshot", run],
                "prune --snapshot --confirm": [
                    *prune,
                    *(("--snapshot", run, "--confirm", "--settle", "0s", "--report", report)),
                ],
                "purge --confirm": ["purge", run, "--metadata", dump, "--confirm"],
            }
            result: dict[str, Any] = {"spec": "demo" if not args.blobs else args.blobs}
            with prefect_test_harness(server_startup_timeout=120):
                for name, command in commands.items():
                    counts(proxy, reset=True)
                    code = regprune(command)
                    measured = counts(proxy)
                    requests = Counter(measured["requests"])
                    result[name] = {
                        "exit": code,
                        "requests": sum(requests.values()),
                        "by_operation": dict(sorted(requests.items())),
                    }
            confirmed = json.loads(Path(report).read_text())
            blobs = confirmed["executed"]["blobs"]["done"]
            objects = len(confirmed["files"])
            result["removed"] = {"blobs": blobs, "files": objects}
            for name in ("prune --snapshot --confirm", "purge --confirm"):
                result[name]["per_removed_blob"] = round(result[name]["requests"] / blobs, 2)
        finally:
            proxy_process.terminate()
            proxy_process.wait()
            proxy_log.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

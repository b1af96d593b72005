#!/usr/bin/env python3
"""S3 requests of a dry run and of ``--confirm``: what the executor costs in each mode.

Why: the dry run now goes through the executor (the plan expanded into files, batch by
batch); it must stay cheap on S3. A synthetic registry is generated into a moto_server bucket,
bench/s3count.py counts every request that reaches it, and three commands run in this process
(one Prefect test server for all):

1. ``prune`` (dry run): snapshot + plan (+ executor);
2. ``prune --snapshot RUN`` (dry run): the plan again (+ executor) without the walk: what the
   dry run costs beyond the snapshot;
3. ``prune --snapshot RUN --confirm``: the same plan deleted (lock, re-read, per-batch stat).

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

from tests.registry_bench import MotoServer, free_port  # noqa: E402

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
            commands = {
                "prune (dry run)": [
                    *storage,
                    "--metadata",
                    str(work / "metadata.json"),
                    "--out",
                    run,
                ],
                "prune --snapshot (dry run)": ["--snapshot", run],
                "prune --snapshot --confirm": ["--snapshot", run, "--confirm"],
            }
            result: dict[str, Any] = {"spec": "demo" if not args.blobs else args.blobs}
            with prefect_test_harness(server_startup_timeout=120):
                for name, extra in commands.items():
                    counts(proxy, reset=True)
                    code = regprune(["prune", "--keep-younger-than", "0s", *extra])
                    measured = counts(proxy)
                    requests = Counter(measured["requests"])
                    result[name] = {
                        "exit": code,
                        "requests": sum(requests.values()),
                        "by_operation": dict(sorted(requests.items())),
                    }
        finally:
            proxy_process.terminate()
            proxy_process.wait()
            proxy_log.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

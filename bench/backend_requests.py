#!/usr/bin/env python3
"""Requests per object listed and per object deleted on GCS, Azure Blob and Swift, next to
OpenShift's registry's ``-prune=check`` through the same emulator.

Why: on cloud storage the requests are the cost (and the throttling risk); the emulators
count what reaches them as the service would. A synthetic registry (regprune.demo.synthetic)
is written to a folder, copied object by object into each emulator in its key form (Swift:
every uploaded blob a DLO, as the registry's driver writes it), and counted by a front that
sees every request: ``regprune prune --confirm`` (snapshot, plan, re-reads, bulk deletes,
lock), then on a fresh copy the reference's ``-prune=check`` (which only reads).

    python bench/backend_requests.py [--namespaces 4] [--out /tmp/backend-requests.json]

Needs the emulators of tests/harness/storage_emulators.py (.ci/run installs them) and OpenShift's
registry binary (OPENSHIFT_REGISTRY_BIN). Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regprune.demo.synthetic import SyntheticSpec, generate
from tests.harness.openshift_api import OpenShiftAPIServer
from tests.harness.storage_emulators import (
    AzuriteEmulator,
    GcsEmulator,
    GcsPagingFront,
    SwiftAllInOne,
    _Front,
    copy_registry_tree,
    folder_files,
    run_reference,
    uploaded_blobs,
)


class CountingFront(_Front):
    """Forwards everything; counts requests by operation and the names bulk deletes carry."""

    def __init__(self, upstream: str, kind: str) -> None:
        super().__init__(upstream)
        self.kind = kind
        self.counts: Counter[str] = Counter()

    def respond(
        self, method: str, path: str, headers: Any, body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        operation = self.operation(method, path)
        self.counts[operation] += 1
        if operation == "bulk delete":
            text = (body or b"").decode("utf-8", "replace")
            carried = (
                len([line for line in text.splitlines() if line.strip()])
                if self.kind == "swift"
                else len(re.findall(r"^DELETE ", text, re.MULTILINE))
            )
            self.counts["names in bulk deletes"] += carried
        return self.forward(method, path, headers, body)

    def operation(self, method: str, path: str) -> str:
        route, _, query = path.partition("?")
        if self.kind == "gcs":
            if route.startswith("/batch/"):
                return "bulk delete"
            if method == "GET" and re.fullmatch(r"/storage/v1/b/[^/]+/o", route):
                return "list"
            if method == "GET" and ("alt=media" in query or route.startswith("/download/")):
                return "read"
            if method == "GET" and "/o/" in route:
                return "metadata"
        elif self.kind == "azure":
            if "comp=batch" in query:
                return "bulk delete"
            if "comp=list" in query:
                return "list"
            if method == "GET":
                return "read"
            if method == "HEAD":
                return "metadata"
        else:
            if "bulk-delete" in query:
                return "bulk delete"
            if route.startswith("/auth/"):
                return "auth"
            parts = unquote(route).strip("/").split("/", 3)
            if method == "GET" and len(parts) == 3:
                return "list"
            if method == "GET":
                return "read"
            if method == "HEAD":
                return "metadata"
        return f"other {method}"


def regprune_prune(url: str, dump: Path, out: Path, env: dict[str, str]) -> dict[str, Any]:
    report = out.parent / f"{out.name}.json"
    args = ["prune", "--storage", url, "--metadata", str(dump), "--out", str(out)]
    args += ["--report", str(report), "--keep-younger-than", "0s", "--upload-max-age", "0s"]
    proc = subprocess.run(
        [sys.executable, "-m", "regprune.cli.main", *args, "--confirm"],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"regprune failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--streams", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the numbers as JSON")
    parser.add_argument("--only", default="gcs,azure,swift")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="backend-requests-"))
    spec = SyntheticSpec(namespaces=args.namespaces, streams_per_namespace=args.streams)
    root = work / "registry"
    dump = work / "metadata.json"
    generate(str(root), spec, dump)
    objects = len(folder_files(root))
    api = OpenShiftAPIServer().start()
    for item in json.loads(dump.read_text())["items"]:
        if item["kind"] == "Image":
            api.add_image(item)
        else:
            tags = {
                t["tag"]: [i["image"] for i in t["items"]] for t in item["status"].get("tags", [])
            }
            api.add_imagestream(item["metadata"]["namespace"], item["metadata"]["name"], tags)
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_", "OS_", "ST_", "PREFECT_"))
    }
    base_env |= {
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    results: dict[str, Any] = {"objects": objects}
    classes = {"gcs": GcsEmulator, "azure": AzuriteEmulator, "swift": SwiftAllInOne}
    for kind in args.only.split(","):
        emulator = classes[kind](work / kind).start()
        paging = GcsPagingFront(emulator.endpoint).start() if kind == "gcs" else None
        try:
            results[kind] = measure(kind, emulator, paging, root, dump, api, base_env, work)
        finally:
            if paging:
                paging.stop()
            emulator.stop()
        print(json.dumps({kind: results[kind]}), flush=True)
    api.stop()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(table(results))


def measure(
    kind: str,
    emulator: Any,
    paging: _Front | None,
    root: Path,
    dump: Path,
    api: OpenShiftAPIServer,
    base_env: dict[str, str],
    work: Path,
) -> dict[str, Any]:
    upstream = paging.url if paging else emulator.endpoint
    upstream = upstream.rsplit("/", 1)[0] if kind == "azure" else upstream
    out: dict[str, Any] = {}
    for who in ("regprune", "reference"):
        bucket = emulator.create_bucket(f"bench-{uuid.uuid4().hex[:10]}")
        dlo = uploaded_blobs(root) if kind == "swift" else []
        copy_registry_tree(root, emulator, bucket, swift_dlo=dlo, segment_size=1 << 20)
        before = len(emulator.list_keys(bucket))
        front = CountingFront(upstream, kind).start()
        try:
            if who == "regprune":
                env = dict(base_env) | emulator.env
                if kind == "gcs":
                    env["STORAGE_EMULATOR_HOST"] = front.url
                elif kind == "azure":
                    conn = env["AZURE_STORAGE_CONNECTION_STRING"]
                    env["AZURE_STORAGE_CONNECTION_STRING"] = conn.replace(upstream, front.url)
                else:
                    env["OS_AUTH_URL"] = env["ST_AUTH"] = front.url + "/auth/v1.0"
                report = regprune_prune(f"{_scheme(kind)}://{bucket}", dump, work / bucket, env)
                executed = {k: v["done"] for k, v in report["executed"].items()}
                out[who] = {"executed": executed}
            else:
                storage, ref_env = emulator.reference_storage(bucket)
                section = storage[next(iter(storage))]
                if kind == "gcs":
                    ref_env = {"STORAGE_EMULATOR_HOST": front.url.removeprefix("http://")}
                elif kind == "azure":
                    section["serviceurl"] = section["serviceurl"].replace(upstream, front.url)
                else:
                    section["authurl"] = front.url + "/auth/v1.0"
                proc = run_reference(
                    ["-prune=check"],
                    storage,
                    {**ref_env, "OPENSHIFT_MASTER": api.url, "BEARER_TOKEN": api.token},
                )
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr[-3000:])
                planned = sum("Would delete" in line for line in proc.stdout.splitlines())
                out[who] = {"would delete": planned}
        finally:
            front.stop()
        after = len(emulator.list_keys(bucket))
        out[who] |= {
            "objects before": before,
            "objects deleted": before - after,
            "requests": dict(front.counts),
            "total requests": sum(v for k, v in front.counts.items() if not k.startswith("names")),
        }
    return out


def _scheme(kind: str) -> str:
    return {"gcs": "gs", "azure": "az", "swift": "swift"}[kind]


def table(results: dict[str, Any]) -> str:
    rows = [
        "| backend | run | objects | list requests | per object listed | metadata (HEAD) "
        "| reads | bulk deletes (names) | objects deleted | all requests | per object deleted |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("gcs", "azure", "swift"):
        for who, run in (results.get(kind) or {}).items():
            counts = run["requests"]
            objects = run["objects before"]
            deleted = run["objects deleted"]
            listed = counts.get("list", 0)
            per_deleted = f"{run['total requests'] / deleted:.2f}" if deleted else "-"
            rows.append(
                f"| {kind} | {who} | {objects} | {listed} | {listed / objects:.3f} "
                f"| {counts.get('metadata', 0)} | {counts.get('read', 0)} "
                f"| {counts.get('bulk delete', 0)} ({counts.get('names in bulk deletes', 0)}) "
                f"| {deleted} | {run['total requests']} | {per_deleted} |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    main()

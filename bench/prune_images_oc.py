"""Bench: ``oc adm prune images`` (dry run) next to ``regprune prune-images`` (dry run), both
end to end against the same OpenShift API test server (HTTPS, tests/harness/openshift_api.py).

    python bench/prune_images_oc.py --images 2000 20000

Per size: streams of one tag with 10 revisions (3 days old), one Pod per 10 streams using an
old revision by digest; oc's CronJob options (3 revisions, 60m). Each tool runs as a child
process; its wall time and peak RSS (its own VmHWM, polled) are printed as JSON,
with the counts each removes (they must agree). The API server runs in this process for both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.openshift_api import OpenShiftAPIServer, fake_digest  # noqa: E402
from tests.harness.workloads_api import add_workload  # noqa: E402

OC = Path(os.environ.get("REGPRUNE_OC", "/work/shared/openshift-oc/oc"))
OPTIONS = ["--keep-tag-revisions=3", "--keep-younger-than=60m"]
DEPTH = 10
HOST = "image-registry.openshift-image-registry.svc:5000"


def populate(api: OpenShiftAPIServer, images: int) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    for s in range(max(1, images // DEPTH)):
        ns, name = f"ns{s % 100}", f"s{s}"
        digests = [fake_digest(f"{s}-{i}") for i in range(DEPTH)]
        for digest in digests:
            api.add_image(digest=digest, repository=f"{ns}/{name}", created=old)
        api.add_imagestream(ns, name, {"latest": digests}, created=old)
        if s % 10 == 0:
            pod = {
                "kind": "Pod",
                "metadata": {
                    "namespace": ns,
                    "name": f"p{s}",
                    "creationTimestamp": old.isoformat(),
                },
                "spec": {
                    "containers": [{"name": "c", "image": f"{HOST}/{ns}/{name}@{digests[-1]}"}]
                },
                "status": {"phase": "Running"},
            }
            add_workload(api, pod)


def measure(
    command: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[float, float, str, float]:
    """Wall seconds, peak RSS (MiB) of the child, its stdout, its CPU seconds (user + system
    of the child and every descendant it waited for, from wait4).

    The peak is the child's own high-water mark (``VmHWM``, read every 20 ms until it exits),
    not wait4's ``ru_maxrss``: a child forked from this process starts with this process's
    RSS in its maxrss (kept across exec), and this process holds the whole generated cluster
    (about 850 MiB at 300k Images), so ru_maxrss reported that instead of the tool's peak."""
    started = time.monotonic()
    peak = 0
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, high_water_kib(proc.pid))
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({proc.returncode}):\n{text[-3000:]}")
    return elapsed, peak / 1024, text, usage.ru_utime + usage.ru_stime


def high_water_kib(pid: int) -> int:
    """A running process's own peak RSS (VmHWM, KiB); 0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def oc_counts(text: str) -> tuple[int, int]:
    """(tag revisions, Images) ``oc adm prune images`` says it would delete."""
    images = len(re.findall(r"^Deleting image ", text, re.MULTILINE))
    revisions = sum(int(n) for n in re.findall(r"Deleting (\d+) items from image stream", text))
    return revisions, images


def oc_removed(log: Path) -> tuple[int, int]:
    """:func:`oc_counts` of a log file holding oc's output."""
    return oc_counts(log.read_text(errors="replace"))


def run(images: int, prefect_api_url: str | None = None) -> dict[str, object]:
    api = OpenShiftAPIServer(tls=True).start()
    try:
        populate(api, images)
        with tempfile.TemporaryDirectory(prefix="bench-oc-") as tmp:
            folder = Path(tmp)
            kubeconfig = api.kubeconfig(folder / "kubeconfig")
            oc_s, oc_mib, oc_out, oc_cpu = measure(
                [str(OC), "--kubeconfig", str(kubeconfig), "adm", "prune", "images", *OPTIONS],
                folder,
            )
            report = folder / "report.json"
            rp_s, rp_mib, _, rp_cpu = measure(
                [
                    str(Path(sys.executable).with_name("regprune")),
                    "prune-images",
                    "--kubeconfig",
                    str(kubeconfig),
                    *OPTIONS,
                    "--report",
                    str(report),
                    "--out",
                    str(folder / "run"),
                ],
                folder,
                {**os.environ, "PREFECT_API_URL": prefect_api_url} if prefect_api_url else None,
            )
            got = json.loads(report.read_text())
    finally:
        api.stop()
    oc_revisions, oc_images = oc_counts(oc_out)
    return {
        "images": images,
        "streams": max(1, images // DEPTH),
        "oc": {"seconds": round(oc_s, 1), "cpu_s": round(oc_cpu, 2), "peak_rss_mib": round(oc_mib)},
        "regprune": {
            "seconds": round(rp_s, 1),
            "cpu_s": round(rp_cpu, 2),
            "peak_rss_mib": round(rp_mib),
        },
        "load": round(os.getloadavg()[0], 1),
        "removed": {
            "oc": [oc_revisions, oc_images],
            "regprune": [len(got["tag_revisions"]), len(got["images"])],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2000])
    parser.add_argument(
        "--prefect-api-url",
        help="a running Prefect server for regprune (without: it starts its own, ~30 s here)",
    )
    args = parser.parse_args()
    for images in args.images:
        result = run(images, args.prefect_api_url)
        result["prefect"] = "running server" if args.prefect_api_url else "started by the run"
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

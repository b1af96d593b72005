"""Bench: where ``regprune prune-images`` (dry run, end to end) spends its memory.

    python bench/prune_images_memory.py --prefect-api-url http://127.0.0.1:PORT/api \
        --images 100000 [--repeat 3] [--keep DIR]

The cluster of bench/prune_images_oc.py (streams of one tag x 10 revisions, one Pod per 10
streams) is served by the HTTPS API test server in this process; regprune runs as a child. Its
RSS is sampled every 0.02 s and every Prefect task run's start and end are taken from its log,
so the peak is named by the task that was running. Prints one JSON line per run: wall time,
CPU seconds (``cpu_s``: the run and its children; ``server_cpu_s``: this process, the API
server), seconds per task, the run's own peak RSS (``own_peak_mib``: VmHWM, which no
sampling gap misses), and the peak RSS seen during each task.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from prune_images_oc import OPTIONS, populate  # noqa: E402

from tests.harness.openshift_api import OpenShiftAPIServer  # noqa: E402

TASK_LINE = re.compile(r"Task run '([^']+)' - (Created task run|Finished in state|Beginning)")


def run_once(
    kubeconfig: Path,
    folder: Path,
    api_url: str | None,
    pythonpath: str | None = None,
) -> dict[str, object]:
    """One ``regprune prune-images`` child: its time, peak RSS and the peak per task;
    ``pythonpath``: another regprune first on the path (an older commit, exported)."""
    regprune = str(Path(sys.executable).with_name("regprune"))
    main = "import sys; from regprune.cli.main import main; sys.exit(main())"
    start = [sys.executable, "-c", main] if pythonpath else [regprune]
    command = [*start, "prune-images", "--kubeconfig", str(kubeconfig), *OPTIONS]
    command += ["--report", str(folder / "report.json"), "--out", str(folder / "run")]
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "DEBUG"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    if api_url:
        env["PREFECT_API_URL"] = api_url
    started = time.monotonic()
    own_cpu = time.process_time()  # this process: the API server's threads (and the sampling)
    proc = subprocess.Popen(
        command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    samples: list[tuple[float, int]] = []
    children: dict[str, int] = {}  # child processes of the run: their peak RSS seen (MiB)
    high_water: list[tuple[float, int]] = []  # VmHWM: the process's own peak, never missed
    events: list[tuple[float, str, str]] = []
    lines: list[str] = []
    marks: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            marks.append((time.monotonic() - started, line.strip()[:110]))
            if m := TASK_LINE.search(line):
                name = re.sub(r"-[0-9a-f]{3}$", "", m.group(1))
                events.append((time.monotonic() - started, name, m.group(2)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ps = psutil.Process(proc.pid)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        try:
            rss = ps.memory_info().rss
            status_text = Path(f"/proc/{proc.pid}/status").read_text()
        except (psutil.Error, OSError):
            continue
        if not (found := re.search(r"VmHWM:\s+(\d+)", status_text)):
            continue  # exited, not yet reaped
        hwm = int(found.group(1)) * 1024
        samples.append((time.monotonic() - started, rss))
        try:
            for child in ps.children(recursive=True):
                key = " ".join(child.cmdline())[:120]
                children[key] = max(children.get(key, 0), child.memory_info().rss >> 20)
        except psutil.Error:
            pass
        high_water.append((time.monotonic() - started, hwm))
        time.sleep(0.02)
    reader.join(5)
    elapsed = time.monotonic() - started
    server_cpu = time.process_time() - own_cpu
    if proc.returncode != 0:
        raise SystemExit("regprune failed:\n" + "".join(lines[-40:]))
    open_at: dict[str, float] = {}
    spans: list[tuple[str, float, float]] = []
    for t, name, what in events:
        if what != "Finished in state":
            open_at.setdefault(name, t)
        elif name in open_at:
            spans.append((name, open_at.pop(name), t))
    per_task = {
        name: round(max((r for t, r in samples if a <= t <= b), default=0) / 2**20)
        for name, a, b in spans
    }
    peak_at, peak = max(samples, key=lambda s: s[1], default=(0.0, 0))
    running = [n for n, a, b in spans if a <= peak_at <= b]
    timeline = []
    previous = 0.0
    for t, text in marks:
        if "Task run" in text or "Flow run" in text or "Results:" in text:
            seen = [r for s, r in samples if previous <= s <= t]
            hwm = max((h for s, h in high_water if s <= t), default=0)
            mib = (round(max(seen, default=0) / 2**20), round(hwm / 2**20))
            timeline.append((round(t, 1), *mib, text[29:]))
            previous = t
    seen = [r for s, r in samples if s >= previous]
    timeline.append((round(elapsed, 1), round(max(seen, default=0) / 2**20), "exit"))
    report = json.loads((folder / "report.json").read_text())
    task_seconds: dict[str, float] = {}
    for name, a, b in spans:
        task_seconds[name] = round(task_seconds.get(name, 0) + b - a, 2)
    return {
        "seconds": round(elapsed, 1),
        # user+sys of the run and every child it waited for (wait4), and of this process
        # meanwhile (the API server it lists from; the 0.02 s sampling too)
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "server_cpu_s": round(server_cpu, 2),
        "task_seconds": task_seconds,
        # wait4's figure starts from this process's RSS at the fork (kept across exec): with
        # the cluster held here it is this process's size, not the run's, at 300k and more
        "wait4_maxrss_mib": round(usage.ru_maxrss / 1024),
        "sampled_peak_mib": round(peak / 2**20),
        "children_mib": children,
        "own_peak_mib": round(max((h for _, h in high_water), default=0) / 2**20),
        "peak_at_s": round(peak_at, 1),
        "running_at_peak": running,
        "per_task_peak_mib": per_task,
        "timeline": timeline,
        "removed": [len(report["tag_revisions"]), len(report["images"])],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[20000])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--prefect-api-url")
    parser.add_argument("--keep", help="copy each variant's last tables to this folder/VARIANT")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=PYTHONPATH",
        help="also run a regprune found on PYTHONPATH (e.g. an older commit exported with "
        "git archive, flows/ tasks/ sql/ under regprune/); runs alternate, one cluster",
    )
    args = parser.parse_args()
    for images in args.images:
        api = OpenShiftAPIServer(tls=True).start()
        try:
            populate(api, images)
            variants = [tuple(v.split("=", 1)) for v in args.variant] + [("this", None)]
            for _ in range(args.repeat):
                for name, path in variants:
                    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
                        folder = Path(tmp)
                        kubeconfig = api.kubeconfig(folder / "kubeconfig")
                        result = run_once(kubeconfig, folder, args.prefect_api_url, path)
                        if args.keep:
                            keep = Path(args.keep) / name
                            subprocess.run(["rm", "-rf", str(keep)], check=True)
                            keep.parent.mkdir(parents=True, exist_ok=True)
                            subprocess.run(["cp", "-r", str(folder / "run"), str(keep)], check=True)
                            (keep / "report.json").write_bytes(
                                (folder / "report.json").read_bytes()
                            )
                    row = {"images": images, "variant": name, "load": os.getloadavg(), **result}
                    print(json.dumps(row), flush=True)
        finally:
            api.stop()


if __name__ == "__main__":
    main()

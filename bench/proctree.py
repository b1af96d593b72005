"""Run a command and measure it: wall time, CPU time and the peak RSS of its whole process tree.

The tree (the command and every descendant, e.g. the temporary Prefect server a CLI starts) is
sampled with psutil every ``interval`` seconds; its RSS is the sum over the processes (shared
pages count once per process, so the figure errs high). Samples keep their wall-clock times,
so a peak can be attributed to a phase afterwards (snapshot before ``finished_at``, plan after).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

try:
    import psutil
except ImportError as exc:  # the bench extra brings it
    raise SystemExit("bench/run needs psutil: pip install -e '.[bench]'") from exc


@dataclass
class Measurement:
    """One run of one command."""

    seconds: float
    cpu_seconds: float
    peak_rss: int
    returncode: int
    samples: list[tuple[float, int]] = field(default_factory=list, repr=False)
    """(wall-clock time, tree RSS in bytes)."""

    def peak_between(self, start: float, end: float) -> int:
        return max((rss for t, rss in self.samples if start <= t <= end), default=0)


class CommandFailed(RuntimeError):
    """A measured command exited non-zero: the figures would measure a failure."""


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    interval: float = 0.05,
    check: bool = True,
) -> Measurement:
    """Run ``command`` to completion, sampling its process tree; output goes to ``log``."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    samples: list[tuple[float, int]] = []
    try:
        started = time.perf_counter()
        proc = psutil.Popen(
            list(command),
            env=dict(env) if env is not None else None,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append((time.time(), tree_rss(proc)))
                done.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        usage_before = os.times()
        returncode = proc.wait()
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
        usage_after = os.times()
    finally:
        if log:
            out.close()
    # getrusage(RUSAGE_CHILDREN): the command and every descendant it waited for
    reaped = (usage_after.children_user - usage_before.children_user) + (
        usage_after.children_system - usage_before.children_system
    )
    measurement = Measurement(
        seconds=elapsed,
        cpu_seconds=reaped,
        peak_rss=max((rss for _, rss in samples), default=0),
        returncode=returncode,
        samples=samples,
    )
    if check and returncode != 0:
        where = f"; output in {log}" if log else ""
        raise CommandFailed(f"{' '.join(command)} exited with {returncode}{where}")
    return measurement

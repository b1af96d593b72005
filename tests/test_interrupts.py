"""regprune/interrupts.py on its own: a process that arms it and then does not unwind (a main
thread stuck in C code, a cleanup that hangs) still ends after the grace period, or at once on
a second signal, with its line and the signal's exit code; a lock it holds is released.
The command's own behaviour is tested through it in tests/test_hostile_input.py."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

STUCK = """
import sys, threading
from regprune import interrupts
interrupts.GRACE_SECONDS = float(sys.argv[1])
interrupts.arm(lambda state, forced: f"line {state.name} {state.doing} forced={forced} "
               f"locks={state.locks}")
from regprune import progress
progress.phase("Doing something long")
if len(sys.argv) > 2:  # a lock held, as while deleting
    from regprune.lock import StorageLock
    from regprune.storage import StorageSpec
    lock = StorageLock(StorageSpec(sys.argv[2]), "run-1")
    lock.acquire()
stuck, ready = threading.Event(), False
while True:  # a main thread that swallows the interrupt and never ends on its own
    try:  # "ready" inside: the first signal may come as soon as it is read
        if not ready:
            ready = True
            print("ready", flush=True)
        stuck.wait()
    except KeyboardInterrupt:
        print("unwinding", flush=True)
"""


def stuck_process(grace: float, *extra: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", STUCK, str(grace), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: only this test's signals reach it
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    return process


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_run_that_does_not_unwind_ends_after_the_grace_period(signum: int, code: int) -> None:
    process = stuck_process(0.2)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert process.returncode == code
    assert err == f"line {name} Doing something long forced=True locks=[]\n"


def test_a_second_signal_ends_it_at_once_and_releases_the_lock(tmp_path: Path) -> None:
    """Grace of an hour: only the second signal can end it; the lock it held is gone."""
    (tmp_path / "registry" / "docker").mkdir(parents=True)
    process = stuck_process(3600, str(tmp_path / "registry"))
    lock = tmp_path / "registry" / "_regprune" / "lock"
    assert lock.exists()
    process.send_signal(signal.SIGTERM)
    assert process.stdout is not None
    assert process.stdout.readline() == "unwinding\n"  # the first was handled: now a second
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143  # the first signal's
    assert err.startswith("line SIGTERM Doing something long forced=True locks=[")
    assert str(lock) in err
    assert not lock.exists()

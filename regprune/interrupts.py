"""SIGTERM and SIGINT end a command-line run promptly, at any point, with one line.

The command line :func:`arm` s this at its start. A signal then:

1. is noticed at once by a watcher thread (the wake-up file descriptor of :mod:`signal`),
   even while the main thread is inside a long C call (a DuckDB query): it records what the
   run was doing, ends the Kubernetes API requests in flight (regprune/timeouts.py), makes
   :func:`check` raise in the tasks' threads (no new batch, page or shard starts), and starts
   a last-resort timer;
2. raises ``KeyboardInterrupt`` in the main thread, which unwinds the flow: a storage lock is
   released on the way (flows/execute.py), the task runner does not wait for its threads
   (regprune/runners.py), and the command prints the line and ends its process without
   waiting for threads blocked in a request;
3. if the main thread has not finished within :data:`GRACE_SECONDS` (or a second signal
   comes), the watcher releases a lock still held, prints the line and ends the process.

Prefect's flow engine installs a SIGTERM handler of its own for every flow run, which
raises inside the flow and then waits for the task runner's threads; the task runner puts
this one back (:func:`take_sigterm`), so both signals behave alike. Deployments are not
armed: Prefect's cancellation and crash handling stay as they are there.

What a deletion interrupted at any point leaves is what a kill leaves: the audit trail of
every batch finished, the storage lock released (or taken over by the next run on this host),
and ``prune --resume RUN_DIR`` re-reads and finishes the rest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

from regprune import progress

GRACE_SECONDS = 10.0
"""How long the main thread has to unwind after a signal before the process ends anyway."""
EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""128 + the signal's number, as a shell reports a process ended by it."""
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised by :func:`check` once the run is interrupted: the work of a task stops at the
    next safe point (between pages, shards, batches)."""


@dataclass
class Interruption:
    """What the signal found: which one, what the run was doing, the locks it held."""

    signum: int
    key: str | None
    doing: str | None
    locks: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + self.signum)


_event = threading.Event()
_recorded = threading.Event()
_state: Interruption | None = None
_armed = False
_raised = False
"""Whether the main thread's handler raised KeyboardInterrupt (it does once)."""
_finish: Callable[[Interruption, bool], str] | None = None
"""Composes the command's line (regprune/cli); called with (interruption, forced)."""


class HeldLock(Protocol):
    where: str

    def release(self) -> None: ...


def _no_locks() -> Sequence[HeldLock]:
    return ()


_held_locks: Callable[[], Sequence[HeldLock]] = _no_locks
"""The storage locks this process holds: regprune/lock.py registers its own with
:func:`track_locks` (this module is below the storage and the lock, and imports neither)."""


def track_locks(held: Callable[[], Sequence[HeldLock]]) -> None:
    global _held_locks
    _held_locks = held


def requested() -> bool:
    return _event.is_set()


def current(wait: float = 0.0) -> Interruption | None:
    """What the signal found (``wait``: for it to be recorded, if it is not yet)."""
    if _state is None and _event.is_set() and wait:
        _recorded.wait(wait)
    return _state


def check() -> None:
    """Raise :class:`Interrupted` once the run is interrupted (a no-op otherwise)."""
    if _event.is_set():
        raise Interrupted("interrupted")


def _record(signum: int) -> Interruption:
    """The first signal's interruption: what the run was doing and the locks it held, read
    without taking a lock (the main thread's handler records too, at once, before the flow
    unwinds and closes what it was doing; it may run inside code holding a lock)."""
    global _state
    if _state is None:
        key, doing = progress.doing()
        locks = [each.where for each in _held_locks()]  # no lock taken here
        _state = Interruption(signum, key, doing, locks)
    _event.set()
    _recorded.set()
    return _state


def request(signum: int) -> Interruption:
    """Record the interruption (the first signal's; later ones change nothing) and stop the
    work that can be stopped from any thread (not from a signal handler: ending the requests
    takes a lock)."""
    state = _record(signum)
    from regprune.timeouts import abort_requests

    abort_requests()
    return state


def _handle(signum: int, frame: FrameType | None) -> None:
    """The main thread's handler: it records what the run was doing and unwinds, once (the
    watcher stops the rest, and ends the process on a second signal)."""
    global _raised
    _record(signum)
    if not _raised:
        _raised = True
        raise KeyboardInterrupt


def take_sigterm() -> None:
    """Put this module's handler back on SIGTERM (Prefect's flow engine replaced it when the
    flow run started); only in an armed process's main thread."""
    if not _armed or threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(ValueError):
        if signal.getsignal(signal.SIGTERM) is not _handle:
            signal.signal(signal.SIGTERM, _handle)


def arm(finish: Callable[[Interruption, bool], str]) -> None:
    """Handle SIGTERM and SIGINT in this process (the command line, in its main thread):
    ``finish(interruption, forced)`` gives the line to print when the process ends on its
    own (``forced``: after the grace period or a second signal)."""
    global _armed, _finish
    _finish = finish
    receive, send = socket.socketpair()
    send.setblocking(False)
    for signum in SIGNALS:
        signal.signal(signum, _handle)
    signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
    _armed = True
    watcher = threading.Thread(
        target=_watch, args=(receive, send), name="regprune-signals", daemon=True
    )
    watcher.start()


def _watch(receive: socket.socket, send: socket.socket) -> None:
    """The signal numbers the wake-up descriptor receives: the first SIGTERM/SIGINT starts
    the grace period, a second one ends the process at once."""
    seen = 0
    while True:
        try:
            data = receive.recv(64)
        except OSError:
            return
        for signum in data:
            if signum not in SIGNALS:
                continue
            seen += 1
            state = request(signum)
            if seen == 1:
                timer = threading.Timer(GRACE_SECONDS, force_exit, args=(state,))
                timer.daemon = True
                timer.start()
            else:
                force_exit(state)


def force_exit(state: Interruption) -> None:
    """End the process now: release the locks still held, print the line, exit."""
    for held in _held_locks():
        with contextlib.suppress(Exception):
            held.release()
    line = _finish(state, True) if _finish else f"regprune: interrupted by {state.name}"
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    os._exit(state.exit_code)


def end_process(code: int) -> None:
    """After an interrupted run printed its line: end the process without waiting for task
    threads still blocked in a request (the interpreter would join them); ``atexit`` handlers
    run first (a temporary Prefect server is stopped by one)."""
    import atexit

    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    os._exit(code)

"""Progress of the long steps, for a person at a terminal and for the Prefect UI.

A flow opens an *activity* around work it fans out (walking storage, reading manifests,
deleting, restoring) and tasks report what they did with :func:`advance`::

    with progress.activity("walk", "Walking storage", parts=len(futures)) as walk:
        progress.wait_for(futures, walk)        # in the flow: parts done, the UI's artifact
    progress.advance("walk", objects=n, nbytes=b)   # in a task, any thread

Counters live in the flow's process and are thread-safe; where no activity of that name is
open (a task in a Dask worker process) :func:`advance` does nothing, and the flow still counts
the finished parts. Nothing here may fail a run: display and artifact errors are swallowed.

The command line attaches a :class:`Display` (a live view on a terminal, periodic lines
otherwise); deployments get the Prefect progress artifact and the phase lines in the run log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from regprune.units import format_bytes

ARTIFACT_INTERVAL = 2.0
"""Seconds between updates of a Prefect progress artifact (each is an API call)."""

logger = logging.getLogger("regprune")
logger.addHandler(logging.NullHandler())  # a library: the application decides where logs go


@dataclass
class Activity:
    """One measured step: objects (and bytes) so far, parts (task runs) done of how many."""

    key: str
    title: str
    parts: int | None = None
    expected: int | None = None
    """Objects expected in all (an estimate, e.g. from the previous snapshot), if known."""
    unit: str = "objects"
    estimated: bool = True
    """Whether ``expected`` is an estimate (shown as ``~``) or the exact count."""
    objects: int = 0
    nbytes: int = 0
    parts_done: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _artifact: Any = field(default=None, repr=False)
    _artifact_at: float = field(default=0.0, repr=False)

    def add(self, objects: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.objects += objects
            self.nbytes += nbytes

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        return self.objects / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def fraction(self) -> float | None:
        """Done in [0, 1]: by the expected object count, else by parts; None if unknown."""
        if self.expected:
            return min(self.objects / self.expected, 1.0)
        if self.parts:
            return self.parts_done / self.parts
        return None

    @property
    def remaining(self) -> float | None:
        """Seconds left, estimated from the fraction done so far."""
        fraction = self.fraction
        if not fraction or fraction >= 1 or self.finished:
            return None
        return self.elapsed * (1 - fraction) / fraction

    def describe(self) -> str:
        """``12,000 objects, 1.2 GiB, 4,000/s, 3s elapsed, ~5s left``."""
        about = "~" if self.estimated else ""
        words = [f"{self.objects:,}" + (f" of {about}{self.expected:,}" if self.expected else "")]
        words[0] += f" {self.unit}"
        if self.nbytes:
            words.append(format_bytes(self.nbytes))
        if self.parts and not self.finished:
            words.append(f"{self.parts_done}/{self.parts} parts")
        words.append(f"{self.rate:,.0f}/s")
        words.append(f"{format_seconds(self.elapsed)} elapsed")
        left = self.remaining
        if left is not None:
            words.append(f"~{format_seconds(left)} left")
        return ", ".join(words)


def format_seconds(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Display(Protocol):
    """What shows progress to a person (the command line's); called from any thread."""

    def phase(self, text: str) -> None: ...
    def warning(self, text: str) -> None: ...
    def started(self, activity: Activity) -> None: ...
    def finished(self, activity: Activity) -> None: ...


_lock = threading.Lock()
_activities: dict[str, Activity] = {}
_expected: dict[str, int] = {}
_display: Display | None = None
_last_phase: str | None = None


def attach(display: Display | None) -> None:
    """Show progress on ``display`` from now on (None: nothing is shown)."""
    global _display
    _display = display


def expect(key: str, objects: int | None) -> None:
    """An estimate of the objects the next activity ``key`` will see (None forgets it)."""
    with _lock:
        if objects:
            _expected[key] = objects
        else:
            _expected.pop(key, None)


def _run_logger() -> Any:
    """The Prefect run logger inside a run (the API and regprune.log get it), else ours."""
    try:
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger

        try:
            return get_run_logger()
        except MissingContextError:
            return logger
    except ImportError:  # pragma: no cover - Prefect is a dependency
        return logger


def phase(text: str) -> None:
    """Announce a step (one line for a person; an INFO line in the run's log)."""
    global _last_phase
    _last_phase = text
    _run_logger().info(text)
    if _display is not None:
        with suppress(Exception):
            _display.phase(text)


def warning(text: str) -> None:
    """Something the operator must read: a WARNING in the run's log, and on stderr."""
    _run_logger().warning(text)
    if _display is not None:
        with suppress(Exception):
            _display.warning(text)


def doing() -> tuple[str | None, str | None]:
    """(key, title) of the newest open activity, else (None, the last phase announced): what
    an interrupted run was doing. Takes no lock (a signal handler calls it, maybe inside
    code that holds one): copying the values is one step under the interpreter's lock."""
    current = list(_activities.values())
    if current:
        newest = max(current, key=lambda a: a.started)
        return newest.key, newest.title
    return None, _last_phase


def advance(key: str, objects: int = 0, nbytes: int = 0) -> None:
    """A task did ``objects`` (``nbytes``) of activity ``key``; a no-op where none is open."""
    current = _activities.get(key)
    if current is not None:
        current.add(objects, nbytes)


@contextmanager
def activity(
    key: str,
    title: str,
    *,
    parts: int | None = None,
    expected: int | None = None,
    unit: str = "objects",
) -> Iterator[Activity]:
    """Measure a step: shown live by the display, as a progress artifact in the Prefect UI,
    and summed up in one line at its end."""
    with _lock:
        current = Activity(
            key,
            title,
            parts=parts,
            expected=_expected.get(key) if expected is None else expected,
            unit=unit,
            estimated=expected is None,
        )
        _activities[key] = current
    _run_logger().info(title)
    _create_artifact(current)
    if _display is not None:
        with suppress(Exception):
            _display.started(current)
    completed = False
    try:
        yield current
        completed = True
    finally:
        current.finished = time.monotonic()
        with _lock:
            if _activities.get(key) is current:
                del _activities[key]
        _update_artifact(current, force=True, completed=completed)
        _run_logger().info(f"{title}: {current.describe()}")
        if _display is not None:
            with suppress(Exception):
                _display.finished(current)


def wait_for(futures: Sequence[Any], current: Activity, interval: float = 0.5) -> None:
    """Wait for every future (Prefect's), counting finished ones as parts done and keeping
    the artifact current; results and errors are left to the caller's ``.result()``."""
    from prefect.futures import wait

    current.parts = current.parts or len(futures)
    pending = list(futures)
    while pending:
        done, not_done = wait(pending, timeout=interval)
        current.parts_done += len(done)
        pending = list(not_done)
        _update_artifact(current)


def _artifact_key(key: str) -> str:
    return f"regprune-{key}-progress"


def _create_artifact(current: Activity) -> None:
    """A progress artifact of the flow run (only inside one; errors never fail the run)."""
    try:
        from prefect.artifacts import create_progress_artifact
        from prefect.context import FlowRunContext, TaskRunContext

        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        current._artifact = create_progress_artifact(
            progress=0.0, key=_artifact_key(current.key), description=current.title
        )
        current._artifact_at = time.monotonic()
    except Exception as exc:  # the UI's view is a nicety: the run goes on
        logger.debug("no progress artifact: %s", exc)


def _update_artifact(current: Activity, force: bool = False, completed: bool = False) -> None:
    if current._artifact is None:
        return
    now = time.monotonic()
    if not force and now - current._artifact_at < ARTIFACT_INTERVAL:
        return
    current._artifact_at = now
    fraction = 1.0 if completed else (current.fraction or 0.0)
    try:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(
            current._artifact,
            progress=round(fraction * 100, 1),
            description=f"{current.title}: {current.describe()}",
        )
    except Exception as exc:
        logger.debug("progress artifact not updated: %s", exc)

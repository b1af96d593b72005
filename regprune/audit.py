"""The audit trail of a run that changes storage, written ahead of every change.

A batch records what it is about to move (an intent row: ``quarantining``, ``restoring``,
``purging``) and closes the audit part, flushed to disk, before it moves anything; the
outcomes follow with the next part. So every move has a record made before it, and a write
that fails (a full filesystem) stops the run before the next move: :class:`AuditWriteError`
is raised, and every batch of the run checks :func:`stopped` before it moves. Parts are
Parquet files of one table (``actions`` or ``quarantine_log``, regprune/tables.py); a part not
closed (a kill) is not readable, so what it holds counts as not done.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from regprune.tables import TableWriter

PART_ACTIONS = 10_000
PART_SECONDS = 5.0
"""Outcomes with no intent after them are kept in memory up to this many rows or seconds,
then written as a part of their own: few files for a big dry run, little redone after a
kill."""

_STOPPED: dict[str, str] = {}
_STOPPED_LOCK = threading.Lock()


class AuditWriteError(OSError):
    """The audit trail could not be written: the run stops before its next change."""


def stopped(folder: str | os.PathLike[str]) -> str | None:
    """Why the run writing into ``folder`` stopped (a failed audit write), or None."""
    with _STOPPED_LOCK:
        return _STOPPED.get(str(Path(folder)))


def _stop(folder: Path, why: str) -> None:
    with _STOPPED_LOCK:
        _STOPPED.setdefault(str(folder), why)


def clear_stop(folder: str | os.PathLike[str]) -> None:
    """A new attempt on ``folder`` (``--resume``) starts without the last one's stop."""
    with _STOPPED_LOCK:
        _STOPPED.pop(str(Path(folder)), None)


class AuditTrail:
    """One writer's parts in ``folder``: ``<stem>-<n>.parquet``."""

    def __init__(self, folder: str | os.PathLike[str], stem: str, table: str = "actions"):
        self.folder = Path(folder)
        self.stem = stem
        self.table = table
        self.parts: list[str] = []
        self._pending: list[Mapping[str, list[Any]]] = []
        self._rows = 0
        self._since = time.monotonic()

    def record(self, columns: Mapping[str, list[Any]]) -> None:
        """Outcomes (or skips): written with the next intent, or once enough wait."""
        rows = len(next(iter(columns.values()), []))
        if rows:
            self._pending.append(columns)
            self._rows += rows
        if self._rows >= PART_ACTIONS or time.monotonic() - self._since >= PART_SECONDS:
            self.flush()

    def ahead(self, columns: Mapping[str, list[Any]]) -> None:
        """Write what is about to happen (with the outcomes waiting) and make it durable;
        raises AuditWriteError, after which nothing more may change (:func:`stopped`)."""
        self._pending.append(columns)
        self.flush()
        why = stopped(self.folder)
        if why:
            raise AuditWriteError(why)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._rows, self._since = 0, time.monotonic()
        if not any(len(next(iter(c.values()), [])) for c in pending):
            return
        path = self.folder / f"{self.stem}-{len(self.parts):05d}.parquet"
        try:
            write_part(self.table, path, pending)
        except OSError as exc:
            why = f"cannot write the audit trail ({path}: {exc.strerror or exc})"
            _stop(self.folder, why)
            raise AuditWriteError(why) from exc
        self.parts.append(str(path))

    def close(self) -> list[str]:
        self.flush()
        return self.parts


def write_part(table: str, path: Path, batches: list[Mapping[str, list[Any]]]) -> None:
    """One closed part, flushed to disk (fsync: a full disk reports it here at the latest)."""
    writer = TableWriter(table, path)
    try:
        for columns in batches:
            writer.write_columns(columns)
        writer.close()
        with open(path, "rb") as written:
            os.fsync(written.fileno())
    except BaseException:
        try:
            writer.abort()
        except OSError:  # closing what could not be written fails again: drop the file
            path.unlink(missing_ok=True)
        raise

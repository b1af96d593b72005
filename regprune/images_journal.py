"""The journal of prune-images' changes (and of their undo) in the run folder: what each change
will remove, saved in full and on disk **before** the change is made, then its outcome.

One file per attempt (``<attempt>.jsonl.gz`` in ``images_journal/`` of the run folder; the
undo's in ``images_undo/``): JSON lines, written as gzip members, on disk (fsynced) when
:meth:`Journal.save` returns. A change is made only after the save of what it removes has
returned, so a write that fails stops the run before that change (:class:`JournalError`).
(:meth:`Journal.write` appends without the fsync: the Images' pages, saved once before the
first delete.)
Outcomes are buffered and written with the next save (or at the close): an outcome lost to a
kill leaves the change "unknown", which the undo treats as made.

Records (``record`` names the kind):

- ``begin``: ``attempt``, ``dry_run``, ``cluster``, ``time``, ``version``;
- ``stream``: ``stream`` (the ImageStream in full, as read before its status was replaced) and
  ``removed`` (``tag``, ``position``, ``item``: each tag history item the change removes);
- ``image``: ``image`` (the Image in full, as read; deleted only on the precondition that
  its uid and resourceVersion are still these);
- ``outcome``: ``kind``, ``namespace``, ``name``, ``status``, ``detail``, ``time``.

A gzip member cut short by a kill is dropped by :func:`read_journal` (nothing it saved was
acted on: the change waits for the save).

A dry run's journal holds its ``begin`` record only: it changes nothing, so there is nothing
to save ahead and nothing to undo (at 100k Images its saves were 150 MB of JSON to encode, the
dry run's largest cost); its outcomes are in ``images_actions.parquet``.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from regprune.version import tool_version

JOURNAL_DIR = "images_journal"
"""prune-images' journal, one file per attempt, in the run folder."""
UNDO_DIR = "images_undo"
"""The undo's own audit trail, one file per attempt, in the run folder."""
COMPRESS_LEVEL = 1
"""gzip level of each member: JSON shrinks about fivefold even at 1, at a fraction of the cost
of the default 9."""
READ_CHUNK = 1 << 20


class JournalError(RuntimeError):
    """The journal could not be written: the run stops before another change."""


def attempt_id() -> str:
    """A sortable name for one attempt (its start, to the microsecond, UTC)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")


class Journal:
    """An append-only journal file; ``save`` is the write-ahead: on disk when it returns."""

    def __init__(self, folder: Path, attempt: str, dry_run: bool, cluster: str):
        self.path = folder / f"{attempt}.jsonl.gz"
        self.pending: list[dict[str, Any]] = []
        self.failed: JournalError | None = None
        """Set by a write that failed: nothing is written after it."""
        self.unsynced = False
        self.synced = 0
        """The size of the file known to be on disk."""
        self.dry_run = False
        """Nothing after the ``begin`` record is written (a dry run's journal)."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("ab")
            self.synced = self.file.seek(0, os.SEEK_END)
        except OSError as exc:
            raise self._error(exc) from exc
        self.save(
            {
                "record": "begin",
                "attempt": attempt,
                "dry_run": dry_run,
                "cluster": cluster,
                "time": datetime.now(UTC).isoformat(),
                "version": tool_version(),
            }
        )
        self.dry_run = dry_run

    def _error(self, exc: OSError) -> JournalError:
        return JournalError(
            f"cannot write the journal {self.path}: {exc.strerror or exc} - stopped before "
            "another change (what was changed so far is recorded there)"
        )

    def outcome(
        self, kind: str, namespace: str | None, name: str, status: str, detail: Any = None
    ) -> dict[str, Any]:
        """Record what a change did (written with the next save or at the close)."""
        record = {
            "record": "outcome",
            "kind": kind,
            "namespace": namespace,
            "name": name,
            "status": status,
            "detail": None if detail is None else str(detail),
            "time": datetime.now(UTC).isoformat(),
        }
        self.pending.append(record)
        return record

    def write(self, *records: dict[str, Any]) -> None:
        """Append ``records`` (after the outcomes pending) as a member, without waiting for the
        disk: what a change depends on is on disk only once :meth:`save` returns."""
        self.pending.extend(records)
        if self.failed:
            raise self.failed
        if self.dry_run:
            self.pending.clear()
        if not self.pending:
            return
        text = "".join(_line(record) for record in self.pending)
        member = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 31)
        data = member.compress(text.encode()) + member.flush()
        try:
            self.file.seek(0, os.SEEK_END)
            self.file.write(data)
            self.file.flush()
        except OSError as exc:
            self._fail(exc)
        self.pending.clear()
        self.unsynced = True

    def save(self, *records: dict[str, Any]) -> None:
        """Write ``records`` and everything written before, and fsync: the write-ahead."""
        self.write(*records)
        if not self.unsynced:
            return
        try:
            os.fsync(self.file.fileno())
            self.synced = self.file.tell()
        except OSError as exc:
            self._fail(exc)
        self.unsynced = False

    def _fail(self, exc: OSError) -> NoReturn:
        """Take back what is not known to be on disk; nothing is written after."""
        with contextlib.suppress(OSError):
            self.file.truncate(self.synced)
        self.failed = self._error(exc)
        raise self.failed from exc

    def close(self) -> None:
        try:
            if not self.failed:
                self.save()
        finally:
            self.file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        with contextlib.suppress(JournalError):  # the outcomes so far, if the disk takes them
            self.close()


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), default=str) + "\n"


def journal_files(folder: Path) -> list[Path]:
    """The journal's files, oldest attempt first."""
    return sorted(folder.glob("*.jsonl.gz")) if folder.is_dir() else []


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """The records of one journal file; a last member cut short is dropped."""
    with path.open("rb") as file:
        member = zlib.decompressobj(31)
        text = bytearray()
        while chunk := file.read(READ_CHUNK):
            while chunk:
                try:
                    text += member.decompress(chunk)
                except zlib.error:
                    return  # a member written over (a torn write the truncate missed)
                if not member.eof:
                    break
                yield from _lines(text)
                text.clear()
                chunk = member.unused_data
                member = zlib.decompressobj(31)


def _lines(text: bytearray) -> Iterator[dict[str, Any]]:
    for line in bytes(text).splitlines():
        if line:
            yield json.loads(line)

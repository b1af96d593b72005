"""One deleting run at a time per registry storage: a lock object in the storage itself.

Two prunes deleting from one storage at once would judge each other's half-done work (a
link gone, its blob not yet) and race on the same keys. Prefect's ``concurrency_limit: 1``
(deployments/prefect.yaml) keeps runs of one deployment apart; this lock also covers runs
from a laptop, a cron job or another deployment. It lives at ``_regprune/lock`` in the
registry's root (beside ``docker/``, outside everything the registry reads), is created only
when absent (each backend's own conditional create behind ``Storage.lock_create``: ``O_EXCL``
on a folder, ``If-None-Match: *`` on S3, Azure and Swift, ``ifGenerationMatch=0`` on GCS) and
says who holds it: run id, host, pid, start time. This module is the protocol only, the same
on every backend.

A lock whose holder is provably gone (same host, and its process no longer exists or the
host rebooted since) is taken over with a message; any other lock stops the run with the
holder's name. ``--force-unlock`` removes a lock left by a run that died elsewhere.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from regprune import interrupts, progress
from regprune.storage import Storage, StorageSpec, open_storage

LOCK_KEY = "_regprune/lock"
"""Relative to the registry's root (the folder or bucket prefix holding ``docker/``)."""
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


class StorageLocked(RuntimeError):
    """Another run holds the storage's lock; the message names it and what to do."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds the lock, as written into the lock object."""

    run_id: str
    host: str
    pid: int
    started_at: str
    boot_id: str | None = None
    flow_run_id: str | None = None
    run_dir: str | None = None

    @classmethod
    def this_process(cls, run_id: str, run_dir: str | None) -> LockHolder:
        from prefect.runtime import flow_run

        return cls(
            run_id=run_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            boot_id=current_boot_id(),
            flow_run_id=flow_run.get_id(),
            run_dir=run_dir,
        )

    def encode(self) -> bytes:
        return (json.dumps(asdict(self), indent=1) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes) -> LockHolder | None:
        """None when the content is not a lock this tool wrote (or is still being written)."""
        try:
            fields = json.loads(data)
            return cls(**fields) if isinstance(fields, dict) else None
        except (ValueError, TypeError):
            return None

    def is_gone(self) -> bool:
        """True only when provably so: the same host, and the host rebooted since or no
        process with that id exists. A holder on another host is never judged from here."""
        if self.host != socket.gethostname():
            return False
        boot = current_boot_id()
        if self.boot_id and boot and self.boot_id != boot:
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # exists, owned by someone else
            return False
        return False

    def describe(self) -> str:
        parts = [f"run {self.run_id} on host {self.host}, pid {self.pid}"]
        parts.append(f"started {self.started_at}")
        if self.flow_run_id:
            parts.append(f"Prefect flow run {self.flow_run_id}")
        if self.run_dir:
            parts.append(f"run folder {self.run_dir}")
        return ", ".join(parts)


def current_boot_id() -> str | None:
    try:
        return BOOT_ID_FILE.read_text().strip() or None
    except OSError:
        return None


_held: set[StorageLock] = set()
"""The locks this process holds: an interrupted command releases what is still held."""


def held_locks() -> list[StorageLock]:
    return list(_held)


interrupts.track_locks(held_locks)  # an interrupted run reports and releases them


class StorageLock:
    """Held from :meth:`acquire` to :meth:`release`."""

    def __init__(
        self,
        spec: StorageSpec,
        run_id: str,
        run_dir: str | None = None,
        force_unlock: bool = False,
        storage: Storage | None = None,
    ):
        """``storage``: the run's (a dry run's holds its lock in memory), else ``spec``'s."""
        self.spec = spec
        self.holder = LockHolder.this_process(run_id, run_dir)
        self.force_unlock = force_unlock
        self.storage = storage or open_storage(spec)
        self.where = self.storage.lock_where(LOCK_KEY)

    def acquire(self) -> None:
        data = self.holder.encode()
        if self.force_unlock:
            self._remove_existing("removed by --force-unlock")
        for _ in range(3):
            if self._create(data):
                _held.add(self)
                return
            found = self._read()
            if found is None:  # released in between: try again
                continue
            holder = LockHolder.decode(found)
            if holder is None or not holder.is_gone():
                raise StorageLocked(self._held_message(holder, found))
            if self._read() == found:
                progress.warning(
                    f"Taking over the lock of {holder.describe()}: that process is gone"
                )
                self.storage.lock_remove(LOCK_KEY)
        raise StorageLocked(
            f"the lock {self.where} of {self.spec.display} kept changing hands while "
            "this run tried to take it: another run is starting; try again later"
        )

    def release(self) -> None:
        """Remove the lock if it is still this run's (a --force-unlock elsewhere may have
        taken it: that run's lock is left alone)."""
        if self._read() == self.holder.encode():
            self.storage.lock_remove(LOCK_KEY)
        else:
            progress.warning(f"The lock {self.where} is no longer this run's: left in place")
        _held.discard(self)

    def _create(self, data: bytes) -> bool:
        """The backend's conditional create, then the content read back, in case an endpoint
        ignored the condition and another run's write landed last."""
        return self.storage.lock_create(LOCK_KEY, data) and self._read() == data

    def _read(self) -> bytes | None:
        return self.storage.lock_read(LOCK_KEY)

    def _remove_existing(self, why: str) -> None:
        found = self._read()
        if found is None:
            return
        holder = LockHolder.decode(found)
        who = holder.describe() if holder else "unreadable content"
        progress.warning(f"Lock {self.where} of {who} {why}")
        self.storage.lock_remove(LOCK_KEY)

    def _held_message(self, holder: LockHolder | None, found: bytes) -> str:
        if holder is None:
            who = f"a lock that cannot be read ({len(found)} bytes: being written, or damaged)"
        else:
            who = holder.describe()
        return (
            f"{self.spec.display} is locked by another regprune run: {who} (lock "
            f"{self.where}). Two runs must not delete from one storage at once: wait "
            "for that run to finish. If it is not running any more (killed on another "
            "machine), remove the lock with --force-unlock."
        )

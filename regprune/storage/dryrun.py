"""The storage a dry run changes: every read goes to the real storage, every change is only
answered as what it would do. The one place a dry run differs from a confirmed run: the
executor, the re-check, restores and purges run unchanged over it and record its answers
(``would-quarantine``, ``would-restore``, ``would-purge``), so a dry run walks the same code
as ``--confirm`` up to the last call (the reference's ``DryRunPruner`` beside
``RegistryPruner``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa

from regprune.storage.base import (
    WOULD_DELETE,
    WOULD_MOVE,
    Storage,
    StorageObject,
)


class DryRunStorage(Storage):
    """Reads through ``storage``; moves and deletes answer what they would do without
    changing anything."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.spec = storage.spec
        self._locks: dict[str, bytes] = {}

    def check_root(self) -> None:
        self.storage.check_root()

    def list_children(self, prefix: str) -> tuple[list[str], list[StorageObject]]:
        return self.storage.list_children(prefix)

    def walk(self, prefix: str) -> Iterator[StorageObject]:
        return self.storage.walk(prefix)

    def list_files(self, prefix: str) -> pa.Table:
        return self.storage.list_files(prefix)

    def read_many(self, keys: Sequence[str]) -> dict[str, bytes | Exception]:
        return self.storage.read_many(keys)

    def stat_many(self, keys: Sequence[str]) -> dict[str, StorageObject | None]:
        return self.storage.stat_many(keys)

    def area(self, name: str) -> Storage:
        return DryRunStorage(self.storage.area(name))

    def move_many(self, keys: Sequence[str], to: Storage) -> dict[str, str]:
        """WOULD_MOVE for every key: callers move keys they just found (the executor's
        re-read, a quarantine's listing), and reading them again would cost a request per
        key on an object store."""
        return dict.fromkeys(keys, WOULD_MOVE)

    def delete_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        return dict.fromkeys(keys)

    def purge_many(self, quarantine_id: str, keys: Sequence[str]) -> dict[str, str]:
        return dict.fromkeys(keys, WOULD_DELETE)

    # The lock a dry run would take: held in memory only (a dry run writes nothing, needs no
    # write access, and must not stop a confirmed run).

    def lock_create(self, key: str, data: bytes) -> bool:
        if key in self._locks:
            return False
        self._locks[key] = data
        return True

    def lock_read(self, key: str) -> bytes | None:
        return self._locks.get(key)

    def lock_remove(self, key: str) -> None:
        self._locks.pop(key, None)

    def lock_where(self, key: str) -> str:
        return self.storage.lock_where(key)

"""The storage a dry run deletes from: every read goes to the real storage, every delete is
only recorded. The executor runs unchanged over it, so a dry run walks the same code as
``--confirm`` up to the last call (the reference's ``DryRunPruner`` beside ``RegistryPruner``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa

from regprune.storage.base import Storage, StorageObject


class DryRunStorage(Storage):
    """Reads through ``storage``; ``delete_many`` records the keys (``would_delete``) and
    answers each as done, without a request."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.spec = storage.spec
        self.would_delete: list[str] = []

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

    def delete_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        self.would_delete.extend(keys)
        return dict.fromkeys(keys)

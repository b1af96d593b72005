"""A registry rootdirectory on a local (or mounted) filesystem, walked with os.scandir."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from regprune.layout import V2_ROOT
from regprune.storage.base import (
    EMPTY_FOLDER,
    LISTING_SCHEMA,
    Storage,
    StorageConfigError,
    StorageObject,
    StorageSpec,
    _timestamps,
    listing_table,
    modification_time,
)


class LocalStorage(Storage):
    """A registry ``rootdirectory`` on a local (or mounted) filesystem."""

    def __init__(self, spec: StorageSpec):
        self.spec = spec
        self.root = spec.local_root()
        self.v2 = self.root / V2_ROOT

    def check_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StorageConfigError(
                f"storage {self.root} is a file, not a folder: pass the registry's "
                "rootdirectory (the folder holding docker/registry/v2)"
            )
        if not self.root.is_dir():
            raise StorageConfigError(f"storage folder {self.root} does not exist")
        if not self.v2.is_dir():
            raise StorageConfigError(
                f"no registry storage in {self.root}: expected {V2_ROOT}/ inside it "
                "(pass the registry's rootdirectory)"
            )

    def list_children(self, prefix: str) -> tuple[list[str], list[StorageObject]]:
        folder = self.v2 / prefix
        dirs: list[str] = []
        files: list[StorageObject] = []
        if not folder.is_dir():
            return dirs, files
        with os.scandir(folder) as entries:
            for entry in entries:
                if not _is_utf8(entry.name):
                    key = _printable(prefix + entry.name)
                    files.append(StorageObject(key, -1, None, problem="name is not UTF-8"))
                elif entry.is_dir(follow_symlinks=False):
                    dirs.append(entry.name)
                else:
                    files.append(_describe(entry, prefix + entry.name))
        return sorted(dirs), files

    def walk(self, prefix: str) -> Iterator[StorageObject]:
        for row in self.list_files(prefix).to_pylist():
            yield StorageObject(**row)

    def list_files(self, prefix: str) -> pa.Table:
        """scandir + lstat of every file, appended to plain lists: about as little Python per
        file as the walk allows. Files the walk finds wrong become rows with a ``problem``."""
        keys: list[str] = []
        sizes: list[int] = []
        mtimes: list[int] = []
        odd: list[StorageObject] = []
        top = self.v2 / prefix
        stack = [(str(top), prefix.rstrip("/") + "/")] if top.is_dir() else []
        while stack:
            folder, key_prefix = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except OSError as exc:
                odd.append(StorageObject(key_prefix, -1, None, problem=f"unreadable folder: {exc}"))
                continue
            if not entries:
                odd.append(StorageObject(key_prefix, -1, None, problem=EMPTY_FOLDER))
            for entry in entries:
                name = entry.name
                if not (name.isascii() or _is_utf8(name)):
                    key = _printable(key_prefix + name)
                    odd.append(StorageObject(key, -1, None, problem="name is not UTF-8"))
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, key_prefix + name + "/"))
                else:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        info = None
                    if info is not None and stat.S_ISREG(info.st_mode):
                        keys.append(key_prefix + name)
                        sizes.append(info.st_size)
                        mtimes.append(info.st_mtime_ns)
                    else:  # says what is wrong with it (rare: a symlink, a vanished file)
                        odd.append(_describe(entry, key_prefix + name))
        files = pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "size": pa.array(sizes, pa.int64()),
                "modified": _timestamps(mtimes),
                "etag": pa.nulls(len(keys), pa.string()),
                "problem": pa.nulls(len(keys), pa.string()),
            },
            schema=LISTING_SCHEMA,
        )
        return pa.concat_tables([files, listing_table(odd)]) if odd else files

    def read_many(self, keys: Sequence[str]) -> dict[str, bytes | Exception]:
        out: dict[str, bytes | Exception] = {}
        for key in keys:
            try:
                out[key] = (self.v2 / key).read_bytes()
            except OSError as exc:
                out[key] = exc
        return out

    def stat_many(self, keys: Sequence[str]) -> dict[str, StorageObject | None]:
        out: dict[str, StorageObject | None] = {}
        for key in keys:
            try:
                info = (self.v2 / key).lstat()
            except FileNotFoundError:
                out[key] = None
                continue
            out[key] = StorageObject(key, info.st_size, modification_time(info.st_mtime_ns))
        return out

    def delete_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        """Unlink each file, then remove the folders it leaves empty (up to the section
        folder), as distribution's filesystem driver does; a key ending in ``/`` is an empty
        folder (as the walk reports them), removed after the files, deepest first."""
        out: dict[str, str | None] = {}
        folders = sorted((k for k in keys if k.endswith("/")), key=len, reverse=True)
        for key in folders:
            out[key] = None
        for key in [k for k in keys if not k.endswith("/")] + folders:
            path = self.v2 / key
            if key.endswith("/"):
                self._prune_empty_parents(path)
                continue
            try:
                path.unlink(missing_ok=True)
                out[key] = None
            except OSError as exc:
                out[key] = f"{type(exc).__name__}: {exc}"
                continue
            self._prune_empty_parents(path.parent)
        return out

    def _prune_empty_parents(self, folder: Path) -> None:
        stop = {self.v2, self.v2 / "blobs", self.v2 / "repositories"}
        while folder not in stop and self.v2 in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone, or busy): stop climbing
                return
            folder = folder.parent


def _describe(entry: os.DirEntry[str], key: str) -> StorageObject:
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError as exc:
        return StorageObject(key, -1, None, problem=f"cannot stat: {exc}")
    if stat.S_ISREG(info.st_mode):
        return StorageObject(key, info.st_size, modification_time(info.st_mtime_ns))
    return _irregular(key, info)


def _irregular(key: str, info: os.stat_result) -> StorageObject:
    """A symlink or special file: listed as an anomaly, never read or deleted."""
    problem = "symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
    return StorageObject(key, -1, modification_time(info.st_mtime_ns), problem=problem)


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(key: str) -> str:
    return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")

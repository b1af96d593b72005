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
    GONE,
    LISTING_SCHEMA,
    MOVED,
    Storage,
    StorageConfigError,
    StorageObject,
    StorageSpec,
    _timestamps,
    listing_table,
    modification_time,
    unreadable,
)

ABSENT = (FileNotFoundError, NotADirectoryError)
"""A path that is not there (a folder or file deleted since its parent was listed, or a
folder that is a file): absent. Any other error (permission denied, I/O) is unreadable."""


class LocalStorage(Storage):
    """A registry ``rootdirectory`` on a local (or mounted) filesystem."""

    def __init__(self, spec: StorageSpec):
        self.spec = spec
        self.root = spec.local_root()
        self.v2 = self.root / spec.folder
        # the folders deleting never removes: the v2 tree's own; an area (a quarantine) goes
        # with its last file, and the folders above it up to the root when they are empty
        # too, so a drained quarantine leaves nothing behind
        self._kept_folders = (
            {self.v2, self.v2 / "blobs", self.v2 / "repositories"}
            if spec.area is None
            else {self.root}
        )
        self._top = self.v2 if spec.area is None else self.root

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
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not _is_utf8(entry.name):
                        key = _printable(prefix + entry.name)
                        files.append(StorageObject(key, -1, None, problem="name is not UTF-8"))
                    elif entry.is_dir(follow_symlinks=False):
                        dirs.append(entry.name)
                    else:
                        files.append(_describe(entry, prefix + entry.name))
        except ABSENT:
            return [], []
        except OSError as exc:
            raise unreadable("folder", str(folder), exc, "listing") from exc
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
        first = prefix.rstrip("/") + "/" if prefix.strip("/") else ""  # the root: no "/"
        stack = [(str(self.v2 / prefix), first)]
        while stack:
            folder, key_prefix = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except ABSENT:  # deleted since its parent was listed (or no such prefix at all)
                continue
            except OSError as exc:  # what it holds is unknown, not absent: the walk stops
                raise unreadable("folder", folder, exc, "listing") from exc
            if not entries:
                odd.append(StorageObject(key_prefix, -1, None, problem=EMPTY_FOLDER))
            for entry in entries:
                name = entry.name
                if not (name.isascii() or _is_utf8(name)):
                    key = _printable(key_prefix + name)
                    odd.append(StorageObject(key, -1, None, problem="name is not UTF-8"))
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, key_prefix + name + "/"))
                        continue
                    info = entry.stat(follow_symlinks=False)
                except ABSENT:  # deleted since the folder was listed
                    continue
                except OSError as exc:
                    raise unreadable("folder", entry.path, exc, "stat") from exc
                if stat.S_ISREG(info.st_mode):
                    keys.append(key_prefix + name)
                    sizes.append(info.st_size)
                    mtimes.append(info.st_mtime_ns)
                else:  # says what is wrong with it (rare: a symlink, a FIFO)
                    odd.append(_irregular(key_prefix + name, info))
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
            except ABSENT as exc:
                out[key] = FileNotFoundError(exc.errno, exc.strerror, exc.filename)
            except OSError as exc:  # unreadable: the caller must not take it for absent
                out[key] = exc
        return out

    def stat_many(self, keys: Sequence[str]) -> dict[str, StorageObject | None]:
        out: dict[str, StorageObject | None] = {}
        for key in keys:
            try:
                info = (self.v2 / key).lstat()
            except ABSENT:
                out[key] = None
                continue
            except OSError as exc:
                raise unreadable("folder", str(self.v2 / key), exc, "stat") from exc
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

    def area(self, name: str) -> Storage:
        return LocalStorage(self.spec.in_area(name))

    def move_many(self, keys: Sequence[str], to: Storage) -> dict[str, str]:
        """``os.rename`` into the same key of ``to`` (a folder on the same filesystem: the
        quarantine lives beside ``docker/``), creating its folders, then removing the
        folders the move left empty, as deleting does. A folder whose files are exactly the
        keys moved (a blob's ``data``, a link: the layout's one file per folder) moves whole,
        one rename instead of a mkdir, a rename and an rmdir (:meth:`_move_folder`). No
        fsync: a rename a power loss undoes leaves the file where it was before that move,
        which a later re-check or undo finds as it is."""
        if not isinstance(to, LocalStorage):
            raise TypeError(f"cannot move from a folder to {type(to).__name__}")
        out: dict[str, str] = {}
        made: set[Path] = set()
        by_folder: dict[str, list[str]] = {}
        for key in keys:
            by_folder.setdefault(key.rpartition("/")[0], []).append(key)
        for folder, group in by_folder.items():
            if folder and self._move_folder(folder, group, to, made):
                out.update(dict.fromkeys(group, MOVED))
                self._prune_empty_parents((self.v2 / folder).parent)
                continue
            for key in group:
                out[key] = self._move_file(key, to)
        return out

    def _move_folder(self, folder: str, keys: list[str], to: LocalStorage, made: set[Path]) -> bool:
        """Rename ``folder`` into ``to`` when it holds exactly the files ``keys`` and ``to``
        has no such folder yet; False (nothing moved) otherwise, for the file by file move.
        A file that appeared in it between the listing and the rename (no writer of the
        registry's layout adds one) is moved back at once: only the keys asked for move."""
        source, target = self.v2 / folder, to.v2 / folder
        names = {key.rpartition("/")[2] for key in keys}
        try:
            if set(os.listdir(source)) != names or os.path.lexists(target):
                return False
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            os.rename(source, target)
        except OSError:  # gone, busy, not a folder: the file by file move says what it is
            made.discard(target.parent)
            return False
        for extra in set(os.listdir(target)) - names:
            source.mkdir(parents=True, exist_ok=True)
            os.rename(target / extra, source / extra)
        return True

    def _move_file(self, key: str, to: LocalStorage) -> str:
        source, target = self.v2 / key, to.v2 / key
        outcome = ""
        for _ in range(2):  # a folder just made may be removed as empty meanwhile
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(source, target)
                outcome = MOVED
                break
            except FileNotFoundError as exc:
                if not os.path.lexists(source):
                    outcome = GONE
                    to._prune_empty_parents(target.parent)  # made for nothing
                    break
                outcome = f"{type(exc).__name__}: {exc}"
            except OSError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
                break
        if outcome == MOVED:
            self._prune_empty_parents(source.parent)
        return outcome

    def _prune_empty_parents(self, folder: Path) -> None:
        stop = self._kept_folders
        while folder not in stop and (folder == self.v2 or self._top in folder.parents):
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone, or busy): stop climbing
                return
            folder = folder.parent

    def lock_create(self, key: str, data: bytes) -> bool:
        """``O_EXCL``: the file system creates the file only if it is absent."""
        if not self.root.is_dir():
            raise StorageConfigError(f"storage folder {self.root} does not exist")
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return True

    def lock_read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def lock_remove(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def lock_where(self, key: str) -> str:
        return str(self.root / key)


def _describe(entry: os.DirEntry[str], key: str) -> StorageObject:
    try:
        info = entry.stat(follow_symlinks=False)
    except ABSENT as exc:
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

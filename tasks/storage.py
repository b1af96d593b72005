"""Where the registry keeps its bytes: a local folder or an S3 bucket, behind one small API.

A :class:`StorageSpec` is plain data (picklable), so a task on any worker can reopen the storage;
credentials stay in ``options`` and are never printed: use :attr:`StorageSpec.display`.
"""

from __future__ import annotations

import os
import posixpath
import random
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import yaml

from regprune.tasks.layout import V2_ROOT
from regprune.tasks.tables import TIMESTAMP

SUPPORTED_DRIVERS = ("filesystem", "s3")
DELETE_BATCH = 1000  # S3 DeleteObjects takes at most 1,000 keys
DELETE_ATTEMPTS = 6
DELETE_BACKOFF_SECONDS = 0.5
LISTED_STAT_MIN_DEPTH = 3
"""``blobs/sha256/ab/`` or ``repositories/ns/name/``: narrow enough to list instead of HEAD."""
EMPTY_FOLDER = "empty folder"
"""The walker's problem text for a folder with nothing in it: the registry's own deletes leave
these behind, so only the snapshot decides where one matters (a blob folder without data)."""


LISTING_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("size", pa.int64()),
        ("modified", TIMESTAMP),
        ("etag", pa.string()),
        ("problem", pa.string()),
    ]
)
"""A walk as columns (:meth:`Storage.list_files`): the fields of :class:`StorageObject`."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StorageConfigError(ValueError):
    """The storage location or registry configuration cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class StorageObject:
    """One listed file, keyed relative to ``docker/registry/v2``.

    ``problem`` is set for entries the walker itself finds wrong (a symlink, a name that is not
    UTF-8, a folder without files); those are reported as anomalies and never acted upon.
    """

    key: str
    size: int
    modified: datetime | None
    etag: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class StorageSpec:
    """A storage URL (``/path``, ``file:///path``, ``s3://bucket/rootdirectory``) and options."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        scheme = urlparse(self.url).scheme
        return "file" if scheme in ("", "file") else scheme

    @property
    def display(self) -> str:
        """The URL without credentials, for logs, reports and snapshot.json."""
        parsed = urlparse(self.url)
        if parsed.password or parsed.username:
            netloc = parsed.hostname or ""
            return parsed._replace(netloc=netloc).geturl()
        return self.url

    def local_root(self) -> Path:
        parsed = urlparse(self.url)
        return Path(parsed.path if parsed.scheme == "file" else self.url)


def parse_storage_option(text: str) -> tuple[str, Any]:
    """``key=value`` from ``--storage-option``; values ``true``/``false``/numbers are typed."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise StorageConfigError(f"--storage-option expects key=value, got {text!r}")
    lowered = value.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    try:
        return key, int(value)
    except ValueError:
        return key, value


def storage_from_registry_config(path: str | os.PathLike[str]) -> StorageSpec:
    """Read the registry's own ``config.yml``: its ``storage`` section decides."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StorageConfigError(f"cannot read registry config {path}: {exc}") from exc
    storage = (config or {}).get("storage") if isinstance(config, dict) else None
    if not isinstance(storage, dict):
        raise StorageConfigError(f"{path} has no storage section")
    drivers = [k for k in storage if k not in ("delete", "cache", "maintenance", "redirect")]
    if "filesystem" in drivers:
        section = storage["filesystem"] or {}
        return StorageSpec(str(section.get("rootdirectory", "/var/lib/registry")))
    if "s3" in drivers:
        return _s3_from_registry(storage["s3"] or {}, path)
    found = ", ".join(drivers) or "none"
    raise StorageConfigError(
        f"unsupported storage driver in {path}: {found}; regprune supports "
        f"{' and '.join(SUPPORTED_DRIVERS)}"
    )


def _s3_from_registry(section: dict[str, Any], path: str | os.PathLike[str]) -> StorageSpec:
    bucket = section.get("bucket")
    if not bucket:
        raise StorageConfigError(f"{path}: storage.s3.bucket is missing")
    root = str(section.get("rootdirectory") or "").strip("/")
    client_kwargs: dict[str, Any] = {}
    if section.get("region"):
        client_kwargs["region_name"] = section["region"]
    endpoint = section.get("regionendpoint")
    if endpoint:
        if "://" not in endpoint:
            secure = section.get("secure", True)
            endpoint = f"{'https' if secure else 'http'}://{endpoint}"
        client_kwargs["endpoint_url"] = endpoint
    options: dict[str, Any] = {"client_kwargs": client_kwargs}
    if section.get("accesskey"):
        options["key"] = section["accesskey"]
        options["secret"] = section.get("secretkey", "")
    return StorageSpec(f"s3://{bucket}/{root}".rstrip("/"), options)


SECRET_OPTION_WORDS = ("secret", "key", "token", "password", "credential")


def check_options_hold_no_secrets(options: dict[str, Any]) -> None:
    """Storage options become flow-run parameters, which Prefect stores and shows: refuse
    credentials there and point at the places that keep them private."""
    for name, value in options.items():
        if isinstance(value, dict):
            check_options_hold_no_secrets(value)
        elif any(word in name.lower() for word in SECRET_OPTION_WORDS):
            raise StorageConfigError(
                f"storage option {name!r} looks like a credential; pass credentials through "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) or the registry "
                "config file, never as options: those are stored with the flow run"
            )


def resolve_storage(
    storage: str | None,
    storage_options: dict[str, Any] | None = None,
    registry_config: str | None = None,
) -> StorageSpec:
    """One of ``storage`` (URL) or ``registry_config`` (the registry's config.yml)."""
    if bool(storage) == bool(registry_config):
        raise StorageConfigError("give exactly one of --storage URL or --registry-config FILE")
    if registry_config:
        return storage_from_registry_config(registry_config)
    options = dict(storage_options or {})
    check_options_hold_no_secrets(options)
    return StorageSpec(str(storage), options)


def open_storage(spec: StorageSpec) -> Storage:
    if spec.scheme == "file":
        return LocalStorage(spec)
    if spec.scheme == "s3":
        return S3Storage(spec)
    raise StorageConfigError(
        f"unsupported storage URL {spec.display}: use a folder, file:///folder or s3://bucket/root"
    )


class Storage:
    """The operations the snapshot needs; keys are relative to ``docker/registry/v2``."""

    spec: StorageSpec

    def check_root(self) -> None:
        """Fail early, with the path, when no registry lives there."""
        raise NotImplementedError

    def list_children(self, prefix: str) -> tuple[list[str], list[StorageObject]]:
        """Immediate sub-folders (names) and files directly under ``prefix``."""
        raise NotImplementedError

    def walk(self, prefix: str) -> Iterator[StorageObject]:
        """Every file below ``prefix`` (flat, recursive), in no particular order."""
        raise NotImplementedError

    def list_files(self, prefix: str) -> pa.Table:
        """The walk as one table (:data:`LISTING_SCHEMA`): the snapshot's bulk path, where a
        Python object per file would cost more than the listing itself."""
        return listing_table(list(self.walk(prefix)))

    def read_many(self, keys: Sequence[str]) -> dict[str, bytes | Exception]:
        raise NotImplementedError

    def stat_many(self, keys: Sequence[str]) -> dict[str, StorageObject | None]:
        """Size and modification time of each key; None when it does not exist."""
        raise NotImplementedError

    def delete_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        """Delete files; per key None when done (a key already gone counts as done) or the
        error. Never raises for one key: the caller records every outcome."""
        raise NotImplementedError


class LocalStorage(Storage):
    """A registry ``rootdirectory`` on a local (or mounted) filesystem."""

    def __init__(self, spec: StorageSpec):
        self.spec = spec
        self.root = spec.local_root()
        self.v2 = self.root / V2_ROOT

    def check_root(self) -> None:
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


class S3Storage(Storage):
    """An S3 bucket through s3fs; listings are flat (no delimiter, 1,000 keys a request)."""

    def __init__(self, spec: StorageSpec):
        import s3fs

        self.spec = spec
        parsed = urlparse(spec.url)
        if not parsed.netloc:
            raise StorageConfigError(f"S3 URL {spec.display} names no bucket")
        self.bucket = parsed.netloc
        root = parsed.path.strip("/")
        self.base = "/".join(p for p in (self.bucket, root, V2_ROOT) if p)
        # max_concurrency=1: s3fs otherwise sends a HEAD before every GET (to decide whether
        # to split the download), doubling the requests for the small files the snapshot reads
        options = {
            "use_listings_cache": False,
            "skip_instance_cache": True,
            "max_concurrency": 1,
            **spec.options,
        }
        self.fs = s3fs.S3FileSystem(**options)

    def check_root(self) -> None:
        try:
            found = self.fs.ls(self.base, detail=False)
        except FileNotFoundError:
            found = []
        except PermissionError as exc:
            raise StorageConfigError(f"access denied listing {self.spec.display}: {exc}") from exc
        if not found:
            raise StorageConfigError(
                f"no registry storage at {self.spec.display}: nothing under {V2_ROOT}/ "
                "(check the bucket and rootdirectory)"
            )

    def list_children(self, prefix: str) -> tuple[list[str], list[StorageObject]]:
        try:
            listing = self.fs.ls(f"{self.base}/{prefix}", detail=True)
        except FileNotFoundError:
            return [], []
        dirs = sorted(
            entry["name"].rstrip("/").rsplit("/", 1)[-1]
            for entry in listing
            if entry["type"] == "directory"
        )
        files = [self._object(entry) for entry in listing if entry["type"] != "directory"]
        return dirs, files

    def walk(self, prefix: str) -> Iterator[StorageObject]:
        try:
            found = self.fs.find(f"{self.base}/{prefix}", detail=True, withdirs=False)
        except FileNotFoundError:
            return
        for entry in found.values():
            yield self._object(entry)

    def _object_key(self, key: str) -> str:
        """The S3 object key of a key relative to ``docker/registry/v2``."""
        return f"{self.base.split('/', 1)[1]}/{key}"

    def _object(self, entry: dict[str, Any]) -> StorageObject:
        key = entry["name"][len(self.base) + 1 :]
        modified = entry.get("LastModified")
        etag = (entry.get("ETag") or "").strip('"') or None
        if key.endswith("/"):
            return StorageObject(key, -1, modified, etag, problem=EMPTY_FOLDER)
        return StorageObject(key, int(entry.get("size") or 0), modified, etag)

    def stat_many(self, keys: Sequence[str]) -> dict[str, StorageObject | None]:
        """One flat listing of the keys' common folder when it is narrow enough (a blob
        prefix, one repository): a page per 1,000 objects instead of a HEAD per key."""
        folder = _common_folder(keys)
        if folder.count("/") >= LISTED_STAT_MIN_DEPTH:
            found = {obj.key: obj for obj in self.walk(folder)}
            return {key: found.get(key) for key in keys}
        return {key: self._head(key) for key in keys}

    def _head(self, key: str) -> StorageObject | None:
        """One HEAD request (s3fs's ``info`` follows a 404 with a listing, in case the key is
        a folder: a second request per missing object)."""
        try:
            head = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self._object_key(key))
        except FileNotFoundError:
            return None
        etag = (head.get("ETag") or "").strip('"') or None
        return StorageObject(key, int(head.get("ContentLength") or 0), head["LastModified"], etag)

    def delete_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        """``DeleteObjects`` with up to 1,000 keys a request; throttling (503 SlowDown) and
        server errors are retried with backoff, and keys the answer lists as failed are
        retried, then reported, never counted as done."""
        out: dict[str, str | None] = {}
        for start in range(0, len(keys), DELETE_BATCH):
            out.update(self._delete_batch(list(keys[start : start + DELETE_BATCH])))
        return out

    def _delete_batch(self, keys: list[str]) -> dict[str, str | None]:
        from botocore.exceptions import BotoCoreError

        pending = {self._object_key(key): key for key in keys}
        out: dict[str, str | None] = {}
        for attempt in range(DELETE_ATTEMPTS):
            if not pending:
                break
            try:
                answer = self.fs.call_s3(
                    "delete_objects",
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in pending], "Quiet": True},
                )
            # OSError: s3fs's translation of throttling and 5xx; BotoCoreError: connections
            # refused or reset once botocore's own retries are spent (s3fs passes them on)
            except (OSError, BotoCoreError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt == DELETE_ATTEMPTS - 1:
                    out.update({key: error for key in pending.values()})
                    return out
                time.sleep(_backoff(attempt))
                continue
            failed = {
                e["Key"]: f"{e.get('Code')}: {e.get('Message')}" for e in answer.get("Errors", [])
            }
            for s3_key, key in pending.items():
                if s3_key not in failed:
                    out[key] = None
            pending = {k: v for k, v in pending.items() if k in failed}
            if pending and attempt < DELETE_ATTEMPTS - 1:
                time.sleep(_backoff(attempt))
            else:
                out.update({pending[k]: failed[k] for k in pending})
        return out

    def read_many(self, keys: Sequence[str]) -> dict[str, bytes | Exception]:
        if not keys:
            return {}
        paths = {f"{self.base}/{key}": key for key in keys}
        found = self.fs.cat(list(paths), on_error="return")
        return {paths[path]: value for path, value in found.items()}


def _common_folder(keys: Sequence[str]) -> str:
    """The longest folder (ending in ``/``) that holds every key ('' for fewer than two)."""
    distinct = set(keys)
    return posixpath.commonpath(distinct) + "/" if len(distinct) > 1 else ""


def _backoff(attempt: int) -> float:
    return min(20.0, DELETE_BACKOFF_SECONDS * 2**attempt) * (0.5 + random.random() / 2)


def listing_table(objects: Sequence[StorageObject]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "key": o.key,
                "size": o.size,
                "modified": o.modified,
                "etag": o.etag,
                "problem": o.problem,
            }
            for o in objects
        ],
        schema=LISTING_SCHEMA,
    )


def modification_time(mtime_ns: int) -> datetime:
    """A file's mtime at microsecond precision, truncated as :func:`_timestamps` does, so a
    re-read before deleting compares equal to the snapshot's value."""
    micros = abs(mtime_ns) // 1000
    return _EPOCH + timedelta(microseconds=micros if mtime_ns >= 0 else -micros)


def _timestamps(mtimes_ns: list[int]) -> pa.Array:
    nanos = pa.array(mtimes_ns, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
    return nanos.cast(TIMESTAMP, safe=False)


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

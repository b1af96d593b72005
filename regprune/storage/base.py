"""The storage interface every backend implements, and the plain data it speaks in."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from regprune.tables import TIMESTAMP

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


class StorageListingError(OSError):
    """A listing that still failed after the client's own retries; the message names the
    backend, the path and the answer. A run stops on it (a walk with a page missing proves
    nothing is garbage); the snapshot's tasks retry it first."""


def listing_failed(
    backend: str, where: str, status: int | None, exc: BaseException, action: str = "listing"
) -> Exception:
    """What a backend raises when a listing (or a HEAD the walk needs) of ``where`` (a URL
    without credentials) failed: a :class:`StorageConfigError` for 401/403 (retrying will
    not grant access), else a :class:`StorageListingError`."""
    detail = " ".join(str(exc).split())[:300] or type(exc).__name__
    if status in (401, 403):
        return StorageConfigError(f"access denied: {backend} {action} of {where} ({detail})")
    return StorageListingError(f"{backend} {action} of {where} failed: {detail}")


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
    """A storage URL (``/path``, ``file:///path``, ``s3://``, ``gs://``, ``az://`` or
    ``swift://`` with the bucket or container and the root) and the client's options."""

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

    def bucket_and_root(self, service: str, holder: str) -> tuple[str, str]:
        """A cloud URL's bucket (or container) and root directory, without slashes at the
        ends; ``service`` and ``holder`` name them in the error when the URL has none."""
        parsed = urlparse(self.url)
        if not parsed.netloc:
            raise StorageConfigError(f"{service} URL {self.display} names no {holder}")
        return parsed.netloc, parsed.path.strip("/")

    def local_root(self) -> Path:
        parsed = urlparse(self.url)
        return Path(parsed.path if parsed.scheme == "file" else self.url)


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

    # The storage lock's primitive, one per backend; regprune/lock.py holds the protocol
    # (who holds it, when it is stale, --force-unlock). ``key`` is relative to the storage's
    # root, beside ``docker/`` (outside everything the registry reads), not to
    # ``docker/registry/v2``.

    def lock_create(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if nothing is there, in one conditional request
        (``O_EXCL``, ``If-None-Match: *``, ``ifGenerationMatch=0``); False if something is."""
        raise NotImplementedError

    def lock_read(self, key: str) -> bytes | None:
        """The content at ``key``, or None when there is none."""
        raise NotImplementedError

    def lock_remove(self, key: str) -> None:
        """Remove ``key``; nothing there is no error."""
        raise NotImplementedError

    def lock_where(self, key: str) -> str:
        """Where ``key`` lives, for messages (a path, or a URL without credentials)."""
        raise NotImplementedError


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


def folder_marker(key: str, modified: datetime | None) -> StorageObject:
    """An object store's folder marker (a 0-byte ``x/``, what the S3 console's "Create
    folder" and sync tools leave) as the walk of a folder lists an empty folder."""
    return StorageObject(key, -1, modified, problem=EMPTY_FOLDER)


def modification_time(mtime_ns: int) -> datetime:
    """A file's mtime at microsecond precision, truncated as :func:`_timestamps` does, so a
    re-read before deleting compares equal to the snapshot's value."""
    micros = abs(mtime_ns) // 1000
    return _EPOCH + timedelta(microseconds=micros if mtime_ns >= 0 else -micros)


def _timestamps(mtimes_ns: list[int]) -> pa.Array:
    nanos = pa.array(mtimes_ns, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
    return nanos.cast(TIMESTAMP, safe=False)

"""S3 (and S3-compatible stores) through s3fs: flat listings, ETag link checks, DeleteObjects."""

from __future__ import annotations

import posixpath
import time
from collections.abc import Iterator, Sequence
from typing import Any

from regprune.layout import V2_ROOT
from regprune.retries import backoff
from regprune.storage.base import (
    EMPTY_FOLDER,
    LISTED_STAT_MIN_DEPTH,
    Storage,
    StorageConfigError,
    StorageObject,
    StorageSpec,
)
from regprune.timeouts import Timeouts

DELETE_BATCH = 1000  # S3 DeleteObjects takes at most 1,000 keys


DELETE_ATTEMPTS = 6


DELETE_BACKOFF_SECONDS = 0.5
DELETE_BACKOFF_MAX_SECONDS = 20.0


class S3Storage(Storage):
    """An S3 bucket through s3fs; listings are flat (no delimiter, 1,000 keys a request)."""

    def __init__(self, spec: StorageSpec):
        import s3fs

        self.spec = spec
        self.bucket, root = spec.bucket_and_root("S3", "bucket")
        self.base = "/".join(p for p in (self.bucket, root, V2_ROOT) if p)
        # max_concurrency=1: s3fs otherwise sends a HEAD before every GET (to decide whether
        # to split the download), doubling the requests for the small files the snapshot reads
        options = {
            "use_listings_cache": False,
            "skip_instance_cache": True,
            "max_concurrency": 1,
            **spec.options,
        }
        bounds = Timeouts.current()  # every request: connect and read bounded (options win)
        options["config_kwargs"] = {
            "connect_timeout": bounds.connect,
            "read_timeout": bounds.read,
            **(options.get("config_kwargs") or {}),
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
                time.sleep(backoff(attempt, DELETE_BACKOFF_SECONDS, DELETE_BACKOFF_MAX_SECONDS))
                continue
            failed = {
                e["Key"]: f"{e.get('Code')}: {e.get('Message')}" for e in answer.get("Errors", [])
            }
            for s3_key, key in pending.items():
                if s3_key not in failed:
                    out[key] = None
            pending = {k: v for k, v in pending.items() if k in failed}
            if pending and attempt < DELETE_ATTEMPTS - 1:
                time.sleep(backoff(attempt, DELETE_BACKOFF_SECONDS, DELETE_BACKOFF_MAX_SECONDS))
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

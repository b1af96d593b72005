"""S3 (and S3-compatible stores) through s3fs: flat listings, ETag link checks, DeleteObjects."""

from __future__ import annotations

import posixpath
import time
from collections.abc import Iterator, Sequence
from typing import Any

from regprune.layout import V2_ROOT
from regprune.retries import backoff
from regprune.storage import clients, cloud
from regprune.storage.base import (
    GONE,
    LISTED_STAT_MIN_DEPTH,
    MOVED,
    Storage,
    StorageConfigError,
    StorageObject,
    StorageSpec,
    folder_marker,
    unreadable,
)
from regprune.timeouts import Timeouts

DELETE_BATCH = 1000  # S3 DeleteObjects takes at most 1,000 keys
LOCK_CONFLICT_ATTEMPTS = 5
LOCK_CONFLICT_BACKOFF_SECONDS = 0.2
POOL_CONNECTIONS = 128
"""Connections the process's one client may hold open to S3 (botocore's default is 10 a
client): the flow's 16 task threads share it, each with up to 8 requests in flight (a move's
copies), about what the clients per task had among them before."""
ENV_PREFIXES = ("AWS_",)
"""The variables botocore reads when it makes a client (credentials, endpoint, retries)."""


class S3Storage(Storage):
    """An S3 bucket through s3fs; listings are flat (no delimiter, 1,000 keys a request)."""

    def __init__(self, spec: StorageSpec):
        import s3fs

        self.spec = spec
        self.bucket, root = spec.bucket_and_root("S3", "bucket")
        self.base = "/".join(p for p in (self.bucket, root, spec.folder) if p)
        self.root = f"{root}/" if root else ""
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
            "max_pool_connections": POOL_CONNECTIONS,
            **(options.get("config_kwargs") or {}),
        }
        # one filesystem (one botocore client) per process and configuration: botocore
        # reads the AWS_* variables when it makes the client (storage/clients.py)
        self.fs = clients.shared(
            "s3", options, clients.environment(ENV_PREFIXES), lambda: s3fs.S3FileSystem(**options)
        )

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
        folder = f"{self.base}/{prefix}"
        try:
            listing = self.fs.ls(folder, detail=True)
        except FileNotFoundError:
            return [], []
        except OSError as exc:  # a 403 (PermissionError) or a page that kept failing
            raise unreadable("S3", self._url(prefix), exc, "listing") from exc
        # s3fs lists a file named like the folder (``x`` for ``x/``) as itself: not below it
        listing = [entry for entry in listing if entry["name"].startswith(folder)]
        dirs = sorted(
            entry["name"].rstrip("/").rsplit("/", 1)[-1]
            for entry in listing
            if entry["type"] == "directory"
        )
        files = [self._object(entry) for entry in listing if entry["type"] != "directory"]
        return dirs, files

    def walk(self, prefix: str) -> Iterator[StorageObject]:
        folder = f"{self.base}/{prefix}"
        try:
            found = self.fs.find(folder, detail=True, withdirs=False)
        except FileNotFoundError:
            return
        except OSError as exc:  # a 403 (PermissionError) or a page that kept failing
            raise unreadable("S3", self._url(prefix), exc, "listing") from exc
        for entry in found.values():
            if entry["name"].startswith(folder):  # not a file named like the folder
                yield self._object(entry)

    def _url(self, key: str) -> str:
        """Where a key is, for messages (no credentials)."""
        return f"s3://{self.base}/{key}"

    def _object_key(self, key: str) -> str:
        """The S3 object key of a key relative to ``docker/registry/v2``."""
        return f"{self.base.split('/', 1)[1]}/{key}"

    def _object(self, entry: dict[str, Any]) -> StorageObject:
        key = entry["name"][len(self.base) + 1 :]
        modified = entry.get("LastModified")
        etag = (entry.get("ETag") or "").strip('"') or None
        if key.endswith("/"):
            return folder_marker(key, modified)
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
        except OSError as exc:  # a 403 is not "absent": the key may well exist
            raise unreadable("S3", self._url(key), exc, "HEAD") from exc
        etag = (head.get("ETag") or "").strip('"') or None
        return StorageObject(key, int(head.get("ContentLength") or 0), head["LastModified"], etag)

    def delete_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        """``DeleteObjects`` with up to 1,000 keys a request, through the retry loop every
        bulk delete shares: throttling (503 SlowDown), server errors and reset connections
        are retried with backoff, keys the answer lists as failed are retried, then
        reported, never counted as done."""
        from botocore.exceptions import BotoCoreError

        # OSError: s3fs's translation of throttling and 5xx; BotoCoreError: connections
        # refused or reset once botocore's own retries are spent (s3fs passes them on)
        transient = (OSError, BotoCoreError)
        return cloud.delete_in_batches(keys, DELETE_BATCH, self._delete_batch, transient)

    def _delete_batch(self, keys: list[str]) -> dict[str, str | None]:
        """One ``DeleteObjects`` (quiet: the answer lists only the keys that failed)."""
        objects = {self._object_key(key): key for key in keys}
        answer = self.fs.call_s3(
            "delete_objects",
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": k} for k in objects], "Quiet": True},
        )
        failed = {
            objects[e["Key"]]: f"{e.get('Code')}: {e.get('Message')}"
            for e in answer.get("Errors", [])
            if e.get("Key") in objects
        }
        return {key: failed.get(key) for key in keys}

    def area(self, name: str) -> Storage:
        return S3Storage(self.spec.in_area(name))

    def move_many(self, keys: Sequence[str], to: Storage) -> dict[str, str]:
        """``CopyObject`` per key (a multipart copy above 5 GiB), then ``DeleteObjects`` of
        the sources: about one request per key (bench/s3count.py)."""
        if not isinstance(to, S3Storage) or to.bucket != self.bucket:
            raise TypeError(f"cannot move from {self.spec.display} to {to.spec.display}")

        def copy(key: str) -> str:
            source = {"Bucket": self.bucket, "Key": self._object_key(key)}
            try:
                self.fs.call_s3(
                    "copy_object", Bucket=self.bucket, Key=to._object_key(key), CopySource=source
                )
            except FileNotFoundError:
                return GONE
            except Exception as exc:
                if "larger than the maximum allowable size" not in str(exc):
                    return f"{type(exc).__name__}: {exc}"
                try:  # s3fs copies in parts (UploadPartCopy)
                    self.fs.copy(f"{self.base}/{key}", f"{to.base}/{key}")
                except FileNotFoundError:
                    return GONE
                except Exception as again:
                    return f"{type(again).__name__}: {again}"
            return MOVED

        return cloud.move_by_copy(keys, copy, self.delete_many)

    def read_many(self, keys: Sequence[str]) -> dict[str, bytes | Exception]:
        if not keys:
            return {}
        paths = {f"{self.base}/{key}": key for key in keys}
        found = self.fs.cat(list(paths), on_error="return")
        return {paths[path]: value for path, value in found.items()}

    def lock_create(self, key: str, data: bytes) -> bool:
        """``PutObject`` with ``If-None-Match: *``: 412 when the key exists; 409
        ``ConditionalRequestConflict`` while another conditional write of it is under way,
        which S3 asks to send again (a 412 then, if that write landed)."""
        for attempt in range(LOCK_CONFLICT_ATTEMPTS):
            try:
                self.fs.call_s3(
                    "put_object",
                    Bucket=self.bucket,
                    Key=self.root + key,
                    Body=data,
                    IfNoneMatch="*",
                )
                return True
            except FileExistsError:  # s3fs's translation of 412 PreconditionFailed
                return False
            except OSError as exc:
                if _error_code(exc) != "ConditionalRequestConflict":
                    raise
            time.sleep(backoff(attempt, LOCK_CONFLICT_BACKOFF_SECONDS, 2.0))
        return False  # another writer kept it busy: the lock's protocol reads who holds it

    def lock_read(self, key: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(f"{self.bucket}/{self.root}{key}"))
        except FileNotFoundError:
            return None

    def lock_remove(self, key: str) -> None:
        self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.root + key)

    def lock_where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.root}{key}"


def _error_code(exc: BaseException) -> str | None:
    """S3's error code behind an error s3fs translated (it keeps botocore's as the cause)."""
    response = getattr(exc.__cause__, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def _common_folder(keys: Sequence[str]) -> str:
    """The longest folder (ending in ``/``) that holds every key ('' for fewer than two)."""
    distinct = set(keys)
    return posixpath.commonpath(distinct) + "/" if len(distinct) > 1 else ""

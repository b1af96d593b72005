"""Google Cloud Storage through gcsfs: flat listings of the JSON API (1,000 objects a page),
one media GET per read, deletes through the JSON batch API (100 deletes a batch).

Credentials are gcsfs' (google-auth's) usual chain: ``GOOGLE_APPLICATION_CREDENTIALS`` (a
key file), application default credentials, the metadata server. ``STORAGE_EMULATOR_HOST``
points every request at an emulator; there, without a key file, requests are anonymous.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from regprune.layout import V2_ROOT
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
    listing_failed,
)
from regprune.storage.s3 import _common_folder
from regprune.timeouts import Timeouts

DELETE_BATCH = 100  # the JSON batch API takes at most 100 calls a request
LIST_PAGE = 1_000  # a listing's default (and maximum) page
_BOUNDARY = "regprune-batch-boundary"
ENV_PREFIXES = ("GOOGLE_", "GCE_", "GCLOUD_", "CLOUDSDK_", "GCSFS_")
ENV_NAMES = ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK")
"""The variables gcsfs and google-auth read when a filesystem is made (the emulator, the key
file, the project, the metadata server)."""


class GcsStorage(Storage):
    """A GCS bucket; keys are ``[ROOT/]docker/registry/v2/...`` as the registry's driver
    writes them (the operator sets no root directory)."""

    def __init__(self, spec: StorageSpec):
        gcsfs_core = cloud.require("gcsfs.core", "gcs")
        self.spec = spec
        self.bucket, root = spec.bucket_and_root("GCS", "bucket")
        self.prefix = f"{root}/{spec.folder}/" if root else f"{spec.folder}/"
        self._root_prefix = f"{root}/" if root else ""
        options: dict[str, Any] = {
            "use_listings_cache": False,
            "skip_instance_cache": True,
            **spec.options,
        }
        if (
            "token" not in options
            and os.environ.get("STORAGE_EMULATOR_HOST")
            and not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        ):
            options["token"] = "anon"  # an emulator takes no credentials
        if "requests_timeout" not in options:  # every request bounded, the whole answer too
            import aiohttp

            bounds = Timeouts.current()
            options["requests_timeout"] = aiohttp.ClientTimeout(
                total=bounds.request, sock_connect=bounds.connect, sock_read=bounds.read
            )
        # gcsfs.core's class, not the package's default one: that one asks a gRPC control
        # API for every bucket's layout (hierarchical namespaces), which regprune never needs.
        # One filesystem (its session, its credentials) per process and configuration
        # (storage/clients.py); the key is the spec's options: the rest derives from them,
        # the environment and the timeouts, which the key holds too
        self.fs = clients.shared(
            "gcs",
            spec.options,
            clients.environment(ENV_PREFIXES, ENV_NAMES),
            lambda: gcsfs_core.GCSFileSystem(**options),
        )

    # ------------------------------------------------------------------ listing

    def _pages(self, prefix: str, delimiter: bool = False) -> Iterator[dict[str, Any]]:
        """Pages of ``objects.list`` under ``prefix`` (a full object-name prefix), following
        ``nextPageToken`` to the end. gcsfs retries a page; one that still fails stops the
        walk with the bucket and prefix."""
        params: dict[str, Any] = {"prefix": prefix, "maxResults": LIST_PAGE}
        if delimiter:
            params["delimiter"] = "/"
        token = None
        while True:
            if token:
                params["pageToken"] = token
            try:
                page = self.fs.call("GET", "b/{}/o", self.bucket, json_out=True, **params)
            except Exception as exc:  # gcsfs raises OSError, HttpError, aiohttp errors...
                status = getattr(exc, "code", None)
                if isinstance(exc, OSError) and str(exc).startswith("Forbidden"):
                    status = 403
                where = f"gs://{self.bucket}/{prefix}"
                raise listing_failed("GCS", where, status, exc) from exc
            yield page
            token = page.get("nextPageToken")
            if not token:
                return

    def check_root(self) -> None:
        try:
            page = self.fs.call(
                "GET", "b/{}/o", self.bucket, json_out=True, prefix=self.prefix, maxResults=1
            )
        except FileNotFoundError as exc:
            raise StorageConfigError(f"no GCS bucket {self.spec.display}: {exc}") from exc
        except PermissionError as exc:
            raise StorageConfigError(f"access denied listing {self.spec.display}: {exc}") from exc
        if not page.get("items"):
            raise StorageConfigError(
                f"no registry storage at {self.spec.display}: nothing under {V2_ROOT}/ "
                "(check the bucket and root directory)"
            )

    def list_children(self, prefix: str) -> tuple[list[str], list[StorageObject]]:
        dirs: list[str] = []
        files: list[StorageObject] = []
        full = self.prefix + prefix
        for page in self._pages(full, delimiter=True):
            dirs += [p[len(full) :].rstrip("/") for p in page.get("prefixes", [])]
            files += [self._object(item) for item in page.get("items", [])]
        return sorted(dirs), files

    def walk(self, prefix: str) -> Iterator[StorageObject]:
        for page in self._pages(self.prefix + prefix):
            for item in page.get("items", []):
                yield self._object(item)

    def _object(self, item: dict[str, Any]) -> StorageObject:
        key = item["name"][len(self.prefix) :]
        if key.endswith("/"):
            return folder_marker(key, _time(item))
        return StorageObject(key, int(item.get("size") or 0), _time(item), _md5_hex(item))

    # ------------------------------------------------------------------ reading

    def read_many(self, keys: Sequence[str]) -> dict[str, bytes | Exception]:
        if not keys:
            return {}
        paths = {f"{self.bucket}/{self.prefix}{key}": key for key in keys}
        found = self.fs.cat(list(paths), on_error="return")
        return {paths[path]: value for path, value in found.items()}

    def stat_many(self, keys: Sequence[str]) -> dict[str, StorageObject | None]:
        """A flat listing of the keys' common folder when narrow (one page per 1,000
        objects), else one metadata GET per key."""
        folder = _common_folder(keys)
        if folder.count("/") >= LISTED_STAT_MIN_DEPTH:
            found = {obj.key: obj for obj in self.walk(folder)}
            return {key: found.get(key) for key in keys}
        return {key: self._stat(key) for key in keys}

    def _stat(self, key: str) -> StorageObject | None:
        try:
            item = self.fs.call("GET", "b/{}/o/{}", self.bucket, self.prefix + key, json_out=True)
        except FileNotFoundError:
            return None
        except Exception as exc:  # a 403 or a failed request is not "absent"
            status = getattr(exc, "code", None)
            if isinstance(exc, OSError) and str(exc).startswith("Forbidden"):
                status = 403
            where = f"gs://{self.bucket}/{self.prefix}{key}"
            raise listing_failed("GCS", where, status, exc, "metadata GET") from exc
        return self._object(item)

    # ------------------------------------------------------------------ deleting

    def delete_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        """Batches of 100 ``objects.delete`` calls (one HTTP request each); a 404 counts as
        done, 429 and 5xx parts are retried with the rest of what failed."""
        return cloud.delete_in_batches(keys, DELETE_BATCH, self._delete_batch, (OSError,))

    def _delete_batch(self, keys: list[str]) -> dict[str, str | None]:
        parts = []
        for number, key in enumerate(keys, 1):
            name = quote(self.prefix + key, safe="")
            parts.append(
                f"--{_BOUNDARY}\r\nContent-Type: application/http\r\n"
                f"Content-Transfer-Encoding: binary\r\nContent-ID: <{number}>\r\n\r\n"
                f"DELETE /storage/v1/b/{quote(self.bucket, safe='')}/o/{name} HTTP/1.1\r\n"
                "Content-Length: 0\r\n\r\n"
            )
        body = "".join(parts) + f"--{_BOUNDARY}--\r\n"
        headers, content = self.fs.call(
            "POST",
            self.fs.batch_url_base,
            headers={"Content-Type": f"multipart/mixed; boundary={_BOUNDARY}"},
            data=body.encode(),
        )
        return _batch_answer(keys, headers.get("Content-Type", ""), content)

    # ------------------------------------------------------------------ moving

    def area(self, name: str) -> Storage:
        return GcsStorage(self.spec.in_area(name))

    def move_many(self, keys: Sequence[str], to: Storage) -> dict[str, str]:
        """``objects.rewrite`` per key (server-side; one call unless the service asks for
        more), then the batch delete of the sources."""
        if not isinstance(to, GcsStorage) or to.bucket != self.bucket:
            raise TypeError(f"cannot move from {self.spec.display} to {to.spec.display}")

        def copy(key: str) -> str:
            token = None
            try:
                while True:
                    answer = self.fs.call(
                        "POST",
                        "b/{}/o/{}/rewriteTo/b/{}/o/{}",
                        self.bucket,
                        self.prefix + key,
                        self.bucket,
                        to.prefix + key,
                        json_out=True,
                        **({"rewriteToken": token} if token else {}),
                    )
                    if answer.get("done", True):
                        return MOVED
                    token = answer["rewriteToken"]
            except FileNotFoundError:
                return GONE
            except Exception as exc:  # recorded for this key; the others go on
                return f"{type(exc).__name__}: {exc}"

        return cloud.move_by_copy(keys, copy, self.delete_many)

    # ------------------------------------------------------------------ lock

    def lock_create(self, key: str, data: bytes) -> bool:
        """Write ``ROOT/key`` only if absent (``ifGenerationMatch=0``: 412 when it exists)."""
        try:
            self.fs.call(
                "POST",
                f"{self.fs._location}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o",
                uploadType="media",
                name=self._root_key(key),
                ifGenerationMatch=0,
                data=data,
                headers={"Content-Type": "application/octet-stream"},
            )
        except (FileExistsError, OSError) as exc:
            if _precondition_failed(exc):
                return False
            raise
        return True

    def lock_read(self, key: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(f"{self.bucket}/{self._root_key(key)}"))
        except FileNotFoundError:
            return None

    def lock_remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.call("DELETE", "b/{}/o/{}", self.bucket, self._root_key(key))

    def lock_where(self, key: str) -> str:
        return f"gs://{self.bucket}/{self._root_key(key)}"

    def _root_key(self, key: str) -> str:
        return self._root_prefix + key


def _precondition_failed(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, FileExistsError) or "412" in text or "recondition" in text


def _batch_answer(keys: list[str], content_type: str, content: bytes) -> dict[str, str | None]:
    """Per key of a batch: None for 2xx and 404, else the part's status and message. Parts
    are matched by ``Content-ID: <response-N>`` (falling back to their order)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise OSError(f"batch answer without a multipart boundary ({content_type!r})")
    text = content.decode("utf-8", "replace")
    parts = [p for p in text.split("--" + match.group(1)) if "HTTP/" in p]
    out: dict[str, str | None] = {}
    for index, part in enumerate(parts):
        ident = re.search(r"Content-ID:\s*<response-(\d+)>", part, re.IGNORECASE)
        number = int(ident.group(1)) if ident else index + 1
        if not 1 <= number <= len(keys):
            continue
        status = re.search(r"HTTP/[0-9.]+ (\d{3})", part)
        code = int(status.group(1)) if status else 0
        if 200 <= code < 300 or code == 404:
            out[keys[number - 1]] = None
        else:
            message = part.split("\r\n\r\n")[-1].strip() or part.strip()
            out[keys[number - 1]] = f"HTTP {code}: {_short(message)}"
    return out


def _short(message: str) -> str:
    try:
        return str(json.loads(message)["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return " ".join(message.split())[:200]


def _time(item: dict[str, Any]) -> datetime | None:
    stamp = item.get("updated") or item.get("timeCreated")
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _md5_hex(item: dict[str, Any]) -> str | None:
    """The object's MD5 in hex (the listing gives base64), as the S3 ETag the link check
    compares with; None where GCS has none (composite objects)."""
    md5 = item.get("md5Hash")
    if not md5:
        return None
    try:
        return base64.b64decode(md5).hex()
    except ValueError:
        return None

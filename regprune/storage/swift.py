"""OpenStack Swift through python-swiftclient: container listings that follow their markers
(10,000 objects a page), one GET per read, a HEAD per 0-byte object (a Dynamic Large Object's
size is its segments' total), deletes through the bulk middleware (``?bulk-delete``, up to
10,000 names a request).

distribution's swift driver keeps every file under ``[PREFIX/]files/`` and writes every
uploaded blob (layers, configs) as a DLO: a 0-byte object whose ``X-Object-Manifest`` names
``CONTAINER/[PREFIX/]segments/xxx/yyy``, the data in the objects under that prefix. Deleting
such a blob deletes its segments in the same bulk request, as the driver does.

Credentials are the ``OS_*`` variables of an OpenStack RC file (``OS_AUTH_URL``,
``OS_USERNAME``, ``OS_PASSWORD``, ``OS_PROJECT_NAME``, ``OS_USER_DOMAIN_NAME``, ...; Keystone
v3, or v1/tempauth with ``OS_AUTH_VERSION=1``) or the swift CLI's ``ST_AUTH``/``ST_USER``/
``ST_KEY``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote

from regprune.layout import V2_ROOT
from regprune.storage import cloud
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

DELETE_BATCH = 10_000  # the bulk middleware's default max_deletes_per_request
LIST_PAGE = 10_000  # a container listing's default (and maximum) page
THREADS = 8
LOCK_SETTLE_SECONDS = 2.0
"""How long a lock's writer waits before reading the lock back: the other writes that passed
Swift's unlocked If-None-Match check at the same moment (a lock is a few hundred bytes: each
lands in milliseconds) are in by then, and the newest of them is the one that stays."""
_TOKENS: dict[tuple[str, str | None, str], tuple[str, str]] = {}
"""(auth URL, user, container) -> (storage URL, token): one authentication per process, not
one per task and thread; never written anywhere."""
_TOKENS_LOCK = threading.Lock()


class SwiftStorage(Storage):
    """A Swift container; ``swift://CONTAINER[/PREFIX]`` (the driver's ``prefix`` option)."""

    def __init__(self, spec: StorageSpec):
        self._client = cloud.require("swiftclient.client", "swift")
        self.spec = spec
        self.container, root = spec.bucket_and_root("Swift", "container")
        self.root = f"{root}/" if root else ""
        # the driver keeps every file under files/; an area (a quarantine) lives beside it
        self.prefix = f"{self.root}{spec.area}/" if spec.area else f"{self.root}files/{V2_ROOT}/"
        self._local = threading.local()
        _connection_settings(spec.options)  # fail early on missing credentials

    @property
    def conn(self) -> Any:
        """One connection per thread (a swiftclient Connection is not thread-safe)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            settings = _connection_settings(self.spec.options)
            where = (settings["authurl"], settings["user"], self.container)
            with _TOKENS_LOCK:
                cached = _TOKENS.get(where)
            if cached:  # the token another connection of this process got (a 401 renews it)
                settings["preauthurl"], settings["preauthtoken"] = cached
            conn = self._client.Connection(**settings)
            if not cached:
                with _TOKENS_LOCK:
                    _TOKENS[where] = conn.get_auth()
            self._local.conn = conn
        return conn

    def _listing(self, prefix: str, delimiter: str | None = None) -> list[dict[str, Any]]:
        """Every page of a listing, following the markers here: swiftclient's
        ``full_listing`` retries the listing as a whole, so on a long listing each failed
        page would start it over from the first page and spend the retries of all of them.
        A page that still fails stops the walk with the container and prefix."""
        objects: list[dict[str, Any]] = []
        marker = ""
        while True:
            try:
                _, page = self.conn.get_container(
                    self.container,
                    prefix=prefix,
                    delimiter=delimiter,
                    marker=marker,
                    limit=LIST_PAGE,
                )
            except (self._client.ClientException, OSError) as exc:
                status = getattr(exc, "http_status", None)
                where = f"swift://{self.container}/{prefix}"
                raise listing_failed("Swift", where, status, exc) from exc
            if not page:  # an empty page ends it, as full_listing does (a short one may not)
                return objects
            objects += page
            marker = page[-1].get("name", page[-1].get("subdir"))

    def check_root(self) -> None:
        try:
            _, found = self.conn.get_container(self.container, prefix=self.prefix, limit=1)
        except self._client.ClientException as exc:
            if exc.http_status == 404:
                raise StorageConfigError(f"no Swift container {self.spec.display}") from exc
            if exc.http_status in (401, 403):
                raise StorageConfigError(f"access denied listing {self.spec.display}") from exc
            raise
        if not found:
            raise StorageConfigError(
                f"no registry storage at {self.spec.display}: nothing under "
                f"{self.root}files/{V2_ROOT}/ (check the container and prefix)"
            )

    def list_children(self, prefix: str) -> tuple[list[str], list[StorageObject]]:
        full = self.prefix + prefix
        dirs: list[str] = []
        items = []
        for entry in self._listing(full, "/"):
            if "subdir" in entry:
                dirs.append(entry["subdir"][len(full) :].rstrip("/"))
            else:
                items.append(entry)
        return sorted(dirs), self._objects(items)

    def walk(self, prefix: str) -> Iterator[StorageObject]:
        yield from self._objects(self._listing(self.prefix + prefix))

    def _objects(self, items: list[dict[str, Any]]) -> list[StorageObject]:
        """Listed objects; a 0-byte one may be a DLO manifest, whose size a HEAD gives."""
        empty = [
            item["name"]
            for item in items
            if int(item.get("bytes") or 0) == 0 and not item["name"].endswith("/")
        ]
        heads = dict(zip(empty, self._map(self._head, empty), strict=True)) if empty else {}
        out = []
        for item in items:
            name = item["name"]
            key = name[len(self.prefix) :]
            modified = _time(item.get("last_modified"))
            head = heads.get(name)
            if key.endswith("/"):
                out.append(folder_marker(key, modified))
            elif head is not None and head.get("x-object-manifest"):
                out.append(StorageObject(key, int(head.get("content-length") or 0), modified))
            else:
                size = int(item.get("bytes") or 0)
                out.append(StorageObject(key, size, modified, item.get("hash") or None))
        return out

    def _head(self, name: str) -> dict[str, str] | None:
        """A HEAD (None: no such object); one that still fails after swiftclient's retries
        names the object: without it a DLO's size is unknown."""
        try:
            return self.conn.head_object(self.container, name)
        except (self._client.ClientException, OSError) as exc:
            if getattr(exc, "http_status", None) == 404:
                return None
            status = getattr(exc, "http_status", None)
            where = f"swift://{self.container}/{name}"
            raise listing_failed("Swift", where, status, exc, "HEAD") from exc

    def _map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(min(THREADS, len(items))) as pool:
            return list(pool.map(fn, items))

    def read_many(self, keys: Sequence[str]) -> dict[str, bytes | Exception]:
        def read(key: str) -> bytes | Exception:
            try:
                return bytes(self.conn.get_object(self.container, self.prefix + key)[1])
            except Exception as exc:  # recorded per key by the caller
                return exc

        return dict(zip(keys, self._map(read, list(keys)), strict=True))

    def stat_many(self, keys: Sequence[str]) -> dict[str, StorageObject | None]:
        """A listing of the keys' common folder when narrow (HEADs only for 0-byte objects),
        else a HEAD per key."""
        folder = _common_folder(keys)
        if folder.count("/") >= LISTED_STAT_MIN_DEPTH:
            found = {obj.key: obj for obj in self.walk(folder)}
            return {key: found.get(key) for key in keys}
        heads = self._map(self._head, [self.prefix + key for key in keys])
        out: dict[str, StorageObject | None] = {}
        for key, head in zip(keys, heads, strict=True):
            if head is None:
                out[key] = None
                continue
            etag = None if head.get("x-object-manifest") else head.get("etag", "").strip('"')
            out[key] = StorageObject(
                key,
                int(head.get("content-length") or 0),
                _head_time(head),
                etag or None,
            )
        return out

    def delete_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        """``?bulk-delete`` requests of up to 10,000 names: the keys (each DLO's manifest),
        then the segments of the manifests that went (found with a HEAD and a listing), so a
        manifest that failed to go keeps its data. A key counts as done when it and its
        segments are gone; a manifest naming segments outside this storage's prefix, or
        where the registry's files live, is not deleted."""
        out: dict[str, str | None] = {}
        names: dict[str, list[str]] = {}
        for key, found in zip(keys, self._map(self._segments, list(keys)), strict=True):
            if isinstance(found, str):
                out[key] = found
            else:
                names[key] = found
        transient = (self._client.ClientException, OSError)
        done = cloud.delete_in_batches(
            [objects[0] for objects in names.values()], DELETE_BATCH, self._bulk_delete, transient
        )
        # a DLO's segments go once its manifest is gone: a manifest that failed to go keeps
        # its data readable (the key is reported failed, and a re-run finds it whole)
        segments = [
            name for objects in names.values() if not done.get(objects[0]) for name in objects[1:]
        ]
        done.update(cloud.delete_in_batches(segments, DELETE_BATCH, self._bulk_delete, transient))
        for key, objects in names.items():
            errors = [f"{name}: {done[name]}" for name in objects if done.get(name)]
            out[key] = "; ".join(errors)[:500] if errors else None
        return out

    def _segments(self, key: str) -> list[str] | str:
        """The names deleting ``key`` removes: it, and its segments when it is a DLO; or why
        it must stay."""
        name = self.prefix + key
        try:
            head = self._head(name)
        except Exception as exc:  # recorded for this key; the others go on
            return f"HEAD failed: {exc}"
        manifest = (head or {}).get("x-object-manifest")
        if not manifest:
            return [name]
        container, _, segment_prefix = unquote(manifest).partition("/")
        if (
            container != self.container
            or not segment_prefix.startswith(self.root)
            or segment_prefix.startswith(f"{self.root}files/")
            or len(segment_prefix) <= len(self.root)
        ):
            return f"DLO segments at {manifest!r} are outside {self.root}segments/: kept"
        try:
            segments = [item["name"] for item in self._listing(segment_prefix)]
        except Exception as exc:  # without its segments listed, the DLO is not deleted
            return f"listing its segments failed: {exc}"
        return [name, *segments]

    def _bulk_delete(self, names: list[str]) -> dict[str, str | None]:
        body = "\n".join(quote(f"/{self.container}/{name}") for name in names).encode()
        _, content = self.conn.post_account(
            headers={"Content-Type": "text/plain", "Accept": "application/json"},
            query_string="bulk-delete",
            data=body,
        )
        answer = json.loads(content)
        failed = {
            unquote(path).removeprefix(f"/{self.container}/"): status
            for path, status in answer.get("Errors", [])
        }
        status = str(answer.get("Response Status", ""))
        if not failed and not status.startswith(("200", "201", "202", "204")):
            raise OSError(f"bulk delete answered {status}: {answer.get('Response Body', '')}")
        # 404 counts as done: the bulk middleware already counts those as "Not Found"
        return {name: failed.get(name) for name in names}

    def area(self, name: str) -> Storage:
        return SwiftStorage(self.spec.in_area(name))

    def move_many(self, keys: Sequence[str], to: Storage) -> dict[str, str]:
        """A server-side ``COPY`` per key; a DLO's manifest is moved as what it is (a
        0-byte object naming its segments, written anew where it goes), its segments stay
        where they are: no byte is copied. Then the bulk delete of the sources alone (a
        DLO's segments go only when it is purged)."""
        if not isinstance(to, SwiftStorage) or to.container != self.container:
            raise TypeError(f"cannot move from {self.spec.display} to {to.spec.display}")

        def copy(key: str) -> str:
            name, target = self.prefix + key, to.prefix + key
            try:
                head = self._head(name)
                if head is None:
                    return GONE
                manifest = head.get("x-object-manifest")
                if manifest:
                    self.conn.put_object(
                        self.container, target, b"", headers={"X-Object-Manifest": manifest}
                    )
                else:
                    self.conn.copy_object(
                        self.container, name, destination=f"/{self.container}/{target}"
                    )
            except self._client.ClientException as exc:
                return GONE if exc.http_status == 404 else f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # recorded for this key; the others go on
                return f"{type(exc).__name__}: {exc}"
            return MOVED

        def delete_sources(keys: list[str]) -> dict[str, str | None]:
            transient = (self._client.ClientException, OSError)
            names = {self.prefix + key: key for key in keys}
            done = cloud.delete_in_batches(list(names), DELETE_BATCH, self._bulk_delete, transient)
            return {names[name]: error for name, error in done.items()}

        return cloud.move_by_copy(keys, copy, delete_sources)

    # ------------------------------------------------------------------ lock

    def lock_create(self, key: str, data: bytes) -> bool:
        """A ``PUT`` with ``If-None-Match: *``, then, once writers that passed the same
        check have landed (:data:`LOCK_SETTLE_SECONDS`), the newest copy read back: Swift
        checks the condition when a request arrives, holding nothing, so writers arriving
        together all pass it and the newest write wins. That one alone answers True."""
        try:
            self.conn.put_object(
                self.container, self.root + key, data, headers={"If-None-Match": "*"}
            )
        except self._client.ClientException as exc:
            if exc.http_status in (409, 412):  # 409: a newer write or delete got there first
                return False
            raise
        time.sleep(LOCK_SETTLE_SECONDS)
        return self.lock_read(key) == data

    def lock_read(self, key: str) -> bytes | None:
        """The newest copy (``X-Newest``: every replica asked, not the first to answer)."""
        try:
            answer = self.conn.get_object(
                self.container, self.root + key, headers={"X-Newest": "true"}
            )
            return bytes(answer[1])
        except self._client.ClientException as exc:
            if exc.http_status == 404:
                return None
            raise

    def lock_remove(self, key: str) -> None:
        try:
            self.conn.delete_object(self.container, self.root + key)
        except self._client.ClientException as exc:
            if exc.http_status != 404:
                raise

    def lock_where(self, key: str) -> str:
        return f"swift://{self.container}/{self.root}{key}"


def _connection_settings(options: dict[str, Any]) -> dict[str, Any]:
    """python-swiftclient's Connection arguments from the ``OS_*`` (or ``ST_*``) environment;
    ``options`` may add non-secret settings (``retries``, ``insecure``, ``os_options``...)."""
    env = os.environ
    authurl = options.get("authurl") or env.get("OS_AUTH_URL") or env.get("ST_AUTH")
    if not authurl:
        raise StorageConfigError(
            "Swift storage needs OS_AUTH_URL, OS_USERNAME and OS_PASSWORD (source the "
            "OpenStack RC file) or ST_AUTH, ST_USER and ST_KEY"
        )
    version = str(
        options.get("auth_version")
        or env.get("OS_AUTH_VERSION")
        or env.get("OS_IDENTITY_API_VERSION")
        or env.get("ST_AUTH_VERSION")
        or ("3" if "/v3" in authurl else "1")
    )
    version = "1.0" if version in ("1", "1.0") else version
    os_options = {
        name: env[variable]
        for name, variable in (
            ("project_name", "OS_PROJECT_NAME"),
            ("tenant_name", "OS_TENANT_NAME"),
            ("project_id", "OS_PROJECT_ID"),
            ("tenant_id", "OS_TENANT_ID"),
            ("user_domain_name", "OS_USER_DOMAIN_NAME"),
            ("user_domain_id", "OS_USER_DOMAIN_ID"),
            ("project_domain_name", "OS_PROJECT_DOMAIN_NAME"),
            ("project_domain_id", "OS_PROJECT_DOMAIN_ID"),
            ("region_name", "OS_REGION_NAME"),
            ("endpoint_type", "OS_ENDPOINT_TYPE"),
            ("interface", "OS_INTERFACE"),
        )
        if env.get(variable)
    }
    os_options.update(options.get("os_options") or {})
    settings: dict[str, Any] = {
        "authurl": authurl,
        "user": env.get("OS_USERNAME") or env.get("ST_USER"),
        "key": env.get("OS_PASSWORD") or env.get("ST_KEY"),
        "auth_version": version,
        "os_options": os_options,
        "retries": 3,
        "cacert": env.get("OS_CACERT"),
        # one number for the connect and each read (keystoneauth takes no pair): the read's
        "timeout": Timeouts.current().read,
    }
    settings.update({k: v for k, v in options.items() if k != "os_options"})
    return settings


def _time(text: str | None) -> datetime | None:
    """A listing's ``last_modified`` (UTC, no zone, microseconds)."""
    if not text:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _head_time(head: dict[str, str]) -> datetime | None:
    """A HEAD's ``X-Timestamp`` (what the listing's ``last_modified`` shows, to the
    microsecond; ``Last-Modified`` has whole seconds, which would hide a write made just
    after the snapshot started)."""
    stamp = head.get("x-timestamp")
    if not stamp:
        return None
    micros = int(Decimal(stamp) * 1_000_000)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)

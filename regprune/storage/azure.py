"""Azure Blob Storage through azure-storage-blob: flat listings (5,000 blobs a page), one GET
per read, deletes through the Blob batch API (``delete_blobs``, 256 a request).

OpenShift's registry writes blob names that start with a slash (``/docker/registry/v2/...``);
upstream distribution v3 writes ``docker/registry/v2/...``. Both forms are read. The form the
storage holds is found once (the slash form wins when both exist: it is the one OpenShift's
registry reads); objects in the other form are listed as anomalies, never read or deleted, so
a container written by both is reported, not silently merged.

Credentials, first found wins: ``AZURE_STORAGE_CONNECTION_STRING``; account name
(``AZURE_STORAGE_ACCOUNT_NAME`` or the ``account_name`` option) with
``AZURE_STORAGE_ACCOUNT_KEY``; else ``DefaultAzureCredential`` (workload identity on ARO,
managed identity, the Azure CLI). ``AZURE_STORAGE_BLOB_ENDPOINT`` or the ``account_url``
option name the endpoint (default ``https://ACCOUNT.blob.core.windows.net``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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

DELETE_BATCH = 256  # a Blob batch request takes at most 256 sub-requests
LIST_PAGE = 5_000  # a listing's default (and maximum) page
READ_THREADS = 8
POOL_CONNECTIONS = 128
"""Connections the process's one client keeps to the service: the flow's 16 task threads, each
reading with :data:`READ_THREADS`."""
ENV_PREFIXES = ("AZURE_", "IDENTITY_", "MSI_", "IMDS_")
"""The variables the service client and Azure's default credential read when they are made
(connection string, account, key, endpoint; workload and managed identity). One service client
per process and configuration (storage/clients.py): its credential's tokens, its connections."""
FORM_CACHE_SECONDS = 600.0
COPY_WAIT_SECONDS = 600.0
"""How long a pending server-side copy is waited for before the move reports it failed."""
_FORMS: dict[tuple[str, str], tuple[str, bool, float]] = {}
"""(container URL, plain prefix) -> (prefix in use, both forms present, when found)."""
OTHER_FORM = (
    "blob name in the other Azure form ({found} beside {used}): a container written by two "
    "registries; not read, not deleted"
)


class AzureStorage(Storage):
    """A blob container; ``az://CONTAINER[/ROOT]``."""

    def __init__(self, spec: StorageSpec):
        blob = cloud.require("azure.storage.blob", "azure")
        self.spec = spec
        self.container_name, root = spec.bucket_and_root("Azure", "container")
        plain = f"{root}/{spec.folder}/" if root else f"{spec.folder}/"
        self.forms = ("/" + plain, plain)
        service = clients.shared(
            "azure",
            spec.options,
            clients.environment(ENV_PREFIXES),
            lambda: _service(blob, spec.options),
        )
        self.container = service.get_container_client(self.container_name)
        self._prefix: str | None = None
        self._lock = threading.Lock()
        self._folder = blob.BlobPrefix
        self.both_forms = False

    @property
    def prefix(self) -> str:
        """The name prefix of the form this container uses (``/docker/...`` or ``docker/...``),
        found with one small listing per form, and remembered by the process for a while (a
        run opens the storage once per task)."""
        with self._lock:
            if self._prefix is None:
                where = (self.container.url, self.forms[1])
                cached = _FORMS.get(where)
                if cached is None or time.monotonic() - cached[2] > FORM_CACHE_SECONDS:
                    present = [form for form in self.forms if self._any(form)]
                    found = present[0] if present else self.forms[0]
                    cached = (found, len(present) == 2, time.monotonic())
                    if present:
                        _FORMS[where] = cached
                self._prefix, self.both_forms = cached[0], cached[1]
            return self._prefix

    @property
    def other_prefix(self) -> str:
        return self.forms[1] if self.prefix == self.forms[0] else self.forms[0]

    def _any(self, prefix: str) -> bool:
        pages = self.container.list_blobs(name_starts_with=prefix, results_per_page=1).by_page()
        return any(True for _ in next(pages, []))

    def check_root(self) -> None:
        errors = cloud.require("azure.core.exceptions", "azure")
        try:
            prefix = self.prefix
            found = self._any(prefix)
        except errors.ResourceNotFoundError as exc:
            raise StorageConfigError(f"no Azure container {self.spec.display}") from exc
        except errors.ClientAuthenticationError as exc:
            raise StorageConfigError(f"access denied listing {self.spec.display}") from exc
        if not found:
            raise StorageConfigError(
                f"no registry storage at {self.spec.display}: nothing under /{V2_ROOT}/ or "
                f"{V2_ROOT}/ (check the container and root directory)"
            )

    def _list(self, prefix: str, delimiter: str | None = None) -> list[Any]:
        """Every page of a listing (the SDK follows the markers and retries each page); one
        that still fails stops the walk with the container and prefix."""
        errors = cloud.require("azure.core.exceptions", "azure")
        try:
            if delimiter:
                pages = self.container.walk_blobs(
                    name_starts_with=prefix, delimiter=delimiter, results_per_page=LIST_PAGE
                )
            else:
                pages = self.container.list_blobs(
                    name_starts_with=prefix, results_per_page=LIST_PAGE
                )
            return list(pages)
        except (errors.AzureError, OSError) as exc:
            status = getattr(exc, "status_code", None)
            where = f"az://{self.container_name}/{prefix}"
            raise listing_failed("Azure Blob", where, status, exc) from exc

    def list_children(self, prefix: str) -> tuple[list[str], list[StorageObject]]:
        full = self.prefix + prefix
        dirs: list[str] = []
        files: list[StorageObject] = []
        for item in self._list(full, "/"):
            name = item.name
            if isinstance(item, self._folder):
                dirs.append(name[len(full) :].rstrip("/"))
            else:
                files.append(self._object(item))
        if self.both_forms:  # the other form's folders are walked too: their files are
            # reported (as anomalies) even where the form in use has no such folder
            other = self.other_prefix + prefix
            for item in self._list(other, "/"):
                if isinstance(item, self._folder):
                    dirs.append(item.name[len(other) :].rstrip("/"))
        files += self._other_form(prefix, recursive=False)
        return sorted(set(dirs)), files

    def walk(self, prefix: str) -> Iterator[StorageObject]:
        for item in self._list(self.prefix + prefix):
            yield self._object(item)
        yield from self._other_form(prefix, recursive=True)

    def _other_form(self, prefix: str, recursive: bool) -> list[StorageObject]:
        """Objects of the other form under ``prefix``, as anomalies (only when both exist)."""
        self.prefix  # noqa: B018  (finds the forms)
        if not self.both_forms:
            return []
        full = self.other_prefix + prefix
        problem = OTHER_FORM.format(found=self.other_prefix, used=self.prefix)
        out = []
        for item in self._list(full):
            rest = item.name[len(full) :]
            if recursive or "/" not in rest:
                # the blob's own name: a key outside docker/registry/v2, never acted upon
                out.append(StorageObject(item.name, item.size, item.last_modified, None, problem))
        return out

    def _object(self, item: Any) -> StorageObject:
        key = item.name[len(self.prefix) :]
        if key.endswith("/"):
            return folder_marker(key, item.last_modified)
        md5 = getattr(item.content_settings, "content_md5", None)
        return StorageObject(
            key,
            int(item.size),
            item.last_modified,
            bytes(md5).hex() if md5 else None,
        )

    def read_many(self, keys: Sequence[str]) -> dict[str, bytes | Exception]:
        errors = cloud.require("azure.core.exceptions", "azure")

        def read(key: str) -> bytes | Exception:
            try:
                return bytes(self.container.download_blob(self.prefix + key).readall())
            except errors.ResourceNotFoundError as exc:  # absent, as every backend says it
                return FileNotFoundError(f"{key}: {getattr(exc, 'reason', None) or 'not found'}")
            except Exception as exc:  # recorded per key by the caller: unreadable
                return exc

        with ThreadPoolExecutor(min(READ_THREADS, max(1, len(keys)))) as pool:
            return dict(zip(keys, pool.map(read, keys), strict=True))

    def stat_many(self, keys: Sequence[str]) -> dict[str, StorageObject | None]:
        """A flat listing of the keys' common folder when narrow, else one HEAD per key."""
        folder = _common_folder(keys)
        if folder.count("/") >= LISTED_STAT_MIN_DEPTH:
            found = {o.key: o for o in map(self._object, self._list(self.prefix + folder))}
            return {key: found.get(key) for key in keys}
        errors = cloud.require("azure.core.exceptions", "azure")
        out: dict[str, StorageObject | None] = {}
        for key in keys:
            try:
                props = self.container.get_blob_client(self.prefix + key).get_blob_properties()
            except errors.ResourceNotFoundError:
                out[key] = None
                continue
            except (errors.AzureError, OSError) as exc:  # a 403 is not "absent"
                status = getattr(exc, "status_code", None)
                where = f"az://{self.container_name}/{self.prefix}{key}"
                raise listing_failed("Azure Blob", where, status, exc, "HEAD") from exc
            out[key] = self._object(props)
        return out

    def delete_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        """``delete_blobs`` (one Blob batch request per 256 names), in the form listed; a 404
        counts as done, throttled and failed sub-requests are retried."""
        errors = cloud.require("azure.core.exceptions", "azure")
        return cloud.delete_in_batches(
            keys,
            DELETE_BATCH,
            self._delete_batch,
            (errors.AzureError, OSError),
        )

    def _delete_batch(self, keys: list[str]) -> dict[str, str | None]:
        answers = self.container.delete_blobs(
            *[self.prefix + key for key in keys], raise_on_any_failure=False
        )
        out: dict[str, str | None] = {}
        for key, answer in zip(keys, answers, strict=False):
            code = answer.status_code
            if 200 <= code < 300 or code == 404:
                out[key] = None
            else:
                error = answer.headers.get("x-ms-error-code", "") if answer.headers else ""
                out[key] = f"HTTP {code} {error}".strip()
        return out

    # ------------------------------------------------------------------ moving

    def area(self, name: str) -> Storage:
        return AzureStorage(self.spec.in_area(name))

    def move_many(self, keys: Sequence[str], to: Storage) -> dict[str, str]:
        """``Copy Blob`` per key (within the account the service copies at once; a pending
        copy is waited for), then the batch delete of the sources."""
        if not isinstance(to, AzureStorage) or to.container_name != self.container_name:
            raise TypeError(f"cannot move from {self.spec.display} to {to.spec.display}")
        errors = cloud.require("azure.core.exceptions", "azure")

        def copy(key: str) -> str:
            source = self.container.get_blob_client(self.prefix + key)
            target = to.container.get_blob_client(to.prefix + key)
            try:
                status = target.start_copy_from_url(source.url).get("copy_status")
                deadline = time.monotonic() + COPY_WAIT_SECONDS
                while status == "pending" and time.monotonic() < deadline:
                    time.sleep(0.2)
                    status = target.get_blob_properties().copy.status
            except errors.HttpResponseError as exc:
                if getattr(exc, "status_code", None) == 404 and not source.exists():
                    return GONE
                return f"{type(exc).__name__}: {exc}"
            except (errors.AzureError, OSError) as exc:
                return f"{type(exc).__name__}: {exc}"
            return MOVED if status == "success" else f"copy {status}"

        return cloud.move_by_copy(keys, copy, self.delete_many)

    # ------------------------------------------------------------------ lock

    def lock_create(self, key: str, data: bytes) -> bool:
        errors = cloud.require("azure.core.exceptions", "azure")
        try:
            self.container.upload_blob(self._root_key(key), data, overwrite=False)
        except errors.ResourceExistsError:
            return False
        return True

    def lock_read(self, key: str) -> bytes | None:
        errors = cloud.require("azure.core.exceptions", "azure")
        try:
            return bytes(self.container.download_blob(self._root_key(key)).readall())
        except errors.ResourceNotFoundError:
            return None

    def lock_remove(self, key: str) -> None:
        errors = cloud.require("azure.core.exceptions", "azure")
        with contextlib.suppress(errors.ResourceNotFoundError):
            self.container.delete_blob(self._root_key(key))

    def lock_where(self, key: str) -> str:
        return f"az://{self.container_name}/{self._root_key(key)}"

    def _root_key(self, key: str) -> str:
        return self.prefix[: -len(self.spec.folder) - 1] + key


def _service(blob: Any, options: dict[str, Any]) -> Any:
    """A BlobServiceClient: the connection string, or an endpoint with the account key (from
    the environment, or the registry config's ``accountkey``) or Azure's default credential."""
    kwargs = {
        k: v for k, v in options.items() if k not in ("account_name", "account_url", "account_key")
    }
    bounds = Timeouts.current()  # every request: connect and read bounded (options win)
    kwargs.setdefault("connection_timeout", bounds.connect)
    kwargs.setdefault("read_timeout", bounds.read)
    if "transport" not in kwargs:
        kwargs["transport"] = _transport(kwargs)
    connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection and not options.get("account_key"):
        return blob.BlobServiceClient.from_connection_string(connection, **kwargs)
    account = options.get("account_name") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    url = options.get("account_url") or os.environ.get("AZURE_STORAGE_BLOB_ENDPOINT")
    if not account and not url:
        raise StorageConfigError(
            "Azure storage needs AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME "
            "(with AZURE_STORAGE_ACCOUNT_KEY, or a workload identity)"
        )
    url = url or f"https://{account}.blob.core.windows.net"
    key = options.get("account_key") or os.environ.get("AZURE_STORAGE_ACCOUNT_KEY")
    if key:
        if not account:
            raise StorageConfigError("AZURE_STORAGE_ACCOUNT_KEY needs AZURE_STORAGE_ACCOUNT_NAME")
        credential: Any = {"account_name": account, "account_key": key}
    else:
        identity = cloud.require("azure.identity", "azure")
        credential = identity.DefaultAzureCredential()
    return blob.BlobServiceClient(url, credential=credential, **kwargs)


def _transport(kwargs: dict[str, Any]) -> Any:
    """The SDK's requests transport, made as the SDK makes it from the client's keywords (the
    timeouts among them), with a pool for every thread of the process: the one client is
    shared (storage/clients.py), and requests' 10 connections a host would have each read
    beyond them open a connection and drop it (urllib3 warning "Connection pool is full").
    urllib3 retries nothing, as in the SDK's own session: the SDK's policy retries."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from urllib3.util.retry import Retry

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(
        pool_maxsize=POOL_CONNECTIONS,
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    return RequestsTransport(session=session, session_owner=True, **kwargs)

"""One suite, every backend: what ``regprune.storage.base.Storage`` promises, checked against
the folder, S3 (moto), GCS (gcp-storage-emulator), Azure Blob (Azurite) and Swift (the
all-in-one), the way distribution runs ``registry/storage/driver/testsuites`` against every
driver.

Each test takes ``backend``: a fresh, empty storage of one kind (a folder, or a bucket or
container of its own with root directory ``reg``), opened as regprune opens it
(:attr:`Backend.storage`), and a way around regprune to put objects in, in the key form that
backend's registry driver writes (:meth:`Backend.put`), and to see what is there
(:meth:`Backend.keys`). A test of a new operation is one more test here; a new backend is one
more :class:`Backend` subclass and an entry in :data:`KINDS`.

The folder runs in the fast suite; every other backend starts its service (once a session)
and is marked slow.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regprune.layout import new_quarantine_id
from regprune.lock import LOCK_KEY
from regprune.storage import (
    EMPTY_FOLDER,
    LISTING_SCHEMA,
    DryRunStorage,
    Storage,
    StorageConfigError,
    StorageObject,
    StorageSpec,
    azure,
    cloud,
    open_storage,
    s3,
    swift,
)
from regprune.storage.base import DELETED, GONE, MOVED, PRESENT, WOULD_DELETE, WOULD_MOVE
from tests.harness.cloud_proxy import CloudFaultProxy
from tests.harness.registry_bench import MotoServer
from tests.harness.s3_proxy import S3FaultProxy
from tests.harness.storage_emulators import (
    V2,
    AzuriteEmulator,
    GcsEmulator,
    GcsPagingFront,
    GcsPreconditionFront,
    SwiftAllInOne,
    swift_segment_prefix,
)

SEGMENT = 1024
"""A Swift DLO's segment size here: a blob of a few KiB is several segments."""
ROOT = "reg"
"""The root directory (S3, GCS, Azure) or prefix (Swift) every bucket's storage has."""
FAILS = "fails-here"
"""Keys containing this text are the ones a failing delete refuses."""


# --------------------------------------------------------------------------- backends


class Backend:
    """One empty storage of one kind: regprune's view (:attr:`storage`) and the direct one."""

    kind: str
    bulk_delete = True
    """Whether deletes go through a bulk request and its retry loop (not on a folder)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        monkeypatch.setattr(cloud, "DELETE_BACKOFF_SECONDS", 0.0)
        self.storage = self.open()

    @property
    def url(self) -> str:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return {}

    def open(self) -> Storage:
        """The storage as regprune opens it (a new instance: one per thread, as tasks do)."""
        return open_storage(StorageSpec(self.url, self.options()))

    def put(self, key: str, data: bytes = b"") -> None:
        """Write ``data`` at ``key`` (relative to ``docker/registry/v2``), not through
        regprune: where and how that backend's registry driver writes it."""
        raise NotImplementedError

    def put_many(self, objects: dict[str, bytes]) -> None:
        for key, data in objects.items():
            self.put(key, data)

    def put_uploaded(self, key: str, data: bytes) -> None:
        """A blob as the registry writes an uploaded one: on Swift a Dynamic Large Object
        (a 0-byte manifest naming its segments), elsewhere a plain object."""
        self.put(key, data)

    def segments(self) -> set[str]:
        """Swift's DLO segments (outside the registry's files), not through regprune."""
        return set()

    def mkdir(self, key: str) -> None:
        """An empty folder at ``key`` (ending in ``/``): a folder marker object (what the S3
        console's "Create folder" and some sync tools leave) where folders are no objects."""
        self.put(key, b"")

    def names(self) -> set[str]:
        """Every object name in the bucket (or file below the folder), not through regprune."""
        raise NotImplementedError

    def keys(self) -> set[str]:
        """The objects under ``docker/registry/v2``, keyed relative to it (empty folders
        with a trailing ``/``), not through regprune."""
        return {name[len(self.v2) :] for name in self.names() if name.startswith(self.v2)}

    @property
    def v2(self) -> str:
        """The name prefix of ``docker/registry/v2/`` in this backend."""
        return f"{ROOT}/{V2}/"

    @property
    def beside_v2(self) -> str:
        """The name prefix of the storage's root, where ``docker/`` is."""
        return self.v2.removesuffix(f"{V2}/").removesuffix("files/")

    @contextmanager
    def failing_deletes(self, times: int | None) -> Iterator[Storage]:
        """A storage whose deletes of keys containing :data:`FAILS` fail, per key, for the
        next ``times`` attempts (None: always), the others of the same request going through."""
        raise NotImplementedError
        yield

    @contextmanager
    def small_pages(self, size: int) -> Iterator[Storage]:
        """A storage whose listings come ``size`` entries a page."""
        raise NotImplementedError
        yield


class FolderBackend(Backend):
    kind = "folder"
    bulk_delete = False

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        super().__init__(monkeypatch)

    @property
    def url(self) -> str:
        return str(self.root)

    @property
    def v2(self) -> str:
        return f"{V2}/"

    def put(self, key: str, data: bytes = b"") -> None:
        path = self.root / V2 / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def mkdir(self, key: str) -> None:
        (self.root / V2 / key).mkdir(parents=True, exist_ok=True)

    def names(self) -> set[str]:
        found = set()
        kept = {".", V2, f"{V2}/blobs", f"{V2}/repositories"}  # never removed, as by the registry
        for folder, dirs, files in os.walk(self.root):
            rel = Path(folder).relative_to(self.root).as_posix()
            found.update(f"{rel}/{name}".removeprefix("./") for name in files)
            if not dirs and not files and rel not in kept:
                found.add(rel + "/")
        return found

    @contextmanager
    def failing_deletes(self, times: int | None) -> Iterator[Storage]:
        """``unlink`` refused (EACCES) for those paths: what a read-only or foreign-owned
        folder does (the tests run as root, which permissions do not stop)."""
        unlink = Path.unlink
        refused = [0]

        def refusing(path: Path, missing_ok: bool = False) -> None:
            if FAILS in str(path) and (times is None or refused[0] < times):
                refused[0] += 1
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            unlink(path, missing_ok=missing_ok)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Path, "unlink", refusing)
            yield self.open()

    @contextmanager
    def small_pages(self, size: int) -> Iterator[Storage]:
        pytest.skip("a folder is read whole: it has no pages")
        yield self.storage


class S3Backend(Backend):
    kind = "s3"

    def __init__(self, monkeypatch: pytest.MonkeyPatch, moto: MotoServer) -> None:
        self.moto = moto
        self.endpoint = moto.endpoint_url
        self.bucket = moto.create_bucket(_bucket())
        self.client = moto.client()
        super().__init__(monkeypatch)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{ROOT}"

    def options(self) -> dict[str, Any]:
        options = self.moto.storage_options
        return {
            **options,
            "client_kwargs": {**options["client_kwargs"], "endpoint_url": self.endpoint},
        }

    def put(self, key: str, data: bytes = b"") -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.v2 + key, Body=data)

    def names(self) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    @contextmanager
    def through_proxy(self) -> Iterator[tuple[Storage, S3FaultProxy]]:
        """A storage whose requests go through a fault proxy (tests/harness/s3_proxy.py)."""
        with S3FaultProxy(self.moto.endpoint_url) as proxy:
            self.endpoint = proxy.url
            try:
                yield self.open(), proxy
            finally:
                self.endpoint = self.moto.endpoint_url

    @contextmanager
    def failing_deletes(self, times: int | None) -> Iterator[Storage]:
        with self.through_proxy() as (storage, proxy):
            proxy.inject("delete_objects", "fail_keys", times=times, keys=FAILS)
            yield storage

    @contextmanager
    def small_pages(self, size: int) -> Iterator[Storage]:
        """Every ``ListObjectsV2`` asks for ``size`` keys (moto pages as S3 does)."""
        storage = self.open()
        assert isinstance(storage, s3.S3Storage)

        def page_size(params: dict[str, Any], **_: Any) -> None:
            params["MaxKeys"] = size

        # on the process's client of this configuration (storage/clients.py): off again after
        events = storage.fs.s3.meta.events
        events.register("before-parameter-build.s3.ListObjectsV2", page_size)
        try:
            yield storage
        finally:
            events.unregister("before-parameter-build.s3.ListObjectsV2", page_size)


class GcsBackend(Backend):
    """The emulator behind :class:`GcsPreconditionFront`: it ignores ``ifGenerationMatch``,
    which the lock's conditional create sends."""

    kind = "gcs"

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, emulator: GcsEmulator, front: GcsPreconditionFront
    ) -> None:
        self.emulator = emulator
        self.bucket = emulator.create_bucket(_bucket())
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        for name, value in emulator.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", front.url)
        super().__init__(monkeypatch)

    @property
    def url(self) -> str:
        return f"gs://{self.bucket}/{ROOT}"

    def put(self, key: str, data: bytes = b"") -> None:
        self.emulator.put_objects(self.bucket, {self.v2 + key: data})

    def put_many(self, objects: dict[str, bytes]) -> None:
        self.emulator.put_objects(self.bucket, {self.v2 + k: v for k, v in objects.items()})

    def names(self) -> set[str]:
        """The JSON API's listing, straight from the emulator (it answers in one page)."""
        bucket = urllib.parse.quote(self.bucket, safe="")
        url = f"{self.emulator.endpoint}/storage/v1/b/{bucket}/o"
        with urllib.request.urlopen(url, timeout=60) as answer:
            return {item["name"] for item in json.load(answer).get("items", [])}

    @contextmanager
    def failing_deletes(self, times: int | None) -> Iterator[Storage]:
        with CloudFaultProxy(self.emulator.endpoint, "gcs") as proxy:
            proxy.inject("bulk_delete", "fail_keys", times=times, keys=FAILS)
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
                yield self.open()

    @contextmanager
    def small_pages(self, size: int) -> Iterator[Storage]:
        """Through a front that pages as GCS does (the emulator answers in one page)."""
        front = GcsPagingFront(self.emulator.endpoint, max_page=size, delimited=True).start()
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("STORAGE_EMULATOR_HOST", front.url)
                yield self.open()
        finally:
            front.stop()


class AzureBackend(Backend):
    kind = "azure"

    def __init__(self, monkeypatch: pytest.MonkeyPatch, emulator: AzuriteEmulator) -> None:
        self.emulator = emulator
        self.bucket = emulator.create_bucket(_bucket())
        for name in [n for n in os.environ if n.startswith("AZURE_")]:
            monkeypatch.delenv(name)
        for name, value in emulator.env.items():
            monkeypatch.setenv(name, value)
        super().__init__(monkeypatch)

    @property
    def url(self) -> str:
        return f"az://{self.bucket}/{ROOT}"

    @property
    def v2(self) -> str:
        """OpenShift's registry writes names that start with ``/``."""
        return f"/{ROOT}/{V2}/"

    def put(self, key: str, data: bytes = b"") -> None:
        self.emulator.put_object(self.bucket, self.v2 + key, data)

    def put_many(self, objects: dict[str, bytes]) -> None:
        self.emulator.put_objects(self.bucket, {self.v2 + k: v for k, v in objects.items()})

    def names(self) -> set[str]:
        return set(self.emulator.list_keys(self.bucket))

    @contextmanager
    def failing_deletes(self, times: int | None) -> Iterator[Storage]:
        upstream = self.emulator.endpoint.rsplit("/", 1)[0]
        with CloudFaultProxy(upstream, "azure") as proxy:
            proxy.inject("bulk_delete", "fail_keys", times=times, keys=FAILS)
            with pytest.MonkeyPatch.context() as patch:
                for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_BLOB_ENDPOINT"):
                    patch.setenv(name, os.environ[name].replace(upstream, proxy.url))
                yield self.open()

    @contextmanager
    def small_pages(self, size: int) -> Iterator[Storage]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(azure, "LIST_PAGE", size)
            yield self.open()


class SwiftBackend(Backend):
    kind = "swift"

    def __init__(self, monkeypatch: pytest.MonkeyPatch, emulator: SwiftAllInOne) -> None:
        self.emulator = emulator
        self.bucket = emulator.create_bucket(_bucket())
        for name in [n for n in os.environ if n.startswith(("OS_", "ST_"))]:
            monkeypatch.delenv(name)
        for name, value in emulator.env.items():
            monkeypatch.setenv(name, value)
        super().__init__(monkeypatch)

    @property
    def url(self) -> str:
        return f"swift://{self.bucket}/{ROOT}"

    @property
    def v2(self) -> str:
        """distribution's swift driver keeps every file under ``PREFIX/files/``."""
        return f"{ROOT}/files/{V2}/"

    def put(self, key: str, data: bytes = b"") -> None:
        self.emulator.put_object(self.bucket, self.v2 + key, data)

    def put_many(self, objects: dict[str, bytes]) -> None:
        self.emulator.put_objects(self.bucket, {self.v2 + k: v for k, v in objects.items()})

    def put_uploaded(self, key: str, data: bytes) -> None:
        prefix = f"{ROOT}/{swift_segment_prefix(self.v2 + key)}"
        for number, start in enumerate(range(0, len(data), SEGMENT), 1):
            chunk = data[start : start + SEGMENT]
            self.emulator.put_object(self.bucket, f"{prefix}/{number:016d}", chunk)
        manifest = {"X-Object-Manifest": f"{self.bucket}/{prefix}"}
        self.emulator.put_object(self.bucket, self.v2 + key, b"", manifest)

    def segments(self) -> set[str]:
        return {name for name in self.names() if name.startswith(f"{ROOT}/segments/")}

    def names(self) -> set[str]:
        return set(self.emulator.list_keys(self.bucket))

    @contextmanager
    def failing_deletes(self, times: int | None) -> Iterator[Storage]:
        with CloudFaultProxy(self.emulator.endpoint, "swift") as proxy:
            proxy.inject("bulk_delete", "fail_keys", times=times, keys=FAILS)
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("OS_AUTH_URL", proxy.url + "/auth/v1.0")
                patch.setenv("ST_AUTH", proxy.url + "/auth/v1.0")
                yield self.open()

    @contextmanager
    def small_pages(self, size: int) -> Iterator[Storage]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(swift, "LIST_PAGE", size)
            yield self.open()


def _bucket() -> str:
    return f"conf-{uuid.uuid4().hex[:12]}"


KINDS = [
    pytest.param("folder", id="folder"),
    pytest.param("s3", id="s3", marks=pytest.mark.slow),
    pytest.param("gcs", id="gcs", marks=pytest.mark.slow),
    pytest.param("azure", id="azure", marks=pytest.mark.slow),
    pytest.param("swift", id="swift", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def gcs_preconditions(gcs_emulator: GcsEmulator) -> Iterator[GcsPreconditionFront]:
    front = GcsPreconditionFront(gcs_emulator.endpoint)
    front.start()
    try:
        yield front
    finally:
        front.stop()


@pytest.fixture(params=KINDS)
def backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Backend:
    """A fresh, empty storage of each kind; services start once a session, when first asked."""
    kind = request.param
    if kind == "folder":
        return FolderBackend(monkeypatch, tmp_path / "storage")
    if kind == "s3":
        return S3Backend(monkeypatch, request.getfixturevalue("moto"))
    if kind == "gcs":
        emulator = request.getfixturevalue("gcs_emulator")
        return GcsBackend(monkeypatch, emulator, request.getfixturevalue("gcs_preconditions"))
    if kind == "azure":
        return AzureBackend(monkeypatch, request.getfixturevalue("azurite"))
    return SwiftBackend(monkeypatch, request.getfixturevalue("swift_aio"))


# --------------------------------------------------------------------------- helpers


APP = "repositories/ns/app/"
TREE = {
    f"{APP}_manifests/tags/latest/current/link": b"sha256:" + b"1" * 64,
    f"{APP}_manifests/tags/latest/index/sha256/{'1' * 64}/link": b"sha256:" + b"1" * 64,
    f"{APP}_layers/sha256/{'2' * 64}/link": b"sha256:" + b"2" * 64,
    f"{APP}sub/_layers/sha256/{'3' * 64}/link": b"sha256:" + b"3" * 64,  # nested repository
    f"{APP}_uploads/u0/data": b"",  # an upload with nothing written yet
    "repositories/ns/app-two/_layers/sha256/" + "4" * 64 + "/link": b"sha256:" + b"4" * 64,
    "repositories/ns/apple/_uploads/u1/startedat": b"2024-01-01T00:00:00Z",
    "blobs/sha256/11/" + "1" * 64 + "/data": b'{"schemaVersion": 2}',
    "blobs/sha256/22/" + "2" * 64 + "/data": b"layer bytes " * 100,
}
"""A small registry tree: a repository with a nested one, and siblings whose names start
with its name (``app-two``, ``apple``), as prefix listings must tell apart; an empty file."""


def known_failure(request: pytest.FixtureRequest, backend: Backend, kinds: str, why: str) -> None:
    """Mark this test an expected failure on ``kinds`` (space-separated) until fixed."""
    if backend.kind in kinds.split():
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=why))


def below(prefix: str, keys: Any = TREE) -> set[str]:
    return {key for key in keys if key.startswith(prefix)}


def walked(storage: Storage, prefix: str) -> dict[str, StorageObject]:
    return {obj.key: obj for obj in storage.walk(prefix)}


# --------------------------------------------------------------------------- check_root


def test_check_root_refuses_a_storage_without_a_registry(backend: Backend) -> None:
    with pytest.raises(StorageConfigError):
        backend.storage.check_root()


def test_check_root_accepts_a_storage_with_a_registry(backend: Backend) -> None:
    backend.put_many(TREE)
    backend.storage.check_root()


# --------------------------------------------------------------------------- list_children


def test_list_children_gives_the_folders_and_files_directly_below(backend: Backend) -> None:
    backend.put_many(TREE)
    backend.put("repositories/stray-file", b"x")
    storage = backend.storage

    dirs, files = storage.list_children("repositories/")
    assert (dirs, [f.key for f in files]) == (["ns"], ["repositories/stray-file"])
    assert files[0].size == 1 and files[0].problem is None

    dirs, files = storage.list_children("repositories/ns/")
    assert (dirs, files) == (["app", "app-two", "apple"], [])

    dirs, files = storage.list_children(APP)
    assert (dirs, files) == (["_layers", "_manifests", "_uploads", "sub"], [])

    assert storage.list_children("") == (["blobs", "repositories"], [])

    link = f"{APP}_manifests/tags/latest/current/"
    dirs, files = storage.list_children(link)
    assert dirs == []
    assert [(f.key, f.size) for f in files] == [(link + "link", 71)]
    assert isinstance(files[0].modified, datetime) and files[0].modified.tzinfo is not None


def test_list_children_of_a_missing_folder_is_empty(backend: Backend) -> None:
    backend.put_many(TREE)
    assert backend.storage.list_children("repositories/nothing/") == ([], [])
    assert backend.storage.list_children(f"{APP}_manifests/tags/latest/current/link/") == (
        [],
        [],
    )


# --------------------------------------------------------------------------- walk, list_files


def test_walk_gives_every_file_below_a_folder_and_nothing_beside_it(backend: Backend) -> None:
    """A repository's walk holds its nested repository, never its siblings ``app-two`` and
    ``apple``; each file with its size and a time with a zone."""
    backend.put_many(TREE)
    found = walked(backend.storage, APP)
    assert set(found) == below(APP)
    for key, obj in found.items():
        assert obj.size == len(TREE[key]), key
        assert obj.problem is None, key
        assert obj.modified is not None and obj.modified.tzinfo is not None, key

    assert set(walked(backend.storage, "")) == set(TREE)
    assert set(walked(backend.storage, "blobs/")) == below("blobs/")


def test_walk_of_a_missing_folder_is_empty(backend: Backend) -> None:
    """Also where a file has the folder's name: a file is not a folder."""
    backend.put_many(TREE)
    assert list(backend.storage.walk("repositories/nothing/")) == []
    assert list(backend.storage.walk("blobs/sha256/33/")) == []
    assert list(backend.storage.walk(f"{APP}_manifests/tags/latest/current/link/")) == []


def test_list_files_is_the_walk_as_a_table(backend: Backend) -> None:
    backend.put_many(TREE)
    table = backend.storage.list_files("repositories/")
    assert table.schema.equals(LISTING_SCHEMA)
    rows = {row["key"]: row for row in table.to_pylist()}
    assert set(rows) == below("repositories/")
    walk = walked(backend.storage, "repositories/")
    for key, row in rows.items():
        assert (row["size"], row["modified"]) == (walk[key].size, walk[key].modified), key


# --------------------------------------------------------------------------- read_many


def test_read_many_reads_each_key_and_answers_a_missing_one_with_its_error(
    backend: Backend,
) -> None:
    """A missing key's error is a FileNotFoundError on every backend: any other error means
    the key could not be read (Storage.read_existing raises for those: unreadable is not
    absent)."""
    backend.put_many(TREE)
    missing = "blobs/sha256/33/" + "3" * 64 + "/data"
    wanted = [*below("blobs/"), f"{APP}_layers/sha256/{'2' * 64}/link", missing]
    found = backend.storage.read_many(wanted)
    assert set(found) == set(wanted)
    for key in wanted[:-1]:
        assert found[key] == TREE[key], key
    assert isinstance(found[missing], FileNotFoundError)
    existing = backend.storage.read_existing([missing, wanted[0]])
    assert isinstance(existing[missing], FileNotFoundError)
    assert existing[wanted[0]] == TREE[wanted[0]]
    assert backend.storage.read_many([]) == {}


# --------------------------------------------------------------------------- stat_many


STAT_SHAPES = {
    "one folder": [f"{APP}_manifests/tags/latest/current/link", f"{APP}_layers/sha256/x/link"],
    "across folders": ["blobs/sha256/11/" + "1" * 64 + "/data", f"{APP}_layers/sha256/x/link"],
    "one key": [f"{APP}_manifests/tags/latest/current/link"],
}
"""Keys the re-read before deleting asks for at once: in one deep folder (listed on object
stores), spread over the tree (a request per key), and alone."""


@pytest.mark.parametrize("shape", STAT_SHAPES)
def test_stat_many_agrees_with_the_walk_and_answers_none_for_a_missing_key(
    backend: Backend, shape: str
) -> None:
    """The re-read before deleting is compared with the snapshot's walk: same size, same
    time; a key not there is None, whichever way the backend reads them."""
    backend.put_many(TREE)
    keys = STAT_SHAPES[shape]
    walk = walked(backend.storage, "")
    found = backend.storage.stat_many(keys)
    assert set(found) == set(keys)
    for key in keys:
        if key in TREE:
            stat = found[key]
            assert stat is not None, key
            assert (stat.key, stat.size, stat.modified) == (
                key,
                walk[key].size,
                walk[key].modified,
            )
        else:
            assert found[key] is None, key
    assert backend.storage.stat_many([]) == {}


# --------------------------------------------------------------------------- delete_many


def test_delete_many_deletes_the_keys_and_only_them(backend: Backend) -> None:
    """Existing keys go; a missing key counts as done; a key beside them whose name starts
    with a deleted one's (``data`` and ``data2``) stays."""
    backend.put_many(TREE)
    blob = "blobs/sha256/22/" + "2" * 64 + "/data"
    backend.put(blob + "2", b"beside")
    gone = [blob, f"{APP}_layers/sha256/{'2' * 64}/link", "blobs/sha256/33/missing/data"]
    assert backend.storage.delete_many(gone) == dict.fromkeys(gone)
    assert backend.keys() == (set(TREE) - set(gone)) | {blob + "2"}
    assert backend.storage.delete_many([]) == {}


def test_delete_many_leaves_no_empty_folder_in_the_listings(backend: Backend) -> None:
    """A folder whose last file went is not listed any more (the folder backend removes it,
    as distribution's filesystem driver does; object stores have no folders)."""
    backend.put_many(TREE)
    assert backend.storage.delete_many([f"{APP}_layers/sha256/{'2' * 64}/link"]) == {
        f"{APP}_layers/sha256/{'2' * 64}/link": None
    }
    assert backend.storage.list_children(APP) == (["_manifests", "_uploads", "sub"], [])
    assert [obj for obj in backend.storage.walk("repositories/") if obj.problem] == []


def test_delete_many_reports_a_key_that_keeps_failing_and_deletes_the_rest(
    backend: Backend,
) -> None:
    """A key refused every time is reported with why, never raised, never counted done;
    the other keys of the same call are deleted."""
    keys = [f"repositories/ns/app/_uploads/u{n}/data" for n in range(3)]
    failing = f"repositories/ns/app/_uploads/{FAILS}/data"
    backend.put_many(dict.fromkeys([*keys, failing], b"x"))
    with backend.failing_deletes(times=None) as storage:
        outcome = storage.delete_many([*keys, failing])
    assert outcome == {**dict.fromkeys(keys), failing: outcome[failing]}
    assert isinstance(outcome[failing], str) and outcome[failing]
    assert backend.keys() == {failing}


def test_delete_many_retries_a_key_that_failed_once(backend: Backend) -> None:
    """A bulk delete's answer that one key failed is retried: the key goes, nothing fails."""
    if not backend.bulk_delete:
        pytest.skip(f"{backend.kind}: no bulk delete, no retry loop")
    keys = [f"repositories/ns/app/_uploads/u{n}/data" for n in range(3)]
    keys.append(f"repositories/ns/app/_uploads/{FAILS}/data")
    backend.put_many(dict.fromkeys(keys, b"x"))
    with backend.failing_deletes(times=1) as storage:
        assert storage.delete_many(keys) == dict.fromkeys(keys)
    assert backend.keys() == set()


def test_delete_many_goes_through_several_batches(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not backend.bulk_delete:
        pytest.skip(f"{backend.kind}: no bulk delete, no batches")
    from regprune.storage import gcs

    for module in (s3, gcs, azure, swift):
        monkeypatch.setattr(module, "DELETE_BATCH", 2)
    keys = [f"repositories/ns/app/_uploads/u{n}/data" for n in range(5)]
    backend.put_many(dict.fromkeys(keys, b"x"))
    assert backend.storage.delete_many(keys) == dict.fromkeys(keys)
    assert backend.keys() == set()


# --------------------------------------------------------------------------- the lock


LOCK = "_regprune/lock"


def test_the_lock_is_created_only_if_absent_read_and_removed(backend: Backend) -> None:
    storage = backend.storage
    assert storage.lock_read(LOCK) is None
    assert storage.lock_create(LOCK, b"first") is True
    assert storage.lock_create(LOCK, b"second") is False
    assert storage.lock_read(LOCK) == b"first"
    storage.lock_remove(LOCK)
    assert storage.lock_read(LOCK) is None
    storage.lock_remove(LOCK)  # nothing there: no error
    assert storage.lock_create(LOCK, b"third") is True
    assert backend.open().lock_read(LOCK) == b"third"


def test_the_lock_lives_beside_the_registry_not_in_it(backend: Backend) -> None:
    """Beside ``docker/`` under the storage's root: no walk of the registry sees it, and
    the message's location names it."""
    backend.put_many(TREE)
    storage = backend.storage
    assert storage.lock_create(LOCK, b"held")
    assert set(walked(storage, "")) == set(TREE)
    assert backend.names() - {backend.v2 + key for key in TREE} == {backend.beside_v2 + LOCK}
    where = storage.lock_where(LOCK)
    assert where.endswith(backend.beside_v2 + LOCK)
    assert str(getattr(backend, "bucket", backend.url)) in where


def test_the_lock_has_one_winner_among_racing_writers(backend: Backend) -> None:
    """Writers on storages of their own, released at once: exactly one creates the lock,
    and its content is the winner's."""
    for round_ in range(3):
        won = race_for_the_lock([backend.open() for _ in range(6)])
        assert len(won) == 1, (round_, won)
        assert backend.storage.lock_read(LOCK) == f"writer {won[0]}".encode()
        backend.storage.lock_remove(LOCK)


def race_for_the_lock(storages: list[Storage]) -> list[int]:
    """Each storage's writer tries to create the lock at the same moment; the winners."""
    start = threading.Barrier(len(storages))
    won: list[int] = []

    def contend(n: int) -> None:
        start.wait()
        if storages[n].lock_create(LOCK, f"writer {n}".encode()):
            won.append(n)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(len(storages))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


# --------------------------------------------------------------------------- odd names


ODD_NAMES = [
    "with space",
    "plus+sign",
    "percent%20encoded",
    "hash#mark",
    "question?mark",
    "semi;colon",
    "equals=and&amp",
    "colon:at@",
    "tilde~quote'",
    "unicode-é-字",
]
"""Names a registry never writes but a person or tool may leave in its storage; the walk
must name them as they are, so a stray file is reported, read and deleted as itself."""


def test_keys_with_odd_characters_are_listed_read_stated_and_deleted_as_they_are(
    backend: Backend,
) -> None:
    names = ODD_NAMES
    if backend.kind == "gcs":
        # aiohttp (yarl) sends %3B as ";", which gcp-storage-emulator's urlparse takes for
        # the start of path parameters: a 404 that says nothing about GCS
        names = [name for name in ODD_NAMES if ";" not in name]
    keys = {f"repositories/odd/{name}/file": name.encode() for name in names}
    backend.put_many(keys)
    assert set(walked(backend.storage, "repositories/odd/")) == set(keys)
    dirs, _ = backend.storage.list_children("repositories/odd/")
    assert dirs == sorted(names)
    read = backend.storage.read_many(list(keys))
    assert {key: read[key] for key in keys} == keys
    stats = backend.storage.stat_many(list(keys))
    assert {key: stat.size if stat else None for key, stat in stats.items()} == {
        key: len(data) for key, data in keys.items()
    }
    assert backend.storage.delete_many(list(keys)) == dict.fromkeys(keys)
    assert backend.keys() == set()


# --------------------------------------------------------------------------- empty folders


def test_an_empty_folder_is_listed_as_one_and_can_be_deleted(backend: Backend) -> None:
    """An empty folder (a folder marker on object stores) is a folder to ``list_children``,
    one entry with the ``empty folder`` problem to the walk, and goes with its key."""
    backend.put_many(TREE)
    empty = "repositories/ns/app/_uploads/empty/"
    backend.mkdir(empty)
    assert "empty" in backend.storage.list_children(f"{APP}_uploads/")[0]
    odd = [obj for obj in backend.storage.walk(APP) if obj.problem]
    assert [(obj.key, obj.problem) for obj in odd] == [(empty, EMPTY_FOLDER)]
    assert set(walked(backend.storage, APP)) == below(APP) | {empty}
    assert backend.storage.delete_many([empty]) == {empty: None}
    assert backend.keys() == set(TREE)
    assert [obj for obj in backend.storage.walk(APP) if obj.problem] == []


# --------------------------------------------------------------------------- pages


PAGE = 3


def test_listings_are_read_to_the_last_page(backend: Backend) -> None:
    """With ``PAGE`` entries a page, every listing still sees everything: the walk, the
    folders and files of one level, and the re-read of a folder's keys."""
    folders = [f"repositories/ns/many/_uploads/u{n:02d}/" for n in range(8)]
    files = {f"{APP}_layers/sha256/{n:064x}/link": b"x" * n for n in range(1, 11)}
    files.update({folder + "data": b"d" for folder in folders})
    files.update({f"repositories/ns/many/_uploads/f{n}": b"f" for n in range(4)})
    backend.put_many(files)
    with backend.small_pages(PAGE) as storage:
        assert set(walked(storage, "repositories/")) == set(files)
        dirs, direct = storage.list_children("repositories/ns/many/_uploads/")
        assert dirs == [f"u{n:02d}" for n in range(8)]
        assert sorted(obj.key for obj in direct) == [
            f"repositories/ns/many/_uploads/f{n}" for n in range(4)
        ]
        keys = sorted(below(f"{APP}_layers/", files))
        stats = storage.stat_many([*keys, f"{APP}_layers/sha256/missing/link"])
        assert {key: stat.size for key, stat in stats.items() if stat} == {
            key: len(files[key]) for key in keys
        }
        assert stats[f"{APP}_layers/sha256/missing/link"] is None


# --------------------------------------------------------------------------- the quarantine
# The two-phase delete (docs/safety.md) moves keys into ``_regprune/quarantine/<id>/``, beside
# docker/, and back, lists and purges them. A move sends no bytes through regprune and loses
# none; a key that is not there is GONE, not moved; a restore never overwrites a key that came
# back with other bytes; a Swift DLO's segments stay until it is purged.

QUARANTINED_TREE = {
    key: data for key, data in TREE.items() if not key.startswith("blobs/sha256/22/")
}
UPLOADED = "blobs/sha256/22/" + "2" * 64 + "/data"
"""An uploaded blob (a DLO of several segments on Swift)."""


def quarantine_tree(backend: Backend) -> dict[str, bytes]:
    backend.put_many(QUARANTINED_TREE)
    backend.put_uploaded(UPLOADED, TREE[UPLOADED])
    return {**QUARANTINED_TREE, UPLOADED: TREE[UPLOADED]}


def contents(storage: Storage) -> dict[str, bytes]:
    keys = [obj.key for obj in storage.walk("") if obj.problem is None]
    read = storage.read_many(keys)
    assert all(isinstance(value, bytes) for value in read.values()), read
    return {key: bytes(value) for key, value in read.items()}  # type: ignore[arg-type]


QID = new_quarantine_id(datetime(2026, 3, 1, 3, 0, tzinfo=UTC))


def test_a_quarantine_round_trip_gives_the_same_keys_and_bytes(backend: Backend) -> None:
    before = quarantine_tree(backend)
    segments = backend.segments()
    storage = backend.storage
    gone = "blobs/sha256/33/" + "3" * 64 + "/data"
    moving = [UPLOADED, f"{APP}_manifests/tags/latest/current/link", f"{APP}_uploads/u0/data"]

    assert storage.quarantine_many(QID, [*moving, gone]) == {
        **dict.fromkeys(moving, MOVED),
        gone: GONE,
    }

    assert contents(storage) == {k: v for k, v in before.items() if k not in moving}
    assert storage.quarantine_ids() == [QID]
    assert {o.key: o.size for o in storage.quarantined(QID)} == {k: len(before[k]) for k in moving}
    assert backend.segments() == segments  # a DLO's data stays where it is
    assert not set(moving) & backend.keys()

    assert storage.restore_many(QID, [*moving, gone]) == {
        **dict.fromkeys(moving, MOVED),
        gone: GONE,
    }

    assert contents(storage) == before
    assert storage.quarantine_ids() == []
    assert not any("_regprune/quarantine/" in name for name in backend.names())
    assert backend.segments() == segments


def test_a_move_takes_the_keys_asked_and_leaves_their_neighbours(backend: Backend) -> None:
    """A folder moves whole on a filesystem only when it holds nothing but the keys asked
    (regprune/storage/local.py): a file beside them stays, in every backend."""
    before = quarantine_tree(backend)
    storage = backend.storage
    started = f"{APP}_uploads/u0/startedat"
    backend.put_many({started: b"2026-03-01T00:00:00Z"})
    before[started] = b"2026-03-01T00:00:00Z"
    alone = f"{APP}_layers/sha256/{'2' * 64}/link"  # the only file of its folder
    moving = [f"{APP}_uploads/u0/data", alone]

    assert storage.quarantine_many(QID, moving) == dict.fromkeys(moving, MOVED)

    assert contents(storage) == {k: v for k, v in before.items() if k not in moving}
    assert {o.key for o in storage.quarantined(QID)} == set(moving)
    assert storage.restore_many(QID, moving) == dict.fromkeys(moving, MOVED)
    assert contents(storage) == before
    assert storage.quarantine_ids() == []


def test_a_restore_never_overwrites_other_bytes(backend: Backend) -> None:
    quarantine_tree(backend)
    tag = f"{APP}_manifests/tags/latest/current/link"
    link = f"{APP}_layers/sha256/{'2' * 64}/link"
    assert backend.storage.quarantine_many(QID, [tag, link]) == {tag: MOVED, link: MOVED}
    retagged = b"sha256:" + b"9" * 64
    backend.put_many({tag: retagged, link: TREE[link]})  # pushes wrote them again

    back = backend.storage.restore_many(QID, [tag, link])

    assert back[link] == PRESENT  # the same bytes: the quarantined copy is dropped
    assert "other bytes" in back[tag]
    assert contents(backend.storage)[tag] == retagged
    assert [obj.key for obj in backend.storage.quarantined(QID)] == [tag]


def test_a_purge_deletes_the_quarantined_keys_and_a_dlos_segments(backend: Backend) -> None:
    before = quarantine_tree(backend)
    storage = backend.storage
    storage.quarantine_many(QID, [UPLOADED])

    assert storage.purge_many(QID, [UPLOADED]) == {UPLOADED: DELETED}

    assert storage.quarantined(QID) == [] and storage.quarantine_ids() == []
    assert contents(storage) == {k: v for k, v in before.items() if k != UPLOADED}
    assert backend.segments() == set()  # on Swift its segments went with it
    assert storage.restore_many(QID, [UPLOADED]) == {UPLOADED: GONE}


def test_the_dry_run_storage_changes_nothing(backend: Backend) -> None:
    before = quarantine_tree(backend)
    names = backend.names()
    dry = DryRunStorage(backend.storage)

    assert dry.quarantine_many(QID, [UPLOADED]) == {UPLOADED: WOULD_MOVE}
    assert dry.purge_many(QID, [UPLOADED]) == {UPLOADED: WOULD_DELETE}
    assert dry.lock_create(LOCK_KEY, b"a dry run") and dry.lock_read(LOCK_KEY) == b"a dry run"
    dry.lock_remove(LOCK_KEY)
    backend.storage.quarantine_many(QID, [UPLOADED])
    assert dry.restore_many(QID, [UPLOADED]) == {UPLOADED: WOULD_MOVE}
    backend.storage.restore_many(QID, [UPLOADED])

    assert contents(backend.storage) == before
    assert backend.names() == names


# --------------------------------------------------------------------------- one backend's own


@pytest.mark.slow
def test_s3_sends_the_lock_again_after_a_conditional_write_conflict(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 answers 409 ConditionalRequestConflict while another conditional write of the key
    is under way and asks for the request again: the lock is created after two; a write kept
    busy every time is 'not created' (the protocol then reads who holds it)."""
    backend = S3Backend(monkeypatch, moto)
    monkeypatch.setattr(s3, "LOCK_CONFLICT_BACKOFF_SECONDS", 0.0)
    with backend.through_proxy() as (storage, proxy):
        proxy.inject("put", "conflict", times=2, where=LOCK)
        assert storage.lock_create(LOCK, b"mine") is True
        assert (proxy.count("put", "conflict"), proxy.count("put", "forwarded")) == (2, 1)
        proxy.inject("put", "conflict", times=None, where="busy")
        assert storage.lock_create("_regprune/busy", b"other") is False
        assert proxy.count("put", "conflict") == 2 + s3.LOCK_CONFLICT_ATTEMPTS
    assert backend.storage.lock_read(LOCK) == b"mine"
    assert backend.storage.lock_read("_regprune/busy") is None

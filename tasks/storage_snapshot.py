"""Prefect tasks that walk registry storage in parallel shards and write Parquet parts.

Blobs are sharded by their two-hex prefix folders, repositories by their top-level (namespace)
folder. Digests come from the paths, so the only files read are tag ``current`` links and
upload ``startedat`` files, whose content is the information.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from prefect import task
from prefect.client.schemas.objects import State
from prefect.logging import get_run_logger

from regprune.tasks.layout import (
    BLOBS_PREFIX,
    LINK_SIZE,
    REPOSITORIES_PREFIX,
    LayoutError,
    RepoEntry,
    RepoEntryKind,
    is_digest,
    is_openshift_repository,
    parse_blob_key,
    parse_repository_key,
    split_repository,
)
from regprune.tasks.storage import (
    EMPTY_FOLDER,
    StorageConfigError,
    StorageObject,
    StorageSpec,
    open_storage,
)
from regprune.tasks.tables import TableWriters

BLOB_TABLES = ("blobs", "storage_anomalies")
REPOSITORY_TABLES = (
    "repositories",
    "layer_links",
    "manifest_links",
    "tags",
    "tag_index",
    "uploads",
    "storage_anomalies",
)
READ_BATCH = 500
_T = TypeVar("_T")


@dataclass
class StorageShards:
    """The work list of a storage walk: groups of prefixes, each group one task run."""

    blob_groups: list[list[str]] = field(default_factory=list)
    repository_groups: list[list[str]] = field(default_factory=list)
    stray_files: list[tuple[str, str]] = field(default_factory=list)


def _groups(prefixes: Sequence[str], count: int) -> list[list[str]]:
    count = max(1, min(count, len(prefixes)))
    return [list(prefixes[i::count]) for i in range(count)] if prefixes else []


def _retry_unless_config_error(task: Any, task_run: Any, state: State) -> bool:
    """Prefect ``retry_condition_fn``: a storage location that cannot be used (no registry
    there, unsupported URL, access denied) stays so; retrying only delays the message."""
    try:
        state.result()
    except StorageConfigError:
        return False
    except Exception:
        return True
    return True


@task(
    name="plan-storage-shards",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_unless_config_error,
)
def plan_storage_shards(spec: StorageSpec, shard_tasks: int = 16) -> StorageShards:
    """List the two top levels (a handful of requests) and split the walk into task runs."""
    storage = open_storage(spec)
    storage.check_root()
    blob_prefixes, blob_files = storage.list_children(BLOBS_PREFIX)
    repo_roots, repo_files = storage.list_children(REPOSITORIES_PREFIX)
    top_blob_dirs, top_blob_files = storage.list_children("blobs/")
    stray = [
        (obj.key, obj.problem or "unexpected file")
        for obj in (*top_blob_files, *blob_files, *repo_files)
        if obj.problem != EMPTY_FOLDER  # an S3 folder marker of the listed folder itself
    ]
    extra_blob_roots = [f"blobs/{d}/" for d in top_blob_dirs if d != "sha256"]
    blob_roots = [f"{BLOBS_PREFIX}{p}/" for p in blob_prefixes] + extra_blob_roots
    return StorageShards(
        blob_groups=_groups(blob_roots, shard_tasks),
        repository_groups=_groups([f"{REPOSITORIES_PREFIX}{r}/" for r in repo_roots], shard_tasks),
        stray_files=stray,
    )


@task(name="walk-blob-shard", retries=2, retry_delay_seconds=[2, 10])
def walk_blob_shard(spec: StorageSpec, prefixes: list[str], parts_dir: str, shard: int) -> dict:
    """Record every ``blobs/sha256/<2hex>/<hex>/data`` below the given prefix folders."""
    storage = open_storage(spec)
    out = TableWriters(BLOB_TABLES, Path(parts_dir), f"blobs-{shard:04d}")
    try:
        for prefix in prefixes:
            # On S3 an "empty folder" is a marker key ending in "/", which can sit next to the
            # folder's data: a blob folder is only without data once the whole prefix is seen.
            empty_blob_folders: list[str] = []
            data_keys: set[str] = set()
            for obj in storage.walk(prefix):
                if obj.problem == EMPTY_FOLDER:
                    if _is_blob_folder(obj.key):
                        empty_blob_folders.append(obj.key)
                    continue
                if obj.key.endswith("/data"):
                    data_keys.add(obj.key)
                if obj.problem:
                    out["storage_anomalies"].append(path=obj.key, problem=obj.problem)
                    continue
                try:
                    digest = parse_blob_key(obj.key)
                except LayoutError as exc:
                    out["storage_anomalies"].append(path=obj.key, problem=str(exc))
                    continue
                out["blobs"].append(digest=digest, size=obj.size, modified=obj.modified)
            for key in empty_blob_folders:
                if key + "data" not in data_keys:
                    try:
                        parse_blob_key(key)
                    except LayoutError as exc:
                        out["storage_anomalies"].append(path=key, problem=str(exc))
    except BaseException:
        out.abort()
        raise
    return out.close()


class _RepositoryShardWalker:
    """Turns the flat listing of one or more namespace folders into table rows."""

    def __init__(self, spec: StorageSpec, out: TableWriters):
        self.storage = open_storage(spec)
        self.out = out
        self.repositories: set[str] = set()
        self.tag_links: list[tuple[RepoEntry, StorageObject]] = []
        self.upload_starts: dict[tuple[str, str], str] = {}
        self.upload_stats: dict[tuple[str, str], tuple[int, datetime | None]] = {}
        self.suspect_links: list[tuple[RepoEntry, StorageObject]] = []

    def anomaly(self, path: str, problem: str) -> None:
        self.out["storage_anomalies"].append(path=path, problem=problem)

    def walk(self, prefix: str) -> None:
        for obj in self.storage.walk(prefix):
            if obj.problem == EMPTY_FOLDER:
                continue
            if obj.problem:
                self.anomaly(obj.key, obj.problem)
                continue
            try:
                entry = parse_repository_key(obj.key)
            except LayoutError as exc:
                self.anomaly(obj.key, str(exc))
                continue
            self.repositories.add(entry.repository)
            self.record(entry, obj)

    def record(self, entry: RepoEntry, obj: StorageObject) -> None:
        kind = entry.kind
        if kind in (RepoEntryKind.LAYER_LINK, RepoEntryKind.MANIFEST_LINK, RepoEntryKind.TAG_INDEX):
            verdict = _link_verdict(entry.digest or "", obj)
            if verdict == "suspect":
                self.suspect_links.append((entry, obj))
            elif verdict == "ok":
                self.write_link(entry, obj)
            else:
                self.anomaly(obj.key, verdict)
        elif kind is RepoEntryKind.TAG_CURRENT:
            self.tag_links.append((entry, obj))
        else:
            key = (entry.repository, entry.upload_id or "")
            size, newest = self.upload_stats.get(key, (0, None))
            newest = max((t for t in (newest, obj.modified) if t is not None), default=None)
            self.upload_stats[key] = (size + max(obj.size, 0), newest)
            if kind is RepoEntryKind.UPLOAD_STARTEDAT:
                self.upload_starts[key] = obj.key

    def write_link(self, entry: RepoEntry, obj: StorageObject) -> None:
        table = {
            RepoEntryKind.LAYER_LINK: "layer_links",
            RepoEntryKind.MANIFEST_LINK: "manifest_links",
            RepoEntryKind.TAG_INDEX: "tag_index",
        }[entry.kind]
        row = {"repository": entry.repository, "digest": entry.digest, "modified": obj.modified}
        if entry.kind is RepoEntryKind.TAG_INDEX:
            row["tag"] = entry.tag
        self.out[table].append(**row)

    def finish(self) -> None:
        """Read what must be read (in batches), then write repositories and uploads."""
        self.verify_suspect_links()
        self.read_tags()
        self.read_uploads()
        for repository in sorted(self.repositories):
            namespace, name = split_repository(repository)
            self.out["repositories"].append(
                repository=repository,
                namespace=namespace,
                name=name,
                valid_name=is_openshift_repository(repository),
            )

    def verify_suspect_links(self) -> None:
        for batch in _batches(self.suspect_links, READ_BATCH):
            contents = self.storage.read_many([obj.key for _, obj in batch])
            for entry, obj in batch:
                content = contents.get(obj.key)
                if isinstance(content, bytes) and content.strip() == (entry.digest or "").encode():
                    self.write_link(entry, obj)
                else:
                    self.anomaly(obj.key, _link_problem(content, entry.digest))

    def read_tags(self) -> None:
        for batch in _batches(self.tag_links, READ_BATCH):
            contents = self.storage.read_many([obj.key for _, obj in batch])
            for entry, obj in batch:
                content = contents.get(obj.key)
                digest = (
                    content.decode("ascii", "replace").strip() if isinstance(content, bytes) else ""
                )
                if not is_digest(digest):
                    self.anomaly(obj.key, _link_problem(content, None))
                    continue
                self.out["tags"].append(
                    repository=entry.repository, tag=entry.tag, digest=digest, modified=obj.modified
                )

    def read_uploads(self) -> None:
        keys = list(self.upload_starts.values())
        contents = {}
        for batch in _batches(keys, READ_BATCH):
            contents.update(self.storage.read_many(batch))
        for (repository, upload_id), (size, modified) in sorted(self.upload_stats.items()):
            started_at = None
            key = self.upload_starts.get((repository, upload_id))
            if key is not None:
                started_at = _parse_time(contents.get(key))
                if started_at is None:
                    self.anomaly(key, "startedat is not an RFC 3339 time")
            self.out["uploads"].append(
                repository=repository,
                upload_id=upload_id,
                started_at=started_at,
                size=size,
                modified=modified,
            )


@task(name="walk-repository-shard", retries=2, retry_delay_seconds=[2, 10])
def walk_repository_shard(
    spec: StorageSpec, prefixes: list[str], parts_dir: str, shard: int
) -> dict:
    """Record links, tags and uploads of every repository below the given namespace folders."""
    out = TableWriters(REPOSITORY_TABLES, Path(parts_dir), f"repositories-{shard:04d}")
    try:
        walker = _RepositoryShardWalker(spec, out)
        for prefix in prefixes:
            walker.walk(prefix)
        walker.finish()
    except BaseException:
        out.abort()
        raise
    get_run_logger().debug("shard %s: %d repositories", shard, len(walker.repositories))
    return out.close()


@task(name="record-stray-files")
def record_stray_files(stray: list[tuple[str, str]], parts_dir: str) -> dict:
    out = TableWriters(("storage_anomalies",), Path(parts_dir), "stray")
    for path, problem in stray:
        out["storage_anomalies"].append(path=path, problem=problem)
    return out.close()


def _is_blob_folder(key: str) -> bool:
    """``blobs/sha256/<2hex>/<hex>/``: a blob folder must hold ``data``."""
    return key.count("/") == 4 and key.startswith(BLOBS_PREFIX)


def _link_verdict(digest: str, obj: StorageObject) -> str:
    """``ok``, ``suspect`` (must be read to decide) or the anomaly's problem text.

    A link holds exactly ``sha256:<hex>``. On S3 the listing's ETag is the MD5 of a
    single-part object, so a link is validated without a GET; anything else is read.
    """
    if obj.size == 0:
        return "empty link file"
    if obj.size != LINK_SIZE:
        return f"malformed link file ({obj.size} bytes)"
    if obj.etag is None:
        return "ok"
    return "ok" if obj.etag == hashlib.md5(digest.encode()).hexdigest() else "suspect"


def _link_problem(content: bytes | Exception | None, expected: str | None) -> str:
    if isinstance(content, Exception) or content is None:
        return f"unreadable link file: {content}"
    if not content.strip():
        return "empty link file"
    text = content.decode("ascii", "replace").strip()
    if not is_digest(text):
        return "link file does not hold a sha256 digest"
    return f"link content {text} does not match its path ({expected})"


def _parse_time(content: bytes | Exception | None) -> datetime | None:
    if not isinstance(content, bytes):
        return None
    try:
        text = content.decode().strip().replace("Z", "+00:00")
        value = datetime.fromisoformat(text)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if value.tzinfo else None


def _batches(items: Sequence[_T], size: int) -> list[Sequence[_T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]

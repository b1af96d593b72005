"""Walking registry storage into the snapshot's tables: the shards a walk is split into, a
listing's files as rows, the repository walker and its verdicts on links.

Blobs are sharded by their two-hex prefix folders, repositories by their top-level (namespace)
folder. Digests come from the paths, so the only files read are tag ``current`` links and
upload ``startedat`` files, whose content is the information. The Prefect tasks that run a
walk, one shard each, are in tasks/storage_snapshot.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from regprune import progress
from regprune.layout import (
    BLOBS_PREFIX,
    LINK_SIZE,
    REPOSITORY_KEYS_SCHEMA,
    LayoutError,
    RepoEntryKind,
    classify_repository_keys,
    is_digest,
    is_openshift_repository,
    parse_blob_key,
    split_repository,
)
from regprune.storage import EMPTY_FOLDER, LISTING_SCHEMA, Storage, StorageSpec, open_storage
from regprune.tables import STORAGE_TABLES, TableWriters

BLOB_TABLES = ("blobs", "storage_anomalies")
REPOSITORY_TABLES = tuple(t for t in STORAGE_TABLES if t != "blobs")
"""What a repository shard writes: every storage table but the blobs'."""
READ_BATCH = 500
S3_SHARD_TASKS = 16
LISTING_ROWS = 200_000
_T = TypeVar("_T")


@dataclass
class StorageShards:
    """The work list of a storage walk: groups of prefixes, each group one task run."""

    blob_groups: list[list[str]] = field(default_factory=list)
    repository_groups: list[list[str]] = field(default_factory=list)
    stray_files: list[tuple[str, str]] = field(default_factory=list)


def default_shard_tasks(spec: StorageSpec) -> int:
    """S3 answers each listing after a network round trip, so many listings in flight pay;
    a local walk is system calls, and more walkers than cores only contend in the kernel
    (16 threads on 2 cores walked 2.3x slower than 2: bench/RESULTS.md)."""
    return S3_SHARD_TASKS if spec.scheme != "file" else os.cpu_count() or 1


def shard_groups(prefixes: Sequence[str], count: int) -> list[list[str]]:
    count = max(1, min(count, len(prefixes)))
    return [list(prefixes[i::count]) for i in range(count)] if prefixes else []


def prefix_listings(storage: Storage, prefixes: list[str]) -> Iterator[pa.Table]:
    """The listings of whole prefix folders, gathered into tables of about
    :data:`LISTING_ROWS` rows: bulk work pays per call, memory per row."""
    gathered: list[pa.Table] = []
    rows = 0
    for prefix in prefixes:
        listing = storage.list_files(prefix)
        files = listing["problem"].null_count  # not folders (or odd entries)
        progress.advance("walk", files, pc.sum(listing["size"]).as_py() or 0)
        gathered.append(listing)
        rows += listing.num_rows
        if rows >= LISTING_ROWS:
            yield pa.concat_tables(gathered)
            gathered, rows = [], 0
    if gathered:
        yield pa.concat_tables(gathered)


def record_listing_problems(listing: pa.Table, out: TableWriters) -> None:
    """Files the walk found wrong, and blob folders without data.

    On S3 an "empty folder" is a marker key ending in ``/``, which can sit next to the
    folder's data: a blob folder is only without data once the whole prefix is seen.
    """
    odd = listing.filter(pc.is_valid(listing["problem"])).select(["key", "problem"]).to_pylist()
    if not odd:
        return
    data_keys = set(listing.filter(pc.ends_with(listing["key"], "/data"))["key"].to_pylist())
    for row in odd:
        key, problem = row["key"], row["problem"]
        if problem != EMPTY_FOLDER:
            out["storage_anomalies"].append(path=key, problem=problem)
        elif _is_blob_folder(key) and key + "data" not in data_keys:
            try:
                parse_blob_key(key)
            except LayoutError as exc:
                out["storage_anomalies"].append(path=key, problem=str(exc))


_ENTRY_ROWS = pa.schema(
    [*LISTING_SCHEMA.remove(LISTING_SCHEMA.get_field_index("problem")), *REPOSITORY_KEYS_SCHEMA]
)
"""A listed file with its meaning: the listing's columns, then the layout's."""
LINK_TABLES = {
    RepoEntryKind.LAYER_LINK.value: "layer_links",
    RepoEntryKind.MANIFEST_LINK.value: "manifest_links",
    RepoEntryKind.TAG_INDEX.value: "tag_index",
}


class RepositoryShardWalker:
    """Turns the flat listing of one or more namespace folders into table rows.

    Links are checked and written in bulk; tag ``current`` links and uploads (a few per
    repository) are gathered for :meth:`finish`, which reads what must be read.
    """

    def __init__(self, spec: StorageSpec, out: TableWriters):
        self.storage = open_storage(spec)
        self.out = out
        self.repositories: set[str] = set()
        self.tag_links: list[dict[str, Any]] = []
        self.upload_starts: dict[tuple[str, str], str] = {}
        self.upload_stats: dict[tuple[str, str], tuple[int, datetime | None]] = {}
        self.suspect_links: list[dict[str, Any]] = []

    def anomaly(self, path: str, problem: str) -> None:
        self.out["storage_anomalies"].append(path=path, problem=problem)

    def record(self, listing: pa.Table) -> None:
        for row in listing.filter(pc.is_valid(listing["problem"])).to_pylist():
            if row["problem"] != EMPTY_FOLDER:
                self.anomaly(row["key"], row["problem"])
        files = listing.filter(pc.is_null(listing["problem"]))
        entries = classify_repository_keys(files["key"])
        rows = pa.table(
            [*files.drop_columns(["problem"]).columns, *entries.columns], schema=_ENTRY_ROWS
        )
        misfits = rows.filter(pc.is_valid(rows["problem"]))
        self.out["storage_anomalies"].write_table(
            pa.table({"path": misfits["key"], "problem": misfits["problem"]})
        )
        rows = rows.filter(pc.is_null(rows["problem"]))
        self.repositories.update(pc.unique(rows["repository"]).to_pylist())
        self.record_links(rows.filter(pc.is_in(rows["kind"], pa.array(list(LINK_TABLES)))))
        self.tag_links += rows.filter(
            pc.equal(rows["kind"], RepoEntryKind.TAG_CURRENT.value)
        ).to_pylist()
        uploads = (RepoEntryKind.UPLOAD_STARTEDAT.value, RepoEntryKind.UPLOAD_FILE.value)
        for row in rows.filter(pc.is_in(rows["kind"], pa.array(uploads))).to_pylist():
            self.record_upload(row)

    def record_links(self, links: pa.Table) -> None:
        """A link of the right size is written at once when nothing more can be known (a
        local file) and checked one by one otherwise (an S3 ETag, or a wrong size)."""
        plain = pc.and_(pc.equal(links["size"], LINK_SIZE), pc.is_null(links["etag"]))
        self.write_links(links.filter(plain))
        checked = []
        for row in links.filter(pc.invert(plain)).to_pylist():
            verdict = _link_verdict(row["digest"], row["size"], row["etag"])
            if verdict == "ok":
                checked.append(row)
            elif verdict == "suspect":
                self.suspect_links.append(row)
            else:
                self.anomaly(row["key"], verdict)
        self.write_links(pa.Table.from_pylist(checked, schema=_ENTRY_ROWS))

    def write_links(self, links: pa.Table) -> None:
        for kind, table in LINK_TABLES.items():
            self.out[table].write_table(links.filter(pc.equal(links["kind"], kind)))

    def record_upload(self, row: dict[str, Any]) -> None:
        key = (row["repository"], row["upload_id"])
        size, newest = self.upload_stats.get(key, (0, None))
        newest = max((t for t in (newest, row["modified"]) if t is not None), default=None)
        self.upload_stats[key] = (size + max(row["size"], 0), newest)
        if row["kind"] == RepoEntryKind.UPLOAD_STARTEDAT.value:
            self.upload_starts[key] = row["key"]

    def finish(self, links_only: bool = False) -> None:
        """Read what must be read (in batches), then write repositories and uploads; with
        ``links_only`` the tag and upload files, one read each, are left unread."""
        self.verify_suspect_links()
        if not links_only:
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
            contents = self.storage.read_existing([row["key"] for row in batch])
            verified = []
            for row in batch:
                content = contents.get(row["key"])
                if isinstance(content, bytes) and content.strip() == row["digest"].encode():
                    verified.append(row)
                else:
                    self.anomaly(row["key"], _link_problem(content, row["digest"]))
            self.write_links(pa.Table.from_pylist(verified, schema=_ENTRY_ROWS))

    def read_tags(self) -> None:
        for batch in _batches(self.tag_links, READ_BATCH):
            contents = self.storage.read_existing([row["key"] for row in batch])
            for row in batch:
                content = contents.get(row["key"])
                digest = (
                    content.decode("ascii", "replace").strip() if isinstance(content, bytes) else ""
                )
                if not is_digest(digest):
                    self.anomaly(row["key"], _link_problem(content, None))
                    continue
                self.out["tags"].append(
                    repository=row["repository"],
                    tag=row["tag"],
                    digest=digest,
                    modified=row["modified"],
                )

    def read_uploads(self) -> None:
        keys = list(self.upload_starts.values())
        contents = {}
        for batch in _batches(keys, READ_BATCH):
            contents.update(self.storage.read_existing(batch))
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


def _is_blob_folder(key: str) -> bool:
    """``blobs/sha256/<2hex>/<hex>/``: a blob folder must hold ``data``."""
    return key.count("/") == 4 and key.startswith(BLOBS_PREFIX)


def _link_verdict(digest: str, size: int, etag: str | None) -> str:
    """``ok``, ``suspect`` (must be read to decide) or the anomaly's problem text.

    A link holds exactly ``sha256:<hex>``. On S3 the listing's ETag is the MD5 of a
    single-part object, so a link is validated without a GET; anything else is read.
    """
    if size == 0:
        return "empty link file"
    if size != LINK_SIZE:
        return f"malformed link file ({size} bytes)"
    if etag is None:
        return "ok"
    return "ok" if etag == hashlib.md5(digest.encode()).hexdigest() else "suspect"


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

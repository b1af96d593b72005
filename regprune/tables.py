"""The snapshot tables: their schemas (a public contract) and a streaming Parquet writer.

Column names are the same in every table (``digest``, ``repository``, ``namespace``, ``name``,
``tag``, ``position``, ``size``, ``modified``) so joins in ``sql/`` read naturally.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from regprune.duck import DuckDBSettings, sql_literal

TIMESTAMP = pa.timestamp("us", tz="UTC")
SNAPSHOT_FILE = "snapshot.json"

TableParts = dict[str, str]
"""What a task wrote: the path of its Parquet part of each table (merged by merge_parts)."""
"""Written last by a snapshot: a folder without it is not a complete snapshot."""

SCHEMAS: dict[str, pa.Schema] = {
    # storage side
    "blobs": pa.schema([("digest", pa.string()), ("size", pa.int64()), ("modified", TIMESTAMP)]),
    "repositories": pa.schema(
        [
            ("repository", pa.string()),
            ("namespace", pa.string()),
            ("name", pa.string()),
            ("valid_name", pa.bool_()),
        ]
    ),
    "layer_links": pa.schema(
        [("repository", pa.string()), ("digest", pa.string()), ("modified", TIMESTAMP)]
    ),
    "manifest_links": pa.schema(
        [("repository", pa.string()), ("digest", pa.string()), ("modified", TIMESTAMP)]
    ),
    "tags": pa.schema(
        [
            ("repository", pa.string()),
            ("tag", pa.string()),
            ("digest", pa.string()),
            ("modified", TIMESTAMP),
        ]
    ),
    "tag_index": pa.schema(
        [
            ("repository", pa.string()),
            ("tag", pa.string()),
            ("digest", pa.string()),
            ("modified", TIMESTAMP),
        ]
    ),
    "uploads": pa.schema(
        [
            ("repository", pa.string()),
            ("upload_id", pa.string()),
            ("started_at", TIMESTAMP),
            ("size", pa.int64()),
            ("modified", TIMESTAMP),
        ]
    ),
    "storage_anomalies": pa.schema([("path", pa.string()), ("problem", pa.string())]),
    # cluster side
    "images": pa.schema(
        [
            ("image", pa.string()),
            ("managed", pa.bool_()),
            ("media_type", pa.string()),
            ("docker_image_reference", pa.string()),
            ("config_digest", pa.string()),
            ("created", TIMESTAMP),
        ]
    ),
    "image_blobs": pa.schema(
        [
            ("image", pa.string()),
            ("digest", pa.string()),
            ("kind", pa.string()),
            ("position", pa.int32()),
            ("size", pa.int64()),
        ]
    ),
    "imagestreams": pa.schema(
        [
            ("namespace", pa.string()),
            ("name", pa.string()),
            ("uid", pa.string()),
            ("created", TIMESTAMP),
        ]
    ),
    "imagestream_tags": pa.schema(
        [
            ("namespace", pa.string()),
            ("name", pa.string()),
            ("tag", pa.string()),
            ("position", pa.int32()),
            ("image", pa.string()),
            ("docker_image_reference", pa.string()),
            ("created", TIMESTAMP),
        ]
    ),
    "metadata_anomalies": pa.schema(
        [
            ("kind", pa.string()),
            ("namespace", pa.string()),
            ("name", pa.string()),
            ("problem", pa.string()),
        ]
    ),
    # what workloads use (only in a snapshot for prune-images: see WORKLOAD_TABLES)
    "workload_references": pa.schema(
        [
            ("kind", pa.string()),
            ("namespace", pa.string()),
            ("name", pa.string()),
            ("container", pa.string()),
            ("field", pa.string()),
            ("reference", pa.string()),
            ("registry_host", pa.string()),
            ("ref_namespace", pa.string()),
            ("ref_name", pa.string()),
            ("tag", pa.string()),
            ("digest", pa.string()),
            ("counted", pa.bool_()),
            ("problem", pa.string()),
            ("created", TIMESTAMP),
            ("phase", pa.string()),
        ]
    ),
    "limit_ranges": pa.schema(
        [
            ("namespace", pa.string()),
            ("name", pa.string()),
            ("position", pa.int32()),
            ("max_storage", pa.int64()),
            ("max_storage_raw", pa.string()),
        ]
    ),
    "image_sizes": pa.schema([("image", pa.string()), ("size", pa.int64())]),
    # the audit trail of an executed plan (or a dry run): one row per action attempted
    "actions": pa.schema(
        [
            ("run_id", pa.string()),
            ("phase", pa.int32()),
            ("action", pa.string()),
            ("repository", pa.string()),
            ("digest", pa.string()),
            ("upload_id", pa.string()),
            ("size", pa.int64()),
            ("status", pa.string()),
            ("reason", pa.string()),
            ("time", TIMESTAMP),
            ("files", pa.list_(pa.string())),
        ]
    ),
    "quarantined_keys": pa.schema(
        [
            ("quarantine", pa.string()),
            ("key", pa.string()),
            ("kind", pa.string()),
            ("repository", pa.string()),
            ("digest", pa.string()),
            ("tag", pa.string()),
            ("upload_id", pa.string()),
            ("size", pa.int64()),
        ]
    ),
    "quarantine_log": pa.schema(
        [
            ("run_id", pa.string()),
            ("quarantine", pa.string()),
            ("key", pa.string()),
            ("kind", pa.string()),
            ("size", pa.int64()),
            ("status", pa.string()),
            ("reason", pa.string()),
            ("time", TIMESTAMP),
        ]
    ),
    # manifests read from storage (lost-found candidates, manifests no Image knows yet)
    "manifests": pa.schema(
        [
            ("digest", pa.string()),
            ("media_type", pa.string()),
            ("size", pa.int64()),
            ("layer_order", pa.string()),
            ("problem", pa.string()),
        ]
    ),
    "manifest_references": pa.schema(
        [
            ("digest", pa.string()),
            ("reference", pa.string()),
            ("kind", pa.string()),
            ("position", pa.int32()),
            ("size", pa.int64()),
            ("media_type", pa.string()),
            ("architecture", pa.string()),
            ("os", pa.string()),
            ("variant", pa.string()),
        ]
    ),
}

ROWS: dict[str, str] = {
    "blobs": "`blobs/sha256/<2hex>/<hex>/data`",
    "repositories": "repository folder (holds `_manifests`, `_layers` or `_uploads`; names can be "
    "nested). `valid_name`: exactly `<namespace>/<name>` with valid OpenShift names",
    "layer_links": "`_layers/sha256/<hex>/link`",
    "manifest_links": "`_manifests/revisions/sha256/<hex>/link`",
    "tags": "`_manifests/tags/<tag>/current/link` (content read)",
    "tag_index": "`_manifests/tags/<tag>/index/sha256/<hex>/link` (every revision a tag "
    "pointed to)",
    "uploads": "`_uploads/<id>` (unfinished push; `started_at` from `startedat`)",
    "storage_anomalies": "anything that does not parse: bad digests, empty or malformed links, "
    "unknown files, symlinks, blob folders without data",
    "images": "`Image` (`image` = manifest digest)",
    "image_blobs": "blob an Image references: `kind` = `manifest`, `config`, `layer` (position in "
    "manifest order, base layer first) or `manifest_list_child`",
    "imagestreams": "`ImageStream`",
    "imagestream_tags": "item of `status.tags[].items` (position 0 is the current image)",
    "metadata_anomalies": "object that does not parse (names that are not digests, ...)",
    "workload_references": "image a workload uses: a container or init container of a Pod, "
    "ReplicationController, ReplicaSet, Deployment, DeploymentConfig, DaemonSet, StatefulSet, "
    "Job or CronJob (`field` = `containers` / `initContainers`), or the strategy's `from` of a "
    "Build or BuildConfig (`field` = `from:DockerImage` / `from:ImageStreamTag` / "
    "`from:ImageStreamImage`). "
    "`reference` is the raw text, parsed as `oc` parses it: `counted` when it names "
    "`host/ns/name`; `tag` (default `latest`) or `digest`, never both. A reference that does not "
    "parse has `problem` set (and a `metadata_anomalies` row); `created` and `phase` (Pods) of the "
    "workload",
    "limit_ranges": "`openshift.io/Image` limit with `max.storage` of a LimitRange (`max_storage` "
    "in bytes; null when it does not parse)",
    "image_sizes": "Image: `dockerImageMetadata.Size`, what a LimitRange is compared with",
    "actions": "action of an executed plan or a dry run, and each of its changes (the audit "
    "trail, `actions.parquet`): `status` `quarantining` (written before its files move), "
    "`quarantined`, `restored` (moved back by the re-check), `purged`, `gone` (nothing left "
    "to move: not counted), `skipped`, `failed`; `would-quarantine`, `would-restore`, "
    "`would-purge` in a dry run; `files` what it moved (or would)",
    "quarantined_keys": "key a quarantine holds (`_regprune/quarantine/<quarantine>/<key>`) "
    "that a re-check judges (`sql/execution/quarantine_restore.sql`), read as the layout reads it: "
    "`kind` `blob`, `layer_link`, `manifest_link`, `tag_index`, `tag_current`, "
    "`upload_startedat`, `upload_file`, or null for a key that fits no layout",
    "quarantine_log": "key a run moved back out of a quarantine or purged "
    "(`quarantine_log.parquet`: the re-check's and `regprune undo`'s, `regprune purge`'s): "
    "`status` `restoring` or `purging` (written before the change), `restored`, `purged`, "
    "`failed` (why in `reason`), `would-restore`, `would-purge` in a dry run",
    "manifests": "manifest read from storage (lost-found candidates, manifests no Image knows yet)",
    "manifest_references": "blob or child a manifest read from storage references",
}
"""What one row of each table stands for: the reference (docs/reference/tables.md) is written
from this and SCHEMAS, so the contract is stated once."""

STORAGE_TABLES = (
    "blobs",
    "repositories",
    "layer_links",
    "manifest_links",
    "tags",
    "tag_index",
    "uploads",
    "storage_anomalies",
)
METADATA_TABLES = (
    "images",
    "image_blobs",
    "imagestreams",
    "imagestream_tags",
    "metadata_anomalies",
)

SNAPSHOT_TABLES = (*METADATA_TABLES, *STORAGE_TABLES)
WORKLOAD_TABLES = ("workload_references", "limit_ranges", "image_sizes")
"""Written only when a snapshot is asked for workloads (prune-images): not in SNAPSHOT_TABLES,
so the hard prune's snapshot lists nothing more and older snapshots stay readable."""

# Sort keys make every snapshot byte-for-byte reproducible and easy to diff.
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "blobs": ("digest",),
    "repositories": ("repository",),
    "layer_links": ("repository", "digest"),
    "manifest_links": ("repository", "digest"),
    "tags": ("repository", "tag"),
    "tag_index": ("repository", "tag", "digest"),
    "uploads": ("repository", "upload_id"),
    "storage_anomalies": ("path", "problem"),
    "images": ("image",),
    "image_blobs": ("image", "kind", "position", "digest"),
    "imagestreams": ("namespace", "name"),
    "imagestream_tags": ("namespace", "name", "tag", "position"),
    "metadata_anomalies": ("kind", "namespace", "name", "problem"),
    "workload_references": (
        "ref_namespace",
        "ref_name",
        "kind",
        "namespace",
        "name",
        "field",
        "container",
        "reference",
    ),
    "limit_ranges": ("namespace", "name", "position"),
    "image_sizes": ("image",),
    "actions": ("phase", "action", "repository", "digest", "upload_id", "time"),
    "quarantine_log": ("quarantine", "key", "time"),
    "quarantined_keys": ("quarantine", "key"),
    "manifests": ("digest",),
    "manifest_references": ("digest", "kind", "position"),
}


class TableWriter:
    """Append rows, flush a record batch every ``batch_rows``: memory stays flat."""

    def __init__(self, table: str, path: str | os.PathLike[str], batch_rows: int = 50_000):
        self.table = table
        self.schema = SCHEMAS[table]
        self.path = Path(path)
        self.batch_rows = batch_rows
        self.rows_written = 0
        self._columns: dict[str, list[Any]] = {n: [] for n in self.schema.names}
        self._writer: pq.ParquetWriter | None = None

    def append(self, **row: Any) -> None:
        for name, column in self._columns.items():
            column.append(row.get(name))
        if len(self._columns[self.schema.names[0]]) >= self.batch_rows:
            self._flush()

    def write_columns(self, columns: Mapping[str, list[Any]]) -> None:
        """Rows given as columns of equal length (a column left out is null): one call for
        many rows (the executor records a batch at once)."""
        count = len(next(iter(columns.values()), []))
        for name, column in self._columns.items():
            given = columns.get(name)
            column.extend(given if given is not None else [None] * count)
        if len(self._columns[self.schema.names[0]]) >= self.batch_rows:
            self._flush()

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Many rows at once, column by column (a listed page's rows: far cheaper than
        :meth:`append` per row)."""
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return
        for name, column in self._columns.items():
            column.extend([row.get(name) for row in rows])
        if len(self._columns[self.schema.names[0]]) >= self.batch_rows:
            self._flush()

    def write_table(self, rows: pa.Table) -> None:
        """Rows already in columns (the table's columns, any order): written as they are."""
        if self._columns[self.schema.names[0]]:
            self._flush()
        if rows.num_rows:
            self._write(rows.select(self.schema.names).cast(self.schema))

    def _flush(self) -> None:
        count = len(self._columns[self.schema.names[0]])
        if count == 0 and self._writer is not None:
            return
        self._write(pa.Table.from_pydict(self._columns, schema=self.schema))
        for column in self._columns.values():
            column.clear()

    def _write(self, rows: pa.Table) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        self._writer.write_table(rows)
        self.rows_written += rows.num_rows

    def abort(self) -> None:
        """Drop a half-written part so a retried task starts clean."""
        if self._writer is not None:
            self._writer.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> Path:
        self._flush()
        assert self._writer is not None
        self._writer.close()
        return self.path

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class TableWriters:
    """One :class:`TableWriter` per table of a shard, closed together."""

    def __init__(self, tables: Iterable[str], directory: Path, stem: str):
        self.writers = {t: TableWriter(t, directory / t / f"{stem}.parquet") for t in tables}

    def __getitem__(self, table: str) -> TableWriter:
        return self.writers[table]

    def close(self) -> TableParts:
        return {t: str(w.close()) for t, w in self.writers.items()}

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()


def empty_table(table: str) -> pa.Table:
    return SCHEMAS[table].empty_table()


MERGE_MEMORY_LIMIT = "512MB"
"""DuckDB's cap for a merge when the run sets none (its default is 80% of the machine): the
sort and DISTINCT of the images table took about 1 GiB at 1M Images without one; within 512MB it
spills to the temp directory (3.6 s instead of 2.8 s there). 256MB once failed with DuckDB's
"could not allocate block" at 1M, so the cap keeps a margin."""


def merge_parts(
    table: str,
    parts: Iterable[str | os.PathLike[str]],
    dest: Path,
    distinct: bool = False,
    settings: DuckDBSettings | None = None,
) -> int:
    """Merge the part files of one table into ``dest`` (sorted, optionally de-duplicated),
    streaming through DuckDB within ``settings`` (else MERGE_MEMORY_LIMIT) so memory does not
    grow with the table."""
    import duckdb

    parts = [str(p) for p in parts if Path(p).exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not parts:
        pq.write_table(empty_table(table), dest, compression="zstd")
        return 0
    files = "[" + ", ".join(sql_literal(p) for p in parts) + "]"
    columns = ", ".join(f'"{c}"' for c in SCHEMAS[table].names)
    order = ", ".join(f'"{c}"' for c in SORT_KEYS[table])
    query = (
        f"COPY (SELECT {'DISTINCT ' if distinct else ''}{columns} FROM read_parquet({files}) "
        f"ORDER BY {order}) TO {sql_literal(dest)} (FORMAT parquet, COMPRESSION zstd)"
    )
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        (settings or DuckDBSettings()).apply(con, MERGE_MEMORY_LIMIT)
        # the ORDER BY fixes the output's order; without this the Parquet writer also holds
        # row groups back to keep the scan's order (more memory, slower)
        con.execute("SET preserve_insertion_order = false")
        result = con.execute(query).fetchone()
    return int(result[0]) if result else 0

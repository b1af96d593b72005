#!/usr/bin/env python3
"""Snapshot tables of a huge registry written straight as Parquet, with the plan they must give.

Why: planning 10M blobs needs a 10M-blob snapshot; walking a 200 GB tree to get one is not a
benchmark of the plan. DuckDB builds every table of ``regprune/tables.py`` SCHEMAS (same columns,
types and sort order as a real snapshot) and a ``snapshot.json``, in about a minute.

    python bench/snapshot_tables.py --images 1000000 --blobs 10000000 --out bench/data/tables-10m

The registry: ``images`` Images in ImageStreams of 10 images (two tags, five history entries
each); every stream's repository also stores one image that was deleted from the metadata
(its manifest, config and own layers become garbage); every image shares two base layers
from a pool; one stream in every hundred (ten for small registries) was deleted whole. All
objects are old (40 days). ``expected/`` holds what a hard prune with ``--keep-younger-than
0s`` must delete, built from the construction (which index is deleted), not from a join.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from regprune.mediatypes import DOCKER_V2 as MANIFEST_V2
from regprune.tables import SCHEMAS, SNAPSHOT_FILE, SNAPSHOT_TABLES, SORT_KEYS, sql_literal

STORED_PER_STREAM = 11
"""Ten images in metadata plus the one deleted from it (index 10 of every stream)."""
DELETED = STORED_PER_STREAM - 1
REGISTRY_HOST = "image-registry.openshift-image-registry.svc:5000"
AGE = timedelta(days=40)
EXPECTED_TABLES = ("blobs", "repositories", "manifest_links", "layer_links")


@dataclass(frozen=True)
class TablesSpec:
    """The shape of the registry; derived from a number of Images and a number of blobs."""

    streams: int
    streams_per_namespace: int
    own_layers: int
    pool: int

    @classmethod
    def for_size(cls, images: int, blobs: int) -> TablesSpec:
        streams = -(-images // 10)
        if streams < 22:
            raise ValueError("at least 220 images (22 streams: base layers must not collide)")
        stored = streams * STORED_PER_STREAM
        pool = max(22, min(streams, blobs // 100))
        if pool % STORED_PER_STREAM == 0:  # every pool layer must be used by a kept image
            pool -= 1
        own_layers = max(1, round((blobs - pool) / stored) - 2)
        per_namespace = 100 if streams >= 1000 else 10
        return cls(streams, per_namespace, own_layers, pool)

    @property
    def stored_images(self) -> int:
        return self.streams * STORED_PER_STREAM

    @property
    def blobs(self) -> int:
        return self.stored_images * (2 + self.own_layers) + self.pool


def _definitions(spec: TablesSpec, now: datetime) -> str:
    """Macros and the two index views every table is built from."""
    old = (now - AGE).replace(tzinfo=None).isoformat(sep=" ")
    per_ns = spec.streams_per_namespace
    return f"""
    SET TimeZone = 'UTC';
    CREATE MACRO dg(kind, i, j) AS 'sha256:' || sha256(concat_ws('-', kind, i, j));
    CREATE MACRO old_time(i) AS (TIMESTAMPTZ '{old}+00' + to_seconds(i % 86400));
    CREATE MACRO ns(s) AS 'ns' || lpad((s // {per_ns})::VARCHAR, 5, '0');
    CREATE MACRO app(s) AS 'app' || lpad((s % {per_ns})::VARCHAR, 3, '0');
    CREATE MACRO repo(s) AS ns(s) || '/' || app(s);
    CREATE MACRO stream_deleted(s) AS s % {per_ns} = {per_ns - 1};
    CREATE VIEW stored AS
        SELECT range AS i, range // {STORED_PER_STREAM} AS s, range % {STORED_PER_STREAM} AS j
        FROM range({spec.stored_images});
    CREATE VIEW kept AS SELECT * FROM stored WHERE j <> {DELETED};
    CREATE VIEW streams AS SELECT range AS s FROM range({spec.streams});
    CREATE VIEW own_layers AS SELECT range AS k FROM range({spec.own_layers});
    """


def _base_layers(spec: TablesSpec, source: str) -> str:
    """Two pool layers per kept image, positions 0 and 1 (base first)."""
    half = spec.pool // 2
    return f"""
        SELECT i, s, 0 AS position, dg('b', i % {spec.pool}, 0) AS digest FROM {source}
        UNION ALL
        SELECT i, s, 1 AS position, dg('b', (i + {half}) % {spec.pool}, 0) FROM {source}
    """


def _table_queries(spec: TablesSpec) -> dict[str, str]:
    """One SELECT per snapshot table (columns in SCHEMAS order)."""
    host = REGISTRY_HOST
    base_layers = _base_layers(spec, "kept")
    return {
        "blobs": f"""
            SELECT dg('m', i, 0) AS digest, 400 + i % 600 AS size, old_time(i) AS modified
            FROM stored
            UNION ALL SELECT dg('c', i, 0), 1000 + i % 900, old_time(i) FROM stored
            UNION ALL
            SELECT dg('l', i, k), 5000 + (i * 7 + k) % 100000, old_time(i)
            FROM stored, own_layers
            UNION ALL
            SELECT dg('b', range, 0), 2000000 + range, old_time(range) FROM range({spec.pool})
        """,
        "repositories": """
            SELECT repo(s) AS repository, ns(s) AS namespace, app(s) AS name, true AS valid_name
            FROM streams
        """,
        "layer_links": f"""
            SELECT repo(s) AS repository, dg('c', i, 0) AS digest, old_time(i) AS modified
            FROM stored
            UNION ALL SELECT repo(s), dg('l', i, k), old_time(i) FROM stored, own_layers
            UNION ALL SELECT repo(s), digest, old_time(i) FROM ({base_layers})
        """,
        "manifest_links": """
            SELECT repo(s) AS repository, dg('m', i, 0) AS digest, old_time(i) AS modified
            FROM stored
        """,
        "tags": """
            SELECT repo(s) AS repository, 't0' AS tag, dg('m', s * 11 + 4, 0) AS digest,
                old_time(s) AS modified
            FROM streams
            UNION ALL SELECT repo(s), 't1', dg('m', s * 11 + 9, 0), old_time(s) FROM streams
        """,
        "tag_index": """
            SELECT repo(s) AS repository, CASE WHEN j < 5 THEN 't0' ELSE 't1' END AS tag,
                dg('m', i, 0) AS digest, old_time(i) AS modified
            FROM stored
        """,
        "uploads": None,
        "storage_anomalies": None,
        "images": f"""
            SELECT dg('m', i, 0) AS image, true AS managed, '{MANIFEST_V2}' AS media_type,
                '{host}/' || repo(s) || '@' || dg('m', i, 0) AS docker_image_reference,
                dg('c', i, 0) AS config_digest, old_time(i) AS created
            FROM kept
        """,
        "image_blobs": f"""
            SELECT dg('m', i, 0) AS image, dg('m', i, 0) AS digest, 'manifest' AS kind,
                NULL AS position, NULL AS size
            FROM kept
            UNION ALL SELECT dg('m', i, 0), dg('c', i, 0), 'config', NULL, NULL FROM kept
            UNION ALL
            SELECT dg('m', i, 0), digest, 'layer', position, 2000000 FROM ({base_layers})
            UNION ALL
            SELECT dg('m', i, 0), dg('l', i, k), 'layer', 2 + k, 5000 + (i * 7 + k) % 100000
            FROM kept, own_layers
        """,
        "imagestreams": """
            SELECT ns(s) AS namespace, app(s) AS name, 'uid-' || s::VARCHAR AS uid,
                old_time(s) AS created
            FROM streams WHERE NOT stream_deleted(s)
        """,
        "imagestream_tags": f"""
            SELECT ns(s) AS namespace, app(s) AS name,
                CASE WHEN j < 5 THEN 't0' ELSE 't1' END AS tag,
                CASE WHEN j < 5 THEN 4 - j ELSE 9 - j END AS position,
                dg('m', i, 0) AS image,
                '{host}/' || repo(s) || '@' || dg('m', i, 0) AS docker_image_reference,
                old_time(i) AS created
            FROM kept WHERE NOT stream_deleted(s)
        """,
        "metadata_anomalies": None,
    }


EXPECTED_QUERIES = {
    # what a hard prune with no grace period deletes, by construction
    "blobs": f"""
        SELECT dg('m', i, 0) AS digest FROM stored WHERE j = {DELETED}
        UNION ALL SELECT dg('c', i, 0) FROM stored WHERE j = {DELETED}
        UNION ALL SELECT dg('l', i, k) FROM stored, own_layers WHERE j = {DELETED}
    """,
    "repositories": """
        SELECT repo(s) AS repository, 'imagestream-missing' AS reason
        FROM streams WHERE stream_deleted(s)
    """,
    "manifest_links": f"""
        SELECT repo(s) AS repository, dg('m', i, 0) AS digest, 'image-missing' AS reason
        FROM stored WHERE j = {DELETED} AND NOT stream_deleted(s)
    """,
    "layer_links": f"""
        SELECT repo(s) AS repository, dg('c', i, 0) AS digest, 'blob-deleted' AS reason
        FROM stored WHERE j = {DELETED} AND NOT stream_deleted(s)
        UNION ALL
        SELECT repo(s), dg('l', i, k), 'blob-deleted'
        FROM stored, own_layers WHERE j = {DELETED} AND NOT stream_deleted(s)
    """,
}


def _copy(con: duckdb.DuckDBPyConnection, table: str, query: str | None, dest: Path) -> int:
    schema = SCHEMAS[table]
    if query is None:
        pq.write_table(schema.empty_table(), dest, compression="zstd")
        return 0
    columns = ", ".join(
        f'"{name}"::{_duck_type(schema.field(name).type)} AS "{name}"' for name in schema.names
    )
    order = ", ".join(f'"{c}"' for c in SORT_KEYS[table])
    result = con.execute(
        f"COPY (SELECT {columns} FROM ({query}) ORDER BY {order}) TO {sql_literal(dest)} "
        "(FORMAT parquet, COMPRESSION zstd)"
    ).fetchone()
    return int(result[0]) if result else 0


def _duck_type(arrow_type: object) -> str:
    return {
        "string": "VARCHAR",
        "int64": "BIGINT",
        "int32": "INTEGER",
        "bool": "BOOLEAN",
        "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
    }[str(arrow_type)]


def empty_storage(out: Path) -> Path:
    """An empty registry folder (``docker/registry/v2`` and nothing in it)."""
    root = out / "storage"
    (root / "docker" / "registry" / "v2").mkdir(parents=True, exist_ok=True)
    return root


def write_tables(
    out: Path, images: int, blobs: int, memory_limit: str = "4GB", now: datetime | None = None
) -> dict:
    """Write ``out/<table>.parquet``, ``out/snapshot.json`` and ``out/expected/*.parquet``."""
    spec = TablesSpec.for_size(images, blobs)
    now = now or datetime.now(UTC)
    if out.exists():
        shutil.rmtree(out)
    (out / "expected").mkdir(parents=True)
    started = time.perf_counter()
    rows: dict[str, int] = {}
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        con.execute(f"SET memory_limit = {sql_literal(memory_limit)}")
        con.execute(f"SET temp_directory = {sql_literal(out / '_spill')}")
        con.execute(_definitions(spec, now))
        for table, query in _table_queries(spec).items():
            rows[table] = _copy(con, table, query, out / f"{table}.parquet")
        expected = {}
        for table, query in EXPECTED_QUERIES.items():
            dest = out / "expected" / f"{table}.parquet"
            result = con.execute(f"COPY ({query}) TO {sql_literal(dest)} (FORMAT parquet)")
            expected[table] = int(result.fetchone()[0])
    shutil.rmtree(out / "_spill", ignore_errors=True)
    assert set(rows) == set(SNAPSHOT_TABLES), "a snapshot table is missing from the generator"
    seconds = round(time.perf_counter() - started, 3)
    summary = {
        "tool": "bench/snapshot_tables.py",
        "version": "synthetic",
        # no files behind these tables: an empty registry folder, so that the dry run, which
        # lists the files of every repository and upload it would remove, finds none
        "storage": str(empty_storage(out)),
        "metadata": "synthetic",
        # not "kube": the tables are the whole cluster, as a dump's are; a re-check (the dry
        # run's too) has no cluster to list again
        "metadata_source": {"source": "synthetic"},
        "metadata_started_at": now.isoformat(),
        "storage_started_at": now.isoformat(),
        "finished_at": now.isoformat(),
        "duration_seconds": seconds,
        "metadata_objects": {"images": rows["images"], "imagestreams": rows["imagestreams"]},
        "rows": rows,
        "spec": asdict(spec),
        "expected_plan": expected,
    }
    (out / SNAPSHOT_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000, help="Images in metadata")
    parser.add_argument("--blobs", type=int, default=10_000_000, help="target number of blobs")
    parser.add_argument("--out", type=Path, required=True, help="snapshot folder (replaced)")
    parser.add_argument("--memory-limit", default="4GB", help="DuckDB memory for generating")
    args = parser.parse_args(argv)
    summary = write_tables(args.out, args.images, args.blobs, args.memory_limit)
    for table, count in summary["rows"].items():
        print(f"{table:<20}{count:>14,}")
    print(f"expected plan       {summary['expected_plan']}")
    print(f"took {summary['duration_seconds']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

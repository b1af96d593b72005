"""A snapshot merge with and without MERGE_MEMORY_LIMIT: time and peak memory.

    python bench/merge_cap.py [--rows 5000000] [--repeat 3] [--workdir DIR]

Writes 8 Parquet parts of the ``blobs`` table (distinct digests), then merges them with
``regprune.tables.merge_parts`` in a fresh process per run, alternating capped (the default
when a run sets no --memory-limit) and uncapped (DuckDB's 80 % of the machine). Prints the
median time and peak RSS (VmHWM) of each; a process of its own per run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

PARTS = 8


def write_parts(folder: Path, rows: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    for part in range(PARTS):
        con.execute(
            f"COPY (SELECT 'sha256:' || sha256(CAST(i * {PARTS} + {part} AS VARCHAR)) AS digest,"
            " CAST(i % 100000 AS BIGINT) AS size,"
            " TIMESTAMPTZ '2026-01-01 00:00:00+00' AS modified"
            f" FROM range({rows // PARTS}) t(i)) TO '{folder / f'p{part}.parquet'}'"
            " (FORMAT parquet)"
        )


def merge_once(folder: Path, capped: bool) -> dict[str, float]:
    """One merge in this process (run by the parent as a child)."""
    from regprune import tables

    if not capped:
        tables.MERGE_MEMORY_LIMIT = None  # type: ignore[assignment]
    start = time.monotonic()
    tables.merge_parts(
        "blobs", sorted(folder.glob("p*.parquet")), folder / "merged.parquet", distinct=True
    )
    seconds = time.monotonic() - start
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's size when forked
    status = Path("/proc/self/status").read_text()
    peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return {"seconds": seconds, "peak_mib": peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--child", choices=("capped", "uncapped"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="merge-cap-"))
    if args.child:
        print(json.dumps(merge_once(folder, args.child == "capped")))
        return
    write_parts(folder, args.rows)
    runs: dict[str, list[dict[str, float]]] = {"capped": [], "uncapped": []}
    for _ in range(args.repeat):
        for mode in ("uncapped", "capped"):
            child = [sys.executable, __file__, "--workdir", str(folder), "--child", mode]
            out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(out))
    for mode, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        peak = statistics.median(r["peak_mib"] for r in results)
        print(f"{mode:9} {args.rows:,} rows: median {seconds:.2f} s, peak {peak:,.0f} MiB")


if __name__ == "__main__":
    main()

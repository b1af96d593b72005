"""Compare every Parquet table of two run folders: rows (as multisets) and row order.

    python bench/compare_tables.py RUN_A RUN_B [--ignore-timestamps]

Used to show a change leaves a run's tables unchanged (bench/prune_images_memory.py --keep
writes one folder per variant). Prints a line per table; exits 1 when any rows differ. Order
alone may differ where the writing query has no ORDER BY (the prune-images plan's tables).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb

from regprune.tables import sql_literal


def compare(a: Path, b: Path, con: duckdb.DuckDBPyConnection, timestamps: bool) -> bool:
    """Print how table ``a`` differs from ``b``; True when they hold the same rows."""
    fa, fb = sql_literal(a), sql_literal(b)
    described = con.execute(f"DESCRIBE SELECT * FROM {fa}").fetchall()
    columns = [name for name, kind, *_ in described if timestamps or "TIMESTAMP" not in kind]
    quoted = ", ".join(f'"{c}"' for c in columns)
    count = "SELECT count(*) FROM "
    rows = [con.execute(f"{count}{f}").fetchall()[0][0] for f in (fa, fb)]
    missing = [
        con.execute(
            f"{count}(SELECT {quoted} FROM {x} EXCEPT ALL SELECT {quoted} FROM {y})"
        ).fetchall()[0][0]
        for x, y in ((fa, fb), (fb, fa))
    ]
    xs = ", ".join(f'x."{c}"' for c in columns)
    ys = ", ".join(f'y."{c}"' for c in columns)
    numbered = "(SELECT row_number() OVER () AS r, {} FROM {}) {}"
    moved = con.execute(
        f"{count}{numbered.format(quoted, fa, 'x')} FULL JOIN {numbered.format(quoted, fb, 'y')}"
        f" USING (r) WHERE ({xs}) IS DISTINCT FROM ({ys})"
    ).fetchall()[0][0]
    same = rows[0] == rows[1] and missing == [0, 0]
    verdict = ("same rows, same order" if not moved else "same rows, other order") if same else ""
    print(
        f"{a.name:34} rows {rows[0]:>9} {rows[1]:>9}  only in one: {missing[0]} {missing[1]}  "
        f"{verdict or 'DIFFERENT'}"
    )
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--ignore-timestamps", action="store_true")
    args = parser.parse_args()
    names = sorted({p.name for d in (args.a, args.b) for p in d.glob("*.parquet")})
    con = duckdb.connect()
    same = True
    for name in names:
        if not ((args.a / name).exists() and (args.b / name).exists()):
            print(f"{name:34} in one folder only")
            same = False
            continue
        same &= compare(args.a / name, args.b / name, con, not args.ignore_timestamps)
    print("same rows in every table" if same else "TABLES DIFFER")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()

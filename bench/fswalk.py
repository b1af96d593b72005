#!/usr/bin/env python3
"""The physical limit of a filesystem snapshot: walk a tree with os.scandir and lstat every file.

    python bench/fswalk.py ROOT

Prints the number of files and their total size. No parsing, no rows, no Parquet: whatever a
snapshot does beyond this is its own cost.
"""

from __future__ import annotations

import os
import sys


def walk(root: str) -> tuple[int, int]:
    files = size = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    size += entry.stat(follow_symlinks=False).st_size
                    files += 1
    return files, size


if __name__ == "__main__":
    count, total = walk(sys.argv[1])
    print(f"{count} files, {total} bytes")

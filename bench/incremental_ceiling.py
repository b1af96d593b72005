#!/usr/bin/env python3
"""What an incremental snapshot could save on a folder, at best: the floor of each way to learn
that nothing changed, timed against the full walk on the same tree.

    python bench/incremental_ceiling.py ROOT [--repeat 3]

An incremental snapshot reuses the previous snapshot's rows where storage did not change. To
equal a full walk it must still notice every change the registry (or a person) makes:

- an entry added or removed in a folder changes that folder's mtime, but not its parent's:
  distribution's filesystem driver deletes a layer link's ``link`` file and leaves its folder,
  so only the link's own folder shows it. Every folder must be stat-ed, not only the
  ``blobs/sha256/<2hex>`` level.
- a file rewritten in place changes no folder at all: the driver's PutContent truncates and
  writes the file (a tag's ``current/link`` when a tag moves), and a truncated ``data`` file is
  hand-made drift. Every file must be stat-ed too, or read where its content matters.

So the floors are: ``stat`` of every folder the previous walk saw (entry sets only), and that
plus ``lstat`` of every file (entry sets and sizes/mtimes). Both are timed here against the
full ``os.scandir`` walk (bench/fswalk.py's), all in this one process, warm caches, medians of
``--repeat`` rounds alternating the three. CPU seconds (user + system) are given beside wall
seconds: on a loaded machine they are the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from collections.abc import Callable


def full_walk(root: str) -> tuple[list[tuple[str, int]], list[str]]:
    """Every folder (with its mtime) and every file, as a snapshot's walk sees them."""
    folders: list[tuple[str, int]] = [(root, os.stat(root).st_mtime_ns)]
    files: list[str] = []
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append((entry.path, entry.stat(follow_symlinks=False).st_mtime_ns))
                    stack.append(entry.path)
                else:
                    entry.stat(follow_symlinks=False)
                    files.append(entry.path)
    return folders, files


def stat_folders(folders: list[tuple[str, int]]) -> int:
    """How many folders changed since the walk (the entry-set floor)."""
    return sum(1 for path, mtime in folders if os.stat(path).st_mtime_ns != mtime)


def stat_folders_and_files(folders: list[tuple[str, int]], files: list[str]) -> int:
    changed = stat_folders(folders)
    for path in files:
        os.lstat(path)
    return changed


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    work()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="a registry rootdirectory (or any tree)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folders, files = full_walk(args.root)  # warms the caches and gives the lists
    ways: dict[str, Callable[[], object]] = {
        "full scandir walk": lambda: full_walk(args.root),
        "stat every folder": lambda: stat_folders(folders),
        "stat every folder + lstat every file": lambda: stat_folders_and_files(folders, files),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(args.repeat):
        for name, work in ways.items():
            runs[name].append(timed(work))
    full_wall = statistics.median(w for w, _ in runs["full scandir walk"])
    full_cpu = statistics.median(c for _, c in runs["full scandir walk"])
    result = {
        "root": args.root,
        "folders": len(folders),
        "files": len(files),
        "repeat": args.repeat,
        "load_average": os.getloadavg(),
        "ways": {},
    }
    print(f"{len(folders):,} folders, {len(files):,} files, load {os.getloadavg()[0]:.1f}")
    print(f"{'way':40} {'wall s':>8} {'÷ full':>7} {'CPU s':>8} {'÷ full':>7}")
    for name, series in runs.items():
        wall = statistics.median(w for w, _ in series)
        cpu = statistics.median(c for _, c in series)
        result["ways"][name] = {"wall": wall, "cpu": cpu, "runs": series}
        print(f"{name:40} {wall:8.2f} {wall / full_wall:6.2f}x {cpu:8.2f} {cpu / full_cpu:6.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The deleting baseline: remove given files, then given folders (deepest first), in one
process, as ``rm`` would: ``unlink`` per file, ``rmdir`` per folder.

    python bench/rm_files.py ROOT LIST        # LIST: relative paths, one a line; a trailing
                                              # "/" marks a folder

What a confirmed prune deletes on a folder is compared with this on another copy of the same
tree (bench/run, section fs: "deleting").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def remove(root: Path, listing: Path) -> tuple[int, int]:
    files, folders = [], []
    for line in listing.read_text().splitlines():
        if line.endswith("/"):
            folders.append(line.rstrip("/"))
        elif line:
            files.append(line)
    for name in files:
        os.unlink(root / name)
    for name in sorted(folders, key=lambda f: f.count("/"), reverse=True):
        os.rmdir(root / name)
    return len(files), len(folders)


def tree(root: Path) -> set[str]:
    """Every file and folder under ``root``, relative; folders end with "/"."""
    found: set[str] = set()
    for folder, dirs, files in os.walk(root):
        relative = os.path.relpath(folder, root)
        prefix = "" if relative == "." else relative + "/"
        found.update(prefix + d + "/" for d in dirs)
        found.update(prefix + f for f in files)
    return found


if __name__ == "__main__":
    removed = remove(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"removed {removed[0]} files and {removed[1]} folders")

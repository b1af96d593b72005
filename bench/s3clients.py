#!/usr/bin/env python3
"""S3 clients a run makes: bench/dryrun_requests.py (the demo registry in moto: a dry run, the
dry run again from its snapshot, ``--confirm``, the purge), with ``S3FileSystem.__init__`` and
aiobotocore's ``AioSession.create_client`` counted per command, and each command's wall and CPU
time (this process).

Why: a botocore client is costly to make (its session decodes botocore's JSON data files), and
regprune used to make one per task and batch; regprune/storage/clients.py keeps one per process
and configuration.

    python bench/s3clients.py [--blobs N]   # dryrun_requests.py's JSON, then a CLIENTS line
"""

from __future__ import annotations

import json
import runpy
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiobotocore.session
import s3fs

HERE = Path(__file__).resolve().parent
made: Counter[str] = Counter()
_lock = threading.Lock()
_init = s3fs.S3FileSystem.__init__
_create = aiobotocore.session.AioSession.create_client


def _counted_init(self: Any, *args: Any, **kwargs: Any) -> None:
    with _lock:
        made["S3FileSystem"] += 1
    _init(self, *args, **kwargs)


def _counted_create(self: Any, *args: Any, **kwargs: Any) -> Any:
    with _lock:
        made["create_client"] += 1
    return _create(self, *args, **kwargs)


def main() -> None:
    s3fs.S3FileSystem.__init__ = _counted_init  # type: ignore[method-assign]
    aiobotocore.session.AioSession.create_client = _counted_create  # type: ignore[method-assign]
    sys.path.insert(0, str(HERE.parent))
    import regprune.cli.main as cli

    original = cli.main
    per_command: dict[str, dict[str, float]] = {}

    def counted_main(args: list[str]) -> int:
        before, wall, cpu = Counter(made), time.monotonic(), time.process_time()
        try:
            return original(args)
        finally:
            flags = [a for a in args if a in ("--snapshot", "--confirm")]
            per_command[" ".join(args[:1] + flags)] = {
                **{k: made[k] - before[k] for k in made},
                "wall_s": round(time.monotonic() - wall, 2),
                "cpu_s": round(time.process_time() - cpu, 2),
            }

    cli.main = counted_main  # dryrun_requests.py imports it when it runs
    sys.argv = [str(HERE / "dryrun_requests.py"), *sys.argv[1:]]
    runpy.run_path(str(HERE / "dryrun_requests.py"), run_name="__main__")
    print("CLIENTS " + json.dumps({"per_command": per_command, "total": dict(made)}))


if __name__ == "__main__":
    main()

"""Plumbing for the bench's ``reference`` section: OpenShift's own hard prune
(``dockerregistry -prune=check``) on the bench's generated registries.

The reference reads Images and ImageStreams from the API, not from a dump: the generated
``metadata.json`` is served by the tests' OpenShift API server (``tests/openshift_api.py``)
in the bench process, over plain HTTP with ``OPENSHIFT_MASTER``/``BEARER_TOKEN`` (see
``tests/reference.py``). The reference lists every Image in one request, then GETs one
ImageStream per repository: the server's answers are part of its time, its memory is not
part of its peak RSS (it is the bench process).
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests/ is importable from the checkout
    sys.path.insert(0, str(REPO))

from tests.openshift_api import OpenShiftAPIServer  # noqa: E402
from tests.reference import (  # noqa: E402
    BUILD_LINE,
    REFERENCE_ENV,
    find_reference,
    load_dump,
    parse_prune_output,
    reference_config,
    reference_env,
)

__all__ = [
    "BUILD_LINE",
    "REFERENCE_ENV",
    "ReferenceCounts",
    "find_reference",
    "missing_message",
    "prune_check_command",
    "reference_config",
    "reference_counts",
    "reference_env",
    "served_metadata",
]


def missing_message() -> str:
    """Why the section cannot run, and how to make it."""
    return (
        f"OpenShift's registry binary is missing (not at ../shared/openshift-registry/"
        f"dockerregistry, ${REFERENCE_ENV} unset): {BUILD_LINE}"
    )


@contextlib.contextmanager
def served_metadata(metadata: Path) -> Iterator[OpenShiftAPIServer]:
    """The generated metadata dump served as the cluster's image API."""
    with OpenShiftAPIServer() as server:
        load_dump(server, metadata)
        yield server


def prune_check_command(binary: Path, config: Path) -> list[str]:
    return [str(binary), "-prune=check", str(config)]


@dataclass(frozen=True)
class ReferenceCounts:
    """What one ``-prune=check`` run named, from its output (stdout and stderr together)."""

    blobs: int
    manifest_links: int
    repositories: int
    summary_blobs: int | None
    freed: str | None


_FREED = re.compile(r"^Would free up (.+) of disk space$", re.M)


def reference_counts(output: str) -> ReferenceCounts:
    """Count the objects a ``-prune=check`` run would delete; ``output`` is its stdout and
    stderr interleaved (the bench logs both to one file): the JSON log lines and the summary
    lines are told apart line by line."""
    logs = "\n".join(line for line in output.splitlines() if line.lstrip().startswith("{"))
    plain = "\n".join(line for line in output.splitlines() if not line.lstrip().startswith("{"))
    parsed = parse_prune_output(plain, logs)
    freed = _FREED.search(plain)
    return ReferenceCounts(
        len(parsed.blobs),
        len(parsed.manifest_links),
        len(parsed.repositories),
        parsed.blob_count,
        freed.group(1) if freed else None,
    )


def fs_storage(root: Path) -> dict[str, Any]:
    return {"filesystem": {"rootdirectory": str(root)}}

"""Plumbing for the bench's ``reference`` section: OpenShift's own hard prune
(``dockerregistry -prune=check``) on the bench's generated registries.

The reference reads Images and ImageStreams from the API, not from a dump: the generated
``metadata.json`` is served by the tests' OpenShift API server (``tests/harness/openshift_api.py``)
in the bench process, over plain HTTP with ``OPENSHIFT_MASTER``/``BEARER_TOKEN`` (see
``tests/harness/reference.py``). The reference lists every Image in one request, then GETs one
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

from tests.harness.openshift_api import OpenShiftAPIServer  # noqa: E402
from tests.harness.reference import (  # noqa: E402
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


@dataclass(frozen=True)
class Comparison:
    """The reference's dry run against regprune's 0s plan of the same registry, as sets."""

    same_blobs: bool
    same_repositories: bool
    #: manifest links only the reference deletes / only regprune deletes
    reference_only_links: int
    regprune_only_links: int
    #: of the reference-only links, those of children of a list their stream has
    list_children: int

    def explained(self) -> bool:
        """Every difference is a row of the README's "Compared with OpenShift's own hard
        prune" for a prune without young objects: list children kept (and dangling links
        regprune adds)."""
        return (
            self.same_blobs
            and self.same_repositories
            and self.reference_only_links == self.list_children
        )

    def describe(self) -> str:
        return (
            f"blobs {'identical' if self.same_blobs else 'DIFFERENT'}, repositories "
            f"{'identical' if self.same_repositories else 'DIFFERENT'}; manifest links only the "
            f"reference deletes: {self.reference_only_links:,} (of which children of a list in "
            f"their stream: {self.list_children:,}), only regprune: {self.regprune_only_links:,}"
        )


def compare(output: str, report: dict[str, Any], metadata: dict[str, Any]) -> Comparison:
    """Compare a ``-prune=check`` output (stdout and stderr interleaved) with a regprune
    report (``--report`` JSON) and the metadata dump both read."""
    logs = "\n".join(line for line in output.splitlines() if line.lstrip().startswith("{"))
    ref = parse_prune_output("", logs)
    links = {(r["repository"], r["digest"]) for r in report["manifest_links"]}
    images = {i["metadata"]["name"]: i for i in metadata["items"] if i.get("kind") == "Image"}
    history: dict[str, set[str]] = {}
    for item in metadata["items"]:
        if item.get("kind") == "ImageStream":
            repo = f"{item['metadata']['namespace']}/{item['metadata']['name']}"
            tags = (item.get("status") or {}).get("tags") or []
            history[repo] = {e["image"] for t in tags for e in t.get("items") or []}

    def child_of_stream_list(repo: str, digest: str) -> bool:
        return any(
            m.get("digest") == digest
            for d in history.get(repo, ())
            for m in (images.get(d) or {}).get("dockerImageManifests") or []
        )

    only_ref = ref.manifest_links - links
    return Comparison(
        same_blobs=ref.blobs == {r["digest"] for r in report["blobs"]},
        same_repositories=ref.repositories == {r["repository"] for r in report["repositories"]},
        reference_only_links=len(only_ref),
        regprune_only_links=len(links - ref.manifest_links),
        list_children=sum(child_of_stream_list(r, d) for r, d in only_ref),
    )

"""What each flow returns to its caller (the CLI, the nightly GC, a deployment's run).

A flow's outcome is its run folder (the tables, the report JSON, the audit trail: what a
person or a query reads) plus the few facts a caller acts on: the text to print, whether
something failed, whether findings were made. Those are attributes here, checked by mypy,
instead of keys of a dict that a caller must spell as the flow did. ``summary`` stays the
report's summary as written to the report JSON (its schema is the report's, docs/reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class UnsafePlan(RuntimeError):
    """This metadata cannot be trusted to decide deletions in this storage (see --force).
    Here, not in flows/prune.py, so that a flow that refuses alike (prune-images) need not
    import the hard prune's flow before it runs it."""


@dataclass(frozen=True)
class RunResult:
    """A run of one flow: its folder, the text a person reads and the report's summary."""

    run_dir: str
    text: str
    summary: dict[str, Any] = field(default_factory=dict)
    failed: int = 0
    """Actions that failed (deletions, restores, moves): a caller exits non-zero on any."""


@dataclass(frozen=True)
class CheckResult(RunResult):
    """A check: the findings counted (restored lost-found tags not among them) per kind."""

    findings: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PruneImagesResult(RunResult):
    """prune-images, and the hard prune of the storage it freed when one was asked for."""

    hard_prune: RunResult | None = None


@dataclass(frozen=True)
class NightlyResult(RunResult):
    """The nightly GC: prune-images, then the hard prune (projected in a dry run)."""

    prune_images: RunResult | None = None
    hard_prune: RunResult | None = None


@dataclass(frozen=True)
class UndoResult(RunResult):
    """An undo: one entry per part of the run put back (storage, Images), each with its
    counts and text as that part's undo step reported them."""

    parts: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class DemoResult:
    """The demo: the generated registry, the prune and check over it, and how both compare
    with the generator's ground truth (a line per comparison)."""

    run_dir: str
    storage: str
    metadata: str
    truth: str
    prune: RunResult
    check: CheckResult
    agreement: list[str]

    @property
    def agrees(self) -> bool:
        return all("matches" in line for line in self.agreement)

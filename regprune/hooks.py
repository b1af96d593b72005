"""Named moments of a run that tests can act at, deterministically (no sleeps): a push made
right after the re-read before the blob phase, or between the quarantine and its re-check
(tests/test_two_phase.py). Nothing is registered outside tests; a moment then costs a dict
lookup."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

RECHECKED = "rechecked"
"""The storage and metadata were read again before a phase (``phase``: 1 or 2)."""
QUARANTINED = "quarantined"
"""Every phase has moved what it moves; the settle time and the re-check come next."""

_HOOKS: dict[str, list[Callable[..., None]]] = {}


def reached(moment: str, **details: Any) -> None:
    """Called by the flows at ``moment``; runs what is registered for it."""
    for hook in list(_HOOKS.get(moment, ())):
        hook(**details)


@contextmanager
def at(moment: str, hook: Callable[..., None]) -> Iterator[None]:
    """Run ``hook(**details)`` whenever ``moment`` is reached inside the ``with`` block."""
    _HOOKS.setdefault(moment, []).append(hook)
    try:
        yield
    finally:
        _HOOKS[moment].remove(hook)

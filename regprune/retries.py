"""Retrying: one backoff for every client loop, one Prefect retry condition for every task.

A task retries what may pass (a reset connection, a 503); an error that says the input is wrong
(no registry at that URL, a 403, a folder that is no snapshot) stays wrong, and retrying it would
only delay the message the user needs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any


def backoff(attempt: int, base: float, cap: float) -> float:
    """Capped exponential backoff with jitter: ``base * 2**attempt`` up to ``cap``, times a
    random factor in [0.5, 1) so parallel workers do not retry in step."""
    return min(cap, base * 2**attempt) * (0.5 + random.random() / 2)


def retry_unless(*permanent: type[BaseException]) -> Callable[[Any, Any, Any], bool]:
    """A Prefect ``retry_condition_fn`` that retries anything but the ``permanent`` errors
    (and an interrupted run's: it starts nothing again)."""
    from regprune.interrupts import Interrupted

    never: tuple[type[BaseException], ...] = (*permanent, Interrupted)

    def should_retry(task: Any, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except never:
            return False
        except Exception:
            return True
        return True

    names = "_".join(error.__name__ for error in permanent)
    should_retry.__name__ = f"retry_unless_{names}"
    return should_retry

"""What the object-store backends share: lazy client imports that name the extra to install
(GCS, Azure, Swift), the one retry loop around every bulk delete (S3's DeleteObjects, the
GCS and Azure batch APIs, Swift's bulk middleware), and moving keys by a server-side copy."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

from regprune.retries import backoff
from regprune.storage.base import MOVED, StorageConfigError

DELETE_ATTEMPTS = 6
DELETE_BACKOFF_SECONDS = 0.5
DELETE_BACKOFF_MAX_SECONDS = 20.0


def require(module: str, extra: str) -> ModuleType:
    """Import a client library that only one backend needs, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise StorageConfigError(
            f"this storage needs {module.split('.')[0]} ({exc}): pip install 'regprune[{extra}]'"
        ) from exc


BatchSender = Callable[[list[str]], dict[str, str | None]]
"""Sends one bulk delete; per key None (deleted, or already gone) or why it failed. Raises
when the whole request failed (throttled, a server error, a reset connection)."""


def delete_in_batches(
    keys: Sequence[str],
    batch_size: int,
    send: BatchSender,
    transient: tuple[type[BaseException], ...],
    backoff_seconds: Callable[[], float] = lambda: DELETE_BACKOFF_SECONDS,
) -> dict[str, str | None]:
    """Every key through ``send`` in batches of ``batch_size``. A request that failed with a
    ``transient`` error, and the keys an answer reports failed (or leaves out), are retried
    with backoff, then reported; any other error is reported for its batch at once. Never
    raises: the caller records every outcome, the batches done before a failing one too."""
    out: dict[str, str | None] = {}
    keys = list(dict.fromkeys(keys))  # a key named twice is sent once
    for start in range(0, len(keys), batch_size):
        pending = keys[start : start + batch_size]
        for attempt in range(DELETE_ATTEMPTS):
            last = attempt == DELETE_ATTEMPTS - 1
            try:
                answer = send(pending)
            except Exception as exc:  # recorded per key: the caller must see every outcome
                if last or not isinstance(exc, transient):
                    out.update({key: f"{type(exc).__name__}: {exc}" for key in pending})
                    break
                time.sleep(backoff(attempt, backoff_seconds(), DELETE_BACKOFF_MAX_SECONDS))
                continue
            failed = {k: answer.get(k, "no answer for this key") for k in pending}
            failed = {k: v for k, v in failed.items() if v is not None}
            out.update({k: None for k in pending if k not in failed})
            pending = list(failed)
            if not pending:
                break
            if last:
                out.update(failed)
            else:
                time.sleep(backoff(attempt, backoff_seconds(), DELETE_BACKOFF_MAX_SECONDS))
    return out


COPY_THREADS = 8
"""Server-side copies in flight at once per move: each is one request that returns when the
service has copied (no bytes pass through this process)."""


def move_by_copy(
    keys: Sequence[str],
    copy: Callable[[str], str],
    delete_sources: Callable[[list[str]], dict[str, str | None]],
) -> dict[str, str]:
    """Move keys on an object store: ``copy`` each (its outcome: MOVED, GONE when the source
    is not there, or the error), then delete the sources copied in bulk. A source that
    failed to go is reported (both copies exist; moving it again finishes the move)."""
    unique = list(dict.fromkeys(keys))
    if not unique:
        return {}
    with ThreadPoolExecutor(min(COPY_THREADS, len(unique))) as pool:
        out = dict(zip(unique, pool.map(copy, unique), strict=True))
    copied = [key for key in unique if out[key] == MOVED]
    for key, error in delete_sources(copied).items():
        if error:
            out[key] = f"copied, but the source was not deleted: {error}"
    return out

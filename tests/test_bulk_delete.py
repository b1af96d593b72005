"""The one retry loop of every bulk delete (``regprune.storage.cloud.delete_in_batches``),
tested at the library with a scripted sender: what is retried, what is reported, and that
nothing raises. Against real services (moto and the emulators, through fault proxies) the
same promises are checked by tests/test_storage_conformance.py."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest

from regprune.storage import cloud


class Throttled(OSError):
    """What a client raises for a whole request that may pass when sent again."""


class Sender:
    """Answers each request from a script: per request, an exception to raise or a callable
    that answers the keys sent; records every request."""

    def __init__(self, *script: BaseException | Callable[[list[str]], dict[str, str | None]]):
        self.script = list(script)
        self.requests: list[list[str]] = []

    def __call__(self, keys: list[str]) -> dict[str, str | None]:
        self.requests.append(list(keys))
        step = self.script.pop(0) if self.script else done
        if isinstance(step, BaseException):
            raise step
        return step(keys)


def done(keys: list[str]) -> dict[str, str | None]:
    return dict.fromkeys(keys)


def failing(marker: str, why: str = "InternalError: try again") -> Callable[..., dict]:
    return lambda keys: {key: why if marker in key else None for key in keys}


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses the deleting code takes (cloud's own ``time``: patching ``time.sleep``
    itself would also hand every other thread of the session a sleep that returns at once)."""
    slept: list[float] = []
    monkeypatch.setattr(cloud, "time", SimpleNamespace(sleep=slept.append))
    return slept


def delete(keys: list[str], send: Sender, batch: int = 2) -> dict[str, str | None]:
    return cloud.delete_in_batches(keys, batch, send, (OSError,))


def test_keys_go_in_batches_each_once() -> None:
    send = Sender()
    keys = ["a", "b", "a", "c", "d", "b", "e"]
    assert delete(keys, send) == dict.fromkeys(keys)
    assert send.requests == [["a", "b"], ["c", "d"], ["e"]]


def test_a_key_the_answer_says_failed_is_retried_alone_until_it_goes(
    no_waiting: list[float],
) -> None:
    send = Sender(failing("b"), failing("b"), done)
    assert delete(["a", "b"], send) == {"a": None, "b": None}
    assert send.requests == [["a", "b"], ["b"], ["b"]]
    assert len(no_waiting) == 2


def test_a_key_that_keeps_failing_is_reported_with_the_last_answer() -> None:
    send = Sender(*[failing("b", f"SlowDown {n}") for n in range(cloud.DELETE_ATTEMPTS)])
    outcome = delete(["a", "b", "c"], send)
    assert outcome == {"a": None, "b": f"SlowDown {cloud.DELETE_ATTEMPTS - 1}", "c": None}
    assert len(send.requests) == cloud.DELETE_ATTEMPTS + 1  # the second batch: ["c"]


def test_a_key_the_answer_leaves_out_is_not_counted_done() -> None:
    send = Sender(*[lambda keys: {"a": None} for _ in range(cloud.DELETE_ATTEMPTS)])
    assert delete(["a", "b"], send) == {"a": None, "b": "no answer for this key"}


def test_a_request_that_failed_is_sent_again() -> None:
    send = Sender(Throttled("503 SlowDown"), ConnectionResetError(), done)
    assert delete(["a", "b"], send, batch=10) == {"a": None, "b": None}
    assert send.requests == [["a", "b"]] * 3


def test_a_request_that_keeps_failing_reports_its_keys_and_the_next_batch_goes_on() -> None:
    send = Sender(*[Throttled("503 SlowDown")] * cloud.DELETE_ATTEMPTS)
    assert delete(["a", "b", "c"], send) == {
        "a": "Throttled: 503 SlowDown",
        "b": "Throttled: 503 SlowDown",
        "c": None,
    }


def test_an_error_that_will_not_pass_is_reported_at_once_not_raised() -> None:
    """A batch done before it stays counted: the caller records both."""
    send = Sender(done, ValueError("answer is not JSON"))
    assert delete(["a", "b", "c", "d"], send) == {
        "a": None,
        "b": None,
        "c": "ValueError: answer is not JSON",
        "d": "ValueError: answer is not JSON",
    }
    assert len(send.requests) == 2


PRODUCT_BACKOFF_SECONDS = cloud.DELETE_BACKOFF_SECONDS
"""Read at collection, before a session fixture (no_retry_waits) sets it to 0."""


def test_backoff_grows_between_attempts(
    no_waiting: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the product's base, whatever no_retry_waits set for the session's flow tests
    monkeypatch.setattr(cloud, "DELETE_BACKOFF_SECONDS", PRODUCT_BACKOFF_SECONDS)
    send = Sender(*[Throttled("503")] * (cloud.DELETE_ATTEMPTS - 1))
    assert delete(["a"], send) == {"a": None}
    assert len(no_waiting) == cloud.DELETE_ATTEMPTS - 1
    base = cloud.DELETE_BACKOFF_SECONDS
    for attempt, pause in enumerate(no_waiting):
        ceiling = min(cloud.DELETE_BACKOFF_MAX_SECONDS, base * 2**attempt)
        assert ceiling / 2 <= pause <= ceiling

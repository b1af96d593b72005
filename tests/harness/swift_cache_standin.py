"""A stand-in for memcache in the Swift all-in-one's proxy (``[filter:cache]``).

Why: tempauth keeps its tokens in ``env["swift.cache"]`` and refuses to work without it
("Memcache required"). The test proxy runs as one process (``workers = 0``), so a dict in that
process does the job and the bench needs no memcached server. Loaded by Swift's own Python
(Debian's ``/usr/bin/python3``) through ``paste.filter_factory``: standard library only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any


class DictCache:
    """The part of Swift's ``MemcacheRing`` that the proxy and tempauth call, in a dict."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            expires, value = self._data.get(key, (0.0, None))
            if expires and expires < time.time():
                self._data.pop(key, None)
                return None
            return value

    def set(self, key: str, value: Any, *args: Any, time: float = 0, **kwargs: Any) -> bool:
        expires = _clock() + time if time else 0.0
        with self._lock:
            self._data[key] = (expires, value)
        return True

    def delete(self, key: str, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._data.pop(key, None)

    def incr(self, key: str, delta: int = 1, *args: Any, **kwargs: Any) -> int:
        with self._lock:
            expires, value = self._data.get(key, (0.0, 0))
            value = int(value or 0) + delta
            self._data[key] = (expires, value)
            return value

    def decr(self, key: str, delta: int = 1, *args: Any, **kwargs: Any) -> int:
        return self.incr(key, -delta)

    def get_multi(self, keys: Iterable[str], server_key: str, *args: Any, **kwargs: Any) -> list:
        return [self.get(key) for key in keys]

    def set_multi(
        self, mapping: dict[str, Any], server_key: str, *args: Any, time: float = 0, **kwargs: Any
    ) -> None:
        for key, value in mapping.items():
            self.set(key, value, time=time)


_clock = time.time


def filter_factory(global_conf: dict[str, str], **local_conf: str) -> Callable[[Any], Any]:
    """Paste entry point: a middleware putting one shared :class:`DictCache` in every request."""
    cache = DictCache()

    def make(app: Any) -> Callable[[dict[str, Any], Any], Any]:
        def middleware(env: dict[str, Any], start_response: Any) -> Any:
            env["swift.cache"] = cache
            return app(env, start_response)

        return middleware

    return make

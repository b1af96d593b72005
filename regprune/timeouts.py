"""How long a network call may wait: the connect, read and request timeouts every client
of regprune gets (the Kubernetes API, the five storage backends, the registry's API).

- **connect**: a connection not made within this fails;
- **read**: no byte for this long fails the request (a server that accepts and never
  answers);
- **request**: the whole answer of one Kubernetes API request (a listing page) must arrive
  within this, or the request fails (a server that trickles bytes). Storage clients have no
  such bound of their own: connect and read bound each of their requests.

A failed request is retried as any transient failure is (with backoff), then fails the run.

The command line sets them with ``--connect-timeout``, ``--read-timeout`` and
``--request-timeout``; every process reads them from ``REGPRUNE_CONNECT_TIMEOUT``,
``REGPRUNE_READ_TIMEOUT`` and ``REGPRUNE_REQUEST_TIMEOUT`` (a deployment's job variables, a
Dask worker's environment), so a client built anywhere gets the same bounds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

from regprune.units import format_duration, parse_duration

MAX_TIMEOUT = timedelta(hours=1)
"""The longest timeout accepted: a request allowed more than an hour is not bounded."""


@dataclass(frozen=True)
class Timeout:
    """One of the three: its option, its environment variable and its default."""

    name: str
    flag: str
    env: str
    default: str
    help: str


CONNECT = Timeout(
    "connect",
    "--connect-timeout",
    "REGPRUNE_CONNECT_TIMEOUT",
    "10s",
    "a connection not made within this fails",
)
READ = Timeout(
    "read",
    "--read-timeout",
    "REGPRUNE_READ_TIMEOUT",
    "30s",
    "no byte of an answer for this long fails the request",
)
REQUEST = Timeout(
    "request",
    "--request-timeout",
    "REGPRUNE_REQUEST_TIMEOUT",
    "60s",
    "the whole answer of one Kubernetes API request (a listing page) must arrive within this",
)
ALL = (CONNECT, READ, REQUEST)


def parse_timeout(text: str) -> float:
    """Seconds of a timeout written as a duration (``10s``, ``1m``, ``500ms``): more than
    zero, at most :data:`MAX_TIMEOUT`."""
    seconds = parse_duration(text, MAX_TIMEOUT).total_seconds()
    if seconds <= 0:
        raise ValueError(f"{text}: a timeout must be longer than 0s")
    return seconds


@dataclass(frozen=True)
class Timeouts:
    """Seconds each network call may wait (see the module's docstring)."""

    connect: float
    read: float
    request: float

    @classmethod
    def current(cls) -> Timeouts:
        """The environment's, else the defaults; a bad value says which variable."""
        values = {}
        for timeout in ALL:
            text = os.environ.get(timeout.env) or timeout.default
            try:
                values[timeout.name] = parse_timeout(text)
            except ValueError as exc:
                raise ValueError(f"{timeout.env}: {exc}") from exc
        return cls(**values)

    def describe(self) -> str:
        return ", ".join(
            f"{t.name} {format_duration(timedelta(seconds=getattr(self, t.name)))}" for t in ALL
        )


# --- urllib3 (the Kubernetes client) -------------------------------------------------------


class RequestTimeout(Urllib3TimeoutError):
    """A request that outlived a timeout; the message names the option. A urllib3 error, so
    every retry loop that retries urllib3's errors (connection failures) retries it."""


class _Watch:
    """One request's deadline: the socket it reads from is shut down when the time is up
    (or the run is interrupted), which ends a read blocked on a silent or trickling server."""

    def __init__(self) -> None:
        self.expired = False
        self.sock: Any = None
        self._lock = threading.Lock()

    def attach(self, sock: Any) -> None:
        with self._lock:
            self.sock = sock
            expired = self.expired
        if expired:
            _shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self.sock
        if sock is not None:
            _shut(sock)


def _shut(sock: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):
        sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()
_active: set[_Watch] = set()
_active_lock = threading.Lock()


def abort_requests() -> int:
    """End every bounded request in flight (an interrupted run); returns how many."""
    with _active_lock:
        watches = list(_active)
    for watch in watches:
        watch.expire()
    return len(watches)


def _watched_response(connection: Any) -> None:
    """A connection's answer, its socket given to this thread's request watch first (the
    wait for the answer starts there: headers that trickle are cut off too)."""
    watch = getattr(_current, "watch", None)
    if watch is not None:
        watch.attach(connection.sock)


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self) -> Any:
        _watched_response(self)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> Any:
        _watched_response(self)
        return super().getresponse()


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


WATCHED_POOLS = {"http": _WatchedHTTPConnectionPool, "https": _WatchedHTTPSConnectionPool}


def bound_pool_manager(pool: Any, timeouts: Timeouts | None = None) -> None:
    """Bound every request of a urllib3 ``PoolManager`` (the Kubernetes client's): connect and
    read timeouts, the whole answer within the request timeout (read here, in full: callers
    get it preloaded), and no retries of urllib3's own (the callers retry with backoff; with
    urllib3's three more, a silent server held each call four read timeouts)."""
    bounds = timeouts or Timeouts.current()
    if type(pool) is urllib3.PoolManager:  # a proxy manager keeps its classes: its timeouts
        pool.pool_classes_by_scheme = dict(WATCHED_POOLS)  # still hold, not the deadline
    original = pool.urlopen

    def urlopen(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = urllib3.Timeout(connect=bounds.connect, read=bounds.read)
        kwargs.setdefault("retries", False)
        kwargs["preload_content"] = False
        where = url.split("?", 1)[0]
        watch = _Watch()
        timer = threading.Timer(bounds.request, watch.expire)
        timer.daemon = True
        with _active_lock:
            _active.add(watch)
        previous = getattr(_current, "watch", None)
        _current.watch = watch
        timer.start()
        try:
            answer = original(method, url, *args, **kwargs)
            try:
                body = answer.read()
            finally:
                answer.release_conn()
        except ConnectTimeoutError as exc:
            raise RequestTimeout(
                f"{where}: no connection within {bounds.connect:g} s ({CONNECT.flag})"
            ) from exc
        except ReadTimeoutError as exc:
            raise RequestTimeout(f"{where}: no answer for {bounds.read:g} s ({READ.flag})") from exc
        except Exception as exc:
            if watch.expired:
                raise RequestTimeout(
                    f"{where}: no complete answer within {bounds.request:g} s ({REQUEST.flag})"
                ) from exc
            raise
        finally:
            timer.cancel()
            _current.watch = previous
            with _active_lock:
                _active.discard(watch)
        if watch.expired:  # the body ended at the deadline: it may be cut short
            raise RequestTimeout(
                f"{where}: no complete answer within {bounds.request:g} s ({REQUEST.flag})"
            )
        return urllib3.HTTPResponse(
            body=body,
            headers=answer.headers,
            status=answer.status,
            reason=answer.reason,
            preload_content=True,
            decode_content=False,
            request_method=method,
            request_url=url,
        )

    pool.urlopen = urlopen

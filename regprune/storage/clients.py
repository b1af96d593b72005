"""One storage client per process and configuration, shared by every backend object made in it.

A run opens its storage once per task and per batch (``open_storage``): about a hundred times
in a small prune. Each new s3fs or gcsfs filesystem made its own client on its first request
(for S3 a botocore session that decodes its JSON data files anew, most of a small prune's CPU),
each Azure backend its own service client and credential. Here a backend asks for the client
of its *effective configuration* and gets the one made before when nothing that matters
changed:

- the spec's options and the timeouts (``Timeouts.current()``);
- the environment variables the client library reads when it is made (its credentials, its
  endpoint: a test points ``AWS_ENDPOINT_URL`` at another server, a new client is made), and
  the proxies and CA bundles every library reads;
- the process: a forked child makes its own (a client is bound to its parent's event loop and
  connections).

Only a digest of that configuration is kept: the secrets among it are never stored, logged or
shown. A process keeps the clients of a few configurations, the least recently used dropped
(a backend that holds one keeps using it; it is closed when the last holder lets it go).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from regprune.timeouts import Timeouts

T = TypeVar("T")

KEPT = 8
"""Configurations whose clients a process keeps. A run uses one (its quarantine is in the same
bucket, with the same client); a long-lived worker serving several registries keeps the
recent ones and lets the others go."""

NETWORK_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)
"""Variables any client library may read when it is made (the proxies in either case)."""

_clients: OrderedDict[str, Any] = OrderedDict()
_making: dict[str, threading.Lock] = {}
_lock = threading.Lock()


def environment(prefixes: tuple[str, ...], names: Iterable[str] = ()) -> dict[str, str]:
    """The variables a client library reads when it is made: those starting with one of
    ``prefixes``, those in ``names``, and :data:`NETWORK_ENV`."""
    wanted = {name.upper() for name in (*names, *NETWORK_ENV)}
    return {
        name: value
        for name, value in os.environ.items()
        if name.upper() in wanted or name.startswith(prefixes)
    }


def configuration_key(kind: str, options: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The digest of everything that makes a client of ``kind`` what it is (the secrets among
    it are hashed, never kept). An option that is no JSON counts by its ``repr``: one with an
    address in it never matches, and gets a client of its own, as before."""
    material = {
        "kind": kind,
        "pid": os.getpid(),
        "options": dict(options),
        "env": sorted(env.items()),
        "timeouts": repr(Timeouts.current()),
    }
    text = json.dumps(material, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def shared(
    kind: str, options: Mapping[str, Any], env: Mapping[str, str], make: Callable[[], T]
) -> T:
    """The client of this configuration in this process: made by ``make`` the first time
    (once, whichever threads ask at the same moment), then the same object."""
    key = configuration_key(kind, options, env)
    with _lock:
        if key in _clients:
            _clients.move_to_end(key)
            return _clients[key]
        making = _making.setdefault(key, threading.Lock())
    with making:  # one thread makes it; the others wait for that one, not for other keys
        with _lock:
            if key in _clients:
                _clients.move_to_end(key)
                return _clients[key]
        try:
            client = make()
        except BaseException:
            with _lock:
                _making.pop(key, None)
            raise
        with _lock:  # kept and its making lock dropped at once: a thread after finds it
            _clients[key] = client
            _making.pop(key, None)
            while len(_clients) > KEPT:
                _clients.popitem(last=False)
    return client


def clear() -> None:
    """Forget every client (each is closed when its last holder lets it go): the next
    backend makes its own. The tests do this between tests."""
    with _lock:
        _clients.clear()


def _after_fork() -> None:
    """A forked child starts with none, and with locks no thread of its parent holds."""
    global _lock
    _lock = threading.Lock()
    _making.clear()
    _clients.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)

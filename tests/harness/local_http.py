"""The tests' own small HTTP servers (fronts, proxies) on 127.0.0.1: start, address, stop."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POLL_INTERVAL = 0.01
"""Seconds between the serving loop's checks for a stop: ``stop()`` waits up to this long
(``serve_forever``'s default of 0.5 s cost every test that stops a server half a second)."""


class LocalHTTPServer:
    """Serves a handler class on a free port of 127.0.0.1 from a daemon thread."""

    _server: ThreadingHTTPServer | None = None

    def serve(self, handler: type[BaseHTTPRequestHandler], quiet_errors: bool = True) -> None:
        """``quiet_errors``: a client that hangs up (as the code under test may, on purpose)
        prints no traceback."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        if quiet_errors:
            self._server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

"""Servers that misbehave on purpose, on 127.0.0.1 (tests/harness/local_http.py): one that accepts a
request and never answers, one that trickles its answer a byte at a time (the headers or the
body), one that answers 200 with an HTML page. Each counts its requests and says when one
arrived (:attr:`HostileServer.arrived`, :meth:`HostileServer.wait_for`), so a test waits on that,
never on a sleep."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import yaml

from tests.harness.local_http import LocalHTTPServer

TRICKLE_EVERY = 0.02
"""Seconds between the trickled bytes: a read timeout never fires, the answer never ends."""


class HostileServer(LocalHTTPServer):
    """``mode``: ``silent`` (reads the request, sends nothing), ``trickle`` (200 and the start
    of a JSON list, then a space every :data:`TRICKLE_EVERY` s), ``trickle-headers`` (the
    status line, one byte at a time, forever), ``html`` (200 text/html)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.requests = 0
        self.arrived = threading.Event()
        self.released = threading.Event()
        self._count = threading.Condition()

    def start(self) -> HostileServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with server._count:
                    server.requests += 1
                    server._count.notify_all()
                server.arrived.set()
                getattr(self, "_" + server.mode.replace("-", "_"))()

            do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

            def _silent(self) -> None:
                server.released.wait()

            def _trickle(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"kind": "ImageList", "metadata": {}, "items": [')
                self._drip(b" ")

            def _trickle_headers(self) -> None:
                self._drip(b"H")

            def _drip(self, byte: bytes) -> None:
                while not server.released.wait(TRICKLE_EVERY):
                    self.wfile.write(byte)
                    self.wfile.flush()

            def _html(self) -> None:
                body = b"<html><body>Log in</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.serve(Handler)
        return self

    def wait_for(self, count: int, timeout: float = 30) -> int:
        """The requests counted once ``count`` have arrived: a handler's thread may count a
        request after the client gave up on it, so a test reads the count through this."""
        with self._count:
            self._count.wait_for(lambda: self.requests >= count, timeout)
            return self.requests

    def stop(self) -> None:
        self.released.set()  # the handlers' threads end; then the server
        super().stop()

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig whose cluster is this server (a bearer token user)."""
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": self.url}}],
                    "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        return path

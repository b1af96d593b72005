"""A fault-injecting HTTP proxy in front of moto_server, for S3 fault tests.

Point ``AWS_ENDPOINT_URL`` at :attr:`S3FaultProxy.url`: every request is forwarded to moto
unchanged, unless a :meth:`S3FaultProxy.inject`-ed fault matches it, which then answers
``503 SlowDown``, ``500 InternalError`` or ``409 ConditionalRequestConflict`` (S3's own XML
error bodies), resets the connection before or after moto handled the request, or
(``DeleteObjects`` only) reports some keys as failed and does not delete them. Each fault
fires for the next ``times`` matching requests (None: for ever); :attr:`S3FaultProxy.log`
keeps every request with what happened to it.

Standard library only, plus boto3 to call moto for a partially failed ``DeleteObjects``.
The hooks :meth:`S3FaultProxy.classify`, :meth:`S3FaultProxy.continued`,
:meth:`S3FaultProxy.error` and :meth:`S3FaultProxy.fail_keys` are what another service's
proxy overrides (tests/harness/cloud_proxy.py: GCS, Azure Blob, Swift).
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from tests.harness.local_http import LocalHTTPServer

Operation = Literal["list", "delete_objects", "get", "head", "put", "delete", "other"]
FaultKind = Literal[
    "slowdown", "internal", "forbidden", "conflict", "reset", "reset_after", "fail_keys"
]

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "forbidden": (403, "AccessDenied", "Access Denied"),
    "conflict": (
        409,
        "ConditionalRequestConflict",
        "A conflicting conditional operation is currently in progress against this resource.",
    ),
}


@dataclass
class Fault:
    """What to do with the next ``times`` requests of one operation."""

    operation: str
    kind: FaultKind
    times: int | None = 1
    keys: str = ""
    """For ``fail_keys``: keys containing this text are reported failed (not deleted)."""
    where: str = ""
    """Only requests whose path and query contain this text."""
    continued: bool | None = None
    """True: only requests that continue a listing (a page after the first); False: only
    first pages; None: any."""
    after: int = 0
    """Let this many matching requests through before firing."""
    fired: int = 0
    seen: int = 0
    keys_failed: list[str] = field(default_factory=list)

    def take(self, target: str, continued: bool) -> bool:
        if self.where not in target or self.continued not in (None, continued):
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.seen += 1
        if self.seen <= self.after:
            return False
        self.fired += 1
        return True


@dataclass(frozen=True)
class Logged:
    operation: str
    method: str
    path: str
    outcome: str
    """``forwarded``, or the fault kind that answered."""


def operation_of(method: str, path: str, query: dict[str, list[str]]) -> Operation:
    """Which S3 call a path-style request is (moto on an IP address: path style)."""
    is_bucket = len([p for p in path.split("/") if p]) == 1
    if method == "POST" and "delete" in query:
        return "delete_objects"
    if method == "GET" and is_bucket:
        return "list"
    return {"GET": "get", "HEAD": "head", "PUT": "put", "DELETE": "delete"}.get(method, "other")


class S3FaultProxy(LocalHTTPServer):
    """``with S3FaultProxy(moto.endpoint_url) as proxy:`` serves on 127.0.0.1."""

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.faults: list[Fault] = []
        self.log: list[Logged] = []
        self._lock = threading.Lock()

    def start(self) -> S3FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self.serve(Handler, quiet_errors=False)
        return self

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(
        self,
        operation: str,
        kind: FaultKind,
        times: int | None = 1,
        keys: str = "",
        **match: Any,
    ) -> Fault:
        """Faults are tried in the order injected; a request fires at most one. ``match``:
        the :class:`Fault` fields ``where``, ``continued`` and ``after``."""
        fault = Fault(operation, kind, times, keys, **match)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.log.clear()

    def count(self, operation: str, outcome: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for entry in self.log
                if entry.operation == operation and (outcome is None or entry.outcome == outcome)
            )

    def _fault_for(self, operation: str, target: str, continued: bool) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.operation == operation and fault.take(target, continued):
                    return fault
        return None

    def _record(self, operation: str, method: str, path: str, outcome: str) -> None:
        with self._lock:
            self.log.append(Logged(operation, method, path, outcome))

    # ---- what a proxy for another service overrides

    def classify(self, method: str, path: str, query: dict[str, list[str]]) -> str:
        """The operation a request is (what faults are injected on)."""
        return operation_of(method, path, query)

    def continued(self, query: dict[str, list[str]]) -> bool:
        """Whether a listing request asks for a page after the first."""
        return "continuation-token" in query or "marker" in query

    def error(self, kind: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """The answer of an error fault, in the service's own error format."""
        status, code, message = ERRORS[kind]
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>s3-fault-proxy</RequestId></Error>"
        ).encode()
        return status, [("Content-Type", "application/xml")], body

    def fail_keys(
        self, method: str, target: str, headers: dict[str, str], body: bytes, fault: Fault
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """A bulk delete where the keys containing ``fault.keys`` fail and stay."""
        return self._delete_some(urlsplit(target).path, body, fault)

    def forward(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(
            self.upstream.hostname, self.upstream.port, timeout=60
        )
        try:
            connection.request(method, target, body=body or None, headers=headers)
            answer = connection.getresponse()
            return answer.status, answer.getheaders(), answer.read()
        finally:
            connection.close()

    def _delete_some(
        self, path: str, body: bytes, fault: Fault
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """DeleteObjects where the keys containing ``fault.keys`` fail (and stay)."""
        request = ElementTree.fromstring(body)
        keys = [e.text or "" for e in request.iter(f"{{{S3_NS}}}Key")]
        keys += [e.text or "" for e in request.iter("Key")]
        quiet = any((e.text or "").lower() == "true" for e in request.iter(f"{{{S3_NS}}}Quiet"))
        failing = [k for k in keys if fault.keys in k]
        passing = [k for k in keys if fault.keys not in k]
        fault.keys_failed += failing
        if passing:
            self.moto_client().delete_objects(
                Bucket=path.strip("/"), Delete={"Objects": [{"Key": k} for k in passing]}
            )
        parts = [] if quiet else [f"<Deleted><Key>{escape(k)}</Key></Deleted>" for k in passing]
        parts += [
            f"<Error><Key>{escape(k)}</Key><Code>InternalError</Code>"
            "<Message>We encountered an internal error. Please try again.</Message></Error>"
            for k in failing
        ]
        answer = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult xmlns="{S3_NS}">'
            + "".join(parts)
            + "</DeleteResult>"
        ).encode()
        return 200, [("Content-Type", "application/xml")], answer

    def moto_client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.upstream.geturl(),
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )


class _Handler(BaseHTTPRequestHandler):
    owner: S3FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    # COPY: Swift's server-side copy, the two-phase delete's quarantine move there
    do_HEAD = do_PUT = do_POST = do_DELETE = do_COPY = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return b"".join(self._chunks())
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return
            yield self.rfile.read(size)
            self.rfile.readline()

    def _serve(self) -> None:
        proxy = self.owner
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        operation = proxy.classify(self.command, split.path, query)
        body = self._read_body()
        fault = proxy._fault_for(operation, self.path, proxy.continued(query))
        outcome = fault.kind if fault else "forwarded"
        proxy._record(operation, self.command, split.path, outcome)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
        headers["Content-Length"] = str(len(body))
        if fault is not None and fault.kind == "reset":
            self._reset()
            return
        if fault is not None and fault.kind in ERRORS:
            self._answer(*proxy.error(fault.kind))
            return
        if fault is not None and fault.kind == "fail_keys":
            self._answer(*proxy.fail_keys(self.command, self.path, headers, body, fault))
            return
        status, answer_headers, answer = proxy.forward(self.command, self.path, headers, body)
        if fault is not None and fault.kind == "reset_after":  # done, but the answer is lost
            self._reset()
            return
        self._answer(status, answer_headers, answer)

    def _answer(self, status: int, headers: list[tuple[str, str]], answer: bytes) -> None:
        """Send an answer; a HEAD's Content-Length is the object's (upstream's), not 0."""
        self.send_response(status)
        length = str(len(answer))
        for name, value in headers:
            if name.lower() == "content-length" and self.command == "HEAD":
                length = value
            elif name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer)

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0): the client sees a connection reset."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

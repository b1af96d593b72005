#!/usr/bin/env python3
"""A counting HTTP proxy in front of an S3 endpoint: server-side request counts per operation.

Why: a client's own counters see only what the client thinks it sent (retries, HEADs before
GETs and pagination hide there); the requests that reach the server are the cost. Every
request is forwarded unchanged (the Host header too, so signatures still match) to the
upstream (a local ``moto_server``), classified as an S3 operation and counted; list responses
are also counted by the keys they return, DeleteObjects requests by the keys they carry.
With ``--log FILE`` every request is also appended there as one JSON line (time, operation,
status, the key or list prefix, keys listed or deleted), so a benchmark can attribute requests
to the steps of a run by time.

    python bench/s3count.py --port 9001 --upstream http://127.0.0.1:9000 [--log requests.jsonl]

``GET /__s3count__`` answers the counts as JSON; ``DELETE /__s3count__`` answers and resets them (S3
bucket names cannot hold ``_``, so these never reach a bucket). Path-style requests only:
clients given an IP endpoint (s3fs, the registry's driver with ``regionendpoint``) use them.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO
from urllib.parse import parse_qs, unquote, urlsplit

ADMIN_PATH = "/__s3count__"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
}
LIST_OPERATIONS = ("ListObjectsV2", "ListObjects")
_KEY = re.compile(rb"<Key>")
_FIRST_KEY = re.compile(rb"<Key>([^<]*)</Key>")
V2_ROOT = "docker/registry/v2/"


def area(key: str) -> str:
    """Which part of a registry a key or list prefix is in: the top folder under
    ``docker/registry/v2/`` (``blobs``, ``repositories``; ``v2`` for the root itself), else the
    folder holding it (``_regprune`` for regprune's lock), ``/`` for the bucket's top."""
    _, found, rest = key.partition(V2_ROOT)
    if found:
        return rest.split("/", 1)[0] or "v2"
    folder = key if key.endswith("/") else key.rpartition("/")[0] + "/"
    return folder.rstrip("/").rsplit("/", 1)[-1] or "/"


def target_key(path: str, query: dict[str, list[str]], body: bytes, op: str) -> str:
    """The key a request is about: the object's key, a listing's prefix, or the first key of
    a DeleteObjects (without the bucket)."""
    if op in LIST_OPERATIONS:
        return query.get("prefix", [""])[0]
    if op == "DeleteObjects":
        first = _FIRST_KEY.search(body)
        return first.group(1).decode(errors="replace") if first else ""
    parts = unquote(path).lstrip("/").split("/", 1)
    return parts[1] if len(parts) > 1 else ""


def operation(method: str, path: str, query: dict[str, list[str]], copy: bool) -> str:
    """The S3 API operation of a path-style request."""
    parts = path.lstrip("/").split("/", 1)
    bucket, key = parts[0], (parts[1] if len(parts) > 1 else "")
    if not bucket:
        return "ListBuckets" if method == "GET" else f"{method} /"
    if not key:
        if method == "GET":
            if query.get("list-type") == ["2"]:
                return "ListObjectsV2"
            if "uploads" in query:
                return "ListMultipartUploads"
            if "location" in query:
                return "GetBucketLocation"
            if "versions" in query:
                return "ListObjectVersions"
            return "ListObjects"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(
            method, f"{method} bucket"
        )
    if "uploadId" in query:
        return {
            "PUT": "UploadPart",
            "POST": "CompleteMultipartUpload",
            "DELETE": "AbortMultipartUpload",
            "GET": "ListParts",
        }.get(method, f"{method} multipart")
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "PUT":
        return "CopyObject" if copy else "PutObject"
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
        method, f"{method} object"
    )


class Counts:
    """Requests per operation (and per operation and area), keys returned by listings, keys
    sent in DeleteObjects; optionally every request as a JSON line in ``log``."""

    def __init__(self, log: IO[str] | None = None) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.by_area: Counter[str] = Counter()
        self.listed_keys = 0
        self.deleted_keys = 0
        self.errors: Counter[str] = Counter()
        self.log = log

    def add(
        self,
        op: str,
        status: int,
        listed: int,
        deleted: int,
        key: str = "",
        received: float | None = None,
    ) -> None:
        with self.lock:
            self.requests[op] += 1
            self.by_area[f"{op} {area(key)}"] += 1
            self.listed_keys += listed
            self.deleted_keys += deleted
            if status >= 400:
                self.errors[f"{op} {status}"] += 1
            if self.log is not None:
                line = {"t": received or time.time(), "op": op, "status": status, "key": key}
                line |= {"listed": listed} if listed else {}
                line |= {"deleted": deleted} if deleted else {}
                self.log.write(json.dumps(line) + "\n")

    def as_json(self) -> dict:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "by_area": dict(self.by_area),
                "total": sum(self.requests.values()),
                "listed_keys": self.listed_keys,
                "deleted_keys": self.deleted_keys,
                "errors": dict(self.errors),
            }

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.by_area.clear()
            self.errors.clear()
            self.listed_keys = self.deleted_keys = 0


class CountingProxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int]
    counts: Counts
    local = threading.local()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def do_GET(self) -> None:
        self.forward()

    def do_HEAD(self) -> None:
        self.forward()

    def do_PUT(self) -> None:
        self.forward()

    def do_POST(self) -> None:
        self.forward()

    def do_DELETE(self) -> None:
        self.forward()

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def admin(self) -> None:
        counts = self.counts.as_json()
        if self.counts.log is not None:  # the log is complete up to this answer
            self.counts.log.flush()
        if self.command == "DELETE":  # answers the counts it clears
            self.counts.reset()
        body = json.dumps(counts).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def connection_upstream(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(*self.upstream, timeout=300)
            self.local.conn = conn
        return conn

    def send_upstream(self, body: bytes) -> tuple[http.client.HTTPResponse, bytes]:
        for attempt in range(2):
            conn = self.connection_upstream(fresh=attempt > 0)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        conn.putheader(name, value)
                if body or self.command in ("PUT", "POST"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                response = conn.getresponse()
                return response, response.read()
            except (ConnectionError, http.client.HTTPException):
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def forward(self) -> None:
        split = urlsplit(self.path)
        if split.path == ADMIN_PATH:
            self.admin()
            return
        received = time.time()
        body = self.read_body()
        response, data = self.send_upstream(body)
        query = parse_qs(split.query, keep_blank_values=True)
        op = operation(self.command, split.path, query, "x-amz-copy-source" in self.headers)
        listed = len(_KEY.findall(data)) if op in LIST_OPERATIONS else 0
        deleted = len(_KEY.findall(body)) if op == "DeleteObjects" else 0
        key = target_key(split.path, query, body, op)
        self.counts.add(op, response.status, listed, deleted, key, received)
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if self.command == "HEAD":  # the object's length, with no body
            length = response.getheader("Content-Length")
            if length is not None:
                self.send_header("Content-Length", length)
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def serve(port: int, upstream: str, log: IO[str] | None = None) -> ThreadingHTTPServer:
    target = urlsplit(upstream)
    handler = type(
        "Handler",
        (CountingProxy,),
        {"upstream": (target.hostname, target.port or 80), "counts": Counts(log)},
    )
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--upstream", required=True, help="S3 endpoint, e.g. http://127.0.0.1:9000")
    parser.add_argument("--log", type=Path, help="append every request here as a JSON line")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(args.log, "a")) if args.log else None
        server = serve(args.port, args.upstream, log)
        print(
            f"counting S3 requests on http://127.0.0.1:{args.port} -> {args.upstream}", flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

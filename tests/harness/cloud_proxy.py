"""The S3 fault proxy (tests/harness/s3_proxy.py) in front of the GCS, Azure Blob and Swift
emulators.

Operations, per service (what :meth:`S3FaultProxy.inject` takes):

- ``list``: GCS ``GET /storage/v1/b/B/o``, Azure ``GET /ACCOUNT/C?comp=list``, Swift
  ``GET /v1/ACCOUNT/C``; a page after the first (``continued``) carries ``pageToken``
  (GCS) or ``marker`` (Azure, Swift);
- ``head``: a HEAD of one object (GCS: a metadata GET); ``get``: its data;
- ``bulk_delete``: GCS ``POST /batch/storage/v1``, Azure ``POST ?comp=batch``, Swift
  ``POST /v1/ACCOUNT?bulk-delete``; ``auth``: Swift's ``/auth/v1.0``.

Errors are answered in the service's own format (GCS JSON, Azure XML with
``x-ms-error-code``, Swift text). ``fail_keys`` on a bulk delete sends the batch on with the
names containing ``keys`` pointed at objects that do not exist (nothing of theirs is deleted)
and answers 503 for them: a batch that partly failed.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, unquote

from tests.harness.s3_proxy import ERRORS, Fault, S3FaultProxy

ABSENT = "-fault-proxy-absent"
"""Appended to the names a partly failed batch does not delete."""


class CloudFaultProxy(S3FaultProxy):
    """``CloudFaultProxy(upstream, "gcs" | "azure" | "swift")``; point the client at
    :attr:`url` (GCS ``STORAGE_EMULATOR_HOST``, Azure ``BlobEndpoint``, Swift ``ST_AUTH``)."""

    def __init__(self, upstream: str, kind: str):
        super().__init__(upstream)
        self.kind = kind

    def classify(self, method: str, path: str, query: dict[str, list[str]]) -> str:
        parts = [p for p in path.split("/") if p]
        if self.kind == "gcs":
            if method == "POST" and path.startswith("/batch/"):
                return "bulk_delete"
            if method == "GET" and re.fullmatch(r"/storage/v1/b/[^/]+/o", path):
                return "list"
            if method == "GET" and "/storage/v1/b/" in path and "/o/" in path:
                return "get" if query.get("alt") == ["media"] else "head"
        elif self.kind == "azure":
            if method == "POST" and query.get("comp") == ["batch"]:
                return "bulk_delete"
            if method == "GET" and query.get("comp") == ["list"] and len(parts) == 2:
                return "list"
            if len(parts) > 2 and method in ("GET", "HEAD") and not query.get("comp"):
                return "get" if method == "GET" else "head"
        else:
            if parts[:1] == ["auth"]:
                return "auth"
            if method == "POST" and "bulk-delete" in query:
                return "bulk_delete"
            if method == "GET" and len(parts) == 3:
                return "list"
            if len(parts) > 3 and method in ("GET", "HEAD"):
                return "get" if method == "GET" else "head"
        return "other"

    def continued(self, query: dict[str, list[str]]) -> bool:
        return "pageToken" in query or "marker" in query

    def error(self, kind: str) -> tuple[int, list[tuple[str, str]], bytes]:
        status, code, message = ERRORS[kind]
        if self.kind == "gcs":
            error = {"code": status, "message": message, "errors": [{"reason": code}]}
            return (
                status,
                [("Content-Type", "application/json")],
                json.dumps({"error": error}).encode(),
            )
        if self.kind == "azure":
            code = {500: "InternalError", 503: "ServerBusy", 403: "AuthorizationFailure"}[status]
            body = (
                f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error>"
            ).encode()
            return status, [("Content-Type", "application/xml"), ("x-ms-error-code", code)], body
        return status, [("Content-Type", "text/plain")], f"{status} {message}".encode()

    def fail_keys(
        self, method: str, target: str, headers: dict[str, str], body: bytes, fault: Fault
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if self.kind == "swift":
            return self._swift_fail(target, headers, body, fault)
        return self._multipart_fail(target, headers, body, fault)

    def _swift_fail(
        self, target: str, headers: dict[str, str], body: bytes, fault: Fault
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        lines = [line for line in body.decode().splitlines() if line.strip()]
        failing = [line for line in lines if fault.keys in unquote(line)]
        fault.keys_failed += [unquote(line) for line in failing]
        sent = [line + quote(ABSENT) if line in failing else line for line in lines]
        data = "\n".join(sent).encode()
        headers = {**headers, "Content-Length": str(len(data))}
        status, answer_headers, answer = self.forward("POST", target, headers, data)
        if status != 200 or not failing:
            return status, answer_headers, answer
        result = json.loads(answer)
        result["Number Not Found"] = result.get("Number Not Found", 0) - len(failing)
        result["Errors"] = [
            *result.get("Errors", []),
            *[[f, "503 Service Unavailable"] for f in failing],
        ]
        result["Response Status"] = "400 Bad Request"
        return 200, [("Content-Type", "application/json")], json.dumps(result).encode()

    def _multipart_fail(
        self, target: str, headers: dict[str, str], body: bytes, fault: Fault
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """GCS and Azure batches: ``DELETE <path> HTTP/1.1`` a part, answers in that order. A
        failing part's path gets another last character: the body keeps its length (Azure
        signs the batch's Content-Length), the part names no object (or fails its signature),
        and its answer becomes a 503."""
        requests = re.findall(rb"DELETE (\S+) HTTP/1\.1", body)
        failing = {i for i, path in enumerate(requests) if fault.keys in unquote(path.decode())}
        fault.keys_failed += [unquote(requests[i].decode()) for i in sorted(failing)]
        count = iter(range(len(requests)))

        def point_away(match: re.Match[bytes]) -> bytes:
            if next(count) not in failing:
                return match.group(0)
            path = match.group(1)
            other = b"Y" if path.endswith(b"Z") else b"Z"
            return b"DELETE " + path[:-1] + other + b" HTTP/1.1"

        data = re.sub(rb"DELETE (\S+) HTTP/1\.1", point_away, body)
        status, answer_headers, answer = self.forward("POST", target, headers, data)
        if not 200 <= status < 300 or not failing:
            return status, answer_headers, answer
        statuses = iter(range(len(requests)))

        def fail(match: re.Match[bytes]) -> bytes:
            if next(statuses) in failing:
                return b"HTTP/1.1 503 Service Unavailable"
            return match.group(0)

        answer = re.sub(rb"HTTP/1\.1 \d{3}[^\r\n]*", fail, answer)
        return status, answer_headers, answer

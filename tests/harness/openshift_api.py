"""An OpenShift image API (``image.openshift.io/v1``) served over real HTTP for tests.

No kube-apiserver can run here, so regprune's tests talk to this server through the official
``kubernetes`` client. It copies the behaviour of the real apiserver where client code could
notice it: Kubernetes ``Status`` errors, continue tokens in the apiserver's own format with
consistent snapshots and ``410 Expired``, ``ImageStreamMapping`` semantics (taken from
openshift-apiserver's REST storage), RBAC-shaped 403s, bearer-token 401s, and the
"resourceVersion should not be set on objects to be created" rejection. On top of that it offers
fault injection and a request log. Standard library only (plus pyyaml for kubeconfig files).

Deliberate simplifications: no watch, no label/field selectors, no PATCH, no namespace objects
(any namespace exists), and all-namespace ImageStream lists come in etcd key order
(``"<namespace>/<name>"`` as a string), exactly as a real apiserver returns them.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import copy
import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
import yaml

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = [
    "API_VERSION",
    "DEFAULT_REGISTRY_HOST",
    "DEFAULT_USER",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_SCHEMA1",
    "DOCKER_SCHEMA2",
    "GROUP",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "VERSION",
    "Fault",
    "OpenShiftAPIServer",
    "RequestRecord",
    "fake_digest",
    "make_image",
    "openshift_api",
    "openshift_kubeconfig",
    "rfc3339",
]

GROUP = "image.openshift.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_REGISTRY_HOST = "image-registry.openshift-image-registry.svc:5000"
DEFAULT_USER = "system:serviceaccount:test:regprune"

DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_LIST_TYPES = {DOCKER_MANIFEST_LIST, OCI_INDEX}
_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
_SCHEMA1_LAYER = "application/vnd.docker.container.image.rootfs.diff+x-gtar"
_ANN_BLOB_STORED = "image.openshift.io/manifestBlobStored"
_ANN_LAYERS_ORDER = "image.openshift.io/dockerLayersOrder"
_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# Docker's tag grammar; OpenShift rejects anything else as a tag name.
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
# RFC 1123 label (namespaces) and OpenShift's path-segment rule for stream names.
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_STREAM_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")

_CONTINUE_VERSION = "meta.k8s.io/v1"
_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)
_MAX_SNAPSHOTS = 64

_REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_MESSAGES: dict[int, str] = {
    400: "the server rejected our request for an unknown reason",
    401: "Unauthorized",
    403: "forbidden",
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
    409: "the server reported a conflict",
    410: _CONTINUE_EXPIRED,
    422: "the server rejected our request due to an error in our request",
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected fault",
    503: "the server is currently unable to handle the request",
    504: (
        "the server was unable to return a response in the time allotted, "
        "but may still be processing the request"
    ),
}

_ALL_RESOURCES = ("images", "imagestreams", "imagestreams/status", "imagestreammappings")


# --------------------------------------------------------------------------------------------
# Object builders (usable without a server, e.g. to POST through the client)
# --------------------------------------------------------------------------------------------


def rfc3339(value: datetime | str | None = None) -> str:
    """Format like Kubernetes' metav1.Time (UTC, whole seconds, ``Z``); ``None`` means now."""
    if isinstance(value, str):
        return value
    moment = value or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fake_digest(seed: str | bytes | None = None) -> str:
    """Return ``sha256:<64hex>``: deterministic for a seed, random otherwise."""
    if seed is None:
        return "sha256:" + hashlib.sha256(os.urandom(32)).hexdigest()
    data = seed.encode() if isinstance(seed, str) else seed
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer_entry(spec: str | tuple[str, int] | Mapping[str, Any], index: int, oci: bool) -> dict:
    """Normalise one dockerImageLayers entry given as digest, (digest, size) or dict."""
    media_type = _OCI_LAYER if oci else _DOCKER_LAYER
    if isinstance(spec, Mapping):
        entry = dict(spec)
        entry.setdefault("mediaType", media_type)
        entry.setdefault("size", 1024 * (index + 1))
        return entry
    if isinstance(spec, tuple):
        return {"name": spec[0], "size": int(spec[1]), "mediaType": media_type}
    return {"name": spec, "size": 1024 * (index + 1), "mediaType": media_type}


def _manifest_entry(spec: str | Mapping[str, Any], oci: bool) -> dict:
    """Normalise one dockerImageManifests entry (a child manifest of a list/index)."""
    entry = {"digest": spec} if isinstance(spec, str) else dict(spec)
    entry.setdefault("mediaType", OCI_MANIFEST if oci else DOCKER_SCHEMA2)
    entry.setdefault("manifestSize", 528)
    entry.setdefault("architecture", "amd64")
    entry.setdefault("os", "linux")
    return entry


def make_image(
    digest: str | None = None,
    *,
    repository: str = "test/app",
    registry_host: str = DEFAULT_REGISTRY_HOST,
    media_type: str = DOCKER_SCHEMA2,
    config: str | None = None,
    layers: Sequence[str | tuple[str, int] | Mapping[str, Any]] | None = None,
    manifests: Sequence[str | Mapping[str, Any]] | None = None,
    layers_order: str = "ascending",
    managed: bool = True,
    created: datetime | str | None = None,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    docker_image_reference: str | None = None,
) -> dict[str, Any]:
    """Build an Image shaped like ``oc get image -o json`` prints it.

    Without ``layers`` a single-manifest image gets one random layer; manifest lists
    (``media_type`` a list/index type) get ``dockerImageManifests`` from ``manifests``.
    ``creationTimestamp`` is only set when ``created`` is given.
    """
    name = digest or fake_digest()
    is_list = media_type in _LIST_TYPES
    oci = media_type in (OCI_MANIFEST, OCI_INDEX)
    meta_annotations: dict[str, str] = {}
    if managed:
        meta_annotations["openshift.io/image.managed"] = "true"
        meta_annotations["image.openshift.io/manifestBlobStored"] = "true"
    image: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Image",
        "metadata": {"name": name},
        "dockerImageReference": docker_image_reference or f"{registry_host}/{repository}@{name}",
        "dockerImageManifestMediaType": media_type,
        "dockerImageMetadataVersion": "1.0",
    }
    docker_metadata: dict[str, Any] = {
        "kind": "DockerImage",
        "apiVersion": "image.openshift.io/1.0",
    }
    if is_list:
        image["dockerImageManifests"] = [_manifest_entry(m, oci) for m in manifests or ()]
        docker_metadata["Created"] = None
    else:
        if layers is None:
            layers = [fake_digest()]
        layer_list = [_layer_entry(spec, i, oci) for i, spec in enumerate(layers)]
        image["dockerImageLayers"] = layer_list
        if media_type != DOCKER_SCHEMA1:
            docker_metadata["Id"] = config or fake_digest()
        else:
            docker_metadata["Id"] = (config or fake_digest()).removeprefix("sha256:")
        docker_metadata["Architecture"] = "amd64"
        docker_metadata["Created"] = rfc3339(created)
        docker_metadata["Size"] = sum(int(entry["size"]) for entry in layer_list) + 1500
        meta_annotations["image.openshift.io/dockerLayersOrder"] = layers_order
    image["dockerImageMetadata"] = docker_metadata
    meta_annotations.update(annotations or {})
    if meta_annotations:
        image["metadata"]["annotations"] = meta_annotations
    if labels:
        image["metadata"]["labels"] = dict(labels)
    if created is not None:
        image["metadata"]["creationTimestamp"] = rfc3339(created)
    return image


# --------------------------------------------------------------------------------------------
# Faults, request log, errors
# --------------------------------------------------------------------------------------------


class RequestRecord(NamedTuple):
    """One answered request; ``status`` is 0 when the connection was dropped by a fault."""

    method: str
    path: str
    query: dict[str, str]
    status: int


@dataclass
class Fault:
    """An injected misbehaviour; ``seen``/``fired`` let tests check it was reached."""

    method: str | None
    pattern: re.Pattern[str]
    status: int | None
    times: int | None
    after: int
    delay: float
    retry_after: int | None
    body: Mapping[str, Any] | str | bytes | None
    reason: str | None
    message: str | None
    disconnect: bool
    seen: int = 0
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        """True once the fault has fired ``times`` times (never for ``times=None``)."""
        return self.times is not None and self.fired >= self.times


class _ApiError(Exception):
    """Raised inside handlers; turned into a Kubernetes Status response."""

    def __init__(
        self,
        code: int,
        reason: str | None,
        message: str,
        details: Mapping[str, Any] | None = None,
        list_meta: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = _REASONS.get(code, "") if reason is None else reason
        self.message = message
        self.details = dict(details) if details else None
        self.list_meta = dict(list_meta) if list_meta else {}
        self.headers = dict(headers or {})


def _status(
    code: int,
    reason: str,
    message: str,
    *,
    success: bool = False,
    details: Mapping[str, Any] | None = None,
    list_meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a ``meta/v1 Status`` object as the apiserver encodes it."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": dict(list_meta or {}),
        "status": "Success" if success else "Failure",
    }
    if not success:
        status["message"] = message
        status["reason"] = reason
    if details:
        status["details"] = dict(details)
    status["code"] = code
    return status


def _not_found(resource: str, name: str) -> _ApiError:
    return _ApiError(
        404,
        "NotFound",
        f'{resource}.{GROUP} "{name}" not found',
        {"name": name, "group": GROUP, "kind": resource},
    )


def _already_exists(resource: str, name: str) -> _ApiError:
    return _ApiError(
        409,
        "AlreadyExists",
        f'{resource}.{GROUP} "{name}" already exists',
        {"name": name, "group": GROUP, "kind": resource},
    )


def _invalid(kind: str, name: str, causes: list[tuple[str, str, str]]) -> _ApiError:
    """422 like field.ErrorList: causes are (field, reason, detail message)."""
    parts = [f"{fld}: {msg}" for fld, _, msg in causes]
    text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return _ApiError(
        422,
        "Invalid",
        f'{kind}.{GROUP} "{name}" is invalid: {text}',
        {
            "name": name,
            "group": GROUP,
            "kind": kind,
            "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes],
        },
    )


def _bad_request(message: str) -> _ApiError:
    return _ApiError(400, "BadRequest", message)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _encode_continue(rv: int, start: str) -> str:
    """Encode exactly like apiserver's storage.EncodeContinue (raw URL-safe base64 JSON)."""
    raw = json.dumps({"v": _CONTINUE_VERSION, "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    """Decode a continue token; malformed ones give 400 like the apiserver."""

    def bad(why: str) -> _ApiError:
        return _bad_request(f"invalid continue token: continue key is not valid: {why}")

    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise bad(str(exc)) from None
    if not isinstance(data, dict) or data.get("v") != _CONTINUE_VERSION:
        raise bad("server does not recognize this encoded version")
    rv, start = data.get("rv"), data.get("start")
    if not isinstance(rv, int) or isinstance(rv, bool) or rv == 0 or rv < -1:
        raise bad(f"incorrect encoded start resourceVersion (version {_CONTINUE_VERSION})")
    if not isinstance(start, str) or not start:
        raise bad("encoded start key empty")
    if ".." in start.split("/"):
        raise bad("continue key is not valid")
    return rv, start


@dataclass
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Route:
    verb: str
    resource: str
    namespace: str | None
    name: str | None
    handler: Callable[[dict[str, str], Any], _Response]
    group: str | None = None  # None: image.openshift.io (apps for deployments)


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    api: OpenShiftAPIServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # one response = several writes; avoid delayed-ACK stalls
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep pytest output clean."""

    def setup(self) -> None:
        super().setup()
        self.server.api._track_connection(self.connection, add=True)
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(30)
            self.connection.do_handshake()
            self.connection.settimeout(None)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.api._track_connection(self.connection, add=False)

    def _serve(self) -> None:
        self.server.api._serve(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class OpenShiftAPIServer:
    """In-memory ``image.openshift.io/v1`` API on 127.0.0.1, for the official client."""

    def __init__(
        self,
        *,
        token: str | None = None,
        registry_host: str = DEFAULT_REGISTRY_HOST,
        user: str = DEFAULT_USER,
        tls: bool = False,
        image_strategy: bool = True,
    ) -> None:
        self.token = token or uuid.uuid4().hex
        self.registry_host = registry_host
        self.user = user
        #: Serve HTTPS with a certificate made at start (Go's client-go sends a kubeconfig's
        #: token only over TLS); :attr:`ca_pem` is the certificate to trust.
        self.tls = tls
        self.ca_pem: bytes | None = None
        self._cert_files: tuple[Path, Path] | None = None
        #: Do on Image create what openshift-apiserver's image strategy does (fill
        #: dockerImageMetadata from the manifest and config texts, drop the texts when the
        #: manifest blob is stored); False keeps Images exactly as the client sent them.
        self.image_strategy = image_strategy
        # Other bearer tokens: token -> (user name, grants or None for everything).
        self._subjects: dict[str, tuple[str, frozenset[tuple[str, ...]] | None]] = {}
        #: Grants of ``system:anonymous`` for SubjectAccessReviews (none by default).
        self.anonymous_grants: frozenset[tuple[str, ...]] = frozenset()
        self._lock = threading.RLock()
        self._rv = 1
        self._compacted_rv = 0
        self._images: dict[str, dict[str, Any]] = {}
        self._streams: dict[str, dict[str, Any]] = {}  # key "<namespace>/<name>"
        self._deployments: dict[str, dict[str, Any]] = {}  # apps/v1, key "<namespace>/<name>"
        self._snapshots: OrderedDict[tuple[str, int], tuple[list[str], list[dict]]] = OrderedDict()
        self._faults: list[Fault] = []
        self._requests: list[RequestRecord] = []
        self._allowed: frozenset[tuple[str, ...]] | None = None
        self._reviews: list[tuple[str, str, str, str | None, bool]] = []
        self._received: dict[str, dict[str, Any]] = {}  # Images as clients sent them
        self._connections: set[socket.socket] = set()
        self._clients: list[ApiClient] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> OpenShiftAPIServer:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread."""
        if self._httpd is not None:
            return self
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.api = self
        if self.tls:
            if self._cert_files is None:
                directory = Path(tempfile.mkdtemp(prefix="openshift-api-tls-"))
                self._cert_files = _self_signed_certificate(directory)
                self.ca_pem = self._cert_files[0].read_bytes()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self._cert_files[0]), str(self._cert_files[1]))
            # The handshake runs in the connection's thread, not in the accept loop.
            httpd.socket = context.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"openshift-api-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop kept-alive connections and close clients made by api_client()."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
            clients, self._clients = self._clients, []
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for client in clients:
            with contextlib.suppress(Exception):  # best effort during teardown
                client.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OpenShiftAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (server must be started)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (``https`` with ``tls``)."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # ---- client configuration ---------------------------------------------------------------

    def kubeconfig_dict(self, namespace: str = "default") -> dict[str, Any]:
        """The kubeconfig content: cluster/context ``test``, bearer-token user (with TLS, the
        server's certificate as ``certificate-authority-data``)."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls and self.ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": "regprune", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "test",
                    "context": {"cluster": "test", "user": "regprune", "namespace": namespace},
                }
            ],
            "current-context": "test",
            "preferences": {},
        }

    def kubeconfig(self, path: str | os.PathLike[str], namespace: str = "default") -> Path:
        """Write a kubeconfig usable by ``kubernetes.config.load_kube_config``."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(self.kubeconfig_dict(namespace), sort_keys=False))
        return target

    def api_client(self) -> ApiClient:
        """A ``kubernetes.client.ApiClient`` configured from this server's kubeconfig.

        Goes through ``load_kube_config_from_dict`` so it is set up like production code, and
        does not touch the global default configuration. Closed by ``stop()``.
        """
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config_from_dict(
            self.kubeconfig_dict(), client_configuration=configuration, persist_config=False
        )
        api = client.ApiClient(configuration)
        with self._lock:
            self._clients.append(api)
        return api

    # ---- test controls ------------------------------------------------------------------------

    def inject(
        self,
        method: str | None = None,
        path_regex: str = ".*",
        status: int | None = None,
        times: int | None = 1,
        after: int = 0,
        delay: float = 0.0,
        retry_after: int | None = None,
        body: Mapping[str, Any] | str | bytes | None = None,
        *,
        reason: str | None = None,
        message: str | None = None,
        disconnect: bool = False,
    ) -> Fault:
        """Make matching requests misbehave; returns the Fault (see ``fired``).

        ``path_regex`` is searched in the URL path (no query string); ``method`` None matches
        any. The first ``after`` matching requests pass, the next ``times`` (None = forever)
        sleep ``delay`` seconds and then answer ``status`` with a Status body (or ``body``
        verbatim; dict → JSON) and ``Retry-After`` if given; ``status=None`` only delays;
        ``disconnect=True`` closes the connection without answering. Faults are checked in
        the order injected, before authentication; a request fires at most one fault.
        """
        fault = Fault(
            method=method.upper() if method else None,
            pattern=re.compile(path_regex),
            status=status,
            times=times,
            after=after,
            delay=delay,
            retry_after=retry_after,
            body=body,
            reason=reason,
            message=message,
            disconnect=disconnect,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._requests.clear()

    def count(
        self, method: str | None = None, path_regex: str = ".*", status: int | None = None
    ) -> int:
        """How many logged requests match (regex searched in the path)."""
        pattern = re.compile(path_regex)
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and pattern.search(r.path)
            and (status is None or r.status == status)
        )

    def allow(self, verbs: Iterable[tuple[str, ...]] | None) -> None:
        """Restrict RBAC to these grants; ``None`` allows everything again.

        A grant is ``(verb, resource)`` (any namespace and cluster scope, like a
        ClusterRoleBinding) or ``(verb, resource, namespace)`` (that namespace only).
        Resources: images, imagestreams, imagestreams/status, imagestreammappings.
        """
        with self._lock:
            self._allowed = None if verbs is None else frozenset(tuple(v) for v in verbs)

    def allow_roles(self, *roles: Any) -> None:
        """Restrict RBAC to what these ``regprune.permissions`` roles grant (what the manifests
        of deployments/rbac/ bind; this model has no API groups nor resource names)."""
        self.allow(
            {
                (verb, grant.resource) + ((role.namespace,) if role.namespace else ())
                for role in roles
                for grant in role.grants
                for verb in grant.verbs
            }
        )

    def expire_continue_tokens(self) -> None:
        """Simulate etcd compaction: every outstanding continue token now gets 410 Expired."""
        with self._lock:
            self._snapshots.clear()
            self._compacted_rv = self._rv
            self._rv += 1

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion."""
        with self._lock:
            return self._rv

    def add_token(
        self,
        user: str,
        grants: Iterable[tuple[str, ...]] | None = None,
        token: str | None = None,
    ) -> str:
        """Accept another bearer token for ``user``; returns it.

        ``grants`` follows :meth:`allow` (``None`` allows everything). Access reviews answer
        with these grants, so e.g. ``[("get", "imagestreams/layers", "ns")]`` lets the user pull
        from namespace ``ns`` of OpenShift's registry and nothing else (a push needs
        ``("update", "imagestreams/layers", ns)``, and ``("create", "imagestreams", ns)`` when
        the stream does not exist yet).
        """
        token = token or uuid.uuid4().hex
        with self._lock:
            self._subjects[token] = (
                user,
                None if grants is None else frozenset(tuple(g) for g in grants),
            )
        return token

    # ---- store helpers for tests -----------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def add_image(self, image: Mapping[str, Any] | None = None, /, **kwargs: Any) -> dict[str, Any]:
        """Store an Image directly (no HTTP, no RBAC); returns the stored copy.

        Pass a full Image dict, or keyword arguments for :func:`make_image` (``created``
        sets ``creationTimestamp``). A given ``creationTimestamp`` is kept; ``uid`` and
        ``resourceVersion`` are always assigned afresh. An existing name raises ``ValueError``.
        """
        if image is None:
            kwargs.setdefault("registry_host", self.registry_host)
            image = make_image(**kwargs)
        elif kwargs:
            raise TypeError("pass either an image dict or make_image keyword arguments")
        obj = copy.deepcopy(dict(image))
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("image needs metadata.name")
        with self._lock:
            if name in self._images:
                raise ValueError(f"image {name} already exists")
            self._images[name] = self._finish_image(obj, keep_created=True)
            return copy.deepcopy(self._images[name])

    def add_imagestream(
        self,
        namespace: str,
        name: str,
        tags: Mapping[str, Sequence[str | Mapping[str, Any]]] | None = None,
        created: datetime | str | None = None,
        *,
        create_images: bool = False,
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Store an ImageStream directly; returns the stored copy.

        ``tags`` maps tag → image digests, newest (current) first; each becomes a tag event
        with ``dockerImageReference`` ``<registry_host>/<ns>/<name>@<digest>``. A dict item is
        used as the tag event itself (missing fields filled). ``created`` is the stream's
        creationTimestamp and the default ``created`` of its tag events. With
        ``create_images`` missing Images are added as well (managed, single manifest).
        """
        stamp = rfc3339(created)
        repository = f"{self.registry_host}/{namespace}/{name}"
        status_tags = []
        for tag in sorted(tags or {}):
            items = []
            for item in tags[tag]:  # type: ignore[index]
                event = {"image": item} if isinstance(item, str) else dict(item)
                event.setdefault("created", stamp)
                event.setdefault("dockerImageReference", f"{repository}@{event['image']}")
                event.setdefault("generation", 1)
                items.append(
                    {
                        "created": event["created"],
                        "dockerImageReference": event["dockerImageReference"],
                        "image": event["image"],
                        "generation": event["generation"],
                    }
                )
            status_tags.append({"tag": tag, "items": items})
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if annotations:
            metadata["annotations"] = dict(annotations)
        if labels:
            metadata["labels"] = dict(labels)
        stream: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": "ImageStream",
            "metadata": metadata,
            "spec": {"lookupPolicy": {"local": False}},
            "status": {"dockerImageRepository": repository},
        }
        if status_tags:
            stream["status"]["tags"] = status_tags
        key = f"{namespace}/{name}"
        with self._lock:
            if key in self._streams:
                raise ValueError(f"imagestream {key} already exists")
            if create_images:
                for entry in status_tags:
                    for event in entry["items"]:
                        if event["image"] not in self._images:
                            self.add_image(
                                digest=event["image"],
                                repository=f"{namespace}/{name}",
                                created=stamp,
                            )
            meta = stream["metadata"]
            meta["uid"] = str(uuid.uuid4())
            meta["resourceVersion"] = self._next_rv()
            meta["generation"] = 1
            meta["creationTimestamp"] = stamp
            self._streams[key] = stream
            return copy.deepcopy(stream)

    def images(self) -> list[dict[str, Any]]:
        """Current Images sorted by name (deep copies)."""
        with self._lock:
            return [copy.deepcopy(self._images[k]) for k in sorted(self._images)]

    def imagestreams(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Current ImageStreams in key order, optionally of one namespace (deep copies)."""
        with self._lock:
            return [
                copy.deepcopy(self._streams[k])
                for k in sorted(self._streams)
                if namespace is None or k.startswith(namespace + "/")
            ]

    def image(self, name: str) -> dict[str, Any] | None:
        """One Image or None."""
        with self._lock:
            found = self._images.get(name)
            return copy.deepcopy(found) if found else None

    def imagestream(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One ImageStream or None."""
        with self._lock:
            found = self._streams.get(f"{namespace}/{name}")
            return copy.deepcopy(found) if found else None

    def image_as_sent(self, name: str) -> dict[str, Any] | None:
        """The Image as the client sent it on create (before the image strategy), or None."""
        with self._lock:
            found = self._received.get(name)
            return copy.deepcopy(found) if found else None

    def store_as_sent(self, name: str) -> dict[str, Any]:
        """Replace a stored Image's content by what the client sent (keeping uid,
        resourceVersion and creationTimestamp): the form a cluster would hold without the
        apiserver's strategy. Returns the stored copy."""
        with self._lock:
            sent = copy.deepcopy(self._received[name])
            meta = self._images[name]["metadata"]
            for key in ("uid", "resourceVersion", "creationTimestamp"):
                sent.setdefault("metadata", {})[key] = meta[key]
            sent["apiVersion"], sent["kind"] = API_VERSION, "Image"
            self._images[name] = sent
            self._rv += 1
            return copy.deepcopy(sent)

    def delete_image(self, name: str) -> bool:
        """Remove an Image behind the API's back; True when it existed."""
        with self._lock:
            if self._images.pop(name, None) is None:
                return False
            self._rv += 1
            return True

    def delete_imagestream(self, namespace: str, name: str) -> bool:
        """Remove an ImageStream behind the API's back; True when it existed."""
        with self._lock:
            if self._streams.pop(f"{namespace}/{name}", None) is None:
                return False
            self._rv += 1
            return True

    def dump_list(self) -> dict[str, Any]:
        """What ``oc get images,imagestreams -A -o json`` prints for the current state."""
        with self._lock:
            items = self.images() + self.imagestreams()
        return {
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": ""},
            "items": items,
        }

    # ---- request handling ----------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        """Entry point for every HTTP request (runs in the connection's thread)."""
        method = handler.command
        split = urlsplit(handler.path)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length > 0 else b""

        fault = self._take_fault(method, path)
        if fault is not None:
            if fault.delay > 0:
                time.sleep(fault.delay)
            if fault.disconnect:
                self._log(method, path, query, 0)
                handler.close_connection = True
                with contextlib.suppress(OSError):
                    handler.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault.status is not None:
                response = self._fault_response(fault)
                self._log(method, path, query, response.status)
                self._send(handler, response)
                return

        try:
            response = self._handle(
                method,
                path,
                query,
                raw,
                handler.headers.get("Authorization"),
                handler.headers.get("Content-Type") or "",
            )
        except _ApiError as err:
            response = self._error_response(err)
        except Exception as exc:  # a bug in the fake must not hang the client
            response = self._error_response(_ApiError(500, "InternalError", repr(exc)))
        # Log before answering so a test sees the entry as soon as its call returns.
        self._log(method, path, query, response.status)
        self._send(handler, response)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.exhausted:
                    continue
                if fault.method is not None and fault.method != method:
                    continue
                if not fault.pattern.search(path):
                    continue
                fault.seen += 1
                if fault.seen <= fault.after:
                    continue
                fault.fired += 1
                return fault
        return None

    def _fault_response(self, fault: Fault) -> _Response:
        assert fault.status is not None
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if fault.body is None:
            details = None
            if fault.retry_after is not None:
                details = {"retryAfterSeconds": fault.retry_after}
            body = _json_bytes(
                _status(
                    fault.status,
                    fault.reason if fault.reason is not None else _REASONS.get(fault.status, ""),
                    fault.message or _MESSAGES.get(fault.status, "injected fault"),
                    success=fault.status < 400,
                    details=details,
                )
            )
        elif isinstance(fault.body, bytes):
            body = fault.body
        elif isinstance(fault.body, str):
            body = fault.body.encode()
        else:
            body = _json_bytes(fault.body)
        return _Response(fault.status, body, headers)

    def _error_response(self, err: _ApiError) -> _Response:
        body = _status(
            err.code, err.reason, err.message, details=err.details, list_meta=err.list_meta
        )
        return _Response(err.code, _json_bytes(body), err.headers)

    @staticmethod
    def _send(handler: _Handler, response: _Response) -> None:
        try:
            OpenShiftAPIServer._write(handler, response)
        except OSError:  # the client went away (timeout, reset): nothing left to tell it
            handler.close_connection = True

    @staticmethod
    def _write(handler: _Handler, response: _Response) -> None:
        handler.send_response(response.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(response.body)))
        handler.send_header("Cache-Control", "no-cache, private")
        for key, value in response.headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(response.body)

    def _log(self, method: str, path: str, query: dict[str, str], status: int) -> None:
        with self._lock:
            self._requests.append(RequestRecord(method, path, query, status))

    def _handle(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        raw: bytes,
        authorization: str | None,
        content_type: str = "",
    ) -> _Response:
        token = (authorization or "").removeprefix("Bearer ")
        if (
            not authorization
            or not authorization.startswith("Bearer ")
            or not (token == self.token or token in self._subjects)
        ):
            raise _ApiError(401, "Unauthorized", "Unauthorized")
        discovery = self._discovery(path)
        if discovery is not None:
            if method != "GET":
                raise _ApiError(405, "MethodNotAllowed", _MESSAGES[405])
            return _Response(200, _json_bytes(discovery))
        review = self._review_route(method, path)
        if review is not None:
            return review(token, _decode_body(raw, content_type))
        route = self._route(method, path)
        self._authorize(route, token)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise _bad_request(
                    f"the body of the request was in an unknown format: {exc}"
                ) from None
        return route.handler(query, body)

    def _route(self, method: str, path: str) -> _Route:
        """Map (method, path) to a handler plus the RBAC attributes of the request."""
        parts = [unquote(p) for p in path.split("/") if p]
        from tests.harness.workloads_api import workloads_route  # workload lists live there

        if (workload := workloads_route(self, method, parts)) is not None:
            return workload
        match parts:
            case ["apis", "apps", "v1", "namespaces", ns, "deployments", name]:
                if method not in ("GET", "PATCH"):
                    raise _ApiError(405, "MethodNotAllowed", _MESSAGES[405])
                verb = "get" if method == "GET" else "patch"
                return _Route(
                    verb, "deployments", ns, name, lambda q, b: self._h_deployment(ns, name, b)
                )
        if parts[:3] != ["apis", GROUP, VERSION] or len(parts) < 4:
            raise _ApiError(404, "NotFound", _MESSAGES[404], {})
        rest = parts[3:]
        verbs = {"GET": "get", "POST": "create", "PUT": "update", "DELETE": "delete"}

        def route(
            allowed: Mapping[str, Callable[[dict[str, str], Any], _Response]],
            resource: str,
            namespace: str | None,
            name: str | None,
            collection: bool,
        ) -> _Route:
            handler = allowed.get(method)
            if handler is None:
                raise _ApiError(405, "MethodNotAllowed", _MESSAGES[405])
            verb = "list" if (method == "GET" and collection) else verbs[method]
            return _Route(verb, resource, namespace, name, handler)

        match rest:
            case ["images"]:
                return route(
                    {"GET": self._h_list_images, "POST": self._h_create_image},
                    "images",
                    None,
                    None,
                    True,
                )
            case ["images", name]:
                return route(
                    {
                        "GET": lambda q, b: self._h_get_image(name),
                        "DELETE": lambda q, b: self._h_delete_image(name, q, b),
                    },
                    "images",
                    None,
                    name,
                    False,
                )
            case ["imagestreams"]:
                return route(
                    {"GET": lambda q, b: self._h_list_streams(None, q)},
                    "imagestreams",
                    None,
                    None,
                    True,
                )
            case ["namespaces", ns, "imagestreams"]:
                return route(
                    {
                        "GET": lambda q, b: self._h_list_streams(ns, q),
                        "POST": lambda q, b: self._h_create_stream(ns, q, b),
                    },
                    "imagestreams",
                    ns,
                    None,
                    True,
                )
            case ["namespaces", ns, "imagestreams", name]:
                return route(
                    {
                        "GET": lambda q, b: self._h_get_stream(ns, name),
                        "PUT": lambda q, b: self._h_update_stream(ns, name, q, b, status=False),
                        "DELETE": lambda q, b: self._h_delete_stream(ns, name, q, b),
                    },
                    "imagestreams",
                    ns,
                    name,
                    False,
                )
            case ["namespaces", ns, "imagestreams", name, "layers"]:
                return route(
                    {"GET": lambda q, b: self._h_stream_layers(ns, name)},
                    "imagestreams/layers",
                    ns,
                    name,
                    False,
                )
            case ["namespaces", ns, "imagestreams", name, "secrets"]:
                return route(
                    {"GET": lambda q, b: self._h_stream_secrets(ns, name)},
                    "imagestreams/secrets",
                    ns,
                    name,
                    False,
                )
            case ["namespaces", ns, "imagestreamimages", name]:
                return route(
                    {"GET": lambda q, b: self._h_stream_image(ns, name)},
                    "imagestreamimages",
                    ns,
                    name,
                    False,
                )
            case ["namespaces", ns, "imagestreams", name, "status"]:
                return route(
                    {
                        "GET": lambda q, b: self._h_get_stream(ns, name),
                        "PUT": lambda q, b: self._h_update_stream(ns, name, q, b, status=True),
                    },
                    "imagestreams/status",
                    ns,
                    name,
                    False,
                )
            case ["namespaces", ns, "imagestreammappings"]:
                return route(
                    {"POST": lambda q, b: self._h_create_mapping(ns, q, b)},
                    "imagestreammappings",
                    ns,
                    None,
                    True,
                )
        raise _ApiError(404, "NotFound", _MESSAGES[404], {})

    def _grants(self, token: str) -> tuple[str, frozenset[tuple[str, ...]] | None]:
        """(user, grants) of a bearer token; grants None means everything is allowed."""
        with self._lock:
            if token == self.token:
                return self.user, self._allowed
            return self._subjects[token]

    @staticmethod
    def _permits(
        grants: frozenset[tuple[str, ...]] | None, verb: str, resource: str, namespace: str | None
    ) -> bool:
        """The RBAC model: a grant (verb, resource) anywhere or (verb, resource, namespace)."""
        if grants is None or (verb, resource) in grants:
            return True
        return namespace is not None and (verb, resource, namespace) in grants

    def _authorize(self, route: _Route, token: str | None = None) -> None:
        user, allowed = self._grants(token or self.token)
        if self._permits(allowed, route.verb, route.resource, route.namespace):
            return
        base = route.resource.split("/")[0]
        group = route.group
        if group is None:
            group = "apps" if base == "deployments" else GROUP
        qualified = f"{base}.{group}" if group else base  # the core group has no suffix
        subject = f'{qualified} "{route.name}"' if route.name else qualified
        scope = (
            f'in the namespace "{route.namespace}"'
            if route.namespace is not None
            else "at the cluster scope"
        )
        details: dict[str, Any] = {"group": group, "kind": base}
        if route.name:
            details["name"] = route.name
        raise _ApiError(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{user}" cannot {route.verb} resource '
            f'"{route.resource}" in API group "{group}" {scope}',
            details,
        )

    # ---- discovery ---------------------------------------------------------------------------

    def _discovery(self, path: str) -> dict[str, Any] | None:
        """Just enough discovery for kubernetes.dynamic and ``oc api-resources``-style code."""
        path = path.rstrip("/") or "/"
        from tests.harness.workloads_api import workload_groups, workloads_discovery

        if (found := workloads_discovery(path)) is not None:
            return found
        group_version = {"groupVersion": API_VERSION, "version": VERSION}
        if path == "/version":
            return {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                ],
            }
        if path == "/api/v1":
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": []}
        group = {
            "name": GROUP,
            "versions": [group_version],
            "preferredVersion": group_version,
        }
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [group, *workload_groups()],
            }
        if path == f"/apis/{GROUP}":
            return {"kind": "APIGroup", "apiVersion": "v1", **group}
        if path == f"/apis/{GROUP}/{VERSION}":
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": API_VERSION,
                "resources": [
                    {
                        "name": "images",
                        "singularName": "image",
                        "namespaced": False,
                        "kind": "Image",
                        "verbs": ["create", "delete", "get", "list"],
                    },
                    {
                        "name": "imagestreammappings",
                        "singularName": "imagestreammapping",
                        "namespaced": True,
                        "kind": "ImageStreamMapping",
                        "verbs": ["create"],
                    },
                    {
                        "name": "imagestreams",
                        "singularName": "imagestream",
                        "namespaced": True,
                        "kind": "ImageStream",
                        "shortNames": ["is"],
                        "verbs": ["create", "delete", "get", "list", "update"],
                    },
                    {
                        "name": "imagestreams/status",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "ImageStream",
                        "verbs": ["get", "update"],
                    },
                ],
            }
        return None

    # ---- lists and continue tokens ---------------------------------------------------------

    def _snapshot(self, scope: str) -> tuple[list[str], list[dict]]:
        """Sorted (keys, objects) of a list scope; objects are never mutated in place."""
        if scope == "images":
            keys = sorted(self._images)
            return keys, [self._images[k] for k in keys]
        if scope == "imagestreams":
            keys = sorted(self._streams)
            return keys, [self._streams[k] for k in keys]
        namespace = scope.split(":", 1)[1]
        prefix = namespace + "/"
        full = sorted(k for k in self._streams if k.startswith(prefix))
        return [k[len(prefix) :] for k in full], [self._streams[k] for k in full]

    def _list(self, scope: str, kind: str, query: dict[str, str]) -> _Response:
        if query.get("watch") in ("true", "1"):
            raise _bad_request("watch is not supported by the test server")
        limit = 0
        if query.get("limit"):
            try:
                limit = int(query["limit"])
            except ValueError:
                raise _bad_request(f'invalid limit "{query["limit"]}"') from None
        token = query.get("continue") or ""
        with self._lock:
            start = 0
            if token:
                rv, start_key = _decode_continue(token)
                if rv == -1:  # inconsistent continuation: latest state, after start_key
                    rv = self._rv
                    snap = self._snapshot(scope)
                    self._remember(scope, rv, snap)
                else:
                    cached = self._snapshots.get((scope, rv))
                    if cached is not None:
                        self._snapshots.move_to_end((scope, rv))
                        snap = cached
                    elif rv == self._rv and rv > self._compacted_rv:
                        snap = self._snapshot(scope)  # nothing changed since: same state
                        self._remember(scope, rv, snap)
                    else:
                        raise _ApiError(
                            410,
                            "Expired",
                            _CONTINUE_EXPIRED,
                            list_meta={"continue": _encode_continue(-1, start_key)},
                        )
                start = bisect.bisect_left(snap[0], start_key)
            else:
                rv = self._rv
                snap = self._snapshot(scope)
            keys, objects = snap
            end = len(keys) if limit <= 0 else min(len(keys), start + limit)
            page = objects[start:end]
            metadata: dict[str, Any] = {"resourceVersion": str(rv)}
            if end < len(keys):
                metadata["continue"] = _encode_continue(rv, keys[end - 1] + "\x00")
                metadata["remainingItemCount"] = len(keys) - end
                if not token:
                    self._remember(scope, rv, snap)
            body = _json_bytes(
                {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "items": page}
            )
        return _Response(200, body)

    def _remember(self, scope: str, rv: int, snap: tuple[list[str], list[dict]]) -> None:
        self._snapshots[(scope, rv)] = snap
        self._snapshots.move_to_end((scope, rv))
        while len(self._snapshots) > _MAX_SNAPSHOTS:
            self._snapshots.popitem(last=False)

    # ---- validation helpers ------------------------------------------------------------------

    @staticmethod
    def _dry_run(query: dict[str, str]) -> bool:
        value = query.get("dryRun")
        if value is None:
            return False
        if value != "All":
            raise _bad_request(f'Unsupported value: "{value}": supported values: "All"')
        return True

    @staticmethod
    def _require_object(body: Any, kind: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad_request("the body of the request was in an unknown format")
        if body.get("kind") not in (None, "", kind):
            raise _bad_request(
                f"the kind in the data ({body.get('kind')}) does not match the expected kind "
                f"({kind})"
            )
        if body.get("apiVersion") not in (None, "", API_VERSION):
            raise _bad_request(
                f"the API version in the data ({body.get('apiVersion')}) does not match the "
                f"expected API version ({API_VERSION})"
            )
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        return body

    @staticmethod
    def _reject_resource_version(meta: Mapping[str, Any]) -> None:
        """The apiserver's storage refuses creates that carry a resourceVersion (a plain 500)."""
        if meta.get("resourceVersion") not in (None, "", "0"):
            raise _ApiError(500, "", "resourceVersion should not be set on objects to be created")

    def _finish_image(self, obj: dict[str, Any], *, keep_created: bool) -> dict[str, Any]:
        """Set apiVersion/kind and server-managed metadata on a new Image (lock held)."""
        meta = obj.setdefault("metadata", {})
        meta.pop("namespace", None)
        meta.pop("generation", None)
        meta.pop("deletionTimestamp", None)
        created = meta.get("creationTimestamp") if keep_created else None
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_rv()
        meta["creationTimestamp"] = rfc3339(created) if created else rfc3339()
        obj["apiVersion"] = API_VERSION
        obj["kind"] = "Image"
        for name in ("dockerImageLayers", "dockerImageManifests", "dockerImageSignatures"):
            if obj.get(name) == []:  # omitempty: the real server stores no empty list
                del obj[name]
        return obj

    @staticmethod
    def _validate_image(
        image: dict[str, Any], prefix: str, kind: str, name: str, *, digest: bool
    ) -> None:
        """ValidateImage: a path-segment name and a dockerImageReference are required.

        ``digest`` additionally demands a ``sha256:<64 hex>`` name (for mappings).
        """
        meta = image.get("metadata") or {}
        image_name = meta.get("name")
        causes: list[tuple[str, str, str]] = []
        if not image_name:
            causes.append(
                (
                    f"{prefix}metadata.name",
                    "FieldValueRequired",
                    "Required value: name or generateName is required",
                )
            )
        elif (
            not isinstance(image_name, str)
            or image_name in (".", "..")
            or ("/" in image_name or "%" in image_name)
        ):
            causes.append(
                (
                    f"{prefix}metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{image_name}": may not be "." or ".." and may not '
                    'contain "/" or "%"',
                )
            )
        elif digest and not _DIGEST_RE.match(image_name):
            causes.append(
                (
                    f"{prefix}metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{image_name}": must be a manifest digest "sha256:<64 hex>"',
                )
            )
        if not image.get("dockerImageReference"):
            causes.append((f"{prefix}dockerImageReference", "FieldValueRequired", "Required value"))
        if causes:
            raise _invalid(kind, name or str(image_name or ""), causes)

    @staticmethod
    def _check_preconditions(resource: str, obj: Mapping[str, Any], body: Any) -> None:
        """DeleteOptions.preconditions: uid / resourceVersion must match or 409."""
        if not isinstance(body, dict):
            return
        pre = body.get("preconditions") or {}
        meta = obj["metadata"]
        name = meta["name"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise _ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource}.{GROUP} "{name}": Precondition '
                f"failed: UID in precondition: {pre['uid']}, UID in object meta: {meta['uid']}",
                {"name": name, "group": GROUP, "kind": resource},
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise _ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource}.{GROUP} "{name}": Precondition '
                f"failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
                {"name": name, "group": GROUP, "kind": resource},
            )

    @staticmethod
    def _ok(obj: Any, status: int = 200) -> _Response:
        return _Response(status, _json_bytes(obj))

    @staticmethod
    def _deleted(resource: str, obj: Mapping[str, Any]) -> _Response:
        """What the generic registry store answers to a DELETE (Status with details)."""
        meta = obj["metadata"]
        details = {"name": meta["name"], "group": GROUP, "kind": resource, "uid": meta["uid"]}
        return _Response(200, _json_bytes(_status(200, "", "", success=True, details=details)))

    # ---- images ----------------------------------------------------------------------------------

    def _h_deployment(self, namespace: str, name: str, patch: Any) -> _Response:
        """GET or (strategic-merge) PATCH an apps/v1 Deployment: enough for a rollout
        restart, which patches the pod template's annotations."""
        with self._lock:
            deployment = self._deployments.get(f"{namespace}/{name}")
            if deployment is None:
                raise _ApiError(
                    404, "NotFound", f'deployments.apps "{name}" not found', {"kind": "deployments"}
                )
            if isinstance(patch, dict):
                _merge(deployment, patch)
                deployment["metadata"]["generation"] += 1
            return _Response(200, _json_bytes(deployment))

    def add_deployment(self, namespace: str, name: str) -> None:
        """A Deployment (e.g. the registry's) that `--restart-registry` can restart."""
        labels = {"app": name}
        with self._lock:
            self._deployments[f"{namespace}/{name}"] = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"namespace": namespace, "name": name, "generation": 1},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels, "annotations": {}},
                        "spec": {"containers": [{"name": name, "image": "registry"}]},
                    },
                },
            }

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._deployments[f"{namespace}/{name}"]))

    def _h_list_images(self, query: dict[str, str], body: Any) -> _Response:
        return self._list("images", "ImageList", query)

    def _h_get_image(self, name: str) -> _Response:
        with self._lock:
            found = self._images.get(name)
            if found is None:
                raise _not_found("images", name)
            return self._ok(found)

    def _h_create_image(self, query: dict[str, str], body: Any) -> _Response:
        dry_run = self._dry_run(query)
        obj = copy.deepcopy(self._require_object(body, "Image"))
        meta = obj.setdefault("metadata", {})
        self._validate_image(obj, "", "Image", str(meta.get("name") or ""), digest=False)
        with self._lock:
            self._reject_resource_version(meta)
            name = meta["name"]
            if name in self._images:
                raise _already_exists("images", name)
            if dry_run:
                return self._ok(obj, 201)
            self._received[name] = copy.deepcopy(obj)
            if self.image_strategy:
                _apply_image_strategy(obj)
            if dry_run:
                return self._ok(obj, 201)
            self._images[name] = self._finish_image(obj, keep_created=False)
            return self._ok(self._images[name], 201)

    def _h_delete_image(self, name: str, query: dict[str, str], body: Any) -> _Response:
        dry_run = self._dry_run(query)
        with self._lock:
            found = self._images.get(name)
            if found is None:
                raise _not_found("images", name)
            self._check_preconditions("images", found, body)
            if not dry_run:
                del self._images[name]
                self._rv += 1
            return self._deleted("images", found)

    # ---- authentication and authorization reviews (what OpenShift's registry asks) ------------

    def _review_route(
        self, method: str, path: str
    ) -> Callable[[str, dict[str, Any]], _Response] | None:
        """SelfSubjectReview, (Self)SubjectAccessReview creates; None for other paths."""
        reviews: dict[str, Callable[[str, dict[str, Any]], _Response]] = {
            "/apis/authentication.k8s.io/v1/selfsubjectreviews": self._h_self_subject_review,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews": self._h_access_review,
            "/apis/authorization.k8s.io/v1/subjectaccessreviews": self._h_access_review,
        }
        handler = reviews.get(path.rstrip("/"))
        if handler is None:
            return None
        if method != "POST":
            raise _ApiError(405, "MethodNotAllowed", _MESSAGES[405])
        return handler

    def _h_self_subject_review(self, token: str, body: dict[str, Any]) -> _Response:
        user, _ = self._grants(token)
        groups = ["system:authenticated"]
        if user.startswith("system:serviceaccount:"):
            groups.insert(0, "system:serviceaccounts")
        review = {
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "status": {
                "userInfo": {
                    "username": user,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, user)),
                    "groups": groups,
                }
            },
        }
        return _Response(201, _json_bytes(review))

    def _h_access_review(self, token: str, body: dict[str, Any]) -> _Response:
        """Answer with this server's RBAC model: the caller's grants (a SelfSubjectAccessReview)
        or those of ``system:anonymous`` (a SubjectAccessReview naming it)."""
        kind = body.get("kind") or "SelfSubjectAccessReview"
        spec = body.get("spec") or {}
        attrs = spec.get("resourceAttributes") or {}
        verb = str(attrs.get("verb") or "")
        resource = str(attrs.get("resource") or "")
        if attrs.get("subresource"):
            resource += "/" + str(attrs["subresource"])
        namespace = attrs.get("namespace") or None
        if kind == "SubjectAccessReview":
            if spec.get("user") == "system:anonymous":
                grants: frozenset[tuple[str, ...]] | None = self.anonymous_grants
            else:
                subject = next(
                    (g for u, g in self._subjects.values() if u == spec.get("user")), frozenset()
                )
                grants = self._allowed if spec.get("user") == self.user else subject
        else:
            _, grants = self._grants(token)
        allowed = self._permits(grants, verb, resource, namespace)
        with self._lock:
            self._reviews.append((kind, verb, resource, namespace, allowed))
        status: dict[str, Any] = {"allowed": allowed}
        if allowed:
            status["reason"] = "allowed by the test server's grants"
        review = {
            "kind": kind,
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }
        return _Response(201, _json_bytes(review))

    @property
    def reviews(self) -> list[tuple[str, str, str, str | None, bool]]:
        """Access reviews answered: (kind, verb, resource, namespace, allowed), oldest first."""
        with self._lock:
            return list(self._reviews)

    # ---- image stream subresources OpenShift's registry reads ----------------------------------

    def _h_stream_layers(self, namespace: str, name: str) -> _Response:
        """ImageStreamLayers as openshift-apiserver's LayersREST builds it from its image index."""
        with self._lock:
            stream = self._streams.get(f"{namespace}/{name}")
            if stream is None:
                raise _not_found("imagestreams", name)
            blobs, images = self._stream_layers(stream)
            body = {
                "kind": "ImageStreamLayers",
                "apiVersion": API_VERSION,
                "metadata": copy.deepcopy(stream["metadata"]),
                "blobs": blobs,
                "images": images,
            }
        return _Response(200, _json_bytes(body))

    def _stream_layers(
        self, stream: Mapping[str, Any]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """(blobs, images) of a stream: every image in its tag histories and every child of
        those that are manifest lists, with layers, config (Docker schema 2 with decodable
        metadata only, as the apiserver's layer index) and manifests; lock held."""
        blobs: dict[str, dict[str, Any]] = {}
        images: dict[str, dict[str, Any]] = {}
        pending = [
            item.get("image")
            for entry in stream.get("status", {}).get("tags") or []
            for item in entry.get("items") or []
        ]
        while pending:
            digest = pending.pop(0)
            if not digest or digest in images:
                continue
            image = self._images.get(digest)
            if image is None:
                images[digest] = {"imageMissing": True}
                continue
            reference: dict[str, Any] = {"layers": []}
            for layer in image.get("dockerImageLayers") or []:
                reference["layers"].append(layer["name"])
                blobs.setdefault(
                    layer["name"],
                    {"size": layer.get("size", 0), "mediaType": layer.get("mediaType", "")},
                )
            config = _config_of(image)
            if config:
                reference["config"] = config
                blobs.setdefault(config, {"mediaType": _DOCKER_CONFIG})
            children = [m["digest"] for m in image.get("dockerImageManifests") or []]
            if children:
                reference["manifests"] = children
                pending.extend(children)
            media_type = image.get("dockerImageManifestMediaType") or DOCKER_SCHEMA2
            blobs.setdefault(digest, {"mediaType": media_type})
            images[digest] = reference
        return blobs, images

    def _h_stream_image(self, namespace: str, name: str) -> _Response:
        """ImageStreamImage ``<stream>@<digest>``: the Image when the stream's layers have it
        (OpenShift's registry reads its signatures from here)."""
        stream_name, _, digest = name.partition("@")
        with self._lock:
            stream = self._streams.get(f"{namespace}/{stream_name}")
            if stream is None or not digest:
                raise _not_found("imagestreams", stream_name)
            # The apiserver looks the image up in the stream's layers: tagged images and the
            # children of tagged manifest lists.
            _, known = self._stream_layers(stream)
            image = self._images.get(digest)
            if digest not in known or image is None:
                raise _not_found("imagestreamimage", name)
            body = {
                "kind": "ImageStreamImage",
                "apiVersion": API_VERSION,
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": image["metadata"].get("uid"),
                    "resourceVersion": image["metadata"].get("resourceVersion"),
                    "creationTimestamp": image["metadata"].get("creationTimestamp"),
                },
                "image": copy.deepcopy(image),
            }
        return _Response(200, _json_bytes(body))

    def _h_stream_secrets(self, namespace: str, name: str) -> _Response:
        """Pull-through credentials of a stream: none here (an empty SecretList)."""
        with self._lock:
            if f"{namespace}/{name}" not in self._streams:
                raise _not_found("imagestreams", name)
        body = {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []}
        return _Response(200, _json_bytes(body))

    # ---- image streams ---------------------------------------------------------------------

    def _h_list_streams(self, namespace: str | None, query: dict[str, str]) -> _Response:
        scope = "imagestreams" if namespace is None else f"imagestreams:{namespace}"
        return self._list(scope, "ImageStreamList", query)

    def _h_get_stream(self, namespace: str, name: str) -> _Response:
        with self._lock:
            found = self._streams.get(f"{namespace}/{name}")
            if found is None:
                raise _not_found("imagestreams", name)
            return self._ok(found)

    def _h_create_stream(self, namespace: str, query: dict[str, str], body: Any) -> _Response:
        dry_run = self._dry_run(query)
        obj = copy.deepcopy(self._require_object(body, "ImageStream"))
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace") not in (None, "", namespace):
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        name = meta.get("name")
        if not name:
            raise _invalid(
                "ImageStream",
                "",
                [
                    (
                        "metadata.name",
                        "FieldValueRequired",
                        "Required value: name or generateName is required",
                    )
                ],
            )
        if not isinstance(name, str) or not _STREAM_NAME_RE.match(name) or len(name) > 253:
            raise _invalid(
                "ImageStream",
                str(name),
                [
                    (
                        "metadata.name",
                        "FieldValueInvalid",
                        f'Invalid value: "{name}": must be a valid DNS subdomain',
                    )
                ],
            )
        if not _NAMESPACE_RE.match(namespace):
            raise _invalid(
                "ImageStream",
                name,
                [
                    (
                        "metadata.namespace",
                        "FieldValueInvalid",
                        f'Invalid value: "{namespace}": a lowercase RFC 1123 label',
                    )
                ],
            )
        key = f"{namespace}/{name}"
        with self._lock:
            self._reject_resource_version(meta)
            if key in self._streams:
                raise _already_exists("imagestreams", name)
            meta["namespace"] = namespace
            obj["apiVersion"] = API_VERSION
            obj["kind"] = "ImageStream"
            spec = obj.get("spec") or {}
            spec.setdefault("lookupPolicy", {"local": False})
            obj["spec"] = spec
            # The ImageStream strategy resets status on create.
            obj["status"] = {"dockerImageRepository": f"{self.registry_host}/{key}"}
            meta["uid"] = str(uuid.uuid4())
            meta["generation"] = 1
            meta["creationTimestamp"] = rfc3339()
            meta.pop("deletionTimestamp", None)
            if dry_run:
                meta.pop("uid")
                return self._ok(obj, 201)
            meta["resourceVersion"] = self._next_rv()
            self._streams[key] = obj
            return self._ok(obj, 201)

    def _h_update_stream(
        self, namespace: str, name: str, query: dict[str, str], body: Any, *, status: bool
    ) -> _Response:
        dry_run = self._dry_run(query)
        obj = copy.deepcopy(self._require_object(body, "ImageStream"))
        meta = obj.setdefault("metadata", {})
        if meta.get("name") not in (None, "", name):
            raise _bad_request("the name of the object does not match the name on the URL")
        key = f"{namespace}/{name}"
        with self._lock:
            current = self._streams.get(key)
            if current is None:
                raise _not_found("imagestreams", name)
            sent_rv = meta.get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise _ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on imagestreams.{GROUP} "{name}": the object '
                    "has been modified; please apply your changes to the latest version and try "
                    "again",
                    {"name": name, "group": GROUP, "kind": "imagestreams"},
                )
            new = copy.deepcopy(current)
            if status:
                new_status = dict(obj.get("status") or {})
                new_status["tags"] = sorted(
                    new_status.get("tags") or [], key=lambda t: str(t.get("tag", ""))
                )
                if not new_status["tags"]:
                    new_status.pop("tags")
                new_status.setdefault(
                    "dockerImageRepository", current["status"].get("dockerImageRepository")
                )
                new["status"] = new_status
            else:
                new_spec = obj.get("spec") or {}
                new_spec.setdefault("lookupPolicy", {"local": False})
                if new_spec != current.get("spec"):
                    new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
                new["spec"] = new_spec
                for field_name in ("labels", "annotations"):
                    if field_name in meta:
                        new["metadata"][field_name] = meta[field_name]
                    else:
                        new["metadata"].pop(field_name, None)
            if new == current:
                return self._ok(current)
            if dry_run:
                return self._ok(new)
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._streams[key] = new
            return self._ok(new)

    def _h_delete_stream(
        self, namespace: str, name: str, query: dict[str, str], body: Any
    ) -> _Response:
        dry_run = self._dry_run(query)
        key = f"{namespace}/{name}"
        with self._lock:
            found = self._streams.get(key)
            if found is None:
                raise _not_found("imagestreams", name)
            self._check_preconditions("imagestreams", found, body)
            if not dry_run:
                del self._streams[key]
                self._rv += 1
            return self._deleted("imagestreams", found)

    # ---- image stream mappings ---------------------------------------------------------------

    def _h_create_mapping(self, namespace: str, query: dict[str, str], body: Any) -> _Response:
        """openshift-apiserver's imagestreammapping REST Create, minus tag tracking."""
        if "dryRun" in query:
            raise _bad_request("dryRun is not supported")
        mapping = self._require_object(body, "ImageStreamMapping")
        meta = mapping.get("metadata") or {}
        if meta.get("namespace") not in (None, "", namespace):
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        stream_name = meta.get("name") or ""
        tag = mapping.get("tag")
        image = mapping.get("image")
        causes: list[tuple[str, str, str]] = []
        if not stream_name:
            causes.append(("metadata.name", "FieldValueRequired", "Required value"))
        if not tag:
            causes.append(("tag", "FieldValueRequired", "Required value"))
        elif not isinstance(tag, str) or not _TAG_RE.match(tag):
            causes.append(
                (
                    "tag",
                    "FieldValueInvalid",
                    f'Invalid value: "{tag}": must match "{_TAG_RE.pattern}"',
                )
            )
        if not isinstance(image, dict):
            causes.append(("image", "FieldValueRequired", "Required value"))
        if causes:
            raise _invalid("ImageStreamMapping", str(stream_name), causes)
        assert isinstance(image, dict)
        self._validate_image(image, "image.", "ImageStreamMapping", str(stream_name), digest=True)
        image = copy.deepcopy(image)
        image_meta = image.setdefault("metadata", {})
        digest = image_meta["name"]
        key = f"{namespace}/{stream_name}"
        with self._lock:
            stream = self._streams.get(key)
            if stream is None:
                # The apiserver's ImageStreamMapping REST names its own resource here; OpenShift's
                # registry creates the stream and retries only on exactly this 404.
                raise _not_found("imagestreammappings", stream_name)
            self._reject_resource_version(image_meta)
            ref = image["dockerImageReference"]
            if digest in self._images:
                annotations = image_meta.get("annotations") or {}
                if annotations.get("openshift.io/image.managed") == "true":
                    # Managed image tagged elsewhere already: make the reference local.
                    repository = stream["status"].get("dockerImageRepository")
                    if repository:
                        ref = f"{repository}@{digest}"
            else:
                self._received[digest] = copy.deepcopy(image)
                if self.image_strategy:
                    _apply_image_strategy(image)
                self._images[digest] = self._finish_image(image, keep_created=False)
            event = {
                "created": rfc3339(),
                "dockerImageReference": ref,
                "image": digest,
                "generation": stream["metadata"].get("generation", 1),
            }
            new = copy.deepcopy(stream)
            if _add_tag_event(new, tag, event):
                new["metadata"]["resourceVersion"] = self._next_rv()
                self._streams[key] = new
        return self._ok(_status(201, "", "", success=True), 201)


# --------------------------------------------------------------------------------------------
# What openshift-apiserver does to an Image on create (image strategy, InternalImageWithMetadata)
# --------------------------------------------------------------------------------------------


def _apply_image_strategy(image: dict[str, Any]) -> None:
    """PrepareForCreate of openshift-apiserver's image strategy, in place.

    From ``dockerImageManifest`` (and ``dockerImageConfig``): layers in ascending order, media
    type, ``dockerImageMetadata`` (``Id`` = config digest, ``Size``, ...), the children of a
    manifest list; then the texts are dropped when ``manifestBlobStored`` is "true". Errors are
    swallowed as the apiserver only logs them. The stored object always has a metadata object
    and ``dockerImageMetadataVersion`` "1.0", as the v1 conversion writes them.
    """
    annotations = (image.get("metadata") or {}).get("annotations") or {}
    manifest_text = image.get("dockerImageManifest") or ""
    metadata = image.get("dockerImageMetadata")
    internal: dict[str, Any] = dict(metadata) if isinstance(metadata, dict) else {}
    if manifest_text:
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            _image_with_metadata(image, internal)
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            doc = json.loads(manifest_text)
            if doc.get("mediaType") in _LIST_TYPES or "manifests" in doc:
                image["dockerImageManifests"] = [
                    {
                        "digest": m["digest"],
                        "mediaType": m.get("mediaType", ""),
                        "manifestSize": m.get("size", 0),
                        "architecture": (m.get("platform") or {}).get("architecture", ""),
                        "os": (m.get("platform") or {}).get("os", ""),
                        **(
                            {"variant": m["platform"]["variant"]}
                            if (m.get("platform") or {}).get("variant")
                            else {}
                        ),
                    }
                    for m in doc.get("manifests") or []
                ]
    if annotations.get(_ANN_BLOB_STORED) == "true":
        image.pop("dockerImageManifest", None)
        image.pop("dockerImageConfig", None)
    internal.setdefault("kind", "DockerImage")
    internal.setdefault("apiVersion", "image.openshift.io/1.0")
    internal.setdefault("Created", None)
    image["dockerImageMetadata"] = internal
    image["dockerImageMetadataVersion"] = "1.0"


def _image_with_metadata(image: dict[str, Any], internal: dict[str, Any]) -> None:
    """InternalImageWithMetadata: raises on what the apiserver reports as an error."""
    annotations = image.setdefault("metadata", {}).setdefault("annotations", {})
    layers = image.get("dockerImageLayers") or []
    media_type = image.get("dockerImageManifestMediaType") or ""
    if layers:  # reorderImageLayers
        order = annotations.get(_ANN_LAYERS_ORDER)
        if order is None:
            if media_type == DOCKER_SCHEMA1 or media_type.startswith(
                "application/vnd.docker.distribution.manifest.v1"
            ):
                order = "ascending"
            elif media_type in (DOCKER_SCHEMA2, OCI_MANIFEST):
                order = "descending"
        if order is not None:
            if order == "descending":
                layers.reverse()
            annotations[_ANN_LAYERS_ORDER] = "ascending"
    if layers and int(internal.get("Size") or 0) > 0 and media_type:
        return
    manifest = json.loads(image["dockerImageManifest"])
    version = manifest.get("schemaVersion")
    if manifest.get("mediaType") in _LIST_TYPES or "manifests" in manifest:
        # A list has no config nor layers: openshift-apiserver gives it its own digest as Id
        # and its own clock as Created (observed on the real server, docs/real-api.md).
        internal.update({"Id": image["metadata"]["name"], "Created": rfc3339()})
        internal.setdefault("ContainerConfig", {})
        return
    if not layers:  # fillImageLayers
        if version == 1:
            history = manifest.get("history") or []
            fs_layers = manifest.get("fsLayers") or []
            if len(history) != len(fs_layers):
                raise ValueError("mismatched history and fslayer cardinality")
            for entry, fs_layer in zip(reversed(history), reversed(fs_layers), strict=True):
                try:
                    size = int(json.loads(entry["v1Compatibility"]).get("Size") or 0)
                except (ValueError, KeyError, TypeError):
                    size = 0
                layers.append(
                    {"name": fs_layer["blobSum"], "size": size, "mediaType": _SCHEMA1_LAYER}
                )
        elif version == 2:
            layers.extend(
                {"name": x["digest"], "size": x["size"], "mediaType": x.get("mediaType", "")}
                for x in manifest.get("layers") or []
            )
        else:
            raise ValueError(f"unrecognized manifest schema {version}")
        image["dockerImageLayers"] = layers
        annotations[_ANN_LAYERS_ORDER] = "ascending"
    if version == 1:
        image["dockerImageManifestMediaType"] = DOCKER_SCHEMA1
        history = manifest.get("history") or []
        if not history:
            raise ValueError("schema 1 manifest without history")
        v1 = json.loads(history[0]["v1Compatibility"])
        internal.update(
            {
                "Id": v1.get("id", ""),
                "Parent": v1.get("parent", ""),
                "Created": v1.get("created"),
                "Architecture": v1.get("architecture", ""),
                "Config": v1.get("config"),
                "ContainerConfig": v1.get("container_config") or {},
            }
        )
        internal["Size"] = 0
    elif version == 2:
        if manifest.get("mediaType"):
            image["dockerImageManifestMediaType"] = manifest["mediaType"]
        elif not media_type:
            image["dockerImageManifestMediaType"] = DOCKER_SCHEMA2
        config_text = image.get("dockerImageConfig") or ""
        if not config_text:
            raise ValueError("dockerImageConfig must not be empty")
        config = json.loads(config_text)
        # The stored DockerImage 1.0 has no Os nor Variant (observed on the real server).
        internal.update(
            {
                "Created": config.get("created"),
                "Architecture": config.get("architecture", ""),
                "Author": config.get("author", ""),
                "DockerVersion": config.get("docker_version", ""),
                "Config": config.get("config"),
                "ContainerConfig": config.get("container_config") or {},
            }
        )
        internal["Id"] = manifest["config"]["digest"]
        internal["Size"] = len(config_text.encode())
    else:
        raise ValueError(f"unrecognized manifest schema {version}")
    seen = {internal["Id"]} if version == 2 else set()
    for layer in layers:
        if layer["name"] not in seen:
            seen.add(layer["name"])
            internal["Size"] += int(layer.get("size") or 0)


def _config_of(image: Mapping[str, Any]) -> str | None:
    """The config digest the apiserver's layer index knows: Docker schema 2 only, and only
    from ``dockerImageMetadata.Id`` (an Image stored without metadata has none)."""
    if image.get("dockerImageManifestMediaType") != DOCKER_SCHEMA2:
        return None
    metadata = image.get("dockerImageMetadata")
    if not isinstance(metadata, dict):
        return None
    return metadata.get("Id") or None


# --------------------------------------------------------------------------------------------
# Request bodies: JSON or Kubernetes protobuf (client-go sends built-in kinds as protobuf)
# --------------------------------------------------------------------------------------------

_PROTOBUF_MAGIC = b"k8s\x00"


def _decode_body(raw: bytes, content_type: str) -> dict[str, Any]:
    """An access or subject review as a JSON-shaped dict, from JSON or from protobuf."""
    if not raw:
        return {}
    if raw.startswith(_PROTOBUF_MAGIC) or "protobuf" in content_type:
        return _review_from_protobuf(raw)
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _bad_request(f"the body of the request was in an unknown format: {exc}") from None
    if not isinstance(body, dict):
        raise _bad_request("the body of the request was in an unknown format")
    return body


def _protobuf_fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of one protobuf message; length-delimited values as bytes."""

    def varint(pos: int) -> tuple[int, int]:
        shift = value = 0
        while True:
            if pos >= len(data):
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos

    pos = 0
    while pos < len(data):
        key, pos = varint(pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(pos)
            yield number, value
        elif wire == 2:
            length, pos = varint(pos)
            yield number, data[pos : pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _review_from_protobuf(raw: bytes) -> dict[str, Any]:
    """Decode a ``k8s\\x00`` envelope (runtime.Unknown) holding a SelfSubjectReview,
    SelfSubjectAccessReview or SubjectAccessReview into the fields the server reads."""
    if not raw.startswith(_PROTOBUF_MAGIC):
        raise _bad_request("protobuf body without the k8s envelope")
    try:
        kind, inner = "", b""
        for number, value in _protobuf_fields(raw[len(_PROTOBUF_MAGIC) :]):
            if number == 1 and isinstance(value, bytes):  # TypeMeta
                for n2, v2 in _protobuf_fields(value):
                    if n2 == 2 and isinstance(v2, bytes):
                        kind = v2.decode()
            elif number == 2 and isinstance(value, bytes):
                inner = value
        spec: dict[str, Any] = {}
        for number, value in _protobuf_fields(inner):
            if number != 2 or not isinstance(value, bytes):
                continue
            groups: list[str] = []
            for n2, v2 in _protobuf_fields(value):
                if not isinstance(v2, bytes):
                    continue
                if n2 == 1:  # resourceAttributes
                    names = {1: "namespace", 2: "verb", 3: "group", 4: "version"}
                    names |= {5: "resource", 6: "subresource", 7: "name"}
                    spec["resourceAttributes"] = {
                        names[n3]: v3.decode()
                        for n3, v3 in _protobuf_fields(v2)
                        if n3 in names and isinstance(v3, bytes)
                    }
                elif n2 == 3 and kind == "SubjectAccessReview":
                    spec["user"] = v2.decode()
                elif n2 == 4 and kind == "SubjectAccessReview":
                    groups.append(v2.decode())
            if groups:
                spec["groups"] = groups
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad_request(f"the body of the request was in an unknown format: {exc}") from None
    return {"kind": kind, "spec": spec}


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files), made with ``cryptography`` or,
    without it, the ``openssl`` command."""
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                "/CN=openshift-api-test", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(key_path), "-out", str(cert_path),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return cert_path, key_path
    import ipaddress
    from datetime import timedelta

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openshift-api-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _add_tag_event(stream: dict[str, Any], tag: str, event: dict[str, Any]) -> bool:
    """AddTagEventToImageStream from openshift/api: True when the stream changed."""
    tags: list[dict[str, Any]] = stream.setdefault("status", {}).setdefault("tags", [])
    entry = next((t for t in tags if t.get("tag") == tag), None)
    if entry is None or not entry.get("items"):
        if entry is None:
            tags.append({"tag": tag, "items": [event]})
            tags.sort(key=lambda t: str(t.get("tag", "")))
        else:
            entry["items"] = [event]
        return True
    previous = entry["items"][0]
    same_ref = previous.get("dockerImageReference") == event["dockerImageReference"]
    same_image = previous.get("image") == event["image"]
    same_gen = previous.get("generation") == event["generation"]
    if same_ref and same_image and same_gen:
        return False
    if same_ref and same_image:
        pass
    elif same_ref:
        previous["image"] = event["image"]
    elif same_image:
        previous["dockerImageReference"] = event["dockerImageReference"]
    else:
        entry.pop("conditions", None)
        entry["items"].insert(0, event)
        return True
    previous["generation"] = event["generation"]
    entry.pop("conditions", None)
    return True


# --------------------------------------------------------------------------------------------
# pytest fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
def openshift_api() -> Iterator[OpenShiftAPIServer]:
    """A fresh, started image API per test (a few milliseconds to start)."""
    server = OpenShiftAPIServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def openshift_kubeconfig(openshift_api: OpenShiftAPIServer, tmp_path: Path) -> Path:
    """A kubeconfig file pointing at ``openshift_api`` (context ``test``)."""
    return openshift_api.kubeconfig(tmp_path / "kubeconfig")


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A JSON merge of ``patch`` into ``target`` (what a strategic merge does for maps)."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value

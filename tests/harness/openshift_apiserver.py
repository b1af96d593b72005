"""The real OpenShift API (etcd + kube-apiserver + openshift-apiserver) in the test bench.

Why: ``tests/harness/openshift_api.py`` is our own reading of what the API does. A cluster runs
openshift-apiserver behind kube-apiserver on etcd; ``../shared/openshift-apiserver/start.sh``
brings up exactly that (built from public source) in 10-17 s and ~750 MiB, so it is started
once per session and every test that asks for it gets the same server, emptied after it.

The server folder (holding ``start.sh``, ``stop.sh``, ``bin/``, ``crds/``) comes from
``$REGPRUNE_OPENSHIFT_APISERVER`` or ``../shared/openshift-apiserver``; ``oc`` (which the
script and :meth:`RealOpenShiftAPI.oc` use) from ``$REGPRUNE_OC`` or ``../shared/openshift-oc``;
etcd from Debian's ``etcd-server``. Tests skip, saying how to build what is missing, without
them. Loaded as a pytest plugin (see ``tests/conftest.py``).

Use:

- fixture ``openshift_apiserver`` (function scope): the session's :class:`RealOpenShiftAPI`,
  emptied after the test (every Image, every ImageStream, every workload, and every object the
  helpers created; namespaces stay, as nothing finalizes a deleted one without a controller
  manager). Tests may use fixed namespace names.
- fixture ``openshift_apiserver_session`` (session scope): the same object without the
  emptying, for module-scoped fixtures; call :meth:`RealOpenShiftAPI.reset` around them.
- helpers named as :class:`tests.harness.openshift_api.OpenShiftAPIServer` names them
(``add_image``,
  ``add_imagestream``, ``images``, ``imagestream``, ``delete_image``, ``kubeconfig``,
  ``api_client``, ``dump_list``, ``token``, ``url``, ``registry_host``, ``tls``), so a test
  moves over with few edits; and what only a real cluster has: :meth:`~RealOpenShiftAPI.oc`,
  :meth:`~RealOpenShiftAPI.namespace`, :meth:`~RealOpenShiftAPI.map_image` (an
  ImageStreamMapping, what a push creates), :meth:`~RealOpenShiftAPI.set_tags` (the status
  subresource), :meth:`~RealOpenShiftAPI.create` (any object, e.g. a workload) and
  :meth:`~RealOpenShiftAPI.rbac_token` (a ServiceAccount token with exactly the grants of
  ``deployments/rbac/*.yaml`` applied by ``oc apply``, optionally minus some).

What differs from the test server (see ``docs/real-api.md``): ``creationTimestamp`` is always
the server's (``created`` only dates ``dockerImageMetadata.Created`` and tag events), the
registry host of stream repositories is fixed by ``start.sh``
(``image-registry.openshift-image-registry.svc:5000``), there is no fault injection and no
request log.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote, urlencode

import pytest
import yaml

from tests.harness.openshift_api import API_VERSION, make_image, rfc3339

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = [
    "OC_ENV",
    "OPENSHIFT_APISERVER_BUILD",
    "OPENSHIFT_APISERVER_ENV",
    "RBAC_DIR",
    "REGISTRY_HOST",
    "APIError",
    "RealOpenShiftAPI",
    "oc_binary",
    "openshift_apiserver_dir",
    "require_oc",
    "require_openshift_apiserver",
]

OPENSHIFT_APISERVER_ENV = "REGPRUNE_OPENSHIFT_APISERVER"
OC_ENV = "REGPRUNE_OC"
#: Set (CI does, .ci/run): a missing server, etcd, oc, OpenShift's registry or skopeo fails the
#: tests instead of skipping them.
REQUIRED_ENV = "REGPRUNE_REAL_API_REQUIRED"
_SHARED = (Path(__file__).resolve().parents[3] / "shared", Path("/work/shared"))
#: How ``../shared/openshift-apiserver/README.md`` builds the two servers (each from its
#: source with its ``vendor/`` folder; Go 1.27.3, ``GOTOOLCHAIN=local``).
OPENSHIFT_APISERVER_BUILD = (
    'CGO_ENABLED=0 GOFLAGS=-mod=vendor go build -trimpath -ldflags "-s -w" ./cmd/kube-apiserver '
    "(openshift/kubernetes as carried in openshift/microshift release-4.21) and "
    "./cmd/openshift-apiserver (openshift/openshift-apiserver), into bin/ next to start.sh; "
    "etcd: apt-get install etcd-server"
)
OC_BUILD = (
    "GOTOOLCHAIN=local GOFLAGS=-mod=vendor CGO_ENABLED=0 go build -trimpath -tags "
    '"include_gcs include_oss containers_image_openpgp" -ldflags "-s -w" -o oc ./cmd/oc '
    "(github.com/openshift/oc)"
)
#: The host:port start.sh configures as openshift-apiserver's internalRegistryHostname: the
#: prefix of every ImageStream's ``status.dockerImageRepository``.
REGISTRY_HOST = "image-registry.openshift-image-registry.svc:5000"
RBAC_DIR = Path(__file__).resolve().parents[2] / "deployments" / "rbac"
START_TIMEOUT = 300.0
#: How long RBAC changes may take to reach the authorizers (informers): seconds.
RBAC_SETTLE_TIMEOUT = 30.0

#: kind -> (path prefix, plural, namespaced) for the objects :meth:`RealOpenShiftAPI.create`
#: makes and :meth:`RealOpenShiftAPI.reset` empties.
KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("api/v1", "namespaces", False),
    "ServiceAccount": ("api/v1", "serviceaccounts", True),
    "Secret": ("api/v1", "secrets", True),
    "Pod": ("api/v1", "pods", True),
    "ReplicationController": ("api/v1", "replicationcontrollers", True),
    "LimitRange": ("api/v1", "limitranges", True),
    "ReplicaSet": ("apis/apps/v1", "replicasets", True),
    "Deployment": ("apis/apps/v1", "deployments", True),
    "DaemonSet": ("apis/apps/v1", "daemonsets", True),
    "StatefulSet": ("apis/apps/v1", "statefulsets", True),
    "Job": ("apis/batch/v1", "jobs", True),
    "CronJob": ("apis/batch/v1", "cronjobs", True),
    "DeploymentConfig": ("apis/apps.openshift.io/v1", "deploymentconfigs", True),
    "Build": ("apis/build.openshift.io/v1", "builds", True),
    "BuildConfig": ("apis/build.openshift.io/v1", "buildconfigs", True),
    "Image": ("apis/image.openshift.io/v1", "images", False),
    "ImageStream": ("apis/image.openshift.io/v1", "imagestreams", True),
    "ClusterRole": ("apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
}
#: Delete at once: no grace period, and dependents in the background, since the "orphan"
#: finalizer (the default of a ReplicationController) waits for a garbage collector, and there
#: is no controller manager here.
DELETE_NOW = {
    "kind": "DeleteOptions",
    "apiVersion": "v1",
    "gracePeriodSeconds": 0,
    "propagationPolicy": "Background",
}
#: What prune-images lists; :meth:`RealOpenShiftAPI.reset` deletes every one of them.
WORKLOAD_KINDS = (
    "Pod",
    "ReplicationController",
    "LimitRange",
    "ReplicaSet",
    "Deployment",
    "DaemonSet",
    "StatefulSet",
    "Job",
    "CronJob",
    "DeploymentConfig",
    "Build",
    "BuildConfig",
)


# --------------------------------------------------------------------------------------------
# Finding the binaries
# --------------------------------------------------------------------------------------------


def openshift_apiserver_dir() -> Path | None:
    """The folder holding ``start.sh`` and ``bin/``: ``$REGPRUNE_OPENSHIFT_APISERVER``, else
    ``../shared/openshift-apiserver``."""
    configured = os.environ.get(OPENSHIFT_APISERVER_ENV)
    candidates = [Path(configured)] if configured else [s / "openshift-apiserver" for s in _SHARED]
    for folder in candidates:
        needed = [folder / "start.sh", folder / "stop.sh"]
        needed += [folder / "bin" / name for name in ("kube-apiserver", "openshift-apiserver")]
        if all(path.is_file() and os.access(path, os.X_OK) for path in needed):
            return folder
    return None


def oc_binary() -> Path | None:
    """``oc``: ``$REGPRUNE_OC``, else ``../shared/openshift-oc/oc``."""
    configured = os.environ.get(OC_ENV)
    candidates = [Path(configured)] if configured else [s / "openshift-oc" / "oc" for s in _SHARED]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _missing(message: str) -> NoReturn:
    """Skip, or fail where the real API is required (CI)."""
    if os.environ.get(REQUIRED_ENV, "") not in ("", "0"):
        pytest.fail(f"{message} (${REQUIRED_ENV} is set: these tests must run here)")
    pytest.skip(message)


def require_oc() -> Path:
    """``oc``, or skip saying how to build it."""
    found = oc_binary()
    if found is None:
        shared = (str(s / "openshift-oc" / "oc") for s in _SHARED)
        where = os.environ.get(OC_ENV) or " or ".join(shared)
        _missing(f"oc is missing (looked at {where}; set ${OC_ENV}). Build it: {OC_BUILD}")
    return found


def _etcd() -> str | None:
    return shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)


def require_openshift_apiserver() -> Path:
    """The server folder, or skip the test saying what is missing and how to build it."""
    folder = openshift_apiserver_dir()
    if folder is None:
        where = os.environ.get(OPENSHIFT_APISERVER_ENV) or " or ".join(
            str(s / "openshift-apiserver") for s in _SHARED
        )
        _missing(
            f"the OpenShift API server is missing (looked for start.sh and bin/ at {where}; set "
            f"${OPENSHIFT_APISERVER_ENV}). Build it as ../shared/openshift-apiserver/README.md "
            f"says: {OPENSHIFT_APISERVER_BUILD}"
        )
    if _etcd() is None:
        _missing("etcd is missing: apt-get install etcd-server")
    require_oc()
    return folder


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now, all different (held open together while chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class APIError(Exception):
    """A request the API answered with an error ``Status``."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        self.reason = body.get("reason") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: {status} {message}")


class RealOpenShiftAPI:
    """etcd + kube-apiserver + openshift-apiserver started by ``start.sh`` in ``data``, with
    the helpers tests need. ``tls`` is always True; the admin token is in group
    ``system:masters``."""

    tls = True
    #: The server always completes Images as a cluster does (the test server's option).
    image_strategy = True
    registry_host = REGISTRY_HOST

    def __init__(self, home: Path, data: Path, *, oc: Path) -> None:
        self.home = Path(home)
        self.data = Path(data)
        self.oc_path = Path(oc)
        self.token = ""
        self.alice_token = ""
        self.url = ""
        self._ssl: ssl.SSLContext | None = None
        self._tracked: list[tuple[str, str | None, str]] = []  # (kind, namespace, name)
        self._users: dict[str, str] = {}  # add_token's user -> token (kept across resets)
        self._rbac_serial = 0
        self.etcd_port = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> RealOpenShiftAPI:
        """Run ``start.sh`` on free ports (once more on other ports if it fails)."""
        last = ""
        for _attempt in range(2):
            kas, oas, etcd, peer = _free_ports(4)
            env = {
                **os.environ,
                "KAS_PORT": str(kas),
                "OAS_PORT": str(oas),
                "ETCD_PORT": str(etcd),
                "ETCD_PEER_PORT": str(peer),
                "KUBECTL": str(self.oc_path),
            }
            etcd_bin = _etcd()
            if etcd_bin:
                env["ETCD_BIN"] = etcd_bin
            for name in ("KUBECONFIG", "OSAPI_GROUPS"):
                env.pop(name, None)
            started = subprocess.run(
                [str(self.home / "start.sh"), str(self.data)],
                capture_output=True,
                text=True,
                env=env,
                timeout=START_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
            if started.returncode == 0:
                self.url = f"https://127.0.0.1:{kas}"
                self.etcd_port = etcd
                break
            last = started.stderr[-3000:] + self._log_tail()
            self.stop()
        else:
            raise RuntimeError(f"start.sh failed twice: {last}")
        self.token = self._token_of("admin")
        self.alice_token = self._token_of("alice")
        self._ssl = ssl.create_default_context(cafile=str(self.ca_path))
        return self

    def stop(self) -> None:
        """``stop.sh``: stops exactly the processes ``start.sh`` recorded."""
        if self.data.exists():
            subprocess.run(
                [str(self.home / "stop.sh"), str(self.data)],
                capture_output=True,
                timeout=120,
                stdin=subprocess.DEVNULL,
            )

    def _log_tail(self) -> str:
        logs = sorted((self.data / "logs").glob("*.log")) if self.data.exists() else []
        tails = (f"\n--- {log.name}\n{log.read_text(errors='replace')[-1500:]}" for log in logs)
        return "".join(tails)

    def _token_of(self, user: str) -> str:
        for line in (self.data / "pki" / "tokens.csv").read_text().splitlines():
            fields = line.split(",")
            if len(fields) > 1 and fields[1] == user:
                return fields[0]
        raise RuntimeError(f"no token for {user} in tokens.csv")

    # ---- client configuration ------------------------------------------------------------------

    @property
    def ca_path(self) -> Path:
        """The CA that signed the servers' certificates."""
        return self.data / "pki" / "ca.crt"

    @property
    def ca_pem(self) -> bytes:
        return self.ca_path.read_bytes()

    @property
    def admin_kubeconfig(self) -> Path:
        """cluster-admin (a token in group ``system:masters``), written by start.sh."""
        return self.data / "admin.kubeconfig"

    @property
    def alice_kubeconfig(self) -> Path:
        """An ordinary user ``alice`` (group ``developers``): 403 until RBAC grants."""
        return self.data / "alice.kubeconfig"

    def kubeconfig_dict(self, namespace: str = "default", token: str | None = None) -> dict:
        """A kubeconfig with the CA inline and a bearer token (the admin's by default)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "real",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "user", "user": {"token": token or self.token}}],
            "contexts": [
                {
                    "name": "real",
                    "context": {"cluster": "real", "user": "user", "namespace": namespace},
                }
            ],
            "current-context": "real",
            "preferences": {},
        }

    def kubeconfig(
        self, path: str | os.PathLike[str], namespace: str = "default", token: str | None = None
    ) -> Path:
        """Write a kubeconfig (the admin's token unless ``token``); returns its path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(self.kubeconfig_dict(namespace, token), sort_keys=False))
        target.chmod(0o600)
        return target

    def api_client(self, token: str | None = None) -> ApiClient:
        """A ``kubernetes.client.ApiClient`` set up from a kubeconfig, as production code is."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config_from_dict(
            self.kubeconfig_dict(token=token),
            client_configuration=configuration,
            persist_config=False,
        )
        return client.ApiClient(configuration)

    def oc(
        self,
        *args: str,
        kubeconfig: str | os.PathLike[str] | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``oc`` (the admin's kubeconfig unless ``kubeconfig``); ``check`` raises on a
        non-zero exit, with its stderr."""
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
        env["KUBECONFIG"] = str(kubeconfig or self.admin_kubeconfig)
        done = subprocess.run(
            [str(self.oc_path), *args],
            capture_output=True,
            text=True,
            input=input,
            env=env,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"oc {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    # ---- REST ----------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
        token: str | None = None,
    ) -> Any:
        """One JSON request (``path`` from the root, e.g. ``/api/v1/namespaces``); the decoded
        answer, or :class:`APIError` with the Status the server sent."""
        url = self.url + path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60, context=self._ssl) as answer:
                raw = answer.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = raw.decode(errors="replace")
            raise APIError(method, path, exc.code, detail) from None
        return json.loads(raw) if raw else None

    @staticmethod
    def path_of(kind: str, namespace: str | None = None, name: str | None = None) -> str:
        """The URL path of a kind's collection (in ``namespace``) or of one object."""
        prefix, plural, namespaced = KINDS[kind]
        path = f"/{prefix}"
        if namespaced and namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{plural}"
        return path + (f"/{quote(name, safe=':')}" if name else "")

    def list(self, kind: str, namespace: str | None = None, **query: Any) -> list[dict]:
        """Every object of ``kind`` (in ``namespace``, else cluster-wide), all pages."""
        items: list[dict] = []
        params: dict[str, Any] = {"limit": 500, **query}
        while True:
            page = self.request("GET", self.path_of(kind, namespace), query=params)
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params["continue"] = token

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """One object, or None when the server has none of that name."""
        try:
            return self.request("GET", self.path_of(kind, namespace, name))
        except APIError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, obj: Mapping[str, Any], *, track: bool = True) -> dict[str, Any]:
        """Create any object of :data:`KINDS` (its ``kind`` says where); it is deleted by
        :meth:`reset` unless ``track`` is False. Its namespace is made if missing."""
        kind = obj["kind"]
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") if KINDS[kind][2] else None
        if namespace:
            self.namespace(namespace)
        created = self.request("POST", self.path_of(kind, namespace), dict(obj))
        if track:
            self._tracked.append((kind, namespace, created["metadata"]["name"]))
        return created

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete one object now (no grace period); False when there was none."""
        try:
            self.request("DELETE", self.path_of(kind, namespace, name), DELETE_NOW)
        except APIError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def set_status(
        self, kind: str, namespace: str | None, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge ``status`` into an object's status through its status subresource (what a
        kubelet or controller would write; e.g. a Pod's ``phase``)."""
        obj = self.get(kind, name, namespace)
        if obj is None:
            raise KeyError(f"no {kind} {namespace}/{name}")
        obj["status"] = {**(obj.get("status") or {}), **status}
        return self.request("PUT", self.path_of(kind, namespace, name) + "/status", obj)

    def namespace(self, name: str) -> str:
        """Make namespace ``name`` and its ``default`` ServiceAccount (no controller manager
        makes it; a Pod is refused without it) unless they exist; returns the name."""
        if self.get("Namespace", name) is None:
            with contextlib.suppress(APIError):  # made meanwhile: fine
                self.request(
                    "POST",
                    "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                )
        if self.get("ServiceAccount", "default", name) is None:
            with contextlib.suppress(APIError):
                self.request(
                    "POST",
                    self.path_of("ServiceAccount", name),
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
                )
        return name

    # ---- Images and ImageStreams --------------------------------------------------------------

    def add_image(self, image: Mapping[str, Any] | None = None, /, **kwargs: Any) -> dict[str, Any]:
        """POST an Image; returns the stored object. Pass a full Image, or keyword arguments
        for :func:`tests.harness.openshift_api.make_image` (``created`` dates
        ``dockerImageMetadata`` only: the server sets ``creationTimestamp`` to now)."""
        if image is None:
            kwargs.setdefault("registry_host", self.registry_host)
            image = make_image(**kwargs)
        elif kwargs:
            raise TypeError("pass either an image dict or make_image keyword arguments")
        body = copy.deepcopy(dict(image))
        meta = body.setdefault("metadata", {})
        for key in ("creationTimestamp", "resourceVersion", "uid"):
            meta.pop(key, None)
        return self.request("POST", self.path_of("Image"), body)

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
        """Create an ImageStream and set its tag history through ``imagestreams/NAME/status``.

        ``tags`` maps tag -> digests, newest first (a dict item is the tag event itself);
        each event's ``created`` defaults to ``created`` (now if None), its reference to
        ``<registry_host>/<ns>/<name>@<digest>``. ``create_images`` adds missing Images.
        The stream's own ``creationTimestamp`` is the server's.
        """
        self.namespace(namespace)
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if annotations:
            metadata["annotations"] = dict(annotations)
        if labels:
            metadata["labels"] = dict(labels)
        self.request(
            "POST",
            self.path_of("ImageStream", namespace),
            {"apiVersion": API_VERSION, "kind": "ImageStream", "metadata": metadata},
        )
        if create_images:
            for items in (tags or {}).values():
                for item in items:
                    digest = item if isinstance(item, str) else item["image"]
                    if self.image(digest) is None:
                        self.add_image(
                            digest=digest, repository=f"{namespace}/{name}", created=created
                        )
        if tags:
            return self.set_tags(namespace, name, tags, created)
        return self.imagestream(namespace, name) or {}

    def set_tags(
        self,
        namespace: str,
        name: str,
        tags: Mapping[str, Sequence[str | Mapping[str, Any]]],
        created: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Replace the stream's tag history (``status.tags``) with ``tags`` (as in
        :meth:`add_imagestream`) through the status subresource; returns the stored stream."""
        stream = self.imagestream(namespace, name)
        if stream is None:
            raise KeyError(f"no imagestream {namespace}/{name}")
        stamp = rfc3339(created)
        repository = stream["status"].get("dockerImageRepository") or (
            f"{self.registry_host}/{namespace}/{name}"
        )
        status_tags = []
        for tag in sorted(tags):
            items = []
            for item in tags[tag]:
                event = {"image": item} if isinstance(item, str) else dict(item)
                event.setdefault("created", stamp)
                event.setdefault("dockerImageReference", f"{repository}@{event['image']}")
                event.setdefault("generation", stream["metadata"].get("generation", 1))
                items.append(event)
            status_tags.append({"tag": tag, "items": items})
        stream["status"]["tags"] = status_tags
        return self.request("PUT", self.path_of("ImageStream", namespace, name) + "/status", stream)

    def map_image(
        self, namespace: str, name: str, tag: str, image: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create an ImageStreamMapping (what a push by tag does): the Image is created if new
        and ``tag`` points at it; the stream must exist. Returns the stored Image."""
        body = {
            "apiVersion": API_VERSION,
            "kind": "ImageStreamMapping",
            "metadata": {"name": name, "namespace": namespace},
            "image": {k: v for k, v in image.items() if k not in ("apiVersion", "kind", "status")},
            "tag": tag,
        }
        body["image"]["metadata"] = {
            k: v
            for k, v in (image.get("metadata") or {}).items()
            if k not in ("creationTimestamp", "resourceVersion", "uid")
        }
        self.request(
            "POST", f"/apis/image.openshift.io/v1/namespaces/{namespace}/imagestreammappings", body
        )
        stored = self.image(body["image"]["metadata"]["name"])
        assert stored is not None
        return stored

    def images(self) -> list[dict[str, Any]]:
        """Every Image, sorted by name, each with its kind (as a GET answers it)."""
        items = ({"apiVersion": API_VERSION, "kind": "Image", **i} for i in self.list("Image"))
        return sorted(items, key=lambda i: i["metadata"]["name"])

    def imagestreams(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every ImageStream (of ``namespace``), in the server's order, with its kind."""
        kind = {"apiVersion": API_VERSION, "kind": "ImageStream"}
        return [{**kind, **s} for s in self.list("ImageStream", namespace)]

    def image(self, name: str) -> dict[str, Any] | None:
        return self.get("Image", name)

    def imagestream(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get("ImageStream", name, namespace)

    def delete_image(self, name: str) -> bool:
        return self.delete("Image", name)

    def delete_imagestream(self, namespace: str, name: str) -> bool:
        return self.delete("ImageStream", name, namespace)

    def dump_list(self) -> dict[str, Any]:
        """What ``oc get images,imagestreams -A -o json`` prints now."""
        return {
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": ""},
            "items": self.images() + self.imagestreams(),
        }

    # ---- identities ---------------------------------------------------------------------------

    def service_account_token(self, namespace: str, name: str, duration: str = "2h") -> str:
        """A TokenRequest token for ServiceAccount ``namespace/name`` (made if missing)."""
        self.namespace(namespace)
        if self.get("ServiceAccount", name, namespace) is None:
            self.create(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": namespace},
                }
            )
        return self.oc(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()

    def add_token(self, user: str, grants: Iterable[tuple[str, ...]] | None = None) -> str:
        """A token allowed everything (a ServiceAccount named ``user`` in namespace
        ``bench-users``, bound to ``cluster-admin``), as the test server's ``add_token(user)``
        gives; kept for the session. Restricted grants are RBAC here: use :meth:`rbac_token`."""
        if grants is not None:
            raise NotImplementedError("grant with RBAC on the real API: rbac_token()")
        if user not in self._users:
            namespace = self.namespace("bench-users")
            if self.get("ServiceAccount", user, namespace) is None:
                self.create(
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": user, "namespace": namespace},
                    },
                    track=False,
                )
                self.create(
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "ClusterRoleBinding",
                        "metadata": {"name": f"bench-users-{user}"},
                        "roleRef": {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "ClusterRole",
                            "name": "cluster-admin",
                        },
                        "subjects": [
                            {"kind": "ServiceAccount", "name": user, "namespace": namespace}
                        ],
                    },
                    track=False,
                )
            token = self.oc("create", "token", user, "-n", namespace, "--duration=12h")
            self._users[user] = token.stdout.strip()
            self._wait_for_access(
                self._users[user], [("image.openshift.io", "images", "", "list", None, None)], []
            )
        return self._users[user]

    def token_with_rules(
        self, name: str, rules: list[dict[str, Any]], *, namespace: str | None = None
    ) -> str:
        """A token of ServiceAccount ``bench-users/<name>`` granted ``rules`` (RBAC rules as in a
        Role) in ``namespace`` (a Role) or cluster-wide (a ClusterRole); :meth:`reset` deletes
        them. Returns once the authorizer grants the first verb of every rule."""
        account = {"kind": "ServiceAccount", "name": name, "namespace": "bench-users"}
        role_kind, binding_kind = (
            ("Role", "RoleBinding") if namespace else ("ClusterRole", "ClusterRoleBinding")
        )
        meta: dict[str, Any] = {"name": f"bench-{name}"}
        if namespace:
            meta["namespace"] = self.namespace(namespace)
        rbac = "rbac.authorization.k8s.io"
        self.create(
            {"apiVersion": f"{rbac}/v1", "kind": role_kind, "metadata": meta, "rules": rules}
        )
        self.create(
            {
                "apiVersion": f"{rbac}/v1",
                "kind": binding_kind,
                "metadata": meta,
                "roleRef": {"apiGroup": rbac, "kind": role_kind, "name": meta["name"]},
                "subjects": [account],
            }
        )
        token = self.service_account_token("bench-users", name)
        granted = []
        for rule in rules:
            resource, _, sub = rule["resources"][0].partition("/")
            for object_name in rule.get("resourceNames") or [None]:
                granted.append(
                    (rule["apiGroups"][0], resource, sub, rule["verbs"][0], namespace, object_name)
                )
        self._wait_for_access(token, granted, [])
        return token

    def rbac_token(
        self,
        *,
        without: Iterable[str] = (),
        manifests: Path = RBAC_DIR,
        duration: str = "2h",
    ) -> str:
        """A token of the ServiceAccount the RBAC manifests bind, with exactly their grants.

        Without ``without``: ``oc apply -f deployments/rbac/`` as an operator would (the
        namespaces ``regprune`` and ``openshift-image-registry`` made first), then
        ``oc create token regprune -n regprune``. ``without`` names grants to leave out, as
        ``regprune.permissions.grant_label`` spells them (``"delete images.image.openshift.io"``):
        the manifests are then applied with those verbs removed, under names of their own (a
        ServiceAccount ``regprune-<n>`` and roles ``<name>-<n>``), so no authorizer cache
        answers for the full set. Returns once the API's authorizer gives exactly those grants;
        :meth:`reset` deletes it all.
        """
        removed = set(without)
        docs = [
            doc
            for path in sorted(Path(manifests).glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text())
            if doc
        ]
        account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]
        namespace, name = account["namespace"], account["name"]
        if removed:
            self._rbac_serial += 1
            suffix = f"-{self._rbac_serial}"
            name += suffix
            for doc in docs:
                meta = doc["metadata"]
                if doc["kind"] == "ServiceAccount":
                    meta["name"] = name
                    continue
                meta["name"] += suffix
                if "roleRef" in doc:
                    doc["roleRef"]["name"] += suffix
                    for subject in doc["subjects"]:
                        subject["name"] = name
                for rule in doc.get("rules", []):
                    rule["verbs"] = [
                        verb
                        for verb in rule["verbs"]
                        if not any(
                            _label(group, resource, verb) in removed
                            for group in rule["apiGroups"]
                            for resource in rule["resources"]
                        )
                    ]
                doc["rules"] = [rule for rule in doc.get("rules", []) if rule["verbs"]]
            unknown = removed - {
                _label(group, resource, verb)
                for doc in _rbac_docs(manifests)
                for rule in doc.get("rules", [])
                for group in rule["apiGroups"]
                for resource in rule["resources"]
                for verb in rule["verbs"]
            }
            if unknown:
                raise ValueError(f"no such grant in {manifests}: {sorted(unknown)}")
        for doc in docs:
            if doc.get("metadata", {}).get("namespace"):
                self.namespace(doc["metadata"]["namespace"])
        with tempfile.TemporaryDirectory(prefix="rbac-") as folder:
            applied = Path(manifests)
            if removed:
                applied = Path(folder) / "rbac.yaml"
                applied.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            self.oc("apply", "-f", str(applied))
        for doc in docs:
            self._tracked.append(
                (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
            )
        token = self.oc(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        granted, denied = [], []
        for doc in _rbac_docs(manifests):
            for rule in doc.get("rules", []):
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            plain, _, sub = resource.partition("/")
                            names = rule.get("resourceNames") or [None]
                            for object_name in names:
                                entry = (
                                    group,
                                    plain,
                                    sub,
                                    verb,
                                    doc["metadata"].get("namespace"),
                                    object_name,
                                )
                                if _label(group, resource, verb) in removed:
                                    denied.append(entry)
                                else:
                                    granted.append(entry)
        self._wait_for_access(token, granted, denied)
        return token

    def rbac_kubeconfig(self, path: str | os.PathLike[str], **kwargs: Any) -> Path:
        """A kubeconfig for :meth:`rbac_token` (same arguments)."""
        return self.kubeconfig(path, token=self.rbac_token(**kwargs))

    def allowed(
        self,
        token: str,
        group: str,
        resource: str,
        verb: str,
        *,
        subresource: str = "",
        namespace: str | None = None,
        name: str | None = None,
    ) -> bool:
        """What a SelfSubjectAccessReview answers for ``token``."""
        attributes: dict[str, Any] = {"group": group, "resource": resource, "verb": verb}
        if subresource:
            attributes["subresource"] = subresource
        if namespace:
            attributes["namespace"] = namespace
        if name:
            attributes["name"] = name
        review = self.request(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            },
            token=token,
        )
        return bool(review["status"].get("allowed"))

    def _wait_for_access(
        self,
        token: str,
        granted: list[tuple[str, str, str, str, str | None, str | None]],
        denied: list[tuple[str, str, str, str, str | None, str | None]],
    ) -> None:
        """Poll access reviews until the authorizer (fed by informers) agrees with the RBAC
        objects just written: every ``granted`` allowed, every ``denied`` not."""
        deadline = time.monotonic() + RBAC_SETTLE_TIMEOUT
        pending = [(entry, True) for entry in granted] + [(entry, False) for entry in denied]
        while True:
            pending = [
                (entry, want)
                for entry, want in pending
                if self.allowed(
                    token,
                    entry[0],
                    entry[1],
                    entry[3],
                    subresource=entry[2],
                    namespace=entry[4],
                    name=entry[5],
                )
                != want
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"RBAC did not settle in {RBAC_SETTLE_TIMEOUT} s: {pending}")
            time.sleep(0.2)  # polling the condition above, not a synchronising sleep

    # ---- etcd ---------------------------------------------------------------------------------

    def _etcd(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        """One call of etcd's v3 JSON gateway, with the client certificate start.sh made."""
        pki = self.data / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "etcd-client.crt"), str(pki / "etcd-client.key"))
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.etcd_port}/v3/{call}",
            data=json.dumps(body).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30, context=context) as answer:
            return json.loads(answer.read())

    def compact(self) -> int:
        """Compact etcd at its current revision (what kube-apiserver does every 5 minutes):
        a continue token of an older resourceVersion that no watch cache still holds then
        gets ``410 Expired``. Returns the revision."""
        revision = int(self._etcd("kv/range", {"key": "Lw=="})["header"]["revision"])
        self._etcd("kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    # ---- emptying between tests ---------------------------------------------------------------

    def reset(self) -> None:
        """Delete every Image, ImageStream and workload, and what the helpers created (RBAC,
        ServiceAccounts, ...), newest first. Namespaces stay (nothing would finalize them)."""
        for kind, namespace, name in reversed(self._tracked):
            if kind != "Namespace":
                self.delete(kind, name, namespace)
        self._tracked.clear()
        self.request("DELETE", self.path_of("Image"), DELETE_NOW)  # deletecollection
        for kind in ("ImageStream", *WORKLOAD_KINDS):
            namespaces = {obj["metadata"]["namespace"] for obj in self.list(kind)}
            for namespace in sorted(namespaces):
                if kind == "Pod":
                    for pod in self.list(kind, namespace):
                        self.delete(kind, pod["metadata"]["name"], namespace)
                else:
                    self.request("DELETE", self.path_of(kind, namespace), DELETE_NOW)


def _label(group: str, resource: str, verb: str) -> str:
    """``verb resource.group`` as ``regprune.permissions.grant_label`` spells a grant."""
    return f"{verb} {resource}" + (f".{group}" if group else "")


def _rbac_docs(manifests: Path) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(Path(manifests).glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


# ---- what ran against it, in the terminal summary (CI's output shows they ran) ----------------

_USERS: set[str] = set()
_OUTCOMES: dict[str, int] = {}
_STARTED: list[float] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    _USERS.update(
        item.nodeid
        for item in session.items
        if "openshift_apiserver_session" in getattr(item, "fixturenames", ())
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid not in _USERS:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "error" if report.when == "setup" and report.failed else report.outcome
        _OUTCOMES[outcome] = _OUTCOMES.get(outcome, 0) + 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _USERS:
        return
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(_OUTCOMES.items())) or "none run"
    started = f"; started in {_STARTED[0]:.1f} s" if _STARTED else ""
    terminalreporter.write_line(
        f"real OpenShift API (tests/harness/openshift_apiserver.py): {len(_USERS)} tests selected, "
        f"{counts}{started}"
    )


@pytest.fixture(scope="session")
def openshift_apiserver_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RealOpenShiftAPI]:
    """The real API, started once for the session (skips with the build line when absent)."""
    home = require_openshift_apiserver()
    oc = require_oc()
    # start.sh wipes its data dir; a short path keeps etcd's unix sockets within limits.
    data = Path(tempfile.mkdtemp(prefix="osapi-", dir=tmp_path_factory.getbasetemp()))
    server = RealOpenShiftAPI(home, data, oc=oc)
    try:
        began = time.monotonic()
        server.start()
        _STARTED.append(time.monotonic() - began)
        yield server
    finally:
        server.stop()


@pytest.fixture
def openshift_apiserver(
    openshift_apiserver_session: RealOpenShiftAPI,
) -> Iterator[RealOpenShiftAPI]:
    """The session's real API, empty at the start of the test and emptied after it."""
    server = openshift_apiserver_session
    server.reset()
    try:
        yield server
    finally:
        server.reset()

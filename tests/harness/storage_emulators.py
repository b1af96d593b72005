"""Cloud storage emulators for the test bench: GCS, Azure Blob and OpenStack Swift.

Why: OpenShift's registry keeps its storage on GCS (Google Cloud), Azure Blob (ARO) and Swift
(OpenStack) as well as on S3 and volumes. Each backend has its own key form and its own
oddities (Azure blob names that start with ``/``, Swift's ``files/`` prefix and Dynamic Large
Objects), so tests need the real protocols, served locally:

- GCS: ``gcp-storage-emulator`` (PyPI), in memory; clients find it through
  ``STORAGE_EMULATOR_HOST``.
- Azure Blob: Azurite's ``azurite-blob`` (npm), with the well-known ``devstoreaccount1`` key.
- Swift: an all-in-one of Debian's ``swift-*`` servers (account, container, object, proxy with
  ``tempauth``, ``bulk``, ``dlo``), one loopback device, rings built in a temp folder.

Each emulator starts once per session, only when a test asks for its fixture, and the fixture
skips with what to install when the emulator is missing (``.ci/run`` installs all three).

:func:`copy_registry_tree` copies a tree a registry wrote on a folder into an emulator object by
object, in the key form that backend's registry driver writes. :func:`run_reference` runs
OpenShift's own registry binary (its drivers) on any storage section, to prove a copied tree
reads as the folder did.

Loaded as a pytest plugin (see ``tests/conftest.py``); the fixtures are at the end of the file.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal, Protocol

import pytest
import yaml

from tests.harness.local_http import LocalHTTPServer
from tests.harness.registry_bench import _OPENER, _stop_process, _wait_http, free_port

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "REFERENCE_BIN",
    "AzuriteEmulator",
    "CopiedTree",
    "GcsDownloadProxy",
    "GcsEmulator",
    "GcsPagingFront",
    "GcsPreconditionFront",
    "ReferenceServer",
    "StorageEmulator",
    "SwiftAllInOne",
    "copy_registry_tree",
    "reference_listing",
    "run_reference",
    "uploaded_blobs",
]

#: Everything a registry stores lives under this path of its storage root.
V2 = "docker/registry/v2"

#: Azurite's documented development account and key (public, the same in every Azurite).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

#: tempauth's test user of the Swift all-in-one: account ``test``, user ``tester``.
SWIFT_USER = "test:tester"
SWIFT_KEY = "testing"

#: OpenShift's registry (shared binary); ``OPENSHIFT_REGISTRY_BIN`` overrides the path.
REFERENCE_BIN = Path(
    os.environ.get(
        "OPENSHIFT_REGISTRY_BIN",
        str(Path(__file__).resolve().parents[3] / "shared/openshift-registry/dockerregistry"),
    )
)
if not REFERENCE_BIN.exists() and Path("/work/shared/openshift-registry/dockerregistry").exists():
    REFERENCE_BIN = Path("/work/shared/openshift-registry/dockerregistry")

#: How long an emulator may take to answer after its start (Swift's four servers import
#: eventlet and friends: seconds each on a loaded 2-core machine).
START_TIMEOUT = 90.0


class StorageEmulator(Protocol):
    """What every emulator object offers to tests."""

    kind: str
    endpoint: str

    @property
    def env(self) -> dict[str, str]: ...

    def create_bucket(self, name: str) -> str: ...

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]: ...

    def put_object(
        self, bucket: str, key: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None: ...

    def reference_storage(self, bucket: str) -> tuple[dict[str, Any], dict[str, str]]: ...


def _start(
    args: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start one emulator process, output to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
        )


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections; fail fast if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not listening on 127.0.0.1:{port} after {timeout}s")


# --------------------------------------------------------------------------- GCS


class GcsEmulator:
    """``gcp-storage-emulator start --in-memory`` on 127.0.0.1: the GCS JSON API.

    Python clients reach it through ``STORAGE_EMULATOR_HOST`` (or gcsfs' ``endpoint_url``) with
    anonymous credentials. gcsfs >= 2025 defaults to an "extended" filesystem that asks a gRPC
    control API for every bucket's layout, which the emulator does not serve: each call then
    waits 60 s. :attr:`env` turns that off (``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``) and
    :meth:`filesystem` uses ``gcsfs.core.GCSFileSystem`` directly.
    """

    kind = "gcs"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "gcs-emulator.log"
        self.keyfile = self.workdir / "service-account.json"
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing() -> str | None:
        """Why the emulator or its client cannot run here, or None."""
        for module, package in (
            ("gcp_storage_emulator", "gcp-storage-emulator"),
            ("gcsfs", "gcsfs"),
        ):
            if importlib.util.find_spec(module) is None:
                return f"{package} is not installed (pip install {package}; .ci/run installs it)"
        return None

    def start(self) -> GcsEmulator:
        """Start the emulator and wait for the bucket list to answer."""
        self._proc = _start(
            [
                sys.executable,
                "-m",
                "gcp_storage_emulator",
                "start",
                "--in-memory",
                "--quiet",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            self.log_path,
        )
        _wait_http(
            f"{self.endpoint}/storage/v1/b",
            {200},
            START_TIMEOUT,
            self._proc,
            "gcp-storage-emulator",
            self.log_path,
        )
        return self

    def stop(self) -> None:
        """Stop the emulator (its in-memory buckets are gone)."""
        _stop_process(self._proc)
        self._proc = None

    @property
    def env(self) -> dict[str, str]:
        """The variables a GCS client reads to use this emulator (no credentials needed)."""
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }

    @property
    def storage_options(self) -> dict[str, Any]:
        """gcsfs keyword arguments for this emulator."""
        return {"endpoint_url": self.endpoint, "token": "anon", "project": "regprune-test"}

    def filesystem(self) -> Any:
        """A fresh gcsfs filesystem on the emulator (no instance or listing cache)."""
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(
            **self.storage_options, skip_instance_cache=True, use_listings_cache=False
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name``; returns it."""
        self.filesystem().mkdir(name)
        return name

    def put_object(
        self, bucket: str, key: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Write one object (``headers`` are not supported on GCS here)."""
        if headers:
            raise ValueError("GCS objects take no extra headers here")
        self.filesystem().pipe_file(f"{bucket}/{key}", data)

    def put_objects(self, bucket: str, objects: dict[str, bytes]) -> None:
        """Write many objects: one media upload each on a kept-alive connection, opened again
        when the emulator closes it (about a millisecond an object; gcsfs' ``pipe`` took
        0.15 s to 0.8 s an object here)."""
        path = f"/upload/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o?uploadType=media"
        headers = {"Content-Type": "application/octet-stream"}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        slow: dict[str, bytes] = {}
        try:
            for key, data in objects.items():
                target = f"{path}&name={urllib.parse.quote(key, safe='')}"
                try:
                    conn.request("POST", target, body=data, headers=headers)
                    answer = conn.getresponse()
                    reply = answer.read()
                except (http.client.HTTPException, ConnectionError):
                    # the emulator drops some uploads (an empty body): gcsfs' way for those
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    slow[key] = data
                    continue
                if answer.status != 200:
                    raise RuntimeError(f"upload of {key} answered {answer.status}: {reply[:200]!r}")
        finally:
            conn.close()
        if slow:
            self.filesystem().pipe({f"{bucket}/{key}": data for key, data in slow.items()})

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, sorted, through gcsfs (a flat listing to the end)."""
        fs = self.filesystem()
        path = f"{bucket}/{prefix}".rstrip("/")
        found = fs.find(path) if fs.exists(path) else []
        return sorted(p[len(bucket) + 1 :] for p in found)

    def reference_storage(self, bucket: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The registry's ``storage.gcs`` section and environment for this emulator.

        The Go client needs some service-account key even against an emulator: a generated one.
        """
        if not self.keyfile.exists():
            self.keyfile.write_text(json.dumps(_service_account_json()))
        section = {"gcs": {"bucket": bucket, "keyfile": str(self.keyfile)}}
        return section, {"STORAGE_EMULATOR_HOST": f"127.0.0.1:{self.port}"}


def _service_account_json() -> dict[str, str]:
    """A syntactically valid service-account key with a fresh RSA key (trusted by nobody)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "regprune-test",
        "private_key_id": "0" * 40,
        "private_key": pem,
        "client_email": "registry@regprune-test.iam.gserviceaccount.com",
        "client_id": "1",
        "auth_uri": "http://127.0.0.1:1/auth",
        "token_uri": "http://127.0.0.1:1/token",
    }


# --------------------------------------------------------------------------- Azure


class AzuriteEmulator:
    """Azurite's blob service (``azurite-blob``) on 127.0.0.1, data in a temp folder.

    Clients use the well-known development account through a connection string
    (``AZURE_STORAGE_CONNECTION_STRING``) or account name + key + blob endpoint.
    """

    kind = "azure"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"
        self.log_path = self.workdir / "azurite.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        """Path of ``azurite-blob`` (``AZURITE_BLOB_BIN`` overrides), or None."""
        path = os.environ.get("AZURITE_BLOB_BIN") or shutil.which("azurite-blob")
        return path if path and Path(path).exists() else None

    @classmethod
    def missing(cls) -> str | None:
        """Why the emulator or its client cannot run here, or None."""
        if cls.binary() is None:
            return "azurite-blob not found (npm install -g azurite; .ci/run installs it)"
        for module, package in (("azure.storage.blob", "azure-storage-blob"), ("adlfs", "adlfs")):
            if importlib.util.find_spec(module.split(".")[0]) is None or (
                "." in module and importlib.util.find_spec(module) is None
            ):
                return f"{package} is not installed (pip install {package})"
        return None

    def start(self) -> AzuriteEmulator:
        """Start Azurite and wait until the blob endpoint answers (403 without a signature)."""
        binary = self.binary()
        assert binary is not None
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        self._proc = _start(
            [
                binary,
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--silent",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                str(data),
            ],
            self.log_path,
        )
        _wait_http(
            f"{self.endpoint}?comp=list",
            {200, 403},
            START_TIMEOUT,
            self._proc,
            "azurite-blob",
            self.log_path,
        )
        return self

    def stop(self) -> None:
        """Stop Azurite (its folder goes with the session's temp dir)."""
        _stop_process(self._proc)
        self._proc = None

    @property
    def connection_string(self) -> str:
        """The development account's connection string for this endpoint."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint};"
        )

    @property
    def env(self) -> dict[str, str]:
        """The variables Azure tools read: the connection string, and name + key for those
        that take the parts (with the endpoint, as Azurite is not ``*.blob.core.windows.net``)."""
        return {
            "AZURE_STORAGE_CONNECTION_STRING": self.connection_string,
            "AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY,
            "AZURE_STORAGE_BLOB_ENDPOINT": self.endpoint,
        }

    @property
    def storage_options(self) -> dict[str, Any]:
        """adlfs keyword arguments for this emulator."""
        return {"connection_string": self.connection_string}

    def service(self) -> Any:
        """An azure-storage-blob ``BlobServiceClient`` on the emulator."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def filesystem(self) -> Any:
        """A fresh adlfs filesystem on the emulator."""
        from adlfs import AzureBlobFileSystem

        return AzureBlobFileSystem(**self.storage_options, skip_instance_cache=True)

    def create_bucket(self, name: str) -> str:
        """Create container ``name`` (3-63 lowercase letters, digits, dashes); returns it."""
        self.service().create_container(name)
        return name

    def put_object(
        self, bucket: str, key: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Upload one block blob named exactly ``key`` (a leading ``/`` is kept)."""
        if headers:
            raise ValueError("Azure blobs take no extra headers here")
        self.service().get_container_client(bucket).upload_blob(key, data, overwrite=True)

    def put_objects(self, bucket: str, objects: dict[str, bytes]) -> None:
        """Upload many blobs (one client, one request each)."""
        container = self.service().get_container_client(bucket)
        for key, data in objects.items():
            container.upload_blob(key, data, overwrite=True)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every blob name under ``prefix``, sorted, as stored (flat listing, all pages)."""
        container = self.service().get_container_client(bucket)
        return sorted(b.name for b in container.list_blobs(name_starts_with=prefix or None))

    def reference_storage(self, bucket: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The registry's ``storage.azure`` section for this emulator (no root directory, as
        the operator sets it: names are ``/docker/registry/v2/...``)."""
        section = {
            "azure": {
                "accountname": AZURITE_ACCOUNT,
                "accountkey": AZURITE_KEY,
                "container": bucket,
                "serviceurl": self.endpoint,
            }
        }
        return section, {}


# --------------------------------------------------------------------------- Swift


_SWIFT_SERVERS = ("account", "container", "object")

_PROXY_PIPELINE = (
    "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempauth "
    "copy slo dlo proxy-logging proxy-server"
)


#: Run by Swift's interpreter: argv[1] the folder, argv[2] {"account": port, ...}.
_RING_SCRIPT = """
import json, os, sys
from swift.common.ring import RingBuilder
folder, ports = sys.argv[1], json.loads(sys.argv[2])
for name, port in ports.items():
    builder = RingBuilder(0, 1, 1)
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": port,
                     "device": "d1", "weight": 100})
    builder.rebalance()
    builder.save(os.path.join(folder, name + ".builder"))
    builder.get_ring().save(os.path.join(folder, name + ".ring.gz"))
"""


class SwiftAllInOne:
    """OpenStack Swift from Debian's packages, all on 127.0.0.1, started from a temp folder.

    One replica, one device (a plain folder: ``mount_check = false``), rings built with
    ``swift-ring-builder``, ``workers = 0`` (one process per server). The proxy pipeline has
    ``tempauth`` (user ``test:tester``, key ``testing``, auth v1 at ``/auth/v1.0``), ``bulk``
    (``?bulk-delete``), ``slo`` and ``dlo``. tempauth keeps its tokens in memcache: instead of a
    memcached server, ``tests/harness/swift_cache_standin.py`` puts an in-process dict there (the
    proxy is one process). Swift's servers read ``/etc/swift/swift.conf`` (hash prefix/suffix and
    storage policies) whatever their ``swift_dir``: Debian's ``swift`` package installs it.
    """

    kind = "swift"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.etc = self.workdir / "etc"
        self.devices = self.workdir / "node"
        self.logs = self.workdir / "log"
        self.proxy_port = free_port()
        self.ports = {name: free_port() for name in _SWIFT_SERVERS}
        self.endpoint = f"http://127.0.0.1:{self.proxy_port}"
        self.auth_url = f"{self.endpoint}/auth/v1.0"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @staticmethod
    def missing() -> str | None:
        """Why the all-in-one or its client cannot run here, or None."""
        needed = ["swift-ring-builder", "swift-proxy-server"] + [
            f"swift-{name}-server" for name in _SWIFT_SERVERS
        ]
        absent = [name for name in needed if shutil.which(name) is None]
        if absent:
            return (
                f"{', '.join(absent)} not found (apt-get install swift swift-proxy "
                "swift-account swift-container swift-object; .ci/run installs them)"
            )
        if not Path("/etc/swift/swift.conf").exists():
            return "/etc/swift/swift.conf is missing (Debian's swift package installs it)"
        if importlib.util.find_spec("swiftclient") is None:
            return "python-swiftclient is not installed (pip install python-swiftclient)"
        return None

    def _build_rings(self) -> None:
        """One ring per server, one device each, built in one run of Swift's own Python (nine
        ``swift-ring-builder`` calls cost half a minute on a loaded machine)."""
        builder = shutil.which("swift-ring-builder")
        assert builder is not None
        interpreter = Path(builder).read_text(errors="replace").splitlines()[0][2:].strip()
        devices = {name: self.ports[name] for name in _SWIFT_SERVERS}
        proc = subprocess.run(
            [*interpreter.split(), "-c", _RING_SCRIPT, str(self.etc), json.dumps(devices)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"building Swift rings failed: {proc.stdout}{proc.stderr}")

    def _write_config(self) -> None:
        """Rings and server configs in :attr:`etc`, the device folder in :attr:`devices`."""
        for folder in (self.etc, self.devices / "d1", self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        common = (
            "[DEFAULT]\n"
            "bind_ip = 127.0.0.1\n"
            "bind_port = {port}\n"
            "workers = 0\n"
            f"swift_dir = {self.etc}\n"
            f"devices = {self.devices}\n"
            "mount_check = false\n"
            "disable_fallocate = true\n"
            # No syslog here: a missing socket path makes Swift log to the console only.
            f"log_address = {self.logs / 'no-syslog'}\n"
            "log_level = WARNING\n"
        )
        self._build_rings()
        for name in _SWIFT_SERVERS:
            (self.etc / f"{name}-server.conf").write_text(
                common.format(port=self.ports[name])
                + f"[pipeline:main]\npipeline = {name}-server\n"
                + f"[app:{name}-server]\nuse = egg:swift#{name}\n"
            )
        filters = {
            "catch_errors": "catch_errors",
            "gatekeeper": "gatekeeper",
            "healthcheck": "healthcheck",
            "proxy-logging": "proxy_logging",
            "listing_formats": "listing_formats",
            "bulk": "bulk",
            "copy": "copy",
            "slo": "slo",
            "dlo": "dlo",
        }
        sections = "".join(
            f"[filter:{name}]\nuse = egg:swift#{egg}\n" for name, egg in filters.items()
        )
        (self.etc / "proxy-server.conf").write_text(
            common.format(port=self.proxy_port)
            + f"[pipeline:main]\npipeline = {_PROXY_PIPELINE}\n"
            + "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n"
            + "[filter:cache]\npaste.filter_factory = swift_cache_standin:filter_factory\n"
            + "[filter:tempauth]\nuse = egg:swift#tempauth\n"
            + f"user_{SWIFT_USER.replace(':', '_')} = {SWIFT_KEY} .admin\n"
            + sections
        )

    def start(self) -> SwiftAllInOne:
        """Write the config, start the four servers and wait until auth and a PUT work."""
        self._write_config()
        env = dict(os.environ)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent)
        for name in (*_SWIFT_SERVERS, "proxy"):
            self._procs[name] = _start(
                [f"swift-{name}-server", str(self.etc / f"{name}-server.conf")],
                self.logs / f"{name}.log",
                env=env,
                cwd=self.workdir,
            )
        for name in _SWIFT_SERVERS:
            _wait_port(self.ports[name], START_TIMEOUT, self._procs[name], f"swift-{name}-server")
        _wait_http(
            f"{self.endpoint}/healthcheck",
            {200},
            START_TIMEOUT,
            self._procs["proxy"],
            "swift-proxy-server",
            self.logs / "proxy.log",
        )
        self.connection().head_account()
        return self

    def stop(self) -> None:
        """Stop the four servers (the device folder stays with the temp dir)."""
        for name in ("proxy", *_SWIFT_SERVERS):
            _stop_process(self._procs.pop(name, None))

    def log(self) -> str:
        """The servers' console output, for assertion messages."""
        return "".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in self.logs.glob("*.log")
        )

    @property
    def env(self) -> dict[str, str]:
        """Auth v1 as the ``swift`` CLI and python-swiftclient read it (``ST_*``), and the
        ``OS_*`` names of an RC file (tempauth has no Keystone: v1 with the same values)."""
        return {
            "ST_AUTH": self.auth_url,
            "ST_USER": SWIFT_USER,
            "ST_KEY": SWIFT_KEY,
            "ST_AUTH_VERSION": "1.0",
            "OS_AUTH_URL": self.auth_url,
            "OS_USERNAME": SWIFT_USER,
            "OS_PASSWORD": SWIFT_KEY,
            "OS_AUTH_VERSION": "1",
        }

    def connection(self) -> Any:
        """A python-swiftclient connection (not thread-safe: one per thread)."""
        from swiftclient.client import Connection

        return Connection(authurl=self.auth_url, user=SWIFT_USER, key=SWIFT_KEY, retries=2)

    def create_bucket(self, name: str) -> str:
        """Create container ``name``; returns it."""
        self.connection().put_container(name)
        return name

    def put_object(
        self, bucket: str, key: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Write one object, with headers (``X-Object-Manifest`` makes a DLO manifest)."""
        self.connection().put_object(bucket, key, data, headers=headers or {})

    def put_objects(self, bucket: str, objects: dict[str, bytes]) -> None:
        """Write many objects on one connection."""
        conn = self.connection()
        for key, data in objects.items():
            conn.put_object(bucket, key, data)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object name under ``prefix``, sorted (markers followed to the end)."""
        _, objects = self.connection().get_container(
            bucket, prefix=prefix or None, full_listing=True
        )
        return sorted(obj["name"] for obj in objects)

    def reference_storage(self, bucket: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The registry's ``storage.swift`` section (auth v1 through tempauth)."""
        section = {
            "swift": {
                "authurl": self.auth_url,
                "username": SWIFT_USER,
                "password": SWIFT_KEY,
                "container": bucket,
                "authversion": 1,
            }
        }
        return section, {}


# --------------------------------------------------------------------------- copying


AzureForm = Literal["slash", "plain", "mixed"]


@dataclass
class CopiedTree:
    """What :func:`copy_registry_tree` wrote: key per file, and the DLOs' segments."""

    bucket: str
    #: ``docker/registry/v2/...`` path of each folder file -> its object key.
    keys: dict[str, str]
    #: DLO manifest key -> its segment keys (Swift only).
    segments: dict[str, list[str]] = field(default_factory=dict)
    #: DLO manifest key -> full size of its data.
    dlo_sizes: dict[str, int] = field(default_factory=dict)

    def all_keys(self) -> list[str]:
        """Every object key written (files and segments), sorted."""
        keys = set(self.keys.values())
        for segs in self.segments.values():
            keys.update(segs)
        return sorted(keys)


def folder_files(storage_root: Path | str) -> dict[str, Path]:
    """Files of a registry's folder storage by their ``docker/registry/v2/...`` path."""
    root = Path(storage_root)
    base = root / V2
    return {p.relative_to(root).as_posix(): p for p in sorted(base.rglob("*")) if p.is_file()}


def uploaded_blobs(storage_root: Path | str) -> list[str]:
    """``docker/registry/v2/blobs/.../data`` paths of the blobs that came through an upload
    (layers and configs: every blob that is not a manifest revision of some repository).

    On Swift, distribution's driver writes exactly these through its segment writer, so each is
    a DLO; manifests are written whole (``PutContent``) as plain objects. Pass this list as
    ``swift_dlo`` for a container shaped like one the registry filled itself.
    """
    files = folder_files(storage_root)
    manifests = {rel.split("/")[-2] for rel in files if "/_manifests/revisions/sha256/" in rel}
    return [
        rel
        for rel in files
        if rel.startswith(f"{V2}/blobs/sha256/") and rel.split("/")[-2] not in manifests
    ]


def _alternate(rel: str) -> bool:
    """Default split of a mixed Azure tree: about half the files in each form, stable."""
    return hashlib.sha256(rel.encode()).digest()[0] % 2 == 0


def azure_key(
    rel: str, form: AzureForm = "slash", plain: Callable[[str], bool] = _alternate
) -> str:
    """Azure blob name of ``rel`` (a ``docker/registry/v2/...`` path).

    ``slash``: ``/docker/...`` as OpenShift's registry writes it (root directory unset);
    ``plain``: ``docker/...`` as upstream distribution v3 writes it; ``mixed``: ``plain`` where
    ``plain(rel)`` is true, ``slash`` elsewhere (a container written by both).
    """
    if form == "slash" or (form == "mixed" and not plain(rel)):
        return "/" + rel
    return rel


def swift_segment_prefix(key: str) -> str:
    """A segment folder in the form distribution's swift driver picks: ``segments/`` + the
    first 3 and the other 37 hex of sha1(path + 32 random bytes)."""
    digest = hashlib.sha1(key.encode() + os.urandom(32), usedforsecurity=False).hexdigest()
    return f"segments/{digest[:3]}/{digest[3:]}"


def copy_registry_tree(
    storage_root: Path | str,
    emulator: StorageEmulator,
    bucket: str,
    *,
    azure_form: AzureForm = "slash",
    azure_plain: Callable[[str], bool] = _alternate,
    swift_dlo: Iterable[str] = (),
    segment_size: int = 1024,
) -> CopiedTree:
    """Copy a registry's folder storage into ``bucket`` object by object, in the key form the
    backend's registry driver writes (the operator sets no root directory):

    - GCS: ``docker/registry/v2/...`` at the top of the bucket;
    - Azure: ``/docker/registry/v2/...`` (``azure_form`` also gives ``docker/...`` or a mix);
    - Swift: ``files/docker/registry/v2/...``; each path in ``swift_dlo`` (a
      ``docker/registry/v2/...`` path) becomes a Dynamic Large Object as the driver's writer
      leaves it: a 0-byte object with ``X-Object-Manifest: <container>/segments/xxx/yyy`` and
      the data in ``segments/xxx/yyy/0000000000000001``, ... of ``segment_size`` bytes.
    """
    files = folder_files(storage_root)
    dlo = set(swift_dlo)
    unknown = dlo - set(files)
    if unknown:
        raise ValueError(f"not files of the tree: {sorted(unknown)}")
    if dlo and emulator.kind != "swift":
        raise ValueError("Dynamic Large Objects exist only on Swift")
    copied = CopiedTree(bucket, {})
    plain_objects: dict[str, bytes] = {}
    for rel, path in files.items():
        data = path.read_bytes()
        if emulator.kind == "gcs":
            key = rel
        elif emulator.kind == "azure":
            key = azure_key(rel, azure_form, azure_plain)
        elif emulator.kind == "swift":
            key = f"files/{rel}"
        else:
            raise ValueError(f"unknown emulator kind {emulator.kind!r}")
        copied.keys[rel] = key
        if rel in dlo:
            prefix = swift_segment_prefix(key)
            segments = []
            for number, start in enumerate(range(0, max(len(data), 1), segment_size), 1):
                segment = f"{prefix}/{number:016d}"
                emulator.put_object(bucket, segment, data[start : start + segment_size])
                segments.append(segment)
            emulator.put_object(bucket, key, b"", {"X-Object-Manifest": f"{bucket}/{prefix}"})
            copied.segments[key] = segments
            copied.dlo_sizes[key] = len(data)
        else:
            plain_objects[key] = data
    emulator.put_objects(bucket, plain_objects)  # type: ignore[attr-defined]
    return copied


# --------------------------------------------------------------------------- reference


def _reference_config(storage: dict[str, Any]) -> dict[str, Any]:
    """A config for OpenShift's registry in its list/prune modes on ``storage``."""
    return {
        "version": 0.1,
        "log": {"level": "error"},
        "http": {"addr": "127.0.0.1:0"},
        "storage": {
            **storage,
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "auth": {"openshift": {}},
        "openshift": {
            "version": 1.0,
            "quota": {"enabled": False},
            "pullthrough": {"enabled": False},
        },
    }


def run_reference(
    args: list[str],
    storage: dict[str, Any],
    env: dict[str, str] | None = None,
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Run OpenShift's registry with ``args`` (e.g. ``["-list-blobs", "-experimental"]``) and a
    config whose storage section is ``storage``; returns the completed process."""
    if not REFERENCE_BIN.exists():
        pytest.skip(
            f"OpenShift's registry not found at {REFERENCE_BIN} (set OPENSHIFT_REGISTRY_BIN; "
            "build: see /work/shared/openshift-registry/README.md)"
        )
    with tempfile.TemporaryDirectory(prefix="reference-") as tmp:
        config = Path(tmp) / "config.yml"
        config.write_text(yaml.safe_dump(_reference_config(storage), sort_keys=False))
        run_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_"))}
        run_env["REGISTRY_OPENSHIFT_SERVER_ADDR"] = "127.0.0.1:5000"
        run_env.update(env or {})
        return subprocess.run(
            [str(REFERENCE_BIN), *args, str(config)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=run_env,
            stdin=subprocess.DEVNULL,
        )


def reference_listing(
    storage: dict[str, Any], env: dict[str, str] | None = None
) -> dict[str, list[tuple[str, ...]]]:
    """What the reference's driver sees: ``repository``, ``blob`` and ``manifest`` rows from
    ``-list-repositories``, ``-list-blobs`` and ``-list-manifests`` (each sorted)."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for kind in ("repositories", "blobs", "manifests"):
        proc = run_reference([f"-list-{kind}", "-experimental"], storage, env)
        if proc.returncode != 0:
            raise RuntimeError(f"-list-{kind} failed ({proc.returncode}): {proc.stderr[-3000:]}")
        rows = [tuple(line.split("\t")[1:]) for line in proc.stdout.splitlines() if "\t" in line]
        out[kind] = sorted(rows)
    return out


# --------------------------------------------------------------------------- serving


class _Front(LocalHTTPServer):
    """A small HTTP front on 127.0.0.1 that forwards every request to ``upstream`` unless
    :meth:`respond` answers it itself (subclasses do)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream

    def start(self) -> _Front:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                status, headers, data = front.respond(self.command, self.path, self.headers, body)
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                if not any(key.lower() == "content-length" for key, _ in headers):
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            # COPY: Swift's server-side copy, the two-phase delete's quarantine move there
            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_COPY = _serve

        self.serve(Handler)
        return self

    def respond(
        self, method: str, path: str, headers: Any, body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The answer to one request: forwarded unchanged by default."""
        return self.forward(method, path, headers, body)

    def forward(
        self, method: str, path: str, headers: Any, body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send the request upstream (same Host, so URLs the server builds point here)."""
        hop = {"content-length", "connection", "transfer-encoding", "keep-alive"}
        kept = {k: v for k, v in headers.items() if k.lower() not in hop}
        request = urllib.request.Request(self.upstream + path, body, kept, method=method)
        try:
            with _OPENER.open(request, timeout=60) as resp:
                status, reply_headers, data = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            status, reply_headers, data = exc.code, exc.headers, exc.read()
        if method == "HEAD":  # the object's length (a DLO's whole size), not the body's 0
            hop = hop - {"content-length"}
        kept_reply = [(k, v) for k, v in reply_headers.items() if k.lower() not in hop]
        return status, kept_reply, data


class _ReviewFront(_Front):
    """A front for the bench's image API that answers the two reviews OpenShift's registry
    makes for every request (``selfsubjectreviews``: who is this token; and
    ``selfsubjectaccessreviews``: may it do this; always yes) and forwards the rest."""

    def respond(
        self, method: str, path: str, headers: Any, body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        route = path.split("?", 1)[0]
        if route.endswith(("/selfsubjectreviews", "/selfsubjectaccessreviews")):
            return 201, [("Content-Type", "application/json")], _review(route)
        return self.forward(method, path, headers, body)


class GcsPagingFront(_Front):
    """Pages a flat object listing of the GCS emulator as GCS does: at most ``max_page``
    objects a page (1,000 on GCS, and ``maxResults`` can only lower it), the rest behind a
    ``nextPageToken``. The emulator itself returns everything at once, so a client that reads
    only the first page would pass against it; through this front it fails. Listings with a
    delimiter go through unchanged unless ``delimited`` (then a page holds at most
    ``max_page`` entries of ``items`` and ``prefixes`` together, as GCS counts them); every
    other request goes through unchanged."""

    def __init__(self, upstream: str, max_page: int = 1000, delimited: bool = False) -> None:
        super().__init__(upstream)
        self.max_page = max_page
        self.delimited = delimited
        #: Pages served, as (prefix, number of items, had a token): for request counts.
        self.pages: list[tuple[str, int, bool]] = []

    def respond(
        self, method: str, path: str, headers: Any, body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        route, _, query = path.partition("?")
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        listing = method == "GET" and re.fullmatch(r"/storage/v1/b/[^/]+/o", route)
        if not listing or (params.get("delimiter") and not self.delimited):
            return self.forward(method, path, headers, body)
        token = params.pop("pageToken", "")
        limit = min(int(params.pop("maxResults", self.max_page) or self.max_page), self.max_page)
        upstream_path = route + ("?" + urllib.parse.urlencode(params) if params else "")
        status, reply_headers, data = self.forward(method, upstream_path, headers, body)
        if status != 200:
            return status, reply_headers, data
        page = json.loads(data)
        entries: list[tuple[str, Any]] = [(item["name"], item) for item in page.get("items") or []]
        entries += [(prefix, None) for prefix in page.get("prefixes") or []]
        entries.sort(key=lambda entry: entry[0])
        after = base64.urlsafe_b64decode(token.encode()).decode() if token else None
        if after is not None:
            entries = [entry for entry in entries if entry[0] > after]
        served = entries[:limit]
        page["items"] = [item for _, item in served if item is not None]
        if "prefixes" in page:
            page["prefixes"] = [name for name, item in served if item is None]
        page.pop("nextPageToken", None)
        if len(entries) > limit:
            last = served[-1][0]
            page["nextPageToken"] = base64.urlsafe_b64encode(last.encode()).decode()
        self.pages.append((params.get("prefix", ""), len(served), bool(token)))
        return 200, [("Content-Type", "application/json")], json.dumps(page).encode()


class GcsPreconditionFront(_Front):
    """Answers an upload with ``ifGenerationMatch=0`` as GCS does: 412 (GCS's JSON error)
    when the object exists. The emulator ignores preconditions and overwrites; here the check
    and the upload are one step (a lock), as GCS makes them one. Everything else goes
    through unchanged."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._lock = threading.Lock()

    def respond(
        self, method: str, path: str, headers: Any, body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        route, _, query = path.partition("?")
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        upload = re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o", route)
        if method != "POST" or not upload or params.get("ifGenerationMatch") != "0":
            return self.forward(method, path, headers, body)
        name = urllib.parse.quote(params.get("name", ""), safe="")
        with self._lock:
            found, _, _ = self.forward("GET", f"/storage/v1/b/{upload.group(1)}/o/{name}", {}, None)
            if found == 200:
                message = "At least one of the pre-conditions you specified did not hold."
                error = {"code": 412, "message": message, "errors": [{"reason": "conditionNotMet"}]}
                return (
                    412,
                    [("Content-Type", "application/json")],
                    json.dumps({"error": error}).encode(),
                )
            return self.forward(method, path, headers, body)


#: Where distribution's GCS driver reads object data from, whatever STORAGE_EMULATOR_HOST says.
GCS_DOWNLOAD_HOST = "storage.googleapis.com"


class GcsDownloadProxy(LocalHTTPServer):
    """Lets OpenShift's registry read object data from the GCS emulator.

    Why: distribution's GCS driver lists and stats through the storage client (which honours
    ``STORAGE_EMULATOR_HOST``) but reads a blob (``Reader``: manifests, configs) with its own
    ``GET https://storage.googleapis.com/<bucket>/<key>`` and an OAuth2 token from the key
    file's ``token_uri``. This proxy, given to the binary as ``HTTPS_PROXY`` (Go never proxies
    127.0.0.1, so the emulator and the API are reached directly), answers ``CONNECT
    storage.googleapis.com:443`` with TLS under a certificate it made (trusted through
    ``SSL_CERT_FILE``) and forwards each request inside to the emulator, which serves
    ``/<bucket>/<key>`` with ``Range``; it also serves ``POST /token`` (a dummy access token).
    Any other CONNECT is refused: nothing leaves the machine.
    """

    def __init__(self, emulator: GcsEmulator, workdir: Path) -> None:
        self.emulator = emulator
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = self.workdir / "storage-googleapis.pem"
        self.key_path = self.workdir / "storage-googleapis.key"
        self.keyfile = self.workdir / "service-account.json"
        self.forwarded: list[str] = []

    def _make_certificate(self) -> None:
        """A self-signed CA certificate naming the download host (its own trust anchor)."""
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GCS_DOWNLOAD_HOST)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(GCS_DOWNLOAD_HOST)]), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def start(self) -> GcsDownloadProxy:
        import ssl

        self._make_certificate()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def do_CONNECT(self) -> None:
                if self.path.split(":")[0] != GCS_DOWNLOAD_HOST:
                    self._reply(403, [], b"only storage.googleapis.com")
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                self.connection = context.wrap_socket(self.connection, server_side=True)
                self.rfile = self.connection.makefile("rb")
                self.wfile = self.connection.makefile("wb")
                self.close_connection = False  # go on with the requests inside the tunnel

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path.split("?")[0] != "/token":
                    self._reply(404, [], b"")
                    return
                token = {"access_token": "emulator", "token_type": "Bearer", "expires_in": 3600}
                self._reply(200, [("Content-Type", "application/json")], json.dumps(token).encode())

            def do_GET(self) -> None:
                proxy.forwarded.append(self.path)
                headers = {k: v for k, v in self.headers.items() if k.lower() == "range"}
                request = urllib.request.Request(proxy.emulator.endpoint + self.path, None, headers)
                try:
                    with _OPENER.open(request, timeout=60) as resp:
                        status, reply, data = resp.status, resp.headers, resp.read()
                except urllib.error.HTTPError as exc:
                    status, reply, data = exc.code, exc.headers, exc.read()
                kept = [
                    (k, v)
                    for k, v in reply.items()
                    if k.lower() in ("content-type", "content-range", "etag", "last-modified")
                ]
                self._reply(status, kept, data)

            do_HEAD = do_GET

        self.serve(Handler)
        account = _service_account_json()
        account["token_uri"] = f"{self.url}/token"
        self.keyfile.write_text(json.dumps(account))
        return self

    def reference_storage(self, bucket: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The ``storage.gcs`` section and environment that read ``bucket`` in full."""
        section = {"gcs": {"bucket": bucket, "keyfile": str(self.keyfile)}}
        env = {
            "STORAGE_EMULATOR_HOST": f"127.0.0.1:{self.emulator.port}",
            "HTTPS_PROXY": self.url,
            "https_proxy": self.url,
            "SSL_CERT_FILE": str(self.cert_path),
        }
        return section, env


def _review(path: str) -> bytes:
    """The review reply: user ``tester`` for a self-subject review, allowed for an access one."""
    if path.endswith("/selfsubjectreviews"):
        reply: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "SelfSubjectReview",
            "status": {
                "userInfo": {"username": "tester", "uid": "1", "groups": ["system:authenticated"]}
            },
        }
    else:
        reply = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {},
            "status": {"allowed": True},
        }
    return json.dumps(reply).encode()


class ReferenceServer:
    """OpenShift's registry serving the Docker v2 API on ``storage`` (a config storage
    section), creating Images in the bench's image API (``api``, an ``OpenShiftAPIServer``)
    as on a cluster. Push with skopeo and ``--dest-creds=any:<api.token>``."""

    def __init__(
        self, workdir: Path, storage: dict[str, Any], env: dict[str, str], api: Any
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.storage = storage
        self.env = env
        self.api = api
        self.log_path = self.workdir / "reference.log"
        self._front: _ReviewFront | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ReferenceServer:
        if not REFERENCE_BIN.exists():
            pytest.skip(
                f"OpenShift's registry not found at {REFERENCE_BIN} (OPENSHIFT_REGISTRY_BIN)"
            )
        self._front = _ReviewFront(self.api.url).start()
        config = _reference_config(self.storage)
        config["http"]["addr"] = self.url
        config["log"]["level"] = "info"
        path = self.workdir / "config.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_"))}
        env.update(self.env)
        env.update(
            REGISTRY_OPENSHIFT_SERVER_ADDR=self.url,
            OPENSHIFT_MASTER=self._front.url,
            BEARER_TOKEN=self.api.token,
        )
        self._proc = _start([str(REFERENCE_BIN), str(path)], self.log_path, env=env)
        _wait_http(
            f"http://{self.url}/healthz", {200}, 60, self._proc, "dockerregistry", self.log_path
        )
        return self

    def stop(self) -> None:
        _stop_process(self._proc)
        self._proc = None
        if self._front is not None:
            self._front.stop()
            self._front = None

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --------------------------------------------------------------------------- fixtures


def _session_emulator(
    cls: Any, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[Any]:
    """Start ``cls`` once for the session, or skip with what is missing."""
    reason = cls.missing()
    if reason:
        pytest.skip(reason)
    emulator = cls(tmp_path_factory.mktemp(name))
    try:
        emulator.start()
    except BaseException:
        emulator.stop()
        raise
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """gcp-storage-emulator for the session (in memory); tests use their own buckets."""
    yield from _session_emulator(GcsEmulator, tmp_path_factory, "gcs")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteEmulator]:
    """Azurite's blob service for the session; tests use their own containers."""
    yield from _session_emulator(AzuriteEmulator, tmp_path_factory, "azurite")


@pytest.fixture(scope="session")
def swift_aio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwiftAllInOne]:
    """The Swift all-in-one for the session; tests use their own containers."""
    yield from _session_emulator(SwiftAllInOne, tmp_path_factory, "swift")

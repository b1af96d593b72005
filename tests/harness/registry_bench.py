"""A test bench of real parts: a real registry (distribution 2.8), real S3 (moto), real pushes.

Why: regprune reasons about the registry's on-disk layout and about what OpenShift stores for
each push. Fakes of either side would only encode our own assumptions, so the bench runs the
Debian ``docker-registry`` binary on filesystem or on S3 (a local ``moto_server``), builds OCI
image layouts in pure Python (tiny, deterministic, with shareable layers), pushes them with
``skopeo`` and reads back what the registry really serves, so tests can compare storage, the
registry API and the OpenShift ``Image`` objects that such a push would create.

Loaded as a pytest plugin (see ``tests/conftest.py``); the fixtures are at the end of the file.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import random
import re
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pytest
import yaml

__all__ = [
    "BASE_LAYERS",
    "DOCKER_CONFIG",
    "DOCKER_IMAGE_METADATA_API_VERSION",
    "DOCKER_LAYER",
    "DOCKER_LIST",
    "DOCKER_V2",
    "MANIFEST_ACCEPT",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "BlobRef",
    "BuiltImage",
    "Descriptor",
    "LayerSpec",
    "LayoutRef",
    "MotoServer",
    "OciLayouts",
    "Platform",
    "PushedImage",
    "Registry",
    "S3Storage",
    "assert_pulls",
    "auth_headers",
    "blob_path",
    "build_image",
    "build_index",
    "build_standard_layouts",
    "delete_blob_via_api",
    "describe",
    "fetch_manifest",
    "free_port",
    "layer_blob",
    "pull_ok",
    "push",
    "sha256_digest",
    "start_upload",
    "upload_blob_without_manifest",
]

# --------------------------------------------------------------------------- media types

DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

#: Accept header for manifest GETs: without the list/index types the registry would hand out
#: (or refuse) a different representation than the one stored.
MANIFEST_ACCEPT = ", ".join([DOCKER_V2, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX, DOCKER_V1_SIGNED])
LIST_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})

#: ``dockerImageMetadata.apiVersion`` as a real cluster serializes it (``oc get image -o json``
#: shows ``image.openshift.io/1.0``, the docker10 scheme version; ``dockerImageMetadataVersion``
#: is the bare ``"1.0"``).
DOCKER_IMAGE_METADATA_API_VERSION = "image.openshift.io/1.0"

MOTO_KEY = "testing"
MOTO_SECRET = "testing"
MOTO_REGION = "us-east-1"

REGISTRY_BIN = "docker-registry"
SKOPEO_BIN = "skopeo"
#: Generous but finite: a hung subprocess should fail a test, not the whole session.
SUBPROCESS_TIMEOUT = 120.0


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``: the content address used everywhere in registry storage."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, so parallel benches do not collide.

    There is a small race (the port is released before the server binds it); servers here
    are started right after, which is good enough for tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(
    url: str,
    ok: set[int],
    timeout: float,
    proc: subprocess.Popen[bytes] | None,
    what: str,
    log: Path | None = None,
) -> None:
    """Poll ``url`` until it answers with a status in ``ok``; fail fast if ``proc`` died."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            detail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before ready: {detail}")
        try:
            with _OPENER.open(url, timeout=2) as resp:
                if resp.status in ok:
                    return
                last = resp.status
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
            last = exc.code
        except OSError as exc:  # connection refused while starting
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready at {url} after {timeout}s (last: {last!r})")


#: Never go through an HTTP proxy for loopback servers, whatever the environment says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(
    method: str,
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns (status, headers, body) and does not raise on 4xx/5xx."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Terminate one child process we started (never anything else)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


# --------------------------------------------------------------------------- moto


class MotoServer:
    """A standalone ``moto_server`` on loopback: a real HTTP S3 endpoint for the registry.

    The registry's Go S3 driver cannot use moto's in-process mocks, so the server runs as a
    subprocess; boto3/s3fs in the tests talk to the same endpoint.
    """

    def __init__(self, port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._log_dir = Path(log_dir or tempfile.mkdtemp(prefix="moto-"))
        self.log_path = self._log_dir / "moto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        """Start the server and wait until it answers HTTP."""
        env = dict(os.environ)
        env.setdefault("AWS_ACCESS_KEY_ID", MOTO_KEY)
        env.setdefault("AWS_SECRET_ACCESS_KEY", MOTO_SECRET)
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        _wait_http(
            f"{self.endpoint_url}/moto-api/", {200}, 30.0, self._proc, "moto_server", self.log_path
        )
        return self

    def stop(self) -> None:
        """Stop the server (all its buckets are gone with it)."""
        _stop_process(self._proc)
        self._proc = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs keyword arguments for this endpoint (``fsspec.filesystem("s3", **so)``)."""
        return {
            "key": MOTO_KEY,
            "secret": MOTO_SECRET,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": MOTO_REGION},
        }

    def client(self) -> Any:
        """A boto3 S3 client on this server with moto's dummy credentials."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=MOTO_KEY,
            aws_secret_access_key=MOTO_SECRET,
            region_name=MOTO_REGION,
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (us-east-1, so no location constraint) and return the name."""
        self.client().create_bucket(Bucket=name)
        return name

    def reset(self) -> None:
        """Drop every bucket and object (``POST /moto-api/reset``)."""
        status, _, body = _http("POST", f"{self.endpoint_url}/moto-api/reset", data=b"")
        if status != 200:
            raise RuntimeError(f"moto reset failed: {status} {body[:200]!r}")


# --------------------------------------------------------------------------- registry


@dataclass
class S3Storage:
    """Where an S3-backed registry keeps its data: a moto server, a bucket and a root."""

    moto: MotoServer
    bucket: str
    rootdirectory: str = "/registry"


class Registry:
    """``docker-registry serve`` (distribution 2.8.2) on 127.0.0.1, on filesystem or on S3.

    The config mirrors what OpenShift's integrated registry relies on: deletes enabled and the
    in-memory blob-descriptor cache (which is why :meth:`restart` exists: the cache survives
    storage edits made behind the registry's back, a restart clears it).
    """

    def __init__(
        self, workdir: Path, *, s3: S3Storage | None = None, port: int | None = None
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.s3 = s3
        #: (user, password) for registries that authenticate (OpenShift's: password = token);
        #: None sends no credentials.
        self.creds: tuple[str, str] | None = None
        #: Filesystem root (``storage.filesystem.rootdirectory``); None on S3.
        self.storage_root: Path | None = None if s3 else self.workdir / "storage"
        if self.storage_root is not None:
            self.storage_root.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    # -- description ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``127.0.0.1:PORT``: the host part of image references (no scheme)."""
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: for raw API calls."""
        return f"http://{self.url}"

    @property
    def s3_prefix(self) -> str:
        """S3 key prefix under which the driver stores ``docker/registry/v2/...``.

        The distribution S3 driver computes keys as ``rootdirectory`` without leading and
        trailing slashes + ``/docker/...``; so ``/registry`` gives keys ``registry/docker/...``
        and an empty rootdirectory gives keys ``docker/...`` (prefix ``""``).
        """
        if self.s3 is None:
            raise AttributeError("s3_prefix only exists for S3 registries")
        return self.s3.rootdirectory.strip("/")

    @property
    def storage_url(self) -> str:
        """The storage root as a URL/path, the parent of ``docker/registry/v2``.

        Filesystem: the absolute rootdirectory path (``/tmp/.../storage``), no scheme.
        S3: ``s3://BUCKET/PREFIX`` with PREFIX = :attr:`s3_prefix` (no leading/trailing
        slash), or ``s3://BUCKET`` when the rootdirectory is empty/``/``. Appending
        ``/docker/registry/v2/...`` gives a valid fsspec path or S3 key in both cases.
        """
        if self.s3 is None:
            assert self.storage_root is not None
            return str(self.storage_root)
        prefix = self.s3_prefix
        return f"s3://{self.s3.bucket}/{prefix}" if prefix else f"s3://{self.s3.bucket}"

    @property
    def v2_root(self) -> str:
        """``<storage_url>/docker/registry/v2``: where blobs/ and repositories/ live."""
        return f"{self.storage_url}/docker/registry/v2"

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec keyword arguments to open :attr:`storage_url` (empty for filesystem)."""
        return self.s3.moto.storage_options if self.s3 else {}

    def key(self, rel: str) -> str:
        """S3 key of ``rel`` (a path under ``docker/registry/v2``), e.g. ``blobs/sha256/..``."""
        prefix = self.s3_prefix
        path = f"docker/registry/v2/{rel.lstrip('/')}"
        return f"{prefix}/{path}" if prefix else path

    def path(self, rel: str) -> Path:
        """Filesystem path of ``rel`` (a path under ``docker/registry/v2``)."""
        if self.storage_root is None:
            raise AttributeError("path() only exists for filesystem registries")
        return self.storage_root / "docker" / "registry" / "v2" / rel.lstrip("/")

    def config(self) -> dict[str, Any]:
        """The registry configuration (also written to :attr:`config_path`)."""
        storage: dict[str, Any]
        if self.s3 is None:
            storage = {"filesystem": {"rootdirectory": str(self.storage_root)}}
        else:
            storage = {
                "s3": {
                    "region": MOTO_REGION,
                    "bucket": self.s3.bucket,
                    "regionendpoint": self.s3.moto.endpoint_url,
                    "accesskey": MOTO_KEY,
                    "secretkey": MOTO_SECRET,
                    "secure": False,
                    "v4auth": True,
                    "rootdirectory": self.s3.rootdirectory,
                }
            }
        storage["delete"] = {"enabled": True}
        storage["cache"] = {"blobdescriptor": "inmemory"}
        storage["maintenance"] = {"uploadpurging": {"enabled": False}}
        return {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": storage,
            "http": {"addr": self.url, "secret": "regprune-bench"},
        }

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Registry:
        """Start the registry and wait for ``GET /v2/`` to answer 200."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        env = self._env()
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        _wait_http(
            f"{self.base_url}/v2/", {200}, 30.0, self._proc, "docker-registry", self.log_path
        )
        return self

    def stop(self) -> None:
        """Stop the registry process; storage is kept."""
        _stop_process(self._proc)
        self._proc = None

    def restart(self) -> Registry:
        """Stop and start on the same port and storage: clears the in-memory caches."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        """True while the registry process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def garbage_collect(
        self, dry_run: bool = False, delete_untagged: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run distribution's own ``docker-registry garbage-collect`` on this storage.

        A baseline to compare regprune with (it knows nothing of OpenShift). The registry is
        stopped during the run (GC is unsafe against concurrent pushes) and started again
        afterwards when it was running, which also clears the in-memory cache.
        """
        was_running = self.running
        self.stop()
        args = [REGISTRY_BIN, "garbage-collect"]
        if dry_run:
            args.append("--dry-run")
        if delete_untagged:
            args.append("--delete-untagged")
        try:
            return subprocess.run(
                [*args, str(self.config_path)],
                capture_output=True,
                text=True,
                timeout=SUBPROCESS_TIMEOUT,
                env=self._env(),
                stdin=subprocess.DEVNULL,
            )
        finally:
            if was_running:
                self.start()

    def _env(self) -> dict[str, str]:
        """The registry's environment: ours minus ``AWS_CA_BUNDLE`` (the S3 driver panics
        with "unable to load custom CA bundle" when it is set)."""
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)
        return env

    def prepare_push(self, repository: str) -> None:
        """What must exist before a push to ``repository`` (nothing for distribution)."""

    def log(self) -> str:
        """The registry's captured stdout/stderr, for assertion messages."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- storage listing (for assertions) ------------------------------------------------

    def list_storage(self) -> list[str]:
        """Every stored file/key, relative to ``docker/registry/v2`` and sorted."""
        if self.s3 is None:
            base = self.path("")
            if not base.exists():
                return []
            return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
        client = self.s3.moto.client()
        root = self.key("")
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.s3.bucket, Prefix=root
        ):
            keys.extend(obj["Key"][len(root) :] for obj in page.get("Contents", []))
        return sorted(keys)

    def read(self, rel: str) -> bytes:
        """Content of one stored file (``rel`` under ``docker/registry/v2``)."""
        if self.s3 is None:
            return self.path(rel).read_bytes()
        obj = self.s3.moto.client().get_object(Bucket=self.s3.bucket, Key=self.key(rel))
        return bytes(obj["Body"].read())

    def exists(self, rel: str) -> bool:
        """Whether one stored file (``rel`` under ``docker/registry/v2``) exists."""
        if self.s3 is None:
            return self.path(rel).is_file()
        client = self.s3.moto.client()
        try:
            client.head_object(Bucket=self.s3.bucket, Key=self.key(rel))
        except client.exceptions.ClientError:
            return False
        return True


def auth_headers(registry: Registry, creds: tuple[str, str] | None = None) -> dict[str, str]:
    """``Authorization: Basic`` for ``creds`` (default: the registry's own), or nothing."""
    creds = creds or registry.creds
    if creds is None:
        return {}
    token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def blob_path(digest: str) -> str:
    """``blobs/sha256/<2>/<hex>/data`` for a digest (relative to ``docker/registry/v2``)."""
    algo, hexd = digest.split(":", 1)
    return f"blobs/{algo}/{hexd[:2]}/{hexd}/data"


# --------------------------------------------------------------------------- OCI layouts


@dataclass(frozen=True)
class LayerSpec:
    """A reproducible layer: ``seed`` fixes its content, so equal specs give equal blobs.

    Two images built from the same spec share the layer blob byte for byte (a shared base
    layer), which is what the registry deduplicates.
    """

    seed: int
    size: int = 2048


@dataclass(frozen=True)
class Platform:
    """OCI platform of an image (``os``/``architecture``/optional ``variant``)."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The OCI ``platform`` object (no ``variant`` key when there is none)."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


def layer_blob(spec: LayerSpec | int) -> tuple[bytes, bytes]:
    """(gzip'd tar, uncompressed tar) for a layer; deterministic in ``spec``.

    The tar holds one file of pseudo-random bytes (incompressible, so sizes stay close to
    ``spec.size``); mtimes, owners and the gzip header are fixed so the digest only depends
    on the seed and size.
    """
    if isinstance(spec, int):
        spec = LayerSpec(spec)
    payload = random.Random(spec.seed).randbytes(spec.size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"layer-{spec.seed}/data.bin")
        info.size = len(payload)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, compresslevel=6, mtime=0), tar_bytes


@dataclass(frozen=True)
class Descriptor:
    """An OCI descriptor (digest, size, media type) of a blob written to a layout."""

    digest: str
    size: int
    media_type: str


@dataclass
class BuiltImage:
    """An image (manifest) or index written to an OCI layout, as seen before any push."""

    layout_dir: Path
    tag: str | None
    digest: str
    media_type: str
    manifest_size: int
    platform: Platform | None = None
    config: Descriptor | None = None
    layers: list[Descriptor] = field(default_factory=list)
    diff_ids: list[str] = field(default_factory=list)
    children: list[BuiltImage] = field(default_factory=list)

    @property
    def descriptor(self) -> dict[str, Any]:
        """OCI descriptor of this manifest, with the platform for use inside an index."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.manifest_size,
        }
        if self.platform is not None:
            out["platform"] = self.platform.as_dict()
        return out


def _init_layout(layout_dir: Path) -> None:
    """Create an empty OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256``)."""
    (layout_dir / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    marker = layout_dir / "oci-layout"
    if not marker.exists():
        marker.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = layout_dir / "index.json"
    if not index.exists():
        index.write_text(json.dumps({"schemaVersion": 2, "manifests": []}))


def _write_blob(layout_dir: Path, data: bytes, media_type: str) -> Descriptor:
    """Store ``data`` content-addressed in the layout and return its descriptor."""
    digest = sha256_digest(data)
    path = layout_dir / "blobs" / "sha256" / digest.split(":", 1)[1]
    if not path.exists():
        path.write_bytes(data)
    return Descriptor(digest, len(data), media_type)


def _json_bytes(obj: Any) -> bytes:
    """Canonical-ish JSON bytes (stable key order, compact) for reproducible digests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _tag_in_index(layout_dir: Path, tag: str, desc: dict[str, Any]) -> None:
    """Point ``tag`` (``org.opencontainers.image.ref.name``) at ``desc`` in ``index.json``."""
    index_path = layout_dir / "index.json"
    index = json.loads(index_path.read_text())
    ref = "org.opencontainers.image.ref.name"
    manifests = [m for m in index["manifests"] if m.get("annotations", {}).get(ref) != tag]
    entry = {k: v for k, v in desc.items() if k != "platform"}
    entry["annotations"] = {ref: tag}
    manifests.append(entry)
    index["manifests"] = manifests
    index_path.write_text(json.dumps(index, indent=2))


def build_image(
    layout_dir: Path | str,
    tag: str | None,
    layers: Sequence[LayerSpec | int],
    platform: tuple[str, str] | tuple[str, str, str] | Platform = ("linux", "amd64"),
    created: str = "2024-01-01T00:00:00Z",
) -> BuiltImage:
    """Write one OCI image manifest (+config, +layers) to ``layout_dir``; tag it if ``tag``.

    ``layers`` are seeds or :class:`LayerSpec`, base first. ``platform`` is
    ``(os, arch[, variant])`` or a :class:`Platform`. ``diff_ids`` are the sha256 of the
    uncompressed tars, as the image spec requires (skopeo checks them on conversion).
    Untagged images (``tag=None``) are meant as children of :func:`build_index`.
    """
    layout = Path(layout_dir)
    _init_layout(layout)
    plat = platform if isinstance(platform, Platform) else Platform(*platform)
    layer_descs: list[Descriptor] = []
    diff_ids: list[str] = []
    for spec in layers:
        gz, raw = layer_blob(spec)
        layer_descs.append(_write_blob(layout, gz, OCI_LAYER))
        diff_ids.append(sha256_digest(raw))
    config = {
        "architecture": plat.architecture,
        "os": plat.os,
        **({"variant": plat.variant} if plat.variant else {}),
        "created": created,
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": f"layer {i}"} for i in range(len(layers))],
    }
    config_desc = _write_blob(layout, _json_bytes(config), OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_desc.digest, "size": config_desc.size},
        "layers": [
            {"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d in layer_descs
        ],
    }
    man_desc = _write_blob(layout, _json_bytes(manifest), OCI_MANIFEST)
    built = BuiltImage(
        layout,
        tag,
        man_desc.digest,
        OCI_MANIFEST,
        man_desc.size,
        plat,
        config_desc,
        layer_descs,
        diff_ids,
    )
    if tag is not None:
        _tag_in_index(layout, tag, built.descriptor)
    return built


def build_index(
    layout_dir: Path | str, tag: str | None, children: Sequence[BuiltImage]
) -> BuiltImage:
    """Write an OCI image index over ``children`` (built in the same layout) and tag it."""
    layout = Path(layout_dir)
    _init_layout(layout)
    for child in children:
        if Path(child.layout_dir) != layout:
            raise ValueError(f"child {child.digest} lives in another layout {child.layout_dir}")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [child.descriptor for child in children],
    }
    desc = _write_blob(layout, _json_bytes(index), OCI_INDEX)
    built = BuiltImage(layout, tag, desc.digest, OCI_INDEX, desc.size, children=list(children))
    if tag is not None:
        _tag_in_index(layout, tag, built.descriptor)
    return built


# --------------------------------------------------------------------------- push / pull


@dataclass(frozen=True)
class BlobRef:
    """A blob referenced by a pushed manifest, as the registry serves it."""

    digest: str
    size: int
    media_type: str


@dataclass
class PushedImage:
    """A manifest as it is stored IN THE REGISTRY after a push (re-read over HTTP).

    Digests here can differ from the :class:`BuiltImage` ones: skopeo rewrites manifests
    when converting OCI to Docker schema 2 (layer and config blobs keep their digests).
    """

    repository: str
    tag: str | None
    digest: str
    media_type: str
    manifest_size: int
    manifest: dict[str, Any]
    config: BlobRef | None = None
    layers: list[BlobRef] = field(default_factory=list)
    children: list[PushedImage] = field(default_factory=list)
    #: Platform given for this manifest by its parent list/index (children only).
    platform: Platform | None = None
    #: Parsed image config blob (None for lists or when there is no config).
    config_json: dict[str, Any] | None = None

    @property
    def is_list(self) -> bool:
        """True for a Docker manifest list or an OCI index."""
        return self.media_type in LIST_TYPES

    def reference(self, registry_host: str) -> str:
        """``<host>/<repository>@<digest>``: the by-digest pull spec."""
        return f"{registry_host}/{self.repository}@{self.digest}"

    def all_manifests(self) -> list[PushedImage]:
        """This manifest and its children (lists first), each once."""
        return [self, *self.children]

    def blob_digests(self) -> set[str]:
        """Every blob digest this image needs in storage: manifests, configs and layers."""
        out = {self.digest}
        if self.config:
            out.add(self.config.digest)
        out.update(layer.digest for layer in self.layers)
        for child in self.children:
            out |= child.blob_digests()
        return out

    def layer_digests(self) -> set[str]:
        """Digests the repository's ``_layers`` links must cover (configs and layers)."""
        out = {layer.digest for layer in self.layers}
        if self.config:
            out.add(self.config.digest)
        for child in self.children:
            out |= child.layer_digests()
        return out

    def openshift_image(self, registry_host: str) -> dict[str, Any]:
        """The ``image.openshift.io/v1`` Image a push of this manifest to the integrated
        registry would create; use :meth:`openshift_images` for a list plus its children.

        Lists carry ``dockerImageManifests``, no ``dockerImageLayers``, an empty
        ``dockerLayersOrder`` annotation and ``dockerImageMetadata`` whose ``Id`` is the list's
        own digest (what openshift-apiserver makes of a list; its ``Created`` is the server's
        clock, left out here); single manifests carry ``dockerImageLayers`` (manifest order,
        annotation ``dockerLayersOrder: ascending``) and ``dockerImageMetadata`` whose ``Id`` is
        the config digest. ``dockerImageManifest``/``dockerImageConfig`` are left out, as the
        integrated registry leaves them empty.
        """
        image: dict[str, Any] = {
            "apiVersion": "image.openshift.io/v1",
            "kind": "Image",
            "metadata": {
                "name": self.digest,
                "annotations": {
                    "openshift.io/image.managed": "true",
                    "image.openshift.io/dockerLayersOrder": "ascending",
                    "image.openshift.io/manifestBlobStored": "true",
                },
            },
            "dockerImageReference": self.reference(registry_host),
            "dockerImageManifestMediaType": self.media_type,
            "dockerImageMetadataVersion": "1.0",
        }
        if self.is_list:
            image["metadata"]["annotations"]["image.openshift.io/dockerLayersOrder"] = ""
            image["dockerImageManifests"] = [_manifest_entry(child) for child in self.children]
            image["dockerImageMetadata"] = {
                "kind": "DockerImage",
                "apiVersion": DOCKER_IMAGE_METADATA_API_VERSION,
                "Id": self.digest,
            }
            return image
        image["dockerImageLayers"] = [
            {"name": layer.digest, "size": layer.size, "mediaType": layer.media_type}
            for layer in self.layers
        ]
        metadata: dict[str, Any] = {
            "kind": "DockerImage",
            "apiVersion": DOCKER_IMAGE_METADATA_API_VERSION,
        }
        if self.config is not None:
            cfg = self.config_json or {}
            # OpenShift sums unique layer sizes plus the config size; its DockerImage 1.0 keeps
            # no Os nor Variant.
            unique = {layer.digest: layer.size for layer in self.layers}
            metadata.update(
                {
                    "Id": self.config.digest,
                    "Created": cfg.get("created"),
                    "Architecture": cfg.get("architecture"),
                    "Config": cfg.get("config", {}),
                    "Size": sum(unique.values()) + self.config.size,
                }
            )
        image["dockerImageMetadata"] = metadata
        return image

    def openshift_images(self, registry_host: str) -> list[dict[str, Any]]:
        """This Image and, for lists, one Image per child (each child is its own Image)."""
        return [m.openshift_image(registry_host) for m in self.all_manifests()]


def _manifest_entry(child: PushedImage) -> dict[str, Any]:
    """One ``dockerImageManifests`` item; like the API, ``variant`` is omitted when empty."""
    plat = child.platform or Platform("", "")
    entry: dict[str, Any] = {
        "digest": child.digest,
        "mediaType": child.media_type,
        "manifestSize": child.manifest_size,
        "architecture": plat.architecture,
        "os": plat.os,
    }
    if plat.variant:
        entry["variant"] = plat.variant
    return entry


def _split_ref(repo_ref: str) -> tuple[str, str]:
    """``ns/name:tag`` -> (``ns/name``, ``tag``); the tag is mandatory here."""
    name, sep, tag = repo_ref.rpartition(":")
    if not sep or "/" in tag or not name:
        raise ValueError(f"expected <repository>:<tag>, got {repo_ref!r}")
    return name, tag


def fetch_manifest(registry: Registry, repository: str, reference: str) -> tuple[bytes, str, str]:
    """GET one manifest by tag or digest: (raw bytes, media type, sha256 digest of bytes)."""
    status, headers, body = _http(
        "GET",
        f"{registry.base_url}/v2/{repository}/manifests/{reference}",
        headers={"Accept": MANIFEST_ACCEPT, **auth_headers(registry)},
    )
    if status != 200:
        raise RuntimeError(f"GET manifest {repository}:{reference} -> {status}: {body[:300]!r}")
    doc = json.loads(body)
    media_type = doc.get("mediaType") or headers.get("Content-Type", "")
    return body, media_type, sha256_digest(body)


def _fetch_blob(registry: Registry, repository: str, digest: str) -> bytes:
    """GET one blob through the registry API."""
    status, _, body = _http(
        "GET", f"{registry.base_url}/v2/{repository}/blobs/{digest}", headers=auth_headers(registry)
    )
    if status != 200:
        raise RuntimeError(f"GET blob {repository}@{digest} -> {status}")
    return body


def describe(
    registry: Registry,
    repository: str,
    reference: str,
    tag: str | None = None,
    platform: Platform | None = None,
) -> PushedImage:
    """Read a manifest (and children, and config) back from the registry as a PushedImage."""
    body, media_type, digest = fetch_manifest(registry, repository, reference)
    if reference.startswith("sha256:") and digest != reference:
        raise RuntimeError(f"registry served {digest} for {reference}")
    doc = json.loads(body)
    image = PushedImage(repository, tag, digest, media_type, len(body), doc, platform=platform)
    if media_type in LIST_TYPES:
        for entry in doc.get("manifests", []):
            plat = entry.get("platform") or {}
            child_platform = (
                Platform(plat.get("os", ""), plat.get("architecture", ""), plat.get("variant"))
                if plat
                else None
            )
            image.children.append(
                describe(registry, repository, entry["digest"], platform=child_platform)
            )
        return image
    if "config" in doc:
        cfg = doc["config"]
        image.config = BlobRef(cfg["digest"], int(cfg["size"]), cfg.get("mediaType", ""))
        image.config_json = json.loads(_fetch_blob(registry, repository, cfg["digest"]))
    if "layers" in doc:
        image.layers = [
            BlobRef(layer["digest"], int(layer["size"]), layer.get("mediaType", ""))
            for layer in doc["layers"]
        ]
    elif "fsLayers" in doc:  # schema 1: fsLayers are newest first and carry no sizes
        image.layers = [BlobRef(layer["blobSum"], -1, "") for layer in reversed(doc["fsLayers"])]
    return image


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    """Run skopeo without a policy lookup; returns the completed process (never raises)."""
    return subprocess.run(
        [SKOPEO_BIN, "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def push(
    registry: Registry,
    layout_dir: Path | str,
    tag: str,
    repo_ref: str,
    format: Literal["oci", "v2s2"] = "v2s2",
    all: bool = True,
) -> PushedImage:
    """Push ``oci:<layout_dir>:<tag>`` to ``<registry>/<repo_ref>`` with skopeo, then describe
    what the registry now holds (digests re-read over HTTP, since conversion rewrites them).

    ``format="v2s2"`` converts to Docker schema 2 (an index becomes a Docker manifest list);
    ``"oci"`` keeps OCI media types. ``all`` copies every child of an index; without it skopeo
    picks the child matching this host's platform and only that is pushed under the tag.
    """
    repository, dest_tag = _split_ref(repo_ref)
    registry.prepare_push(repository)
    args = ["copy", "--dest-tls-verify=false", "--retry-times", "0"]
    if all:
        args.append("--all")
    if registry.creds is not None:
        args += ["--dest-creds", ":".join(registry.creds)]
    if format == "v2s2":
        args += ["--format", "v2s2"]
    elif format != "oci":
        raise ValueError(f"format must be 'oci' or 'v2s2', not {format!r}")
    args += [f"oci:{Path(layout_dir)}:{tag}", f"docker://{registry.url}/{repo_ref}"]
    proc = _skopeo(*args)
    if proc.returncode != 0:
        raise RuntimeError(
            f"skopeo {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stderr}\n--- registry log ---\n{registry.log()[-2000:]}"
        )
    return describe(registry, repository, dest_tag, tag=dest_tag)


def pull_ok(registry: Registry, ref: str, creds: tuple[str, str] | None = None) -> bool:
    """True when ``skopeo copy --all docker://<registry>/<ref> dir:`` succeeds, i.e. every
    manifest and blob of the image (all platforms) can be fetched. ``ref`` is
    ``ns/name:tag`` or ``ns/name@sha256:...``; ``creds`` default to the registry's."""
    return _pull(registry, ref, creds).returncode == 0


def _pull(
    registry: Registry, ref: str, creds: tuple[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Pull ``ref`` with skopeo into a throw-away ``dir:`` target."""
    creds = creds or registry.creds
    auth = ["--src-creds", ":".join(creds)] if creds else []
    with tempfile.TemporaryDirectory(prefix="pull-") as tmp:
        return _skopeo(
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--retry-times",
            "0",
            *auth,
            f"docker://{registry.url}/{ref}",
            f"dir:{tmp}",
        )


def assert_pulls(registry: Registry, ref: str, creds: tuple[str, str] | None = None) -> None:
    """Assert that ``ref`` pulls completely; the failure message carries skopeo's error."""
    proc = _pull(registry, ref, creds)
    assert proc.returncode == 0, f"pull of {registry.url}/{ref} failed:\n{proc.stderr}"


def upload_blob_without_manifest(registry: Registry, repo: str, data: bytes) -> str:
    """Upload one blob to ``repo`` and never reference it (an abandoned push); its digest.

    The blob lands in ``blobs/`` and gets a ``_layers`` link in ``repo``, but no manifest.
    """
    digest = sha256_digest(data)
    status, headers, body = _http(
        "POST",
        f"{registry.base_url}/v2/{repo}/blobs/uploads/",
        data=b"",
        headers=auth_headers(registry),
    )
    if status != 202:
        raise RuntimeError(f"start upload in {repo} -> {status}: {body[:300]!r}")
    location = _absolute(registry, headers["Location"])
    sep = "&" if "?" in location else "?"
    status, _, body = _http(
        "PUT",
        f"{location}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream", **auth_headers(registry)},
    )
    if status != 201:
        raise RuntimeError(f"finish upload of {digest} in {repo} -> {status}: {body[:300]!r}")
    return digest


def start_upload(registry: Registry, repo: str) -> str:
    """Start a blob upload and walk away: leaves ``_uploads/<uuid>/`` in ``repo``; the uuid."""
    status, headers, body = _http(
        "POST",
        f"{registry.base_url}/v2/{repo}/blobs/uploads/",
        data=b"",
        headers=auth_headers(registry),
    )
    if status != 202:
        raise RuntimeError(f"start upload in {repo} -> {status}: {body[:300]!r}")
    upload_id = headers.get("Docker-Upload-Uuid") or headers.get("Docker-Upload-UUID")
    if not upload_id:
        match = re.search(r"/uploads/([^/?]+)", headers["Location"])
        if not match:
            raise RuntimeError(f"no upload id in {headers!r}")
        upload_id = match.group(1)
    return upload_id


def delete_blob_via_api(registry: Registry, repo: str, digest: str) -> None:
    """``DELETE /v2/<repo>/blobs/<digest>`` (expects 202): unlinks the blob from the repo and
    evicts it from the registry's blob-descriptor cache; the blob data itself stays."""
    status, _, body = _http(
        "DELETE", f"{registry.base_url}/v2/{repo}/blobs/{digest}", headers=auth_headers(registry)
    )
    if status != 202:
        raise RuntimeError(f"DELETE blob {repo}@{digest} -> {status}: {body[:300]!r}")


def _absolute(registry: Registry, location: str) -> str:
    """The registry returns absolute Locations; accept relative ones too."""
    if location.startswith(("http://", "https://")):
        return location
    return registry.base_url + ("" if location.startswith("/") else "/") + location


# --------------------------------------------------------------------------- layouts set


class LayoutRef(NamedTuple):
    """Where a built image lives: ``oci:<layout_dir>:<tag>`` for skopeo."""

    layout_dir: Path
    tag: str


@dataclass
class OciLayouts:
    """A ready set of built images, by name (``base``, ``app-v1``, ``app-v2``, ``tool``,
    ``multi``); ``layouts["app-v1"]`` gives a :class:`LayoutRef`, ``built`` the details."""

    root: Path
    built: dict[str, BuiltImage]

    def __getitem__(self, name: str) -> LayoutRef:
        image = self.built[name]
        assert image.tag is not None
        return LayoutRef(image.layout_dir, image.tag)

    def __contains__(self, name: object) -> bool:
        return name in self.built

    def __iter__(self) -> Iterator[str]:
        return iter(self.built)

    def names(self) -> list[str]:
        """The image names available."""
        return list(self.built)


#: Seeds of the shared base layers: ``base``, ``app-v1``, ``app-v2`` and the amd64 child of
#: ``multi`` all start with them, so each is stored once in the registry.
BASE_LAYERS: tuple[int, ...] = (1, 2)


def build_standard_layouts(root: Path | str) -> OciLayouts:
    """Build the standard image set into one OCI layout under ``root`` (one tag per name).

    - ``base``: layers 1, 2
    - ``app-v1``: 1, 2, 10 and ``app-v2``: 1, 2, 11 (share the base layers)
    - ``tool``: 20 (nothing shared)
    - ``multi``: index of linux/amd64 (1, 2, 30) and linux/arm64/v8 (31, 32)
    """
    layout = Path(root) / "layout"
    built = {
        "base": build_image(layout, "base", [*BASE_LAYERS]),
        "app-v1": build_image(layout, "app-v1", [*BASE_LAYERS, 10]),
        "app-v2": build_image(layout, "app-v2", [*BASE_LAYERS, 11]),
        "tool": build_image(layout, "tool", [20]),
    }
    amd64 = build_image(layout, None, [*BASE_LAYERS, 30], ("linux", "amd64"))
    arm64 = build_image(layout, None, [31, 32], ("linux", "arm64", "v8"))
    built["multi"] = build_index(layout, "multi", [amd64, arm64])
    return OciLayouts(Path(root), built)


# --------------------------------------------------------------------------- fixtures


def _bucket_name(label: str) -> str:
    """An S3-valid, unique bucket name derived from ``label`` (a module name)."""
    base = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")[:40] or "bench"
    return f"{base}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def botocore_models_decoded_once() -> Iterator[None]:
    """botocore reads and decodes its JSON data files (S3's service model, the endpoint rules,
    partitions, _retry: eleven files) for every new session, and s3fs makes a session per
    filesystem. regprune keeps one per process and configuration (regprune/storage/clients.py),
    but every test starts with none (``fresh_storage_clients``) and a fault test's proxy is a
    configuration of its own, and the harness makes boto3 clients of its own: each file is
    decoded once per process here and the result shared, as one botocore session shares it
    between its clients (Loader's instance cache). Requests and retries are unchanged."""
    from botocore import loaders

    load_file = loaders.JSONFileLoader.load_file
    decoded: dict[str, Any] = {}

    def load_once(self: Any, file_path: str) -> Any:
        if file_path not in decoded:
            decoded[file_path] = load_file(self, file_path)
        return decoded[file_path]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loaders.JSONFileLoader, "load_file", load_once)
        yield


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto S3 server for the session; modules use their own buckets. While it serves,
    botocore's data files are decoded once (:func:`botocore_models_decoded_once`)."""
    with (
        MotoServer(log_dir=tmp_path_factory.mktemp("moto")) as server,
        botocore_models_decoded_once(),
    ):
        yield server


@pytest.fixture(scope="module")
def registry_fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A filesystem registry for the module, storage in a fresh tmp folder."""
    with Registry(tmp_path_factory.mktemp("registry-fs")) as registry:
        yield registry


@pytest.fixture(scope="module")
def registry_s3(
    request: pytest.FixtureRequest, moto: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """An S3 registry on the session's moto server, in a bucket of its own per module
    (rootdirectory ``/registry``, so keys are ``registry/docker/registry/v2/...``)."""
    bucket = moto.create_bucket(_bucket_name(request.module.__name__.rsplit(".", 1)[-1]))
    storage = S3Storage(moto, bucket, "/registry")
    with Registry(tmp_path_factory.mktemp("registry-s3"), s3=storage) as registry:
        yield registry


@pytest.fixture(scope="session")
def oci_layouts(tmp_path_factory: pytest.TempPathFactory) -> OciLayouts:
    """The standard image set (see :func:`build_standard_layouts`), built once; read-only."""
    return build_standard_layouts(tmp_path_factory.mktemp("oci"))

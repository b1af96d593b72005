"""OpenShift's own hard prune and consistency check, run as the reference regprune is compared with.

Why: regprune re-implements ``dockerregistry -prune=check|delete`` and
``-restore-mode=check-database|check-storage|check`` (openshift/image-registry,
``pkg/dockerregistry/server/prune/``). The differential tests run that very binary on the same
storage and the same API as regprune and compare what each names, object by object. This
module starts it, feeds it a storage section and the OpenShift API test server, and parses its
output into typed sets.

What the reference does (read from its source at the pinned commit, and checked by running it):

- ``-prune``: lists every Image in one request (no ``limit``), keeps each Image's manifest,
  its config (``dockerImageMetadata.Id``, schema 2 and OCI only) and ``dockerImageLayers``;
  walks the repositories (a folder with ``_manifests``), deletes a repository whose name is not
  a valid path segment or whose ImageStream ``GET`` is 404, deletes each manifest revision link
  that is not both an Image and in its stream's tag history, and deletes every blob not kept.
  It logs ``Would delete ...`` lines (logrus, level info) and prints a summary on stdout.
- ``-restore-mode=check-database``: lists all ImageStreams, ``GET``s the Image of each tag
  event (once per digest), stats the manifest, config and layers, then lists all Images and
  checks the ones not seen in a stream. Prints ``Broken imagestream tag ...`` and
  ``Broken image ...`` on stdout.
- ``-restore-mode=check-storage``: for each repository's manifest revision that its stream
  does not have, prints ``Would add image ... with tag "lost-found-<hex>"`` when the manifest
  and every blob it references are intact (else it logs an error and goes on).
- ``-restore-mode=recover``: the same walk, creating each such ``ImageStreamMapping`` (and a
  missing ImageStream) in the API, then ``check-database``; the first mapping the API refuses
  ends the run (``log.Fatalf``), so later repositories are not restored.

The binary is found at ``$REGPRUNE_OPENSHIFT_REGISTRY`` or at ``../shared/openshift-registry/
dockerregistry`` next to the checkout (or any parent of it); where absent, :func:`require_reference`
skips with what is missing and the build line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import pytest
import yaml

__all__ = [
    "BUILD_LINE",
    "REFERENCE_ENV",
    "ApiSource",
    "BrokenTag",
    "LostFound",
    "PruneResult",
    "ReferenceCheck",
    "ReferenceError",
    "RestoreResult",
    "find_reference",
    "load_dump",
    "parse_prune_output",
    "parse_restore_output",
    "reference_config",
    "require_reference",
    "run_prune",
    "run_restore",
]

REFERENCE_ENV = "REGPRUNE_OPENSHIFT_REGISTRY"
SHARED_RELATIVE = Path("shared") / "openshift-registry" / "dockerregistry"
BUILD_LINE = (
    "build it from github.com/openshift/image-registry (commit d4cce000f749) with its vendor/ "
    "folder: GOTOOLCHAIN=local GOFLAGS=-mod=vendor CGO_ENABLED=0 go build -trimpath -tags "
    '"include_gcs include_oss containers_image_openpgp" -ldflags "-s -w" -o dockerregistry '
    "./cmd/dockerregistry (see ../shared/openshift-registry/README.md)"
)
#: What the reference advertises as its own address; it refuses to start without one.
SERVER_ADDR = "image-registry.openshift-image-registry.svc:5000"
TIMEOUT = 600.0

PruneMode = Literal["check", "delete"]
RestoreMode = Literal["check", "check-database", "check-storage", "recover"]


class ReferenceError(RuntimeError):
    """The reference failed in a way a test should see (exit code, unparsed output)."""


class ApiSource(Protocol):
    """What the reference needs from an API server: a base URL and a bearer token
    (``tests.harness.openshift_api.OpenShiftAPIServer`` fits)."""

    @property
    def url(self) -> str: ...

    token: str


# --------------------------------------------------------------------------- the binary


def find_reference() -> Path | None:
    """The reference binary: ``$REGPRUNE_OPENSHIFT_REGISTRY``, else ``<dir>/../shared/...``
    for the checkout and each of its parents (worktrees live below the main checkout's
    parent), else None."""
    override = os.environ.get(REFERENCE_ENV)
    if override:
        path = Path(override)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    here = Path(__file__).resolve().parents[2]
    for parent in (here, *here.parents):
        candidate = parent / SHARED_RELATIVE
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_reference() -> Path:
    """The binary, or skip the test saying what is missing and how to build it."""
    binary = find_reference()
    if binary is None:
        where = os.environ.get(REFERENCE_ENV) or f"../{SHARED_RELATIVE}"
        pytest.skip(
            f"OpenShift's registry binary (the reference prune) is missing: not found at "
            f"{where} (set ${REFERENCE_ENV} to its path); {BUILD_LINE}"
        )
    return binary


# --------------------------------------------------------------------------- configuration


def storage_section(target: Any) -> dict[str, Any]:
    """The ``storage:`` section for the reference, from a storage dict or from anything with
    ``config()`` (a ``tests.harness.registry_bench.Registry`` and, later, the OpenShift registry).

    Deletes are enabled (``-prune=delete`` needs them); the cache and upload purging are
    left out so the reference walks storage as it is.
    """
    raw = target if isinstance(target, Mapping) else target.config()["storage"]
    storage = {k: v for k, v in dict(raw).items() if k not in ("cache", "maintenance", "redirect")}
    storage["delete"] = {"enabled": True}
    storage["maintenance"] = {"uploadpurging": {"enabled": False}}
    return storage


def reference_config(target: Any, path: Path) -> Path:
    """Write a config the reference accepts in its prune and restore modes."""
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "json"},
        "storage": storage_section(target),
        "http": {"addr": "127.0.0.1:0"},
        "auth": {"openshift": {}},
        "openshift": {
            "version": 1.0,
            "quota": {"enabled": False},
            "pullthrough": {"enabled": False},
            "metrics": {"enabled": False},
            "audit": {"enabled": False},
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def reference_env(api: ApiSource, server_addr: str = SERVER_ADDR) -> dict[str, str]:
    """The reference's environment: the API with a bearer token (client-go sends a kubeconfig
    token only over TLS, ``OPENSHIFT_MASTER``/``BEARER_TOKEN`` work over HTTP; over HTTPS the
    server's ``ca_pem`` goes in ``OPENSHIFT_CA_DATA``), its own address, info-level logs, no
    CA bundle (the S3 driver panics on one)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REGISTRY_", "KUBECONFIG", "AWS_", "OPENSHIFT_"))
    }
    env.update(
        {
            "OPENSHIFT_MASTER": api.url,
            "BEARER_TOKEN": api.token,
            "REGISTRY_OPENSHIFT_SERVER_ADDR": server_addr,
            "REGISTRY_LOG_LEVEL": "info",
        }
    )
    ca_pem = getattr(api, "ca_pem", None)
    if ca_pem:  # an HTTPS API server (the one OpenShift's registry uses): trust its certificate
        env["OPENSHIFT_CA_DATA"] = ca_pem.decode()
    return env


def _run(
    args: list[str],
    target: Any,
    api: ApiSource,
    workdir: Path,
    binary: Path | None,
    env: Mapping[str, str] | None = None,
    server_addr: str = SERVER_ADDR,
) -> subprocess.CompletedProcess[str]:
    """Run the binary; ``env`` adds what a storage driver reads from its environment (the GCS
    emulator's ``STORAGE_EMULATOR_HOST``), ``server_addr`` is the host a restored Image's
    ``dockerImageReference`` names."""
    binary = binary or require_reference()
    config = reference_config(target, Path(workdir) / "reference-config.yml")
    return subprocess.run(
        [str(binary), *args, str(config)],
        env={**reference_env(api, server_addr), **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# --------------------------------------------------------------------------- prune


@dataclass
class PruneResult:
    """What ``-prune=check`` would delete (or ``-prune=delete`` deleted)."""

    blobs: set[str] = field(default_factory=set)
    #: (repository, manifest digest)
    manifest_links: set[tuple[str, str]] = field(default_factory=set)
    repositories: set[str] = field(default_factory=set)
    #: repositories removed because their name is not a valid path segment
    invalid_names: set[str] = field(default_factory=set)
    #: repositories removed because their ImageStream is not found
    imagestream_missing: set[str] = field(default_factory=set)
    #: the summary line's blob count (``Would delete N blobs`` / ``Deleted N blobs``)
    blob_count: int | None = None
    errors: list[str] = field(default_factory=list)
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""


_BLOB = re.compile(r"^Would delete blob: (sha256:[0-9a-f]{64})$")
_LINK = re.compile(r"^(?:Would delete|Deleting) manifest link: (.+)@(sha256:[0-9a-f]{64})$")
_REPO = re.compile(r"^Would delete repository: (.+)$")
_INVALID = re.compile(r"^Invalid image name (.+), removing whole repository$")
_NO_STREAM = re.compile(
    r"^The image stream (.*)/(.+) is not found, will remove the whole repository$"
)
_VACUUM_BLOB = re.compile(r"^Deleting blob: /docker/registry/v2/blobs/sha256/../([0-9a-f]{64})$")
_VACUUM_REPO = re.compile(r"^Deleting repo: /docker/registry/v2/repositories/(.+)$")
_SUMMARY = re.compile(r"^(?:Would delete|Deleted) (\d+) blobs$")


def _log_messages(stderr: str) -> Iterable[tuple[str, str]]:
    """(level, msg) of each logrus line; JSON lines with the configured formatter, text
    ``level=... msg="..."`` lines otherwise."""
    for line in stderr.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                yield "", line
                continue
            yield str(record.get("level", "")), str(record.get("msg", ""))
            continue
        match = re.search(r'level=(\w+) msg="((?:[^"\\]|\\.)*)"', line)
        if match:
            yield match.group(1), match.group(2).encode().decode("unicode_escape")
        else:
            yield "", line


def parse_prune_output(stdout: str, stderr: str, returncode: int = 0) -> PruneResult:
    """The typed sets of a prune run's output."""
    result = PruneResult(returncode=returncode, stdout=stdout, stderr=stderr)
    for level, msg in _log_messages(stderr):
        if m := _BLOB.match(msg):
            result.blobs.add(m.group(1))
        elif m := _VACUUM_BLOB.match(msg):
            result.blobs.add("sha256:" + m.group(1))
        elif m := _LINK.match(msg):
            result.manifest_links.add((m.group(1), m.group(2)))
        elif m := _REPO.match(msg):
            result.repositories.add(m.group(1))
        elif m := _VACUUM_REPO.match(msg):
            result.repositories.add(m.group(1).rstrip("/"))
        elif m := _INVALID.match(msg):
            result.invalid_names.add(m.group(1))
        elif m := _NO_STREAM.match(msg):
            ns, name = m.group(1), m.group(2)
            result.imagestream_missing.add(f"{ns}/{name}" if ns else name)
        elif level in ("error", "fatal", "panic"):
            result.errors.append(msg)
    for line in stdout.splitlines():
        if m := _SUMMARY.match(line.strip()):
            result.blob_count = int(m.group(1))
    return result


def run_prune(
    target: Any,
    api: ApiSource,
    workdir: Path,
    mode: PruneMode = "check",
    binary: Path | None = None,
) -> PruneResult:
    """Run ``dockerregistry -prune=<mode>`` on ``target``'s storage against ``api``.

    Raises :class:`ReferenceError` when it exits non-zero or logs an error: a reference run
    that stopped half-way names only part of the garbage and would compare as a difference.
    """
    proc = _run([f"-prune={mode}"], target, api, workdir, binary)
    result = parse_prune_output(proc.stdout, proc.stderr, proc.returncode)
    if proc.returncode != 0 or result.errors or result.blob_count is None:
        raise ReferenceError(
            f"reference -prune={mode} exited {proc.returncode}: errors {result.errors}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
    return result


# --------------------------------------------------------------------------- restore


@dataclass(frozen=True)
class BrokenTag:
    """``Broken imagestream tag "<ns>/<name>:<tag>" in position <pos>: ...``: the image
    at that position, and the digest the reference names (the image itself, or one blob)."""

    namespace: str
    name: str
    tag: str
    position: int
    #: the digest named after ``image`` / ``image blob``; None for other errors
    missing: str | None
    #: True when ``missing`` is the tag's image itself (``image "..."``)
    missing_is_image: bool
    message: str


@dataclass(frozen=True)
class LostFound:
    """``Would add image "<digest>" to imagestream "<ns>/<name>" with tag "<tag>"``."""

    namespace: str
    name: str
    digest: str
    tag: str


@dataclass
class RestoreResult:
    """What a ``-restore-mode=check*`` run printed."""

    broken_tags: set[BrokenTag] = field(default_factory=set)
    #: image digest -> message (``blob unknown to registry``, or an API error)
    broken_images: dict[str, str] = field(default_factory=dict)
    lost_found: set[LostFound] = field(default_factory=set)
    #: ``invalid manifest`` / ``unable to fetch`` lines of check-storage (repo, digest, msg)
    skipped_manifests: set[tuple[str, str, str]] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""


_BROKEN_TAG = re.compile(
    r'^Broken imagestream tag "(?P<ref>[^"]+)" in position (?P<pos>\d+): '
    r'(?:(?P<kind>image blob|image) "(?P<digest>[^"]+)": )?(?P<msg>.*)$'
)
_BROKEN_IMAGE = re.compile(r'^Broken image "(?P<digest>[^"]+)": (?P<msg>.*)$')
_WOULD_ADD = re.compile(
    r'^Would add image "(?P<digest>[^"]+)" to imagestream "(?P<ns>[^"/]*)/(?P<name>[^"]+)" '
    r'with tag "(?P<tag>[^"]+)"$'
)
_SKIPPED = re.compile(
    r"^(?:unable to fetch a manifest|bad manifest|invalid manifest|unable to get a config for "
    r"manifest|unable to get a payload of manifest|unable to get a layers of manifest) "
    r"(?P<digest>sha256:[0-9a-f]{64}) in the (?P<repo>.+) repository: (?P<msg>.*)$"
)


def parse_restore_output(stdout: str, stderr: str, returncode: int = 0) -> RestoreResult:
    """The typed sets of a restore-mode run's output."""
    result = RestoreResult(returncode=returncode, stdout=stdout, stderr=stderr)
    for line in stdout.splitlines():
        line = line.rstrip()
        if m := _BROKEN_TAG.match(line):
            ref = m.group("ref")
            stream, _, tag = ref.rpartition(":")
            namespace, _, name = stream.partition("/")
            result.broken_tags.add(
                BrokenTag(
                    namespace,
                    name,
                    tag,
                    int(m.group("pos")),
                    m.group("digest"),
                    m.group("kind") == "image",
                    m.group("msg"),
                )
            )
        elif m := _BROKEN_IMAGE.match(line):
            result.broken_images[m.group("digest")] = m.group("msg")
        elif m := _WOULD_ADD.match(line):
            result.lost_found.add(
                LostFound(m.group("ns"), m.group("name"), m.group("digest"), m.group("tag"))
            )
    for level, msg in _log_messages(stderr):
        if m := _SKIPPED.match(msg):
            result.skipped_manifests.add((m.group("repo"), m.group("digest"), m.group("msg")))
        elif level in ("error", "fatal", "panic"):
            result.errors.append(msg)
    return result


def run_restore(
    target: Any,
    api: ApiSource,
    workdir: Path,
    mode: RestoreMode = "check",
    namespace: str | None = None,
    binary: Path | None = None,
    env: Mapping[str, str] | None = None,
    server_addr: str = SERVER_ADDR,
) -> RestoreResult:
    """Run ``dockerregistry -restore-mode=<mode> -experimental``. ``recover`` creates an
    ImageStreamMapping per lost-found manifest in ``api`` (it stops at the first one the API
    refuses); the check modes change nothing."""
    args = [f"-restore-mode={mode}", "-experimental"]
    if namespace:
        args.append(f"-restore-namespace={namespace}")
    proc = _run(args, target, api, workdir, binary, env, server_addr)
    result = parse_restore_output(proc.stdout, proc.stderr, proc.returncode)
    if proc.returncode != 0 or result.errors:
        raise ReferenceError(
            f"reference -restore-mode={mode} exited {proc.returncode}: errors {result.errors}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
    return result


@dataclass
class ReferenceCheck:
    """Both check modes of one storage, for comparison with ``regprune check``."""

    database: RestoreResult
    storage: RestoreResult


# --------------------------------------------------------------------------- the API


def load_dump(server: Any, dump: Path | Mapping[str, Any]) -> None:
    """Put the Images and ImageStreams of an ``oc get ... -o json`` dump into an
    ``OpenShiftAPIServer``, as stored (tag events keep their fields and order)."""
    doc = json.loads(Path(dump).read_text()) if not isinstance(dump, Mapping) else dump
    for item in doc.get("items", []):
        kind = item.get("kind")
        if kind == "Image":
            server.add_image(item)
        elif kind == "ImageStream":
            meta = item["metadata"]
            tags = {
                entry["tag"]: [dict(event) for event in entry.get("items", [])]
                for entry in (item.get("status") or {}).get("tags") or []
            }
            server.add_imagestream(
                meta["namespace"],
                meta["name"],
                tags,
                annotations=meta.get("annotations"),
                labels=meta.get("labels"),
            )
        else:
            raise ValueError(f"unexpected kind {kind!r} in dump")

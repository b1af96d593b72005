"""OpenShift's own integrated registry (``dockerregistry``) in the test bench.

Why: users run OpenShift's registry, not Debian's distribution 2.8. Its pushes create the
``Image`` objects through an ``ImageStreamMapping`` (or POST the Image for a push by digest),
it authorizes every request with access reviews against the API, and its cache and repository
middleware are its own. Running it against :class:`tests.harness.openshift_api.OpenShiftAPIServer`
(served over HTTPS, since client-go sends a kubeconfig's token only over TLS) makes the API
hold exactly what a cluster would record for a push, so those Images can be the metadata of
end-to-end tests.

The binary comes from ``../shared/openshift-registry/dockerregistry`` (or
``$REGPRUNE_OPENSHIFT_REGISTRY``); tests that need it skip with a message saying how to build
it when it is absent. Loaded as a pytest plugin (see ``tests/conftest.py``).

Use:

- fixtures ``openshift_registry_fs`` / ``openshift_registry_s3`` (module-scoped): a started
  :class:`OpenShiftRegistry` pushing into the session's **real** OpenShift API
  (``tests/harness/openshift_apiserver.py``; emptied before and after the module, so a module using
  them must not also ask for the per-test ``openshift_apiserver`` fixture, and when a module
  uses both, the second one's setup empties what the first pushed); its ``api`` is
  that server, ``creds`` the pusher's ``(user, token)``, and the
  ``push``/``pull_ok``/``assert_pulls``/``describe`` helpers of ``tests.harness.registry_bench``
  work on it unchanged (they send ``creds``);
- :func:`start_openshift_registry` for a pair of your own (e.g. function-scoped): on a given
  API (``api=``, e.g. the real one), else on a new HTTPS API test server of its own;
- ``registry.run("-prune=check")`` runs the binary's other modes on the same config and API.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.openshift_api import OpenShiftAPIServer
from tests.harness.openshift_apiserver import RealOpenShiftAPI, _missing
from tests.harness.registry_bench import (
    SUBPROCESS_TIMEOUT,
    MotoServer,
    Registry,
    S3Storage,
    _bucket_name,
    _wait_http,
    free_port,
)

__all__ = [
    "OPENSHIFT_REGISTRY_BUILD",
    "OPENSHIFT_REGISTRY_ENV",
    "OpenShiftRegistry",
    "openshift_registry_binary",
    "require_openshift_registry",
    "start_openshift_registry",
]

OPENSHIFT_REGISTRY_ENV = "REGPRUNE_OPENSHIFT_REGISTRY"
#: Where the lead keeps the built binary: ``../shared`` next to the main checkout.
_SHARED_CANDIDATES = (
    Path(__file__).resolve().parents[3] / "shared" / "openshift-registry" / "dockerregistry",
    Path("/work/shared/openshift-registry/dockerregistry"),
)
#: The build line of ``../shared/openshift-registry/README.md`` (source: github.com/openshift/
#: image-registry at commit d4cce000f749280e593ed758791b6ef97cc01746, with its vendor/ folder).
OPENSHIFT_REGISTRY_BUILD = (
    "GOTOOLCHAIN=local GOFLAGS=-mod=vendor CGO_ENABLED=0 go build -trimpath -tags "
    '"include_gcs include_oss containers_image_openpgp" -ldflags "-s -w" '
    "-o dockerregistry ./cmd/dockerregistry"
)


def openshift_registry_binary() -> Path | None:
    """The ``dockerregistry`` binary: ``$REGPRUNE_OPENSHIFT_REGISTRY``, else ``../shared``."""
    configured = os.environ.get(OPENSHIFT_REGISTRY_ENV)
    candidates = [Path(configured)] if configured else list(_SHARED_CANDIDATES)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_openshift_registry() -> Path:
    """The binary, or skip the test saying what is missing and how to build it."""
    binary = openshift_registry_binary()
    if binary is None:
        where = os.environ.get(OPENSHIFT_REGISTRY_ENV) or " or ".join(map(str, _SHARED_CANDIDATES))
        _missing(
            f"OpenShift's registry binary is missing (looked at {where}; set "
            f"${OPENSHIFT_REGISTRY_ENV}). Build it from github.com/openshift/image-registry "
            f"(see ../shared/openshift-registry/README.md): {OPENSHIFT_REGISTRY_BUILD}"
        )
    if shutil.which("skopeo") is None:
        _missing("skopeo is missing (apt-get install skopeo)")
    return binary


class OpenShiftRegistry(Registry):
    """OpenShift's ``dockerregistry`` serving on 127.0.0.1 with ``auth: openshift`` against
    ``api``, on a folder or on S3.

    Config as the image-registry operator writes it, minus what needs a cluster: quota and
    pull-through off, metrics off, in-memory blob descriptor cache, deletes enabled. The
    registry reaches the API with a kubeconfig (HTTPS, the server's certificate as CA, the
    API's main token as the registry's service account).
    """

    def __init__(
        self,
        workdir: Path,
        api: OpenShiftAPIServer | RealOpenShiftAPI,
        *,
        binary: Path,
        s3: S3Storage | None = None,
        port: int | None = None,
        user: str = "developer",
    ) -> None:
        if not api.tls:
            raise ValueError("OpenShift's registry sends a kubeconfig token only over HTTPS")
        self.api = api
        self.binary = Path(binary)
        self.kubeconfig_path = api.kubeconfig(Path(workdir) / "kubeconfig")
        super().__init__(workdir, s3=s3, port=port)
        #: The pusher: any user name with a token the API knows (allowed everything).
        self.creds = (user, api.add_token(user))

    @property
    def advertised(self) -> str:
        """The host:port the registry writes into Images' ``dockerImageReference``: on the real
        API the cluster's internal registry name (what its streams' repositories say), on the
        test server the registry's own address (its ``registry_host``)."""
        if isinstance(self.api, RealOpenShiftAPI):
            return self.api.registry_host
        return self.url

    def prepare_push(self, repository: str) -> None:
        """The real API refuses a push into a namespace that does not exist (as a cluster
        does: the project comes first); make it, with its default ServiceAccount."""
        if isinstance(self.api, RealOpenShiftAPI):
            self.api.namespace(repository.split("/", 1)[0])

    def config(self) -> dict[str, Any]:
        """distribution's config plus ``auth: openshift`` and the ``openshift:`` section."""
        config = super().config()
        config["log"] = {"level": "info", "formatter": "text"}
        config["auth"] = {"openshift": {}}
        config["openshift"] = {
            "version": 1.0,
            "kubeconfig": str(self.kubeconfig_path),
            "server": {"addr": self.advertised},
            "auth": {"realm": "openshift"},
            "audit": {"enabled": False},
            "metrics": {"enabled": False},
            "quota": {"enabled": False, "cachettl": "1m"},
            "cache": {"blobrepositoryttl": "10m"},
            "pullthrough": {"enabled": False, "mirror": False},
            "compatibility": {"acceptschema2": True},
        }
        return config

    def _env(self) -> dict[str, str]:
        """Ours minus AWS_CA_BUNDLE, plus the address outside a cluster and the kubeconfig."""
        env = super()._env()
        for name in ("OPENSHIFT_MASTER", "BEARER_TOKEN", "BEARER_TOKEN_FILE", "KUBERNETES_MASTER"):
            env.pop(name, None)
        env["REGISTRY_OPENSHIFT_SERVER_ADDR"] = self.advertised
        env["KUBECONFIG"] = str(self.kubeconfig_path)
        return env

    def start(self) -> OpenShiftRegistry:
        """Start serving and wait until ``GET /v2/`` answers (401 without credentials)."""
        if self.running:
            return self
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [str(self.binary), str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
            )
        _wait_http(
            f"{self.base_url}/v2/", {200, 401}, 30.0, self._proc, "dockerregistry", self.log_path
        )
        return self

    def restart(self) -> OpenShiftRegistry:
        """Stop and start on the same port and storage: clears the in-memory caches."""
        self.stop()
        return self.start()

    def run(
        self, *flags: str, timeout: float = SUBPROCESS_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run the binary in another mode on this config and API, e.g. ``run("-prune=check")``
        or ``run("-restore-mode=check-database", "-experimental")``; never raises."""
        return subprocess.run(
            [str(self.binary), *flags, str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env(),
            stdin=subprocess.DEVNULL,
        )

    def garbage_collect(
        self, dry_run: bool = False, delete_untagged: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """OpenShift's binary has no garbage-collect command: its prune is :meth:`run`."""
        raise NotImplementedError("use run('-prune=check') / run('-prune=delete')")


def start_openshift_registry(
    workdir: Path,
    *,
    s3: S3Storage | None = None,
    image_strategy: bool = True,
    binary: Path | None = None,
    api: RealOpenShiftAPI | None = None,
) -> OpenShiftRegistry:
    """Start an OpenShift registry on ``api`` (the real API; left running by
    :func:`stop_pair`), else on a new HTTPS API test server of its own (stopped with it).

    On its own test server the API's ``registry_host`` is the registry's address, so stream
    repositories and the references the registry writes agree, as in a cluster; on the real
    API the registry advertises the cluster's internal registry name for the same reason.
    """
    binary = binary or require_openshift_registry()
    if api is not None:
        if not image_strategy:
            raise ValueError("the real API always runs its image strategy")
        return OpenShiftRegistry(Path(workdir), api, binary=binary, s3=s3).start()
    port = free_port()
    server = OpenShiftAPIServer(
        tls=True, registry_host=f"127.0.0.1:{port}", image_strategy=image_strategy
    )
    server.start()
    try:
        registry = OpenShiftRegistry(Path(workdir), server, binary=binary, s3=s3, port=port)
        return registry.start()
    except BaseException:
        server.stop()
        raise


def stop_pair(registry: OpenShiftRegistry) -> None:
    """Stop the registry, then its API server if it is a test server of its own."""
    try:
        registry.stop()
    finally:
        if isinstance(registry.api, OpenShiftAPIServer):
            registry.api.stop()


@pytest.fixture(scope="module")
def openshift_registry_fs(
    openshift_apiserver_session: RealOpenShiftAPI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenShiftRegistry]:
    """OpenShift's registry on a folder pushing into the real API, for the module."""
    binary = require_openshift_registry()
    api = openshift_apiserver_session
    api.reset()
    registry = start_openshift_registry(
        tmp_path_factory.mktemp("openshift-registry-fs"), api=api, binary=binary
    )
    try:
        yield registry
    finally:
        stop_pair(registry)
        api.reset()


@pytest.fixture(scope="module")
def openshift_registry_s3(
    request: pytest.FixtureRequest,
    moto: MotoServer,
    openshift_apiserver_session: RealOpenShiftAPI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OpenShiftRegistry]:
    """OpenShift's registry on the session's moto S3 (own bucket, rootdirectory ``/registry``),
    pushing into the real API."""
    binary = require_openshift_registry()
    api = openshift_apiserver_session
    api.reset()
    bucket = moto.create_bucket(_bucket_name(request.module.__name__.rsplit(".", 1)[-1]))
    registry = start_openshift_registry(
        tmp_path_factory.mktemp("openshift-registry-s3"),
        s3=S3Storage(moto, bucket, "/registry"),
        api=api,
        binary=binary,
    )
    try:
        yield registry
    finally:
        stop_pair(registry)
        api.reset()


def write_config(registry: OpenShiftRegistry) -> None:
    """Rewrite the config file after changing :meth:`OpenShiftRegistry.config` inputs."""
    registry.config_path.write_text(yaml.safe_dump(registry.config(), sort_keys=False))

"""The image of deployments/Containerfile, built with podman and run as OpenShift runs a pod.

Why: the Kubernetes work pool's Jobs run this image in the cluster every night; what matters is
that it runs there as OpenShift starts it (an arbitrary UID in group 0, a read-only root, the
ServiceAccount's token and CA mounted at the standard path, the API found through
``KUBERNETES_SERVICE_HOST``/``PORT``), so the tests run it the same way.

- :func:`build_image` makes the base with ``deployments/debian-base`` (Debian's packages through
  mmdebstrap, cached by week: no container registry can be reached here) and builds the image
  on it; podman's layer cache keeps the dependency layer while ``pyproject.toml`` is unchanged.
- :func:`pod_options` turns ``deployments/kubernetes-job-template.json`` into ``podman run``
  options, rendered as Prefect's Kubernetes worker renders it (``apply_values`` over the
  variables' defaults): working directory, security context, resources, ``emptyDir`` volumes,
  environment and the Secret's keys; plus what the kubelet adds for ``serviceAccountName``.
  A test that runs the image with these options exercises the job template itself.

podman runs here with runc and cgroupfs (``../shared/reference/containers.md``: crun refuses
this VM's hybrid cgroups); ``$REGPRUNE_PODMAN`` replaces that command line. Tests skip, saying
what to install, without podman, runc or mmdebstrap.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "deployments" / "Containerfile"
JOB_TEMPLATE = REPO / "deployments" / "kubernetes-job-template.json"
DEBIAN_BASE = REPO / "deployments" / "debian-base"
PODMAN_ENV = "REGPRUNE_PODMAN"
PODMAN_DEFAULT = "podman --runtime runc --cgroup-manager=cgroupfs"
INSTALL = "apt-get install podman runc uidmap mmdebstrap (.ci/run does)"
#: The tag the tests build (podman's store keeps it, and its layers, between runs).
IMAGE = "localhost/regprune:test"
#: A UID from the range OpenShift's restricted SCC gives a namespace; group 0 as OpenShift runs.
OPENSHIFT_USER = "1000790000:0"
#: Where the kubelet mounts a pod's ServiceAccount token, CA and namespace.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: The machine's certificate bundle: pip in the build needs it to reach the package index here.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_TIMEOUT = 1800


def podman() -> list[str]:
    """The podman command line with its global options."""
    return shlex.split(os.environ.get(PODMAN_ENV, PODMAN_DEFAULT))


def require_podman() -> None:
    """Skip, saying what to install, without podman, its runtime or mmdebstrap."""
    command = podman()
    missing = [tool for tool in (command[0], "mmdebstrap") if shutil.which(tool) is None]
    if "--runtime" in command:
        runtime = command[command.index("--runtime") + 1]
        if shutil.which(runtime) is None:
            missing.append(runtime)
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: {INSTALL}")


def host_network_options() -> list[str]:
    """Host networking (the API, registry, S3 and Prefect servers listen on 127.0.0.1) and
    ulimits this VM lets a container set (podman's defaults exceed its hard limits)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return [
        "--network",
        "host",
        "--ulimit",
        f"nofile={soft}:{hard}",
        "--ulimit",
        "nproc=4096:4096",
    ]


@dataclass
class BuiltImage:
    name: str
    base: str
    base_seconds: float
    build_seconds: float
    size_bytes: int


def build_image(log: Path, tag: str = IMAGE) -> BuiltImage:
    """The base (made or cached), then ``podman build`` of deployments/Containerfile on it from
    the repository root, as ``make image-debian`` does; fails with the log's tail."""
    started = time.monotonic()
    made = subprocess.run(
        [str(DEBIAN_BASE)], capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=REPO
    )
    if made.returncode != 0:
        pytest.fail(f"deployments/debian-base failed:\n{made.stderr[-3000:]}")
    base = made.stdout.strip()
    base_seconds = time.monotonic() - started
    started = time.monotonic()
    previous = image_id(tag)
    mounts = []
    if HOST_CA_BUNDLE.exists():
        mounts = ["-v", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"]
    with log.open("wb") as out:
        built = subprocess.run(
            [
                *podman(),
                "build",
                *host_network_options(),
                *mounts,
                "--build-arg",
                f"BASE={base}",
                "-f",
                str(CONTAINERFILE),
                "-t",
                tag,
                str(REPO),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT,
        )
    if built.returncode != 0:
        pytest.fail(f"podman build failed:\n{log.read_text(errors='replace')[-4000:]}")
    if previous and previous != image_id(tag):  # the last build's image, untagged now
        subprocess.run([*podman(), "rmi", previous], capture_output=True, timeout=120)
    size = subprocess.run(
        [*podman(), "image", "inspect", tag, "--format", "{{.Size}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    built_image = BuiltImage(tag, base, base_seconds, time.monotonic() - started, int(size.stdout))
    with log.open("a") as out:
        out.write(
            f"--- {base}: {base_seconds:.1f} s; {tag}: {built_image.build_seconds:.1f} s, "
            f"{built_image.size_bytes / 1e6:.0f} MB\n"
        )
    return built_image


def image_id(tag: str) -> str | None:
    found = subprocess.run(
        [*podman(), "image", "inspect", tag, "--format", "{{.Id}}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return found.stdout.strip() if found.returncode == 0 else None


# --------------------------------------------------------------------------------------------
# The job template, rendered and turned into podman options
# --------------------------------------------------------------------------------------------


def job_template() -> dict[str, Any]:
    return json.loads(JOB_TEMPLATE.read_text())


def render_job(values: Mapping[str, Any]) -> dict[str, Any]:
    """The Job manifest as Prefect's Kubernetes worker renders it: the variables' defaults,
    overridden by ``values``, applied to ``job_configuration`` with Prefect's own templating."""
    from prefect.utilities.templating import apply_values

    template = job_template()
    properties = template["variables"]["properties"]
    filled = {name: prop["default"] for name, prop in properties.items() if "default" in prop}
    filled.update(values)
    return apply_values(template["job_configuration"], filled)["job_manifest"]


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``4Gi``, ``512Mi``, ``1G``) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6}
    units |= {"G": 10**9, "T": 10**12, "": 1}
    match = re.fullmatch(r"(\d+)([KMGT]i?|)", quantity)
    if match is None:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(match.group(1)) * units[match.group(2)]


def cpu_count(quantity: str) -> str:
    """A Kubernetes CPU quantity (``2``, ``500m``) as podman's ``--cpus``."""
    if quantity.endswith("m"):
        return str(int(quantity[:-1]) / 1000)
    return quantity


@dataclass
class Pod:
    """What a pod of the rendered Job gets, as podman options.

    ``volumes`` maps an ``emptyDir`` volume's name to a host folder standing in for it (so the
    test reads it after the pod ends); the others become a tmpfs of the volume's size limit.
    ``secret`` is the Secret ``envFrom`` names (its keys become the environment);
    ``service_account`` the folder holding ``token``, ``ca.crt`` and ``namespace``, and ``api``
    the ``host:port`` of the API, as the kubelet provides them to a pod.
    """

    manifest: dict[str, Any]
    api: str
    service_account: Path
    secret: Mapping[str, str] = field(default_factory=dict)
    volumes: Mapping[str, Path] = field(default_factory=dict)
    user: str = OPENSHIFT_USER

    @property
    def spec(self) -> dict[str, Any]:
        return self.manifest["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        [container] = self.spec["containers"]
        return container

    def options(self) -> list[str]:
        spec, container = self.spec, self.container
        options = ["--workdir", container["workingDir"], "--user", self.user]
        if spec.get("securityContext", {}).get("runAsNonRoot"):
            assert not self.user.startswith("0:"), "runAsNonRoot with UID 0"
        security = container.get("securityContext", {})
        if security.get("readOnlyRootFilesystem"):
            # Kubernetes mounts nothing writable by itself: no tmpfs on /tmp, /run, /var/tmp
            options += ["--read-only", "--read-only-tmpfs=false"]
        if security.get("allowPrivilegeEscalation") is False:
            options += ["--security-opt", "no-new-privileges"]
        for capability in security.get("capabilities", {}).get("drop", []):
            options += ["--cap-drop", capability.lower()]
        limits = container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            options += ["--memory", str(quantity_bytes(limits["memory"]))]
        if "cpu" in limits:
            options += ["--cpus", cpu_count(str(limits["cpu"]))]
        declared = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            volume = declared[mount["name"]]
            if "emptyDir" not in volume:
                raise ValueError(f"volume {mount['name']}: only emptyDir is supported here")
            if mount["name"] in self.volumes:
                options += ["-v", f"{self.volumes[mount['name']]}:{mount['mountPath']}:rw"]
            else:
                size = volume["emptyDir"].get("sizeLimit")
                tmpfs = "rw,mode=1777" + (f",size={quantity_bytes(size)}" if size else "")
                options += ["--tmpfs", f"{mount['mountPath']}:{tmpfs}"]
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                for key, value in self.secret.items():
                    options += ["--env", f"{key}={value}"]
        env = container.get("env") or {}
        # the worker writes the ``env`` variable (a mapping) as a list of name/value pairs
        pairs = env.items() if isinstance(env, dict) else ((e["name"], e["value"]) for e in env)
        for name, value in pairs:
            options += ["--env", f"{name}={value}"]
        if spec.get("serviceAccountName"):
            host, port = self.api.rsplit(":", 1)
            options += ["--env", f"KUBERNETES_SERVICE_HOST={host}"]
            options += ["--env", f"KUBERNETES_SERVICE_PORT={port}"]
            options += ["-v", f"{self.service_account}:{SERVICE_ACCOUNT_DIR}:ro"]
        return options

    def command(self) -> list[str]:
        """The container's image and arguments (``{{ command }}``, a string the worker splits)."""
        container = self.container
        args = container.get("args") or []
        return [container["image"], *(shlex.split(args) if isinstance(args, str) else args)]

    def run(self, *, log: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """``podman run --rm`` of the pod's container; the command line, exit code, duration,
        stdout and stderr also go to ``log``."""
        args = [*podman(), "run", "--rm", *host_network_options(), *self.options()]
        args += self.command()
        started = time.monotonic()
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        seconds = time.monotonic() - started
        log.write_text(
            f"$ {shlex.join(args)}\n--- exit {done.returncode} after {seconds:.1f} s\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}\n"
        )
        return done


def service_account_folder(folder: Path, token: str, ca: bytes, namespace: str) -> Path:
    """``token``, ``ca.crt`` and ``namespace`` as the kubelet projects them into a pod,
    readable by any UID (the projected volume's default mode 0644)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "token").write_text(token)
    (folder / "ca.crt").write_bytes(ca)
    (folder / "namespace").write_text(namespace)
    for path in (folder, *folder.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def empty_dir(folder: Path) -> Path:
    """A host folder standing in for an ``emptyDir`` (world-writable, as the kubelet makes
    one), so any UID the pod runs as can write there."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    return folder

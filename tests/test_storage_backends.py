"""regprune on GCS, Azure Blob and Swift gives what it gives on the folder the tree came from.

A tree the real registry wrote (pushes, then drift: deleted images, a blob gone behind the
registry's back, abandoned uploads; tests/harness/drift.py) is copied object by object into each
emulator in that backend's own key form: GCS ``docker/...`` (behind a front that pages
listings by 1,000 as GCS does), Azure ``/docker/...`` as OpenShift's registry writes it, Swift
``files/docker/...`` with every uploaded blob a Dynamic Large Object as the driver leaves it.
On each copy regprune's ``check`` plans what it plans on the folder, OpenShift's own
``-prune=check`` (through its driver for that backend) plans the same, and ``prune --confirm``
leaves the bucket holding exactly what the folder run kept (a deleted DLO's segments go too).

Faults: a front between regprune and the emulator throttles (429, 503), fails (500) and
resets the connection of bulk delete requests, and rewrites answers so that some keys of a
batch fail; the end state must equal the fault-free run's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import EXIT_FINDINGS, EXIT_OK, main
from regprune.storage import cloud
from tests.harness.drift import build_drift, plan_from_report
from tests.harness.openshift_api import OpenShiftAPIServer
from tests.harness.registry_bench import OciLayouts, Registry
from tests.harness.storage_emulators import (
    V2,
    GcsEmulator,
    GcsPagingFront,
    _Front,
    copy_registry_tree,
    folder_files,
    run_reference,
    uploaded_blobs,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

#: No grace periods: objects copied into an emulator are all new, the folder's are not.
AGES = ["--keep-younger-than", "0s", "--upload-max-age", "0s"]


@dataclass
class Source:
    """The drifted tree, kept pristine; every run works on a copy of it."""

    root: Path
    dump: Path
    api: OpenShiftAPIServer


@pytest.fixture(scope="module")
def source(
    registry_fs: Registry, oci_layouts: OciLayouts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Source]:
    tmp = tmp_path_factory.mktemp("backends")
    drift = build_drift(registry_fs, oci_layouts, tmp)
    assert drift.dump is not None and registry_fs.storage_root is not None
    pristine = tmp / "pristine"
    shutil.copytree(registry_fs.storage_root, pristine, symlinks=True)
    api = OpenShiftAPIServer().start()
    try:
        for item in json.loads(drift.dump.read_text())["items"]:
            if item["kind"] == "Image":
                api.add_image(item)
            else:
                tags = {
                    t["tag"]: [i["image"] for i in t["items"]]
                    for t in item["status"].get("tags", [])
                }
                api.add_imagestream(item["metadata"]["namespace"], item["metadata"]["name"], tags)
        yield Source(pristine, drift.dump, api)
    finally:
        api.stop()


def run(command: str, url: str, dump: Path, out: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    report = out.parent / f"{out.name}.json"
    args = [command, "--storage", url, "--metadata", str(dump), "--out", str(out)]
    code = main([*args, "--report", str(report), *extra])
    return code, json.loads(report.read_text()) if report.exists() else {}


def reference_plan(source: Source, storage: dict[str, Any], env: dict[str, str]) -> set[str]:
    """What OpenShift's registry would delete (``-prune=check``) through its own driver."""
    proc = run_reference(
        ["-prune=check"],
        storage,
        {**env, "OPENSHIFT_MASTER": source.api.url, "BEARER_TOKEN": source.api.token},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = {line.strip() for line in proc.stdout.splitlines() if "Would delete" in line}
    assert planned, proc.stdout[-2000:] + proc.stderr[-2000:]
    return planned


def canonical(report: dict[str, Any]) -> dict[str, Any]:
    """A check report with its lists in one order (runs may list findings in any order)."""
    return {
        name: sorted(json.dumps(row, sort_keys=True) for row in rows)
        if isinstance(rows, list)
        else rows
        for name, rows in report.items()
    }


def pruned(report: dict[str, Any]) -> dict[str, Any]:
    """What a prune planned and did (not its settings, which name the storage, nor its
    quarantine's id and place, which name the run and the storage; what it holds stays)."""
    summary = dict(report["summary"])
    if "quarantine" in summary:
        summary["quarantine"] = {
            name: value
            for name, value in summary["quarantine"].items()
            if name not in ("id", "storage")
        }
    return {
        "plan": plan_from_report(report),
        "summary": summary,
        "executed": report["executed"],
    }


@dataclass
class FolderRuns:
    check: dict[str, Any]
    prune: dict[str, Any]
    after: dict[str, Any]
    kept: set[str]
    reference: set[str]


@pytest.fixture(scope="module")
def folder(source: Source, tmp_path_factory: pytest.TempPathFactory) -> FolderRuns:
    tmp = tmp_path_factory.mktemp("folder-runs")
    root = tmp / "storage"
    shutil.copytree(source.root, root, symlinks=True)
    reference = reference_plan(source, {"filesystem": {"rootdirectory": str(root)}}, {})
    code, check = run("check", str(root), source.dump, tmp / "check")
    assert code == EXIT_FINDINGS, check
    code, prune = run("prune", str(root), source.dump, tmp / "prune", *AGES, "--confirm")
    assert code == EXIT_OK, prune
    assert prune["executed"]["blobs"]["done"] > 0
    after = run("check", str(root), source.dump, tmp / "after")[1]
    return FolderRuns(check, prune, after, set(folder_files(root)), reference)


# --------------------------------------------------------------------------- backends


@dataclass
class Backend:
    """One emulator, the copy's bucket, and how its keys map to ``docker/registry/v2/...``."""

    kind: str
    emulator: Any
    bucket: str
    url: str
    env: dict[str, str]
    dlo: list[str] = field(default_factory=list)

    def kept(self) -> set[str]:
        """``docker/registry/v2/...`` paths of the objects left (all forms, segments apart)."""
        keys = self.emulator.list_keys(self.bucket)
        if self.kind == "swift":
            keys = [k.removeprefix("files/") for k in keys if k.startswith("files/")]
        if self.kind == "azure":
            keys = [k.lstrip("/") for k in keys]
        return {k for k in keys if k.startswith(V2 + "/")}

    def segments(self) -> set[str]:
        return set(self.emulator.list_keys(self.bucket, "segments/"))


def _bucket() -> str:
    return f"reg-{uuid.uuid4().hex[:12]}"


def make_backend(kind: str, emulator: Any, source: Source, front_url: str | None = None) -> Backend:
    bucket = emulator.create_bucket(_bucket())
    dlo = uploaded_blobs(source.root) if kind == "swift" else []
    copy_registry_tree(source.root, emulator, bucket, swift_dlo=dlo, segment_size=4096)
    env = dict(emulator.env)
    url = {"gcs": "gs", "azure": "az", "swift": "swift"}[kind] + f"://{bucket}"
    if kind == "gcs" and front_url:
        env["STORAGE_EMULATOR_HOST"] = front_url
    return Backend(kind, emulator, bucket, url, env, dlo)


@pytest.fixture(scope="module")
def gcs_front(gcs_emulator: GcsEmulator) -> Iterator[GcsPagingFront]:
    front = GcsPagingFront(gcs_emulator.endpoint)
    front.start()
    try:
        yield front
    finally:
        front.stop()


EMULATORS = ("gcs", "azure", "swift")


@pytest.fixture(params=EMULATORS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def emulator_of(request: pytest.FixtureRequest, kind: str) -> Any:
    return request.getfixturevalue(
        {"gcs": "gcs_emulator", "azure": "azurite"}.get(kind, "swift_aio")
    )


@pytest.fixture
def backend(
    request: pytest.FixtureRequest, kind: str, source: Source, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    emulator = emulator_of(request, kind)
    front = request.getfixturevalue("gcs_front").url if kind == "gcs" else None
    made = make_backend(kind, emulator, source, front)
    for name in [n for n in os.environ if n.startswith(("AZURE_", "OS_", "ST_"))]:
        monkeypatch.delenv(name)
    for name, value in made.env.items():
        monkeypatch.setenv(name, value)
    return made


def test_check_and_prune_match_the_folder(
    backend: Backend, source: Source, folder: FolderRuns, tmp_path: Path
) -> None:
    """Same plan as on the folder (regprune's and the reference's through its driver), and
    after ``prune --confirm`` the bucket holds exactly what the folder run kept."""
    storage, ref_env = backend.emulator.reference_storage(backend.bucket)
    assert reference_plan(source, storage, ref_env) == folder.reference

    code, check = run("check", backend.url, source.dump, tmp_path / "check")
    assert code == EXIT_FINDINGS, check
    assert canonical(check) == canonical(folder.check)

    code, prune = run("prune", backend.url, source.dump, tmp_path / "prune", *AGES, "--confirm")
    assert code == EXIT_OK, prune
    assert pruned(prune) == pruned(folder.prune)
    assert backend.kept() == folder.kept
    if backend.kind == "swift":
        # quarantined DLOs keep their segments (undo moves them back whole); once their
        # quarantine is purged the deleted DLOs' segments are gone and the kept ones' stay
        assert len(backend.segments()) == len(backend.dlo)
        purge = ["purge", str(tmp_path / "prune"), "--storage", backend.url, "--confirm"]
        assert main([*purge, "--out", str(tmp_path / "purge")]) == EXIT_OK
        kept_dlo = [rel for rel in backend.dlo if rel in folder.kept]
        assert len(backend.segments()) == len(kept_dlo) > 0

    again = run("check", backend.url, source.dump, tmp_path / "again")[1]
    assert canonical(again) == canonical(folder.after)


# --------------------------------------------------------------------------- faults


class FaultFront(_Front):
    """Forwards to the emulator (or to another front) and spoils bulk delete requests with
    the faults queued in :attr:`faults`: ``429``/``500``/``503`` answered instead,
    ``reset-before``/``reset-after`` a dropped connection before or after the emulator did
    the work, ``partial`` the answer rewritten so its first key failed (503) though the
    emulator deleted it."""

    def __init__(self, upstream: str, kind: str) -> None:
        super().__init__(upstream)
        self.kind = kind
        self.faults: list[str] = []
        self.spoiled: list[str] = []
        self.bulk_requests = 0

    def bulk_delete(self, method: str, path: str) -> bool:
        if method != "POST":
            return False
        if self.kind == "gcs":
            return path.startswith("/batch/storage/v1")
        if self.kind == "azure":
            return "comp=batch" in path
        return "bulk-delete" in path

    def respond(
        self, method: str, path: str, headers: Any, body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if not self.bulk_delete(method, path):
            return self.forward(method, path, headers, body)
        self.bulk_requests += 1
        fault = self.faults.pop(0) if self.faults else None
        if fault:
            self.spoiled.append(fault)
        if fault in ("429", "500", "503"):
            reason = {"429": "Too Many Requests", "500": "Internal", "503": "Slow Down"}[fault]
            return (
                int(fault),
                [("Content-Type", "text/plain"), ("Retry-After", "0")],
                reason.encode(),
            )
        if fault == "reset-before":
            raise ConnectionResetError("fault injected before forwarding")
        status, reply_headers, data = self.forward(method, path, headers, body)
        if fault == "reset-after":
            raise ConnectionResetError("fault injected after forwarding")
        if fault == "partial":
            data = self.fail_first(data, body or b"")
        return status, reply_headers, data

    def fail_first(self, data: bytes, request: bytes) -> bytes:
        if self.kind == "swift":
            answer = json.loads(data)
            first = request.decode().splitlines()[0]
            answer["Errors"] = [*answer.get("Errors", []), [first, "503 Service Unavailable"]]
            answer["Response Status"] = "400 Bad Request"
            return json.dumps(answer).encode()
        # GCS and Azure: multipart answers, one "HTTP/1.1 2xx ..." status line per part
        return re.sub(
            rb"HTTP/1\.1 20[024] [A-Za-z ]+", b"HTTP/1.1 503 Service Unavailable", data, count=1
        )


FAULTS = ["503", "partial", "429", "reset-before", "500", "reset-after", "partial"]


def test_bulk_deletes_survive_faults(
    request: pytest.FixtureRequest,
    kind: str,
    source: Source,
    folder: FolderRuns,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Throttling, server errors, resets and partial batch failures on the bulk deletes are
    retried: the bucket ends as the fault-free folder run left it, every action done."""
    emulator = emulator_of(request, kind)
    upstream = request.getfixturevalue("gcs_front").url if kind == "gcs" else None
    made = make_backend(kind, emulator, source, upstream)
    base = upstream or emulator.endpoint
    base = base.rsplit("/", 1)[0] if kind == "azure" else base
    front = FaultFront(base, kind)
    front.start()
    try:
        env = dict(made.env)
        if kind == "gcs":
            env["STORAGE_EMULATOR_HOST"] = front.url
        elif kind == "azure":
            conn = env["AZURE_STORAGE_CONNECTION_STRING"]
            env["AZURE_STORAGE_CONNECTION_STRING"] = conn.replace(base, front.url)
        else:
            env["OS_AUTH_URL"] = env["ST_AUTH"] = front.url + "/auth/v1.0"
        for name in [n for n in os.environ if n.startswith(("AZURE_", "OS_", "ST_"))]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        front.faults = list(FAULTS)
        code, prune = run("prune", made.url, source.dump, tmp_path / "prune", *AGES, "--confirm")
    finally:
        front.stop()
    assert front.spoiled == FAULTS, (front.spoiled, front.bulk_requests)
    assert code == EXIT_OK, prune
    assert pruned(prune) == pruned(folder.prune)
    assert made.kept() == folder.kept


def test_a_delete_that_keeps_failing_is_reported_and_kept(
    request: pytest.FixtureRequest,
    source: Source,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bulk deletes answered 503 every time (Azure here): nothing is counted done, every
    planned object is still there, and the run says it failed."""
    emulator = emulator_of(request, "azure")
    made = make_backend("azure", emulator, source)
    base = emulator.endpoint.rsplit("/", 1)[0]
    front = FaultFront(base, "azure")
    front.start()
    try:
        conn = made.env["AZURE_STORAGE_CONNECTION_STRING"].replace(base, front.url)
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
        monkeypatch.setattr(cloud, "DELETE_ATTEMPTS", 2)
        front.faults = ["503"] * 10_000
        before = made.kept()
        fast = ["--storage-option", "retry_total=0"]  # no SDK retries on top of regprune's
        code, prune = run(
            "prune", made.url, source.dump, tmp_path / "prune", *AGES, "--confirm", *fast
        )
    finally:
        front.stop()
    assert code != EXIT_OK
    assert prune.get("executed", {}).get("blobs", {}).get("done", 0) == 0
    assert made.kept() == before


# --------------------------------------------------------------------------- recovery


def recover(source: Source, url: str, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``check --recover --confirm`` against an API server holding the dump's objects (a
    fresh one: recovery writes to it); the report and the tags the server holds afterwards."""
    api = OpenShiftAPIServer().start()
    try:
        streams = []
        for item in json.loads(source.dump.read_text())["items"]:
            if item["kind"] == "Image":
                api.add_image(item)
            else:
                namespace, name = item["metadata"]["namespace"], item["metadata"]["name"]
                tags = {
                    t["tag"]: [i["image"] for i in t["items"]]
                    for t in item["status"].get("tags", [])
                }
                api.add_imagestream(namespace, name, tags)
                streams.append((namespace, name))
        kubeconfig = api.kubeconfig(out.parent / f"{out.name}-kubeconfig")
        report = out.parent / f"{out.name}.json"
        args = ["check", "--storage", url, "--metadata", "kube", "--kubeconfig", str(kubeconfig)]
        code = main([*args, "--out", str(out), "--report", str(report), "--recover", "--confirm"])
        assert code in (EXIT_OK, EXIT_FINDINGS), code
        tags = {}
        for namespace, name in [*streams, ("gone", "tool")]:
            stream = api.imagestream(namespace, name)
            if stream is not None:
                tags[f"{namespace}/{name}"] = sorted(
                    (t["tag"], tuple(i["image"] for i in t["items"]))
                    for t in stream["status"].get("tags") or []
                )
        return json.loads(report.read_text()), tags
    finally:
        api.stop()


@pytest.fixture(scope="module")
def folder_recovery(
    source: Source, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("folder-recovery")
    root = tmp / "storage"
    shutil.copytree(source.root, root, symlinks=True)
    report, tags = recover(source, str(root), tmp / "recover")
    assert [r for r in report["recovered"] if r["status"] != "added"] == []
    assert len(report["recovered"]) > 0
    return report, tags


def test_recovery_matches_the_folder(
    backend: Backend,
    source: Source,
    folder_recovery: tuple[dict[str, Any], dict[str, Any]],
    tmp_path: Path,
) -> None:
    """``check --recover --confirm`` restores the same images and tags from each backend as
    from the folder (it reads the manifests through the backend)."""
    report, tags = recover(source, backend.url, tmp_path / "recover")
    expected_report, expected_tags = folder_recovery
    assert canonical({"recovered": report["recovered"]}) == canonical(
        {"recovered": expected_report["recovered"]}
    )
    assert tags == expected_tags


# --------------------------------------------------------------------------- Azure forms


def test_an_azure_container_with_both_name_forms_is_reported_not_merged(
    azurite: Any, source: Source, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half the tree as ``/docker/...`` (OpenShift's registry), half as ``docker/...``
    (distribution v3): the slash form is read and deleted; every object of the other form is
    an anomaly, never read as a registry file and never deleted."""
    from regprune.storage import StorageSpec, open_storage
    from regprune.storage.azure import _FORMS

    for name, value in azurite.env.items():
        monkeypatch.setenv(name, value)
    bucket = azurite.create_bucket(_bucket())
    copied = copy_registry_tree(source.root, azurite, bucket, azure_form="mixed")
    plain = {rel for rel, key in copied.keys.items() if not key.startswith("/")}
    assert plain and len(plain) < len(copied.keys)
    _FORMS.clear()
    storage = open_storage(StorageSpec(f"az://{bucket}"))
    walked = list(storage.walk(""))
    files = {obj.key for obj in walked if obj.problem is None}
    odd = {obj.key: obj.problem for obj in walked if obj.problem is not None}
    assert files == {rel.removeprefix(V2 + "/") for rel in copied.keys if rel not in plain}
    assert set(odd) == plain
    assert all(problem and "other Azure form" in problem for problem in odd.values())
    # deleting touches the form in use only
    some = sorted(files)[0]
    assert storage.delete_many([some]) == {some: None}
    left = set(azurite.list_keys(bucket))
    assert f"/{V2}/{some}" not in left
    assert {key for key in left if not key.startswith("/")} == plain

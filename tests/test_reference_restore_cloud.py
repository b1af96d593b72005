"""OpenShift's own consistency check and recovery next to regprune's, on GCS, Azure and Swift.

Why: ``tests/test_reference_diff.py`` compares ``-restore-mode`` with ``regprune check`` on a
folder and on S3 only; on the other backends each tool reads storage through its own driver
(GCS ``docker/...``, Azure ``/docker/...``, Swift ``files/docker/...`` with Dynamic Large
Objects), so a driver quirk on either side would go unseen there.

One drifted tree per module, written by OpenShift's registry on a folder (the ``openshift-fs``
scenario of ``test_reference_diff``: its pushes record the Images and ImageStreams in the
HTTPS API server, then drift in the cluster and in storage), is copied object by object into
each emulator in that backend's key form. On that copy:

- check: the reference's ``-restore-mode=check`` (and ``check-database``/``check-storage``)
  through its own driver names what it names on the folder, and ``regprune check`` names that
  adjusted by the rules of the table in docs/comparison.md
  (the rule functions of ``test_reference_diff``, the same rows);
- recover: two identical copies and two identical API servers (loaded from the scenario's
  dump): ``-restore-mode=recover`` on one, ``regprune check --recover --confirm`` on the
  other; the tags and Images each created through the API are compared, again by the rules.

The scenario is built on the real OpenShift API (tests/harness/openshift_apiserver.py); the
recoveries run on API test servers: they compare what each tool *sends* (the test server keeps an
Image as sent, ``image_as_sent``), two servers side by side. Recovery against the real server, and
what it stores, is tests/test_recovery.py's.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import EXIT_FINDINGS, EXIT_OK, main
from tests.harness.openshift_api import OpenShiftAPIServer
from tests.harness.reference import (
    LostFound,
    ReferenceError,
    RestoreResult,
    load_dump,
    require_reference,
    run_restore,
)
from tests.harness.registry_bench import OciLayouts
from tests.harness.storage_emulators import GcsDownloadProxy, copy_registry_tree, uploaded_blobs
from tests.test_reference_diff import (
    Facts,
    Scenario,
    build_openshift_scenario,
    rule_broken_images,
    rule_broken_tags,
    rule_invalid_manifests,
    rule_lost_found,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

BACKENDS = ("gcs", "azure", "swift")
#: the emulator fixture of each backend (tests/harness/storage_emulators.py)
EMULATOR_FIXTURE = {"gcs": "gcs_emulator", "azure": "azurite", "swift": "swift_aio"}
SCHEME = {"gcs": "gs", "azure": "az", "swift": "swift"}


@pytest.fixture(scope="module", autouse=True)
def reference_binary() -> Path:
    """Skip the module before anything starts when the reference binary is missing."""
    return require_reference()


# --------------------------------------------------------------------------- the tree


@dataclass
class Source:
    """The drifted tree on a folder (kept pristine), its cluster and what is known of both."""

    scenario: Scenario
    root: Path
    #: the same tree without the repositories whose name no ImageStream can hold
    recover_root: Path
    #: the host the registry's Images name (``dockerImageReference``)
    registry_host: str
    facts: Facts
    #: repositories regprune's prune deletes, and the ones among them with an invalid name
    repositories: set[str]
    invalid: set[str]
    #: the reference's ``-restore-mode=check`` on the folder
    folder_check: RestoreResult

    def api(self, stack: ExitStack) -> OpenShiftAPIServer:
        """A fresh HTTPS API server holding the scenario's Images and ImageStreams."""
        api = stack.enter_context(OpenShiftAPIServer(tls=True, registry_host=self.registry_host))
        load_dump(api, self.scenario.dump)
        return api


def regprune_report(args: list[str], report: Path, env: dict[str, str]) -> dict[str, Any]:
    """``regprune <args> --report REPORT`` with ``env`` set; its JSON report."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        code = main([*args, "--report", str(report)])
    assert code in (EXIT_OK, EXIT_FINDINGS), f"regprune {args[0]} exited {code}"
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def source(
    request: pytest.FixtureRequest,
    oci_layouts: OciLayouts,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Source]:
    tmp = tmp_path_factory.mktemp("restore-cloud")
    with ExitStack() as stack:
        scenario = build_openshift_scenario(request, oci_layouts, tmp, stack, s3=False)
        registry = scenario.storage
        registry.stop()  # the tree is final: nothing writes to it from here
        root = Path(registry.storage_root)
        facts = Facts.of(scenario)
        plan = regprune_report(
            [
                "prune", "--storage", str(root), "--metadata", str(scenario.dump),
                "--out", str(tmp / "plan"), "--keep-younger-than", "0s",
                "--upload-max-age", "0s",
            ],
            tmp / "plan.json",
            {},
        )  # fmt: skip
        repositories = {r["repository"] for r in plan["repositories"]}
        invalid = {r["repository"] for r in plan["repositories"] if r["reason"] == "invalid-name"}
        assert invalid  # the drift writes two (lonely, ns/deep/tool)
        recover_root = tmp / "recover-tree"
        shutil.copytree(root, recover_root, symlinks=True)
        for repository in invalid:
            shutil.rmtree(recover_root / "docker/registry/v2/repositories" / repository)
        folder_check = run_restore(registry, scenario.api, tmp / "folder", "check")
        yield Source(
            scenario,
            root,
            recover_root,
            registry.advertised,
            facts,
            repositories,
            invalid,
            folder_check,
        )


# --------------------------------------------------------------------------- backends


@dataclass
class Backend:
    """One emulator and how each tool is pointed at a bucket of it."""

    kind: str
    emulator: Any
    #: GCS: what lets the reference's driver read object data (see GcsDownloadProxy)
    proxy: GcsDownloadProxy | None = None

    def copy(self, root: Path) -> str:
        """A new bucket holding the tree at ``root`` (Swift: every uploaded blob a DLO)."""
        bucket = self.emulator.create_bucket(f"rst-{uuid.uuid4().hex[:12]}")
        dlo = uploaded_blobs(root) if self.kind == "swift" else []
        copy_registry_tree(root, self.emulator, bucket, swift_dlo=dlo, segment_size=4096)
        return bucket

    def url(self, bucket: str) -> str:
        return f"{SCHEME[self.kind]}://{bucket}"

    def reference_storage(self, bucket: str) -> tuple[dict[str, Any], dict[str, str]]:
        target = self.proxy or self.emulator
        section, env = target.reference_storage(bucket)
        return dict(section), dict(env)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    emulator = request.getfixturevalue(EMULATOR_FIXTURE[request.param])
    if request.param != "gcs":
        yield Backend(request.param, emulator)
        return
    # The GCS driver reads blobs from storage.googleapis.com itself: through the proxy
    proxy = GcsDownloadProxy(emulator, tmp_path_factory.mktemp("gcs-proxy")).start()
    try:
        yield Backend(request.param, emulator, proxy)
    finally:
        proxy.stop()


# --------------------------------------------------------------------------- check


@dataclass
class Checks:
    """Both tools' checks of one copy."""

    combined: RestoreResult
    database: RestoreResult
    storage: RestoreResult
    ours: dict[str, Any]


@pytest.fixture(scope="module")
def checks(
    backend: Backend, source: Source, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Checks]:
    tmp = tmp_path_factory.mktemp(f"check-{backend.kind}")
    bucket = backend.copy(source.root)
    storage, ref_env = backend.reference_storage(bucket)
    with ExitStack() as stack:
        api = source.api(stack)
        results = {
            mode: run_restore(storage, api, tmp / mode, mode, env=ref_env)
            for mode in ("check", "check-database", "check-storage")
        }
    args = ["check", "--storage", backend.url(bucket), "--metadata", str(source.scenario.dump)]
    ours = regprune_report(
        [*args, "--out", str(tmp / "ours")], tmp / "ours.json", backend.emulator.env
    )
    yield Checks(results["check"], results["check-database"], results["check-storage"], ours)


def test_the_reference_checks_the_copy_as_it_checks_the_folder(
    checks: Checks, source: Source
) -> None:
    """Through its driver for the backend the reference names exactly what it names on the
    folder; ``check`` is ``check-storage`` plus ``check-database`` there too."""
    folder = source.folder_check
    assert checks.combined.broken_tags == folder.broken_tags
    assert checks.combined.broken_images == folder.broken_images
    assert checks.combined.lost_found == folder.lost_found
    assert checks.combined.skipped_manifests == folder.skipped_manifests
    assert checks.database.broken_tags == folder.broken_tags
    assert checks.database.broken_images == folder.broken_images
    assert checks.storage.lost_found == folder.lost_found
    # the drift is there to be found (else the comparisons below test nothing)
    assert folder.broken_tags and folder.broken_images and folder.lost_found


def test_broken_tags_and_images_differ_only_by_the_rules(checks: Checks, source: Source) -> None:
    ref, f = checks.combined, source.facts
    tags = rule_broken_tags(ref.broken_tags, ref.broken_images, f)
    assert {
        (r["namespace"], r["name"], r["tag"], r["position"], r["image"], r["missing"])
        for r in checks.ours["broken_imagestream_tags"]
    } == tags
    images = rule_broken_images(ref.broken_tags, ref.broken_images, f)
    assert {(r["image"], r["missing"]) for r in checks.ours["broken_images"]} == images


def test_lost_manifests_differ_only_by_the_rules(checks: Checks, source: Source) -> None:
    ref, f = checks.combined, source.facts
    ours = {
        LostFound(r["namespace"], r["name"], r["digest"], r["tag"])
        for r in checks.ours["lost_found"]
    }
    assert ours == rule_lost_found(ref.lost_found, f, source.invalid)
    invalid = rule_invalid_manifests(ref.skipped_manifests, f, source.repositories, source.invalid)
    assert {(r["repository"], r["digest"]) for r in checks.ours["invalid_manifests"]} == invalid
    assert ours


# --------------------------------------------------------------------------- recover


@dataclass
class Created:
    """What a recovery created through the API: tags added to streams, streams created, and
    the new Images as the tool sent them."""

    #: (namespace, name, tag, digest)
    tags: set[tuple[str, str, str, str]]
    streams: set[tuple[str, str]]
    images: dict[str, dict[str, Any]]
    #: the same Images as the API server stores them (after the apiserver's image strategy)
    stored: dict[str, dict[str, Any]]


def created(api: OpenShiftAPIServer, before: dict[str, Any]) -> Created:
    """The difference between ``api`` now and the dump it was loaded from."""
    old_tags = set()
    old_streams = set()
    old_images = set()
    for item in before["items"]:
        meta = item["metadata"]
        if item["kind"] == "Image":
            old_images.add(meta["name"])
            continue
        old_streams.add((meta["namespace"], meta["name"]))
        for t in (item.get("status") or {}).get("tags") or []:
            for event in t.get("items") or []:
                old_tags.add((meta["namespace"], meta["name"], t["tag"], event["image"]))
    tags = set()
    streams = set()
    for stream in api.imagestreams():
        key = (stream["metadata"]["namespace"], stream["metadata"]["name"])
        if key not in old_streams:
            streams.add(key)
        for t in stream["status"].get("tags") or []:
            for event in t.get("items") or []:
                tags.add((*key, t["tag"], event["image"]))
    stored = {
        i["metadata"]["name"]: i for i in api.images() if i["metadata"]["name"] not in old_images
    }
    images = {digest: api.image_as_sent(digest) or {} for digest in stored}
    return Created(tags - old_tags, streams, images, stored)


@dataclass
class Recoveries:
    reference: Created
    ours: Created
    ours_report: dict[str, Any]
    #: the reference's check on the recover tree, before either recovery
    check: RestoreResult


@pytest.fixture(scope="module")
def recoveries(
    backend: Backend, source: Source, tmp_path_factory: pytest.TempPathFactory
) -> Recoveries:
    tmp = tmp_path_factory.mktemp(f"recover-{backend.kind}")
    before = json.loads(source.scenario.dump.read_text())
    with ExitStack() as stack:
        bucket = backend.copy(source.recover_root)
        storage, ref_env = backend.reference_storage(bucket)
        api = source.api(stack)
        check = run_restore(storage, api, tmp / "check", "check", env=ref_env)
        run_restore(
            storage, api, tmp / "ref", "recover", env=ref_env, server_addr=source.registry_host
        )
        reference = created(api, before)

        bucket = backend.copy(source.recover_root)
        api = source.api(stack)
        kubeconfig = api.kubeconfig(tmp / "kubeconfig")
        args = ["check", "--storage", backend.url(bucket), "--metadata", "kube"]
        args += ["--kubeconfig", str(kubeconfig), "--out", str(tmp / "ours")]
        args += ["--recover", "--confirm", "--registry-host", source.registry_host]
        report = regprune_report(args, tmp / "ours.json", backend.emulator.env)
        ours = created(api, before)
    return Recoveries(reference, ours, report, check)


def test_recovery_restores_what_the_reference_restores(
    recoveries: Recoveries, source: Source
) -> None:
    """The same lost manifests get the same ``lost-found-<hex>`` tags, in the same streams
    (a missing stream created), minus the rule "lost-found of list children"."""
    f = source.facts
    ref = recoveries.reference
    expected = {
        (c.namespace, c.name, c.tag, c.digest)
        for c in rule_lost_found(
            {LostFound(ns, name, digest, tag) for ns, name, tag, digest in ref.tags}, f, set()
        )
    }
    assert recoveries.ours.tags == expected
    assert {(ns, name) for ns, name, _, _ in expected} >= recoveries.ours.streams
    assert recoveries.ours.streams == ref.streams
    assert all(r["status"] == "added" for r in recoveries.ours_report["recovered"])
    # what the reference's own check called lost is what it restored
    assert {(c.namespace, c.name, c.tag, c.digest) for c in recoveries.check.lost_found} == (
        ref.tags
    )
    assert expected


#: What both tools put in a restored Image, compared field by field.
IMAGE_FIELDS = (
    "dockerImageReference",
    "dockerImageManifestMediaType",
    "dockerImageLayers",
    "dockerImageManifest",
    "dockerImageConfig",
)


def test_restored_images_are_the_ones_the_reference_sends(recoveries: Recoveries) -> None:
    """Each Image regprune created carries what the reference's Image for the same manifest
    carries: reference, media type, layers, manifest and config texts, annotations; and the
    cluster stores the same Image for both, with the metadata the apiserver derives from the
    texts (Size, Architecture, Os, Created, Config). (Found by this comparison: regprune sent
    only ``dockerImageMetadata.Id``, so a restored Image had no Size, which the LimitRange
    check of prune-images reads, and no platform.)"""
    ref, ours = recoveries.reference, recoveries.ours
    assert set(ours.images) <= set(ref.images)
    assert ours.images
    for digest, image in ours.images.items():
        theirs = ref.images[digest]
        for name in IMAGE_FIELDS:
            assert image.get(name) == theirs.get(name), (digest, name)
        assert image["metadata"].get("annotations") == theirs["metadata"].get("annotations")
        stored, theirs_stored = ours.stored[digest], ref.stored[digest]
        for name in (*IMAGE_FIELDS, "dockerImageMetadata", "dockerImageManifests"):
            assert stored.get(name) == theirs_stored.get(name), (digest, name)
        assert stored["dockerImageMetadata"].get("Size")


def test_the_reference_recovery_stops_at_a_mapping_the_api_refuses(
    source: Source, tmp_path: Path
) -> None:
    """On the whole tree (with ``lonely`` and ``ns/deep/tool``, whose names no ImageStream
    can hold) the reference's ``recover`` dies at the first mapping the API refuses
    (``log.Fatalf``: the stream ``deep/tool`` is no DNS subdomain), so the repositories after
    it are never restored and ``check-database`` never runs; regprune proposes nothing in
    such a repository and restores everything else. The driver plays no part: on the folder.
    """
    f = source.facts
    with ExitStack() as stack:
        api = source.api(stack)
        with pytest.raises(ReferenceError) as stopped:
            run_restore(
                source.scenario.storage,
                api,
                tmp_path / "ref",
                "recover",
                server_addr=source.registry_host,
            )
        before = json.loads(source.scenario.dump.read_text())
        reference = created(api, before)
        root = tmp_path / "storage"
        shutil.copytree(source.root, root, symlinks=True)
        api = source.api(stack)
        args = ["check", "--storage", str(root), "--metadata", "kube", "--kubeconfig"]
        args += [str(api.kubeconfig(tmp_path / "kubeconfig")), "--out", str(tmp_path / "ours")]
        args += ["--recover", "--confirm", "--registry-host", source.registry_host]
        report = regprune_report(args, tmp_path / "ours.json", {})
        ours = created(api, before)
    assert "Storage failed" in str(stopped.value) and "ns/deep/tool" in str(stopped.value)
    # the reference restores what its check proposes in the repositories before the refused
    # one (storage is walked in name order), and nothing after it
    proposed = {(c.namespace, c.name, c.tag, c.digest) for c in source.folder_check.lost_found}
    before_stop = {c for c in proposed if f"{c[0]}/{c[1]}" < "ns/deep/tool"}
    assert reference.tags == before_stop
    assert any(f"{c[0]}/{c[1]}" > "ns/deep/tool" for c in proposed - reference.tags)
    # regprune restores every candidate its check names (the reference's, by the rules)
    expected = {
        (c.namespace, c.name, c.tag, c.digest)
        for c in rule_lost_found(source.folder_check.lost_found, f, source.invalid)
    }
    assert ours.tags == expected and expected
    assert all(r["status"] == "added" for r in report["recovered"])

"""regprune next to OpenShift's own hard prune and consistency check, object by object.

On one drifted registry (storage + API), the reference (``dockerregistry -prune=check`` and
``-restore-mode=check-database|check-storage``, see ``tests/harness/reference.py``) and regprune
(``prune`` dry run and ``check``) each name what they would delete and what is broken. The
expected regprune result is the reference's result adjusted by the named rules below — each a
deliberate difference documented in docs/comparison.md —
so any other difference fails a test. The rules read their inputs from the metadata and the
storage listing only (never from how the scenario was built), so the scenario is a parameter:
in ``fs`` and ``s3`` the Debian registry writes the tree and the tests write the Images (a
dump regprune reads, loaded into the real OpenShift API for the reference); in
``openshift-fs`` and ``openshift-s3`` OpenShift's registry itself writes the tree and its
pushes record the Images and ImageStreams in the real OpenShift API
(``tests/harness/openshift_apiserver.py``), which both tools then read.

Grace periods are off on regprune's side (``--keep-younger-than 0s --upload-max-age 0s``):
the reference has none, and young objects would mask differences.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import EXIT_FINDINGS, EXIT_OK, main
from tests.conftest import imagestream, rows, write_dump
from tests.harness.drift import HOST, Drift, build_drift, delete_blob_from_storage
from tests.harness.openshift_apiserver import RealOpenShiftAPI
from tests.harness.openshift_registry import (
    require_openshift_registry,
    start_openshift_registry,
    stop_pair,
)
from tests.harness.reference import (
    BrokenTag,
    LostFound,
    PruneResult,
    RestoreResult,
    load_dump,
    require_reference,
    run_prune,
    run_restore,
)
from tests.harness.registry_bench import (
    MotoServer,
    OciLayouts,
    Registry,
    S3Storage,
    push,
    start_upload,
    upload_blob_without_manifest,
)

pytestmark = [pytest.mark.slow]

NO_GRACE = ("--keep-younger-than", "0s", "--upload-max-age", "0s")
EXTERNAL_LAYER = "sha256:" + "e" * 64
EXTERNAL_IMAGE = "sha256:" + "f" * 64
GHOST_OCI = "sha256:" + "c" * 64


@pytest.fixture(scope="module", autouse=True)
def reference_binary() -> Path:
    """Skip the module before anything starts when the reference binary is missing."""
    return require_reference()


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    """One registry storage and its cluster metadata, as both tools read them.

    ``storage`` is anything ``tests.harness.reference`` takes (``config()["storage"]``) with a
    ``storage_url`` and ``list_storage()`` (a ``tests.harness.registry_bench.Registry``); ``dump``
    is the metadata (regprune reads it unless ``kubeconfig`` is given: then the API itself),
    ``api`` the real API serving the same metadata to the reference.
    """

    name: str
    storage: Any
    dump: Path
    api: RealOpenShiftAPI
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    kubeconfig: Path | None = None

    def items(self) -> list[dict[str, Any]]:
        return list(json.loads(self.dump.read_text())["items"])


def _extend_drift(drift: Drift, layouts: OciLayouts, tmp: Path) -> Path:
    """More drift on top of ``tests.harness.drift``: a deeper (invalid) repository name, a list's
    child that lost both its layers, an Image whose manifest blob is gone, an unmanaged
    Image (imported, its blobs live elsewhere) in a tag, and OCI manifests: one kept, with a
    missing Image in its tag's history (position 1), one whose Image was deleted."""
    registry, images = drift.registry, drift.images
    push(registry, *layouts["tool"], "ns/deep/tool:1")
    oci = push(registry, *layouts["base"], "ns/oci:1", format="oci")
    push(registry, *layouts["app-v1"], "ns/oci:gone", format="oci")
    arm64 = images["multi"].children[1]
    for layer in arm64.layers:  # both of its own layers (31, 32): two blobs missing
        delete_blob_from_storage(registry, layer.digest)
    delete_blob_from_storage(registry, images["base"].digest)
    assert drift.dump is not None
    items = json.loads(drift.dump.read_text())["items"]
    external = {
        "apiVersion": "image.openshift.io/v1",
        "kind": "Image",
        "metadata": {"name": EXTERNAL_IMAGE, "annotations": {}},
        "dockerImageReference": f"quay.io/example/app@{EXTERNAL_IMAGE}",
        "dockerImageManifestMediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "dockerImageLayers": [{"name": EXTERNAL_LAYER, "size": 10, "mediaType": ""}],
        "dockerImageMetadata": {"kind": "DockerImage", "apiVersion": "image.openshift.io/1.0"},
    }
    items.append(external)
    items += oci.openshift_images(HOST)
    items.append(imagestream("ns", "oci", {"1": [oci.digest, GHOST_OCI]}, HOST))
    for item in items:
        meta = item["metadata"]
        if item["kind"] == "ImageStream" and (meta["namespace"], meta["name"]) == ("ns", "app"):
            tags = {t["tag"]: [e["image"] for e in t["items"]] for t in item["status"]["tags"]}
            tags["external"] = [EXTERNAL_IMAGE]
            item.update(imagestream("ns", "app", tags, HOST))
    return write_dump(tmp / "dump.json", items)


def _s3_storage(
    request: pytest.FixtureRequest, tmp: Path, prefix: str
) -> tuple[S3Storage, dict[str, str]]:
    """A bucket of the session's moto S3, and the environment regprune reads it with."""
    moto: MotoServer = request.getfixturevalue("moto")
    storage = S3Storage(moto, moto.create_bucket(f"{prefix}-{tmp.name[-6:]}"), "/registry")
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": moto.endpoint_url,
        "AWS_REGION": "us-east-1",
    }
    return storage, env


def build_debian_scenario(
    request: pytest.FixtureRequest,
    layouts: OciLayouts,
    tmp: Path,
    stack: ExitStack,
    s3: bool,
) -> Scenario:
    """The drift of ``tests.harness.drift`` (+ :func:`_extend_drift`) pushed to distribution 2.8 on
    a folder or on moto S3; the tests write the Images, the real API serves that dump."""
    storage, env = _s3_storage(request, tmp, "refdiff") if s3 else (None, {})
    registry = stack.enter_context(Registry(tmp / "registry", s3=storage))
    drift = build_drift(registry, layouts, tmp)
    dump = _extend_drift(drift, layouts, tmp)
    api = real_api(request, stack)
    load_dump(api, dump)
    return Scenario("s3" if s3 else "fs", registry, dump, api, tmp, env)


def copy_repository(registry: Registry, source: str, target: str) -> None:
    """Write ``source``'s links (not its uploads) into storage as repository ``target``: a
    repository no push could create, e.g. a name OpenShift's registry refuses."""
    prefix = f"repositories/{source}/"
    for rel in registry.list_storage():
        if not rel.startswith(prefix) or "/_uploads/" in rel:
            continue
        dest = f"repositories/{target}/{rel.removeprefix(prefix)}"
        if registry.storage_root is not None:
            registry.path(dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(registry.path(rel), registry.path(dest))
        else:
            assert registry.s3 is not None
            bucket = registry.s3.bucket
            registry.s3.moto.client().copy_object(
                Bucket=bucket, Key=registry.key(dest), CopySource=f"{bucket}/{registry.key(rel)}"
            )


def real_api(request: pytest.FixtureRequest, stack: ExitStack) -> RealOpenShiftAPI:
    """The session's real API, emptied now and when the scenario ends."""
    api: RealOpenShiftAPI = request.getfixturevalue("openshift_apiserver_session")
    api.reset()
    stack.callback(api.reset)
    return api


def build_openshift_scenario(
    request: pytest.FixtureRequest,
    layouts: OciLayouts,
    tmp: Path,
    stack: ExitStack,
    s3: bool,
) -> Scenario:
    """Pushes through OpenShift's own registry (its Images and ImageStreams are the ones it
    recorded in the real API: single images, shared layers, a manifest list whose
    children it took by digest, OCI manifests), then drift: Images and an ImageStream
    deleted through the API, a stream recreated without its tag, blobs deleted from storage,
    unfinished uploads, repositories with invalid names written into storage. regprune and
    the reference both read that same API. (The Image form without the apiserver's strategy,
    which the real server never stores, is tests/test_openshift_registry_prune.py's.)"""
    binary = require_openshift_registry()
    storage, env = _s3_storage(request, tmp, "osdiff") if s3 else (None, {})
    api = real_api(request, stack)
    registry = start_openshift_registry(tmp / "openshift", s3=storage, api=api, binary=binary)
    stack.callback(stop_pair, registry)
    images = {
        "app-v1": push(registry, *layouts["app-v1"], "ns/app:v1"),
        "app-v2": push(registry, *layouts["app-v2"], "ns/app:v2"),
        "multi": push(registry, *layouts["multi"], "ns/multi:latest"),
        "tool": push(registry, *layouts["tool"], "gone/tool:1.0"),
        "base": push(registry, *layouts["base"], "ns/other:old"),
        "oci": push(registry, *layouts["tool"], "ns/oci:1", format="oci"),
        "oci-gone": push(registry, *layouts["app-v1"], "ns/oci:gone", format="oci"),
    }
    push(registry, *layouts["app-v2"], "ns/other:latest")  # layers shared across streams
    push(registry, *layouts["app-v2"], "ns/broken:x")
    # drift in the cluster: Images deleted (their tags stay), a whole stream deleted
    for name in ("app-v1", "tool", "oci-gone"):
        assert api.delete_image(images[name].digest)
    assert api.delete_imagestream("gone", "tool")
    assert api.delete_imagestream("ns", "broken")  # recreated without its tag
    api.add_imagestream("ns", "broken", {})
    # drift in storage: blobs gone, unfinished pushes, names no push could write
    delete_blob_from_storage(registry, images["app-v2"].layers[2].digest)
    for layer in images["multi"].children[1].layers:
        delete_blob_from_storage(registry, layer.digest)
    delete_blob_from_storage(registry, images["base"].digest)
    upload_blob_without_manifest(registry, "ns/app", b"an abandoned push")
    start_upload(registry, "ns/app")
    start_upload(registry, "ns/multi")
    copy_repository(registry, "ns/other", "lonely")
    copy_repository(registry, "ns/app", "ns/deep/tool")
    dump = tmp / "dump.json"
    dump.write_text(json.dumps(api.dump_list()))
    name = "openshift-s3" if s3 else "openshift-fs"
    return Scenario(name, registry, dump, api, tmp, env, api.kubeconfig(tmp / "kubeconfig"))


ScenarioBuilder = Callable[[pytest.FixtureRequest, OciLayouts, Path, ExitStack], Scenario]
#: The scenarios compared, by test id. A builder returns a :class:`Scenario` whose storage
#: and API it has filled (its cleanups go on the ExitStack). In the ``openshift-*`` ones the
#: registry's pushes create the Images in the API server and ``dump`` is ``api.dump_list()``.
SCENARIOS: dict[str, ScenarioBuilder] = {
    "fs": lambda request, layouts, tmp, stack: build_debian_scenario(
        request, layouts, tmp, stack, s3=False
    ),
    "s3": lambda request, layouts, tmp, stack: build_debian_scenario(
        request, layouts, tmp, stack, s3=True
    ),
    "openshift-fs": lambda request, layouts, tmp, stack: build_openshift_scenario(
        request, layouts, tmp, stack, s3=False
    ),
    "openshift-s3": lambda request, layouts, tmp, stack: build_openshift_scenario(
        request, layouts, tmp, stack, s3=True
    ),
}


@pytest.fixture(scope="module", params=list(SCENARIOS))
def scenario(
    request: pytest.FixtureRequest,
    oci_layouts: OciLayouts,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scenario]:
    """One scenario of :data:`SCENARIOS` for the module's comparisons."""
    tmp = tmp_path_factory.mktemp(f"refdiff-{request.param}")
    with ExitStack() as stack:
        yield SCENARIOS[request.param](request, oci_layouts, tmp, stack)


# --------------------------------------------------------------------------- both sides


def regprune(scenario: Scenario, command: str, name: str, *extra: str) -> dict[str, Any]:
    """Run ``regprune <command>`` on the scenario; its JSON report."""
    report = scenario.workdir / f"{name}.json"
    metadata = ["--metadata", str(scenario.dump)]
    if scenario.kubeconfig is not None:
        metadata = ["--metadata", "kube", "--kubeconfig", str(scenario.kubeconfig)]
    args = [command, "--storage", scenario.storage.storage_url, *metadata]
    args += ["--out", str(scenario.workdir / name), "--report", str(report), *extra]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in scenario.env.items():
            mp.setenv(key, value)
        code = main(args)
    assert code in (EXIT_OK, EXIT_FINDINGS), f"regprune {command} exited {code}"
    return json.loads(report.read_text())


@dataclass
class Both:
    """The results of both tools on one scenario."""

    ref_prune: PruneResult
    ref_database: RestoreResult
    ref_storage: RestoreResult
    plan: dict[str, Any]
    check: dict[str, Any]


@pytest.fixture(scope="module")
def both(scenario: Scenario, prefect_server: None) -> Both:
    ref_prune = run_prune(scenario.storage, scenario.api, scenario.workdir)
    ref_database = run_restore(scenario.storage, scenario.api, scenario.workdir, "check-database")
    ref_storage = run_restore(scenario.storage, scenario.api, scenario.workdir, "check-storage")
    plan = regprune(scenario, "prune", "plan", *NO_GRACE)
    check = regprune(scenario, "check", "check")
    return Both(ref_prune, ref_database, ref_storage, plan, check)


# --------------------------------------------------------------------------- facts for rules


@dataclass
class Facts:
    """What the rules read: the metadata and the storage listing."""

    images: dict[str, dict[str, Any]]
    #: (namespace, name) -> tag -> image digests (position order)
    streams: dict[tuple[str, str], dict[str, list[str]]]
    stored: set[str]

    @classmethod
    def of(cls, scenario: Scenario) -> Facts:
        images: dict[str, dict[str, Any]] = {}
        streams: dict[tuple[str, str], dict[str, list[str]]] = {}
        for item in scenario.items():
            if item["kind"] == "Image":
                images[item["metadata"]["name"]] = item
            else:
                meta = item["metadata"]
                streams[(meta["namespace"], meta["name"])] = {
                    t["tag"]: [e["image"] for e in t.get("items", [])]
                    for t in (item.get("status") or {}).get("tags") or []
                }
        return cls(images, streams, set(scenario.storage.list_storage()))

    def scoped(self, namespace: str) -> Facts:
        """The same storage, with only the streams of one namespace."""
        streams = {key: tags for key, tags in self.streams.items() if key[0] == namespace}
        return Facts(self.images, streams, self.stored)

    def image_in_namespace(self, digest: str, namespace: str) -> bool:
        """regprune's namespace scope of a cluster-scoped Image: a stream of the namespace
        has it, or its ``dockerImageReference`` points into the namespace."""
        reference = (self.images.get(digest) or {}).get("dockerImageReference", "")
        parts = reference.split("/")
        in_reference = len(parts) > 2 and parts[1] == namespace
        in_streams = any(digest in ds for tags in self.streams.values() for ds in tags.values())
        return in_reference or in_streams

    def blob_stored(self, digest: str) -> bool:
        hex_ = digest.removeprefix("sha256:")
        return f"blobs/sha256/{hex_[:2]}/{hex_}/data" in self.stored

    def children(self, digest: str) -> list[str]:
        image = self.images.get(digest) or {}
        return [m["digest"] for m in image.get("dockerImageManifests") or []]

    def stream_history(self, repository: str) -> set[str]:
        namespace, _, name = repository.partition("/")
        return {d for ds in self.streams.get((namespace, name), {}).values() for d in ds}

    def list_children_in_stream(self, repository: str) -> set[str]:
        """Children of the manifest lists the repository's stream has."""
        return {c for d in self.stream_history(repository) for c in self.children(d)}

    def tag_events(self) -> Iterator[tuple[str, str, str, int, str]]:
        """(namespace, name, tag, position, image) of every tag history item."""
        for (namespace, name), tags in self.streams.items():
            for tag, digests in tags.items():
                for position, digest in enumerate(digests):
                    yield namespace, name, tag, position, digest

    def manifest_links(self) -> set[tuple[str, str]]:
        """(repository, digest) of every manifest revision link in storage."""
        links = set()
        for key in self.stored:
            head, sep, tail = key.partition("/_manifests/revisions/sha256/")
            if sep and key.startswith("repositories/") and tail.endswith("/link"):
                links.add((head.removeprefix("repositories/"), "sha256:" + tail[:64]))
        return links


@pytest.fixture(scope="module")
def facts(scenario: Scenario, both: Both) -> Facts:
    """Read after both tools ran (the dry runs change nothing)."""
    return Facts.of(scenario)


# --------------------------------------------------------------------------- the rules
#
# Each rule turns the reference's answer into the one regprune must give, for one category.
# The names are the rows of the table in docs/comparison.md.


def rule_config_of_images_as_sent(blobs: set[str], f: Facts) -> set[str]:
    """Images as the registry sent them: the reference keeps a config only through
    ``dockerImageMetadata.Id``, so for an Image stored without metadata (the manifest as
    text: a cluster without the apiserver's image strategy) it deletes the config of a
    tagged image; regprune reads the config from the manifest and keeps it."""
    configs = set()
    for image in f.images.values():
        if (image.get("dockerImageMetadata") or {}).get("Id") or not image.get(
            "dockerImageManifest"
        ):
            continue
        config = (json.loads(image["dockerImageManifest"]).get("config") or {}).get("digest")
        if config:
            configs.add(config)
    return blobs - configs


def rule_list_children_kept(links: set[tuple[str, str]], f: Facts) -> set[tuple[str, str]]:
    """manifest-list children: the reference deletes the revision link of each child of a
    list (children are in no tag history), which breaks a pull of the child by digest;
    regprune keeps a child's link while its list is in the stream."""
    return {(repo, d) for repo, d in links if d not in f.list_children_in_stream(repo)}


def rule_dangling_manifest_links(
    links: set[tuple[str, str]], f: Facts, repositories: set[str]
) -> set[tuple[str, str]]:
    """dangling manifest links: the reference's enumeration skips a revision link whose
    manifest blob is gone (so it stays forever); regprune deletes it when the stream does
    not have that image either."""
    dangling = {
        (repo, d)
        for repo, d in f.manifest_links()
        if repo not in repositories and not f.blob_stored(d) and d not in f.stream_history(repo)
    }
    return links | dangling


def rule_lost_found(found: set[LostFound], f: Facts, ours_invalid: set[str]) -> set[LostFound]:
    """lost-found: regprune proposes no candidate in a repository whose name cannot be an
    ImageStream (the reference proposes ``/lonely`` and ``ns/deep/tool``, whose mapping the
    API would refuse), and none for the children of a list the stream has (they are in the
    stream through their list)."""
    return {
        c
        for c in found
        if f"{c.namespace}/{c.name}".strip("/") not in ours_invalid
        and c.digest not in f.list_children_in_stream(f"{c.namespace}/{c.name}")
    }


def rule_invalid_manifests(
    skipped: set[tuple[str, str, str]],
    f: Facts,
    repositories: set[str],
    ours_invalid: set[str],
) -> set[tuple[str, str]]:
    """invalid manifests: the reference logs a stored manifest it cannot restore; regprune
    lists the same, but not a child of a list the stream has and none in a repository whose
    name cannot be an ImageStream (neither is a candidate: see lost-found), and also a
    revision link whose manifest blob is gone (the reference's enumeration skips it
    silently; see dangling manifest links)."""
    expected = {
        (repo, d)
        for repo, d, _ in skipped
        if d not in f.list_children_in_stream(repo) and repo.strip("/") not in ours_invalid
    }
    return rule_dangling_manifest_links(expected, f, repositories)


def _missing_image(message: str) -> bool:
    return message.endswith("not found")


def rule_broken_tags(
    tags: set[BrokenTag], broken_images: dict[str, str], f: Facts
) -> set[tuple[str, str, str, int, str, str]]:
    """broken tags, every one: the reference checks each Image once across all streams and
    reports only its first tag (``checkedImages``); regprune reports every tag history item
    that cannot be pulled. A tag whose Image object is missing is a ``Broken image ... not
    found`` line in the reference and a broken tag (kind ``image``) in regprune. A tag of a
    manifest list whose child misses a blob is broken in regprune (the reference checks only
    the list's own manifest blob)."""
    missing_by_image: dict[str, set[str]] = {}
    for tag in tags:
        image = f.streams[(tag.namespace, tag.name)][tag.tag][tag.position]
        missing_by_image.setdefault(image, set()).update(_named_missing(f, image, tag.missing))
    for digest, message in broken_images.items():
        if _missing_image(message):
            missing_by_image.setdefault(digest, set()).add(digest)
    child_missing = {
        digest: _all_missing(f, digest)
        for digest, message in broken_images.items()
        if not _missing_image(message)
    }
    expected = set()
    for namespace, name, tag, position, image in f.tag_events():
        for missing in missing_by_image.get(image, ()):
            expected.add((namespace, name, tag, position, image, missing))
        for child in f.children(image):
            for missing in child_missing.get(child, ()):
                expected.add((namespace, name, tag, position, image, missing))
    return expected


def _all_missing(f: Facts, digest: str) -> set[str]:
    """Every blob of an Image (manifest, config, layers) missing from storage."""
    image = f.images[digest]
    config = (image.get("dockerImageMetadata") or {}).get("Id")
    layers = [layer["name"] for layer in image.get("dockerImageLayers") or []]
    missing = {d for d in [digest, *([config] if config else []), *layers] if not f.blob_stored(d)}
    assert missing, f"reference says {digest} is broken, but every blob is stored"
    return missing


def _named_missing(f: Facts, image: str, named: str | None) -> set[str]:
    """every missing blob: the reference names the first blob missing (manifest, config,
    layers in order) and stops; regprune lists every missing blob of the Image."""
    everything = _all_missing(f, image)
    assert named in everything, (image, named, everything)
    return everything


def rule_broken_images(
    tags: set[BrokenTag], broken_images: dict[str, str], f: Facts
) -> set[tuple[str, str]]:
    """broken Images, tagged or not: the reference prints ``Broken image`` only for Images
    no tag reached (a tagged one is a broken tag); regprune lists every broken managed Image
    once, with the missing blob, and a missing Image object only as a broken tag."""
    expected = {
        (digest, missing)
        for digest, message in broken_images.items()
        if not _missing_image(message)
        for missing in _all_missing(f, digest)
    }
    for tag in tags:
        image = f.streams[(tag.namespace, tag.name)][tag.tag][tag.position]
        expected |= {(image, missing) for missing in _named_missing(f, image, tag.missing)}
    return expected


# --------------------------------------------------------------------------- the comparisons


def ours_links(plan: dict[str, Any]) -> set[tuple[str, str]]:
    return {(r["repository"], r["digest"]) for r in plan["manifest_links"]}


def test_orphan_blobs_differ_only_by_the_rules(both: Both, facts: Facts) -> None:
    """With no grace period both delete exactly the blobs no Image references, except the
    configs the reference cannot see in Images kept as the registry sent them."""
    expected = rule_config_of_images_as_sent(both.ref_prune.blobs, facts)
    assert {r["digest"] for r in both.plan["blobs"]} == expected
    assert both.ref_prune.blob_count == len(both.ref_prune.blobs)


def test_repositories_are_the_same(both: Both) -> None:
    """No rule on the set; the reasons differ in wording only: the reference calls a
    one-segment name (``lonely``) a missing stream ``/lonely``, regprune an invalid name."""
    ours = {r["repository"] for r in both.plan["repositories"]}
    assert ours == both.ref_prune.repositories
    reasons = {r["repository"]: r["reason"] for r in both.plan["repositories"]}
    for repository in both.ref_prune.invalid_names:
        assert reasons[repository] == "invalid-name"
    for repository in both.ref_prune.imagestream_missing - both.ref_prune.invalid_names:
        assert reasons[repository] in ("imagestream-missing", "invalid-name"), repository


def test_manifest_links_differ_only_by_the_rules(both: Both, facts: Facts) -> None:
    repositories = {r["repository"] for r in both.plan["repositories"]}
    expected = rule_list_children_kept(both.ref_prune.manifest_links, facts)
    expected = rule_dangling_manifest_links(expected, facts, repositories)
    assert ours_links(both.plan) == expected
    # and the rules matter on this scenario (else they would test nothing)
    assert expected != both.ref_prune.manifest_links


def test_regprune_only_categories_are_what_the_reference_leaves(both: Both, facts: Facts) -> None:
    """dangling layer links and stale uploads: the reference has no such category (layer
    links of deleted blobs stay, uploads are left to the registry's purging); regprune
    deletes a layer link whose blob is gone or deleted, and uploads older than
    --upload-max-age."""
    deleted_or_gone = rule_config_of_images_as_sent(both.ref_prune.blobs, facts)
    repositories = both.ref_prune.repositories
    expected_layer_links = set()
    uploads = set()
    for key in facts.stored:
        if not key.startswith("repositories/"):
            continue
        repo, sep, tail = key.removeprefix("repositories/").partition("/_layers/sha256/")
        if sep and repo not in repositories:
            digest = "sha256:" + tail[:64]
            if digest in deleted_or_gone or not facts.blob_stored(digest):
                expected_layer_links.add((repo, digest))
        repo, sep, tail = key.removeprefix("repositories/").partition("/_uploads/")
        if sep and repo not in repositories:
            uploads.add((repo, tail.split("/")[0]))
    assert {(r["repository"], r["digest"]) for r in both.plan["layer_links"]} == (
        expected_layer_links
    )
    assert {(r["repository"], r["upload_id"]) for r in both.plan["uploads"]} == uploads
    assert expected_layer_links and uploads


def test_broken_tags_differ_only_by_the_rules(both: Both, facts: Facts) -> None:
    expected = rule_broken_tags(
        both.ref_database.broken_tags, both.ref_database.broken_images, facts
    )
    ours = {
        (r["namespace"], r["name"], r["tag"], r["position"], r["image"], r["missing"])
        for r in both.check["broken_imagestream_tags"]
    }
    assert ours == expected
    assert len(ours) > len(both.ref_database.broken_tags)


def test_broken_images_differ_only_by_the_rules(both: Both, facts: Facts) -> None:
    expected = rule_broken_images(
        both.ref_database.broken_tags, both.ref_database.broken_images, facts
    )
    ours = {(r["image"], r["missing"]) for r in both.check["broken_images"]}
    assert ours == expected
    # the unmanaged Image's blobs live elsewhere: neither tool calls it broken
    assert EXTERNAL_IMAGE not in {d for d, _ in ours} | set(both.ref_database.broken_images)


def test_lost_found_candidates_differ_only_by_the_rules(both: Both, facts: Facts) -> None:
    invalid = {r["repository"] for r in both.plan["repositories"] if r["reason"] == "invalid-name"}
    expected = rule_lost_found(both.ref_storage.lost_found, facts, invalid)
    ours = {
        LostFound(r["namespace"], r["name"], r["digest"], r["tag"])
        for r in both.check["lost_found"]
    }
    assert ours == expected
    assert expected != both.ref_storage.lost_found


def test_invalid_manifests_differ_only_by_the_rules(both: Both, facts: Facts) -> None:
    """A stored manifest that misses a blob is no lost-found candidate for either: the
    reference logs ``invalid manifest``, regprune lists it."""
    repositories = {r["repository"] for r in both.plan["repositories"]}
    invalid = {r["repository"] for r in both.plan["repositories"] if r["reason"] == "invalid-name"}
    expected = rule_invalid_manifests(
        both.ref_storage.skipped_manifests, facts, repositories, invalid
    )
    ours = {(r["repository"], r["digest"]) for r in both.check["invalid_manifests"]}
    assert ours == expected


def test_one_namespace_differs_only_by_the_rules(
    scenario: Scenario, both: Both, facts: Facts
) -> None:
    """``-restore-namespace=ns`` next to ``check --namespace ns``: the same rules, plus the
    namespace scope of Images: the reference checks the namespace's streams and then every
    untagged Image of the cluster; regprune the Images the namespace's streams have or whose
    reference points into it."""
    namespace = "ns"
    database = run_restore(
        scenario.storage, scenario.api, scenario.workdir, "check-database", namespace
    )
    storage = run_restore(
        scenario.storage, scenario.api, scenario.workdir, "check-storage", namespace
    )
    ours = regprune(scenario, "check", "check-ns", "--namespace", namespace)
    scoped = facts.scoped(namespace)
    tags = rule_broken_tags(database.broken_tags, database.broken_images, scoped)
    assert {
        (r["namespace"], r["name"], r["tag"], r["position"], r["image"], r["missing"])
        for r in ours["broken_imagestream_tags"]
    } == tags
    images = {
        (digest, missing)
        for digest, missing in rule_broken_images(
            database.broken_tags, database.broken_images, scoped
        )
        if scoped.image_in_namespace(digest, namespace)
    }
    assert {(r["image"], r["missing"]) for r in ours["broken_images"]} == images
    invalid = {r["repository"] for r in both.plan["repositories"] if r["reason"] == "invalid-name"}
    assert {
        LostFound(r["namespace"], r["name"], r["digest"], r["tag"]) for r in ours["lost_found"]
    } == rule_lost_found(storage.lost_found, facts, invalid)
    assert all(c.namespace == namespace for c in storage.lost_found)


def test_grace_period_keeps_young_blobs_the_reference_deletes(
    scenario: Scenario, both: Both, facts: Facts
) -> None:
    """grace period: the reference deletes every unreferenced blob, even one pushed a
    second ago (its source has "TODO keep young blobs"); regprune keeps blobs younger than
    --keep-younger-than (default 24h) and those a young manifest references. Same snapshot
    as the 0s plan, default grace: every blob only the reference deletes is kept as young."""
    report = scenario.workdir / "grace.json"
    args = ["prune", "--snapshot", str(scenario.workdir / "plan"), "--report", str(report)]
    with pytest.MonkeyPatch.context() as mp:  # the dry run re-reads the storage: S3's keys
        for key, value in scenario.env.items():
            mp.setenv(key, value)
        assert main(args) == EXIT_OK
    ours = {r["digest"] for r in json.loads(report.read_text())["blobs"]}
    theirs = rule_config_of_images_as_sent(both.ref_prune.blobs, facts)
    assert ours <= theirs
    young = {
        r["digest"]
        for r in rows(
            scenario.workdir / "plan" / "plan_blobs.parquet",
            "SELECT digest FROM t WHERE kept_because = 'young'",
        )
    }
    assert theirs - ours == young & theirs != set()


def test_check_mode_is_both_checks(scenario: Scenario, both: Both) -> None:
    """``-restore-mode=check`` is check-storage then check-database: the same findings."""
    combined = run_restore(scenario.storage, scenario.api, scenario.workdir, "check")
    assert combined.lost_found == both.ref_storage.lost_found
    assert combined.broken_tags == both.ref_database.broken_tags
    assert combined.broken_images == both.ref_database.broken_images

"""Recovery: ``regprune check --recover --confirm`` restores manifests that are stored but unknown
to the API as ``lost-found-<hex>`` tags, through the real OpenShift API
(``tests/harness/openshift_apiserver.py``) with the ServiceAccount token the RBAC manifests give.

The registry is the real one (images pushed with skopeo); only some of them are registered in
the API, one ImageStream is deleted entirely, and the restored Images, as openshift-apiserver
stores them, are compared with the Images a push to the integrated registry creates
(``PushedImage.openshift_image``). Answers a real server cannot be made to give (503, 429,
409, 422 on chosen mappings) stay on the API test server, each test saying so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regprune.cli.main import EXIT_FAILURE, EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, main
from regprune.layout import (
    V2_ROOT,
    blob_data_path,
    layer_link_path,
    link_content,
    manifest_link_path,
)
from regprune.manifests import parse_manifest
from regprune.mediatypes import DOCKER_V1, DOCKER_V2
from regprune.recovery import (
    RECOVER_THREADS,
    RESULTS_FILE,
    RateLimiter,
    RecoveryError,
    attach_texts,
    image_for,
    mapping_for,
)
from regprune.storage import StorageSpec
from regprune.tables import SCHEMAS, SNAPSHOT_TABLES, empty_table
from regprune.tasks.recovery import plan_recovery
from tests.conftest import rows
from tests.harness.openshift_api import DEFAULT_REGISTRY_HOST, OpenShiftAPIServer
from tests.harness.openshift_apiserver import RealOpenShiftAPI
from tests.harness.registry_bench import PushedImage, Registry, push

HOST = DEFAULT_REGISTRY_HOST
MAPPINGS = r"/imagestreammappings$"
SCHEMA1_LAYER = "application/vnd.docker.container.image.rootfs.diff+x-gtar"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
READ_GRANTS = {("list", "images"), ("list", "imagestreams")}
RECOVERY_GRANTS = READ_GRANTS | {("create", "imagestreammappings"), ("create", "imagestreams")}


def lost_found(digest: str) -> str:
    return "lost-found-" + digest.removeprefix("sha256:")


# --- the Image builder on a hand-written schema 1 manifest (no server, no registry) -----------


def schema1_manifest(layers: list[str]) -> bytes:
    """An unsigned schema 1 manifest: fsLayers newest first, no sizes, no config."""
    document = {
        "schemaVersion": 1,
        "name": "legacy/app",
        "tag": "latest",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": digest} for digest in layers],
        "history": [{"v1Compatibility": json.dumps({"id": str(i)})} for i in range(len(layers))],
    }
    return json.dumps(document, indent=3).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_table(path: Path, table: str, records: list[dict[str, Any]]) -> None:
    schema = SCHEMAS[table]
    columns = {name: [r.get(name) for r in records] for name in schema.names}
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path)


def test_image_of_a_schema1_manifest(tmp_path: Path) -> None:
    """Layers in fsLayers order (newest first, annotated descending) with the stored blob
    sizes, the registry's schema 1 layer media type, and no dockerImageMetadata (no config)."""
    blobs = {digest_of(f"layer {i}".encode() * (i + 1)): 9 * (i + 1) for i in range(2)}
    base, top = list(blobs)
    empty = digest_of(b"empty layer")
    blobs[empty] = 32
    layers = [empty, top, empty, base]  # schema 1 repeats the empty layer
    data = schema1_manifest(layers)
    digest = digest_of(data)
    parsed = parse_manifest(data)
    for table in SNAPSHOT_TABLES:
        pq.write_table(empty_table(table), tmp_path / f"{table}.parquet")
    write_table(
        tmp_path / "blobs.parquet",
        "blobs",
        [{"digest": d, "size": size} for d, size in {**blobs, digest: len(data)}.items()],
    )
    (tmp_path / "snapshot.json").write_text("{}")
    write_table(
        tmp_path / "lost_manifests.parquet",
        "manifests",
        [{"digest": digest, "media_type": parsed.media_type, "layer_order": parsed.layer_order}],
    )
    write_table(
        tmp_path / "lost_manifest_references.parquet",
        "manifest_references",
        [
            {"digest": digest, "reference": r.digest, "kind": r.kind, "position": r.position}
            for r in parsed.references
        ],
    )
    lost = {
        "namespace": "legacy",
        "name": "app",
        "repository": "legacy/app",
        "digest": digest,
        "tag": lost_found(digest),
        "media_type": parsed.media_type,
    }
    pq.write_table(pa.Table.from_pylist([lost]), tmp_path / "check_lost_found.parquet")

    with pytest.raises(RecoveryError, match="--registry-host"):
        plan_recovery.fn(str(tmp_path), None)  # no managed Image names a host
    plan = plan_recovery.fn(str(tmp_path), "registry.example:5000")
    [row] = rows(plan["path"])
    mapping = mapping_for(row)

    assert mapping["metadata"] == {"namespace": "legacy", "name": "app"}
    assert mapping["tag"] == lost_found(digest)
    image = mapping["image"]
    assert image == image_for(row)
    assert image["metadata"] == {
        "name": digest,
        "annotations": {
            "openshift.io/image.managed": "true",
            "image.openshift.io/manifestBlobStored": "true",
            "image.openshift.io/dockerLayersOrder": "descending",
        },
    }
    assert image["dockerImageReference"] == f"registry.example:5000/legacy/app@{digest}"
    assert image["dockerImageManifestMediaType"] == DOCKER_V1
    assert image["dockerImageLayers"] == [
        {"name": d, "size": blobs[d], "mediaType": SCHEMA1_LAYER} for d in layers
    ]
    assert "dockerImageMetadata" not in image
    assert "dockerImageManifests" not in image


def test_an_image_carries_its_stored_manifest_and_config_as_text(tmp_path: Path) -> None:
    """As a push and the reference's recover send it: the texts, no dockerImageMetadata (the
    apiserver derives it, Size included). A blob that no longer matches its digest leaves
    the row in the metadata form (``Id`` only) rather than sending the wrong text."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    layer = digest_of(b"a layer")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_V2,
            "config": {
                "mediaType": DOCKER_CONFIG,
                "size": len(config),
                "digest": digest_of(config),
            },
            "layers": [{"mediaType": DOCKER_LAYER, "size": 7, "digest": layer}],
        }
    ).encode()
    root = tmp_path / "storage"
    for data in (manifest, config):
        path = root / V2_ROOT / blob_data_path(digest_of(data))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    bad_config = digest_of(b"another config")
    path = root / V2_ROOT / blob_data_path(bad_config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not what its digest says")
    row = {
        "namespace": "ns",
        "name": "app",
        "repository": "ns/app",
        "digest": digest_of(manifest),
        "tag": lost_found(digest_of(manifest)),
        "media_type": DOCKER_V2,
        "layer_order": "ascending",
        "is_list": False,
        "docker_image_reference": f"registry.example:5000/ns/app@{digest_of(manifest)}",
        "config_digest": digest_of(config),
        "layers": [{"digest": layer, "size": 7, "media_type": DOCKER_LAYER}],
        "manifests": [],
        "missing_children": [],
    }
    rows_ = [dict(row), {**row, "config_digest": bad_config}]
    attach_texts(rows_, StorageSpec(str(root)))
    image = image_for(rows_[0])
    assert image["dockerImageManifest"] == manifest.decode()
    assert image["dockerImageConfig"] == config.decode()
    assert "dockerImageMetadata" not in image
    fallback = image_for(rows_[1])
    assert "dockerImageManifest" not in fallback and "dockerImageConfig" not in fallback
    assert fallback["dockerImageMetadata"]["Id"] == bad_config


def test_rate_limiter_spaces_calls_over_threads() -> None:
    """Each call takes the next free slot: 4/s means 0.25 s apart, however many callers."""
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.wait()
    assert slept == [0.25, 0.5]
    now[0] += 10.0  # idle time is not saved up as a burst
    limiter.wait()
    limiter.wait()
    assert slept == [0.25, 0.5, 0.25]
    with pytest.raises(ValueError):
        RateLimiter(0)


# --- end to end: the real registry and the API server -------------------------------------------


@dataclass
class Pushed:
    registry: Registry
    app_v1: PushedImage
    app_v2: PushedImage
    multi: PushedImage
    tool: PushedImage

    def register(self, server: OpenShiftAPIServer | RealOpenShiftAPI) -> None:
        """app v1 was never registered, ns/multi lost its tag (the list and its children are
        stored only), other/tool's stream was deleted (its Image remains)."""
        for image in (self.app_v2, self.tool):
            server.add_image(image.openshift_image(HOST))
        server.add_imagestream("ns", "app", {"v2": [self.app_v2.digest]})
        server.add_imagestream("ns", "multi", {})
        server.add_imagestream("other", "tool", {"1.0": [self.tool.digest]})
        server.delete_imagestream("other", "tool")
        if isinstance(server, OpenShiftAPIServer):
            server.clear_requests()

    def lost(self) -> list[PushedImage]:
        """What recovery restores: every manifest of the stream-less ones."""
        return [self.app_v1, *self.multi.all_manifests(), self.tool]


@pytest.fixture(scope="module")
def pushed(registry_fs: Registry, oci_layouts: Any) -> Pushed:
    return Pushed(
        registry_fs,
        push(registry_fs, *oci_layouts["app-v1"], "ns/app:v1"),
        push(registry_fs, *oci_layouts["app-v2"], "ns/app:v2"),
        push(registry_fs, *oci_layouts["multi"], "ns/multi:latest"),
        push(registry_fs, *oci_layouts["tool"], "other/tool:1.0"),
    )


@pytest.fixture
def cluster(openshift_api: OpenShiftAPIServer, pushed: Pushed) -> OpenShiftAPIServer:
    """The API test server, for the answers a real one cannot be made to give."""
    pushed.register(openshift_api)
    return openshift_api


@pytest.fixture
def real_cluster(openshift_apiserver: RealOpenShiftAPI, pushed: Pushed) -> RealOpenShiftAPI:
    pushed.register(openshift_apiserver)
    return openshift_apiserver


def state(api: RealOpenShiftAPI) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every Image and ImageStream as stored: equal before and after means nothing written."""
    return api.images(), api.imagestreams()


def run_check(
    pushed: Pushed, kubeconfig: Path, out: Path, *extra: str
) -> tuple[int, dict[str, Any] | None]:
    """``regprune check`` against the API server; the exit code and the report, if any."""
    report = out.with_suffix(".json")
    args = ["check", "--storage", pushed.registry.storage_url, "--metadata", "kube"]
    args += ["--kubeconfig", str(kubeconfig), "--shards", "1", "--out", str(out)]
    code = main([*args, "--report", str(report), *extra])
    return code, json.loads(report.read_text()) if report.exists() else None


def restored_fields(image: dict[str, Any]) -> dict[str, Any]:
    """What recovery must get right, as a push to the integrated registry would set it."""
    return {
        "reference": image["dockerImageReference"],
        "media_type": image["dockerImageManifestMediaType"],
        "config": (image.get("dockerImageMetadata") or {}).get("Id"),
        "layers": image.get("dockerImageLayers"),
        "manifests": image.get("dockerImageManifests"),
        "annotations": image["metadata"].get("annotations"),
    }


def tag_images(
    server: OpenShiftAPIServer | RealOpenShiftAPI, namespace: str, name: str
) -> dict[str, list[str]]:
    stream = server.imagestream(namespace, name)
    assert stream is not None, f"no imagestream {namespace}/{name}"
    return {
        t["tag"]: [item["image"] for item in t["items"]] for t in stream["status"].get("tags") or []
    }


def results(report: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {r["digest"]: (r["status"], r["error"]) for r in report["recovered"]}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_recover_restores_tags_images_and_streams(
    real_cluster: RealOpenShiftAPI,
    pushed: Pushed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the ServiceAccount token of the RBAC manifests; the restored Images are what
    openshift-apiserver makes of what recovery sends; afterwards the check is clean."""
    cluster = real_cluster
    openshift_kubeconfig = cluster.rbac_kubeconfig(tmp_path / "regprune.kubeconfig")
    images_before = {i["metadata"]["name"]: i for i in cluster.images()}
    before = state(cluster)

    code, report = run_check(pushed, openshift_kubeconfig, tmp_path / "run", "--recover")
    assert code == EXIT_FINDINGS  # dry-run first: nothing is written
    assert state(cluster) == before
    assert "recovered" not in report
    out = capsys.readouterr().out
    for image in pushed.lost():
        assert f'Would add image "{image.digest}"' in out

    code, report = run_check(
        pushed, openshift_kubeconfig, tmp_path / "recover", "--recover", "--confirm"
    )

    lost = {image.digest: image for image in pushed.lost()}
    assert code == EXIT_OK
    assert results(report) == {digest: ("added", None) for digest in lost}
    out = capsys.readouterr().out
    for image in lost.values():
        assert f'Added image "{image.digest}" to imagestream "{image.repository}"' in out
    assert rows(tmp_path / "recover" / RESULTS_FILE, "SELECT status FROM t") == [
        {"status": "added"}
    ] * len(lost)

    multi = pushed.multi
    assert tag_images(cluster, "ns", "app") == {
        "v2": [pushed.app_v2.digest],
        lost_found(pushed.app_v1.digest): [pushed.app_v1.digest],
    }
    assert tag_images(cluster, "ns", "multi") == {
        lost_found(m.digest): [m.digest] for m in multi.all_manifests()
    }
    assert tag_images(cluster, "other", "tool") == {  # the deleted stream, created again
        lost_found(pushed.tool.digest): [pushed.tool.digest]
    }
    for image in [pushed.app_v1, *multi.all_manifests()]:
        restored = cluster.image(image.digest)
        assert restored is not None
        assert restored_fields(restored) == restored_fields(image.openshift_image(HOST))
    assert [c["digest"] for c in cluster.image(multi.digest)["dockerImageManifests"]] == [
        child.digest for child in multi.children
    ]
    assert cluster.image(pushed.tool.digest) == images_before[pushed.tool.digest]  # kept as is

    code, report = run_check(pushed, openshift_kubeconfig, tmp_path / "again")
    assert code == EXIT_OK
    assert all(not findings for findings in report.values())
    assert "Consistent" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_transient_answers_to_mappings_are_retried(
    cluster: OpenShiftAPIServer, openshift_kubeconfig: Path, pushed: Pushed, tmp_path: Path
) -> None:
    """A 503 and a 429 for mappings are retried and every Image is added. (Test server: a
    real one cannot be made to answer them.)"""
    cluster.allow(RECOVERY_GRANTS)
    cluster.inject("POST", MAPPINGS, status=503, times=1)
    cluster.inject("POST", MAPPINGS, status=429, times=1)

    code, report = run_check(
        pushed, openshift_kubeconfig, tmp_path / "recover", "--recover", "--confirm"
    )

    assert code == EXIT_OK
    assert results(report) == {image.digest: ("added", None) for image in pushed.lost()}
    assert cluster.count("POST", MAPPINGS, status=503) == 1
    assert cluster.count("POST", MAPPINGS, status=429) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_conflict_for_one_mapping_is_reported_and_the_rest_go_on(
    cluster: OpenShiftAPIServer,
    openshift_kubeconfig: Path,
    pushed: Pushed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 409 fails other/tool's mapping only; a second run restores it (exit 0). (Test
    server: a 409 for one chosen mapping.)"""
    cluster.inject("POST", r"/namespaces/other/imagestreammappings$", status=409, times=1)
    tool = pushed.tool.digest

    code, report = run_check(
        pushed, openshift_kubeconfig, tmp_path / "recover", "--recover", "--confirm"
    )

    assert code == EXIT_FINDINGS
    outcome = results(report)
    status, error = outcome.pop(tool)
    assert status == "failed"
    assert "HTTP 409" in error
    assert outcome == {i.digest: ("added", None) for i in pushed.lost() if i.digest != tool}
    assert f'Failed to add image "{tool}" to imagestream "other/tool"' in capsys.readouterr().out
    assert cluster.imagestream("other", "tool") is None  # the 409 came before the 404
    assert lost_found(pushed.app_v1.digest) in tag_images(cluster, "ns", "app")

    code, report = run_check(
        pushed, openshift_kubeconfig, tmp_path / "again", "--recover", "--confirm"
    )
    assert code == EXIT_OK
    assert results(report) == {tool: ("added", None)}
    assert tag_images(cluster, "other", "tool") == {lost_found(tool): [tool]}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_list_whose_children_were_not_restored_is_skipped(
    cluster: OpenShiftAPIServer, openshift_kubeconfig: Path, pushed: Pushed, tmp_path: Path
) -> None:
    """Every mapping in namespace ns is invalid (422): the children of ns/multi fail, so its
    list is not even tried, since a list without its children's Images would leave their
    blobs kept by no Image. other/tool goes on. (Test server: a 422 for every mapping of a
    namespace.)"""
    cluster.inject("POST", r"/namespaces/ns/imagestreammappings$", status=422, times=None)
    multi = pushed.multi

    code, report = run_check(
        pushed, openshift_kubeconfig, tmp_path / "recover", "--recover", "--confirm"
    )

    assert code == EXIT_FINDINGS
    outcome = results(report)
    assert outcome.pop(pushed.tool.digest) == ("added", None)
    status, reason = outcome.pop(multi.digest)
    assert status == "skipped"
    assert "child manifest sha256:" in reason
    assert {digest: status for digest, (status, _) in outcome.items()} == {
        image.digest: "failed" for image in [pushed.app_v1, *multi.children]
    }
    assert cluster.count("POST", MAPPINGS) == 1 + len(multi.children) + 2  # tool: 404, retry
    assert cluster.image(multi.digest) is None


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_forbidden_mappings_stop_the_recovery_and_create_nothing(
    real_cluster: RealOpenShiftAPI,
    pushed: Pushed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The RBAC manifests minus ``create imagestreammappings``: the server's 403 stops the
    recovery, naming the grant, and nothing is created."""
    cluster = real_cluster
    openshift_kubeconfig = cluster.rbac_kubeconfig(
        tmp_path / "regprune.kubeconfig", without=["create imagestreammappings.image.openshift.io"]
    )
    before = state(cluster)

    code, report = run_check(
        pushed, openshift_kubeconfig, tmp_path / "recover", "--recover", "--confirm"
    )

    assert code == EXIT_FAILURE
    assert report is None
    err = capsys.readouterr().err
    assert "regprune: error: recovery stopped: forbidden: cannot create imagestreammappings" in err
    assert 'cannot create resource "imagestreammappings" in API group "image.openshift.io"' in err
    assert state(cluster) == before
    statuses = rows(tmp_path / "recover" / RESULTS_FILE, "SELECT status FROM t")
    attempts = sum(1 for r in statuses if r["status"] == "failed")
    assert 1 <= attempts <= RECOVER_THREADS  # those already on their way when the 403 came
    assert sorted(r["status"] for r in statuses) == sorted(
        ["failed"] * attempts + ["skipped"] * (len(pushed.lost()) - attempts)
    )


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_registry_host_option_names_the_restored_references(
    real_cluster: RealOpenShiftAPI, pushed: Pushed, tmp_path: Path
) -> None:
    cluster = real_cluster
    openshift_kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig")
    code, _ = run_check(
        pushed,
        openshift_kubeconfig,
        tmp_path / "recover",
        "--recover",
        "--confirm",
        "--namespace",
        "ns",
        "--registry-host",
        "registry.example:5000",
    )
    assert code == EXIT_OK
    v1 = pushed.app_v1.digest
    assert cluster.image(v1)["dockerImageReference"] == f"registry.example:5000/ns/app@{v1}"
    assert cluster.imagestream("other", "tool") is None  # outside --namespace


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--confirm"], "--confirm goes with --recover"),
        (["--recover", "--confirm", "--metadata", "dump.json"], "needs --metadata kube"),
        (["--recover", "--recover-rate", "0"], "--recover-rate"),
        (["--recover", "--registry-host", "https://host/x"], "--registry-host"),
    ],
)
def test_bad_recovery_options_are_usage_errors(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--storage", str(tmp_path), *extra]) == EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_recovery_refuses_a_snapshot_of_a_dump(
    openshift_apiserver: RealOpenShiftAPI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Lost-found candidates of a dump are not lost in the cluster: nothing is written."""
    openshift_kubeconfig = openshift_apiserver.kubeconfig(tmp_path / "kubeconfig")
    storage = hand_written_schema1_registry(tmp_path / "registry")
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": []}))
    args = ["snapshot", "--storage", str(storage), "--metadata", str(dump)]
    assert main([*args, "--out", str(tmp_path / "snap"), "--shards", "1"]) == EXIT_OK
    args = ["check", "--snapshot", str(tmp_path / "snap"), "--recover", "--confirm"]
    assert main([*args, "--kubeconfig", str(openshift_kubeconfig)]) == EXIT_FAILURE
    assert "take a fresh snapshot from the cluster" in capsys.readouterr().err
    assert state(openshift_apiserver) == ([], [])


def hand_written_schema1_registry(root: Path) -> Path:
    """legacy/app holds one schema 1 manifest (no Image knows it) and its layers."""
    layers = [digest_of(b"top layer"), digest_of(b"base layer")]
    data = schema1_manifest(layers)
    digest = digest_of(data)
    files = {
        blob_data_path(digest): data,
        manifest_link_path("legacy/app", digest): link_content(digest),
    }
    for layer, content in zip(layers, (b"top layer", b"base layer"), strict=True):
        files[blob_data_path(layer)] = content
        files[layer_link_path("legacy/app", layer)] = link_content(layer)
    for key, content in files.items():
        path = root / V2_ROOT / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_schema1_manifest_is_restored_into_a_new_stream(
    openshift_apiserver: RealOpenShiftAPI, tmp_path: Path
) -> None:
    """No Image names a registry host, so --registry-host is needed; the stream is created once
    its namespace exists.
    Recovery sends the layers newest first (fsLayers order, "descending", as a push does; see
    test_image_of_a_schema1_manifest): openshift-apiserver stores them in ascending order."""
    openshift_api = openshift_apiserver
    openshift_kubeconfig = openshift_api.kubeconfig(tmp_path / "kubeconfig")
    storage = hand_written_schema1_registry(tmp_path / "registry")
    args = ["check", "--storage", str(storage), "--metadata", "kube", "--shards", "1"]
    args += ["--kubeconfig", str(openshift_kubeconfig), "--recover", "--confirm"]
    assert main([*args, "--out", str(tmp_path / "nohost")]) == EXIT_FAILURE
    assert state(openshift_api) == ([], [])

    # the namespace is gone: the real server refuses the stream (a project comes first)
    code = main([*args, "--out", str(tmp_path / "gone"), "--registry-host", "r.example"])
    assert code == EXIT_FINDINGS
    [result] = rows(tmp_path / "gone" / RESULTS_FILE)
    assert result["status"] == "failed"
    assert 'HTTP 404 namespaces "legacy" not found' in result["error"]
    assert state(openshift_api) == ([], [])

    openshift_api.namespace("legacy")
    code = main([*args, "--out", str(tmp_path / "run"), "--registry-host", "r.example"])
    assert code == EXIT_OK, rows(tmp_path / "run" / RESULTS_FILE)
    [image] = openshift_api.images()
    assert image["metadata"]["annotations"]["image.openshift.io/dockerLayersOrder"] == ("ascending")
    assert [layer["name"] for layer in image["dockerImageLayers"]] == [
        digest_of(b"base layer"),
        digest_of(b"top layer"),
    ]
    assert tag_images(openshift_api, "legacy", "app") == {
        lost_found(image["metadata"]["name"]): [image["metadata"]["name"]]
    }
    again = ["check", "--storage", str(storage), "--metadata", "kube", "--shards", "1"]
    again += ["--kubeconfig", str(openshift_kubeconfig), "--out", str(tmp_path / "again")]
    report = tmp_path / "again.json"
    assert main([*again, "--report", str(report)]) == EXIT_OK, report.read_text()

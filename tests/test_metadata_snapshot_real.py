"""The metadata half of the snapshot against the real OpenShift API
(``tests/harness/openshift_apiserver.py``: kube-apiserver, openshift-apiserver, etcd), driven
through the ``regprune`` command.

The contract is tests/test_metadata_snapshot.py's: a listing is complete or the snapshot fails.
Here the server's own pagination, continue tokens, ``410 Expired``, RBAC and ``oc get`` dumps
prove it; the faults a real server cannot be made to answer (500s, 429s, dropped connections,
tokens that keep expiring) stay on the API test server there. The client's list calls are
recorded by wrapping the official client's method (the real server keeps no request log).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

import regprune.metadata
from regprune.cli.main import main
from regprune.layout import V2_ROOT, blob_data_path, link_content, manifest_link_path
from tests.conftest import rows
from tests.harness.openshift_api import DOCKER_MANIFEST_LIST, fake_digest, make_image
from tests.harness.openshift_apiserver import RealOpenShiftAPI

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

IMAGES = 57
STREAMS = 23
PAGE = 10
OLD = "2026-01-01T00:00:00Z"
TABLES = ("images", "image_blobs", "imagestreams", "imagestream_tags", "metadata_anomalies")


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """A one-manifest registry tree: storage is not what these tests are about."""
    root = tmp_path / "registry"
    digest = "sha256:" + hashlib.sha256(b"manifest").hexdigest()
    for key, data in {
        blob_data_path(digest): b"manifest",
        manifest_link_path("ns0/app", digest): link_content(digest),
    }.items():
        path = root / V2_ROOT / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def cluster(openshift_apiserver: RealOpenShiftAPI) -> RealOpenShiftAPI:
    """57 images and 23 streams: six and three pages of ten."""
    api = openshift_apiserver
    for i in range(IMAGES):
        api.add_image(
            digest=fake_digest(f"image-{i}"),
            repository=f"ns{i % 4}/app",
            layers=[(fake_digest("base"), 100), (fake_digest(f"layer-{i}"), 10 + i)],
            config=fake_digest(f"config-{i}"),
            created="2026-01-01T00:00:00Z",
        )
    for i in range(STREAMS):
        api.add_imagestream(
            f"ns{i % 4}",
            f"stream-{i:02d}",
            {"latest": [fake_digest(f"image-{i}")], "old": [fake_digest(f"image-{i + STREAMS}")]},
        )
    return api


Call = tuple[str, str | None, int, int | None]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every cluster-wide list of image.openshift.io the client makes, in order: (plural,
    continue token, status, limit), recorded at the listing's one GET (``get_json``)."""
    seen: list[Call] = []
    original = regprune.metadata.get_json

    def recorded(client: Any, path: str, query: list[tuple[str, Any]], timeout: Any) -> Any:
        if not path.startswith(IMAGE_API):
            return original(client, path, query, timeout)
        plural, params = path.rsplit("/", 1)[1], dict(query)
        token, limit = params.get("continue"), params.get("limit")
        try:
            page = original(client, path, query, timeout)
        except ApiException as exc:
            seen.append((plural, token, exc.status, limit))
            raise
        seen.append((plural, token, 200, limit))
        return page

    monkeypatch.setattr(regprune.metadata, "get_json", recorded)
    return seen


IMAGE_API = f"/apis/{regprune.metadata.GROUP}/{regprune.metadata.VERSION}/"


def snapshot(tmp_path: Path, storage: Path, metadata: list[str], name: str = "snap") -> Path:
    """``regprune snapshot`` as a user runs it, ten objects a page; the output folder."""
    out = tmp_path / name
    args = ["snapshot", "--storage", str(storage), *metadata, "--out", str(out)]
    assert main([*args, "--shards", "1", "--page-size", str(PAGE)]) == 0
    return out


def kube(kubeconfig: Path) -> list[str]:
    return ["--metadata", "kube", "--kubeconfig", str(kubeconfig)]


def of(calls: list[Call], plural: str) -> list[Call]:
    return [call for call in calls if call[0] == plural]


def check_complete(out: Path, api: RealOpenShiftAPI) -> None:
    """Every object exactly once: the counts the listing tasks saw (snapshot.json) equal the
    rows, which equal what the server holds."""
    images = rows(out / "images.parquet")
    assert sorted(r["image"] for r in images) == [i["metadata"]["name"] for i in api.images()]
    streams = rows(out / "imagestreams.parquet")
    assert sorted((r["namespace"], r["name"]) for r in streams) == sorted(
        (s["metadata"]["namespace"], s["metadata"]["name"]) for s in api.imagestreams()
    )
    summary = json.loads((out / "snapshot.json").read_text())
    assert summary["metadata_objects"] == {"images": len(images), "imagestreams": len(streams)}


def test_small_pages_list_every_object_exactly_once(
    cluster: RealOpenShiftAPI, calls: list[Call], storage: Path, tmp_path: Path
) -> None:
    """Six pages of images and three of streams, each asked for once, in order, with the
    server's token of the page before; the rows carry every layer, config and tag event."""
    out = snapshot(tmp_path, storage, kube(cluster.kubeconfig(tmp_path / "kc")))
    check_complete(out, cluster)
    assert len(rows(out / "images.parquet")) == IMAGES
    assert len(rows(out / "imagestreams.parquet")) == STREAMS
    for plural, count in (("images", IMAGES), ("imagestreams", STREAMS)):
        pages = of(calls, plural)
        assert len(pages) == -(-count // PAGE)
        assert [(status, limit) for *_, status, limit in pages] == [(200, PAGE)] * len(pages)
        assert pages[0][1] is None and all(token for _, token, *_ in pages[1:])
        assert len({token for _, token, *_ in pages}) == len(pages)

    query = f"SELECT * FROM t WHERE image = '{fake_digest('image-3')}'"
    blobs = rows(out / "image_blobs.parquet", query)
    assert {(b["kind"], b["digest"], b["position"], b["size"]) for b in blobs} == {
        ("manifest", fake_digest("image-3"), None, None),
        ("config", fake_digest("config-3"), None, None),
        ("layer", fake_digest("base"), 0, 100),
        ("layer", fake_digest("layer-3"), 1, 13),
    }
    tags = rows(out / "imagestream_tags.parquet")
    assert len(tags) == 2 * STREAMS
    assert {(t["namespace"], t["name"], t["tag"], t["image"]) for t in tags} >= {
        ("ns1", "stream-05", "latest", fake_digest("image-5")),
        ("ns1", "stream-05", "old", fake_digest(f"image-{5 + STREAMS}")),
    }
    assert rows(out / "metadata_anomalies.parquet") == []


def aged(token: str) -> str:
    """The same continue token from a resourceVersion etcd no longer keeps (the server reads
    only its ``rv`` and ``start``): what a client holds when a list took longer than the
    compaction interval."""
    raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw["rv"] = 1
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


def test_an_expired_continue_token_restarts_the_list(
    cluster: RealOpenShiftAPI,
    calls: list[Call],
    storage: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """etcd compacted, the first continued images page asks with a token of a compacted
    revision: the server answers ``410 Expired`` (its own Status, with a token for an
    inconsistent continuation that regprune must not use); regprune drops what it listed and
    lists again from the start, every object once."""
    cluster.compact()
    recorded = regprune.metadata.get_json  # the calls fixture's, which records this one too
    aged_once: list[str] = []

    def first_continue_aged(
        client: Any, path: str, query: list[tuple[str, Any]], timeout: Any
    ) -> Any:
        token = dict(query).get("continue")
        if path.endswith("/images") and token and not aged_once:
            aged_once.append(token)
            query = [(k, aged(v) if k == "continue" else v) for k, v in query]
        return recorded(client, path, query, timeout)

    monkeypatch.setattr(regprune.metadata, "get_json", first_continue_aged)
    out = snapshot(tmp_path, storage, kube(cluster.kubeconfig(tmp_path / "kc")))

    check_complete(out, cluster)
    pages = of(calls, "images")
    assert [status for _, _, status, _ in pages] == [200, 410] + [200] * 6
    assert [i for i, (_, token, *_) in enumerate(pages) if token is None] == [0, 2]


def test_rbac_forbidden_names_verb_and_resource(
    openshift_apiserver: RealOpenShiftAPI,
    calls: list[Call],
    storage: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The RBAC manifests minus ``list images``: the server's 403 is not retried, and the
    message tells which permission is missing."""
    api = openshift_apiserver
    api.add_image(digest=fake_digest("one"))
    kubeconfig = api.rbac_kubeconfig(tmp_path / "kc", without=["list images.image.openshift.io"])
    out = tmp_path / "snap"
    code = main(["snapshot", "--storage", str(storage), *kube(kubeconfig), "--out", str(out)])

    assert code == 1
    err = capsys.readouterr().err
    assert "regprune: error: forbidden: cannot list images.image.openshift.io" in err
    assert 'cannot list resource "images" in API group "image.openshift.io"' in err
    assert [status for _, _, status, _ in of(calls, "images")] == [403]
    assert not (out / "snapshot.json").exists()


def test_wrong_token_is_unauthorized(
    openshift_apiserver: RealOpenShiftAPI,
    calls: list[Call],
    storage: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A token the cluster does not accept fails at once (no retries) and says so."""
    kubeconfig = openshift_apiserver.kubeconfig(tmp_path / "kc", token="expired")
    out = tmp_path / "snap"
    code = main(["snapshot", "--storage", str(storage), *kube(kubeconfig), "--out", str(out)])

    assert code == 1
    assert "regprune: error: unauthorized: cannot list" in capsys.readouterr().err
    assert [status for _, _, status, _ in of(calls, "images")] == [401]


def test_a_dump_written_by_oc_gives_the_tables_of_the_live_listing(
    openshift_apiserver: RealOpenShiftAPI, storage: Path, tmp_path: Path
) -> None:
    """``oc get images,imagestreams -A -o json`` (and ``-o yaml``) of the real server, read as a
    dump, gives the same tables as listing the server: the dump path sees what a cluster
    prints, a manifest list and a tag history included."""
    api = openshift_apiserver
    child = fake_digest("child")
    api.add_image(make_image(child, repository="ns/app", layers=[fake_digest("l1")]))
    api.add_image(
        make_image(fake_digest("list"), media_type=DOCKER_MANIFEST_LIST, manifests=[child])
    )
    api.add_imagestream("ns", "app", {"latest": [fake_digest("list"), child]}, OLD)
    api.add_imagestream("other", "tool", {"v1": [child]})
    live = snapshot(tmp_path, storage, kube(api.kubeconfig(tmp_path / "kc")), "live")
    for output in ("json", "yaml"):
        printed = api.oc("get", "images,imagestreams", "-A", "-o", output).stdout
        dump = tmp_path / f"dump.{output}"
        dump.write_text(printed)
        if output == "yaml":
            assert yaml.safe_load(printed)["kind"] == "List"
        out = snapshot(tmp_path, storage, ["--metadata", str(dump)], f"from-{output}")
        for table in TABLES:
            assert rows(out / f"{table}.parquet") == rows(live / f"{table}.parquet"), table
    children = rows(
        live / "image_blobs.parquet", "SELECT * FROM t WHERE kind = 'manifest_list_child'"
    )
    assert [(c["image"], c["digest"]) for c in children] == [(fake_digest("list"), child)]

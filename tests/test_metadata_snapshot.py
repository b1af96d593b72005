"""The metadata half of the snapshot: the live API (through the OpenShift API test server over
real HTTP) and dump files.

What the real OpenShift API shows (pagination, its 410 for an expired continue token, RBAC's
403, a wrong token's 401, ``oc get`` dumps) is tests/test_metadata_snapshot_real.py's. Here
stays what needs the test server: faults a real server cannot be made to answer (500s, 429s,
503s with Retry-After, dropped connections, tokens that expire on every page) and dumps built
object by object (the test server only builds them; no request is made).

Later steps delete what the metadata does *not* list, so the contract checked here is that a
listing is complete or fails: every object exactly once across pages, transient errors
retried, an expired continue token restarting the list, and anything that cannot be read
completely (persistent errors, RBAC, broken dumps) failing with a message that says what went
wrong, never tables that look complete.

The decisions are the library's and the listing tasks' functions, called here as plain
functions (no flow run, no Prefect server): the parts they write are merged as the snapshot
merges them. A few tests (``slow``) run ``regprune snapshot`` itself for the command's
contract: exit code 1 with one error line, no Prefect retry on top of the client's, and no
``snapshot.json`` after a failure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.logging import disable_run_logger

from regprune import metadata
from regprune.cli.main import main
from regprune.layout import (
    V2_ROOT,
    blob_data_path,
    link_content,
    manifest_link_path,
    tag_current_link_path,
)
from regprune.metadata import Listed, MetadataError, MetadataSource
from regprune.tasks.metadata_snapshot import (
    MAX_LIST_RESTARTS,
    list_cluster_objects,
    merge_metadata_tables,
    read_metadata_dump,
)
from tests.conftest import rows
from tests.harness.openshift_api import (
    DOCKER_MANIFEST_LIST,
    OpenShiftAPIServer,
    RequestRecord,
    fake_digest,
    make_image,
)

IMAGES = 57
STREAMS = 23
PAGE = 10
IMAGES_PATH = r"/images$"
STREAMS_PATH = r"/imagestreams$"
ATTEMPTS = 7  # MetadataSource.max_retries (6) + 1


pytestmark = pytest.mark.usefixtures("no_retry_waits")


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """A one-image registry tree: storage is not what these tests are about."""
    root = tmp_path / "registry"
    digest = "sha256:" + hashlib.sha256(b"manifest").hexdigest()
    files = {
        blob_data_path(digest): b"manifest",
        manifest_link_path("ns0/app", digest): link_content(digest),
        tag_current_link_path("ns0/app", "latest"): link_content(digest),
    }
    for key, data in files.items():
        path = root / V2_ROOT / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def cluster(openshift_api: OpenShiftAPIServer) -> OpenShiftAPIServer:
    """57 images and 23 streams: six and three pages of ten."""
    for i in range(IMAGES):
        openshift_api.add_image(
            digest=fake_digest(f"image-{i}"),
            repository=f"ns{i % 4}/app",
            layers=[(fake_digest("base"), 100), (fake_digest(f"layer-{i}"), 10 + i)],
            config=fake_digest(f"config-{i}"),
            created="2026-01-01T00:00:00Z",
        )
    for i in range(STREAMS):
        openshift_api.add_imagestream(
            f"ns{i % 4}",
            f"stream-{i:02d}",
            {"latest": [fake_digest(f"image-{i}")], "old": [fake_digest(f"image-{i + STREAMS}")]},
        )
    openshift_api.clear_requests()
    return openshift_api


def run_snapshot(out: Path, storage: Path, metadata_source: str, *extra: str) -> tuple[int, Path]:
    """``regprune snapshot`` as a user runs it; returns the exit code and the output folder."""
    args = ["snapshot", "--storage", str(storage), "--metadata", metadata_source]
    code = main([*args, "--out", str(out), "--shards", "1", *extra])
    return code, out


def snapshot_kube(tmp_path: Path, storage: Path, kubeconfig: Path) -> tuple[int, Path]:
    """A snapshot through the API server, ten objects a page."""
    args = ["--kubeconfig", str(kubeconfig), "--page-size", str(PAGE)]
    return run_snapshot(tmp_path / "snap", storage, "kube", *args)


def merged(listings: list[Listed], out: Path) -> dict[str, int]:
    """The listings' parts merged into the snapshot's metadata tables, as the flow merges them;
    the objects each listing read (``snapshot.json``'s ``metadata_objects``)."""
    merge_metadata_tables.fn(listings, str(out))
    return {kind: n for listed in listings for kind, n in listed.objects.items()}


def list_kube(out: Path, kubeconfig: Path) -> dict[str, int]:
    """Both listing tasks' work, ten objects a page, as plain calls; the merged tables in
    ``out``. Raises what the listing raises."""
    source = MetadataSource(kubeconfig=str(kubeconfig), page_size=PAGE)
    with disable_run_logger():
        listings = [
            list_cluster_objects.fn(source, plural, str(out / "parts"))
            for plural in ("images", "imagestreams")
        ]
    return merged(listings, out)


def read_dump(out: Path, dump: Path) -> dict[str, int]:
    """The dump task's work as a plain call; the merged tables in ``out``."""
    return merged([read_metadata_dump.fn(MetadataSource(str(dump)), str(out / "parts"))], out)


def parts_left(out: Path) -> list[Path]:
    """Parquet parts a failed listing left behind (it must drop what it wrote)."""
    return list(out.rglob("*.parquet"))


def lists(server: OpenShiftAPIServer, path_regex: str) -> list[RequestRecord]:
    """The logged list requests of one resource, oldest first."""
    pattern = re.compile(path_regex)
    return [r for r in server.requests if r.method == "GET" and pattern.search(r.path)]


def check_complete(out: Path, server: OpenShiftAPIServer, objects: dict[str, int]) -> None:
    """Every object exactly once: the merge de-duplicates rows, so the object counts the
    listing tasks saw (``objects``, snapshot.json's) prove that no page was read twice."""
    images = rows(out / "images.parquet")
    assert sorted(r["image"] for r in images) == [i["metadata"]["name"] for i in server.images()]
    streams = rows(out / "imagestreams.parquet")
    assert [(r["namespace"], r["name"]) for r in streams] == [
        (s["metadata"]["namespace"], s["metadata"]["name"]) for s in server.imagestreams()
    ]
    assert objects == {"images": len(images), "imagestreams": len(streams)}


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_persistent_500_on_the_third_page_fails_the_snapshot(
    cluster: OpenShiftAPIServer,
    openshift_kubeconfig: Path,
    storage: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two good pages are not a listing: through the command, exit 1 with one line, and no
    images table (nor snapshot.json) may come out of them. (Test server: a real one cannot be
    made to answer 500 from the third page on.)"""
    fault = cluster.inject("GET", IMAGES_PATH, status=500, after=2, times=None)
    code, out = snapshot_kube(tmp_path, storage, openshift_kubeconfig)

    assert code == 1
    err = capsys.readouterr().err
    assert "regprune: error: cannot list images.image.openshift.io: HTTP 500" in err
    assert f"(after {ATTEMPTS} attempts)" in err
    # our retries, and no second round from a Prefect task retry
    assert fault.fired == ATTEMPTS
    assert [p.status for p in lists(cluster, IMAGES_PATH)] == [200, 200] + [500] * ATTEMPTS
    assert not (out / "images.parquet").exists()
    assert not (out / "snapshot.json").exists()
    leftovers = list(out.rglob("*.parquet"))
    assert not [p for p in leftovers if p.parent.name in ("images", "image_blobs")], leftovers


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_failed_snapshot_leaves_no_earlier_snapshot_looking_current(
    cluster: OpenShiftAPIServer, openshift_kubeconfig: Path, storage: Path, tmp_path: Path
) -> None:
    """snapshot.json is written last: a failed run into the folder of an earlier snapshot
    must not leave that snapshot looking like the result of this run. (Test server: an
    injected 500.)"""
    code, out = snapshot_kube(tmp_path, storage, openshift_kubeconfig)
    assert code == 0
    summary = json.loads((out / "snapshot.json").read_text())
    assert summary["metadata"] == "kube"
    assert summary["metadata_objects"] == {"images": IMAGES, "imagestreams": STREAMS}
    cluster.inject("GET", IMAGES_PATH, status=500, after=2, times=None)
    code, out = snapshot_kube(tmp_path, storage, openshift_kubeconfig)
    assert code == 1
    assert not (out / "snapshot.json").exists()


def test_a_page_that_keeps_failing_fails_the_listing_and_drops_its_parts(
    cluster: OpenShiftAPIServer, openshift_kubeconfig: Path, tmp_path: Path
) -> None:
    """The library's side of the above: our retries, then an error naming the list; the part
    written from the two good pages is dropped."""
    fault = cluster.inject("GET", IMAGES_PATH, status=500, after=2, times=None)
    with pytest.raises(MetadataError, match=f"HTTP 500.*after {ATTEMPTS} attempts"):
        list_kube(tmp_path / "snap", openshift_kubeconfig)
    assert fault.fired == ATTEMPTS
    assert parts_left(tmp_path / "snap") == []


@pytest.mark.parametrize(
    ("fault", "failures"),
    [
        pytest.param({"status": 500, "times": 2}, 2, id="500-twice"),
        pytest.param({"status": 429, "times": 3}, 3, id="429-without-retry-after"),
        # urllib3 retries 429/503 with Retry-After three times itself, then our loop takes over
        pytest.param({"status": 503, "times": 6, "retry_after": 0}, 6, id="503-retry-after"),
        pytest.param({"status": 429, "times": 6, "retry_after": 0}, 6, id="429-retry-after"),
        pytest.param({"disconnect": True, "times": 5}, 5, id="dropped-connection"),
    ],
)
def test_transient_errors_mid_list_are_retried(
    cluster: OpenShiftAPIServer,
    openshift_kubeconfig: Path,
    tmp_path: Path,
    fault: dict[str, Any],
    failures: int,
) -> None:
    """The failed page is asked for again with the same continue token: nothing is lost,
    nothing is listed twice, and the list does not start over. (Test server: a real one
    cannot be made to answer these faults.)"""
    injected = cluster.inject("GET", IMAGES_PATH, after=2, **fault)
    streams_fault = cluster.inject("GET", STREAMS_PATH, status=500, after=1, times=1)
    out = tmp_path / "snap"
    objects = list_kube(out, openshift_kubeconfig)

    assert injected.fired == failures and streams_fault.fired == 1
    check_complete(out, cluster, objects)
    pages = lists(cluster, IMAGES_PATH)
    assert len(pages) == -(-IMAGES // PAGE) + failures
    assert sum(1 for p in pages if "continue" not in p.query) == 1
    retried = pages[2 : 3 + failures]
    assert len({p.query["continue"] for p in retried}) == 1
    assert [p.status for p in retried][-1] == 200


def expire_continue_tokens_on(
    server: OpenShiftAPIServer, monkeypatch: pytest.MonkeyPatch, times: int | None
) -> list[str]:
    """Compact "etcd" right before the server answers a continued images list, ``times``
    times (None: always), so the real 410 Expired path of the server answers it.

    The fault injector matches paths only and cannot expire tokens itself, hence the wrapper
    around the server's list handler (looked up per request).
    """
    original: Callable[[dict[str, str], Any], Any] = server._h_list_images
    expired: list[str] = []

    def handler(query: dict[str, str], body: Any) -> Any:
        if query.get("continue") and (times is None or len(expired) < times):
            expired.append(query["continue"])
            server.expire_continue_tokens()
        return original(query, body)

    monkeypatch.setattr(server, "_h_list_images", handler)
    return expired


def test_injected_410_on_a_continued_page_restarts_the_list(
    cluster: OpenShiftAPIServer, openshift_kubeconfig: Path, tmp_path: Path
) -> None:
    """A 410 Status on the fourth request (the third page) drops what was listed and lists
    again from the start. (Test server: the real one's 410 on the first continued page is
    tests/test_metadata_snapshot_real.py's; this is the same path later in the list.)"""
    fault = cluster.inject("GET", IMAGES_PATH, status=410, after=3, times=1)
    out = tmp_path / "snap"
    objects = list_kube(out, openshift_kubeconfig)

    assert fault.fired == 1
    check_complete(out, cluster, objects)
    pages = lists(cluster, IMAGES_PATH)
    assert [p.status for p in pages] == [200, 200, 200, 410] + [200] * 6
    assert [i for i, p in enumerate(pages) if "continue" not in p.query] == [0, 4]


def test_a_list_that_keeps_expiring_fails(
    cluster: OpenShiftAPIServer,
    openshift_kubeconfig: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Restarts are bounded; the message says what to try. (Test server: it expires every
    token it handed out, which no real server can be made to do.)"""
    expire_continue_tokens_on(cluster, monkeypatch, times=None)
    with pytest.raises(MetadataError, match="list of images kept expiring") as failed:
        list_kube(tmp_path / "snap", openshift_kubeconfig)

    assert "--page-size" in str(failed.value)
    starts = [p for p in lists(cluster, IMAGES_PATH) if "continue" not in p.query]
    assert len(starts) == MAX_LIST_RESTARTS + 1
    assert parts_left(tmp_path / "snap") == []


def test_unreadable_kubeconfig(tmp_path: Path) -> None:
    """A wrong --kubeconfig path is an error message, not a traceback."""
    with pytest.raises(MetadataError, match=r"^cannot load kubeconfig"):
        list_kube(tmp_path / "snap", tmp_path / "no-such-kubeconfig")


# --- dumps -----------------------------------------------------------------------------------


def dump_content(server: OpenShiftAPIServer) -> dict[str, Any]:
    """A small cluster as ``oc get images,imagestreams -A -o json`` prints it."""
    child = fake_digest("child")
    server.add_image(make_image(child, repository="ns/app", layers=[fake_digest("l1")]))
    server.add_image(
        make_image(fake_digest("list"), media_type=DOCKER_MANIFEST_LIST, manifests=[child])
    )
    server.add_imagestream("ns", "app", {"latest": [fake_digest("list"), child]})
    server.add_imagestream("other", "tool", {"v1": [child]})
    return server.dump_list()


def check_dump_tables(out: Path, server: OpenShiftAPIServer) -> None:
    assert [r["image"] for r in rows(out / "images.parquet")] == sorted(
        [fake_digest("child"), fake_digest("list")]
    )
    assert [(r["namespace"], r["name"]) for r in rows(out / "imagestreams.parquet")] == [
        ("ns", "app"),
        ("other", "tool"),
    ]
    tags = rows(out / "imagestream_tags.parquet")
    assert [(t["name"], t["tag"], t["position"], t["image"]) for t in tags] == [
        ("app", "latest", 0, fake_digest("list")),
        ("app", "latest", 1, fake_digest("child")),
        ("tool", "v1", 0, fake_digest("child")),
    ]
    children = rows(
        out / "image_blobs.parquet", "SELECT * FROM t WHERE kind = 'manifest_list_child'"
    )
    assert [(c["image"], c["digest"]) for c in children] == [
        (fake_digest("list"), fake_digest("child"))
    ]
    assert rows(out / "metadata_anomalies.parquet") == []


def test_dump_as_json_list(openshift_api: OpenShiftAPIServer, tmp_path: Path) -> None:
    """What ``oc get images,imagestreams -A -o json`` writes."""
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps(dump_content(openshift_api), indent=2))
    read_dump(tmp_path / "snap", dump)
    check_dump_tables(tmp_path / "snap", openshift_api)


def test_dump_as_json_list_read_in_small_chunks(
    openshift_api: OpenShiftAPIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JSON dump is decoded item by item from chunks of the file (a big cluster's dump does
    not fit in memory parsed whole): chunks of a few bytes split every kind of token, and
    an ImageList whose kind comes after its kind-less items still gives Images."""
    monkeypatch.setattr(metadata._JsonListStream, "CHUNK", 7)
    content = dump_content(openshift_api)
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps(content, indent=1))
    read_dump(tmp_path / "snap", dump)
    check_dump_tables(tmp_path / "snap", openshift_api)
    images = [{k: v for k, v in i.items() if k != "kind"} for i in content["items"]]
    images = [i for i in images if i["apiVersion"] == "image.openshift.io/v1" and "image" not in i]
    kind_last = tmp_path / "imagelist.json"
    kind_last.write_text(json.dumps({"items": images[:2], "kind": "ImageList", "n": 12345}))
    assert [o["kind"] for o in metadata.read_dump_objects(kind_last)] == ["Image", "Image"]


def test_dump_as_yaml_documents(openshift_api: OpenShiftAPIServer, tmp_path: Path) -> None:
    """A stream of YAML documents: single objects and a List, with unquoted timestamps."""
    items = dump_content(openshift_api)["items"]
    dump = tmp_path / "dump.yaml"
    text = yaml.safe_dump_all(
        [items[0], {"apiVersion": "v1", "kind": "List", "items": items[1:3]}, items[3]]
    )
    dump.write_text(re.sub(r"'(\d{4}-\d\d-\d\dT[\d:]+Z)'", r"\1", text))
    out = tmp_path / "snap"
    read_dump(out, dump)
    check_dump_tables(out, openshift_api)
    assert all(r["created"] is not None for r in rows(out / "imagestreams.parquet"))


def test_dump_folder_with_typed_lists_and_overlap(
    openshift_api: OpenShiftAPIServer, tmp_path: Path
) -> None:
    """``oc get images -o json`` and ``oc get is -A -o yaml`` in one folder, plus an API
    ``ImageList`` whose items carry no kind, and an overlapping file: rows come out once."""
    items = dump_content(openshift_api)["items"]
    images = [i for i in items if i["kind"] == "Image"]
    streams = [i for i in items if i["kind"] == "ImageStream"]
    folder = tmp_path / "dumps"
    folder.mkdir()
    bare = [{k: v for k, v in i.items() if k not in ("kind", "apiVersion")} for i in images]
    (folder / "1-images.json").write_text(
        json.dumps({"apiVersion": "image.openshift.io/v1", "kind": "ImageList", "items": bare})
    )
    (folder / "2-streams.yml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": streams})
    )
    (folder / "3-again.json").write_text(json.dumps({"kind": "List", "items": images[:1]}))
    (folder / "README.txt").write_text("not a dump: ignored")
    objects = read_dump(tmp_path / "snap", folder)
    check_dump_tables(tmp_path / "snap", openshift_api)
    assert objects == {"images": 3, "imagestreams": 2}


def truncated_yaml(server: OpenShiftAPIServer) -> str:
    """``oc get -o yaml`` cut off mid-items: still valid YAML, but without ``kind: List``."""
    text = yaml.safe_dump(dump_content(server))
    lines = text.splitlines()
    cut = max(i for i, line in enumerate(lines) if line.startswith("- apiVersion:"))
    return "\n".join(lines[:cut]) + "\n"


def truncated_json(server: OpenShiftAPIServer) -> str:
    """``oc get -o json`` cut off inside the third item, after two were read."""
    text = json.dumps(dump_content(server), indent=2)
    third = [m.start() for m in re.finditer(r"\n    \{", text)][2]
    return text[: third + 40]


BAD_DUMPS: dict[str, tuple[str | bytes | Callable[[OpenShiftAPIServer], str], str]] = {
    "not-json-or-yaml": ('{"kind": "List", "items": [', "is neither JSON nor YAML"),
    "binary": (b"\x89PNG\r\n\x1a\n\xff\xfe", "cannot read metadata dump"),
    "plain-text": ("hello world\n", "expected an object or a List, got str"),
    "json-array": ("[]", "expected an object or a List, got list"),
    "empty": ("", "is empty"),
    "only-comments": ("# nothing\n---\n", "is empty"),
    "wrong-kind": (
        json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}),
        "kind 'Pod' is not a List, ImageList, ImageStreamList, Image or ImageStream",
    ),
    "item-not-an-object": (
        json.dumps({"kind": "List", "items": [make_image(fake_digest("ok")), "oops"]}),
        "item 1 of the List is not an object",
    ),
    "truncated-yaml": (truncated_yaml, "was the dump cut short?"),
    "truncated-json": (truncated_json, "is broken JSON after 2 items"),
}


@pytest.mark.parametrize("case", list(BAD_DUMPS))
def test_bad_dump_fails_with_a_clear_message(
    case: str, openshift_api: OpenShiftAPIServer, tmp_path: Path
) -> None:
    """A dump that cannot be read completely fails, naming the file; nothing is kept of it."""
    content, message = BAD_DUMPS[case]
    if callable(content):
        content = content(openshift_api)
    dump = tmp_path / "dump.yaml"
    if isinstance(content, bytes):
        dump.write_bytes(content)
    else:
        dump.write_text(content)
    with pytest.raises(MetadataError) as failed:
        read_dump(tmp_path / "snap", dump)
    assert str(dump) in str(failed.value)
    assert message in str(failed.value)
    assert parts_left(tmp_path / "snap") == []


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_bad_dump_fails_the_snapshot_with_one_line(
    openshift_api: OpenShiftAPIServer,
    storage: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the command: exit 1, one error line naming the file, no snapshot.json."""
    dump = tmp_path / "dump.json"
    dump.write_text(truncated_json(openshift_api))
    code, out = run_snapshot(tmp_path / "snap", storage, str(dump))
    assert code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("regprune: error: "), lines
    assert str(dump) in lines[0] and "is broken JSON after 2 items" in lines[0]
    assert not (out / "snapshot.json").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.json", "does not exist"),
        (lambda tmp: (tmp / "empty-folder").mkdir() or tmp / "empty-folder", "no .json, .yaml"),
    ],
    ids=["missing", "folder-without-dumps"],
)
def test_missing_dump(make: Callable[[Path], Path], message: str, tmp_path: Path) -> None:
    """Nothing to read is an error, never an empty cluster."""
    with pytest.raises(MetadataError) as failed:
        read_dump(tmp_path / "snap", make(tmp_path))
    assert message in str(failed.value)


def test_bad_objects_in_a_dump_become_anomalies(tmp_path: Path) -> None:
    """Objects a hand-edited dump gets wrong are reported row by row; the good ones (and the
    good parts of a damaged one) are still recorded, so nothing they reference is lost."""
    good = fake_digest("good")
    items: list[Any] = [
        make_image(good, layers=[fake_digest("layer")]),
        make_image("latest"),
        make_image(fake_digest("bad-layer"), layers=["not-a-digest", fake_digest("layer-2")]),
        {**make_image(fake_digest("layers-not-a-list")), "dockerImageLayers": "oops"},
        {"kind": "Image", "metadata": "garbage"},
        {"kind": "ImageStream", "metadata": {"namespace": 7, "name": "seven"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": "not-an-object"},
        {
            "kind": "ImageStream",
            "metadata": {"namespace": "ns", "name": "app"},
            "status": {
                "tags": [
                    {"tag": "latest", "items": [{"image": good}, {"image": "app:v1"}]},
                    {"tag": 1.0, "items": [{"image": good}]},
                    {"tag": "broken", "items": ["not-an-object"]},
                ]
            },
        },
        {"kind": "ImageStream", "metadata": {"namespace": "ns", "name": "odd"}, "status": []},
        {
            "kind": "ImageStream",
            "metadata": {"namespace": "ns", "name": "x"},
            "status": {"tags": {}},
        },
    ]
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    out = tmp_path / "snap"
    read_dump(out, dump)

    images = {r["image"] for r in rows(out / "images.parquet")}
    assert images == {good, fake_digest("bad-layer"), fake_digest("layers-not-a-list")}
    layers = rows(out / "image_blobs.parquet", "SELECT * FROM t WHERE kind = 'layer'")
    assert {(r["image"], r["digest"]) for r in layers} == {
        (good, fake_digest("layer")),
        (fake_digest("bad-layer"), fake_digest("layer-2")),
    }
    streams = {(r["namespace"], r["name"]) for r in rows(out / "imagestreams.parquet")}
    assert streams == {("ns", "app"), ("ns", "odd"), ("ns", "x")}
    tags = rows(out / "imagestream_tags.parquet")
    assert [(t["tag"], t["position"], t["image"]) for t in tags] == [
        ("broken", 0, None),
        ("latest", 0, good),
        ("latest", 1, None),
        (None, 0, good),
    ]

    anomalies = {
        (a["kind"], a["namespace"], a["name"], a["problem"])
        for a in rows(out / "metadata_anomalies.parquet")
    }
    assert anomalies == {
        ("Image", None, "latest", "Image name is not a sha256 digest"),
        ("Image", None, "None", "Image name is not a sha256 digest"),
        ("Image", None, fake_digest("bad-layer"), "layer 0 is not a digest"),
        ("Image", None, fake_digest("layers-not-a-list"), "dockerImageLayers is not a list"),
        ("ImageStream", None, "seven", "no namespace or name"),
        ("Pod", None, "None", "unexpected kind, ignored"),
        ("ImageStream", "ns", "app", "tag latest item 1 image is not a digest"),
        (
            "ImageStream",
            "ns",
            "app",
            "status.tags[1] tag name 1.0 is not a string (quote it in YAML)",
        ),
        ("ImageStream", "ns", "app", "tag broken item 0 image is not a digest"),
        ("ImageStream", "ns", "x", "status.tags is not a list"),
    }

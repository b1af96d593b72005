"""prune-images' journal, dry run and undo against the real OpenShift API
(tests/harness/openshift_apiserver.py: etcd + kube-apiserver + openshift-apiserver).

The cluster is made as pushes make it: ImageStreamMappings carrying the manifest and config
texts, so the server derives each Image's metadata (dockerImageMetadata, layers, the layer
order annotation) as in a cluster; half the Images keep their texts, half are
``manifestBlobStored``; one tag holds a manifest list whose children are Images of their own.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import main
from regprune.images_cluster import cluster_for
from regprune.images_journal import JOURNAL_DIR, UNDO_DIR, journal_files, read_journal
from regprune.images_undo import undo_images
from regprune.metadata import MetadataSource
from tests.conftest import rows
from tests.harness.openshift_api import DOCKER_MANIFEST_LIST, DOCKER_SCHEMA2, fake_digest
from tests.harness.openshift_apiserver import REGISTRY_HOST, RealOpenShiftAPI

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

OPTIONS = ["--keep-tag-revisions=1", "--keep-younger-than=0s"]
SERVER_SET = ("uid", "resourceVersion", "creationTimestamp", "managedFields")
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def image_of_push(namespace: str, name: str, seed: int) -> dict[str, Any]:
    """An Image as OpenShift's registry sends it for a push: manifest and config as text."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": f"2024-01-{seed % 28 + 1:02d}T00:00:00Z",
            "config": {"Env": [f"SEED={seed}"], "Labels": {"seed": str(seed)}},
            "rootfs": {"type": "layers", "diff_ids": [fake_digest(f"diff-{seed}")]},
        }
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_SCHEMA2,
            "config": {
                "mediaType": CONFIG_TYPE,
                "size": len(config),
                "digest": fake_digest(config.encode()),
            },
            "layers": [
                {"mediaType": LAYER_TYPE, "size": 5000, "digest": fake_digest("base")},
                {"mediaType": LAYER_TYPE, "size": 1000 + seed, "digest": fake_digest(f"l{seed}")},
            ],
        }
    )
    digest = fake_digest(manifest.encode())
    annotations = {"openshift.io/image.managed": "true"}
    if seed % 2:
        annotations["image.openshift.io/manifestBlobStored"] = "true"
    return {
        "metadata": {"name": digest, "annotations": annotations},
        "dockerImageReference": f"{REGISTRY_HOST}/{namespace}/{name}@{digest}",
        "dockerImageManifestMediaType": DOCKER_SCHEMA2,
        "dockerImageManifest": manifest,
        "dockerImageConfig": config,
    }


def push(api: RealOpenShiftAPI, namespace: str, name: str, tag: str, seed: int) -> str:
    image = image_of_push(namespace, name, seed)
    api.map_image(namespace, name, tag, image)
    return str(image["metadata"]["name"])


def push_list(api: RealOpenShiftAPI, namespace: str, name: str, tag: str, seed: int) -> str:
    """A manifest list of two children; the children are Images without a tag."""
    children = []
    for n in (seed * 10 + 1, seed * 10 + 2):
        child = image_of_push(namespace, name, n)
        api.add_image(child)
        children.append(
            {
                "mediaType": DOCKER_SCHEMA2,
                "size": len(child["dockerImageManifest"]),
                "digest": child["metadata"]["name"],
                "platform": {"architecture": "amd64" if n % 2 else "arm64", "os": "linux"},
            }
        )
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": children}
    )
    digest = fake_digest(manifest.encode())
    api.map_image(
        namespace,
        name,
        tag,
        {
            "metadata": {"name": digest, "annotations": {"openshift.io/image.managed": "true"}},
            "dockerImageReference": f"{REGISTRY_HOST}/{namespace}/{name}@{digest}",
            "dockerImageManifestMediaType": DOCKER_MANIFEST_LIST,
            "dockerImageManifest": manifest,
        },
    )
    return digest


@pytest.fixture
def cluster(openshift_apiserver: RealOpenShiftAPI, tmp_path: Path) -> dict[str, Any]:
    """ns1/app:latest 4 pushes and :v1 2; ns2/tool:1.0 a push, a manifest list, a push.
    With ``--keep-tag-revisions=1`` the older revisions go, and the Images only they held."""
    api = openshift_apiserver
    api.add_imagestream("ns1", "app")
    api.add_imagestream("ns2", "tool")
    pushed = {
        "ns1/app:latest": [push(api, "ns1", "app", "latest", seed) for seed in (1, 2, 3, 4)],
        "ns1/app:v1": [push(api, "ns1", "app", "v1", seed) for seed in (5, 6)],
        "ns2/tool:1.0": [
            push(api, "ns2", "tool", "1.0", 7),
            push_list(api, "ns2", "tool", "1.0", 8),
            push(api, "ns2", "tool", "1.0", 9),
        ],
    }
    return {
        "api": api,
        "pushed": pushed,
        "kubeconfig": api.kubeconfig(tmp_path / "kubeconfig"),
    }


def state(api: RealOpenShiftAPI) -> dict[str, Any]:
    """What must be the same before a run and after its undo: every Image but what the server
    sets on any create, every stream's tag histories (items in order, all their fields).

    The server sets one more thing on a create: a manifest list that carries its manifest
    text gets ``dockerImageMetadata.Created`` from the server's clock (a list has no config
    to date it), whatever the create sends; it is left out here and checked apart."""
    images = {}
    for image in api.images():
        meta = {k: v for k, v in image["metadata"].items() if k not in SERVER_SET}
        images[meta["name"]] = {**image, "metadata": meta}
        if list_dated_by_server(image):
            images[meta["name"]]["dockerImageMetadata"] = {
                k: v for k, v in image["dockerImageMetadata"].items() if k != "Created"
            }
    streams = {
        f"{s['metadata']['namespace']}/{s['metadata']['name']}": sorted(
            s["status"].get("tags") or [], key=lambda t: t["tag"]
        )
        for s in api.imagestreams()
    }
    return {"images": images, "streams": streams}


def list_dated_by_server(image: dict[str, Any]) -> bool:
    return image.get("dockerImageManifestMediaType") == DOCKER_MANIFEST_LIST and bool(
        image.get("dockerImageManifest")
    )


def prune_images(cluster: dict[str, Any], out: Path, *extra: str) -> int:
    return main(
        ["prune-images", "--kubeconfig", str(cluster["kubeconfig"]), *OPTIONS, *extra]
        + (["--out", str(out)] if "--snapshot" not in extra else [])
    )


def undo(cluster: dict[str, Any], run: Path) -> dict[str, int]:
    source = MetadataSource(kubeconfig=str(cluster["kubeconfig"]))
    return undo_images(run, cluster_for(source, confirm=True)).counts


def actions(run: Path) -> list[tuple[str, str | None, str, str]]:
    return [
        (r["kind"], r["namespace"], r["name"], r["status"])
        for r in rows(run / "images_actions.parquet")
    ]


def test_confirm_then_undo_leaves_the_same_images_and_histories(
    cluster: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api, pushed = cluster["api"], cluster["pushed"]
    before = state(api)
    assert len(before["images"]) == 11  # 9 pushes, 2 children
    run = tmp_path / "run"
    assert prune_images(cluster, run, "--confirm") == 0
    pruned = state(api)
    # the newest revision of each tag stays; 6 older ones and the 8 Images only they held go
    # (the list's two children with it)
    assert {
        name: [[i["image"] for i in t["items"]] for t in tags]
        for name, tags in pruned["streams"].items()
    } == {
        "ns1/app": [[pushed["ns1/app:latest"][-1]], [pushed["ns1/app:v1"][-1]]],
        "ns2/tool": [[pushed["ns2/tool:1.0"][-1]]],
    }
    assert len(pruned["images"]) == 3
    # every Image deleted was saved in full before, every stream as it was before its PUT
    records = [r for path in journal_files(run / JOURNAL_DIR) for r in read_journal(path)]
    saved = {r["image"]["metadata"]["name"]: r["image"] for r in records if r["record"] == "image"}
    assert set(saved) == set(before["images"]) - set(pruned["images"])
    assert all(saved[n]["metadata"]["uid"] for n in saved)

    capsys.readouterr()
    assert main(["undo", str(run), "--kubeconfig", str(cluster["kubeconfig"])]) == 0
    assert (
        f"Created 8 Image(s) again and put 6 tag history item(s) back into 2 ImageStream(s) "
        f"of {run}\n"
    ) in capsys.readouterr().out
    assert state(api) == before
    # the list's Created is the undo's (the server's clock), the rest as saved
    (listed,) = [i for i in api.images() if list_dated_by_server(i)]
    name = listed["metadata"]["name"]
    assert saved[name]["dockerImageMetadata"]["Created"] < listed["dockerImageMetadata"]["Created"]
    # again: nothing left to do, nothing doubled
    source = MetadataSource(kubeconfig=str(cluster["kubeconfig"]))
    again = undo_images(run, cluster_for(source, confirm=True))
    assert again.counts == {"Image:exists": 8, "ImageStream:unchanged": 2}
    assert again.items == 0 and again.failed == 0
    assert state(api) == before
    # the undo's own audit trail: one record per object, each attempt its own file
    trails = journal_files(run / UNDO_DIR)
    assert len(trails) == 2
    outcomes = [r for r in read_journal(trails[0]) if r["record"] == "outcome"]
    assert len(outcomes) == 10 and {r["status"] for r in outcomes} == {"created", "updated"}


def test_the_dry_run_walks_what_the_confirmed_run_does(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    """One plan; meanwhile a planned Image is tagged again. The dry run reads the cluster
    again as the confirmed run does, finds it held and walks the same actions, changing
    nothing; the confirmed run then does exactly those."""
    api, pushed = cluster["api"], cluster["pushed"]
    run = tmp_path / "run"
    assert prune_images(cluster, run) == 0  # the plan, and a first dry run
    again = pushed["ns1/app:latest"][0]
    api.add_imagestream("ns3", "copy", {"x": [again]})
    before = state(api)
    assert prune_images(cluster, run, "--snapshot", str(run)) == 0
    dry = actions(run)
    assert state(api) == before
    assert prune_images(cluster, run, "--snapshot", str(run), "--confirm") == 0
    done = actions(run)
    would = {"updated": "would-update", "deleted": "would-delete"}
    assert dry == [(k, ns, n, would.get(s, s)) for k, ns, n, s in done]
    assert {s for *_, s in dry} == {"would-update", "would-delete", "kept"}
    assert ("Image", None, again, "kept") in done
    assert again in state(api)["images"]
    # the confirmed run saved what it changed first; the dry runs, which change nothing, not
    files = journal_files(run / JOURNAL_DIR)
    assert [next(read_journal(f))["dry_run"] for f in files] == [True, True, False]
    saves = [
        [
            (r["record"], (r.get("image") or r.get("stream") or {}).get("metadata", {}).get("name"))
            for r in read_journal(f)
            if r["record"] in ("image", "stream")
        ]
        for f in files
    ]
    assert saves[0] == saves[1] == [] and len(saves[2]) == 2 + 8  # streams, planned Images


@pytest.fixture
def failing_journal(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The disk fills under the journal: its ``fail_at``-th fsync (1 is the attempt's begin
    record) and every later one answer ENOSPC; other files are not affected."""
    real = os.fsync
    calls = {"fail_at": 0, "journal": 0}

    def fsync(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).parent.name == JOURNAL_DIR:
            calls["journal"] += 1
            if calls["fail_at"] and calls["journal"] >= calls["fail_at"]:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_a_journal_write_that_fails_before_the_first_change_changes_nothing(
    cluster: dict[str, Any], tmp_path: Path, failing_journal: dict[str, int], capsys
) -> None:
    api = cluster["api"]
    before = state(api)
    failing_journal["fail_at"] = 2  # the save of the first page of streams to change
    run = tmp_path / "run"
    assert prune_images(cluster, run, "--confirm") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"regprune: error: cannot write the journal {run / JOURNAL_DIR}/")
    assert "No space left on device - stopped before another change" in line
    assert state(api) == before
    # the journal holds the begin record only: the member that failed was taken back
    (path,) = journal_files(run / JOURNAL_DIR)
    assert [r["record"] for r in read_journal(path)] == ["begin"]


def test_a_journal_write_that_fails_later_stops_there_and_undo_puts_back_what_was_done(
    cluster: dict[str, Any], tmp_path: Path, failing_journal: dict[str, int], capsys
) -> None:
    api = cluster["api"]
    before = state(api)
    failing_journal["fail_at"] = 3  # streams saved and updated; the Images' save fails
    run = tmp_path / "run"
    assert prune_images(cluster, run, "--confirm") == 1
    assert "cannot write the journal" in capsys.readouterr().err
    stopped = state(api)
    assert stopped["images"] == before["images"]  # no Image deleted
    assert stopped["streams"] != before["streams"]
    failing_journal["fail_at"] = 0
    assert undo(cluster, run) == {"ImageStream:updated": 2}
    assert state(api) == before


def test_undo_puts_items_back_around_what_changed_and_reports_a_stream_deleted_since(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    api, pushed = cluster["api"], cluster["pushed"]
    before = state(api)
    run = tmp_path / "run"
    assert prune_images(cluster, run, "--confirm") == 0
    newer = push(api, "ns1", "app", "latest", 10)  # a push since the run
    api.delete_imagestream("ns2", "tool")
    assert undo(cluster, run) == {
        "Image:created": 8,
        "ImageStream:gone": 1,
        "ImageStream:updated": 1,
    }
    after = state(api)
    assert set(after["images"]) == set(before["images"]) | {newer}
    latest = {t["tag"]: t["items"] for t in after["streams"]["ns1/app"]}["latest"]
    was = {t["tag"]: t["items"] for t in before["streams"]["ns1/app"]}["latest"]
    assert [i["image"] for i in latest] == [newer, *pushed["ns1/app:latest"][::-1]]
    assert latest[1:] == was
    assert "ns2/tool" not in after["streams"]  # not created again


def test_undo_without_the_grants_or_of_a_dry_run_says_so_in_one_line_and_changes_nothing(
    cluster: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = cluster["api"]
    dry = tmp_path / "dry"
    assert prune_images(cluster, dry) == 0
    run = tmp_path / "run"
    assert prune_images(cluster, run, "--confirm") == 0
    pruned = state(api)
    capsys.readouterr()

    assert main(["undo", str(dry), "--kubeconfig", str(cluster["kubeconfig"])]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        f"regprune: error: {dry} holds only dry runs of prune-images: nothing to undo"
    )

    # the service account with deployments/rbac/ minus the undo's create
    kubeconfig = api.rbac_kubeconfig(
        tmp_path / "sa.kubeconfig", without=["create images.image.openshift.io"]
    )
    assert main(["undo", str(run), "--kubeconfig", str(kubeconfig)]) == 1
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert line.startswith(
        f"regprune: error: forbidden: undo of {run} needs create images.image.openshift.io, "
        "which the API does not grant this user"
    )
    assert "regprune-undo-prune-images" in line and "Traceback" not in err
    assert state(api) == pruned
    assert not journal_files(run / UNDO_DIR)

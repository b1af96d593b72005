"""A confirmed nightly GC, then ``regprune undo RUN``: the storage byte for byte as before,
the API holding the same Images and tag histories, every image pulling again.

The cluster is made by pushing through OpenShift's registry (tests/harness/openshift_registry.py) on
a folder into the real OpenShift API (tests/harness/openshift_apiserver.py): the Images are what a
cluster records for a push, the storage what the registry wrote. Needs the registry binary,
the API server and skopeo; skips, saying what is missing, without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import main
from regprune.flows.nightly_gc import nightly_gc_flow
from regprune.snapshots import SnapshotSource
from tests.harness.openshift_registry import OpenShiftRegistry
from tests.harness.registry_bench import BASE_LAYERS, assert_pulls, build_image, build_index, push
from tests.test_images_undo_api import state

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(scope="module")
def pushed(
    openshift_registry_fs: OpenShiftRegistry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """ns1/app:latest: three pushes sharing the base layers; ns2/multi:1.0: a manifest list
    (two platforms), then a single image on top. Returns the registry and every digest
    reference pushed."""
    registry = openshift_registry_fs
    for namespace in ("ns1", "ns2"):
        registry.api.namespace(namespace)
    layout = tmp_path_factory.mktemp("nightly-undo") / "layout"
    refs = []
    for seed in (101, 102, 103):
        build_image(layout, f"app{seed}", [*BASE_LAYERS, seed])
        refs.append(f"ns1/app@{push(registry, layout, f'app{seed}', 'ns1/app:latest').digest}")
    amd64 = build_image(layout, None, [*BASE_LAYERS, 201], ("linux", "amd64"))
    arm64 = build_image(layout, None, [202], ("linux", "arm64", "v8"))
    build_index(layout, "multi", [amd64, arm64])
    refs.append(f"ns2/multi@{push(registry, layout, 'multi', 'ns2/multi:1.0').digest}")
    build_image(layout, "single", [203])
    refs.append(f"ns2/multi@{push(registry, layout, 'single', 'ns2/multi:1.0').digest}")
    return {"registry": registry, "refs": refs}


def files(root: Path) -> dict[str, bytes]:
    """Every file of the storage but regprune's own (its lock, its quarantine)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "_regprune" not in p.relative_to(root).parts
    }


def test_nightly_gc_then_undo_gives_back_the_storage_and_the_api(
    pushed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry: OpenShiftRegistry = pushed["registry"]
    api, root = registry.api, registry.storage_root
    assert root is not None
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    for ref in pushed["refs"]:
        assert_pulls(registry, ref)
    storage_before, api_before = files(root), state(api)

    run = tmp_path / "run"
    done = nightly_gc_flow(
        source=SnapshotSource(storage=str(root), metadata="kube", kubeconfig=str(kubeconfig)),
        keep_tag_revisions=1,
        keep_younger_than="0s",
        hard_prune_keep_younger_than="0s",
        confirm=True,
        out=str(run),
    )
    executed = done.prune_images.summary["executed"]
    assert executed["Image:deleted"] == 5  # 2 of app; the list and its 2 children
    assert executed["ImageStream:updated"] == 2
    pruned = files(root)
    gone = set(storage_before) - set(pruned)
    assert any("/blobs/" in key for key in gone) and any("/_manifests/" in key for key in gone)
    assert set(pruned) <= set(storage_before)
    assert len(state(api)["images"]) == len(api_before["images"]) - 5
    capsys.readouterr()

    assert main(["undo", str(run), "--kubeconfig", str(kubeconfig)]) == 0

    out = capsys.readouterr().out
    assert "Moved back" in out and "Created 5 Image(s) again and put 3 tag history item(s)" in out
    assert files(root) == storage_before
    assert state(api) == api_before
    for ref in pushed["refs"]:
        assert_pulls(registry, ref)

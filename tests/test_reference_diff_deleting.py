"""regprune's ``prune --confirm`` next to OpenShift's own ``-prune=delete`` on the same storage,
proven by pulls: what each tool leaves behind. The Images and ImageStreams are a dump regprune
reads, loaded into the real OpenShift API (``tests/harness/openshift_apiserver.py``) for the
reference.

Apart from tests/test_reference_diff.py because those tests share one module-scoped scenario
in the same API server, which these tests (each emptying it) must not interleave with.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regprune.cli.main import EXIT_OK, main
from tests.conftest import imagestream, write_dump
from tests.harness.drift import HOST
from tests.harness.openshift_apiserver import RealOpenShiftAPI
from tests.harness.reference import load_dump, require_reference, run_prune
from tests.harness.registry_bench import (
    OciLayouts,
    Registry,
    assert_pulls,
    pull_ok,
    push,
    start_upload,
)
from tests.test_reference_diff import NO_GRACE, ours_links

pytestmark = [pytest.mark.slow]


@pytest.mark.usefixtures("prefect_server")
def test_a_list_child_pulls_by_digest_after_regprune_and_not_after_the_reference(
    oci_layouts: OciLayouts, tmp_path: Path, openshift_apiserver: RealOpenShiftAPI
) -> None:
    """The same storage twice: a manifest list in its stream, its children Images of their
    own. The reference's ``-prune=delete`` removes the children's revision links: a child no
    longer pulls by digest (the list itself does not pull either, as it needs its children).
    regprune's ``prune --confirm`` keeps them: both pull."""
    require_reference()
    outcomes: dict[str, tuple[bool, bool]] = {}
    for tool in ("reference", "regprune"):
        work = tmp_path / tool
        api = openshift_apiserver
        api.reset()
        with Registry(work / "registry") as registry:
            multi = push(registry, *oci_layouts["multi"], "ns/multi:latest")
            items = [
                *multi.openshift_images(HOST),
                imagestream("ns", "multi", {"latest": [multi.digest]}, HOST),
            ]
            dump = write_dump(work / "dump.json", items)
            load_dump(api, dump)
            child = multi.children[0].digest
            assert_pulls(registry, f"ns/multi@{child}")
            if tool == "reference":
                result = run_prune(registry, api, work, mode="delete")
                assert ("ns/multi", child) in result.manifest_links
            else:
                args = ["prune", "--storage", registry.storage_url, "--metadata", str(dump)]
                args += ["--out", str(work / "run"), "--confirm", *NO_GRACE]
                assert main(args) == EXIT_OK
            registry.restart()  # no cache in the way: what storage serves
            outcomes[tool] = (
                pull_ok(registry, f"ns/multi@{child}"),
                pull_ok(registry, "ns/multi:latest"),
            )
    assert outcomes == {"reference": (False, False), "regprune": (True, True)}


@pytest.mark.usefixtures("prefect_server")
def test_the_reference_leaves_dangling_layer_links_and_uploads(
    oci_layouts: OciLayouts, tmp_path: Path, openshift_apiserver: RealOpenShiftAPI
) -> None:
    """After the reference's ``-prune=delete`` the layer links of the blobs it deleted and
    an unfinished upload are still in storage; after regprune's ``prune --confirm`` not."""
    require_reference()
    left: dict[str, list[str]] = {}
    for tool in ("reference", "regprune"):
        work = tmp_path / tool
        api = openshift_apiserver
        api.reset()
        with Registry(work / "registry") as registry:
            app = push(registry, *oci_layouts["app-v1"], "ns/app:v1")
            v2 = push(registry, *oci_layouts["app-v2"], "ns/app:v2")
            upload = start_upload(registry, "ns/app")
            items = [
                *v2.openshift_images(HOST),
                imagestream("ns", "app", {"v2": [v2.digest]}, HOST),
            ]
            dump = write_dump(work / "dump.json", items)
            load_dump(api, dump)
            if tool == "reference":
                run_prune(registry, api, work, mode="delete")
            else:
                args = ["prune", "--storage", registry.storage_url, "--metadata", str(dump)]
                args += ["--out", str(work / "run"), "--confirm", *NO_GRACE]
                assert main(args) == EXIT_OK
            stored = registry.list_storage()
            hex_ = app.layers[-1].digest.removeprefix("sha256:")
            left[tool] = sorted(
                key
                for key in stored
                if key == f"repositories/ns/app/_layers/sha256/{hex_}/link"
                or key.startswith(f"repositories/ns/app/_uploads/{upload}/")
            )
            assert_pulls(registry, "ns/app:v2")
    assert left["regprune"] == []
    assert any("/_layers/" in key for key in left["reference"])
    assert any("/_uploads/" in key for key in left["reference"])


@pytest.mark.usefixtures("prefect_server")
def test_a_list_whose_children_have_no_images_of_their_own(
    oci_layouts: OciLayouts, tmp_path: Path, openshift_apiserver: RealOpenShiftAPI
) -> None:
    """A manifest list in its stream whose children have no Image objects (an import or a
    cluster that lost them): the reference keeps only what Images name, so it deletes every
    blob of every child and the list no longer pulls; regprune reads the children's
    manifests through the list and keeps their manifests, configs and layers: after its
    ``prune --confirm`` the list still pulls. (Found by this comparison: regprune used to
    keep the child manifests but plan their configs and layers.)"""
    require_reference()
    api = openshift_apiserver
    with Registry(tmp_path / "registry") as registry:
        multi = push(registry, *oci_layouts["multi"], "ns/multi:latest")
        items = [
            multi.openshift_image(HOST),
            imagestream("ns", "multi", {"latest": [multi.digest]}, HOST),
        ]
        dump = write_dump(tmp_path / "dump.json", items)
        load_dump(api, dump)
        children = {
            blob
            for child in multi.children
            for blob in (child.digest, child.config.digest, *(x.digest for x in child.layers))
        }
        reference = run_prune(registry, api, tmp_path)
        assert reference.blobs == children
        report = tmp_path / "plan.json"
        args = ["prune", "--storage", registry.storage_url, "--metadata", str(dump)]
        args += ["--out", str(tmp_path / "run"), "--report", str(report), *NO_GRACE]
        assert main(args) == EXIT_OK
        plan = json.loads(report.read_text())
        assert {r["digest"] for r in plan["blobs"]} == set()
        assert ours_links(plan) == set()
        assert plan["layer_links"] == []
        assert main([*args, "--confirm"]) == EXIT_OK
        registry.restart()
        assert_pulls(registry, "ns/multi:latest")

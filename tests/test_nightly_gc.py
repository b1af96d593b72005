"""The nightly GC flow (flows/nightly_gc.py): prune-images, then the hard prune, in one run.

One setup for the module: a cluster (the real OpenShift API, tests/harness/openshift_apiserver.py,
as the ServiceAccount the RBAC manifests make) with a stream of three revisions
of which prune-images removes the oldest, and the registry's storage holding their blobs and
links; a dry run, then a confirmed run. The dry run changes nothing in the cluster or the
storage, and its hard prune (projected from prune-images' plan) names exactly the blobs and
links the confirmed run then deletes: the old revision's Image's manifest link, its own
blobs and their layer links, while the kept Images' and a layer all Images share stay. The
real server dates Images now, so the runs keep nothing for being younger than 0s."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from regprune.flows.nightly_gc import nightly_gc_flow
from regprune.flows.prune import UnsafePlan, prune_flow
from regprune.layout import (
    V2_ROOT,
    blob_data_path,
    layer_link_path,
    link_content,
    manifest_link_path,
)
from regprune.metadata import MetadataError
from regprune.models import is_projected
from regprune.permissions import PRUNE_IMAGES, grant_label
from regprune.results import NightlyResult
from regprune.snapshots import SnapshotSource
from regprune.tables import sql_literal
from tests.harness.openshift_apiserver import RealOpenShiftAPI

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

OLD = datetime.now(UTC) - timedelta(days=3)
REPOSITORY = "a/app"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stored(root: Path) -> set[str]:
    """The registry's files (not regprune's own: its quarantine is beside them)."""
    v2 = root / V2_ROOT
    return {p.relative_to(v2).as_posix() for p in v2.rglob("*") if p.is_file()}


def planned_files(hard_prune_dir: str) -> set[str]:
    """The storage files a hard-prune plan deletes (action 'delete'), as storage paths."""

    def rows(model: str, columns: str) -> list[tuple[Any, ...]]:
        path = sql_literal(Path(hard_prune_dir) / f"{model}.parquet")
        with duckdb.connect() as con:
            query = f"SELECT {columns} FROM read_parquet({path}) WHERE action = 'delete'"
            return con.execute(query).fetchall()

    assert not rows("plan_repositories", "repository"), "no repository goes whole here"
    return (
        {blob_data_path(d) for (d,) in rows("plan_blobs", "digest")}
        | {manifest_link_path(r, d) for r, d in rows("plan_manifest_links", "repository, digest")}
        | {layer_link_path(r, d) for r, d in rows("plan_layer_links", "repository, digest")}
    )


@dataclass
class NightlyRuns:
    api: RealOpenShiftAPI
    root: Path
    source: SnapshotSource
    images: dict[str, list[str]]
    revisions: list[str]
    shared: str
    before: set[str]
    after_dry: set[str]
    after: set[str]
    dry: NightlyResult
    done: NightlyResult
    out: Path


@pytest.fixture(scope="module")
def nightly(
    prefect_server: None,
    openshift_apiserver_session: RealOpenShiftAPI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NightlyRuns]:
    """Three Images (new, mid, gone: newest first in one tag) each with its own layer and
    config and one layer they share, all old; keep_tag_revisions=2 removes 'gone'."""
    out = tmp_path_factory.mktemp("nightly")
    root = out / "registry"
    api = openshift_apiserver_session
    api.reset()
    try:
        shared_layer = b"shared-layer"
        files = {blob_data_path(digest_of(shared_layer)): shared_layer}
        images: dict[str, list[str]] = {}
        for name in ("new", "mid", "gone"):
            manifest, layer, config = (f"{name}-{part}".encode() for part in ("m", "l", "c"))
            images[name] = [digest_of(manifest), digest_of(layer), digest_of(config)]
            files |= {blob_data_path(digest_of(b)): b for b in (manifest, layer, config)}
            files[manifest_link_path(REPOSITORY, digest_of(manifest))] = link_content(
                digest_of(manifest)
            )
            for blob in (layer, config, shared_layer):
                files[layer_link_path(REPOSITORY, digest_of(blob))] = link_content(digest_of(blob))
            api.add_image(
                digest=digest_of(manifest),
                repository=REPOSITORY,
                layers=[(digest_of(shared_layer), 12), (digest_of(layer), 6)],
                config=digest_of(config),
                created=OLD,
            )
        for key, data in files.items():
            path = root / V2_ROOT / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        revisions = [images[name][0] for name in ("new", "mid", "gone")]
        api.add_imagestream("a", "app", {"latest": revisions}, created=OLD)
        old = OLD.timestamp()
        for path in root.rglob("*"):
            os.utime(path, (old, old))
        before = stored(root)
        # the service account of deployments/rbac/ without prune-images.yaml: refused, untouched
        without = [grant_label(g, v) for g in PRUNE_IMAGES.grants for v in g.verbs]
        refused = api.rbac_kubeconfig(out / "refused.kubeconfig", without=without)
        source = SnapshotSource(storage=str(root), metadata="kube", kubeconfig=str(refused))
        with pytest.raises(MetadataError, match=r"needs list pods, .*regprune-prune-images"):
            nightly_gc_flow(
                source=source, keep_younger_than="0s", confirm=True, out=str(out / "refused")
            )
        assert stored(root) == before
        assert api.image(images["gone"][0]) is not None
        assert not (out / "refused" / "hard-prune").exists()
        kubeconfig = api.rbac_kubeconfig(
            out / "regprune.kubeconfig"
        )  # what deployments/rbac/ grants
        source = SnapshotSource(storage=str(root), metadata="kube", kubeconfig=str(kubeconfig))
        dry = nightly_gc_flow(
            source=source, keep_tag_revisions=2, keep_younger_than="0s", out=str(out / "dry")
        )
        after_dry = stored(root)
        gone_after_dry = api.image(images["gone"][0])
        assert gone_after_dry is not None, "the dry run deleted an Image"
        done = nightly_gc_flow(
            source=source,
            keep_tag_revisions=2,
            keep_younger_than="0s",
            confirm=True,
            out=str(out / "confirmed"),
        )
        yield NightlyRuns(
            api,
            root,
            source,
            images,
            revisions,
            digest_of(shared_layer),
            before,
            after_dry,
            stored(root),
            dry,
            done,
            out,
        )
    finally:
        api.reset()


def test_the_dry_run_changes_nothing(nightly: NightlyRuns) -> None:
    assert nightly.dry.prune_images.summary["images_deleted"] == 1, nightly.dry.text
    assert nightly.after_dry == nightly.before


def test_nightly_gc_prunes_images_then_the_storage_they_freed(nightly: NightlyRuns) -> None:
    api, images, after = nightly.api, nightly.images, nightly.after
    assert api.image(images["gone"][0]) is None
    [tag] = api.imagestream("a", "app")["status"]["tags"]
    assert [item["image"] for item in tag["items"]] == nightly.revisions[:2]
    for digest in images["gone"]:
        assert blob_data_path(digest) not in after
        assert layer_link_path(REPOSITORY, digest) not in after
    assert manifest_link_path(REPOSITORY, images["gone"][0]) not in after
    for name in ("new", "mid"):
        for digest in images[name]:
            assert blob_data_path(digest) in after
        assert manifest_link_path(REPOSITORY, images[name][0]) in after
    assert blob_data_path(nightly.shared) in after
    assert layer_link_path(REPOSITORY, nightly.shared) in after
    done = nightly.done
    assert Path(done.hard_prune.run_dir).is_relative_to(nightly.out / "confirmed")
    assert "projected_from" not in done.hard_prune.summary
    assert "projected" not in done.text


def test_the_dry_runs_hard_prune_names_what_the_confirmed_run_deletes(
    nightly: NightlyRuns,
) -> None:
    """Sets, not counts: the dry run's plan (projected from prune-images' plan) and the
    files the confirmed run removed from the storage."""
    deleted = nightly.before - nightly.after
    gone = nightly.images["gone"]
    assert deleted == {
        *(blob_data_path(d) for d in gone),
        manifest_link_path(REPOSITORY, gone[0]),
        *(layer_link_path(REPOSITORY, d) for d in gone[1:]),
    }
    assert planned_files(nightly.dry.hard_prune.run_dir) == deleted
    assert planned_files(nightly.done.hard_prune.run_dir) == deleted


def test_the_dry_run_says_its_hard_prune_is_projected(nightly: NightlyRuns) -> None:
    dry = nightly.dry
    projection = dry.hard_prune.summary["projected_from"]
    assert projection == {
        "images_plan": dry.prune_images.run_dir,
        "images_deleted": 1,
        "revisions_removed": 1,
    }
    assert "Hard prune (projected from prune-images' plan):" in dry.text
    assert "Projected from prune-images' plan" in dry.text
    assert "Would delete 3 blobs" in dry.text, dry.text
    html = (Path(dry.hard_prune.run_dir) / "report.html").read_text()
    assert "Projected from prune-images&#x27; plan" in html
    confirmed = Path(nightly.done.hard_prune.run_dir) / "report.html"
    assert "Projected" not in confirmed.read_text()


def test_a_projected_plan_refuses_to_delete(nightly: NightlyRuns) -> None:
    images_plan = nightly.dry.prune_images.run_dir
    with pytest.raises(UnsafePlan, match="dry run's report only"):
        prune_flow(source=nightly.source, project_images_plan=images_plan, confirm=True)
    with pytest.raises(UnsafePlan, match="dry run's report only"):
        prune_flow(source=nightly.source, resume=nightly.dry.hard_prune.run_dir)
    assert stored(nightly.root) == nightly.after


def test_a_projected_folder_planned_again_without_the_option_plans_over_the_snapshot(
    nightly: NightlyRuns, tmp_path: Path
) -> None:
    """--snapshot of a projected run folder (e.g. before --confirm) reads the snapshot's own
    tables again: the Images the dry run's cluster still had keep their blobs and links."""
    folder = tmp_path / "again"
    shutil.copytree(nightly.dry.hard_prune.run_dir, folder)
    assert is_projected(folder)
    again = prune_flow(source=nightly.source, snapshot=str(folder))
    assert not is_projected(folder)
    assert "projected_from" not in again.summary
    assert planned_files(str(folder)) == set()


@pytest.mark.parametrize("deleting", [["--confirm"], ["--resume", "run"]])
def test_the_cli_refuses_a_projection_that_would_delete(
    tmp_path: Path, deleting: list[str]
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "regprune.cli.main",
            "prune",
            "--storage",
            str(tmp_path),
            "--project-images-plan",
            str(tmp_path),
            *deleting,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "--project-images-plan is for a dry run's report only" in result.stderr


def test_nightly_gc_needs_the_cluster_and_the_storage(tmp_path: Path) -> None:
    with pytest.raises(UnsafePlan, match="metadata must be kube"):
        nightly_gc_flow(source=SnapshotSource(storage=str(tmp_path), metadata=str(tmp_path)))
    with pytest.raises(UnsafePlan, match="needs the registry's storage"):
        nightly_gc_flow(source=SnapshotSource(metadata="kube"))

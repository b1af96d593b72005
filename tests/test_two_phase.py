"""The two-phase delete on the real registry (issue 20, case 1): a push that reuses an old
orphan blob only writes a link to it, which no re-read of the blob's own file sees. Moving
the blob into the quarantine, then re-reading every link after a settle time, and moving
back what gained a reference leaves every pushed image pulling; so does the purge after.

The moments are driven by regprune/hooks.py, not by sleeping: (a) a push right after the
re-read that precedes the blob phase (the blob is moved after it: its own file is old), and
(b) a push between the quarantine and its re-check (the registry's cache still claims the
quarantined blobs: it skips their upload and writes links and a manifest that name them).
On a folder and on S3 (moto), through Debian's distribution 2.8.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regprune import hooks
from regprune.cli.main import EXIT_OK, main
from tests.conftest import imagestream, rows, write_dump
from tests.drift import HOST
from tests.registry_bench import (
    MotoServer,
    OciLayouts,
    PushedImage,
    Registry,
    S3Storage,
    _bucket_name,
    _skopeo,
    assert_pulls,
    pull_ok,
    push,
    upload_blob_without_manifest,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(params=["folder", "s3"])
def registry(
    request: pytest.FixtureRequest, tmp_path: Path, s3_env: dict[str, str]
) -> Iterator[Registry]:
    """A fresh registry per test (its cache and its orphans are the test's own)."""
    s3 = None
    if request.param == "s3":
        moto: MotoServer = request.getfixturevalue("moto")
        s3 = S3Storage(moto, moto.create_bucket(_bucket_name("two-phase")), "/registry")
    with Registry(tmp_path / "registry", s3=s3) as started:
        yield started


def kept_only_base(registry: Registry, layouts: OciLayouts, tmp_path: Path) -> Path:
    """base kept by the metadata; tool and app-v1 pushed, then left out of it: their own
    blobs are orphans (app-v1 shares base's layers)."""
    base = push(registry, *layouts["base"], "ns/base:1")
    push(registry, *layouts["tool"], "gone/tool:1")
    push(registry, *layouts["app-v1"], "ns/app:v1")
    upload_blob_without_manifest(registry, "ns/base", b"an abandoned push: no one reuses it")
    items: list[dict[str, Any]] = [*base.openshift_images(HOST)]
    items.append(imagestream("ns", "base", {"1": [base.digest]}, HOST))
    return write_dump(tmp_path / "metadata.json", items)


def prune(registry: Registry, dump: Path, out: Path, *extra: str) -> dict[str, Any]:
    report = out.with_suffix(".json")
    args = ["prune", "--storage", registry.storage_url, "--metadata", str(dump)]
    args += ["--out", str(out), "--report", str(report), "--keep-younger-than", "0s", *extra]
    assert main(args) == EXIT_OK
    return json.loads(report.read_text())


def test_pushes_that_reuse_orphan_blobs_during_the_run_still_pull(
    registry: Registry, oci_layouts: OciLayouts, tmp_path: Path
) -> None:
    dump = kept_only_base(registry, oci_layouts, tmp_path)
    pushed: dict[str, PushedImage] = {}

    def after_reread(phase: int, **_: Any) -> None:
        if phase == 2:  # (a): the blob phase's queue is made; the blobs' files are old
            pushed["fresh"] = push(registry, *oci_layouts["tool"], "ns/fresh:1")

    def between(**_: Any) -> None:  # (b): everything planned is in the quarantine
        assert not pull_ok(registry, "ns/fresh:1")  # its blobs moved: what the issue saw
        push_only(registry, *oci_layouts["app-v1"], "ns/later:1")
        pushed["later"] = pushed["fresh"]
        # the registry's cache claimed app-v1's quarantined manifest, config and layer:
        # the push "succeeded" without writing them, and the image does not pull yet
        assert not pull_ok(registry, "ns/later:1")

    run = tmp_path / "run"
    with hooks.at(hooks.RECHECKED, after_reread), hooks.at(hooks.QUARANTINED, between):
        report = prune(registry, dump, run, "--confirm")

    assert set(pushed) == {"fresh", "later"}
    for ref in ("ns/fresh:1", "ns/later:1", "ns/base:1"):
        assert_pulls(registry, ref)
    executed = report["executed"]
    assert executed["blobs"]["restored"] >= 3  # tool's manifest, config and layer at least
    tool = pushed["fresh"]
    back = {r["digest"] for r in rows(run / "actions.parquet") if r["status"] == "restored"}
    assert {tool.digest, tool.config.digest, *(layer.digest for layer in tool.layers)} <= back
    assert executed["blobs"]["done"] == 1  # the abandoned blob: no push reused it
    assert executed["repositories"]["done"] == 2  # gone/tool, ns/app: no stream names them

    purged = tmp_path / "purge"
    args = ["purge", str(run), "--metadata", str(dump), "--out", str(purged), "--confirm"]
    assert main(args) == EXIT_OK
    for ref in ("ns/fresh:1", "ns/later:1", "ns/base:1"):
        assert_pulls(registry, ref)
    assert not any(key.startswith("_regprune/quarantine/") for key in all_keys(registry))


def push_only(registry: Registry, layout: Path, tag: str, ref: str) -> None:
    """A skopeo push (``tests.registry_bench.push`` without reading the image back, which
    fails while the image is broken)."""
    args = ["copy", "--all", "--dest-tls-verify=false", "--retry-times", "0", "--format", "v2s2"]
    proc = _skopeo(*args, f"oci:{layout}:{tag}", f"docker://{registry.url}/{ref}")
    assert proc.returncode == 0, proc.stderr


def all_keys(registry: Registry) -> list[str]:
    """Every key below the storage root (the quarantine is beside docker/)."""
    if registry.storage_root is not None:
        root = registry.storage_root
        return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    assert registry.s3 is not None
    client = registry.s3.moto.client()
    prefix = registry.s3_prefix + "/"
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=registry.s3.bucket, Prefix=prefix
    )
    return [o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])]

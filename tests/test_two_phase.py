"""The two-phase delete (issue 20, items 1 and 6).

On the real registry (case 1): a push that reuses an old
orphan blob only writes a link to it, which no re-read of the blob's own file sees. Moving
the blob into the quarantine, then re-reading every link after a settle time, and moving
back what gained a reference leaves every pushed image pulling; so does the purge after.

The moments are driven by regprune/hooks.py, not by sleeping: (a) a push right after the
re-read that precedes the blob phase (the blob is moved after it: its own file is old), and
(b) a push between the quarantine and its re-check (the registry's cache still claims the
quarantined blobs: it skips their upload and writes links and a manifest that name them).
On a folder and on S3 (moto), through Debian's distribution 2.8.

On a generated registry (cases 5 to 7): a failed audit write stops the run before another
move, with one line; one action's files move in an order a kill cannot strand; a run counts
only what it moved, the same objects and bytes as its dry run, and says what was gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from regprune import audit, hooks
from regprune.audit import AuditTrail
from regprune.cli.main import EXIT_FAILURE, EXIT_OK, main
from regprune.demo.synthetic import SyntheticSpec, generate
from regprune.layout import (
    V2_ROOT,
    manifest_link_path,
    new_quarantine_id,
    tag_index_link_path,
)
from regprune.prune_execute import Batch, ExecutionSettings
from regprune.storage import LocalStorage, StorageSpec
from regprune.tasks import actions
from tests.conftest import imagestream, rows, write_dump
from tests.harness.drift import HOST
from tests.harness.registry_bench import (
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
    """A skopeo push (``tests.harness.registry_bench.push`` without reading the image back, which
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


# --- the executor's properties, on a generated registry ---------------------------------


@pytest.fixture
def generated(tmp_path: Path) -> tuple[Path, Path]:
    """A generated registry with every kind of drift (its metadata keeps what it keeps)."""
    root, dump = tmp_path / "generated" / "registry", tmp_path / "generated" / "metadata.json"
    generate(root, SyntheticSpec.demo(), dump)
    return root, dump


def prune_args(root: Path, dump: Path, out: Path, *extra: str) -> list[str]:
    return [
        "prune",
        "--storage",
        str(root),
        "--metadata",
        str(dump),
        "--out",
        str(out),
        "--report",
        str(out.with_suffix(".json")),
        "--keep-younger-than",
        "0s",
        "--upload-max-age",
        "0s",
        *extra,
    ]


def quarantined_files(root: Path) -> set[str]:
    held = root / "_regprune" / "quarantine"
    return {p.relative_to(held).as_posix().split("/", 1)[1] for p in held.rglob("*") if p.is_file()}


def test_a_failed_audit_write_stops_the_run_before_another_move(
    generated: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The disk of the run folder fills up after two audit parts: one line on stderr, exit
    1, and every file that moved was in an intent written before it moved (no audit record,
    no move); nothing moved after the failure."""
    root, dump = generated
    monkeypatch.setattr(actions, "ROUND_ACTIONS", 10)  # rounds of 10 actions: many parts
    written: list[Path] = []
    real = audit.write_part

    def full_disk(table: str, path: Path, batches: list[Any]) -> None:
        if len(written) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(table, path, batches)
        written.append(path)

    monkeypatch.setattr(audit, "write_part", full_disk)
    run = tmp_path / "run"

    assert main(prune_args(root, dump, run, "--confirm")) == EXIT_FAILURE

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "cannot write the audit trail" in err[0] and "No space left on device" in err[0]
    assert "Traceback" not in err[0]
    intended = {
        file
        for part in written
        for row in pq.read_table(part).to_pylist()
        if row["status"] == "quarantining"
        for file in row["files"]
    }
    moved = quarantined_files(root)
    assert moved and moved <= intended


def test_one_actions_files_move_the_file_the_plan_knows_it_by_last(tmp_path: Path) -> None:
    """A manifest link goes with its tags' index links: killed after any of its moves, the
    revision link (what the plan finds the action by) is still there, so the action is
    planned again and finishes; only its last move takes it."""
    manifest = "sha256:" + "a" * 64
    files = [
        manifest_link_path("ns/app", manifest),
        *(tag_index_link_path("ns/app", tag, manifest) for tag in ("v1", "v2")),
    ]
    item = {
        "phase": 1,
        "action": "delete_manifest_link",
        "repository": "ns/app",
        "digest": manifest,
        "tags": ["v1", "v2"],
    }
    for killed_after in range(len(files) + 1):
        root = tmp_path / f"kill-{killed_after}"
        for key in files:
            path = root / V2_ROOT / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(manifest.encode())
        storage = KilledAfter(StorageSpec(str(root)), killed_after)
        settings = ExecutionSettings(
            StorageSpec(str(root)), str(root / "audit"), "run", datetime.now(UTC), QID
        )
        with contextlib.suppress(Killed):
            Batch(settings, storage, AuditTrail(root / "audit", "batch")).run([item])
        left = {key for key in files if (root / V2_ROOT / key).exists()}
        assert len(left) == len(files) - killed_after
        assert files[0] in left or not left  # the revision link goes last


QID = new_quarantine_id(datetime(2026, 3, 1, tzinfo=UTC))


class Killed(BaseException):
    """The process killed part way (nothing after it runs)."""


class KilledAfter(LocalStorage):
    """A folder whose process dies after ``moves`` renames."""

    def __init__(self, spec: StorageSpec, moves: int):
        super().__init__(spec)
        self.moves = moves

    def move_many(self, keys: Any, to: Any) -> dict[str, str]:
        out = {}
        for key in keys:
            if self.moves == 0:
                raise Killed
            self.moves -= 1
            out.update(super().move_many([key], to))
        return out


def test_a_run_counts_what_it_moved_and_says_what_was_already_gone(
    generated: tuple[Path, Path], tmp_path: Path
) -> None:
    """The dry run and the run on an identical copy count the same objects and bytes ("Would
    free up" and "Freed up" are one sum). Blobs gone behind the run's back between its plan
    and its execution are neither deleted nor freed by it: it says they were gone."""
    root, dump = generated
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    dry = prune_args(root, dump, tmp_path / "dry")
    assert main(dry) == EXIT_OK
    done = prune_args(copy, dump, tmp_path / "done", "--confirm")
    assert main(done) == EXIT_OK
    would = json.loads((tmp_path / "dry.json").read_text())
    did = json.loads((tmp_path / "done.json").read_text())
    assert would["summary"]["bytes_freed"] == did["summary"]["bytes_freed"] > 0
    for category, entry in would["executed"].items():
        assert entry["would_delete"] == did["executed"][category]["done"], category

    plan = tmp_path / "plan"  # planned on the original, then its blobs go behind its back
    assert main(prune_args(root, dump, plan)) == EXIT_OK
    planned = [
        r
        for r in rows(plan / "actions.parquet")
        if r["action"] == "delete_blob" and r["status"] == "would-quarantine"
    ]
    assert planned
    for row in planned:
        (root / V2_ROOT / row["files"][0]).unlink()
    resume = ["prune", "--resume", str(plan), "--report", str(tmp_path / "resumed.json")]
    assert main([*resume, "--keep-younger-than", "0s", "--upload-max-age", "0s"]) == EXIT_OK
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    blobs = resumed["executed"]["blobs"]
    assert (blobs["done"], blobs["gone"], blobs["bytes"]) == (0, len(planned), 0)
    uploads = resumed["executed"]["uploads"]["bytes"]
    assert resumed["summary"]["bytes_freed"] == uploads

"""S3 misbehaving during a snapshot and a deletion, with nothing lost.

A fault-injecting proxy (tests/harness/s3_proxy.py) sits between regprune and moto_server:
throttling (503 SlowDown) and server errors (500) on listings and on ``DeleteObjects``, connections
reset before or after S3 did the work, ``DeleteObjects`` answers that report some keys as failed,
and objects deleted by someone else between the plan and the deletion. Every run prunes an
identical synthetic registry; whatever happened, the end state must equal the fault-free
run's, or the objects that could not be deleted must be kept and reported as failed.

botocore is set to two attempts (``AWS_MAX_ATTEMPTS``) so that faults reach regprune's own
retries quickly; regprune's backoffs and the tasks' retry delays are zero (``no_retry_waits``,
through ``prefect_server``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regprune import layout
from regprune.cli.main import EXIT_FAILURE, EXIT_OK, main
from regprune.demo.synthetic import SyntheticSpec, generate
from tests.conftest import rows
from tests.harness.registry_bench import MotoServer
from tests.harness.s3_proxy import S3FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

SPEC = SyntheticSpec(namespaces=2, streams_per_namespace=2, tags_per_stream=2, history_per_tag=2)
NOW = datetime.now(UTC)
"""One modelled time for every copy, so the copies are identical."""
ROOT = "registry"


@dataclass
class Copy:
    """One copy of the synthetic registry in a bucket of its own."""

    moto: MotoServer
    bucket: str
    dump: Path

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{ROOT}"

    def keys(self) -> set[str]:
        """Every key under docker/registry/v2, read from moto directly (not through faults)."""
        prefix = f"{ROOT}/{layout.V2_ROOT}/"
        pages = self.moto.client().get_paginator("list_objects_v2")
        return {
            item["Key"][len(prefix) :]
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        }

    def delete(self, key: str) -> None:
        self.moto.client().delete_object(Bucket=self.bucket, Key=f"{ROOT}/{layout.V2_ROOT}/{key}")


def make_copy(moto: MotoServer, folder: Path, name: str) -> Copy:
    bucket = moto.create_bucket(f"s3-faults-{name}-{uuid.uuid4().hex[:8]}")
    folder.mkdir(parents=True, exist_ok=True)
    generate(
        f"s3://{bucket}/{ROOT}",
        SPEC,
        folder / "metadata.json",
        now=NOW,
        storage_options=moto.storage_options,
    )
    return Copy(moto, bucket, folder / "metadata.json")


def prune(copy: Copy, out: Path, *extra: str) -> tuple[int, dict[str, Any] | None]:
    """``prune --confirm`` with no grace (S3 objects cannot be backdated: all are young)."""
    report = out.parent / f"{out.name}.json"
    args = ["prune", "--storage", copy.url, "--metadata", str(copy.dump), "--out", str(out)]
    args += ["--report", str(report), "--keep-younger-than", "0s", "--confirm", *extra]
    code = main(args)
    return code, json.loads(report.read_text()) if report.exists() else None


@pytest.fixture(scope="module")
def reference(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The fault-free run: what every faulty run must end with."""
    folder = tmp_path_factory.mktemp("reference")
    copy = make_copy(moto, folder, "reference")
    before = copy.keys()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
        patch.setenv("AWS_REGION", "us-east-1")
        code, report = prune(copy, folder / "run")
    assert code == EXIT_OK and report is not None
    after = copy.keys()
    assert report["summary"]["blobs"]["delete"] > 0 and after < before
    return {"before": before, "after": after, "report": report}


@pytest.fixture
def proxy(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(moto.endpoint_url) as started:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": started.url,
            "AWS_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "2",
            "AWS_RETRY_MODE": "standard",
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        yield started


@pytest.fixture
def copy(moto: MotoServer, tmp_path: Path, reference: dict[str, Any]) -> Copy:
    made = make_copy(moto, tmp_path / "copy", "copy")
    assert made.keys() == reference["before"]
    return made


def audit(out: Path) -> list[dict[str, Any]]:
    return rows(out / "actions.parquet")


def test_throttled_failing_and_reset_listings_are_retried(
    copy: Copy, proxy: S3FaultProxy, reference: dict[str, Any], tmp_path: Path
) -> None:
    faults = [
        proxy.inject("list", "slowdown", times=3),
        proxy.inject("list", "internal", times=2),
        proxy.inject("list", "reset", times=2),
    ]
    code, report = prune(copy, tmp_path / "run")
    assert code == EXIT_OK
    assert [f.fired for f in faults] == [3, 2, 2]
    assert copy.keys() == reference["after"]
    assert report is not None and report["summary"]["failed"] == 0


def test_a_listing_that_keeps_failing_fails_the_run_and_deletes_nothing(
    copy: Copy,
    proxy: S3FaultProxy,
    reference: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy.inject("list", "internal", times=None)
    code, _ = prune(copy, tmp_path / "run")
    assert code == EXIT_FAILURE
    assert "internal error" in capsys.readouterr().err.lower()
    assert proxy.count("delete_objects") == 0
    assert copy.keys() == reference["before"]


def test_throttled_failing_and_reset_deletions_are_retried(
    copy: Copy, proxy: S3FaultProxy, reference: dict[str, Any], tmp_path: Path
) -> None:
    """A reset after S3 deleted (the answer lost) is retried too: gone counts as done."""
    faults = [
        proxy.inject("delete_objects", "slowdown", times=3),
        proxy.inject("delete_objects", "internal", times=4),
        proxy.inject("delete_objects", "reset", times=2),
        proxy.inject("delete_objects", "reset_after", times=2),
    ]
    code, report = prune(copy, tmp_path / "run")
    assert code == EXIT_OK
    assert [f.fired for f in faults] == [3, 4, 2, 2]
    assert copy.keys() == reference["after"]
    assert report is not None
    assert report["executed"] == reference["report"]["executed"]
    # every action's intent written ahead, then its move: none failed, gone or skipped
    assert {r["status"] for r in audit(tmp_path / "run")} == {"quarantining", "quarantined"}


def test_keys_a_delete_objects_answer_reports_failed_are_retried(
    copy: Copy, proxy: S3FaultProxy, reference: dict[str, Any], tmp_path: Path
) -> None:
    """Two answers in a row list every key as failed (not deleted): retried, then done."""
    fault = proxy.inject("delete_objects", "fail_keys", times=2, keys="")
    code, report = prune(copy, tmp_path / "run")
    assert code == EXIT_OK
    assert fault.fired == 2 and fault.keys_failed
    assert copy.keys() == reference["after"]
    assert report is not None and report["executed"] == reference["report"]["executed"]


def test_a_key_that_keeps_failing_is_reported_failed_and_kept(
    copy: Copy, proxy: S3FaultProxy, reference: dict[str, Any], tmp_path: Path
) -> None:
    planned = [r["digest"] for r in reference["report"]["blobs"]]
    removed_whole = tuple(
        f"repositories/{r['repository']}/" for r in reference["report"]["repositories"]
    )
    gone = reference["before"] - reference["after"]

    def fails_alone(digest: str) -> bool:
        """No other action deletes a key holding this digest (a manifest link, a repository
        removed whole): the blob is then the only action its failing keys can fail (its layer
        links are skipped: the blob is still there)."""
        hex_ = digest.removeprefix("sha256:")
        return all(
            key.startswith("blobs/") or ("/_layers/" in key and not key.startswith(removed_whole))
            for key in gone
            if hex_ in key
        )

    victim = next(d for d in planned if fails_alone(d))
    hex_ = victim.removeprefix("sha256:")
    fault = proxy.inject("delete_objects", "fail_keys", times=None, keys=hex_)
    code, report = prune(copy, tmp_path / "run")
    assert code == EXIT_FAILURE  # something failed: the exit code says so
    assert fault.keys_failed
    outcome = [r for r in audit(tmp_path / "run") if r["digest"] == victim]
    blob = [r for r in outcome if r["action"] == "delete_blob"]
    # the intent written ahead of the move, then its outcome: it failed, nothing done
    assert [r["status"] for r in blob] == ["quarantining", "failed"]
    assert "InternalError" in blob[-1]["reason"]  # copied, but its source could not be deleted
    links = [r for r in outcome if r["action"] == "delete_layer_link"]
    assert all(r["status"] == "skipped" for r in links)  # its blob is still there
    assert report is not None
    blobs = report["executed"]["blobs"]
    assert blobs["failed"] == 1 and blobs["done"] == len(planned) - 1
    assert report["summary"]["failed"] == 1
    kept = copy.keys() - reference["after"]
    assert layout.blob_data_path(victim) in kept
    assert all(hex_ in key for key in kept)  # the blob and its links, nothing else
    assert reference["after"] <= copy.keys()


def test_connections_that_keep_resetting_are_reported_failed(
    copy: Copy, proxy: S3FaultProxy, reference: dict[str, Any], tmp_path: Path
) -> None:
    """Every DeleteObjects reset: each action recorded as failed (none done), nothing gone,
    and the run reports failure instead of crashing."""
    proxy.inject("delete_objects", "reset", times=None)
    code, report = prune(copy, tmp_path / "run")
    assert code == EXIT_FAILURE
    assert copy.keys() == reference["before"]
    statuses = {r["status"] for r in audit(tmp_path / "run")}
    assert "done" not in statuses and "failed" in statuses
    assert report is not None and report["executed"]["blobs"]["done"] == 0


def test_objects_deleted_by_someone_else_before_the_deletion_are_gone_not_counted(
    copy: Copy, proxy: S3FaultProxy, reference: dict[str, Any], tmp_path: Path
) -> None:
    """A blob and a revision link deleted behind the run's back between its plan and
    ``--resume``: the blob is recorded gone (not counted as this run's), and what is left of
    the manifest link (its tag index link) is moved back by the re-check, since nothing
    planned names it any more: kept, the safe side."""
    run = tmp_path / "run"
    args = ["prune", "--storage", copy.url, "--metadata", str(copy.dump), "--out", str(run)]
    assert main([*args, "--keep-younger-than", "0s"]) == EXIT_OK  # the plan only
    plan_blobs = rows(run / "plan_blobs.parquet", "SELECT digest FROM t WHERE action='delete'")
    links = rows(run / "plan_manifest_links.parquet", "SELECT * FROM t WHERE action='delete'")
    gone_blob, gone_link = plan_blobs[0]["digest"], links[0]
    copy.delete(layout.blob_data_path(gone_blob))
    copy.delete(layout.manifest_link_path(gone_link["repository"], gone_link["digest"]))
    report = tmp_path / "resume.json"
    resume = ["prune", "--resume", str(run), "--keep-younger-than", "0s", "--report", str(report)]
    assert main(resume) == EXIT_OK
    statuses: dict[tuple[str, str | None, str], set[str]] = {}
    for r in audit(run):
        statuses.setdefault((r["action"], r["repository"], r["digest"]), set()).add(r["status"])
    assert "gone" in statuses[("delete_blob", None, gone_blob)]
    assert "quarantined" not in statuses[("delete_blob", None, gone_blob)]
    key = ("delete_manifest_link", gone_link["repository"], gone_link["digest"])
    assert "restored" in statuses[key]
    restored = {f for r in audit(run) if r["status"] == "restored" for f in r["files"]}
    hex_ = gone_link["digest"].removeprefix("sha256:")
    assert restored and all("/_manifests/tags/" in f and hex_ in f for f in restored)
    assert copy.keys() == reference["after"] | restored
    executed = json.loads(report.read_text())["executed"]
    expected = reference["report"]["executed"]
    assert executed["blobs"]["done"] == expected["blobs"]["done"] - 1
    assert executed["blobs"]["gone"] == 1
    assert executed["manifest_links"]["done"] == expected["manifest_links"]["done"] - 1
    assert executed["manifest_links"]["restored"] == 1
    for kind in ("repositories", "layer_links", "uploads"):
        assert executed[kind] == expected[kind]

"""Metadata that cannot decide deletions in this storage: ``prune --confirm`` refuses, says
why, and deletes nothing, unless ``--force`` (sql/plan/plan_sanity.sql).

* a dump of another registry (none of the stored manifests is an Image: every image would go);
* metadata with no Images at all while the storage holds blobs;
* Images that could not be read in full (a layer that is not a digest): what they reference
  cannot be proven, so blobs in use could go.

Which metadata is refused is the model's decision, tested with given/expect rows in
tests/test_sql_models.py; here, through the command, each reason refuses a confirmed run with
its message and deletes nothing, and one case goes the whole way: the dry run still plans,
resuming its plan is refused too, and ``--force`` deletes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from regprune.cli.main import EXIT_FAILURE, EXIT_OK, main
from regprune.demo.synthetic import SyntheticSpec, generate
from tests.conftest import write_dump

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

SPEC = SyntheticSpec(namespaces=1, streams_per_namespace=2, tags_per_stream=2, history_per_tag=2)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    generate(tmp_path / "registry", SPEC, tmp_path / "metadata.json")
    return tmp_path / "registry"


def prune(registry: Path, dump: Path, out: Path, *extra: str) -> int:
    args = ["prune", "--storage", str(registry), "--metadata", str(dump), "--out", str(out)]
    return main([*args, *extra])


def assert_refused(
    registry: Path, dump: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], why: str
) -> None:
    """``--confirm`` is refused, saying why and how to override; nothing goes."""
    before = files(registry)
    assert prune(registry, dump, tmp_path / "refused", "--confirm") == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "refusing to delete" in err and why in err and "--force" in err
    assert files(registry) == before
    assert not (tmp_path / "refused" / "actions").exists()


def assert_refused_until_forced(
    registry: Path, dump: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], why: str
) -> None:
    """The dry run still plans; confirming, or resuming its plan, is refused; --force deletes."""
    before = files(registry)
    assert prune(registry, dump, tmp_path / "plan") == EXIT_OK  # the dry-run still plans
    assert_refused(registry, dump, tmp_path, capsys, why)
    resume = ["prune", "--resume", str(tmp_path / "plan")]
    assert main(resume) == EXIT_FAILURE  # executing the dry-run's plan is refused too
    assert files(registry) == before
    report = tmp_path / "forced.json"
    forced = prune(
        registry, dump, tmp_path / "forced", "--confirm", "--force", "--report", str(report)
    )
    assert forced == EXIT_OK
    assert json.loads(report.read_text())["executed"]["blobs"]["done"] > 0
    assert files(registry) != before


def test_a_dump_of_another_registry_is_refused(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate(tmp_path / "other", replace(SPEC, seed=9), tmp_path / "other.json")
    stored = {link.parent.name for link in registry.rglob("_manifests/revisions/sha256/*/link")}
    why = f"none of the {len(stored)} manifests stored"
    assert_refused(registry, tmp_path / "other.json", tmp_path, capsys, why)


def test_metadata_without_images_is_refused(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = write_dump(tmp_path / "empty.json", [])
    assert_refused_until_forced(registry, dump, tmp_path, capsys, "lists no Images")


def test_images_that_cannot_be_read_in_full_are_refused(
    registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = json.loads((tmp_path / "metadata.json").read_text())
    image = next(i for i in dump["items"] if i["kind"] == "Image" and i.get("dockerImageLayers"))
    image["dockerImageLayers"][0]["name"] = "not-a-digest"
    broken = write_dump(tmp_path / "broken.json", dump["items"])
    assert_refused(registry, broken, tmp_path, capsys, "1 Image(s) could not be read in full")

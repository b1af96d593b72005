"""A partial view of the cluster deletes nothing (sql/plan/view_coverage.sql, docs/safety.md).

Issue 20's case: a dump with every Image but the ImageStreams of one namespace only (what
``oc get images,imagestreams -n ns-0000 -o json`` gives). Every other namespace's repositories
then have no stream, and a hard prune deletes them whole, tagged images in use included. The
dry run says the view is partial, ``--confirm`` refuses in one line that names the whole-cluster
dump, and the storage is unchanged; the whole dump of the same cluster is not refused.
On a folder and on S3 (moto). ``purge RUN`` on such a dump purges nothing of the quarantine.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regprune import layout
from regprune.cli.main import EXIT_FAILURE, EXIT_OK, main
from regprune.demo.synthetic import SyntheticSpec, generate
from tests.harness.registry_bench import MotoServer

SPEC = SyntheticSpec.demo()
NOW = datetime(2026, 1, 1, tzinfo=UTC)
"""A fixed modelled time: every object of the folder is old next to the snapshot's time."""
WHOLE_DUMP_HINT = "oc get images,imagestreams -A -o json"


def partial_dump(whole: Path, namespace: str) -> Path:
    """Every Image (cluster-scoped), the ImageStreams of one namespace only."""
    dump = json.loads(whole.read_text())
    items = [
        item
        for item in dump["items"]
        if item["kind"] == "Image" or item["metadata"]["namespace"] == namespace
    ]
    assert len(items) < len(dump["items"])
    path = whole.with_name(f"{namespace}.json")
    path.write_text(json.dumps({**dump, "items": items}))
    return path


def assert_partial_view_refused(
    storage: str,
    whole: Path,
    listed: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *extra: str,
) -> None:
    partial = partial_dump(whole, "ns-0000")
    before = listed()
    base = ["prune", "--storage", storage, *extra]

    assert main([*base, "--metadata", str(whole), "--out", str(tmp_path / "whole")]) == EXIT_OK
    assert "partial view" not in capsys.readouterr().err

    report = tmp_path / "dry.json"
    dry = [
        *base,
        "--metadata",
        str(partial),
        "--out",
        str(tmp_path / "dry"),
        "--report",
        str(report),
    ]
    assert main(dry) == EXIT_OK
    err = capsys.readouterr().err
    assert "partial view" in err and WHOLE_DUMP_HINT in err and "ns-0001" in err
    planned = {row["repository"] for row in json.loads(report.read_text())["repositories"]}
    assert any(r.startswith("ns-0001/") for r in planned)  # what --confirm would delete

    confirm = [*base, "--metadata", str(partial), "--out", str(tmp_path / "run"), "--confirm"]
    assert main(confirm) == EXIT_FAILURE
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("regprune: error: refusing to delete: the metadata is a partial")
    assert WHOLE_DUMP_HINT in lines[0] and "Traceback" not in err
    assert listed() == before
    assert not (tmp_path / "run" / "actions").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_dump_of_one_namespace_deletes_nothing_on_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry"
    generate(registry, SPEC, tmp_path / "metadata.json", now=NOW)

    def listed() -> dict[str, bytes]:
        return {
            str(p.relative_to(registry)): p.read_bytes() for p in registry.rglob("*") if p.is_file()
        }

    assert_partial_view_refused(str(registry), tmp_path / "metadata.json", listed, tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_dump_of_one_namespace_deletes_nothing_on_s3(
    moto: MotoServer,
    s3_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = moto.create_bucket(f"partial-{uuid.uuid4().hex[:8]}")
    url = f"s3://{bucket}/registry"
    generate(url, SPEC, tmp_path / "metadata.json", now=NOW, storage_options=moto.storage_options)
    prefix = f"registry/{layout.V2_ROOT}/"

    def listed() -> set[tuple[str, str]]:
        pages = moto.client().get_paginator("list_objects_v2")
        return {
            (item["Key"], item["ETag"])
            for page in pages.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        }

    # S3 objects cannot be backdated: all are young, so no grace period
    assert_partial_view_refused(
        url, tmp_path / "metadata.json", listed, tmp_path, capsys, "--keep-younger-than", "0s"
    )


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_purge_on_a_dump_of_one_namespace_purges_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``purge RUN`` re-checks a quarantine against a fresh snapshot before deleting it for
    good: on a partial view that re-check would find no reference to what the other
    namespaces use, so ``--confirm`` refuses (its dry run warns) before the lock."""
    registry = tmp_path / "registry"
    whole = tmp_path / "metadata.json"
    generate(registry, SPEC, whole, now=NOW)
    run = tmp_path / "run"
    prune = ["prune", "--storage", str(registry), "--metadata", str(whole), "--out", str(run)]
    assert main([*prune, "--confirm"]) == EXIT_OK  # a quarantine kept 12h (the default)
    quarantine = registry / "_regprune" / "quarantine"
    held = {str(p.relative_to(registry)) for p in quarantine.rglob("*") if p.is_file()}
    assert held
    capsys.readouterr()
    partial = partial_dump(whole, "ns-0000")
    purge = ["purge", str(run), "--metadata", str(partial)]

    assert main([*purge, "--out", str(tmp_path / "dry")]) == EXIT_OK
    err = capsys.readouterr().err
    assert "partial view" in err and WHOLE_DUMP_HINT in err

    assert main([*purge, "--out", str(tmp_path / "purge"), "--confirm"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("regprune: error: refusing to purge: the metadata is a partial")
    assert {str(p.relative_to(registry)) for p in quarantine.rglob("*") if p.is_file()} == held


@pytest.mark.parametrize("text", [True, False], ids=["streamed-json", "yaml"])
def test_one_page_of_a_listing_is_not_a_dump(tmp_path: Path, text: bool) -> None:
    """A list saved from the API with ``limit`` (metadata.continue set) is one page: refused,
    however the file is read (JSON item by item, or YAML whole)."""
    from regprune.metadata import MetadataError, read_dump_objects

    page = {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageList",
        "metadata": {"continue": "eyJydiI6MX0", "remainingItemCount": 3},
        "items": [{"metadata": {"name": "sha256:" + "a" * 64}}],
    }
    dump = tmp_path / ("page.json" if text else "page.yaml")
    if text:
        dump.write_text(json.dumps(page))
    else:
        import yaml

        dump.write_text(yaml.safe_dump(page))
    with pytest.raises(MetadataError, match="one page of a longer listing"):
        list(read_dump_objects(dump))
    page["metadata"] = {"resourceVersion": ""}  # what oc get writes
    dump.write_text(json.dumps(page))
    assert len(list(read_dump_objects(dump))) == 1

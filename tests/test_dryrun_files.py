"""The dry run lists exactly the files ``--confirm`` removes: both run the same executor over
the same snapshot (only the storage's answers differ), so what the dry run's audit trail
says would go must be what goes (into the quarantine), file by file, and the dry run itself
must touch nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from regprune.cli.main import EXIT_OK, main
from regprune.demo.synthetic import SyntheticSpec, generate
from regprune.flows import execute

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def files_under(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def audit_files(run: Path, status: str) -> list[str]:
    rows = pq.read_table(run / "actions.parquet").to_pylist()
    return [key for row in rows if row["status"] == status for key in row["files"] or []]


def test_the_dry_run_lists_what_confirm_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, metadata, run = tmp_path / "registry", tmp_path / "metadata.json", tmp_path / "run"
    generate(registry, SyntheticSpec.demo(seed=3), metadata)
    v2 = registry / "docker" / "registry" / "v2"
    before = files_under(v2)
    base = ["prune", "--keep-younger-than", "24h", "--upload-max-age", "1h"]

    reads: list[str] = []
    reread = execute.reread

    def counted(run_dir: str, spec: Any, metadata: Any, folder: Path) -> dict[str, Path]:
        reads.append(folder.relative_to(run).as_posix())
        return reread(run_dir, spec, metadata, folder)

    monkeypatch.setattr(execute, "reread", counted)
    dry = ["--storage", str(registry), "--metadata", str(metadata), "--out", str(run)]
    assert main([*base, *dry]) == EXIT_OK
    # a read stands until the run changes the storage (flows/execute.py "Reads"): the dry
    # run moves nothing, so its one walk of the links judges all phases and the re-check
    assert reads == ["recheck-phase1"]
    would = audit_files(run, "would-quarantine")
    assert files_under(v2) == before, "the dry run changed the storage"
    assert would, "the demo registry has garbage: the dry run must list some files"
    assert len(would) == len(set(would)), "a file listed twice"
    kinds = {key.split("/")[0] for key in would}
    assert kinds == {"blobs", "repositories"}

    reads.clear()
    assert main([*base, "--snapshot", str(run), "--confirm"]) == EXIT_OK
    # phase 1 moved repositories and manifest links: read again before the blobs, and
    # after the settle time before the re-check
    assert reads == ["recheck-phase1", "recheck-phase2", "recheck-quarantine/read"]
    deleted = before - files_under(v2)
    assert set(would) == deleted
    assert set(audit_files(run, "quarantined")) == set(would)
    held = registry / "_regprune" / "quarantine"
    assert {key.split("/", 1)[1] for key in files_under(held)} == deleted

"""`regprune demo`: the README's first command, a real run with no cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import EXIT_OK, main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_demo_agrees_with_the_ground_truth(tmp_path: Path, capsys: Any) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "Would free up" in out
    assert "Broken imagestream tag" in out
    agreement = [line for line in out.splitlines() if "ground truth (" in line]
    assert len(agreement) == 5
    assert all("matches" in line for line in agreement), agreement
    assert (tmp_path / "demo" / "run" / "plan_blobs.parquet").exists()

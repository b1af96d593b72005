"""What keeps prune-images' memory flat as the cluster grows: the report JSON written in
batches (the same bytes as one ``json.dumps``), and DuckDB limits on the snapshot's merges."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regprune import images_report as report_module
from regprune.images_report import images_report, write_images_report
from regprune.models import DuckDBSettings
from regprune.tables import MERGE_MEMORY_LIMIT, merge_parts

SETTINGS = {"keep_tag_revisions": 3, "namespace": None, "nested": {"a": [1, {}], "b": []}}
SUMMARY = {"images_deleted": 3, "revisions_kept_by_reason": {"in-use": 1}, "empty": {}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plan's two tables and the workload references, with names that need escaping."""
    run = tmp_path_factory.mktemp("report")
    names = ["a", 'q"uote', "ünï\\code", "tab\there", "a"]
    pq.write_table(
        pa.table(
            {
                "namespace": ["ns"] * 5,
                "name": names,
                "tag": ["latest", "v1", None, "latest", "latest"],
                "position": [0, 1, 2, 3, 4],
                "image": [f"sha256:{i:064x}" for i in range(5)],
                "reason": ["beyond-keep-revisions"] * 4 + ["kept"],
                "action": ["remove", "remove", "remove", "remove", "keep"],
            }
        ),
        run / "images_tag_revisions.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "image": [f"sha256:{i:064x}" for i in range(4)],
                "reason": ["unreferenced", "unreferenced", None, "held-by-revision"],
                "action": ["delete", "delete", "delete", "keep"],
            }
        ),
        run / "images_plan.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "kind": ["Pod", "Pod"],
                "namespace": ["b", "b"],
                "name": ["p", "q"],
                "container": ["c", None],
                "field": ["image", "image"],
                "reference": ["x/App:1", "ok"],
                "problem": ["invalid reference format", None],
            }
        ),
        run / "workload_references.parquet",
    )
    return run


@pytest.mark.parametrize(
    ("mode", "problems"),
    [("dry-run", []), ("delete", []), ("refused", ["invalid-references"]), ("dry-run", ["x"])],
)
@pytest.mark.parametrize("batch_rows", [1, 2, 10_000])
def test_the_streamed_report_is_the_json_dump_of_the_whole_report(
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    problems: list[str],
    batch_rows: int,
) -> None:
    monkeypatch.setattr(report_module, "REPORT_BATCH_ROWS", batch_rows)
    path = tmp_path / "report.json"
    write_images_report(path, run_dir, mode, SETTINGS, SUMMARY, problems)
    whole = images_report(run_dir, mode, SETTINGS, SUMMARY, problems)
    assert path.read_text() == json.dumps(whole, indent=2, default=str) + "\n"
    assert [f.name for f in tmp_path.iterdir()] == ["report.json"]  # no part left behind
    written = json.loads(path.read_text())
    assert len(written["tag_revisions"]) == (0 if mode == "refused" else 4)
    assert len(written["images"]) == (0 if mode == "refused" else 3)
    assert ("invalid_references" in written) == bool(problems)


def test_merges_are_capped_unless_the_run_sets_its_own_limits(tmp_path: Path) -> None:
    def memory_limit(settings: DuckDBSettings, default: str | None) -> str:
        with duckdb.connect() as con:
            settings.apply(con, default)
            return con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]

    assert memory_limit(DuckDBSettings(), MERGE_MEMORY_LIMIT) == memory_limit(
        DuckDBSettings(memory_limit=MERGE_MEMORY_LIMIT), None
    )
    assert memory_limit(DuckDBSettings(memory_limit="1GB"), MERGE_MEMORY_LIMIT) == memory_limit(
        DuckDBSettings(memory_limit="1GB"), None
    )
    assert memory_limit(DuckDBSettings(), MERGE_MEMORY_LIMIT) != memory_limit(
        DuckDBSettings(memory_limit="1GB"), None
    )
    # a merge still sorts and de-duplicates within the run's own settings
    part = tmp_path / "part.parquet"
    images = ["sha256:" + "b" * 64, "sha256:" + "a" * 64, "sha256:" + "b" * 64]
    pq.write_table(pa.table({"image": images, "size": [2, 1, 2]}), part)
    dest = tmp_path / "image_sizes.parquet"
    settings = DuckDBSettings(memory_limit="64MB", threads=1, temp_directory=str(tmp_path / "t"))
    assert merge_parts("image_sizes", [part], dest, True, settings) == 2
    assert pq.read_table(dest)["image"].to_pylist() == sorted(set(images))

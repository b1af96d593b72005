"""The run report at any size: lists on the page are bounded and say how long they are, and
the per-namespace bytes (aggregated in DuckDB, shared blobs split) equal a plain reading.

Snapshot tables are written directly (no storage, no Prefect): the plan is the product's SQL
(``plan_hard_prune``), the report the product's reader and renderer.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from regprune.html_report import read_report_data, render_report
from regprune.tables import SCHEMAS, SNAPSHOT_FILE
from regprune.tasks.analysis import plan_hard_prune

STARTED = datetime(2026, 11, 1, tzinfo=UTC)
OLD = STARTED - timedelta(days=30)
REPOSITORIES = {  # repository -> namespace (None: a name no ImageStream can own)
    "ns1/app": "ns1",
    "ns2/app": "ns2",
    "ns3/app": "ns3",
    "lonely": None,
}


def digest(i: int) -> str:
    return f"sha256:{i:064x}"


def write_snapshot(folder: Path, tables: dict[str, list[dict]]) -> Path:
    folder.mkdir(parents=True)
    for table, schema in SCHEMAS.items():
        if table == "actions":
            continue
        rows = tables.get(table, [])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"{table}.parquet")
    summary = {
        "storage": "synthetic://none",
        "metadata": "synthetic",
        "metadata_started_at": STARTED.isoformat(),
        "storage_started_at": STARTED.isoformat(),
        "version": "test",
    }
    (folder / SNAPSHOT_FILE).write_text(json.dumps(summary))
    return folder


def registry(blobs: int) -> dict[str, list[dict]]:
    """``blobs`` old blobs no Image references (all of them garbage), each linked from some
    repositories: one, two namespaces, a repository without namespace, or none at all."""
    owners = [
        ["ns1/app"],
        ["ns2/app"],
        ["ns1/app", "ns2/app"],
        ["lonely"],
        ["ns3/app", "lonely"],
        [],
    ]
    rows: dict[str, list[dict]] = defaultdict(list)
    for repository, namespace in REPOSITORIES.items():
        name = repository.split("/")[-1]
        rows["repositories"].append(
            {
                "repository": repository,
                "namespace": namespace,
                "name": name,
                "valid_name": namespace is not None,
            }
        )
        if namespace:
            rows["imagestreams"].append(
                {"namespace": namespace, "name": name, "uid": namespace, "created": OLD}
            )
    for i in range(blobs):
        rows["blobs"].append({"digest": digest(i), "size": 1000 + 37 * i, "modified": OLD})
        for repository in owners[i % len(owners)]:
            link = {"repository": repository, "digest": digest(i), "modified": OLD}
            rows["layer_links"].append(link)
    return rows


def plain_stored_bytes(tables: dict[str, list[dict]]) -> dict[str, int]:
    """Each blob's bytes split evenly between the namespaces linking it (None: no namespace
    or not linked), added up per namespace and rounded."""
    namespace_of = {r["repository"]: r["namespace"] for r in tables["repositories"]}
    linking: dict[str, set[str | None]] = defaultdict(set)
    for link in tables["layer_links"]:
        linking[link["digest"]].add(namespace_of[link["repository"]])
    shares: dict[str | None, float] = defaultdict(float)
    for blob in tables["blobs"]:
        owners = linking.get(blob["digest"]) or {None}
        for namespace in owners:
            shares[namespace] += blob["size"] / len(owners)
    return {namespace or "(no namespace)": round(size) for namespace, size in shares.items()}


class Page(HTMLParser):
    """The page's table rows and the text of its <summary> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.summaries: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th", "summary"):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._text is not None:
            self.rows[-1].append("".join(self._text).strip())
        elif tag == "summary" and self._text is not None:
            self.summaries.append("".join(self._text).strip())
        if tag in ("td", "th", "summary"):
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def plan(tmp_path: Path, blobs: int) -> tuple[Path, dict[str, list[dict]]]:
    tables = registry(blobs)
    snapshot = write_snapshot(tmp_path / "snapshot", tables)
    counts = plan_hard_prune.fn(str(snapshot), [], keep_younger_than="0s")
    assert counts["plan_blobs"] == blobs
    return snapshot, tables


def test_a_plan_longer_than_the_bound_shows_the_largest_and_the_total(tmp_path: Path) -> None:
    snapshot, tables = plan(tmp_path, blobs=40)
    data = read_report_data(str(snapshot), "prune", None, list_rows=5)
    blobs = next(b for b in data.deletions if b.source.table == "plan_blobs")
    largest = sorted(tables["blobs"], key=lambda b: -b["size"])[:5]
    assert blobs.total == 40 and blobs.truncated
    assert blobs.rows == [{"digest": b["digest"], "size": b["size"]} for b in largest]

    page = Page()
    page.feed(render_report(data))
    assert (
        "Blobs to delete: showing 5 of 40 (largest first); the full list is plan_blobs.parquet"
        in page.summaries
    )
    shown = [row for row in page.rows if row and row[0] in {b["digest"] for b in largest}]
    assert [row[1] for row in shown] == [f"{b['size']:,}" for b in largest]


def test_a_list_within_the_bound_is_shown_whole(tmp_path: Path) -> None:
    snapshot, _ = plan(tmp_path, blobs=4)
    data = read_report_data(str(snapshot), "prune", None, list_rows=5)
    blobs = next(b for b in data.deletions if b.source.table == "plan_blobs")
    assert (len(blobs.rows), blobs.total, blobs.truncated) == (4, 4, False)
    page = Page()
    page.feed(render_report(data))
    assert "Blobs to delete: all 4 (largest first), from plan_blobs.parquet" in page.summaries


def test_namespaces_past_the_bound_are_added_up_in_one_row(tmp_path: Path) -> None:
    snapshot, tables = plan(tmp_path, blobs=60)
    stored = plain_stored_bytes(tables)
    data = read_report_data(str(snapshot), "prune", None, list_rows=2)
    assert data.namespaces.count == len(stored) == 4
    assert data.namespaces.stored == sum(b["size"] for b in tables["blobs"])
    biggest = sorted(stored.items(), key=lambda item: -item[1])[:2]
    assert [(r.namespace, r.stored) for r in data.namespaces.rows] == biggest

    page = Page()
    page.feed(render_report(data))
    table = [row for row in page.rows if row and (row[0] in stored or row[0].endswith("more)"))]
    assert [row[0] for row in table] == [biggest[0][0], biggest[1][0], "(2 more)"]
    rest = sum(stored.values()) - biggest[0][1] - biggest[1][1]
    assert abs(int(table[-1][2].replace(",", "")) - rest) <= 2


def test_stored_bytes_per_namespace_equal_a_plain_reading(tmp_path: Path) -> None:
    """Shared blobs split, blobs of repositories without namespace and unlinked blobs under
    '(no namespace)', and every plan deletion counted under its namespaces."""
    snapshot, tables = plan(tmp_path, blobs=30)
    data = read_report_data(str(snapshot), "prune", None)
    shown = {row.namespace: row for row in data.namespaces.rows}
    stored = plain_stored_bytes(tables)
    assert set(shown) == set(stored)
    for namespace, size in stored.items():
        assert abs(shown[namespace].stored - size) <= 1, namespace
        # everything is garbage here: reclaimable equals stored
        assert abs((shown[namespace].reclaimable or 0) - size) <= 1, namespace

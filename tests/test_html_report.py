"""``report.html``: written by prune and check, self-contained, rendered by headless Chromium
(Debian's ``chromium``) with the numbers this test computes from the run folders and the
generator's ground truth."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq
import pytest

from regprune.cli.main import EXIT_FINDINGS, EXIT_OK, main
from regprune.demo.synthetic import PruneTruth, SyntheticSpec, generate
from regprune.html_report import COLORS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
CHECK_TABLES = {
    "broken imagestream tags": "check_broken_imagestream_tags",
    "broken images": "check_broken_images",
    "lost-found candidates": "check_lost_found",
    "invalid manifests": "check_invalid_manifests",
}


@dataclass
class Runs:
    first: Path
    second: Path
    check: Path
    warehouse: Path
    truths: dict[Path, PruneTruth]
    started: datetime


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Runs:
    """Two prune runs of a growing registry into one warehouse, then a check of the second
    registry into a folder of its own."""
    base = tmp_path_factory.mktemp("report")
    warehouse = base / "warehouse"
    started = datetime.now(UTC)
    truths = {}
    specs = {"first": SyntheticSpec.demo(seed=3), "second": SyntheticSpec(namespaces=4, seed=4)}
    for name, spec in specs.items():
        truth = generate(base / f"{name}-storage", spec, base / f"{name}.json")
        truths[base / name] = truth.prune_grace  # the default 24h grace keeps young blobs
        source = [
            "--storage",
            str(base / f"{name}-storage"),
            "--metadata",
            str(base / f"{name}.json"),
        ]
        prune = ["prune", *source, "--out", str(base / name)]
        assert main([*prune, "--warehouse", str(warehouse)]) == EXIT_OK
    source = ["--storage", str(base / "second-storage"), "--metadata", str(base / "second.json")]
    check = ["check", *source, "--out", str(base / "check"), "--warehouse", str(warehouse)]
    assert main(check) in (EXIT_OK, EXIT_FINDINGS)
    return Runs(base / "first", base / "second", base / "check", warehouse, truths, started)


# --- reading what Chromium shows -------------------------------------------------------------


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("headless Chromium is missing: apt-get install chromium (as .ci/install does)")
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={user_data}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


class Tables(HTMLParser):
    """The text of every table cell, table by table, and the page's headings."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h1", "h2"):
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag in ("h1", "h2") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data: str) -> None:
        for target in (self._cell, self._heading):
            if target is not None:
                target.append(data)

    def table(self, first_header: str) -> list[dict[str, str]]:
        for rows in self.tables:
            if rows and rows[0][0] == first_header:
                return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
        raise AssertionError(f"no table starting with {first_header!r}: {self.tables}")


def rendered_dom(report: Path, tmp_path: Path) -> Tables:
    dom = chromium("--dump-dom", report.as_uri(), user_data=tmp_path / "dom-profile").stdout
    parsed = Tables()
    parsed.feed(dom)
    return parsed


def png_pixels(path: Path) -> tuple[int, int, Counter[tuple[int, ...]]]:
    """Width, height and a count of every colour of an 8-bit RGB/RGBA PNG (what Chromium
    writes), decoded with zlib alone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, compressed = 8, []
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and color in (2, 6) and interlace == 0
        elif kind == b"IDAT":
            compressed.append(chunk)
        position += 12 + length
    raw = zlib.decompress(b"".join(compressed))
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    previous = bytearray(stride)
    colors: Counter[tuple[int, ...]] = Counter()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                corner = previous[i - bpp] if i >= bpp else 0
                guess = left + up - corner
                pa, pb, pc = abs(guess - left), abs(guess - up), abs(guess - corner)
                near = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + near) & 255
        colors.update(tuple(line[i : i + 3]) for i in range(0, stride, bpp))
        previous = line
    return width, height, colors


def rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


# --- numbers computed here -------------------------------------------------------------------


def table(folder: Path, name: str) -> list[dict[str, Any]]:
    return pq.read_table(folder / f"{name}.parquet").to_pylist()


def split_by_namespace(folder: Path, digests: set[str], uploads: set[tuple[str, str]]) -> dict:
    """Bytes of the given blobs, each split evenly between the namespaces linking it, plus
    the given uploads' bytes under their repository's namespace."""
    namespaces = {r["repository"]: r["namespace"] for r in table(folder, "repositories")}
    sizes = {b["digest"]: b["size"] for b in table(folder, "blobs")}
    linked: dict[str, set[str | None]] = defaultdict(set)
    for link in table(folder, "layer_links") + table(folder, "manifest_links"):
        if link["repository"] in namespaces:
            linked[link["digest"]].add(namespaces[link["repository"]])
    shares: dict[str | None, float] = defaultdict(float)
    for digest in digests:
        owners = linked.get(digest) or {None}
        for namespace in owners:
            shares[namespace] += sizes[digest] / len(owners)
    for upload in table(folder, "uploads"):
        if (upload["repository"], upload["upload_id"]) in uploads:
            shares[namespaces[upload["repository"]]] += upload["size"]
    return {ns or "(no namespace)": round(size) for ns, size in shares.items()}


def number(text: str) -> int:
    return int(text.replace(",", ""))


def run_ids(warehouse: Path, name: str) -> set[str]:
    """The runs that published table ``name``, from a plain listing of the warehouse."""
    fs = fsspec.filesystem("file")
    return {p.split("/")[-2].removeprefix("run=") for p in fs.glob(f"{warehouse}/{name}/*/*/*")}


# --- the tests -------------------------------------------------------------------------------


def test_prune_report_renders_with_the_expected_numbers(runs: Runs, tmp_path: Path) -> None:
    report = runs.second / "report.html"
    dom = rendered_dom(report, tmp_path)
    truth = runs.truths[runs.second]
    assert dom.headings[:2] == ["regprune prune report", "Storage by namespace"]
    assert "Reclaimable vs kept" in dom.headings and "Trend over past snapshots" in dom.headings

    all_blobs = {b["digest"] for b in table(runs.second, "blobs")}
    all_uploads = {(u["repository"], u["upload_id"]) for u in table(runs.second, "uploads")}
    stored = split_by_namespace(runs.second, all_blobs, all_uploads)
    stale = {(u.repository, u.upload_id) for u in truth.stale_uploads}
    reclaimable = split_by_namespace(runs.second, set(truth.orphan_blobs), stale)
    shown = {row["namespace"]: row for row in dom.table("namespace")}
    assert set(shown) == set(stored)
    for namespace, row in shown.items():
        assert abs(number(row["stored bytes"]) - stored[namespace]) <= 1, row
        assert abs(number(row["reclaimable bytes"]) - reclaimable.get(namespace, 0)) <= 1, row

    plan = {(row["category"], row["action"]): row for row in dom.table("category")}
    assert number(plan[("blobs", "delete")]["count"]) == len(truth.orphan_blobs)
    assert number(plan[("blobs", "delete")]["bytes"]) == truth.orphan_bytes

    trend = dom.table("snapshot started")
    assert {row["run"] for row in trend} == run_ids(runs.warehouse, "plan_summary")
    by_bytes = {number(row["reclaimable blob bytes"]): row for row in trend}
    for folder in (runs.first, runs.second):
        row = by_bytes[runs.truths[folder].orphan_bytes]
        assert number(row["stored blob bytes"]) == sum(b["size"] for b in table(folder, "blobs"))


def test_report_is_self_contained(runs: Runs) -> None:
    for folder in (runs.first, runs.second, runs.check):
        page = (folder / "report.html").read_text()
        for needle in ("<script", "<link", "src=", "href=", "url(", "@import", "<img"):
            assert needle not in page, (folder, needle)
        assert page.count("<svg") >= 2


def test_report_screenshot_is_not_blank(runs: Runs, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    report = (runs.second / "report.html").as_uri()
    chromium(
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        report,
        user_data=tmp_path / "shot-profile",
    )
    width, height, colors = png_pixels(shot)
    assert (width, height) == (1200, 1600)
    white = colors[(255, 255, 255)]
    assert white < 0.95 * width * height  # something is drawn
    for series in ("stored", "reclaimable", "kept", "young"):
        assert colors[rgb(COLORS[series])] > 500, series  # each chart colour fills an area
    assert len(colors) > 50  # text is rendered (anti-aliased glyphs)


def test_check_report_shows_findings_and_the_prune_trend(runs: Runs, tmp_path: Path) -> None:
    dom = rendered_dom(runs.check / "report.html", tmp_path)
    assert dom.headings[0] == "regprune check report"
    assert "Reclaimable vs kept" not in dom.headings  # a check plans nothing
    assert "reclaimable bytes" not in dom.table("namespace")[0]
    findings = {row["finding"]: number(row["count"]) for row in dom.table("finding")}
    assert findings == {label: len(table(runs.check, name)) for label, name in CHECK_TABLES.items()}
    assert sum(findings.values()) > 0
    prune_runs = {row["run"] for row in dom.table("snapshot started")}
    assert len(prune_runs) == 2
    assert prune_runs == run_ids(runs.warehouse, "plan_summary")
    assert prune_runs < run_ids(runs.warehouse, "runs")  # the check's own run has no plan


def test_report_is_linked_as_a_prefect_artifact(runs: Runs) -> None:
    from tests.harness.prefect_runs import artifacts_of, flow_runs_started_since

    flow_runs = flow_runs_started_since(runs.started)
    for command, folder in (("prune", runs.second), ("check", runs.check)):
        artifacts = artifacts_of(flow_runs, [f"regprune-{command}-report"])
        links = {artifact.data for artifact in artifacts}
        expected = (folder / "report.html").resolve().as_uri()
        assert any(expected in str(link) for link in links), links

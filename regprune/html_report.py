"""The run report a person opens: ``report.html`` in the run folder, one self-contained file.

Inline CSS and SVG drawn here, no script and no link to fetch: it opens from a laptop, a
mail attachment or an air-gapped cluster alike. It reads the run's tables (and, given a
warehouse, the prune runs before it) and decides nothing. The task that writes it and links
it from the Prefect run is in tasks/html_report.py.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from regprune.categories import CHECK_FINDINGS, PLAN_CATEGORIES
from regprune.models import (
    PROJECTION_FILE,
    DuckDBSettings,
    SnapshotDatabase,
    is_projected,
    query_text,
)
from regprune.reports import projection_text
from regprune.snapshots import read_snapshot_summary
from regprune.units import format_bytes
from regprune.warehouse import connect_warehouse

REPORT_FILE = "report.html"
TOP_NAMESPACES = 15
LIST_ROWS = 1_000
"""The most rows a list on the page shows: the page and the report's memory stay small however
large the registry; a longer list says how long it is and which Parquet file holds all of it."""
FINDINGS = {finding.model: finding.label for finding in CHECK_FINDINGS}
COLORS = {"stored": "#8fb3d9", "reclaimable": "#d64541", "young": "#f0a830", "kept": "#3d6fa8"}


@dataclass(frozen=True)
class NamespaceBytes:
    namespace: str
    stored: int
    reclaimable: int | None


@dataclass(frozen=True)
class Namespaces:
    """The namespaces with the most stored bytes (at most ``LIST_ROWS``) and the totals of
    all of them."""

    rows: list[NamespaceBytes]
    count: int
    stored: int
    reclaimable: int | None

    def rest(self, shown: int) -> NamespaceBytes | None:
        """The namespaces after the first ``shown`` rows, added up into one row."""
        if self.count <= shown:
            return None
        first = self.rows[:shown]
        reclaimable = None
        if self.reclaimable is not None:
            reclaimable = self.reclaimable - sum(r.reclaimable or 0 for r in first)
        return NamespaceBytes(
            f"({self.count - shown:,} more)",
            self.stored - sum(r.stored for r in first),
            reclaimable,
        )


@dataclass(frozen=True)
class PlanList:
    """What one ``plan_*`` table deletes, as a list on the page: which columns, in what order."""

    title: str
    table: str
    columns: tuple[str, ...]
    order: str
    order_words: str


PLAN_LISTS = tuple(
    PlanList(c.label, c.model, c.columns, c.order, c.order_words)
    # the page shows the bytes first, then the summary's order (sorted() keeps it)
    for c in sorted(PLAN_CATEGORIES, key=lambda c: c.name != "blobs")
)


@dataclass(frozen=True)
class BoundedList:
    """The first rows of a list that may be millions long, and its length."""

    source: PlanList
    rows: list[dict[str, Any]]
    total: int

    @property
    def truncated(self) -> bool:
        return self.total > len(self.rows)


@dataclass(frozen=True)
class BlobBytes:
    """The snapshot's blob bytes: what Images keep, what the grace period keeps, the rest."""

    referenced: int
    young: int
    reclaimable: int

    @property
    def total(self) -> int:
        return self.referenced + self.young + self.reclaimable


@dataclass(frozen=True)
class TrendPoint:
    started_at: datetime
    run: str
    stored: int
    reclaimable: int


@dataclass(frozen=True)
class ReportData:
    command: str
    run_dir: str
    snapshot: dict[str, Any]
    namespaces: Namespaces
    blob_bytes: BlobBytes | None
    plan: list[dict[str, Any]]
    deletions: list[BoundedList]
    findings: dict[str, int] | None
    trend: list[TrendPoint] | None
    """None without a warehouse; empty when the warehouse has no prune run."""
    projection: dict[str, Any] | None = None
    """A plan over the cluster as prune-images' plan would leave it (PROJECTION_FILE)."""


# --- reading ---------------------------------------------------------------------------------


def _result_tables(run: Path) -> dict[str, Path]:
    """The plan and check results this run folder holds (a check run has no plan)."""
    names = ("plan_namespaces", "plan_summary", *(p.table for p in PLAN_LISTS), *FINDINGS)
    return {name: run / f"{name}.parquet" for name in names if (run / f"{name}.parquet").exists()}


def read_namespaces(db: SnapshotDatabase, has_plan: bool, list_rows: int) -> Namespaces:
    """Stored (and reclaimable) bytes per namespace, aggregated in DuckDB: only the first
    ``list_rows`` namespaces and the totals reach Python."""
    reclaimable = "planned.size" if has_plan else "NULL::BIGINT"
    join = (
        "LEFT JOIN plan_namespaces AS planned "
        "ON planned.namespace IS NOT DISTINCT FROM stored.namespace"
        if has_plan
        else ""
    )
    db.con.execute(
        "CREATE OR REPLACE TEMP TABLE report_namespaces AS "
        f"SELECT stored.namespace, stored.size AS stored, {reclaimable} AS reclaimable "
        f"FROM storage_namespaces AS stored {join}"
    )
    rows = db.records(
        "SELECT * FROM report_namespaces ORDER BY stored DESC, namespace NULLS LAST LIMIT ?",
        [list_rows],
    )
    totals = db.records(
        "SELECT count(*) AS count, coalesce(sum(stored), 0)::BIGINT AS stored, "
        "coalesce(sum(reclaimable), 0)::BIGINT AS reclaimable FROM report_namespaces"
    )[0]
    return Namespaces(
        [
            NamespaceBytes(
                row["namespace"] or "(no namespace)",
                row["stored"],
                (row["reclaimable"] or 0) if has_plan else None,
            )
            for row in rows
        ],
        totals["count"],
        totals["stored"],
        totals["reclaimable"] if has_plan else None,
    )


def read_deletions(db: SnapshotDatabase, list_rows: int) -> list[BoundedList]:
    """The first ``list_rows`` objects of each category the plan deletes, and how many."""
    lists = []
    for spec in PLAN_LISTS:
        columns = ", ".join(spec.columns)
        source = f"\"{spec.table}\" WHERE action = 'delete'"
        rows = db.records(
            f"SELECT {columns} FROM {source} ORDER BY {spec.order} LIMIT ?", [list_rows]
        )
        total = db.records(f"SELECT count(*) AS n FROM {source}")[0]["n"]
        lists.append(BoundedList(spec, rows, total))
    return lists


def read_report_data(
    run_dir: str,
    command: str,
    warehouse: str | None,
    settings: DuckDBSettings | None = None,
    list_rows: int = LIST_ROWS,
) -> ReportData:
    run = Path(run_dir)
    snapshot = read_snapshot_summary(run)
    results = _result_tables(run)
    has_plan = {"plan_namespaces", "plan_summary", *(p.table for p in PLAN_LISTS)} <= set(results)
    plan: list[dict[str, Any]] = []
    deletions: list[BoundedList] = []
    blob_bytes = findings = None
    with SnapshotDatabase(run, {}, settings, extra_tables=results) as db:
        db.define("storage_namespaces")
        namespaces = read_namespaces(db, has_plan, list_rows)
        if has_plan:
            plan = db.records(
                "SELECT category, action, count, size FROM plan_summary ORDER BY category, action"
            )
            total = db.records("SELECT coalesce(sum(size), 0)::BIGINT AS size FROM blobs")[0]
            blobs = {row["action"]: row["size"] for row in plan if row["category"] == "blobs"}
            delete, young = blobs.get("delete", 0), blobs.get("keep", 0)
            blob_bytes = BlobBytes(total["size"] - delete - young, young, delete)
            deletions = read_deletions(db, list_rows)
        if set(FINDINGS) <= set(results):
            findings = {
                table: db.records(f'SELECT count(*) AS n FROM "{table}"')[0]["n"]
                for table in FINDINGS
            }
    trend = read_trend(warehouse) if warehouse else None
    projection = json.loads((run / PROJECTION_FILE).read_text()) if is_projected(run) else None
    return ReportData(
        command,
        run_dir,
        snapshot,
        namespaces,
        blob_bytes,
        plan,
        deletions,
        findings,
        trend,
        projection,
    )


def read_trend(warehouse: str) -> list[TrendPoint]:
    """Stored and reclaimable bytes of every prune run in the warehouse, oldest first."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        views = connect_warehouse(warehouse, con)
        if not {"plan_summary", "blobs", "runs"} <= set(views):
            return []
        rows = con.execute(query_text("warehouse_trend")).fetchall()
    return [
        TrendPoint(started, run, stored, reclaimable)
        for _, run, started, stored, reclaimable in rows
    ]


# --- drawing ---------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0.0%"


def namespace_chart(namespaces: Namespaces) -> str:
    """Horizontal bars: stored bytes per namespace, the reclaimable part drawn over them."""
    shown = namespaces.rows[:TOP_NAMESPACES]
    rest = namespaces.rest(TOP_NAMESPACES)
    if rest:
        shown.append(rest)
    label_w, bar_w, row_h, top = 190, 560, 26, 8
    width, height = 1000, top + row_h * len(shown) + 8
    biggest = max((r.stored for r in shown), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Storage by namespace">'
    ]
    for i, row in enumerate(shown):
        y = top + i * row_h
        stored_w = max(1.0, bar_w * row.stored / biggest) if row.stored else 0.0
        value = format_bytes(row.stored)
        tooltip = f"{row.namespace}: {value} stored"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end" class="label">'
            f"{_e(row.namespace)}</text>"
            f'<rect x="{label_w}" y="{y + 4}" width="{stored_w:.1f}" height="18" '
            f'fill="{COLORS["stored"]}"><title>{_e(tooltip)}</title></rect>'
        )
        if row.reclaimable:
            part_w = stored_w * min(row.reclaimable, row.stored) / row.stored if row.stored else 0
            value += f", {format_bytes(row.reclaimable)} reclaimable"
            parts.append(
                f'<rect x="{label_w}" y="{y + 4}" width="{part_w:.1f}" height="18" '
                f'fill="{COLORS["reclaimable"]}"><title>{_e(row.namespace)}: '
                f"{_e(format_bytes(row.reclaimable))} reclaimable</title></rect>"
            )
        parts.append(
            f'<text x="{label_w + stored_w + 8:.1f}" y="{y + 17}" class="value">{_e(value)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def blob_bytes_chart(blob_bytes: BlobBytes) -> str:
    """One stacked bar: kept by Images, kept as young, reclaimable."""
    width, bar_w, x0 = 1000, 960, 20
    segments = [
        ("kept: referenced by Images", blob_bytes.referenced, COLORS["kept"]),
        ("kept: younger than the grace period", blob_bytes.young, COLORS["young"]),
        ("reclaimable", blob_bytes.reclaimable, COLORS["reclaimable"]),
    ]
    total = blob_bytes.total or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="130" '
        f'viewBox="0 0 {width} 130" role="img" aria-label="Reclaimable vs kept">'
    ]
    x = float(x0)
    for i, (name, size, color) in enumerate(segments):
        w = bar_w * size / total
        text = f"{name}: {format_bytes(size)} ({_percent(size, blob_bytes.total)})"
        parts.append(
            f'<rect x="{x:.1f}" y="10" width="{w:.1f}" height="34" fill="{color}">'
            f"<title>{_e(text)}</title></rect>"
        )
        ly = 58 + i * 22
        parts.append(
            f'<rect x="{x0}" y="{ly}" width="14" height="14" fill="{color}"/>'
            f'<text x="{x0 + 20}" y="{ly + 12}" class="value">{_e(text)}</text>'
        )
        x += w
    parts.append("</svg>")
    return "".join(parts)


def trend_chart(points: list[TrendPoint]) -> str:
    """Stored and reclaimable bytes per prune run, one point per run, oldest on the left."""
    width, height = 1000, 300
    left, right, top, bottom = 90, 20, 16, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    highest = max((max(p.stored, p.reclaimable) for p in points), default=0) or 1

    def x(i: int) -> float:
        return left + (plot_w * i / (len(points) - 1) if len(points) > 1 else plot_w / 2)

    def y(value: int) -> float:
        return top + plot_h - plot_h * value / highest

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Trend over past snapshots">'
    ]
    for step in range(5):
        value = round(highest * step / 4)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'class="grid"/><text x="{left - 8}" y="{y(value) + 4:.1f}" text-anchor="end" '
            f'class="axis">{_e(format_bytes(value))}</text>'
        )
    ticks = sorted({round(i * (len(points) - 1) / 5) for i in range(6)}) if points else []
    for i in ticks:
        label = points[i].started_at.strftime("%Y-%m-%d %H:%M")
        anchor = "start" if i == 0 else "end" if i == len(points) - 1 else "middle"
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - bottom + 20}" text-anchor="{anchor}" '
            f'class="axis">{_e(label)}</text>'
        )
    for series in ("stored", "reclaimable"):
        color = COLORS[series]
        coords = [(x(i), y(getattr(p, series))) for i, p in enumerate(points)]
        if len(coords) > 1:
            path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2.5"/>'
            )
        for (cx, cy), point in zip(coords, points, strict=True):
            tip = f"{point.run}: {format_bytes(getattr(point, series))} {series}"
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{color}">'
                f"<title>{_e(tip)}</title></circle>"
            )
    for i, series in enumerate(("stored", "reclaimable")):
        lx = left + i * 200
        parts.append(
            f'<rect x="{lx}" y="{height - 20}" width="14" height="14" fill="{COLORS[series]}"/>'
            f'<text x="{lx + 20}" y="{height - 8}" class="value">{series} blob bytes</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int]) -> str:
    head = "".join(
        f'<th class="{"num" if i in numeric else ""}">{_e(h)}</th>' for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if i in numeric else ""}">{_e(cell)}</td>'
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def namespace_table(namespaces: Namespaces, planned: bool) -> str:
    """Every namespace up to ``LIST_ROWS``; past that, the rest added up in a last row."""
    headers = ["namespace", "stored", "stored bytes"]
    if planned:
        headers += ["reclaimable", "reclaimable bytes"]
    rows = list(namespaces.rows)
    rest = namespaces.rest(len(rows))
    if rest:
        rows.append(rest)
    cells = []
    for row in rows:
        cells.append([row.namespace, format_bytes(row.stored), f"{row.stored:,}"])
        if planned:
            reclaimable = row.reclaimable or 0
            cells[-1] += [format_bytes(reclaimable), f"{reclaimable:,}"]
    table = _table(headers, cells, set(range(1, len(headers))))
    if not rest:
        return table
    note = (
        f"Showing the {len(namespaces.rows):,} namespaces (of {namespaces.count:,}) with the "
        "most stored bytes; the last row adds up the rest."
    )
    return f"<p class='note'>{_e(note)}</p>{table}"


def _cell(column: str, value: Any) -> str:
    return f"{value:,}" if column == "size" else str(value)


def deletion_list(bounded: BoundedList) -> str:
    """One category the plan deletes: its first rows, and how many there are in all."""
    spec = bounded.source
    if bounded.truncated:
        shown = (
            f"showing {len(bounded.rows):,} of {bounded.total:,} ({spec.order_words}); "
            f"the full list is {spec.table}.parquet"
        )
    else:
        shown = f"all {bounded.total:,} ({spec.order_words}), from {spec.table}.parquet"
    headers = ["bytes" if c == "size" else c.replace("_", " ") for c in spec.columns]
    numeric = {i for i, c in enumerate(spec.columns) if c == "size"}
    rows = [[_cell(c, row[c]) for c in spec.columns] for row in bounded.rows]
    table = _table(headers, rows, numeric) if rows else ""
    return f"<details><summary>{_e(spec.title)} to delete: {_e(shown)}</summary>{table}</details>"


STYLE = """
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; margin: 24px 32px;
  color: #1f2933; background: #fff; max-width: 1040px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
.meta { color: #52606d; font-size: 13px; margin: 0 0 2px; }
.cards { display: flex; gap: 12px; margin: 16px 0; flex-wrap: wrap; }
.card { border: 1px solid #d9e2ec; border-radius: 6px; padding: 10px 14px; min-width: 180px; }
.card b { display: block; font-size: 20px; } .card span { color: #52606d; font-size: 12px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border-bottom: 1px solid #e4e7eb; padding: 4px 10px; text-align: left; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
svg text { font-family: inherit; } svg .label { font-size: 13px; fill: #1f2933; }
svg .value { font-size: 12px; fill: #323f4b; } svg .axis { font-size: 11px; fill: #52606d; }
svg .grid { stroke: #e4e7eb; stroke-width: 1; }
.note { color: #52606d; font-size: 13px; }
details { margin: 6px 0; } summary { cursor: pointer; font-size: 14px; }
"""


def _cards(data: ReportData) -> str:
    stored = data.namespaces.stored
    cards = [
        ("stored (blobs and uploads)", format_bytes(stored), f"{stored:,} bytes"),
        ("namespaces", f"{data.namespaces.count:,}", "with stored bytes"),
    ]
    if data.blob_bytes is not None:
        reclaimable = data.blob_bytes.reclaimable
        cards.append(
            (
                "reclaimable blob bytes",
                format_bytes(reclaimable),
                f"{reclaimable:,} bytes, {_percent(reclaimable, data.blob_bytes.total)}",
            )
        )
    if data.findings is not None:
        cards.append(("check findings", str(sum(data.findings.values())), "see below"))
    return (
        '<div class="cards">'
        + "".join(
            f"<div class='card'><span>{_e(title)}</span><b>{_e(big)}</b>"
            f"<span>{_e(small)}</span></div>"
            for title, big, small in cards
        )
        + "</div>"
    )


def render_report(data: ReportData) -> str:
    snap = data.snapshot
    title = f"regprune {data.command} report"
    sections = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='meta'>Storage {_e(snap.get('storage'))} · metadata "
        f"{_e(snap.get('metadata'))}</p>",
        f"<p class='meta'>Snapshot started {_e(snap.get('metadata_started_at'))} · run folder "
        f"{_e(data.run_dir)} · regprune {_e(snap.get('version'))}</p>",
        *(
            [f"<p class='note'><strong>{_e(projection_text(data.projection))}</strong></p>"]
            if data.projection
            else []
        ),
        _cards(data),
        "<h2>Storage by namespace</h2>",
        "<p class='note'>A blob shared by several namespaces is split evenly between them, so "
        "the bars add up to the bytes stored.</p>",
        namespace_chart(data.namespaces),
        namespace_table(data.namespaces, planned=data.blob_bytes is not None),
    ]
    if data.blob_bytes is not None:
        sections += [
            "<h2>Reclaimable vs kept</h2>",
            blob_bytes_chart(data.blob_bytes),
            _table(
                ["category", "action", "count", "bytes"],
                [
                    [
                        row["category"].replace("_", " "),
                        row["action"],
                        row["count"],
                        f"{row['size']:,}",
                    ]
                    for row in data.plan
                ],
                {2, 3},
            ),
            "<h2>What the plan deletes</h2>",
            *(deletion_list(bounded) for bounded in data.deletions),
        ]
    if data.findings is not None:
        sections += [
            "<h2>Consistency check</h2>",
            _table(
                ["finding", "count"],
                [[FINDINGS[table], count] for table, count in data.findings.items()],
                {1},
            ),
        ]
    sections.append("<h2>Trend over past snapshots</h2>")
    if data.trend is None:
        sections.append(
            "<p class='note'>Run with --warehouse URL to keep every run and see the trend.</p>"
        )
    elif not data.trend:
        sections.append("<p class='note'>The warehouse holds no prune run yet.</p>")
    else:
        sections += [
            trend_chart(data.trend),
            _table(
                ["snapshot started", "run", "stored blob bytes", "reclaimable blob bytes"],
                [
                    [
                        p.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                        p.run,
                        f"{p.stored:,}",
                        f"{p.reclaimable:,}",
                    ]
                    for p in reversed(data.trend)
                ],
                {2, 3},
            ),
        ]
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )

"""What a person reads of a prune or a check: the report JSON and the terminal summary.

Everything here reads the ``plan_*`` / ``check_*`` Parquet results; no decisions are made. The
tasks that publish them, with the Prefect artifacts, are in tasks/reports.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from regprune.categories import CHECK_FINDINGS, PLAN_CATEGORIES
from regprune.models import SnapshotDatabase, fetch_records
from regprune.recovery import RESULTS_FILE
from regprune.snapshots import anomalies_text
from regprune.tables import sql_literal
from regprune.units import format_bytes

CATEGORIES = tuple(category.name for category in PLAN_CATEGORIES)
CHECK_FINDING_KEYS = tuple(finding.key for finding in CHECK_FINDINGS)


def parquet_records(path: Path, columns: str, where: str = "true", order: str = "1") -> list[dict]:
    with duckdb.connect() as con:
        source = f"read_parquet({sql_literal(path)})"
        return fetch_records(
            con.execute(f"SELECT {columns} FROM {source} WHERE {where} ORDER BY {order}")
        )


def prune_report(summary: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """The ``--report`` JSON of a prune: the summary and every object to delete (built only
    when asked for: at millions of objects the lists dominate memory)."""
    run = Path(run_dir)
    deleting = "action = 'delete'"
    return {
        **summary,
        **{
            c.name: parquet_records(run / f"{c.model}.parquet", ", ".join(c.columns), deleting)
            for c in PLAN_CATEGORIES
        },
        "files": execution_files(run) if summary["executed"] else [],
    }


ACTION_CATEGORIES = {category.action: category.name for category in PLAN_CATEGORIES}
CACHE_WARNING = (
    "Warning: the registry was not restarted (--restart-registry): until it is, its "
    "blob-descriptor cache may claim removed blobs exist, so a push that reuses one skips "
    "the upload and the image breaks. {handled}Restart the registry now."
)
API_ONLY = (
    "The registry API was told of every blob and layer link moved, which clears its "
    "per-repository cache (and OpenShift's registry-wide one), but distribution's global "
    "cache keeps removed manifests until a restart. "
)


STATUS_KEYS = {
    "quarantined": "done",
    "purged": "done",
    "would-quarantine": "would_delete",
    "would-purge": "would_delete",
    "restored": "restored",
    "would-restore": "restored",
    "gone": "gone",
    "skipped": "skipped",
    "failed": "failed",
    "quarantining": "failed",
    "restoring": "failed",
    "purging": "failed",
}
"""Each status of the audit trail as the count it adds to: ``done`` (removed from the
registry's tree by this run: in the quarantine, or purged), ``would_delete`` (a dry run's),
``restored`` (moved back by the re-check), ``gone`` (already gone: not counted as
removed), ``skipped``, ``failed`` (also an intent never followed by its outcome)."""
REMOVED_KEYS = ("done", "would_delete")


def execution_outcome(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Per category: done (or, in a dry run, would_delete), restored, gone, skipped,
    failed, the bytes and files removed (or that would be) and the reasons
    (sql/execution_summary)."""
    run = Path(run_dir)
    outcome: dict[str, dict[str, Any]] = {
        c: dict.fromkeys(
            ("done", "would_delete", "restored", "gone", "skipped", "failed", "bytes", "files"),
            0,
        )
        | {"reasons": []}
        for c in CATEGORIES
    }
    with SnapshotDatabase(run, {}, extra_tables={"actions": run / "actions.parquet"}) as db:
        db.define("latest_actions", "execution_summary")
        for row in db.records("SELECT * FROM execution_summary"):
            entry = outcome[ACTION_CATEGORIES[row["action"]]]
            key = STATUS_KEYS.get(row["status"], "failed")
            entry[key] += row["count"]
            if key in REMOVED_KEYS:
                entry["bytes"] += row["size"]
                entry["files"] += row["files"]
            if key not in ("done", "would_delete"):
                entry["reasons"] += row["reasons"] or []
    return outcome


def execution_files(run_dir: str | Path) -> list[str]:
    """Every file the run removed, or its dry run would (sql/execution_files)."""
    run = Path(run_dir)
    with SnapshotDatabase(run, {}, extra_tables={"actions": run / "actions.parquet"}) as db:
        db.define("latest_actions", "execution_files")
        return [row["file"] for row in db.records("SELECT file FROM execution_files")]


def prune_summary_text(report: dict[str, Any]) -> str:
    """The reference's wording: "Would delete N blobs", "Would free up X of disk space";
    after a confirmed run, "Deleted N blobs", "Freed up X", where the quarantine is and how
    to undo, what its re-check moved back, what was already gone, skipped or failed."""
    summary, executed = report["summary"], report["executed"]
    dry = report["mode"] == "dry-run"
    verb = "Would delete" if dry else "Deleted"
    lines = [projection_text(summary["projected_from"])] if "projected_from" in summary else []
    key = "would_delete" if dry else "done"
    for c in CATEGORIES:
        count = executed[c][key] if executed else summary[c]["delete"]
        lines.append(f"{verb} {count} {c.replace('_', ' ')}")
    freed = format_bytes(summary["bytes_freed"])
    lines.append(f"{'Would free up' if dry else 'Freed up'} {freed} of disk space")
    if "files" in summary:
        lines.append(f"{verb} {summary['files']} files (listed in actions.parquet)")
    lines += _quarantine_lines(report, dry)
    for status, label in (("restored", "Moved back by the re-check"), ("gone", "Already gone")):
        counted = [(c, executed[c]) for c in CATEGORIES if executed and executed[c][status]]
        if counted:
            shown = ", ".join(f"{e[status]} {c.replace('_', ' ')}" for c, e in counted)
            tail = " (not counted)" if status == "gone" else ""
            lines.append(f"{label}: {shown}{tail}")
            lines += [f"  - {r}" for r in sorted({r for _, e in counted for r in e["reasons"]})]
    for status in ("skipped", "failed"):
        counted = [(c, executed[c]) for c in CATEGORIES if executed and executed[c][status]]
        if counted:
            lines.append(
                f"{status.capitalize()}: "
                + ", ".join(f"{e[status]} {c.replace('_', ' ')}" for c, e in counted)
            )
            reasons = sorted({r for _, e in counted for r in e["reasons"]})
            lines += [f"  - {reason}" for reason in reasons]
    young = [f"{summary[c]['kept_young']} {c.replace('_', ' ')}" for c in CATEGORIES]
    if any(summary[c]["kept_young"] for c in CATEGORIES):
        grace = report["settings"].get("keep_younger_than")
        lines.append(f"Kept, younger than {grace}: " + ", ".join(young))
    if not dry:
        lines += _cache_lines(report)
    return "\n".join(lines)


def projection_text(projection: dict[str, Any]) -> str:
    """The first line of a projected dry run: its numbers assume prune-images' plan done."""
    return (
        "Projected from prune-images' plan ({images_plan}): these numbers assume its "
        "{images_deleted} Image(s) deleted and {revisions_removed} tag revision(s) removed, "
        "which this dry run did not do"
    ).format(**projection)


def _quarantine_lines(report: dict[str, Any], dry: bool) -> list[str]:
    """Where this run's removals are, how to undo, what it purged of older quarantines."""
    found = report["summary"].get("quarantine")
    if not found:
        return []
    lines = []
    own, run_dir = found["own"], report.get("run_dir", "RUN")
    purged_now = own.get("purged") or own.get("would-purge")
    if purged_now:
        lines.append(
            f"{'Would purge' if dry else 'Purged'} at once (--quarantine-retention 0): "
            f"{purged_now['count']} objects, {format_bytes(purged_now['bytes'])}"
        )
    elif not dry and report["executed"] and any(e["done"] for e in report["executed"].values()):
        retention = report["settings"].get("quarantine_retention")
        lines.append(
            f"Quarantined in {found['storage']}/_regprune/quarantine/{found['id']}: "
            f"'regprune undo {run_dir}' moves it all back; a confirmed run {retention} or "
            f"more from now purges it, after its own re-check (or 'regprune purge {run_dir}')"
        )
    for qid, statuses in sorted(found["others"].items()):
        done = [
            f"{entry['count']} {verb} ({format_bytes(entry['bytes'])})"
            for status, verb in (
                ("restored", "moved back"),
                ("would-restore", "would move back"),
                ("purged", "purged"),
                ("would-purge", "would purge"),
                ("failed", "failed"),
            )
            if (entry := statuses.get(status))
        ]
        if done:
            lines.append(f"Older quarantine {qid}: " + ", ".join(done))
    return lines


def _cache_lines(report: dict[str, Any]) -> list[str]:
    """What cleared a caching registry of what this run moved, or the warning when nothing
    did (docs/safety.md)."""
    executed = report["executed"]
    if not executed or not any(e["done"] for e in executed.values()):
        return []
    handled = report["settings"].get("registry_cache") or []
    if not any("restarted" in line for line in handled):
        return [CACHE_WARNING.format(handled=API_ONLY if handled else "")]
    return ["Registry cache: " + "; ".join(handled)]


def with_anomalies(text: str, run_dir: str | Path) -> str:
    """The summary, and the snapshot's anomalies (how many, where to read them) if any."""
    anomalies = anomalies_text(run_dir)
    return f"{text}\n{anomalies}" if anomalies else text


def check_report(run_dir: str | Path) -> dict[str, Any]:
    """The ``--report`` JSON of a check."""
    run = Path(run_dir)
    report = {
        f.key: parquet_records(run / f"{f.model}.parquet", ", ".join(f.columns), order=f.order)
        for f in CHECK_FINDINGS
    }
    if (run / RESULTS_FILE).exists():  # written by check --recover --confirm
        report["recovered"] = parquet_records(
            run / RESULTS_FILE,
            "namespace, name, digest, tag, status, error",
            order="namespace, name, digest",
        )
    return report


def check_findings_count(report: dict[str, Any]) -> int:
    """What is still wrong: a lost-found candidate restored by this run no longer counts."""
    restored = sum(row["status"] == "added" for row in report.get("recovered", ()))
    return sum(len(report[key]) for key in CHECK_FINDING_KEYS) - restored


def check_text(report: dict[str, Any], recover_verb: str = "Would add") -> str:
    """One line per finding, in the reference's words."""
    lines = []
    for row in report["broken_imagestream_tags"]:
        ref = f"{row['namespace']}/{row['name']}:{row['tag']}"
        what = "image" if row["kind"] == "image" else f"image {row['kind']}"
        lines.append(
            f'Broken imagestream tag "{ref}" in position {row["position"]}: '
            f'{what} "{row["missing"]}" is missing'
        )
    for row in report["broken_images"]:
        lines.append(f'Broken image "{row["image"]}": {row["kind"]} "{row["missing"]}" is missing')
    for row in report["invalid_manifests"]:
        lines.append(f'Invalid manifest "{row["repository"]}@{row["digest"]}": {row["reason"]}')
    recovered = {(r["namespace"], r["name"], r["digest"]): r for r in report.get("recovered", ())}
    for row in report["lost_found"]:
        target = (
            f'image "{row["digest"]}" to imagestream '
            f'"{row["namespace"]}/{row["name"]}" with tag "{row["tag"]}"'
        )
        result = recovered.get((row["namespace"], row["name"], row["digest"]))
        if result is None:
            lines.append(f"{recover_verb} {target}")
        elif result["status"] == "added":
            lines.append(f"Added {target}")
        else:
            verb = "Failed to add" if result["status"] == "failed" else "Skipped adding"
            lines.append(f"{verb} {target}: {result['error']}")
    if not lines:
        lines.append(
            "Consistent: every tag resolves to an Image whose blobs are all stored, "
            "and every stored manifest belongs to its ImageStream."
        )
    return "\n".join(lines)

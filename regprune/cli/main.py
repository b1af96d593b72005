"""The ``regprune`` command: a thin argparse layer over the flows.

Exit codes: 0 success (and, for ``check``, consistent), 1 failure, 2 bad usage,
3 ``check`` found broken references or lost-found candidates.

Prefect and the flows are imported only once the command line is read and the environment
is prepared (regprune/cli/output.py): Prefect reads its settings when imported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regprune import interrupts, progress, timeouts, twophase
from regprune.cli.common import (
    EXIT_FAILURE,
    EXIT_FINDINGS,
    EXIT_MEANING,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    _validation_message,
    add_metadata_arguments,
    add_output_arguments,
    add_storage_arguments,
    add_timeout_arguments,
    begin,
    check_duration,
    check_registry_url,
    duckdb_settings,
    finish,
    flag_or_env,
    json_report,
    new_run_folder,
    print_json,
    ready,
    say,
    snapshot_source,
)
from regprune.cli.output import Output, prepare_environment
from regprune.cli.sql import add_sql_parser, warehouse_url
from regprune.twophase import default_retention, default_settle

if TYPE_CHECKING:
    from regprune.runners import TaskRunnerSettings
    from regprune.snapshots import SnapshotSource

DEFAULT_RECOVER_RATE = 10.0  # regprune/recovery.py's default, checked by tests/test_cli_output.py


def apply_timeouts(args: argparse.Namespace) -> None:
    """The timeouts given, checked, in the environment every client reads them from (tasks
    in this process and in Dask workers it starts); undone when called in-process."""
    saved = {t.env: os.environ.get(t.env) for t in timeouts.ALL}
    for timeout in timeouts.ALL:
        value = getattr(args, timeout.flag[2:].replace("-", "_"), None)
        if value is None:
            continue
        try:
            timeouts.parse_timeout(value)
        except ValueError as exc:
            raise UsageError(f"{timeout.flag}: {exc}") from exc
        os.environ[timeout.env] = value
    args.restore_timeouts = saved
    try:
        timeouts.Timeouts.current()
    except ValueError as exc:  # a bad value in the environment, not on the command line
        raise UsageError(str(exc)) from exc


def restore_timeouts(args: argparse.Namespace) -> None:
    for name, value in getattr(args, "restore_timeouts", {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shards",
        type=int,
        help="parallel storage walk tasks (default: 16 on S3, the CPU count on a local folder)",
    )
    parser.add_argument(
        "--warehouse",
        metavar="URL",
        type=warehouse_url,
        help="also keep this run's tables in a warehouse: a folder or s3://BUCKET/PREFIX "
        "(<table>/snapshot_date=YYYY-MM-DD/run=<id>/<table>.parquet; see regprune sql)",
    )
    parser.add_argument(
        "--task-runner",
        choices=("threads", "dask"),
        help="where tasks run: threads of this process (default) or a Dask cluster "
        "(pip install 'regprune[dask]'); default $REGPRUNE_TASK_RUNNER",
    )
    parser.add_argument(
        "--dask-address",
        metavar="URL",
        help="scheduler of an existing Dask cluster, e.g. tcp://dask-scheduler:8786 (implies "
        "--task-runner dask; without it a local cluster is started); default "
        "$REGPRUNE_DASK_ADDRESS",
    )


def task_runner_settings(args: argparse.Namespace) -> TaskRunnerSettings:
    """--task-runner / --dask-address; commands without them take the environment's choice."""
    from pydantic import ValidationError

    from regprune.runners import TaskRunnerSettings

    try:
        return TaskRunnerSettings.choose(
            getattr(args, "task_runner", None), getattr(args, "dask_address", None)
        )
    except ValidationError as exc:
        raise UsageError(_validation_message(exc)) from exc


LIST_VALUES = {"storage_option"}
"""Options whose value is a list (``action="append"``); every other one is one text."""


def check_values(args: argparse.Namespace) -> None:
    """``--keep-younger-than=--``: argparse takes ``--`` away and leaves an empty list where
    one value belongs; every option gets one text (a repeatable one, texts)."""
    for name, value in vars(args).items():
        flag = "--" + name.replace("_", "-")
        if name in LIST_VALUES:
            if not all(isinstance(item, str) for item in value):
                raise UsageError(f"{flag}: expects a value, not '--'")
        elif isinstance(value, list):
            raise UsageError(f"{flag}: expects a value, not '--'")


WALKED_TABLES = ("blobs", "layer_links", "manifest_links", "tags", "tag_index")
"""One listed file per row; an upload is about three files (data, startedat, hashstates)."""


def previous_rows(storage: str, warehouse: str | None, out: str | None) -> dict[str, int] | None:
    """Row counts of the newest earlier snapshot of ``storage``: from the warehouse, else
    from the run folders under regprune-runs/ or beside ``out``."""
    if warehouse:
        import duckdb

        from regprune.warehouse import connect_warehouse

        with duckdb.connect() as con:
            if "runs" in connect_warehouse(warehouse, con):
                found = con.execute(
                    "SELECT snapshot_json FROM runs WHERE storage = ? "
                    "ORDER BY snapshot_date DESC, run DESC LIMIT 1",
                    [storage],
                ).fetchone()
                if found:
                    return json.loads(found[0]).get("rows")
    from regprune.snapshots import DEFAULT_RUNS

    folders = {DEFAULT_RUNS, *([Path(out).parent] if out else [])}
    summaries = [path for folder in folders for path in folder.glob("*/snapshot.json")]
    for summary in sorted(summaries, key=lambda p: p.stat().st_mtime, reverse=True)[:50]:
        data = json.loads(summary.read_text())
        if data.get("storage") == storage:
            return data.get("rows")
    return None


def expect_walk(args: argparse.Namespace, source: SnapshotSource | None, out: str) -> None:
    """Progress estimates the walk's end from the previous snapshot of the same storage."""
    if source is None or not (source.storage or source.registry_config):
        return
    try:
        rows = previous_rows(source.storage_spec().display, args.warehouse, out)
    except Exception:  # an estimate only: a run never fails for it
        rows = None
    if rows:
        files = sum(int(rows.get(t, 0)) for t in WALKED_TABLES) + 3 * int(rows.get("uploads", 0))
        progress.expect("walk", files)


def run_snapshot(args: argparse.Namespace) -> int:
    from regprune.snapshots import anomalies_text, read_snapshot_summary

    source = snapshot_source(args)
    out = args.out or new_run_folder("snapshot")
    begin(args, out)
    expect_walk(args, source, out)
    from regprune.flows.snapshot import snapshot_flow

    ready(args)
    snapshot_flow(out=out, source=source, warehouse=args.warehouse)
    summary = read_snapshot_summary(out)
    if args.output_mode.json:
        print_json(summary)
    rows = summary["rows"]
    say(
        args,
        f"Snapshot of {summary['storage']} + {summary['metadata']}: {rows['blobs']:,} blobs, "
        f"{rows['repositories']:,} repositories, {rows['images']:,} images, "
        f"{rows['imagestreams']:,} imagestreams in {summary['duration_seconds']} s",
    )
    say(
        args,
        f"Tables: {out}" + (f" (and the warehouse {args.warehouse})" if args.warehouse else ""),
    )
    anomalies = anomalies_text(out)
    if anomalies:
        say(args, anomalies)
    return EXIT_OK


def add_analysis_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--snapshot",
        metavar="DIR",
        help="analyse this existing snapshot folder instead of listing again",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the snapshot and results (default: regprune-runs/<command>-<time>)",
    )
    parser.add_argument("--report", metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--memory-limit", metavar="SIZE", help="DuckDB memory limit, e.g. 2GB")
    parser.add_argument("--temp-directory", metavar="DIR", help="DuckDB spill folder")


def analysis_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Either --snapshot DIR, or a storage (and metadata) to snapshot now."""
    if args.snapshot:
        if args.out:
            raise UsageError("--out goes with a new snapshot, not with --snapshot")
        given = args.storage or args.registry_config
        source = snapshot_source(args) if given else None
    else:
        source = snapshot_source(args)
    return {
        "source": source,
        "snapshot": args.snapshot,
        "out": args.out,
        "report": args.report,
        "duckdb": duckdb_settings(args),
    }


def run_prune(args: argparse.Namespace) -> int:
    from regprune.tasks.registry_restart import parse_deployment

    check_duration("--keep-younger-than", args.keep_younger_than)
    check_duration("--upload-max-age", args.upload_max_age)
    check_duration(flag_or_env("--settle", "REGPRUNE_SETTLE", args.settle), args.settle)
    retention = args.quarantine_retention
    check_duration(
        flag_or_env("--quarantine-retention", "REGPRUNE_QUARANTINE_RETENTION", retention), retention
    )
    check_registry_url(args.registry_url)
    if args.registry_token_file and not args.registry_url:
        raise UsageError("--registry-token-file goes with --registry-url")
    for flag, given in (("--force", args.force), ("--force-unlock", args.force_unlock)):
        if given and not (args.confirm or args.resume):
            raise UsageError(f"{flag} goes with --confirm or --resume")
    if args.project_images_plan and (args.confirm or args.resume):
        raise UsageError(
            "--project-images-plan is for a dry run's report only (the Images of that plan "
            "still exist): not with --confirm or --resume"
        )
    if args.restart_registry:
        try:
            parse_deployment(args.restart_registry)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    if args.resume:
        if args.snapshot or args.out:
            raise UsageError("--resume continues a run folder: no --snapshot or --out with it")
        given = args.storage or args.registry_config
        inputs = {
            "source": resume_source(args, snapshot_source(args) if given else None),
            "report": args.report,
            "resume": args.resume,
        }
    else:
        inputs = analysis_inputs(args)
    run_dir = args.resume or inputs.get("snapshot") or inputs.get("out")
    if not run_dir:
        run_dir = inputs["out"] = new_run_folder("prune")
    json_report(args, inputs, run_dir)
    begin(args, run_dir)
    if not (args.resume or inputs.get("snapshot")):
        expect_walk(args, inputs["source"], run_dir)
    from regprune.flows.prune import prune_flow

    ready(args)
    result = prune_flow(
        keep_younger_than=args.keep_younger_than,
        upload_max_age=args.upload_max_age,
        confirm=args.confirm,
        registry_url=args.registry_url,
        registry_token_file=args.registry_token_file,
        restart_registry=args.restart_registry,
        warehouse=args.warehouse,
        force=args.force,
        force_unlock=args.force_unlock,
        project_images_plan=args.project_images_plan,
        settle=args.settle,
        quarantine_retention=args.quarantine_retention,
        **inputs,
    )
    finish(args, inputs, result)
    return EXIT_FAILURE if result.failed else EXIT_OK


def resume_source(args: argparse.Namespace, source: SnapshotSource | None) -> Any:
    """--resume continues the run's own job (regprune/resume.py): another storage, dump or
    cluster, a folder that is not a planned run or whose snapshot changed is bad usage,
    refused before anything is created. ``--metadata kube`` (the default) counts as none."""
    from regprune.metadata import MetadataSource
    from regprune.resume import ResumeError
    from regprune.resume import resume_source as checked

    named = args.metadata != "kube" or args.kubeconfig or args.context
    metadata = (
        MetadataSource(args.metadata, args.kubeconfig, args.context, args.page_size)
        if named
        else None
    )
    try:
        return checked(args.resume, source, metadata)
    except ResumeError as exc:
        raise UsageError(str(exc)) from exc


def run_check(args: argparse.Namespace) -> int:
    if args.confirm and not args.recover:
        raise UsageError("--confirm goes with --recover: it creates the lost-found tags")
    if args.recover and args.confirm and args.metadata != "kube":
        raise UsageError(
            "--recover --confirm writes lost-found tags to the cluster: it needs --metadata "
            "kube (a dump cannot be recovered into)"
        )
    if not 0 < args.recover_rate < float("inf"):
        raise UsageError("--recover-rate: requests per second must be a positive number")
    host = args.registry_host
    if host is not None and (not host or any(c in host for c in "/@ ")):
        raise UsageError(
            "--registry-host: a host[:port] such as "
            "image-registry.openshift-image-registry.svc:5000, without scheme or path"
        )
    inputs = analysis_inputs(args)
    if args.recover and inputs["source"] is None:  # --snapshot alone: the cluster to write to
        from regprune.snapshots import SnapshotSource

        inputs["source"] = SnapshotSource(
            metadata=args.metadata,
            kubeconfig=args.kubeconfig,
            context=args.context,
            page_size=args.page_size,
        )
    run_dir = inputs.get("snapshot") or inputs.get("out")
    if not run_dir:
        run_dir = inputs["out"] = new_run_folder("check")
    json_report(args, inputs, run_dir)
    begin(args, run_dir)
    if not inputs.get("snapshot"):
        expect_walk(args, inputs["source"], run_dir)
    from regprune.flows.check import check_flow

    ready(args)
    result = check_flow(
        namespace=args.namespace,
        recover=args.recover,
        confirm=args.confirm,
        registry_host=host,
        recover_rate=args.recover_rate,
        warehouse=args.warehouse,
        **inputs,
    )
    finish(args, inputs, result)
    return EXIT_FINDINGS if result.findings else EXIT_OK


def run_demo(args: argparse.Namespace) -> int:
    begin(args, args.out)
    from regprune.flows.demo import demo_flow

    ready(args)
    result = demo_flow(out=args.out, seed=args.seed)
    if args.output_mode.json:
        reports = {
            name: json.loads((Path(args.out) / f"{name}.json").read_text())
            for name in ("prune", "check")
        }
        print_json({**reports, "agreement": result.agreement, "run_dir": result.run_dir})
    for text in (
        f"Demo registry: {result.storage}  metadata: {result.metadata}\n",
        "== regprune prune (dry-run, grace period 24h)",
        result.prune.text,
        "\n== regprune check",
        result.check.text,
        "\n== against the generator's ground truth",
        "\n".join(result.agreement),
        f"\nTables and results: {result.run_dir} (query them with DuckDB: docs/tables.md)",
    ):
        say(args, text)
    return EXIT_OK if result.agrees else EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regprune",
        description="Keep an OpenShift integrated registry's storage and its image metadata "
        "consistent: snapshot, hard prune, check, recover.",
    )
    from regprune.version import tool_version

    parser.add_argument("--version", action="version", version=f"regprune {tool_version()}")
    add_output_arguments(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    snapshot = commands.add_parser(
        "snapshot", help="write the storage and metadata tables as Parquet"
    )
    add_storage_arguments(snapshot)
    add_metadata_arguments(snapshot)
    add_run_arguments(snapshot)
    snapshot.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the tables (default: regprune-runs/snapshot-<time>)",
    )
    add_timeout_arguments(snapshot)
    add_output_arguments(snapshot)
    snapshot.set_defaults(run=run_snapshot)

    prune = commands.add_parser(
        "prune", help="plan (and, with --confirm, run) a hard prune; dry-run by default"
    )
    add_storage_arguments(prune)
    add_metadata_arguments(prune)
    add_run_arguments(prune)
    add_analysis_arguments(prune)
    prune.add_argument(
        "--keep-younger-than",
        default="24h",
        metavar="DURATION",
        help="grace period: nothing modified less than this before the snapshot started is "
        "deleted (default 24h; 0s allowed)",
    )
    prune.add_argument(
        "--upload-max-age",
        default="7d",
        metavar="DURATION",
        help="unfinished uploads older than this are deleted (default 7d)",
    )
    prune.add_argument(
        "--confirm",
        action="store_true",
        help="delete for real, in two phases: move what the plan deletes into a quarantine "
        "(each object re-read just before), wait --settle, re-check, move back what gained "
        "a reference (docs/safety.md)",
    )
    prune.add_argument(
        "--settle",
        default=default_settle(),
        metavar="DURATION",
        help="wait this long after the last move before the re-check, so pushes in flight "
        f"have written their links (default {twophase.SETTLE}, or $REGPRUNE_SETTLE)",
    )
    prune.add_argument(
        "--quarantine-retention",
        default=default_retention(),
        metavar="DURATION",
        help="keep a quarantine this long (for 'regprune undo') before a confirmed run "
        f"purges it after its re-check (default {twophase.RETENTION}, or "
        "$REGPRUNE_QUARANTINE_RETENTION; 0s: purge this run's at once)",
    )
    prune.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run that stopped while deleting (implies --confirm)",
    )
    prune.add_argument(
        "--registry-url",
        metavar="URL",
        help="the running registry: layer links of deleted blobs are removed through its API, "
        "which also clears its blob-descriptor cache",
    )
    prune.add_argument(
        "--registry-token-file",
        metavar="FILE",
        help="bearer token for --registry-url (default: the token of the cluster credentials, "
        "kubeconfig or in-cluster ServiceAccount, as oc adm prune images sends)",
    )
    prune.add_argument(
        "--restart-registry",
        metavar="NAMESPACE/DEPLOYMENT",
        help="restart the registry through the Kubernetes API after deleting (clears every "
        "cache of deleted blobs)",
    )
    prune.add_argument(
        "--force",
        action="store_true",
        help="delete even when the metadata looks unfit to decide (no Images, none of the "
        "stored manifests among them, Images that could not be read)",
    )
    prune.add_argument(
        "--force-unlock",
        action="store_true",
        help="remove the storage's lock (_regprune/lock) left by a run that died elsewhere",
    )
    prune.add_argument(
        "--project-images-plan",
        metavar="RUN_DIR",
        help="a dry run only: plan over the cluster as the prune-images plan in RUN_DIR would "
        "leave it (its Images deleted, its tag revisions removed)",
    )
    add_timeout_arguments(prune)
    add_output_arguments(prune)
    prune.set_defaults(run=run_prune)

    check = commands.add_parser(
        "check",
        help="report broken tags and images and recoverable manifests "
        "(exit 3 when anything is found)",
    )
    add_storage_arguments(check)
    add_metadata_arguments(check)
    add_run_arguments(check)
    add_analysis_arguments(check)
    check.add_argument("--namespace", metavar="NS", help="limit the check to one namespace")
    check.add_argument(
        "--recover", action="store_true", help="restore lost manifests as lost-found-<hex> tags"
    )
    check.add_argument(
        "--confirm",
        action="store_true",
        help="with --recover: create the tags (ImageStreamMappings; needs --metadata kube)",
    )
    check.add_argument(
        "--registry-host",
        metavar="HOST[:PORT]",
        help="host in the restored Images' dockerImageReference (default: the host most "
        "managed Images name)",
    )
    check.add_argument(
        "--recover-rate",
        type=float,
        default=DEFAULT_RECOVER_RATE,
        metavar="PER_SECOND",
        help=f"API requests per second while recovering (default {DEFAULT_RECOVER_RATE:g})",
    )
    add_timeout_arguments(check)
    add_output_arguments(check)
    check.set_defaults(run=run_check)

    demo = commands.add_parser(
        "demo", help="generate a demo registry with drift and run prune and check on it"
    )
    demo.add_argument("--out", default="regprune-demo", metavar="DIR", help="demo folder")
    demo.add_argument("--seed", type=int, default=0, help="generator seed")
    add_output_arguments(demo)
    demo.set_defaults(run=run_demo)
    add_sql_parser(commands)
    from regprune.cli.prune_images import add_prune_images_parser
    from regprune.cli.quarantine import add_quarantine_parsers

    add_prune_images_parser(commands)
    add_quarantine_parsers(commands)
    return parser


def output_mode(args: argparse.Namespace) -> Output:
    return Output(
        verbose=args.verbose,
        quiet=args.quiet,
        json=args.output == "json",
        debug=args.debug or os.environ.get("REGPRUNE_DEBUG", "") not in ("", "0"),
    )


KNOWN_FAILURES = {
    "AuditWriteError",
    "QuarantineError",
    "StorageConfigError",
    "StorageListingError",
    "MetadataError",
    "SnapshotError",
    "StorageLocked",
    "UnsafePlan",
    "WarehouseError",
    "RecoveryError",
    "RegistryRefused",
    "JournalError",
    "UndoError",
}
"""Errors whose message says it all: printed without their type."""


def error_line(exc: BaseException, log_file: Path | None, debug: bool) -> str:
    """The one line a failed run prints: what, and what the exit code means."""
    what = str(exc) or type(exc).__name__
    known = type(exc).__name__ in KNOWN_FAILURES or isinstance(exc, FileNotFoundError)
    if not known:
        what = f"{type(exc).__name__}: {what}"
    notes = [EXIT_MEANING[EXIT_FAILURE]]
    if log_file is not None and log_file.exists():
        notes.append(f"log: {log_file}")
    if not debug:
        notes.append("--debug for a traceback")
    return f"regprune: error: {what} ({'; '.join(notes)})"


def main(argv: Sequence[str] | None = None) -> int:
    """The command. Run as a program (``argv`` None), SIGTERM and SIGINT end it promptly at
    any point (regprune/interrupts.py); called with ``argv`` (tests), signals are left as
    they are."""
    if argv is None and threading.current_thread() is threading.main_thread():
        interrupts.arm(lambda state, forced: interrupted_line(args, state, forced))
    args = argparse.Namespace()
    try:
        code = _main(argv, args)
    except KeyboardInterrupt:  # before _main's own handling began (or after it ended)
        state = interrupts.current(wait=2.0)
        code = state.exit_code if state else 130
        line = interrupted_line(args, state, False) if state else "regprune: interrupted (exit 130)"
        print(line, file=sys.stderr, flush=True)
    if argv is None and interrupts.requested():
        interrupts.end_process(code)  # threads still blocked in a request are not waited for
    return code


def _main(argv: Sequence[str] | None, args: argparse.Namespace) -> int:
    api_url = prepare_environment()  # before anything imports Prefect
    parser = build_parser()
    parser.parse_args(argv, namespace=args)
    args.output_mode = output = output_mode(args)
    args.api_url = api_url
    run: Callable[[argparse.Namespace], int] = args.run
    display = None
    try:
        check_values(args)
        if args.command == "sql":
            return run(args)
        apply_timeouts(args)
        from regprune.cli.output import make_display

        display = make_display(output)
        progress.attach(display)
        from regprune.runners import use_task_runner

        with use_task_runner(task_runner_settings(args)):
            return run(args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"regprune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if display is not None:
            display.close()
        state = interrupts.current(wait=2.0)
        if state is None:  # a KeyboardInterrupt of its own (called in-process)
            print("regprune: interrupted (exit 130)", file=sys.stderr)
            return 130
        release_held_locks()
        print(interrupted_line(args, state, forced=False), file=sys.stderr, flush=True)
        return state.exit_code
    except BrokenPipeError:
        return quiet_broken_pipe()
    except Exception as exc:  # the run's log keeps the traceback; the terminal gets one line
        if display is not None:
            display.close()
        if output.debug:
            import traceback

            traceback.print_exc()
        print(error_line(exc, getattr(args, "log_file", None), output.debug), file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if display is not None:
            display.close()
        progress.attach(None)
        undo = getattr(args, "undo_logging", None)
        if undo is not None and argv is not None:  # called in-process (tests): as it was
            undo()
        if argv is not None:
            restore_timeouts(args)


def release_held_locks() -> None:
    """A lock this process still holds once the flow unwound (normally none: the deleting
    step releases it on its way out)."""
    from regprune.lock import held_locks

    for held in held_locks():
        try:
            held.release()
        except Exception as exc:  # its line says so; the next run on this host takes it over
            progress.warning(f"the storage lock {held.where} could not be released: {exc}")


def interrupted_line(args: argparse.Namespace, state: interrupts.Interruption, forced: bool) -> str:
    """The one line of an interrupted run: the signal, what it interrupted, what that
    leaves and what to do, the exit code."""
    from regprune.lock import held_locks

    doing = re.split(r" \(|\. ", state.doing or "starting", maxsplit=1)[0]  # no aside
    line = f"regprune: interrupted by {state.name} while {doing[:1].lower()}{doing[1:]}"
    if forced:
        line += f"; it did not end within {interrupts.GRACE_SECONDS:g} s, so it stopped at once"
    left = [held.where for held in held_locks()]
    if left:
        line += (
            f"; the storage lock {', '.join(left)} is left: the next run on this host takes "
            "it over (elsewhere: --force-unlock)"
        )
    elif state.locks:
        line += "; the storage lock is released"
    run_dir = getattr(args, "run_folder", None)
    command = getattr(args, "command", None)
    confirm = bool(getattr(args, "confirm", False))
    changes = {
        "prune": confirm or bool(getattr(args, "resume", None)),
        "check": confirm and bool(getattr(args, "recover", False)),
        "prune-images": confirm,
        "undo": True,
        "purge": confirm,
    }.get(str(command), False)
    deleted = bool(run_dir) and any(Path(str(run_dir), "actions").glob("*.parquet"))
    if command == "prune" and changes and run_dir and (state.locks or deleted):
        line += f"; regprune prune --resume {run_dir} finishes the plan"
    elif not changes or (command == "prune" and not deleted):
        line += "; nothing was deleted" if command in ("snapshot", "prune") else "; nothing changed"
        if run_dir and state.key in ("metadata", "walk"):
            line += f", the snapshot in {run_dir} is incomplete"
    elif command in ("undo", "purge") and run_dir:
        again = f"regprune undo {args.run_dir}" if command == "undo" else "the same purge"
        line += f"; what was done is in {run_dir}, and {again} again finishes it"
    elif run_dir:
        line += f"; what was done is in {run_dir}"
    return f"{line} (exit {state.exit_code})"


def quiet_broken_pipe() -> int:
    """stdout's reader left (``regprune ... | head``): stop without a word. stdout points at
    /dev/null from here on, so the interpreter's final flush does not complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

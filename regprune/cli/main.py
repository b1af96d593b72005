"""The ``regprune`` command: a thin argparse layer over the flows.

Exit codes: 0 success (and, for ``check``, consistent), 1 failure, 2 bad usage,
3 ``check`` found broken references or lost-found candidates.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from regprune.cli.sql import add_sql_parser, warehouse_url
from regprune.flows.prune import UnsafePlan
from regprune.lock import StorageLocked
from regprune.metadata import MetadataError
from regprune.models import DuckDBSettings
from regprune.runners import TaskRunnerSettings, use_task_runner
from regprune.snapshots import SnapshotError, SnapshotSource
from regprune.storage import StorageConfigError, parse_storage_option
from regprune.tasks.registry_restart import parse_deployment
from regprune.units import parse_duration
from regprune.version import tool_version

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_FINDINGS = 0, 1, 2, 3


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("storage (one of)")
    group.add_argument(
        "--storage",
        metavar="URL",
        help="registry rootdirectory: PATH, file:///PATH or s3://BUCKET[/ROOTDIRECTORY] "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION apply)",
    )
    group.add_argument(
        "--registry-config",
        metavar="FILE",
        help="the registry's config.yml: its storage.filesystem or storage.s3 section decides",
    )
    group.add_argument(
        "--storage-option",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="extra fsspec option (repeatable), e.g. client_kwargs are not credentials",
    )


def add_metadata_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster metadata")
    group.add_argument(
        "--metadata",
        default="kube",
        metavar="SRC",
        help="'kube' (default: the API through kubeconfig or in-cluster config) or a JSON/YAML "
        "dump from 'oc get images,imagestreams -A -o json', or a folder of dumps",
    )
    group.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: usual)")
    group.add_argument("--context", help="kubeconfig context")
    group.add_argument(
        "--page-size", type=int, default=500, help="objects per list request (default 500)"
    )


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
    try:
        return TaskRunnerSettings.choose(
            getattr(args, "task_runner", None), getattr(args, "dask_address", None)
        )
    except ValidationError as exc:
        raise UsageError(_validation_message(exc)) from exc


def storage_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for text in args.storage_option:
        key, value = parse_storage_option(text)
        options[key] = value
    return options


def check_storage_choice(args: argparse.Namespace) -> None:
    if bool(args.storage) == bool(args.registry_config):
        raise UsageError("give exactly one of --storage URL or --registry-config FILE")


def snapshot_source(args: argparse.Namespace) -> SnapshotSource:
    check_storage_choice(args)
    try:
        return SnapshotSource(
            storage=args.storage,
            registry_config=args.registry_config,
            storage_options=storage_options(args),
            metadata=args.metadata,
            kubeconfig=args.kubeconfig,
            context=args.context,
            page_size=args.page_size,
            shard_tasks=args.shards,
        )
    except ValidationError as exc:
        raise UsageError(_validation_message(exc)) from exc


FLAGS = {"shard_tasks": "--shards", "storage_options": "--storage-option"}


def _validation_message(exc: ValidationError) -> str:
    def flag(name: str) -> str:
        return FLAGS.get(name, "--" + name.replace("_", "-"))

    return "; ".join(
        f"{flag(str(error['loc'][0]))}: {error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors()
    )


def run_snapshot(args: argparse.Namespace) -> int:
    from regprune.flows.snapshot import snapshot_flow

    snapshot_flow(out=args.out, source=snapshot_source(args), warehouse=args.warehouse)
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


def duckdb_settings(args: argparse.Namespace) -> DuckDBSettings:
    try:
        return DuckDBSettings(memory_limit=args.memory_limit, temp_directory=args.temp_directory)
    except ValidationError as exc:
        raise UsageError(_validation_message(exc)) from exc


def run_prune(args: argparse.Namespace) -> int:
    from regprune.flows.prune import prune_flow

    for flag, value in (
        ("--keep-younger-than", args.keep_younger_than),
        ("--upload-max-age", args.upload_max_age),
    ):
        try:
            parse_duration(value)
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from exc
    if args.registry_token_file and not args.registry_url:
        raise UsageError("--registry-token-file goes with --registry-url")
    for flag, given in (("--force", args.force), ("--force-unlock", args.force_unlock)):
        if given and not (args.confirm or args.resume):
            raise UsageError(f"{flag} goes with --confirm or --resume")
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
            "source": snapshot_source(args) if given else None,
            "report": args.report,
            "resume": args.resume,
        }
    else:
        inputs = analysis_inputs(args)
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
        **inputs,
    )
    print(result["text"])
    print(f"Results: {result['run_dir']}")
    failed = result["summary"].get("failed", 0)
    return EXIT_FAILURE if failed else EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    from regprune.flows.check import check_flow

    if args.confirm and not args.recover:
        raise UsageError("--confirm goes with --recover: it creates the lost-found tags")
    if args.recover and args.confirm and args.metadata != "kube":
        raise UsageError(
            "--recover --confirm writes lost-found tags to the cluster: it needs --metadata "
            "kube (a dump cannot be recovered into)"
        )
    if not args.recover_rate > 0:
        raise UsageError("--recover-rate: requests per second must be positive")
    host = args.registry_host
    if host is not None and (not host or any(c in host for c in "/@ ")):
        raise UsageError(
            "--registry-host: a host[:port] such as "
            "image-registry.openshift-image-registry.svc:5000, without scheme or path"
        )
    inputs = analysis_inputs(args)
    if args.recover and inputs["source"] is None:  # --snapshot alone: the cluster to write to
        inputs["source"] = SnapshotSource(
            metadata=args.metadata,
            kubeconfig=args.kubeconfig,
            context=args.context,
            page_size=args.page_size,
        )
    result = check_flow(
        namespace=args.namespace,
        recover=args.recover,
        confirm=args.confirm,
        registry_host=host,
        recover_rate=args.recover_rate,
        warehouse=args.warehouse,
        **inputs,
    )
    print(result["text"])
    print(f"Results: {result['run_dir']}")
    return EXIT_FINDINGS if result["findings"] else EXIT_OK


def run_demo(args: argparse.Namespace) -> int:
    from regprune.flows.demo import demo_flow

    result = demo_flow(out=args.out, seed=args.seed)
    print(f"Demo registry: {result['storage']}  metadata: {result['metadata']}\n")
    print("== regprune prune (dry-run, grace period 24h)")
    print(result["prune"]["text"])
    print("\n== regprune check")
    print(result["check"]["text"])
    print("\n== against the generator's ground truth")
    print("\n".join(result["agreement"]))
    print(f"\nTables and results: {result['run_dir']} (query them with DuckDB, see README)")
    return EXIT_OK if all("matches" in line for line in result["agreement"]) else EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regprune",
        description="Keep an OpenShift integrated registry's storage and its image metadata "
        "consistent: snapshot, hard prune, check, recover.",
    )
    parser.add_argument("--version", action="version", version=f"regprune {tool_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    snapshot = commands.add_parser(
        "snapshot", help="write the storage and metadata tables as Parquet"
    )
    add_storage_arguments(snapshot)
    add_metadata_arguments(snapshot)
    add_run_arguments(snapshot)
    snapshot.add_argument("--out", required=True, metavar="DIR", help="folder for the tables")
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
        help="delete for real: execute the plan, re-verifying every object just before",
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
        "--registry-token-file", metavar="FILE", help="bearer token for --registry-url"
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
    from regprune.tasks.recovery import DEFAULT_RECOVER_RATE

    check.add_argument(
        "--recover-rate",
        type=float,
        default=DEFAULT_RECOVER_RATE,
        metavar="PER_SECOND",
        help=f"API requests per second while recovering (default {DEFAULT_RECOVER_RATE:g})",
    )
    check.set_defaults(run=run_check)

    demo = commands.add_parser(
        "demo", help="generate a demo registry with drift and run prune and check on it"
    )
    demo.add_argument("--out", default="regprune-demo", metavar="DIR", help="demo folder")
    demo.add_argument("--seed", type=int, default=0, help="generator seed")
    demo.set_defaults(run=run_demo)
    add_sql_parser(commands)
    from regprune.cli.prune_images import add_prune_images_parser

    add_prune_images_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        with use_task_runner(task_runner_settings(args)):
            return run(args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"regprune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (
        StorageConfigError,
        MetadataError,
        SnapshotError,
        FileNotFoundError,
        StorageLocked,
        UnsafePlan,
    ) as exc:
        print(f"regprune: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("regprune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the run's logs keep the traceback; the terminal gets one line
        if os.environ.get("REGPRUNE_DEBUG"):
            raise
        print(
            f"regprune: error: {type(exc).__name__}: {exc} (REGPRUNE_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

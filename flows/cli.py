"""The ``regprune`` command: a thin argparse layer over the flows.

Exit codes: 0 success (and, for ``check``, consistent), 1 failure, 2 bad usage,
3 ``check`` found broken references or lost-found candidates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from regprune.tasks.metadata import MetadataError
from regprune.tasks.storage import StorageConfigError, parse_storage_option
from regprune.tasks.version import tool_version

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
        "--shards", type=int, default=16, help="parallel storage walk tasks (default 16)"
    )


def storage_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for text in args.storage_option:
        key, value = parse_storage_option(text)
        options[key] = value
    return options


def check_storage_choice(args: argparse.Namespace) -> None:
    if bool(args.storage) == bool(args.registry_config):
        raise UsageError("give exactly one of --storage URL or --registry-config FILE")


def snapshot_parameters(args: argparse.Namespace, out: str) -> dict[str, Any]:
    check_storage_choice(args)
    if args.page_size < 1:
        raise UsageError("--page-size must be at least 1")
    if args.shards < 1:
        raise UsageError("--shards must be at least 1")
    return {
        "out": out,
        "storage": args.storage,
        "registry_config": args.registry_config,
        "storage_options": storage_options(args),
        "metadata": args.metadata,
        "kubeconfig": args.kubeconfig,
        "context": args.context,
        "page_size": args.page_size,
        "shard_tasks": args.shards,
    }


def run_snapshot(args: argparse.Namespace) -> int:
    from regprune.flows.snapshot import snapshot_flow

    snapshot_flow(**snapshot_parameters(args, args.out))
    return EXIT_OK


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"regprune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StorageConfigError, MetadataError) as exc:
        print(f"regprune: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("regprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

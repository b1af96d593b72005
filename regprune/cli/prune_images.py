"""``regprune prune-images``: ``oc adm prune images``' options, defaults and spellings, so a
CronJob's arguments carry over (``--keep-tag-revisions=3 --keep-younger-than=60m --confirm``,
Go-style booleans such as ``--all=false``)."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from regprune.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    _validation_message,
    add_metadata_arguments,
    add_storage_arguments,
    add_timeout_arguments,
    begin,
    check_duration,
    check_registry_url,
    duckdb_settings,
    finish,
    json_report,
    new_run_folder,
    ready,
    snapshot_source,
)

GO_TRUE = {"true", "t", "1", "yes"}
GO_FALSE = {"false", "f", "0", "no"}


def go_bool(text: str) -> bool:
    """A Go flag boolean: ``--all``, ``--all=true``, ``--all=false`` (also t/f, 1/0)."""
    value = text.strip().lower()
    if value in GO_TRUE:
        return True
    if value in GO_FALSE:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (true or false)")


def go_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _bool_flag(parser: argparse.ArgumentParser, flag: str, default: bool, help: str) -> None:
    parser.add_argument(
        flag, nargs="?", const=True, default=default, type=go_bool, metavar="BOOL", help=help
    )


def add_prune_images_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "prune-images",
        help="what 'oc adm prune images' removes (tag revisions, Images), planned in SQL; "
        "dry run unless --confirm",
        description="Plan what 'oc adm prune images' removes: tag revisions beyond "
        "--keep-tag-revisions and Images no remaining revision holds, older than "
        "--keep-younger-than and used by no workload. Same options and defaults as oc.",
    )
    add_metadata_arguments(parser)
    add_storage_arguments(parser)
    parser.add_argument(
        "--hard-prune-keep-younger-than",
        default="24h",
        metavar="DURATION",
        help="with --confirm and a storage: the grace period of the hard prune that deletes "
        "what the deleted Images freed (default 24h)",
    )
    parser.add_argument(
        "--registry-token-file",
        metavar="FILE",
        help="bearer token for --registry-url (default: the token of the cluster credentials, "
        "kubeconfig or in-cluster ServiceAccount, as oc adm prune images sends)",
    )
    parser.add_argument(
        "--keep-tag-revisions",
        type=go_int,
        metavar="N",
        help="revisions of every tag that are kept (default 3)",
    )
    parser.add_argument(
        "--keep-younger-than",
        metavar="DURATION",
        help="nothing created less than this before the listing is removed (default 60m)",
    )
    _bool_flag(
        parser,
        "--prune-over-size-limit",
        False,
        "remove only revisions whose Image exceeds its namespace's openshift.io/Image "
        "LimitRange (not with the two keep options)",
    )
    _bool_flag(parser, "--all", True, "also prune Images not managed by OpenShift (default true)")
    parser.add_argument(
        "-n", "--namespace", metavar="NS", help="prune this namespace's streams; no Image deleted"
    )
    _bool_flag(
        parser,
        "--ignore-invalid-refs",
        False,
        "skip workload references that do not parse instead of refusing",
    )
    _bool_flag(parser, "--confirm", False, "remove for real (default: dry run)")
    _bool_flag(
        parser,
        "--prune-registry",
        True,
        "accepted for oc's CronJob arguments: storage is freed by 'regprune prune' afterwards",
    )
    parser.add_argument(
        "--registry-url",
        metavar="URL",
        help="the running registry: the hard prune removes layer links through it (clearing "
        "its cache)",
    )
    for flag in ("--certificate-authority", "--num-workers"):
        parser.add_argument(flag, metavar="VALUE", help="accepted for oc's CronJob arguments")
    _bool_flag(parser, "--force-insecure", False, "accepted for oc's CronJob arguments")
    parser.add_argument(
        "--snapshot", metavar="DIR", help="plan over this prune-images snapshot folder"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the tables and results (default regprune-runs/prune-images-<time>)",
    )
    parser.add_argument("--report", metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--memory-limit", metavar="SIZE", help="DuckDB memory limit, e.g. 2GB")
    parser.add_argument("--temp-directory", metavar="DIR", help="DuckDB spill folder")
    add_timeout_arguments(parser)
    parser.set_defaults(run=run_prune_images)


def run_prune_images(args: argparse.Namespace) -> int:
    from regprune.images_plan import PruneImagesSettings
    from regprune.metadata import MetadataSource

    if args.keep_younger_than is not None:
        check_duration("--keep-younger-than", args.keep_younger_than)
    check_duration("--hard-prune-keep-younger-than", args.hard_prune_keep_younger_than)
    check_registry_url(args.registry_url)
    if args.keep_tag_revisions is not None and args.keep_tag_revisions < 0:
        raise UsageError("--keep-tag-revisions must be greater than or equal to 0")
    if args.snapshot and args.out:
        raise UsageError("--out goes with a new snapshot, not with --snapshot")
    try:
        settings = PruneImagesSettings(
            keep_tag_revisions=args.keep_tag_revisions,
            keep_younger_than=args.keep_younger_than,
            prune_over_size_limit=args.prune_over_size_limit,
            all_images=args.all,
            namespace=args.namespace,
            ignore_invalid_refs=args.ignore_invalid_refs,
        )
    except ValidationError as exc:
        if all(error["loc"] for error in exc.errors()):
            raise UsageError(_validation_message(exc)) from exc
        message = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise UsageError(message) from exc
    hard_prune = None
    if args.storage or args.registry_config:
        if not args.confirm:
            raise UsageError("a storage goes with --confirm: it is where freed blobs are deleted")
        if not args.prune_registry:
            raise UsageError("--prune-registry=false: give no storage, nothing is deleted there")
        args.shards = None
        hard_prune = snapshot_source(args)
    metadata = MetadataSource(
        args.metadata, kubeconfig=args.kubeconfig, context=args.context, page_size=args.page_size
    )
    # the run folder: a new snapshot's, or the one planned again; its regprune.log takes
    # Prefect's log lines, as every command's does
    run_dir = args.snapshot or args.out or new_run_folder("prune-images")
    inputs = {"report": args.report}
    json_report(args, inputs, run_dir)
    begin(args, run_dir)
    from regprune.flows.prune_images import prune_images_flow

    ready(args)
    result = prune_images_flow(
        settings=settings,
        metadata=metadata,
        snapshot=args.snapshot,
        out=None if args.snapshot else run_dir,
        report=inputs["report"],
        confirm=args.confirm,
        duckdb=duckdb_settings(args),
        hard_prune=hard_prune,
        hard_prune_keep_younger_than=args.hard_prune_keep_younger_than,
        registry_url=args.registry_url,
        registry_token_file=args.registry_token_file,
    )
    finish(args, inputs, result)
    return EXIT_FAILURE if result.failed else EXIT_OK  # the hard prune's failures

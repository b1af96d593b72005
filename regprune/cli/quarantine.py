"""``regprune undo RUN`` and ``regprune purge RUN | --older-than DURATION``: the quarantine
of the two-phase delete, put back or emptied (docs/safety.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from regprune.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    _validation_message,
    add_output_arguments,
    add_storage_arguments,
    add_timeout_arguments,
    begin,
    check_duration,
    new_run_folder,
    print_json,
    ready,
    say,
    storage_options,
)


def add_quarantine_parsers(commands: Any) -> None:
    undo = commands.add_parser(
        "undo",
        help="put back what a confirmed run removed (its quarantine; a nightly GC's or "
        "prune-images' parts too)",
        description="Move everything the confirmed run RUN quarantined back where it was "
        "(a key that exists again with other bytes is left and named). The storage is then "
        "what it was before the run. A purged quarantine cannot be undone.",
    )
    undo.add_argument("run_dir", metavar="RUN", help="the run folder of the confirmed run")
    add_storage_arguments(undo)
    undo.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: usual)")
    undo.add_argument("--context", help="kubeconfig context")
    undo.add_argument(
        "--force-unlock",
        action="store_true",
        help="remove the storage's lock (_regprune/lock) left by a run that died elsewhere",
    )
    add_timeout_arguments(undo)
    add_output_arguments(undo)
    undo.set_defaults(run=run_undo)

    purge = commands.add_parser(
        "purge",
        help="empty a quarantine before a confirmed prune would (after the same re-check); "
        "dry run unless --confirm",
        description="Purge the quarantine of the confirmed run RUN, or every quarantine "
        "older than --older-than, after re-checking it against the registry as it is now "
        "(what gained a reference is moved back first). Takes a snapshot first.",
    )
    purge.add_argument("run_dir", metavar="RUN", nargs="?", help="the run folder of the prune")
    purge.add_argument(
        "--older-than", metavar="DURATION", help="purge every quarantine at least this old"
    )
    add_storage_arguments(purge)
    purge.add_argument(
        "--metadata",
        metavar="SRC",
        help="'kube' or a dump, as for prune (default: what RUN's snapshot read, else kube)",
    )
    purge.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: usual)")
    purge.add_argument("--context", help="kubeconfig context")
    purge.add_argument(
        "--out", metavar="DIR", help="folder for this run (default: regprune-runs/purge-<time>)"
    )
    purge.add_argument("--confirm", action="store_true", help="purge for real")
    purge.add_argument(
        "--force-unlock",
        action="store_true",
        help="remove the storage's lock (_regprune/lock) left by a run that died elsewhere",
    )
    add_timeout_arguments(purge)
    add_output_arguments(purge)
    purge.set_defaults(run=run_purge)


def _storage_source(args: argparse.Namespace, recorded: str | None) -> Any:
    """The storage given (--storage, --registry-config), else the one the run recorded, as
    a SnapshotSource (no credentials: flow parameters are stored); None when neither."""
    from pydantic import ValidationError

    from regprune.snapshots import SnapshotSource
    from regprune.storage import CREDENTIALS_ELSEWHERE, url_holds_credentials

    if args.storage and args.registry_config:
        raise UsageError("give at most one of --storage URL or --registry-config FILE")
    if url_holds_credentials(args.storage):
        raise UsageError(f"--storage holds a user or password in its URL; {CREDENTIALS_ELSEWHERE}")
    if not (args.storage or args.registry_config or recorded):
        return None
    try:
        source = SnapshotSource(
            storage=args.storage or (None if args.registry_config else recorded),
            registry_config=args.registry_config,
            storage_options=storage_options(args),
            metadata=getattr(args, "metadata", None) or "kube",
            kubeconfig=args.kubeconfig,
            context=args.context,
        )
    except ValidationError as exc:
        raise UsageError(_validation_message(exc)) from exc
    args.storage_to_check = source  # begin(): the registry config parsed, a folder a folder
    return source


def _run_folder(path: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{path} is not a run folder")
    return folder


def run_undo(args: argparse.Namespace) -> int:
    folder = _run_folder(args.run_dir)
    source = _storage_source(args, None)
    begin(args, folder)
    from regprune.flows.undo import UndoContext, undo_flow

    ready(args)
    context = UndoContext(
        source=source,
        kubeconfig=args.kubeconfig,
        context=args.context,
        force_unlock=args.force_unlock,
    )
    result = undo_flow(run_dir=str(folder), context=context)
    if args.output_mode.json:
        print_json({"run_dir": result.run_dir, "parts": result.parts, "failed": result.failed})
    say(args, result.text)
    return EXIT_FAILURE if result.failed else EXIT_OK


def run_purge(args: argparse.Namespace) -> int:
    from regprune.snapshots import read_snapshot_summary
    from regprune.twophase import QUARANTINE_FILE, read_quarantine_record

    if bool(args.run_dir) == bool(args.older_than):
        raise UsageError("give a run folder or --older-than DURATION (one of them)")
    if args.older_than:
        check_duration("--older-than", args.older_than)
    recorded: dict[str, Any] = {}
    storage = None
    if args.run_dir:
        folder = _run_folder(args.run_dir)
        quarantine = read_quarantine_record(folder)  # damaged: QuarantineError, exit 1
        if quarantine is None:
            raise UsageError(f"{args.run_dir} quarantined nothing (no {QUARANTINE_FILE})")
        recorded = read_snapshot_summary(folder).get("metadata_source") or {}
        if not isinstance(recorded, dict):  # an edited snapshot.json: not what it read
            recorded = {}
        storage = quarantine["storage"]
    args.metadata = args.metadata or recorded.get("source") or "kube"
    args.kubeconfig = args.kubeconfig or recorded.get("kubeconfig")
    args.context = args.context or recorded.get("context")
    source = _storage_source(args, storage)
    if source is None:
        raise UsageError("--older-than needs the storage: --storage URL or --registry-config")
    run = args.run_dir
    out = args.out or new_run_folder("purge")
    begin(args, out)
    from regprune.flows.purge import purge_flow

    ready(args)
    result = purge_flow(
        source=source,
        run=run,
        older_than=args.older_than,
        out=out,
        confirm=args.confirm,
        force_unlock=args.force_unlock,
    )
    if args.output_mode.json:
        print_json({"run_dir": result.run_dir, **result.summary, "failed": result.failed})
    say(args, result.text)
    say(args, f"Results: {result.run_dir}")
    return EXIT_FAILURE if result.failed else EXIT_OK

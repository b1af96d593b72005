"""What every ``regprune`` subcommand shares: exit codes, usage errors, the common options
(storage, metadata, network limits, output) and the steps of a run (``begin``, ``ready``,
``finish``). ``main`` imports the subcommands' modules (prune_images, quarantine, sql) to build
the parser; they import this module, never ``main``: no cycle through the command line."""

from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regprune import progress, timeouts
from regprune.cli.output import LOG_FILE, START_SERVER_HINT

if TYPE_CHECKING:
    from pydantic import ValidationError

    from regprune.models import DuckDBSettings
    from regprune.results import RunResult
    from regprune.snapshots import SnapshotSource

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_FINDINGS = 0, 1, 2, 3
EXIT_MEANING = {
    EXIT_FAILURE: "exit 1: the run failed",
    EXIT_USAGE: "exit 2: bad usage",
}


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("storage (one of)")
    group.add_argument(
        "--storage",
        metavar="URL",
        help="the registry's storage: a folder (PATH, file:///PATH: its rootdirectory), "
        "s3://BUCKET[/ROOT], gs://BUCKET[/ROOT], az://CONTAINER[/ROOT] or "
        "swift://CONTAINER[/PREFIX]; "
        "credentials from each service's usual environment (docs/storage.md)",
    )
    group.add_argument(
        "--registry-config",
        metavar="FILE",
        help="the registry's config.yml: its storage section (filesystem, s3, gcs, azure or swift) "
        "decides, with the registry's REGISTRY_STORAGE_* environment overrides",
    )
    group.add_argument(
        "--storage-option",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="extra option of the storage's client (repeatable; a value in {} or [] is JSON), "
        'e.g. client_kwargs={"region_name": "eu-west-1"}; never credentials: those come '
        "from the storage's environment (options are stored with the flow run)",
    )


def add_timeout_arguments(parser: argparse.ArgumentParser) -> None:
    """--connect-timeout, --read-timeout, --request-timeout (regprune/timeouts.py)."""
    group = parser.add_argument_group("network limits (docs/limits.md)")
    for timeout in timeouts.ALL:
        group.add_argument(
            timeout.flag,
            metavar="DURATION",
            help=f"{timeout.help} (default ${timeout.env}, else {timeout.default})",
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


def storage_options(args: argparse.Namespace) -> dict[str, Any]:
    from regprune.storage import StorageConfigError, parse_storage_option

    options: dict[str, Any] = {}
    for text in args.storage_option:
        try:
            key, value = parse_storage_option(text)
        except StorageConfigError as exc:
            raise UsageError(str(exc)) from exc
        options[key] = value
    return options


def check_storage_choice(args: argparse.Namespace) -> None:
    if bool(args.storage) == bool(args.registry_config):
        raise UsageError("give exactly one of --storage URL or --registry-config FILE")


def snapshot_source(args: argparse.Namespace) -> SnapshotSource:
    from pydantic import ValidationError

    from regprune.snapshots import SnapshotSource
    from regprune.storage import CREDENTIALS_ELSEWHERE, url_holds_credentials

    check_storage_choice(args)
    if url_holds_credentials(args.storage):
        raise UsageError(f"--storage holds a user or password in its URL; {CREDENTIALS_ELSEWHERE}")
    try:
        source = SnapshotSource(
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
    args.storage_to_check = source
    return source


def check_storage_now(source: SnapshotSource) -> None:
    """What can be checked before a Prefect server starts: the registry config parses as
    the registry parses it, and a local storage is a folder (a failed run's one line)."""
    from regprune.storage import LocalStorage

    spec = source.storage_spec()  # reads --registry-config: StorageConfigError, exit 1
    if spec.scheme == "file":
        LocalStorage(spec).check_root()


def check_registry_url(url: str | None) -> None:
    """--registry-url: an http(s) URL without credentials (flow parameters are stored)."""
    from urllib.parse import urlparse

    from regprune.storage import url_holds_credentials

    if url is None:
        return
    if url_holds_credentials(url):
        raise UsageError(
            "--registry-url holds a user or password, which would be stored with the flow "
            "run: put the registry's bearer token in a file and pass --registry-token-file FILE"
        )
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018  (a port that is no number raises)
    except ValueError as exc:
        raise UsageError(f"--registry-url: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError("--registry-url: expected http://HOST[:PORT] or https://HOST[:PORT]")


def check_duration(flag: str, value: Any) -> None:
    from regprune.units import parse_duration

    try:
        parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from exc


FLAGS = {"shard_tasks": "--shards", "storage_options": "--storage-option"}


def flag_or_env(flag: str, env: str, value: Any) -> str:
    """What a bad value is named by: the environment variable that gave the option's
    default (a deployment's choice, not the command line's), else the option."""
    return f"${env} (the default of {flag})" if value and value == os.environ.get(env) else flag


def _validation_message(exc: ValidationError) -> str:
    def flag(name: str) -> str:
        return FLAGS.get(name, "--" + name.replace("_", "-"))

    return "; ".join(
        f"{flag(str(error['loc'][0]))}: {error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors()
    )


def new_run_folder(kind: str) -> str:
    from regprune.snapshots import new_run_folder as folder

    return folder(kind)


def begin(args: argparse.Namespace, run_dir: str | Path) -> None:
    """The command line is valid: the storage is checked as far as it can be here, the
    run's log file, and a Prefect server if none runs (started in the background while the
    flows are imported; see :func:`ready`)."""
    from prefect.settings import PREFECT_API_URL

    from regprune.cli.output import configure_logging

    source = getattr(args, "storage_to_check", None)
    if source is not None:
        check_storage_now(source)

    args.run_folder = str(run_dir)  # not run_dir: undo's and purge's RUN is the run they act on
    args.log_file = Path(run_dir) / LOG_FILE
    args.undo_logging = configure_logging(args.output_mode, args.log_file)
    if args.api_url:
        progress.phase(f"Prefect server: {args.api_url.removesuffix('/api')}")
    elif not PREFECT_API_URL.value():
        progress.phase(
            "Starting a temporary Prefect server (seconds; a minute on the first run). "
            + START_SERVER_HINT
        )
        args.server_start = ServerStart()


def ready(args: argparse.Namespace) -> None:
    """Just before the first flow runs: the Prefect server answers."""
    server: ServerStart | None = getattr(args, "server_start", None)
    if server is not None:
        server.wait()


def say(args: argparse.Namespace, text: str) -> None:
    """A line of the result for a person (not with --quiet or --output json)."""
    if args.output_mode.human:
        print(text, flush=True)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str), flush=True)


def duckdb_settings(args: argparse.Namespace) -> DuckDBSettings:
    from pydantic import ValidationError

    from regprune.models import DuckDBSettings

    try:
        return DuckDBSettings(memory_limit=args.memory_limit, temp_directory=args.temp_directory)
    except ValidationError as exc:
        raise UsageError(_validation_message(exc)) from exc


def json_report(args: argparse.Namespace, inputs: dict[str, Any], run_dir: str) -> None:
    """With --output json the report JSON is printed: written to the run folder if no
    --report names a file."""
    if args.output_mode.json and not inputs.get("report"):
        inputs["report"] = str(Path(run_dir) / "report.json")


def finish(args: argparse.Namespace, inputs: dict[str, Any], result: RunResult) -> None:
    if args.output_mode.json:
        print(Path(inputs["report"]).read_text(), end="", flush=True)
    say(args, result.text)
    say(args, f"Results: {result.run_dir}")


class ServerStart:
    """Prefect's temporary server, started in a thread while the command imports the flows
    (both take seconds); :meth:`wait` before the first flow runs."""

    def __init__(self) -> None:
        # imported here, in the main thread: two threads importing Prefect at once can meet
        # its circular imports half done
        from prefect.server.api.server import SubprocessASGIServer

        self.server = SubprocessASGIServer()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._start, name="prefect-server", daemon=True)
        self.thread.start()

    def _start(self) -> None:
        try:
            self.server.start()
        except BaseException as exc:  # raised again in wait(), in the main thread
            self.error = exc

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def add_output_arguments(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """-v, -q, --debug, --output: accepted before and after the command's name."""
    default: Any = {} if top else {"default": argparse.SUPPRESS}
    group = parser.add_argument_group("output")
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also stream Prefect's log lines (stderr); they always go to the run folder's "
        f"{LOG_FILE}",
        **default,
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="nothing on stdout: the exit code tells",
        **default,
    )
    group.add_argument(
        "--debug",
        action="store_true",
        help="tracebacks with errors (also REGPRUNE_DEBUG=1)",
        **default,
    )
    group.add_argument(
        "--output",
        choices=("text", "json"),
        help="'json': the report JSON (snapshot: snapshot.json) alone on stdout",
        **({"default": "text"} if top else default),
    )

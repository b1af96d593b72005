"""The command line's output contract, through the real command (a subprocess).

stdout: phase lines, progress and the summary (``--output json``: the report alone;
``--quiet``: nothing); stderr: warnings and one error line, with a traceback only with
``--debug``; Prefect's log lines in the run folder's ``regprune.log`` (and on stderr with
``-v``); exit codes 0 / 1 / 2 / 3 as docs/getting-started.md says. The flows report to the session's
Prefect test server (``PREFECT_API_URL``), so no command starts a server of its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from regprune import progress
from regprune.cli.output import LineDisplay, Output, server_listening
from regprune.demo.synthetic import SyntheticSpec, generate, load_truth
from tests.harness.openshift_api import OpenShiftAPIServer
from tests.harness.registry_bench import free_port

PREFECT_LOG_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} \| (INFO|WARNING|ERROR|DEBUG)")
SHORT_BACKOFF = (
    "import sys; from regprune import metadata; "
    "metadata.RETRY_BASE_SECONDS = 0.01; metadata.RETRY_MAX_SECONDS = 0.02; "
    "from regprune.cli.main import main; sys.exit(main())"
)


def command_env(**extra: str) -> dict[str, str]:
    """The user's environment plus the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("REGPRUNE_")}
    env.pop("PREFECT_LOGGING_LEVEL", None)  # the tests' WARNING: the log holds INFO as usual
    env.update(PREFECT_API_URL=str(PREFECT_API_URL.value()), COLUMNS="200", **extra)
    return env


def regprune(
    *args: str, cwd: Path | None = None, code: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``regprune ARGS`` as a user runs it (``code``: the same main() with a patch first)."""
    start = ["-c", code] if code else ["-m", "regprune.cli.main"]
    return subprocess.run(
        [sys.executable, *start, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=command_env(**env),
        timeout=300,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The demo registry (every kind of drift), its metadata dump and truth, once per module."""
    folder = tmp_path_factory.mktemp("demo")
    paths = {name: str(folder / name) for name in ("registry", "metadata.json", "truth.json")}
    generate(paths["registry"], SyntheticSpec.demo(0), paths["metadata.json"], paths["truth.json"])
    return {
        "storage": paths["registry"],
        "metadata": paths["metadata.json"],
        "truth": paths["truth.json"],
    }


def orphan_blobs(demo: dict[str, str]) -> int:
    """The blobs a default dry run would delete: the truth's, with the spec's 24h grace."""
    return len(load_truth(demo["truth"]).prune_grace.orphan_blobs)


def prune_args(demo: dict[str, str], out: Path) -> list[str]:
    return [
        "prune",
        "--storage",
        demo["storage"],
        "--metadata",
        demo["metadata"],
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def before_default_run() -> datetime:
    """When the default run began: its flow runs are those the Prefect server has since."""
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def default_run(
    prefect_server: None,
    demo: dict[str, str],
    before_default_run: datetime,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("runs") / "default"
    return regprune(*prune_args(demo, out)), out


# --- through the real command ------------------------------------------------------------


@pytest.mark.slow
def test_default_output_is_phases_progress_and_summary(
    demo: dict[str, str], default_run: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    result, out = default_run
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for phase in ("Reading the metadata dump", "Walking ", "Planning the hard prune"):
        assert any(line.startswith(phase) for line in lines), (phase, result.stdout)
    # a progress summary of the walk: objects, bytes, rate, elapsed
    assert re.search(
        r"^  [\d,]+ objects, [\d.]+ [KM]?i?B, [\d,]+/s, [\d.]+s elapsed", result.stdout, re.M
    )
    assert f"Would delete {orphan_blobs(demo)} blobs" in lines
    assert f"Results: {out}" in lines
    assert not PREFECT_LOG_LINE.search(result.stdout), result.stdout
    assert result.stderr == ""
    log = (out / "regprune.log").read_text()
    assert "Finished in state Completed()" in log
    assert "Task run 'walk-blob-shard" in log


@pytest.mark.slow
def test_progress_reaches_the_prefect_ui_as_artifacts(
    default_run: tuple[subprocess.CompletedProcess[str], Path],
    before_default_run: datetime,
) -> None:
    from tests.harness.prefect_runs import artifacts_of, flow_runs_started_since

    assert default_run[0].returncode == 0
    keys = ["regprune-walk-progress", "regprune-manifests-progress"]
    artifacts = artifacts_of(flow_runs_started_since(before_default_run), keys)
    assert {a.key for a in artifacts} == {"regprune-walk-progress", "regprune-manifests-progress"}
    walks = [a for a in artifacts if a.key == "regprune-walk-progress"]
    assert all(a.type == "progress" and a.data == 100 for a in walks), walks
    assert any("objects" in (a.description or "") for a in walks)


@pytest.mark.slow
def test_verbose_streams_prefect_logs_on_stderr_and_keeps_stdout_clean(
    prefect_server: None,
    demo: dict[str, str],
    default_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, earlier = default_run
    result = regprune(*prune_args(demo, earlier.parent / "verbose"), "-v")
    assert result.returncode == 0, result.stderr
    # the walk is estimated from the earlier snapshot of the same storage beside it
    assert re.search(r"^  [\d,]+ of ~[\d,]+ objects, ", result.stdout, re.M), result.stdout
    assert PREFECT_LOG_LINE.search(result.stderr)
    assert "Finished in state Completed()" in result.stderr
    assert f"Would delete {orphan_blobs(demo)} blobs" in result.stdout.splitlines()
    assert not PREFECT_LOG_LINE.search(result.stdout)


@pytest.mark.slow
def test_quiet_says_nothing_and_json_prints_the_report_alone(
    prefect_server: None,
    demo: dict[str, str],
    default_run: tuple[subprocess.CompletedProcess[str], Path],
    tmp_path: Path,
) -> None:
    quiet = regprune(*prune_args(demo, tmp_path / "quiet"), "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")

    _, snapshot = default_run
    checked = regprune("check", "--snapshot", str(snapshot), "--output", "json")
    assert checked.returncode == 3, checked.stderr  # the demo has broken tags: findings
    report = json.loads(checked.stdout)  # nothing but the report on stdout
    assert report["broken_imagestream_tags"] and report["lost_found"]
    assert checked.stderr == ""

    pruned = regprune("prune", "--snapshot", str(snapshot), "--output", "json")
    assert pruned.returncode == 0, pruned.stderr
    plan = json.loads(pruned.stdout)
    assert plan["mode"] == "dry-run"
    assert plan["summary"]["blobs"]["delete"] == orphan_blobs(demo)


@pytest.mark.slow
def test_a_failing_run_prints_one_error_line_and_a_traceback_only_with_debug(
    prefect_server: None, openshift_api: OpenShiftAPIServer, demo: dict[str, str], tmp_path: Path
) -> None:
    """The cluster API answers 500 while listing: one line naming it and the exit code."""
    openshift_api.inject("GET", r"/images$", status=500, times=None)
    kubeconfig = str(openshift_api.kubeconfig(tmp_path / "kubeconfig"))
    args = ["snapshot", "--storage", demo["storage"], "--kubeconfig", kubeconfig]

    failed = regprune(*args, "--out", str(tmp_path / "a"), code=SHORT_BACKOFF)
    assert failed.returncode == 1
    lines = failed.stderr.splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("regprune: error: cannot list images.image.openshift.io: HTTP 500")
    assert "exit 1: the run failed" in lines[0]
    assert f"log: {tmp_path / 'a' / 'regprune.log'}" in lines[0]
    assert "Traceback" not in failed.stderr
    assert "Traceback" in (tmp_path / "a" / "regprune.log").read_text()  # kept for later

    debug = regprune(*args, "--out", str(tmp_path / "b"), "--debug", code=SHORT_BACKOFF)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("regprune: error: cannot list")
    assert not PREFECT_LOG_LINE.search(debug.stderr)  # tracebacks, not Prefect's log


def test_bad_usage_exits_2_with_the_usage(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "regprune.cli.main",
            "prune",
            "--storage",
            str(tmp_path),
            "--registry-config",
            "config.yml",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("usage: regprune")
    assert "regprune: error: give exactly one of --storage URL or --registry-config FILE" in (
        result.stderr
    )
    assert result.stdout == ""


@pytest.mark.slow
def test_snapshot_needs_no_out_and_sql_stops_quietly_on_a_closed_pipe(
    prefect_server: None, demo: dict[str, str], tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse"
    result = regprune(
        "snapshot",
        "--storage",
        demo["storage"],
        "--metadata",
        demo["metadata"],
        "--warehouse",
        str(warehouse),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "regprune-runs").glob("snapshot-*"))
    assert len(runs) == 1 and (runs[0] / "snapshot.json").exists()
    assert any(line.startswith("Snapshot of ") for line in result.stdout.splitlines())

    piped = subprocess.run(
        [
            "bash",
            "-c",
            'set -o pipefail; "$0" -m regprune.cli.main sql --warehouse "$1" '
            '"SELECT * FROM range(200000)" | head -n 2',
            sys.executable,
            str(warehouse),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=command_env(),
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    assert piped.stdout.splitlines()[0].strip() == "range"


# --- the pieces, in this process -----------------------------------------------------------


def test_prepare_environment_turns_telemetry_off_unless_the_profile_says_otherwise(
    tmp_path: Path,
) -> None:
    probe = (
        "import os; from regprune.cli.output import prepare_environment; prepare_environment(); "
        "print(os.environ.get('PREFECT_SERVER_ANALYTICS_ENABLED'))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DO_NOT"))}
    env.update(PREFECT_HOME=str(tmp_path), PREFECT_SERVER_API_PORT=str(free_port()))

    def analytics() -> str:
        run = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        return run.stdout.strip()

    assert analytics() == "false"
    (tmp_path / "profiles.toml").write_text(
        'active = "mine"\n[profiles.mine]\nPREFECT_SERVER_ANALYTICS_ENABLED = "true"\n'
    )
    assert analytics() == "None"  # left to the profile, which Prefect reads itself


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/api/health"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"true" if ok else b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_prefect_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Health)
    # stop() waits for the serving loop's next check: 10 ms, not serve_forever's 0.5 s
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_running_local_server_is_found_and_used(fake_prefect_server: int, tmp_path: Path) -> None:
    assert server_listening("127.0.0.1", fake_prefect_server)
    assert not server_listening("127.0.0.1", free_port())
    probe = (
        "import os; from regprune.cli.output import prepare_environment; "
        "print(prepare_environment(), os.environ.get('PREFECT_API_URL'))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path), PREFECT_SERVER_API_PORT=str(fake_prefect_server))
    run = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    url = f"http://127.0.0.1:{fake_prefect_server}/api"
    assert run.stdout.split() == [url, url]


def test_progress_counts_across_threads_and_is_a_no_op_without_an_activity() -> None:
    progress.advance("nothing-open", 5, 5)  # a Dask worker: no activity, no error
    with progress.activity("count", "Counting", expected=8000, unit="things") as counting:
        workers = [
            threading.Thread(target=lambda: [progress.advance("count", 1, 10) for _ in range(1000)])
            for _ in range(8)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert counting.fraction == 1.0
    assert (counting.objects, counting.nbytes) == (8000, 80000)
    assert counting.describe().startswith("8,000 of 8,000 things, 78.1 KiB, ")
    progress.advance("count", 1)  # closed: ignored
    assert counting.objects == 8000


def test_plain_progress_lines_come_periodically_and_at_the_end(tmp_path: Path) -> None:
    out, err = (tmp_path / "out").open("w+"), (tmp_path / "err").open("w+")
    display = LineDisplay(out, err, interval=3600)  # the ticker's rounds are driven here
    progress.attach(display)
    try:
        progress.expect("walk", 400)
        with progress.activity("walk", "Walking somewhere") as walking:
            for _ in range(4):
                progress.advance("walk", 50, 1024)
                display.tick()
            assert walking.remaining is not None
        progress.warning("something to read")
    finally:
        progress.attach(None)
        progress.expect("walk", None)
    out.seek(0)
    err.seek(0)
    lines = out.read().splitlines()
    assert lines[0] == "Walking somewhere"
    periodic = [line for line in lines if line.startswith("  Walking somewhere: ")]
    assert len(periodic) == 4, lines
    assert "of ~400 objects" in periodic[0] and "left" in periodic[-1]
    assert re.fullmatch(r"  200 of ~400 objects, 4\.0 KiB, [\d,]+/s, [\d.]+s elapsed", lines[-1])
    assert err.read() == "regprune: warning: something to read\n"


def test_the_progress_ticker_writes_while_a_step_is_open(tmp_path: Path) -> None:
    """The ticker's thread drives the rounds (waited for, not timed: a loaded machine)."""
    out, err = (tmp_path / "out").open("w+"), (tmp_path / "err").open("w+")
    display = LineDisplay(out, err, interval=0.01)
    display.started(progress.Activity("walk", "Walking somewhere"))
    try:
        deadline = time.monotonic() + 30
        while "  Walking somewhere: " not in (tmp_path / "out").read_text():
            assert time.monotonic() < deadline, "no periodic line in 30 s"
            time.sleep(0.01)
    finally:
        display.close()


def test_the_progress_ticker_ends_with_the_display(tmp_path: Path) -> None:
    """A command run in-process (a worker, the tests) leaves no thread that writes on."""
    out, err = (tmp_path / "out").open("w+"), (tmp_path / "err").open("w+")
    display = LineDisplay(out, err, interval=3600)
    display.started(progress.Activity("walk", "Walking somewhere"))
    assert display.ticker is not None and display.ticker.is_alive()
    display.close()
    display.ticker.join(timeout=10)
    assert not display.ticker.is_alive()


def test_output_modes() -> None:
    assert Output().human and not Output(quiet=True).human and not Output(json=True).human


def test_the_help_default_recover_rate_is_the_recovery_default() -> None:
    from regprune.cli.main import DEFAULT_RECOVER_RATE
    from regprune.recovery import DEFAULT_RECOVER_RATE as used

    assert used == DEFAULT_RECOVER_RATE

"""What the command line shows a person, and what it keeps out of their way.

stdout: one line per phase, progress, the summary (or, with ``--output json``, the report
JSON alone; with ``--quiet`` nothing). stderr: warnings and one error line. Prefect's log
lines go to the run folder's ``regprune.log`` and to the Prefect API; ``--verbose`` also
streams them to stderr.

Everything that must hold before Prefect is imported (telemetry, a running local server,
the temporary server's start-up timeout) is set by :func:`prepare_environment`, which imports
nothing heavy: ``regprune --help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from regprune import progress

LOG_FILE = "regprune.log"
DEFAULT_SERVER = ("127.0.0.1", 4200)
PLAIN_INTERVAL = float(os.environ.get("REGPRUNE_PROGRESS_INTERVAL", "10"))
"""Seconds between progress lines when stdout is not a terminal."""
START_SERVER_HINT = (
    "`prefect server start --background` keeps a local server running: later commands use it "
    "and start at once (the UI at http://127.0.0.1:4200)"
)


@dataclass(frozen=True)
class Output:
    """How much the command says, and where."""

    verbose: bool = False
    quiet: bool = False
    json: bool = False
    debug: bool = False

    @property
    def human(self) -> bool:
        """Phase lines, progress and the summary on stdout."""
        return not (self.quiet or self.json)


def profile_settings() -> dict[str, Any]:
    """The active Prefect profile's settings, read without importing Prefect."""
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    name = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    profile = data.get("profiles", {}).get(name, {})
    return profile if isinstance(profile, dict) else {}


def _configured(name: str, profile: dict[str, Any]) -> bool:
    return name in os.environ or name in profile


def server_listening(host: str, port: int, timeout: float = 0.5, answer_within: float = 8) -> bool:
    """A Prefect API answers on host:port: a connect (refused at once where nothing listens),
    then its health endpoint (a busy server may take seconds: starting another takes more)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(answer_within)
            conn.sendall(f"GET /api/health HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            answer = conn.recv(64)
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.") and b" 200" in answer[:16]


def prepare_environment() -> str | None:
    """Set up Prefect for a command-line run; return the API URL of a running local server
    found (None: Prefect will start a temporary one, or the user named a server).

    - telemetry off (``PREFECT_SERVER_ANALYTICS_ENABLED``, ``DO_NOT_TRACK``) unless the user's
      environment or Prefect profile says otherwise: a command-line run on a machine without
      internet otherwise logs an ERROR about a telemetry server;
    - a server already running on ``PREFECT_SERVER_API_HOST``/``PORT`` (127.0.0.1:4200 by
      default, as ``prefect server start`` listens) is used instead of starting another;
    - the temporary server's start-up may take longer than Prefect's 20 s on a busy machine
      when its database is created (a first run): 120 s unless set.
    """
    if "prefect" in sys.modules:  # called in a process whose Prefect is set up (tests): as is
        return None
    profile = profile_settings()
    if not _configured("PREFECT_SERVER_ANALYTICS_ENABLED", profile):
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if not _configured("DO_NOT_TRACK", profile):
        os.environ["DO_NOT_TRACK"] = "1"
    if not _configured("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", profile):
        os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    if _configured("PREFECT_API_URL", profile):
        return None
    host = str(
        os.environ.get("PREFECT_SERVER_API_HOST")
        or profile.get("PREFECT_SERVER_API_HOST")
        or DEFAULT_SERVER[0]
    )
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    port = int(
        os.environ.get("PREFECT_SERVER_API_PORT")
        or profile.get("PREFECT_SERVER_API_PORT")
        or DEFAULT_SERVER[1]
    )
    if server_listening(host, port):
        url = f"http://{host}:{port}/api"
        os.environ["PREFECT_API_URL"] = url
        return url
    return None


class RunLogHandler(logging.FileHandler):
    """The run folder's log file. A record it cannot write (a full disk) is dropped
    without a word: Python's default prints a traceback on stderr for every record, which
    drowned a full disk's one error line in thousands (the run itself stops at its first
    failed audit write, regprune/audit.py)."""

    def handleError(self, record: logging.LogRecord) -> None:
        return None


def configure_logging(output: Output, log_file: Path | None) -> Callable[[], None]:
    """Prefect's console handler stays only with ``--verbose``; every Prefect log line also
    goes to ``log_file`` (the run folder's regprune.log). Returns what undoes it."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.formatters import PrefectFormatter
    from prefect.logging.handlers import PrefectConsoleHandler

    # Prefect configures its handlers once per process, on the first import of prefect.main
    # (lazily, e.g. by `from prefect import flow`); done later, it would put back the console
    # handler removed here
    ensure_logging_setup()
    internal = logging.getLogger("prefect._internal")
    saved = [(owner, list(owner.handlers)) for owner in (logging.getLogger(), internal)]
    if not output.verbose:
        for owner in (logging.getLogger(), internal):
            for handler in list(owner.handlers):
                streams = isinstance(handler, logging.StreamHandler | PrefectConsoleHandler)
                if streams and not isinstance(handler, logging.FileHandler):
                    owner.removeHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = RunLogHandler(log_file, encoding="utf-8")
        handler.setFormatter(
            PrefectFormatter(
                format="%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s",
                flow_run_fmt="%(asctime)s.%(msecs)03d | %(levelname)-7s | "
                "Flow run %(flow_run_name)r - %(message)s",
                task_run_fmt="%(asctime)s.%(msecs)03d | %(levelname)-7s | "
                "Task run %(task_run_name)r - %(message)s",
                datefmt="%Y-%m-%d %H:%M:%S",
            )
        )
        logging.getLogger().addHandler(handler)
        internal.addHandler(handler)
    logging.getLogger("regprune").setLevel(logging.INFO)

    def undo() -> None:
        for owner, handlers in saved:
            for handler in list(owner.handlers):
                if handler not in handlers:
                    owner.removeHandler(handler)
                    handler.close()
            for handler in handlers:
                if handler not in owner.handlers:
                    owner.addHandler(handler)

    return undo


class LineDisplay:
    """Plain lines: phases as they start, progress every few seconds, a line per finished
    step (stdout not a terminal: a log file, a pipe, CI)."""

    def __init__(self, out: TextIO, err: TextIO, interval: float = PLAIN_INTERVAL):
        self.out, self.err, self.interval = out, err, interval
        self.lock = threading.Lock()
        self.open: list[progress.Activity] = []
        self.ticker: threading.Thread | None = None
        self.closed = threading.Event()

    def say(self, text: str, stream: TextIO | None = None) -> None:
        # not print(): inside a flow with log_prints Prefect turns print() into log lines
        stream = stream or self.out
        with self.lock:
            stream.write(text + "\n")
            stream.flush()

    def phase(self, text: str) -> None:
        self.say(text)

    def warning(self, text: str) -> None:
        self.say(f"regprune: warning: {text}", self.err)

    def started(self, activity: progress.Activity) -> None:
        self.say(activity.title)
        with self.lock:
            self.open.append(activity)
            if self.ticker is None:
                self.ticker = threading.Thread(target=self._tick, daemon=True)
                self.ticker.start()

    def finished(self, activity: progress.Activity) -> None:
        with self.lock:
            if activity in self.open:
                self.open.remove(activity)
        self.say(f"  {activity.describe()}")

    def _tick(self) -> None:
        # ends with the display: a command run in-process (a worker, the tests) leaves no
        # thread behind that keeps writing to its streams
        while not self.closed.wait(self.interval):
            self.tick()

    def tick(self) -> None:
        """One periodic line per open step (the ticker's work, callable by a test)."""
        with self.lock:
            lines = [f"  {a.title}: {a.describe()}" for a in self.open]
        for line in lines:
            self.say(line)

    def close(self) -> None:
        self.closed.set()


class TerminalDisplay(LineDisplay):
    """A live view with rich (Prefect brings it): a line per open step with objects, bytes,
    rate, elapsed time and, where the total is known, a bar and the time left."""

    def __init__(self, out: TextIO, err: TextIO):
        super().__init__(out, err)
        from rich.console import Console

        self.console = Console(file=out)
        self.live: Any = None

    def say(self, text: str, stream: TextIO | None = None) -> None:
        if stream is not None and stream is not self.out:
            super().say(text, stream)
            return
        with self.lock:
            self.console.print(text, markup=False, highlight=False)

    def _render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        with self.lock:
            current = list(self.open)
        for a in current:
            fraction = a.fraction
            bar = (
                ProgressBar(total=100, completed=fraction * 100, width=24)
                if fraction is not None
                else ProgressBar(total=None, width=24, pulse=True)
            )
            table.add_row(f"  {a.title}", bar, a.describe())
        return table

    def started(self, activity: progress.Activity) -> None:
        from rich.live import Live

        self.say(activity.title)
        with self.lock:
            self.open.append(activity)
            start = self.live is None
        if start:
            self.live = Live(
                get_renderable=self._render,
                console=self.console,
                refresh_per_second=4,
                transient=True,
            )
            self.live.start()

    def finished(self, activity: progress.Activity) -> None:
        with self.lock:
            if activity in self.open:
                self.open.remove(activity)
            stop = not self.open and self.live is not None
        if stop:
            self.live.stop()
            self.live = None
        self.say(f"  {activity.describe()}")

    def close(self) -> None:
        super().close()
        if self.live is not None:
            self.live.stop()
            self.live = None


class WarningsOnly(LineDisplay):
    """``--quiet`` and ``--output json``: stdout stays for the result; warnings on stderr."""

    def phase(self, text: str) -> None:
        pass

    def started(self, activity: progress.Activity) -> None:
        pass

    def finished(self, activity: progress.Activity) -> None:
        pass


def make_display(output: Output) -> LineDisplay:
    if not output.human:
        return WarningsOnly(sys.stdout, sys.stderr)
    if sys.stdout.isatty() and os.environ.get("TERM") != "dumb":
        return TerminalDisplay(sys.stdout, sys.stderr)
    return LineDisplay(sys.stdout, sys.stderr)

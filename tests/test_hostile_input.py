"""Careless and hostile input through the real command (issue 21): each case gets one clear
line on stderr (exit 2 for bad usage, 1 for a failed run) and no traceback; a silent or
trickling API server is bounded by the documented timeouts and by SIGTERM/SIGINT; an
interrupted deletion leaves the lock released and a run ``--resume`` finishes; ``regprune
sql`` reads its tables and nothing else; anomalies are said in the summary.

The cases that stop before any flow runs need no Prefect server and call the command's
main() in this process (``in_process``, the file descriptors captured); a process is started
where the process is the point (a secret echoed by anything it prints, signals) or a flow
runs. Those report to the session's test server (``PREFECT_API_URL``), so no command starts
a server of its own.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regprune.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from regprune.demo.synthetic import SyntheticSpec, generate
from tests.harness.hostile_servers import HostileServer

SHORT_BACKOFF = (
    "import sys; from regprune import metadata; "
    "metadata.RETRY_BASE_SECONDS = 0.01; metadata.RETRY_MAX_SECONDS = 0.02; "
    "from regprune.cli.main import main; sys.exit(main())"
)


def env_for(prefect: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGPRUNE_")}
    env["COLUMNS"] = "200"
    if prefect:
        from prefect.settings import PREFECT_API_URL

        env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    return env


def regprune(
    *args: str, prefect: bool = False, code: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``regprune ARGS`` as a user runs it (``code``: the same main() with a patch first)."""
    start = ["-c", code] if code else ["-m", "regprune.cli.main"]
    return subprocess.run(
        [sys.executable, *start, *args],
        capture_output=True,
        text=True,
        env=env_for(prefect),
        cwd=cwd,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused or failed command prints (after the usage lines, for bad
    usage); no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [
        line for line in result.stderr.splitlines() if not line.startswith(("usage: regprune", " "))
    ]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("regprune: error: ") or lines[0].startswith(
        "regprune: interrupted"
    ), lines
    return lines[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("demo")
    generate(folder / "registry", SyntheticSpec.demo(0), folder / "metadata.json")
    return {"storage": folder / "registry", "metadata": folder / "metadata.json"}


def storage_args(demo: dict[str, Path]) -> list[str]:
    return ["--storage", str(demo["storage"]), "--metadata", str(demo["metadata"])]


# --- durations and timeouts: bad usage, before anything runs ------------------------------


ISSUE_DURATIONS = ["--", "99999999999d", "9999999d", "9223372036854775807s", " 1h"]
"""The values issue 21 found failing with a traceback or a parameter error."""


@pytest.mark.parametrize("value", ISSUE_DURATIONS)
def test_a_bad_duration_is_bad_usage(
    value: str, demo: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    result = in_process(capfd, "prune", *storage_args(demo), f"--keep-younger-than={value}")
    assert result.returncode == EXIT_USAGE
    line = error_line(result)
    assert line.startswith("regprune: error: --keep-younger-than: "), line
    expected = {"--": "expects a value, not '--'", " 1h": "not a duration: ' 1h'"}
    assert expected.get(value, f"{value} is longer than 3650d, the longest accepted") in line


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """main() in this process: the same exit code and stderr, without a process's start.
    Given ``capfd`` rather than ``capsys``, what reaches the file descriptors is read too (a
    handler holding the real stream, a library writing to fd 2), as from a process; that the
    real command exits with what main() returns is tests/test_cli_output.py's and the
    subprocess cases' here (secrets, signals)."""
    from regprune.cli.main import main

    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


@pytest.mark.parametrize(
    ("command", "flag", "value", "says"),
    [
        ("prune", "--upload-max-age", "4000d", "longer than 3650d"),
        ("prune", "--upload-max-age", "7D", "not a duration"),
        ("prune-images", "--keep-younger-than", "-1h", "not a duration"),
        ("prune-images", "--hard-prune-keep-younger-than", "99999999999d", "longer than"),
        ("snapshot", "--read-timeout", "0s", "must be longer than 0s"),
        ("snapshot", "--connect-timeout", "2h", "longer than 1h"),
        ("prune", "--request-timeout", "soon", "not a duration"),
        ("check", "--read-timeout", "--", "expects a value"),
        ("prune", "--settle", "soon", "not a duration"),
        ("prune", "--settle", "--", "expects a value"),
        ("prune", "--quarantine-retention", "4000d", "longer than 3650d"),
        ("purge", "--older-than", "7D", "not a duration"),
        ("purge", "--older-than", "--", "expects a value"),
        ("purge", "--older-than", "99999999999d", "longer than 3650d"),
        ("purge", "--connect-timeout", "2h", "longer than 1h"),
        ("undo", "--read-timeout", "0s", "must be longer than 0s"),
        ("undo", "--request-timeout", "soon", "not a duration"),
    ],
)
def test_every_duration_and_timeout_is_checked(
    command: str,
    flag: str,
    value: str,
    says: str,
    demo: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = {
        "prune-images": [],
        "undo": [str(demo["storage"])],  # a folder: the run folder is read in the flow
        "purge": ["--storage", str(demo["storage"])],
    }.get(command, storage_args(demo))
    result = in_process(capsys, command, *extra, f"{flag}={value}")
    assert result.returncode == EXIT_USAGE
    line = error_line(result)
    assert line.startswith(f"regprune: error: {flag}: ") and says in line, line


@pytest.mark.parametrize(
    ("variable", "flag"),
    [("REGPRUNE_SETTLE", "--settle"), ("REGPRUNE_QUARANTINE_RETENTION", "--quarantine-retention")],
)
def test_a_bad_default_from_the_environment_names_the_variable(
    variable: str,
    flag: str,
    demo: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A deployment's environment gives the two-phase delete's defaults: a bad one is named
    as the variable it came from, not as an option nobody typed."""
    monkeypatch.setenv(variable, "5 minutes")
    result = in_process(capsys, "prune", *storage_args(demo))
    assert result.returncode == EXIT_USAGE
    assert error_line(result) == (
        f"regprune: error: ${variable} (the default of {flag}): not a duration: '5 minutes' "
        "(examples: 24h, 0s, 7d, 1h30m)"
    )


# --- storage and its config: one line before a server starts --------------------------------


def test_a_file_given_as_the_storage_folder(
    demo: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "registry.tar"
    afile.write_bytes(b"not a folder")
    result = in_process(
        capfd, "prune", "--storage", str(afile), "--metadata", str(demo["metadata"])
    )
    assert result.returncode == EXIT_FAILURE
    line = error_line(result)
    assert f"storage {afile} is a file, not a folder" in line, line
    assert "does not exist" not in line


def test_a_registry_config_with_two_storage_types_is_refused_as_the_registry_does(
    demo: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """storage.s3 beside storage.filesystem: the registry refuses to start; so does a run
    (before a Prefect server starts), instead of using the folder."""
    path = tmp_path / "config.yml"
    path.write_text(
        "version: 0.1\nstorage:\n  s3: {bucket: b, region: us-east-1}\n"
        f"  filesystem: {{rootdirectory: {demo['storage']}}}\n  delete: {{enabled: true}}\n"
    )
    args = ["--registry-config", str(path), "--metadata", str(demo["metadata"])]
    result = in_process(capfd, "prune", *args)
    assert result.returncode == EXIT_FAILURE
    assert error_line(result) == (
        f"regprune: error: {path}: must provide exactly one storage type (as the registry "
        "says); it has filesystem, s3 (exit 1: the run failed; --debug for a traceback)"
    )


def test_a_storage_variable_for_another_driver_makes_two(
    demo: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The registry applies REGISTRY_STORAGE_<DRIVER>_<PARAM> by creating that driver's
    section: beside the file's own, that is two storage types, refused by both."""
    path = tmp_path / "config.yml"
    path.write_text(f"version: 0.1\nstorage:\n  filesystem: {{rootdirectory: {demo['storage']}}}\n")
    monkeypatch.setenv("REGISTRY_STORAGE_S3_BUCKET", "elsewhere")
    result = in_process(capsys, "snapshot", "--registry-config", str(path), "--metadata", "x")
    assert result.returncode == EXIT_FAILURE
    line = error_line(result)
    assert "more than one storage type: filesystem, s3" in line and "REGISTRY_STORAGE" in line


# --- secrets refused with the way to pass them -----------------------------------------------


SECRET = "s3cr3t-" + os.urandom(6).hex()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--storage-option", f'client_kwargs={{"aws_secret_access_key": "{SECRET}"}}'],
            "--storage-option: storage option 'client_kwargs.aws_secret_access_key' looks like "
            "a credential; pass credentials through the storage's own environment (S3: "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        ),
        (
            ["--registry-url", f"http://admin:{SECRET}@registry:5000"],
            "--registry-url holds a user or password, which would be stored with the flow run: "
            "put the registry's bearer token in a file and pass --registry-token-file FILE",
        ),
    ],
)
def test_a_secret_in_a_parameter_is_refused_with_the_way_to_pass_it(
    args: list[str], says: str, demo: dict[str, Path]
) -> None:
    result = regprune("prune", *storage_args(demo), *args, "--confirm")
    assert result.returncode == EXIT_USAGE
    assert says in error_line(result)
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--storage-option", f'client_kwargs={{"endpoint_url": "https://u:{SECRET}@s3"}}'],
            "storage option 'client_kwargs.endpoint_url' is a URL with credentials",
        ),
        (
            ["--storage-option", f'config_kwargs={{"proxies": [{{"token": "{SECRET}"}}]}}'],
            "'config_kwargs.proxies[0].token' looks like a credential",
        ),
        (["--storage-option", f"endpoint_url=https://{SECRET}:x@s3"], "a URL with credentials"),
        (["--storage-option", f"client_kwargs={{{SECRET}"], "is JSON, and this is not"),
        (["--storage", f"s3://AKIA:{SECRET}@bucket"], "--storage holds a user or password"),
        (["--registry-url", "ftp://registry"], "expected http://HOST[:PORT]"),
    ],
)
def test_secrets_anywhere_in_the_parameters_are_refused_without_echoing_them(
    args: list[str], says: str, demo: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    storage = [] if args[0] == "--storage" else ["--storage", str(demo["storage"])]
    result = in_process(capsys, "prune", *storage, "--metadata", "x.json", *args)
    assert result.returncode == EXIT_USAGE
    assert says in error_line(result)
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize("command", ["undo", "purge"])
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--storage", f"s3://AKIA:{SECRET}@bucket"], "--storage holds a user or password"),
        (
            ["--storage-option", f'client_kwargs={{"token": "{SECRET}"}}'],
            "'client_kwargs.token' looks like a credential",
        ),
    ],
)
def test_undo_and_purge_refuse_secrets_as_the_others_do(
    command: str,
    args: list[str],
    says: str,
    demo: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Their storage becomes a flow parameter as a prune's does."""
    storage = [] if args[0] == "--storage" else ["--storage", str(demo["storage"])]
    run = [str(tmp_path)] if command == "undo" else ["--older-than", "7d"]
    result = in_process(capsys, command, *run, *storage, *args)
    assert result.returncode == EXIT_USAGE
    assert says in error_line(result)
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize("command", ["undo", "purge"])
def test_undo_and_purge_check_the_storage_before_a_run(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file for the storage folder and a config the registry refuses: one line each, before
    a Prefect server is asked for."""
    afile = tmp_path / "registry.tar"
    afile.write_bytes(b"not a folder")
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\nstorage:\n  s3: {bucket: b}\n  filesystem: {rootdirectory: /r}\n"
    )
    run = [str(tmp_path)] if command == "undo" else ["--older-than", "7d"]
    for storage, says in (
        (["--storage", str(afile)], f"storage {afile} is a file, not a folder"),
        (["--registry-config", str(config)], "must provide exactly one storage type"),
    ):
        result = in_process(capsys, command, *run, *storage)
        assert result.returncode == EXIT_FAILURE
        assert says in error_line(result)


# --- a run folder's records, damaged or edited: one line, nothing moved -----------------------


QUARANTINE_ID = "20261207T030000000000Z-abc123"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "cannot read {path}: Expecting property name"),
        ("[]", "{path} is not the record regprune wrote (a JSON list, not an object)"),
        ('{"id": "x"}', "(no storage, started_at)"),
        (
            json.dumps({"id": "../../docker", "storage": "/r", "started_at": "t"}),
            "(its id is not a quarantine id)",
        ),
        (
            json.dumps({"id": QUARANTINE_ID, "storage": 5, "started_at": "t"}),
            "(storage of the wrong type)",
        ),
        (
            json.dumps({"id": QUARANTINE_ID, "storage": f"s3://a:{SECRET}@b", "started_at": "t"}),
            "(its storage URL holds a user or password); nothing was moved",
        ),
        (
            json.dumps({"id": QUARANTINE_ID, "storage": "/r", "started_at": "t", "more": 1}),
            "(unknown fields 'more')",
        ),
    ],
)
def test_purge_refuses_a_damaged_quarantine_record_in_one_line(
    content: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``purge RUN`` names the storage and the quarantine from RUN's quarantine.json: one that
    regprune did not write stops the command before anything runs (exit 1, no echo)."""
    run = tmp_path / "run"
    run.mkdir()
    path = run / "quarantine.json"
    path.write_text(content)
    result = in_process(capsys, "purge", str(run))
    assert result.returncode == EXIT_FAILURE
    line = error_line(result)
    assert says.format(path=path) in line, line
    assert SECRET not in result.stderr + result.stdout


def test_the_quarantine_record_a_run_writes_reads_back(tmp_path: Path) -> None:
    """The check refuses edits, not what a run writes (a dry run's record included)."""
    from regprune.layout import new_quarantine_id
    from regprune.quarantine import RunQuarantine

    now = datetime.now(UTC)
    for dry_run in (False, True):
        written = RunQuarantine(new_quarantine_id(now), "s3://b/root", now.isoformat(), dry_run)
        written.write(tmp_path)
        assert RunQuarantine.read(tmp_path) == written
    assert RunQuarantine.read(tmp_path / "none") is None


def journal_with(folder: Path, *records: dict[str, Any], raw: bytes = b"") -> None:
    """A confirmed attempt's journal holding ``records`` (and ``raw`` bytes after them)."""
    from regprune.images_journal import JOURNAL_DIR, Journal

    with Journal(folder / JOURNAL_DIR, "20260101T000000000000", False, "kube") as journal:
        for record in records:
            journal.save(record)
    if raw:
        with next((folder / JOURNAL_DIR).glob("*.jsonl.gz")).open("ab") as file:
            file.write(gzip.compress(raw))


@pytest.mark.parametrize(
    ("records", "raw", "says"),
    [
        ([], b"not json\n", "JSONDecodeError"),
        ([{"record": "image", "image": {"metadata": {}}}], b"", "KeyError: 'name'"),
        ([{"record": "image", "image": ["x"]}], b"", "TypeError"),
        ([{"record": "image", "image": {"metadata": {"name": 5}}}], b"", "an Image named 5"),
        (
            [{"record": "stream", "stream": {"metadata": {"namespace": "a", "name": "b"}}}],
            b"",
            "KeyError: 'removed'",
        ),
        (
            [
                {
                    "record": "stream",
                    "stream": {"metadata": {"namespace": "a", "name": "b"}},
                    "removed": "all",
                }
            ],
            b"",
            "an ImageStream without its name or items",
        ),
        ([{"record": "outcome", "kind": "Image", "name": "x"}], b"", "KeyError: 'status'"),
    ],
)
def test_undo_refuses_a_damaged_journal_before_it_changes_anything(
    records: list[dict[str, Any]], raw: bytes, says: str, tmp_path: Path
) -> None:
    """The index of the journal reads every record the undo acts on: a damaged one stops the
    undo of the Images before the first create (one error, the file named)."""
    from regprune.images_undo import UndoError, saved_changes

    journal_with(tmp_path, *records, raw=raw)
    with pytest.raises(UndoError) as raised:
        saved_changes(tmp_path)
    message = str(raised.value)
    assert "is not a journal prune-images wrote" in message and says in message, message
    assert "no Image or ImageStream was changed back" in message


def test_an_interrupted_undo_or_purge_says_how_to_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both change storage from their first move: the line says where their record is and
    that running them again finishes (what is back or gone counts as done)."""
    import argparse

    from regprune import interrupts, lock
    from regprune.cli.main import interrupted_line

    # no lock held in this process: a run an earlier test killed in-process may have left one
    # registered, which the line would (rightly) name
    monkeypatch.setattr(lock, "_held", set())

    state = interrupts.Interruption(signal.SIGTERM, "restore", "Moving back 40 objects", [])
    undo = argparse.Namespace(command="undo", run_dir="runs/prune-1", run_folder="runs/prune-1")
    assert interrupted_line(undo, state, False) == (
        "regprune: interrupted by SIGTERM while moving back 40 objects; what was done is in "
        "runs/prune-1, and regprune undo runs/prune-1 again finishes it (exit 143)"
    )
    purge = argparse.Namespace(
        command="purge", run_dir=None, run_folder="runs/purge-1", confirm=True
    )
    assert interrupted_line(purge, state, False).endswith(
        "what was done is in runs/purge-1, and the same purge again finishes it (exit 143)"
    )
    purge.confirm = False
    assert interrupted_line(purge, state, False).endswith("; nothing changed (exit 143)")


# --- regprune sql: the snapshot's tables and nothing else --------------------------------


@pytest.fixture
def snapshot_folder(tmp_path: Path) -> Path:
    """A run folder as `regprune sql` sees one: a table and the files beside it."""
    run = tmp_path / "run"
    run.mkdir()
    pq.write_table(pa.table({"image": ["sha256:aa", "sha256:bb"]}), run / "images.parquet")
    (run / "snapshot.json").write_text(json.dumps({"rows": {"images": 2}}))
    return run


ISSUE_QUERIES = [
    ("COPY (SELECT 'x') TO 'x.csv'", "COPY statements are refused"),
    ("SELECT * FROM read_csv('/etc/passwd')", 'Cannot access file "/etc/passwd"'),
    ("COPY (SELECT 1 AS image) TO '{run}/images.parquet'", "COPY statements are refused"),
    ("INSTALL httpfs", "statements are refused"),
]
MORE_QUERIES = [
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{run}/x.csv'", "EXPLAIN statements are refused"),
    ("SELECT * FROM read_text('{run}/../../../../etc/passwd')", "Cannot access file"),
    ("SELECT * FROM glob('/etc/*')", "Cannot access file"),
    ("ATTACH '{cwd}/x.db'", "ATTACH statements are refused"),
    ("SELECT 1; SET enable_external_access = true", "SET statements are refused"),
    ("LOAD httpfs", "LOAD statements are refused"),
    ("CREATE TABLE t AS SELECT 1", "CREATE statements are refused"),
]


def assert_nothing_read_or_written(
    result: subprocess.CompletedProcess[str], says: str, run: Path, cwd: Path, before: bytes
) -> None:
    assert result.returncode == EXIT_FAILURE
    line = error_line(result)
    assert says in line and "--unrestricted" in line, line
    assert "root:" not in result.stdout
    assert not (cwd / "x.csv").exists() and not (run / "x.csv").exists()
    assert not (cwd / "x.db").exists()
    assert (run / "images.parquet").read_bytes() == before


@pytest.mark.parametrize(("query", "says"), ISSUE_QUERIES)
def test_sql_reads_the_snapshot_and_nothing_else(
    query: str,
    says: str,
    snapshot_folder: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    before = (snapshot_folder / "images.parquet").read_bytes()
    filled = query.format(run=snapshot_folder, cwd=tmp_path)
    result = in_process(capfd, "sql", "--snapshot", str(snapshot_folder), filled)
    assert_nothing_read_or_written(result, says, snapshot_folder, tmp_path, before)


@pytest.mark.parametrize(("query", "says"), MORE_QUERIES)
def test_sql_refuses_every_other_way_out(
    query: str,
    says: str,
    snapshot_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    before = (snapshot_folder / "images.parquet").read_bytes()
    filled = query.format(run=snapshot_folder, cwd=tmp_path)
    result = in_process(capsys, "sql", "--snapshot", str(snapshot_folder), filled)
    assert_nothing_read_or_written(result, says, snapshot_folder, tmp_path, before)


def test_sql_reads_its_own_tables_and_writes_only_the_output_asked_for(
    snapshot_folder: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    run = str(snapshot_folder)
    counted = in_process(
        capfd, "sql", "--snapshot", run, "--format", "csv", "SELECT count(*) AS n FROM images"
    )
    assert (counted.returncode, counted.stdout) == (EXIT_OK, "n\n2\n")
    direct = in_process(
        capfd, "sql", "--snapshot", run, "--format", "csv",
        f"SELECT count(*) AS n FROM read_parquet('{snapshot_folder}/images.parquet')",
    )  # fmt: skip
    assert direct.stdout == "n\n2\n", direct.stderr
    out = tmp_path / "result.parquet"
    written = in_process(
        capfd, "sql", "--snapshot", run, "--format", "parquet", "--output", str(out),
        "SELECT * FROM images",
    )  # fmt: skip
    assert written.returncode == EXIT_OK, written.stderr
    assert pq.read_table(out).num_rows == 2
    inside = in_process(
        capfd, "sql", "--snapshot", run, "--format", "parquet", "--output",
        str(snapshot_folder / "images.parquet"), "SELECT 1 AS image",
    )  # fmt: skip
    assert inside.returncode == EXIT_USAGE
    assert "which the query reads: write the result elsewhere" in error_line(inside)
    assert pq.read_table(snapshot_folder / "images.parquet").num_rows == 2


def test_sql_unrestricted_is_the_whole_of_duckdb(
    snapshot_folder: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the help unwrapped, as env_for() runs the command
    result = in_process(
        capfd, "sql", "--snapshot", str(snapshot_folder), "--unrestricted",
        f"COPY (SELECT image FROM images) TO '{tmp_path}/x.csv'",
    )  # fmt: skip
    assert result.returncode == EXIT_OK, result.stderr
    assert (tmp_path / "x.csv").read_text().splitlines() == ["image", "sha256:aa", "sha256:bb"]
    with pytest.raises(SystemExit) as exited:  # argparse's --help ends the process: exit 0
        in_process(capfd, "sql", "--help")
    assert exited.value.code == 0
    help_text = capfd.readouterr().out
    assert "--unrestricted" in help_text and "SELECT only" in help_text


# --- through a flow (the session's Prefect server) -------------------------------------------


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[HostileServer]:
    server = HostileServer(request.param).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_a_list_with_null_items_is_an_empty_list(
    prefect_server: None, demo: dict[str, Path], tmp_path: Path
) -> None:
    """``"items": null`` is how Go writes an empty list: no Images, which the plan's sanity
    check says (and refuses to delete on)."""
    dump = tmp_path / "null.json"
    dump.write_text('{"apiVersion":"v1","kind":"List","items":null}')
    args = ["prune", "--storage", str(demo["storage"]), "--metadata", str(dump)]
    result = regprune(*args, "--out", str(tmp_path / "run"), prefect=True)
    assert result.returncode == EXIT_OK, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("regprune: warning: the metadata lists no Images")
    refused = regprune(*args, "--out", str(tmp_path / "run2"), "--confirm", prefect=True)
    assert refused.returncode == EXIT_FAILURE
    assert "refusing to delete" in error_line(refused)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("hostile", "flags", "says"),
    [
        ("html", [], "the answer is not a Kubernetes list (str '<html><body>Log in"),
        ("silent", ["--read-timeout", "300ms"], "no answer for 0.3 s (--read-timeout) (after 3"),
        ("trickle", ["--request-timeout", "500ms"], "within 0.5 s (--request-timeout) (after 3"),
    ],
    indirect=["hostile"],
)
def test_an_api_server_that_misbehaves_fails_the_run_in_one_line(
    prefect_server: None,
    hostile: HostileServer,
    flags: list[str],
    says: str,
    demo: dict[str, Path],
    tmp_path: Path,
) -> None:
    kubeconfig = hostile.kubeconfig(tmp_path / "kubeconfig")
    result = regprune(
        "snapshot", "--storage", str(demo["storage"]), "--kubeconfig", str(kubeconfig),
        "--out", str(tmp_path / "run"), *flags, prefect=True, code=SHORT_BACKOFF,
    )  # fmt: skip
    assert result.returncode == EXIT_FAILURE
    line = error_line(result)
    assert line.startswith("regprune: error: cannot list images.image.openshift.io: "), line
    assert says in line, line
    assert not (tmp_path / "run" / "snapshot.json").exists()


def interrupted(process: subprocess.Popen[str], signum: int) -> tuple[int, str, str]:
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "regprune.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env_for(True),
    )


@pytest.mark.slow
@pytest.mark.parametrize("hostile", ["silent", "trickle"], indirect=True)
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_a_listing_that_hangs(
    prefect_server: None,
    hostile: HostileServer,
    signum: int,
    code: int,
    demo: dict[str, Path],
    tmp_path: Path,
) -> None:
    """Default timeouts (the listing would wait 30 s, or a minute): the signal ends it now,
    with the line saying what it interrupted; no snapshot is left that looks complete."""
    kubeconfig = hostile.kubeconfig(tmp_path / "kubeconfig")
    run = tmp_path / "run"
    process = start(
        "snapshot", "--storage", str(demo["storage"]), "--kubeconfig", str(kubeconfig),
        "--out", str(run),
    )  # fmt: skip
    try:
        assert hostile.arrived.wait(120), "the listing never reached the server"
        returncode, out, err = interrupted(process, signum)
    finally:
        if process.poll() is None:
            process.kill()
    name = signal.Signals(signum).name
    assert returncode == code, err
    assert error_line(subprocess.CompletedProcess([], returncode, out, err)) == (
        f"regprune: interrupted by {name} while listing images and imagestreams of kube; "
        f"nothing was deleted, the snapshot in {run} is incomplete (exit {code})"
    )
    assert not (run / "snapshot.json").exists()


@pytest.mark.slow
def test_a_deletion_interrupted_by_sigterm_releases_the_lock_and_resumes_to_the_same_end(
    prefect_server: None, tmp_path: Path
) -> None:
    """Two identical registries: one pruned in one go, one sent SIGTERM while deleting, then
    resumed. The interrupted run says so in one line, leaves no lock, and the resumed one
    ends where the straight one did."""
    from regprune.cli.main import main

    now = datetime.now(UTC)
    spec = SyntheticSpec.for_blobs(3000, seed=7)
    trees = {}
    for name in ("straight", "interrupted"):
        generate(tmp_path / name / "registry", spec, tmp_path / name / "metadata.json", now=now)
        trees[name] = tmp_path / name

    def args(name: str, out: Path) -> list[str]:
        folder = trees[name]
        return [
            "prune", "--storage", str(folder / "registry"),
            "--metadata", str(folder / "metadata.json"), "--out", str(out), "--confirm",
            "--settle", "0s",
        ]  # fmt: skip

    assert main(args("straight", tmp_path / "straight-run")) == EXIT_OK
    run = tmp_path / "interrupted-run"
    lock = trees["interrupted"] / "registry" / "_regprune" / "lock"
    process = start(*args("interrupted", run))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            parts = list((run / "actions").glob("*-p2-*.parquet")) if lock.exists() else []
            if len(parts) >= 2:  # blobs are being deleted, batch after batch
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be interrupted"
        returncode, out, err = interrupted(process, signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    assert returncode == 143, err
    line = error_line(subprocess.CompletedProcess([], returncode, out, err))
    assert "interrupted by SIGTERM while " in line
    assert f"the storage lock is released; regprune prune --resume {run} finishes the plan" in line
    assert not lock.exists()
    assert main(["prune", "--resume", str(run)]) == EXIT_OK

    def remaining(name: str) -> set[str]:
        """The registry's tree (each run's quarantine beside it has an id of its own)."""
        root = trees[name] / "registry"
        return {str(p.relative_to(root)) for p in (root / "docker").rglob("*") if p.is_file()}

    def quarantined(name: str) -> set[str]:
        """What each run moved, without its quarantine's id."""
        held = trees[name] / "registry" / "_regprune" / "quarantine"
        return {
            p.relative_to(held).as_posix().split("/", 1)[1] for p in held.rglob("*") if p.is_file()
        }

    assert remaining("interrupted") == remaining("straight") != set()
    assert quarantined("interrupted") == quarantined("straight") != set()


@pytest.mark.slow
def test_anomalies_are_said_in_the_summary(
    prefect_server: None, demo: dict[str, Path], tmp_path: Path
) -> None:
    """A tree with an odd entry: the summary says how many anomalies and how to read them;
    the command it names shows them."""
    storage = tmp_path / "registry"
    generate(storage, SyntheticSpec.demo(0), tmp_path / "metadata.json")
    odd = storage / "docker/registry/v2/blobs/sha256/ab/odd"
    odd.parent.mkdir(parents=True, exist_ok=True)
    odd.symlink_to("/etc/passwd")
    run = tmp_path / "run"
    args = ["--storage", str(storage), "--metadata", str(tmp_path / "metadata.json")]
    result = regprune("prune", *args, "--out", str(run), prefect=True)
    assert result.returncode == EXIT_OK, result.stderr
    said = [line for line in result.stdout.splitlines() if line.startswith("Anomalies")]
    query = "SELECT * FROM storage_anomalies"
    assert said == [
        "Anomalies, recorded and never acted upon: 1 in storage; read them with: "
        f'regprune sql --snapshot {run} "{query}"'
    ], result.stdout
    shown = regprune("sql", "--snapshot", str(run), "--format", "csv", query)
    assert shown.stdout.splitlines() == ["path,problem", "blobs/sha256/ab/odd,symbolic link"]


def test_the_sql_prompt_refuses_alike(
    snapshot_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interactive prompt checks each statement as a QUERY argument is checked."""
    import io

    import duckdb

    from regprune.cli import sql

    typed = iter([f"COPY (SELECT 1) TO '{tmp_path}/x.csv';", "SELECT count(*) FROM images;"])

    def answer(prompt: str) -> str:
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", answer)
    out = io.StringIO()
    with duckdb.connect() as con:
        views = sql.open_views(con, None, str(snapshot_folder))
        sql.restrict(con, [sql.source_folder(None, str(snapshot_folder))], [])
        sql.repl(con, views, out, sql.check_reads_only)
    assert "Error: regprune sql reads the snapshot or warehouse only: COPY" in out.getvalue()
    assert "(1 row)" in out.getvalue()
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.slow
def test_purge_of_a_run_purges_that_runs_quarantine(prefect_server: None, tmp_path: Path) -> None:
    """``purge RUN``: the run's own quarantine, named by RUN's quarantine.json (not by the
    purge's own run folder), re-checked and purged; nothing else of the storage changes."""
    from regprune.cli.main import main

    storage, dump = tmp_path / "registry", tmp_path / "metadata.json"
    generate(storage, SyntheticSpec.demo(0), dump)
    run = tmp_path / "run"
    prune = ["prune", "--storage", str(storage), "--metadata", str(dump), "--out", str(run)]
    assert main([*prune, "--confirm", "--quarantine-retention", "7d", "--settle", "0s"]) == 0
    held = storage / "_regprune" / "quarantine"
    assert any(p.is_file() for p in held.rglob("*"))  # kept for a week
    kept = {p for p in (storage / "docker").rglob("*") if p.is_file()}
    purge = ["purge", str(run), "--out", str(tmp_path / "purge"), "--confirm"]
    assert main(purge) == EXIT_OK
    assert not any(p.is_file() for p in held.rglob("*"))
    assert {p for p in (storage / "docker").rglob("*") if p.is_file()} == kept

"""The task runner choice: the whole GC flow on a Dask cluster plans what threads plan."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from regprune.cli.main import EXIT_USAGE, main
from regprune.demo.synthetic import SyntheticSpec, generate
from regprune.models import PLAN_OUTPUTS, DuckDBSettings
from regprune.runners import (
    DASK_ADDRESS_ENV,
    TASK_RUNNER_ENV,
    THREAD_WORKERS,
    ChosenTaskRunner,
    TaskRunnerSettings,
    use_task_runner,
)
from regprune.snapshots import SnapshotSource
from tests.conftest import rows

SNAPSHOT_SHARD_TASKS = {"walk_blob_shard", "walk_repository_shard"}
"""Task functions the snapshot subflow of a prune submits to the runner."""


@pytest.fixture(scope="module")
def demo_registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("dask-demo")
    paths = {"storage": str(root / "registry"), "metadata": str(root / "metadata.json")}
    generate(paths["storage"], SyntheticSpec.demo(3), paths["metadata"], str(root / "truth.json"))
    return paths


def prune_args(registry: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [
        "prune",
        "--storage",
        registry["storage"],
        "--metadata",
        registry["metadata"],
        "--out",
        str(out),
        "--keep-younger-than",
        "0s",
        "--shards",
        "4",
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_gc_flow_on_a_two_worker_dask_cluster_plans_what_threads_plan(
    demo_registry: dict[str, str], tmp_path: Path
) -> None:
    from distributed import LocalCluster

    assert main(prune_args(demo_registry, tmp_path / "threads", "--task-runner", "threads")) == 0
    # Worker processes, not threads: every task argument and result crosses a pickle.
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        assert main(prune_args(demo_registry, tmp_path / "dask", "--dask-address", address)) == 0
        ran_on_dask = set(cluster.scheduler.task_prefixes)
    assert ran_on_dask >= SNAPSHOT_SHARD_TASKS, ran_on_dask

    deleting = 0
    for output in PLAN_OUTPUTS:
        query = "SELECT * FROM t ORDER BY ALL"
        threads = rows(tmp_path / "threads" / f"{output}.parquet", query)
        dask = rows(tmp_path / "dask" / f"{output}.parquet", query)
        assert dask == threads, output
        deleting += sum(1 for row in threads if row.get("action") == "delete")
    assert deleting > 0


def test_task_arguments_survive_a_pickle() -> None:
    """What flows hand to tasks must cross to a Dask worker process unchanged."""
    source = SnapshotSource(
        storage="s3://bucket/root", storage_options={"client_kwargs": {"region_name": "x"}}
    )
    values: list[Any] = [
        source,
        source.storage_spec(),
        source.metadata_source(),
        DuckDBSettings(memory_limit="2GB", temp_directory="/tmp/spill", threads=2),
        TaskRunnerSettings(task_runner="dask", dask_address="tcp://127.0.0.1:8786"),
    ]
    for value in values:
        assert pickle.loads(pickle.dumps(value)) == value


def test_the_runner_is_chosen_per_command_else_by_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv(TASK_RUNNER_ENV, raising=False)
    monkeypatch.delenv(DASK_ADDRESS_ENV, raising=False)
    chosen = ChosenTaskRunner()
    runner = chosen.duplicate()
    assert isinstance(runner, ThreadPoolTaskRunner)
    assert runner._max_workers == THREAD_WORKERS

    monkeypatch.setenv(DASK_ADDRESS_ENV, "tcp://dask-scheduler:8786")
    runner = chosen.duplicate()  # an address alone means Dask
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address == "tcp://dask-scheduler:8786"

    with use_task_runner(TaskRunnerSettings.choose("threads", None)):
        assert isinstance(chosen.duplicate(), ThreadPoolTaskRunner)
    monkeypatch.setenv(TASK_RUNNER_ENV, "threads")
    monkeypatch.delenv(DASK_ADDRESS_ENV)
    # a Prefect server is named, so choosing Dask starts none (the runner is what is tested)
    with (
        temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}),
        use_task_runner(TaskRunnerSettings.choose(None, "tcp://10.0.0.1:8786")),
    ):
        assert chosen.duplicate().address == "tcp://10.0.0.1:8786"  # type: ignore[attr-defined]

    monkeypatch.setenv(TASK_RUNNER_ENV, "ray")
    with pytest.raises(ValueError, match=TASK_RUNNER_ENV):
        chosen.duplicate()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--task-runner", "threads", "--dask-address", "tcp://h:8786"], "--dask-address"),
        (["--dask-address", "h:8786"], "not a Dask scheduler address"),
        (["--memory-limit", "2Gi"], "--memory-limit"),
        (["--task-runner", "ray"], "invalid choice"),
    ],
)
def test_bad_runner_and_memory_options_are_usage_errors(
    flags: list[str], message: str, tmp_path: Path, capsys: Any
) -> None:
    registry = {"storage": str(tmp_path / "registry"), "metadata": str(tmp_path / "dump.json")}
    try:
        code = main(prune_args(registry, tmp_path / "out", *flags))
    except SystemExit as exc:  # argparse's own choices check
        code = exc.code
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

"""Where a flow's tasks run: threads in the flow's process (default) or a Dask cluster.

Listing shards, manifest reads and deletion batches are submitted to the flow's task runner.
A command chooses it with ``--task-runner`` / ``--dask-address``, a deployment with the
environment variables ``REGPRUNE_TASK_RUNNER`` / ``REGPRUNE_DASK_ADDRESS`` (job variables), and
the choice holds for subflows too: the snapshot a prune takes runs where the prune runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from regprune import interrupts

TASK_RUNNER_ENV = "REGPRUNE_TASK_RUNNER"
DASK_ADDRESS_ENV = "REGPRUNE_DASK_ADDRESS"
DASK_ADDRESS = re.compile(r"(tcp|tls|ucx|ws|wss)://[^\s/]+")
THREAD_WORKERS = 16
"""Threads per flow run unless Prefect's ``PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS`` says
otherwise: the tasks wait on storage and the API, and 16 matches the default shard count."""


class TaskRunnerSettings(BaseModel):
    """Where tasks run: threads of the flow's process, or a Dask cluster."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_runner: Literal["threads", "dask"] = Field(
        "threads",
        description="'threads' (in the flow's process) or 'dask' (prefect-dask: the cluster at "
        "dask_address, else a local cluster started for the run).",
    )
    dask_address: str | None = Field(
        None, description="Scheduler of an existing Dask cluster, e.g. tcp://dask-scheduler:8786."
    )

    @field_validator("dask_address")
    @classmethod
    def _scheduler_address(cls, address: str | None, info: ValidationInfo) -> str | None:
        if address is None:
            return None
        if not DASK_ADDRESS.fullmatch(address):
            raise ValueError(
                f"{address!r} is not a Dask scheduler address such as tcp://dask-scheduler:8786"
            )
        if info.data.get("task_runner") != "dask":
            raise ValueError("a Dask scheduler address needs the 'dask' task runner")
        return address

    @classmethod
    def choose(cls, task_runner: str | None, dask_address: str | None) -> TaskRunnerSettings:
        """What was asked for, else the environment, else threads; an address implies Dask
        (the environment's address is ignored when threads are asked for)."""
        if dask_address and not task_runner:
            task_runner = "dask"
        kind = task_runner or os.environ.get(TASK_RUNNER_ENV) or None
        address = dask_address
        if address is None and kind in (None, "dask"):
            address = os.environ.get(DASK_ADDRESS_ENV) or None
        return cls(task_runner=kind or ("dask" if address else "threads"), dask_address=address)


_chosen: ContextVar[TaskRunnerSettings | None] = ContextVar("regprune_task_runner", default=None)


def chosen_settings() -> TaskRunnerSettings:
    """The settings of the enclosing :func:`use_task_runner`, else from the environment."""
    chosen = _chosen.get()
    if chosen is not None:
        return chosen
    try:
        return TaskRunnerSettings.choose(None, None)
    except ValidationError as exc:
        problems = "; ".join(error["msg"] for error in exc.errors())
        raise ValueError(f"{TASK_RUNNER_ENV} / {DASK_ADDRESS_ENV}: {problems}") from exc


@contextmanager
def use_task_runner(settings: TaskRunnerSettings) -> Iterator[TaskRunnerSettings]:
    """Flows started inside (and their subflows) run their tasks as ``settings`` say.

    Without ``PREFECT_API_URL`` Prefect starts a temporary server per process, Dask worker
    processes included: their task runs would land on servers of their own. The temporary
    server of this process is named explicitly instead, and travels with each task.
    """
    token = _chosen.set(settings)
    try:
        with ExitStack() as stack:
            if settings.task_runner == "dask" and not PREFECT_API_URL.value():
                from prefect.server.api.server import SubprocessASGIServer

                server = SubprocessASGIServer()
                server.start()
                stack.enter_context(temporary_settings({PREFECT_API_URL: server.api_url}))
            yield settings
    finally:
        _chosen.reset(token)


class ThreadsTaskRunner(ThreadPoolTaskRunner):
    """Prefect's thread pool, except that an interrupted run (regprune/interrupts.py) does
    not wait for its threads: one blocked on a silent server would hold the run for its
    timeouts; the command line ends the process instead. Entered when the flow run starts,
    just after Prefect's engine took SIGTERM: it is given back to the command line here."""

    def __enter__(self) -> Any:
        interrupts.take_sigterm()
        return super().__enter__()

    def cancel_all(self) -> None:
        executor = getattr(self, "_executor", None)
        if interrupts.requested() and executor is not None:
            for event in getattr(self, "_cancel_events", {}).values():
                event.set()
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            return
        super().cancel_all()


def build_task_runner(settings: TaskRunnerSettings) -> TaskRunner[Any]:
    if settings.task_runner == "threads":
        configured = get_current_settings().tasks.runner.thread_pool_max_workers
        return ThreadsTaskRunner(max_workers=configured or THREAD_WORKERS)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise RuntimeError(
            "task runner 'dask' needs prefect-dask: pip install 'regprune[dask]'"
        ) from exc
    address = settings.dask_address
    if not address:  # a subflow joins the cluster of the flow that called it
        context = FlowRunContext.get()
        if context and isinstance(context.task_runner, DaskTaskRunner):
            address = context.task_runner.client.scheduler.address
    return DaskTaskRunner(address=address) if address else DaskTaskRunner()


class ChosenTaskRunner(TaskRunner[Any]):
    """The flows' task runner: each flow run gets the runner chosen when it starts.

    Prefect starts a flow run with ``flow.task_runner.duplicate()``; this one answers with the
    runner :func:`chosen_settings` describes, so neither the flows nor their callers pass a
    runner around, and a deployment chooses through its environment.
    """

    def duplicate(self) -> TaskRunner[Any]:  # type: ignore[override]
        return build_task_runner(chosen_settings())

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("ChosenTaskRunner only chooses; tasks go to the runner it built")

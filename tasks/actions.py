"""The execute-batches task: one phase's batches of the hard prune, run in rounds by the
batch executor (regprune/prune_execute.py: the re-read, the audit trail written ahead, the
moves into the quarantine, and ``run_storage``, the one place the mode decides)."""

from __future__ import annotations

import time

from prefect import task

from regprune import interrupts
from regprune.audit import AuditTrail, AuditWriteError
from regprune.prune_execute import (
    BATCH_SIZE,
    ROUND_ACTIONS,
    ROUND_SECONDS,
    Batch,
    BatchesDone,
    BatchRef,
    ExecutionSettings,
    Ready,
    queued_actions,
    run_storage,
)
from regprune.retries import retry_unless


@task(
    name="execute-batches",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless(AuditWriteError),  # a full disk stays full: stop
)
def execute_batches(
    settings: ExecutionSettings, queue: str, batches: list[BatchRef]
) -> BatchesDone:
    """Run batches of one phase's queue in rounds (ROUND_ACTIONS, ROUND_SECONDS), reading their
    actions at once (a task, a query and a file per thousand objects would cost more than a
    dry run's work). Returns the audit parts written and the count of actions moved. A part
    not closed, as after a kill, is not readable, so its actions count as not done and run
    again on --resume, as does every batch on a retry: moving what is gone moves nothing."""
    storage = run_storage(settings)
    queued = queued_actions(queue, sorted({batch.shard for batch in batches}))
    audit = AuditTrail(settings.audit_dir, batches[0].name if batches else "empty")
    round_batch = Batch(settings, storage, audit)
    ready: list[Ready] = []
    opened = time.monotonic()
    try:
        for batch in batches:
            interrupts.check()  # an interrupted run starts no round (nothing half-done)
            rows = queued.get(batch.shard, [])[batch.start : batch.start + BATCH_SIZE]
            ready += round_batch.prepare(rows)
            if len(ready) >= ROUND_ACTIONS or time.monotonic() - opened >= ROUND_SECONDS:
                interrupts.check()
                round_batch.move(ready)
                ready, opened = [], time.monotonic()
    except interrupts.Interrupted:
        round_batch.move([])  # the outcomes so far are recorded: --resume redoes less
        audit.close()
        raise
    round_batch.move(ready)
    return BatchesDone(audit.close(), round_batch.moved)

"""Tasks of the second phase of the two-phase delete: what the quarantines hold, the judgment
(sql/execution/quarantine_restore.sql), moving keys back or purging them, and telling a caching
registry what moved. What they run is regprune/quarantine.py (the record, the keys as rows, the
tables of the re-check, the moves recorded ahead in the run's ``quarantine_log/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task

from regprune.audit import AuditWriteError
from regprune.layout import blob_data_path, layer_link_path
from regprune.models import SnapshotDatabase
from regprune.prune_execute import PURGING, RESTORING, ExecutionSettings, run_storage
from regprune.quarantine import (
    PURGE_STATUS,
    RESTORE_STATUS,
    KeyOutcome,
    classify_keys,
    move_keys,
)
from regprune.registry import RegistryAPI
from regprune.retries import retry_unless
from regprune.tables import SCHEMAS


@task(name="list-quarantined-keys", retries=2, retry_delay_seconds=[2, 10])
def list_quarantined_keys(settings: ExecutionSettings, quarantine_ids: list[str], dest: str) -> int:
    """Every key the quarantines hold, classified, into ``dest`` (``quarantined_keys``)."""
    storage = run_storage(settings)
    tables = [SCHEMAS["quarantined_keys"].empty_table()]
    for qid in quarantine_ids:
        held = storage.quarantined(qid)
        tables.append(classify_keys(qid, [o.key for o in held], [o.size for o in held]))
    table = pa.concat_tables(tables)
    pq.write_table(table, dest)
    return table.num_rows


@task(name="judge-quarantined-keys")
def judge(run_dir: str, keys: str, replanned: str) -> list[dict[str, Any]]:
    """sql/execution/quarantine_restore.sql: the quarantined keys the re-plan no longer deletes."""
    extra = {"quarantined_keys": Path(keys), "recheck_plan_actions": Path(replanned)}
    with SnapshotDatabase(run_dir, {}, extra_tables=extra) as db:
        db.define("quarantine_restore")
        return db.records("SELECT * FROM quarantine_restore")


@task(
    name="restore-quarantined",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless(AuditWriteError),
)
def restore_quarantined(
    settings: ExecutionSettings, quarantine: str, keys: list[dict[str, Any]], stem: str
) -> list[KeyOutcome]:
    """Move keys back out of a quarantine (``Storage.restore_many``: a key that came back
    with other bytes is never overwritten)."""
    return move_keys(settings, quarantine, keys, stem, RESTORING, RESTORE_STATUS, "restore_many")


@task(
    name="purge-quarantined",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless(AuditWriteError),
)
def purge_quarantined(
    settings: ExecutionSettings, quarantine: str, keys: list[dict[str, Any]], stem: str
) -> list[KeyOutcome]:
    """Delete quarantined keys for good (a DLO's segments with it on Swift)."""
    return move_keys(settings, quarantine, keys, stem, PURGING, PURGE_STATUS, "purge_many")


@task(name="tell-the-registry")
def tell_the_registry(
    settings: ExecutionSettings, registry: RegistryAPI, moved: list[dict[str, Any]]
) -> list[str]:
    """After blobs and links moved into the quarantine, make a caching registry forget
    them (it caches only what exists, so a claim it keeps would make a push skip an upload):
    ``DELETE /v2/<repo>/blobs/<digest>`` for every layer link moved (clears that
    repository's cache entry; the link is gone already), then ``DELETE
    /admin/blobs/<digest>`` for every blob moved (OpenShift's registry-wide cache). Each call
    only while the key is still absent from the registry's tree (a push that wrote it again
    since is left alone). Runs before the re-check, which moves back whatever a racing push
    needs. ``moved``: rows of ``quarantined_keys``. Returns the errors."""
    storage = run_storage(settings)
    links = [(r["repository"], r["digest"]) for r in moved if r["kind"] == "layer_link"]
    blobs = [r["digest"] for r in moved if r["kind"] == "blob"]
    keys = [layer_link_path(r, d) for r, d in links] + [blob_data_path(d) for d in blobs]
    present = storage.stat_many(keys) if keys else {}
    errors = []
    for repository, digest in links:
        if present.get(layer_link_path(repository, digest)) is None:
            error = registry.unlink(repository, digest)
            if error:
                errors.append(f"registry cache not cleared for {repository}@{digest}: {error}")
    for digest in blobs:
        if present.get(blob_data_path(digest)) is None:
            error = registry.forget(digest)
            if error:
                errors.append(f"registry cache not cleared for {digest}: {error}")
    return errors

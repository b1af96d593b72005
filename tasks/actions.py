"""Execute a hard-prune plan, batch by batch, safe while the registry keeps serving.

Each batch re-reads what it is about to delete right before deleting it (the modification
time of every target file; for a dangling layer link, whether its blob came back), skips
anything touched after the snapshot started, and records every outcome, done, skipped or
failed, in the run's audit trail (``actions/*.parquet``). Deleting something already gone
counts as done, so a batch can always be run again: that is what ``--resume`` does.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from prefect import task

from regprune import progress
from regprune.layout import (
    blob_data_path,
    layer_link_path,
    manifest_link_path,
    repository_dir,
    tag_index_link_path,
    upload_dir,
)
from regprune.models import fetch_records
from regprune.storage import Storage, StorageObject, StorageSpec, open_storage
from regprune.tables import TableWriter, sql_literal

DONE, SKIPPED, FAILED = "done", "skipped", "failed"
BATCH_SIZE = 1000


@dataclass(frozen=True)
class RegistryAPI:
    """The running registry, to clear its blob-descriptor cache as links disappear:
    ``DELETE /v2/<repository>/blobs/<digest>`` removes the link *and* the cache entry
    (distribution answers 202; 404 when it neither has nor caches the link)."""

    url: str
    token_file: str | None = None
    """Read when used: the token never travels in parameters, logs or reports."""
    timeout: float = 30.0

    def unlink(self, repository: str, digest: str) -> str | None:
        """None when the registry no longer links (nor caches) the blob, else the error."""
        request = urllib.request.Request(
            f"{self.url.rstrip('/')}/v2/{repository}/blobs/{digest}", method="DELETE"
        )
        token = read_token(self.token_file)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            return f"registry unreachable: {exc}"
        return None if status in (200, 202, 404) else f"registry answered {status}"


@dataclass(frozen=True)
class ExecutionSettings:
    """What every batch of one run shares."""

    spec: StorageSpec
    audit_dir: str
    run_id: str
    touched_after: datetime
    """Anything modified after this (the snapshot's start) was written since: skip it."""
    registry: RegistryAPI | None = None


class _Batch:
    """One batch: resolve targets, re-verify, delete, record."""

    def __init__(self, settings: ExecutionSettings, storage: Storage, audit: TableWriter):
        self.settings = settings
        self.storage = storage
        self.audit = audit

    def record(self, item: dict[str, Any], status: str, reason: str | None = None) -> None:
        self.audit.append(
            run_id=self.settings.run_id,
            phase=item["phase"],
            action=item["action"],
            repository=item.get("repository"),
            digest=item.get("digest"),
            upload_id=item.get("upload_id"),
            size=item.get("size"),
            status=status,
            reason=reason,
            time=datetime.now(UTC),
        )

    def targets(self, item: dict[str, Any]) -> list[str]:
        """The files this action removes (paths from the layout module only)."""
        action, repository, digest = item["action"], item.get("repository"), item.get("digest")
        if action == "delete_blob":
            return [blob_data_path(digest)]
        if action == "delete_manifest_link":
            tags = item.get("tags") or []
            return [manifest_link_path(repository, digest)] + [
                tag_index_link_path(repository, tag, digest) for tag in tags
            ]
        if action == "delete_layer_link":
            return [layer_link_path(repository, digest)]
        if action == "delete_repository":
            # only its own _layers, _manifests and _uploads: a repository nested in its folder
            # (ns/app inside ns) is another repository, judged on its own
            own = repository_dir(repository) + "_"
            walked = self.storage.walk(repository_dir(repository))
            return [obj.key for obj in walked if obj.key.startswith(own)]
        return [obj.key for obj in self.storage.walk(upload_dir(repository, item["upload_id"]))]

    def verify(
        self,
        item: dict[str, Any],
        targets: list[str],
        stats: dict[str, StorageObject | None],
        blobs: dict[str, StorageObject | None],
    ) -> str | None:
        """Why this action must not run now, or None (``stats``: the batch's targets re-read
        just now; ``blobs``: the blobs of its layer links)."""
        files = [key for key in targets if not key.endswith("/")]  # folders' times move
        times = [stat.modified for key in files if (stat := stats.get(key)) and stat.modified]
        if times and max(times) > self.settings.touched_after:
            return "modified after the snapshot started"
        if item["action"] == "delete_layer_link" and blobs.get(blob_data_path(item["digest"])):
            return "its blob exists (again)"
        return None

    def clear_registry_cache(self, item: dict[str, Any]) -> str | None:
        """Unlink through the registry before the bytes go, so its cache forgets them."""
        registry = self.settings.registry
        if registry is None:
            return None
        if item["action"] == "delete_blob":
            pairs = [(repo, item["digest"]) for repo in item.get("blob_repositories") or []]
        elif item["action"] == "delete_repository":
            pairs = [
                (item["repository"], f"sha256:{key.rsplit('/', 2)[-2]}")
                for key in self.targets(item)
                if "/_layers/sha256/" in key and key.endswith("/link")
            ]
        else:
            return None
        for repository, digest in pairs:
            error = registry.unlink(repository, digest)
            if error:
                return f"registry cache not cleared for {repository}@{digest}: {error}"
        return None

    def run(self, items: list[dict[str, Any]]) -> None:
        """Re-read the whole batch at once (on S3 one listing of its common folder, not a
        request per object), then delete what is still as planned in one call."""
        pending: list[tuple[dict[str, Any], list[str]]] = []
        for item in items:
            if item.get("skip_reason"):
                self.record(item, SKIPPED, item["skip_reason"])
            else:
                pending.append((item, self.targets(item)))
        files = [key for _, targets in pending for key in targets if not key.endswith("/")]
        stats = self.storage.stat_many(files) if files else {}
        linked = [item["digest"] for item, _ in pending if item["action"] == "delete_layer_link"]
        blobs = self.storage.stat_many([blob_data_path(d) for d in linked]) if linked else {}
        ready: list[tuple[dict[str, Any], list[str]]] = []
        for item, targets in pending:
            reason = self.verify(item, targets, stats, blobs) or self.clear_registry_cache(item)
            if reason:
                self.record(item, SKIPPED, reason)
            else:
                ready.append((item, targets))
        outcome = self.storage.delete_many([key for _, targets in ready for key in targets])
        for item, targets in ready:
            errors = [outcome[key] for key in targets if outcome.get(key)]
            self.record(item, FAILED if errors else DONE, errors[0] if errors else None)
        progress.advance("delete", len(items), sum(item.get("size") or 0 for item, _ in ready))


@task(name="execute-batch", retries=2, retry_delay_seconds=[5, 30])
def execute_batch(
    settings: ExecutionSettings, queue: str, shard: str, start: int, name: str
) -> str:
    """Run up to ``BATCH_SIZE`` actions of one shard of a phase's queue (one S3
    ``DeleteObjects`` request for blobs); its audit part is readable once this returns."""
    storage = open_storage(settings.spec)
    path = Path(settings.audit_dir) / f"{name}.parquet"
    with TableWriter("actions", path) as audit:
        _Batch(settings, storage, audit).run(_queued(queue, shard, start))
    return str(path)


def _queued(queue: str, shard: str, start: int) -> list[dict[str, Any]]:
    with duckdb.connect() as con:
        return fetch_records(
            con.execute(
                f"SELECT * FROM read_parquet({sql_literal(queue)}) WHERE shard = ? "
                "ORDER BY action, repository, digest, upload_id LIMIT ? OFFSET ?",
                [shard, BATCH_SIZE, start],
            )
        )


def read_token(path: str | None) -> str | None:
    """The registry bearer token, from a file so it never appears in arguments or logs."""
    if not path:
        return None
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"registry token file {path} is empty")
    return token

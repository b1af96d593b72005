"""Executing a prune-images plan on the cluster: tag revisions out of ImageStreams' status,
then Images deleted — re-checked against the cluster as it is now, each change saved in full
in the run's journal before it is made (regprune/images_journal.py), so that
regprune/images_undo.py can put everything back.

1. The streams are listed; for each with planned removals, the planned items still at or
   below their planned position are dropped (a revision that moved up — someone removed
   newer ones — or was pushed again is kept), tags left empty with them. The page's streams
   as read, and what each change removes, are saved; then ``PUT .../status`` with the
   resourceVersion read, so the change applies to what was saved. A 409 reads the stream
   again and recomputes (as oc's ``retry.RetryOnConflict``), saving again; a 404 or a stream
   not listed means it is gone.
2. The streams are listed again (not over a cluster only this run changes, a dry run's
   listing: step 1 saw what a second listing would); an Image any item now holds (or a child
   of a held list) is not deleted. The Images listed that the plan deletes are saved in
   full, all on disk before the first delete.
3. ``DELETE /images/<name>`` on the precondition that it is the object saved (uid,
   resourceVersion): one changed since is read and saved again first; a 404 is "gone".

Whether a change is made or only recorded is the cluster's to decide (regprune/
images_cluster.py ``cluster_for``): a dry run walks this same code, its changes answered
``would-update``/``would-delete``. Every outcome is a row of ``images_actions.parquet`` and a
record of the journal.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from regprune.images_cluster import Conflict, ImagesCluster, NotFound
from regprune.images_journal import JOURNAL_DIR, Journal, JournalError, attempt_id
from regprune.metadata import MetadataError
from regprune.tables import sql_literal

CONFLICT_RETRIES = 5
ACTIONS_FILE = "images_actions.parquet"
Saved = tuple[str | None, str | None]
"""An Image as saved: its uid and resourceVersion (the preconditions of its delete)."""


def _planned(run_dir: Path) -> tuple[dict[tuple[str, str], list[dict]], list[str]]:
    with duckdb.connect() as con:  # columns through Arrow: DuckDB's own rows cost 3x the CPU
        revisions = con.sql(
            "SELECT namespace, name, tag, position, image FROM read_parquet("
            f"{sql_literal(run_dir / 'images_tag_revisions.parquet')}) WHERE action = 'remove'"
        ).to_arrow_table()
        images = con.sql(
            f"SELECT image FROM read_parquet({sql_literal(run_dir / 'images_plan.parquet')}) "
            "WHERE action = 'delete' ORDER BY image"
        ).to_arrow_table()
    by_stream: dict[tuple[str, str], list[dict]] = defaultdict(list)
    columns = (revisions.column(n).to_pylist() for n in revisions.column_names)
    for namespace, name, tag, position, image in zip(*columns, strict=True):
        by_stream[(namespace, name)].append({"tag": tag, "position": position, "image": image})
    return by_stream, images.column(0).to_pylist()


def prune_stream_status(
    stream: dict[str, Any], removals: list[dict]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The stream with the planned items removed (where still safe), and the items removed
    (``tag``, ``position`` in the stream as given, ``item``)."""
    planned = {(r["tag"], r["image"]): r["position"] for r in removals}
    status = stream.get("status") or {}
    removed = []
    tags = []
    for entry in status.get("tags") or []:
        items = []
        for position, item in enumerate(entry.get("items") or []):
            at = planned.get((entry.get("tag"), item.get("image")))
            if at is not None and position >= at:
                removed.append({"tag": entry.get("tag"), "position": position, "item": item})
                continue
            items.append(item)
        if items:
            tags.append({**entry, "items": items})
    # a new stream, status and tag entries; the items themselves are shared, never changed
    return {**stream, "status": {**status, "tags": tags}}, removed


class _Run:
    """One attempt: the cluster, its journal and the outcomes (for images_actions.parquet)."""

    def __init__(self, cluster: ImagesCluster, journal: Journal):
        self.cluster = cluster
        self.journal = journal
        self.actions: list[dict[str, Any]] = []
        self.held: set[str] | None = None
        """What the streams hold once changed, when step 1 could know it (a frozen cluster)."""

    def act(
        self, kind: str, namespace: str | None, name: str, status: str, detail: Any = None
    ) -> None:
        record = self.journal.outcome(kind, namespace, name, status, detail)
        self.actions.append({**record, "time": datetime.fromisoformat(record["time"])})

    # -- 1. the streams' status ----------------------------------------------------------------

    def update_streams(self, by_stream: dict[tuple[str, str], list[dict]]) -> None:
        waiting = dict(by_stream)
        # a frozen cluster changes only by this run: what step 2 would list again is known
        held: set[str] | None = set() if self.cluster.frozen else None
        for page in self.cluster.list_streams():
            changes = []
            for stream in page:
                meta = stream.get("metadata") or {}
                removals = waiting.pop((meta.get("namespace"), meta.get("name")), None)
                after = stream
                if removals is not None:
                    new, removed = prune_stream_status(stream, removals)
                    if removed:
                        changes.append((stream, new, removed, removals))
                        after = new
                    else:
                        self.act("ImageStream", meta["namespace"], meta["name"], "unchanged", 0)
                if held is not None:
                    held.update(_held_by(after))
            self.journal.save(*(_stream_record(s, r) for s, _, r, _ in changes))
            for stream, new, removed, removals in changes:
                self.replace_status(stream, new, removed, removals)
        for namespace, name in sorted(waiting):  # planned, no longer listed
            self.act("ImageStream", namespace, name, "gone")
        self.held = held

    def replace_status(
        self, stream: dict, new: dict, removed: list[dict], removals: list[dict]
    ) -> None:
        namespace, name = stream["metadata"]["namespace"], stream["metadata"]["name"]
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                status = self.cluster.replace_stream_status(new)
                self.act("ImageStream", namespace, name, status, len(removed))
                return
            except Conflict as exc:
                if attempt == CONFLICT_RETRIES:
                    self.act("ImageStream", namespace, name, "failed", exc)
                    return
            except NotFound:
                self.act("ImageStream", namespace, name, "gone")
                return
            except MetadataError as exc:
                self.act("ImageStream", namespace, name, "failed", exc)
                return
            try:  # changed since it was read: read it again, save it again
                stream = self.cluster.get_stream(namespace, name)
            except NotFound:
                self.act("ImageStream", namespace, name, "gone")
                return
            except MetadataError as exc:
                self.act("ImageStream", namespace, name, "failed", exc)
                return
            new, removed = prune_stream_status(stream, removals)
            if not removed:
                self.act("ImageStream", namespace, name, "unchanged", 0)
                return
            self.journal.save(_stream_record(stream, removed))

    # -- 2. what is held now; the Images to delete, saved --------------------------------------

    def held_and_saved(self, planned: set[str]) -> tuple[set[str], dict[str, Saved]]:
        """Images every stream holds now (any item) and the children of held lists; the uid
        and resourceVersion of each planned Image listed, saved in full."""
        held = self.held
        if held is None:
            held = set()
            for page in self.cluster.list_streams():
                for stream in page:
                    held.update(_held_by(stream))
        children: set[str] = set()
        saved: dict[str, Saved] = {}
        for page in self.cluster.list_images():
            records = []
            for image in page:
                meta = image.get("metadata") or {}
                name = meta.get("name")
                if name in held:
                    children.update(
                        m.get("digest") for m in image.get("dockerImageManifests") or [] if m
                    )
                if name in planned:
                    saved[name] = (meta.get("uid"), meta.get("resourceVersion"))
                    records.append({"record": "image", "image": image})
            self.journal.write(*records)
        self.journal.save()  # every page on disk before the first delete: one fsync
        return held | children, saved

    # -- 3. the Images deleted -----------------------------------------------------------------

    def delete_images(self, images: list[str], held: set[str], saved: dict[str, Saved]) -> None:
        for name in images:
            if name in held:
                self.act("Image", None, name, "kept", "an ImageStream holds it now")
            elif name not in saved:
                self.act("Image", None, name, "gone")
            else:
                self.delete_image(name, *saved[name])

    def delete_image(self, name: str, uid: str | None, resource_version: str | None) -> None:
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                status = self.cluster.delete_image(name, uid, resource_version)
                self.act("Image", None, name, status)
                return
            except NotFound:
                self.act("Image", None, name, "gone")
                return
            except Conflict as exc:  # changed since it was saved: save it as it is now
                if attempt == CONFLICT_RETRIES:
                    self.act("Image", None, name, "failed", exc)
                    return
            except MetadataError as exc:  # recorded, never counted as done
                self.act("Image", None, name, "failed", exc)
                return
            try:
                image = self.cluster.get_image(name)
            except NotFound:
                self.act("Image", None, name, "gone")
                return
            except MetadataError as exc:
                self.act("Image", None, name, "failed", exc)
                return
            self.journal.save({"record": "image", "image": image})
            uid, resource_version = image["metadata"]["uid"], image["metadata"]["resourceVersion"]


def _held_by(stream: dict[str, Any]) -> Iterator[str]:
    """The Images a stream's tag history items name."""
    for entry in (stream.get("status") or {}).get("tags") or []:
        yield from (i["image"] for i in entry.get("items") or [] if i.get("image"))


def _stream_record(stream: dict[str, Any], removed: list[dict[str, Any]]) -> dict[str, Any]:
    return {"record": "stream", "stream": stream, "removed": removed}


def execute_images_plan(run_dir: str, cluster: ImagesCluster) -> dict[str, int]:
    """Apply the plan in ``run_dir`` to ``cluster`` (a dry run's records instead of changing),
    saving what each change removes first; write ``images_actions.parquet``. A journal that
    cannot be written stops the run before the next change (:class:`JournalError`)."""
    run = Path(run_dir)
    by_stream, images = _planned(run)
    journal = Journal(run / JOURNAL_DIR, attempt_id(), cluster.dry_run, cluster.display)
    attempt = _Run(cluster, journal)
    try:
        with journal:
            attempt.update_streams(by_stream)
            held, saved = attempt.held_and_saved(set(images))
            attempt.delete_images(images, held, saved)
    except JournalError:  # the outcomes so far, if the disk still takes them
        with contextlib.suppress(OSError):
            _write_actions(run / ACTIONS_FILE, attempt.actions)
        raise
    _write_actions(run / ACTIONS_FILE, attempt.actions)
    counts: dict[str, int] = defaultdict(int)
    for row in attempt.actions:
        counts[f"{row['kind']}:{row['status']}"] += 1
    return dict(sorted(counts.items()))


def _write_actions(path: Path, actions: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("kind", pa.string()),
            ("namespace", pa.string()),
            ("name", pa.string()),
            ("status", pa.string()),
            ("detail", pa.string()),
            ("time", pa.timestamp("us", tz="UTC")),
        ]
    )
    columns = {n: [a[n] for a in actions] for n in schema.names}
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path)

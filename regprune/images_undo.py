"""Undoing a ``prune-images --confirm`` run from its journal (regprune/images_journal.py):
the Images it deleted created again, the tag history items it removed put back in place.

1. **Images** first (a history item then never names an Image that is not there): each saved
   Image this run deleted — or may have: an outcome lost to a kill counts as deleted — is
   ``POST``-ed as saved, minus the fields the server sets (uid, resourceVersion,
   creationTimestamp, generation, managedFields). One that exists again is left as it is.
   What the server derives (dockerImageMetadata, layers, the layer order annotation) it
   derives again from the same object; ``creationTimestamp`` is the undo's time — no client
   can set it — so the Image is young again for ``--keep-younger-than``.
2. **Streams**: for each saved change, the stream is read; the removed items not in it are
   put back where they were: after the nearest item that preceded them in the saved stream
   and is there now (else before the nearest that followed; else at the end), a tag emptied
   by the run comes back with its items. ``PUT .../status`` with the resourceVersion read; a
   409 reads again and recomputes. A stream that is gone, or was deleted and created again
   (another uid), is reported and not touched: its history belonged to an object that no
   longer exists, and creating a stream back would bring back its spec, which someone
   deleted on purpose.

Idempotent: items already there are not added twice, an existing Image is not replaced, so
an undo can be run again after a failure. Its own audit trail is RUN/images_undo/ (the
journal's format: a ``begin`` and one ``outcome`` per object). A dry run's journal, or Images
the run kept or found gone, are never acted on.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regprune.images_cluster import AlreadyExists, Conflict, ImagesCluster, NotFound
from regprune.images_journal import (
    JOURNAL_DIR,
    UNDO_DIR,
    Journal,
    attempt_id,
    journal_files,
    read_journal,
)
from regprune.metadata import MetadataError

CONFLICT_RETRIES = 5
SERVER_SET = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
"""Metadata the API server sets on a create (a create that carries a resourceVersion is
refused)."""
NOT_DELETED = frozenset({"kept", "gone", "would-delete"})
"""Image outcomes of prune-images that say this run did not delete it."""


class UndoError(RuntimeError):
    """The run folder holds nothing this undo may act on."""


@dataclass
class Saved:
    """What the confirmed attempts of a run saved: where each Image's last save is (file,
    record number) with its last outcome; the files to read the streams from."""

    files: list[Path] = field(default_factory=list)
    images: dict[str, tuple[int, int]] = field(default_factory=dict)
    image_outcomes: dict[str, str] = field(default_factory=dict)
    streams: int = 0


def saved_changes(run_dir: str | Path) -> Saved:
    """Index the journal of ``run_dir``'s confirmed attempts (a dry run's are skipped)."""
    files = journal_files(Path(run_dir) / JOURNAL_DIR)
    if not files:
        raise UndoError(
            f"{run_dir} has no prune-images journal ({JOURNAL_DIR}/): not a prune-images run, "
            "or one from before regprune saved what it changes - nothing undone"
        )
    saved = Saved()
    for path in files:
        records = read_journal(path)
        begin = next(records, None)
        if begin is None or begin.get("record") != "begin" or begin.get("dry_run"):
            continue
        number = len(saved.files)
        saved.files.append(path)
        for index, record in enumerate(records, start=1):
            kind = record.get("record")
            if kind == "image":
                name = record["image"]["metadata"]["name"]
                saved.images[name] = (number, index)
                saved.image_outcomes.pop(name, None)  # a later attempt saved it again
            elif kind == "stream":
                saved.streams += 1
            elif kind == "outcome" and record["kind"] == "Image":
                saved.image_outcomes[record["name"]] = record["status"]
    if not saved.files:
        raise UndoError(f"{run_dir} holds only dry runs of prune-images: nothing to undo")
    return saved


def _records(saved: Saved, kind: str) -> Iterator[tuple[int, int, dict[str, Any]]]:
    for number, path in enumerate(saved.files):
        for index, record in enumerate(read_journal(path)):
            if record.get("record") == kind:
                yield number, index, record


def recreatable(image: dict[str, Any]) -> dict[str, Any]:
    """The saved Image as a create: without what the server sets."""
    body = copy.deepcopy(image)
    meta = body.setdefault("metadata", {})
    for key in SERVER_SET:
        meta.pop(key, None)
    return body


def _key(item: dict[str, Any]) -> tuple[Any, ...]:
    """A tag history item's identity: an undo run twice adds it once."""
    return (
        item.get("image"),
        item.get("dockerImageReference"),
        item.get("created"),
        item.get("generation"),
    )


def restore_stream_status(
    current: dict[str, Any], before: dict[str, Any], removed: list[dict[str, Any]]
) -> tuple[dict[str, Any], int]:
    """``current`` with each removed item that is not in it put back in place (see the module
    docstring), and how many were put back."""
    new = copy.deepcopy(current)
    status = new.setdefault("status", {})
    tags = status.get("tags") or []
    entries = {entry.get("tag"): entry for entry in tags}
    saved_entries = {e.get("tag"): e for e in (before.get("status") or {}).get("tags") or []}
    by_tag: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for removal in removed:
        by_tag[removal["tag"]].append(removal)
    restored = 0
    for tag, entries_removed in by_tag.items():
        saved_items = (saved_entries.get(tag) or {}).get("items") or []
        if tag not in entries:  # emptied by the run: back, as it was saved, with its items
            entries[tag] = {**(saved_entries.get(tag) or {"tag": tag}), "items": []}
            tags.append(entries[tag])
        items = entries[tag].setdefault("items", [])
        for removal in sorted(entries_removed, key=lambda r: r["position"]):
            if _key(removal["item"]) in {_key(i) for i in items}:
                continue
            items.insert(_place(items, saved_items, removal["position"]), removal["item"])
            restored += 1
    status["tags"] = tags
    return new, restored


def _place(items: list[dict[str, Any]], saved_items: list[dict[str, Any]], position: int) -> int:
    """Where the item saved at ``position`` goes back: after the nearest item before it in the
    saved history that is there now, else before the nearest after it, else at the end."""
    keys = [_key(i) for i in items]
    for earlier in reversed(saved_items[:position]):
        if _key(earlier) in keys:
            return keys.index(_key(earlier)) + 1
    for later in saved_items[position + 1 :]:
        if _key(later) in keys:
            return keys.index(_key(later))
    return len(items)


@dataclass
class ImagesUndone:
    """What an undo did: outcomes counted by ``Kind:status``, tag history items put back."""

    run_dir: str
    counts: dict[str, int] = field(default_factory=dict)
    items: int = 0

    @property
    def failed(self) -> int:
        return sum(n for key, n in self.counts.items() if key.endswith(":failed"))

    @property
    def text(self) -> str:
        """The summary a person reads."""
        count = self.counts.get
        would = "would-" if any(":would-" in key for key in self.counts) else ""
        created = count("Image:created", 0) + count("Image:would-create", 0)
        updated = count("ImageStream:updated", 0) + count("ImageStream:would-update", 0)
        lines = [
            f"{'Would create' if would else 'Created'} {created} Image(s) again and "
            f"{'would put' if would else 'put'} {self.items} tag history item(s) back into "
            f"{updated} ImageStream(s) of {self.run_dir}"
        ]
        left = {
            "Image:exists": "Image(s) existed already",
            "ImageStream:unchanged": "ImageStream(s) held their items already",
            "ImageStream:gone": "ImageStream(s) deleted since, not created again",
            "ImageStream:replaced": "ImageStream(s) created again since (another uid), left",
            "Image:failed": "Image(s) failed",
            "ImageStream:failed": "ImageStream(s) failed",
        }
        lines += [f"  {count(key)} {label}" for key, label in left.items() if count(key)]
        return "\n".join(lines)


class _Undo:
    def __init__(self, cluster: ImagesCluster, journal: Journal, done: ImagesUndone):
        self.cluster = cluster
        self.journal = journal
        self.done = done
        self.counts: dict[str, int] = defaultdict(int)

    def act(
        self, kind: str, namespace: str | None, name: str, status: str, detail: Any = None
    ) -> None:
        self.journal.outcome(kind, namespace, name, status, detail)
        self.counts[f"{kind}:{status}"] += 1

    def images(self, saved: Saved) -> None:
        for number, index, record in _records(saved, "image"):
            name = record["image"]["metadata"]["name"]
            if saved.images.get(name) != (number, index):  # saved again later: that one
                continue
            if saved.image_outcomes.get(name) in NOT_DELETED:
                continue
            try:
                status = self.cluster.create_image(recreatable(record["image"]))
            except AlreadyExists:
                status = "exists"
            except MetadataError as exc:
                self.act("Image", None, name, "failed", exc)
                continue
            self.act("Image", None, name, status)

    def streams(self, saved: Saved) -> None:
        for _, _, record in _records(saved, "stream"):
            self.stream(record["stream"], record["removed"])

    def stream(self, before: dict[str, Any], removed: list[dict[str, Any]]) -> None:
        meta = before["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        for _attempt in range(CONFLICT_RETRIES + 1):
            try:
                current = self.cluster.get_stream(namespace, name)
            except NotFound:
                self.act("ImageStream", namespace, name, "gone", "not created again")
                return
            except MetadataError as exc:
                self.act("ImageStream", namespace, name, "failed", exc)
                return
            uid = (current.get("metadata") or {}).get("uid")
            if meta.get("uid") and uid != meta["uid"]:
                self.act(
                    "ImageStream", namespace, name, "replaced", f"uid {uid}, saved {meta['uid']}"
                )
                return
            new, restored = restore_stream_status(current, before, removed)
            if not restored:
                self.act("ImageStream", namespace, name, "unchanged", 0)
                return
            try:
                status = self.cluster.replace_stream_status(new)
            except Conflict:
                continue
            except NotFound:
                self.act("ImageStream", namespace, name, "gone", "not created again")
                return
            except MetadataError as exc:
                self.act("ImageStream", namespace, name, "failed", exc)
                return
            self.act("ImageStream", namespace, name, status, restored)
            self.done.items += restored
            return
        self.act("ImageStream", namespace, name, "failed", "changed on every attempt")


def undo_images(run_dir: str | Path, cluster: ImagesCluster) -> ImagesUndone:
    """Undo the prune-images run of ``run_dir`` on ``cluster`` (a dry run's records what it
    would do); each outcome is recorded in RUN/images_undo/."""
    saved = saved_changes(run_dir)
    journal = Journal(Path(run_dir) / UNDO_DIR, attempt_id(), cluster.dry_run, cluster.display)
    done = ImagesUndone(str(run_dir))
    undo = _Undo(cluster, journal, done)
    with journal:
        undo.images(saved)
        undo.streams(saved)
    done.counts = dict(sorted(undo.counts.items()))
    return done

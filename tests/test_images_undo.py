"""The undo of prune-images as a library: where removed tag history items go back, what an
Image is created from, and the journal that saves both before they change (no service; the
API round trips are tests/test_images_undo_api.py)."""

from __future__ import annotations

import copy
import errno
import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest

from regprune.images_execute import prune_stream_status
from regprune.images_journal import (
    JOURNAL_DIR,
    Journal,
    JournalError,
    journal_files,
    read_journal,
)
from regprune.images_undo import (
    ImagesUndone,
    UndoError,
    recreatable,
    restore_stream_status,
    saved_changes,
)
from tests.harness.openshift_api import fake_digest

D = [fake_digest(f"undo-{i}") for i in range(8)]


def item(n: int, created: str = "2024-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "created": created,
        "dockerImageReference": f"reg/ns/app@{D[n]}",
        "image": D[n],
        "generation": 1,
    }


def stream(tags: dict[str, list[dict[str, Any]]], uid: str = "u1") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "app", "uid": uid, "resourceVersion": "5"},
        "status": {
            "dockerImageRepository": "reg/ns/app",
            "tags": [{"tag": t, "items": items} for t, items in tags.items()],
        },
    }


def history(obj: dict[str, Any]) -> dict[str, list[str]]:
    return {t["tag"]: [i["image"] for i in t["items"]] for t in obj["status"].get("tags") or []}


def prune(before: dict[str, Any], removals: list[tuple[str, int]]) -> tuple[dict, list[dict]]:
    """What the executor does to ``before`` for the planned (tag, position) removals."""
    planned = [
        {"tag": tag, "position": position, "image": _items(before, tag)[position]["image"]}
        for tag, position in removals
    ]
    return prune_stream_status(before, planned)


def _items(obj: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return next(t["items"] for t in obj["status"]["tags"] if t["tag"] == tag)


def test_removed_items_go_back_where_they_were_and_an_emptied_tag_comes_back() -> None:
    before = stream(
        {"latest": [item(0), item(1), item(2), item(3)], "v1": [item(4)], "v2": [item(5)]}
    )
    before["status"]["tags"][1]["conditions"] = [{"type": "ImportSuccess", "status": "False"}]
    after, removed = prune(before, [("latest", 1), ("latest", 3), ("v1", 0)])
    assert history(after) == {"latest": [D[0], D[2]], "v2": [D[5]]}

    restored, count = restore_stream_status(after, before, removed)
    assert count == 3
    assert sorted(restored["status"]["tags"], key=lambda t: t["tag"]) == before["status"]["tags"]
    # run again over what it gave: nothing to add, nothing added twice
    again, count = restore_stream_status(restored, before, removed)
    assert count == 0 and again == restored


def test_items_go_back_around_what_changed_since_the_run() -> None:
    """A push since the run puts a new item on top; someone removed an item the run kept:
    the removed ones go back after their nearest predecessor still there (else before their
    nearest successor), and the history is otherwise left as it is now."""
    before = stream({"latest": [item(0), item(1), item(2), item(3), item(4)]})
    after, removed = prune(before, [("latest", 1), ("latest", 3), ("latest", 4)])
    assert history(after) == {"latest": [D[0], D[2]]}
    now = copy.deepcopy(after)
    now["status"]["tags"][0]["items"] = [item(6, "2025-01-01T00:00:00Z"), item(2)]  # 0 gone
    restored, count = restore_stream_status(now, before, removed)
    assert count == 3
    assert history(restored) == {"latest": [D[6], D[1], D[2], D[3], D[4]]}


def test_an_item_pushed_again_since_is_not_taken_for_the_one_removed() -> None:
    """The same image pushed again is a new event (another ``created``): the removed event
    goes back beside it, as the history had it."""
    before = stream({"latest": [item(0), item(1)]})
    after, removed = prune(before, [("latest", 1)])
    now = copy.deepcopy(after)
    now["status"]["tags"][0]["items"].insert(0, item(1, "2025-01-01T00:00:00Z"))
    restored, count = restore_stream_status(now, before, removed)
    assert count == 1
    assert history(restored) == {"latest": [D[1], D[0], D[1]]}


def test_an_image_is_created_from_what_was_saved_without_what_the_server_sets() -> None:
    saved = {
        "kind": "Image",
        "apiVersion": "image.openshift.io/v1",
        "metadata": {
            "name": D[0],
            "uid": "x",
            "resourceVersion": "12",
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "generation": 1,
            "managedFields": [{"manager": "m"}],
            "annotations": {"openshift.io/image.managed": "true"},
            "labels": {"a": "b"},
        },
        "dockerImageReference": f"reg/ns/app@{D[0]}",
        "dockerImageMetadata": {"Id": D[1], "Size": 3},
    }
    body = recreatable(saved)
    assert body["metadata"] == {
        "name": D[0],
        "annotations": {"openshift.io/image.managed": "true"},
        "labels": {"a": "b"},
    }
    assert {k: v for k, v in body.items() if k != "metadata"} == {
        k: v for k, v in saved.items() if k != "metadata"
    }
    assert saved["metadata"]["uid"] == "x"  # the saved record is not changed


def test_the_journal_reads_back_what_was_saved_and_drops_a_member_cut_short(
    tmp_path: Path,
) -> None:
    folder = tmp_path / JOURNAL_DIR
    with Journal(folder, "20260101T000000000000", False, "kube") as journal:
        journal.save({"record": "image", "image": {"metadata": {"name": D[0]}}})
        journal.outcome("Image", None, D[0], "deleted")
        journal.save({"record": "image", "image": {"metadata": {"name": D[1]}}})
    (path,) = journal_files(folder)
    records = list(read_journal(path))
    assert [r["record"] for r in records] == ["begin", "image", "outcome", "image"]
    assert records[0]["dry_run"] is False
    # gzip's own tools read it as one stream (zcat | jq): the members are concatenated
    size = path.stat().st_size
    assert gzip.decompress(path.read_bytes()).decode().splitlines() == [
        json.dumps(r, separators=(",", ":")) for r in records
    ]
    # a kill in the middle of the next member: what came before reads back, the rest is gone
    member = gzip.compress(json.dumps({"record": "image"}).encode() + b"\n")
    with path.open("ab") as out:
        out.write(member[: len(member) // 2])
    assert path.stat().st_size > size
    assert list(read_journal(path)) == records


def test_a_journal_that_cannot_be_written_says_so_in_one_error(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_DIR).write_text("a file where the folder goes")
    with pytest.raises(JournalError, match=r"cannot write the journal .* stopped before"):
        Journal(tmp_path / JOURNAL_DIR, "a", False, "kube")


def test_after_a_failed_write_the_journal_writes_nothing_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills: the member that did not reach the disk is taken back, and neither a
    later save nor the close (with the outcomes pending) writes after it."""
    journal = Journal(tmp_path / JOURNAL_DIR, "a", False, "kube")
    real = os.fsync

    def full(fd: int) -> None:
        if fd == journal.file.fileno():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(JournalError, match="No space left on device"):
        journal.save({"record": "image", "image": {"metadata": {"name": D[0]}}})
    journal.outcome("Image", None, D[1], "deleted")
    with pytest.raises(JournalError):
        journal.save({"record": "image", "image": {"metadata": {"name": D[2]}}})
    journal.close()
    (path,) = journal_files(tmp_path / JOURNAL_DIR)
    assert [r["record"] for r in read_journal(path)] == ["begin"]


def test_undo_refuses_a_folder_without_a_journal_and_a_dry_run(tmp_path: Path) -> None:
    with pytest.raises(UndoError, match="no prune-images journal"):
        saved_changes(tmp_path)
    with Journal(tmp_path / JOURNAL_DIR, "a", True, "kube") as journal:
        journal.save({"record": "image", "image": {"metadata": {"name": D[0]}}})
    with pytest.raises(UndoError, match="only dry runs"):
        saved_changes(tmp_path)


def test_undo_takes_the_last_save_of_an_image_and_skips_what_the_run_did_not_delete(
    tmp_path: Path,
) -> None:
    folder = tmp_path / JOURNAL_DIR
    with Journal(folder, "a", True, "kube") as journal:  # a dry run first: never acted on
        journal.save({"record": "image", "image": {"metadata": {"name": D[4]}}})
    with Journal(folder, "b", False, "kube") as journal:
        journal.save(
            *({"record": "image", "image": {"metadata": {"name": D[n]}}} for n in range(4))
        )
        journal.outcome("Image", None, D[0], "kept")
        journal.outcome("Image", None, D[1], "gone")
        # D[2] changed since it was saved: saved again, then deleted; D[3]: killed before
        # its outcome was written (may be deleted)
        journal.save({"record": "image", "image": {"metadata": {"name": D[2], "v": 2}}})
        journal.outcome("Image", None, D[2], "deleted")
    saved = saved_changes(tmp_path)
    assert len(saved.files) == 1
    assert set(saved.images) == {D[0], D[1], D[2], D[3]}
    assert saved.images[D[2]] == (0, 7)  # begin, 4 images, 2 outcomes, then the new save
    assert saved.image_outcomes == {D[0]: "kept", D[1]: "gone", D[2]: "deleted"}


def test_the_undo_summary_says_what_came_back_and_what_was_left() -> None:
    done = ImagesUndone(
        "RUN",
        {
            "Image:created": 3,
            "Image:exists": 1,
            "ImageStream:gone": 1,
            "ImageStream:updated": 2,
            "ImageStream:failed": 1,
        },
        items=5,
    )
    assert done.failed == 1
    assert done.text.splitlines() == [
        "Created 3 Image(s) again and put 5 tag history item(s) back into 2 ImageStream(s) of RUN",
        "  1 Image(s) existed already",
        "  1 ImageStream(s) deleted since, not created again",
        "  1 ImageStream(s) failed",
    ]
    dry = ImagesUndone("RUN", {"Image:would-create": 2, "ImageStream:would-update": 1}, 4)
    assert dry.text.startswith("Would create 2 Image(s) again and would put 4 tag history")


def dump_and_plan(tmp_path: Path, tagged: list[dict[str, Any]] | None = None) -> Path:
    """A dump (ns/app: latest = D0 D1 D2; ns/other: x = D2 and ``tagged``'s items; Images D0-D3)
    and a plan in the run folder ``tmp_path/run`` (app's D1 and D2 and a gone stream's D3
    removed; D1, D2, D3 deleted)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    app = stream({"latest": [item(0), item(1), item(2)]})
    other = stream({"x": [item(2), *(tagged or [])]})
    other["metadata"] = {"namespace": "ns", "name": "other", "uid": "u2"}
    images = [{"kind": "Image", "metadata": {"name": D[n], "uid": f"i{n}"}} for n in range(4)]
    dump = tmp_path / "dump.json"
    streams = [{"kind": "ImageStream", **s} for s in (app, other)]
    dump.write_text(json.dumps({"kind": "List", "items": images + streams}))
    run = tmp_path / "run"
    run.mkdir()
    revisions = [("app", "latest", 1, D[1]), ("app", "latest", 2, D[2]), ("gone", "t", 0, D[3])]
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "namespace": "ns",
                    "name": n,
                    "tag": t,
                    "position": p,
                    "image": i,
                    "action": "remove",
                }
                for n, t, p, i in revisions
            ]
        ),
        run / "images_tag_revisions.parquet",
    )
    pq.write_table(
        pa.Table.from_pylist([{"image": D[n], "action": "delete"} for n in (1, 2, 3)]),
        run / "images_plan.parquet",
    )
    return dump


DUMP_OUTCOMES = {
    "Image:kept": 1,
    "Image:would-delete": 2,
    "ImageStream:gone": 1,
    "ImageStream:would-update": 1,
}


def test_the_dry_run_executes_over_a_dump_and_reads_its_own_changes_back(tmp_path: Path) -> None:
    """The executor over a dump, the one way a dump is executed: wrapped in DryRunCluster.
    Once ns/app's revisions would be gone, only what other streams hold is kept."""
    from regprune.images_cluster import DryRunCluster, DumpCluster, cluster_for
    from regprune.images_execute import execute_images_plan
    from regprune.metadata import MetadataError, MetadataSource

    dump = dump_and_plan(tmp_path)
    run = tmp_path / "run"
    streams = json.loads(dump.read_text())["items"][4:]
    source = MetadataSource(str(dump), page_size=2)
    cluster = cluster_for(source, confirm=False)
    assert isinstance(cluster, DryRunCluster) and isinstance(cluster.cluster, DumpCluster)

    assert execute_images_plan(str(run), cluster) == DUMP_OUTCOMES
    assert cluster.changes == [("update-status", "ns/app"), ("delete", D[1]), ("delete", D[3])]
    assert history(cluster.get_stream("ns", "app")) == {"latest": [D[0]]}  # read back changed
    assert json.loads(dump.read_text())["items"][4:] == streams  # the dump is untouched
    (path,) = journal_files(run / JOURNAL_DIR)
    # a dry run changes nothing: its journal says it ran, and saves nothing to undo
    assert [r["record"] for r in read_journal(path)] == ["begin"]
    assert next(read_journal(path))["dry_run"] is True
    with pytest.raises(MetadataError, match="is a dump: it cannot be changed"):
        cluster.cluster.delete_image(D[0], None, None)


def test_a_dry_run_over_its_own_listing_reads_the_tables_as_the_cluster(tmp_path: Path) -> None:
    """A dry run of a plan made from the listing it just took reads that listing's tables
    (TablesCluster) instead of the cluster: the same objects as far as the executor reads
    them (the position of an item without a digest kept), so the same outcomes and changes."""
    from regprune.images_cluster import DryRunCluster, TablesCluster, cluster_for
    from regprune.images_execute import execute_images_plan
    from regprune.metadata import MetadataError, MetadataSource
    from regprune.tasks.metadata_snapshot import merge_metadata_tables, read_metadata_dump

    odd = {**item(4), "image": "not-a-digest"}
    dump = dump_and_plan(tmp_path, tagged=[odd, item(1)])  # ns/other: x = D2, ?, D1
    run = tmp_path / "run"
    source = MetadataSource(str(dump), page_size=2)
    listed = read_metadata_dump.fn(source, str(tmp_path / "parts"))
    merge_metadata_tables.fn([listed], str(run))
    tables = cluster_for(source, confirm=False, listed=run)
    assert isinstance(tables, DryRunCluster) and isinstance(tables.cluster, TablesCluster)
    live = cluster_for(source, confirm=False)

    def shape(obj: dict[str, Any]) -> tuple[Any, ...]:
        tags = (obj.get("status") or {}).get("tags") or []
        items = {
            t["tag"]: [i.get("image") if i.get("image") in D else None for i in t["items"]]
            for t in tags
        }
        return obj["metadata"]["namespace"], obj["metadata"]["name"], items

    assert [[shape(s) for s in page] for page in tables.list_streams()] == [
        [shape(s) for s in page] for page in live.list_streams()
    ]
    assert shape(tables.get_stream("ns", "other"))[2] == {"x": [D[2], None, D[1]]}
    pages = list(tables.list_images())  # in the API's order (the dump's is its own)
    assert [len(p) for p in pages] == [2, 2]
    names = [i["metadata"]["name"] for p in pages for i in p]
    assert names == sorted(i["metadata"]["name"] for p in live.list_images() for i in p)
    expected = {**DUMP_OUTCOMES, "Image:kept": 2, "Image:would-delete": 1}  # D1 held by other
    assert execute_images_plan(str(run), live) == expected
    assert execute_images_plan(str(run), tables) == expected
    assert tables.changes == live.changes
    with pytest.raises(MetadataError, match="cannot be changed"):
        tables.cluster.delete_image(D[0], None, None)

"""Executing a prune-images plan on the cluster: tag revisions out of ImageStreams' status,
then Images deleted — re-checked against the cluster as it is now.

1. Per stream with removed revisions: read it fresh, drop the planned items that are still at
   or below their planned position (a revision that moved up — someone removed newer ones — or
   was pushed again is kept), drop tags left empty, ``PUT .../status``; a 409 re-reads and
   recomputes (as oc's ``retry.RetryOnConflict``), a 404 means the stream is gone.
2. The streams are listed again; an Image any item now holds (or a child of a held list) is
   not deleted. Then ``DELETE /images/<name>``; a 404 counts as done.

Every outcome is a row of ``images_actions.parquet``.
"""

from __future__ import annotations

import copy
import functools
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from regprune.metadata import (
    GROUP,
    VERSION,
    MetadataSource,
    call_with_retries,
    custom_objects_api,
    list_pages,
)
from regprune.tables import sql_literal

CONFLICT_RETRIES = 5
ACTIONS_FILE = "images_actions.parquet"


def _planned(run_dir: Path) -> tuple[dict[tuple[str, str], list[dict]], list[str]]:
    with duckdb.connect() as con:
        revisions = con.execute(
            "SELECT namespace, name, tag, position, image FROM read_parquet("
            f"{sql_literal(run_dir / 'images_tag_revisions.parquet')}) WHERE action = 'remove'"
        ).fetchall()
        images = con.execute(
            f"SELECT image FROM read_parquet({sql_literal(run_dir / 'images_plan.parquet')}) "
            "WHERE action = 'delete' ORDER BY image"
        ).fetchall()
    by_stream: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for namespace, name, tag, position, image in revisions:
        by_stream[(namespace, name)].append({"tag": tag, "position": position, "image": image})
    return by_stream, [row[0] for row in images]


def prune_stream_status(stream: dict[str, Any], removals: list[dict]) -> tuple[dict, int]:
    """The stream with the planned items removed (where still safe); the count removed."""
    planned = {(r["tag"], r["image"]): r["position"] for r in removals}
    new = copy.deepcopy(stream)
    status = new.get("status") or {}
    removed = 0
    tags = []
    for entry in status.get("tags") or []:
        items = []
        for position, item in enumerate(entry.get("items") or []):
            at = planned.get((entry.get("tag"), item.get("image")))
            if at is not None and position >= at:
                removed += 1
                continue
            items.append(item)
        if items:
            tags.append({**entry, "items": items})
    status["tags"] = tags
    new["status"] = status
    return new, removed


def _api_error(exc: BaseException) -> int | None:
    cause = exc.__cause__
    return getattr(cause, "status", None)


def execute_images_plan(run_dir: str, source: MetadataSource) -> dict[str, int]:
    """Apply the plan in ``run_dir`` to the cluster; write ``images_actions.parquet``."""
    from kubernetes.client.exceptions import ApiException

    run = Path(run_dir)
    by_stream, images = _planned(run)
    api = custom_objects_api(source)
    actions: list[dict[str, Any]] = []

    def act(kind: str, namespace: str | None, name: str, status: str, detail: Any = None):
        actions.append(
            {
                "kind": kind,
                "namespace": namespace,
                "name": name,
                "status": status,
                "detail": None if detail is None else str(detail),
                "time": datetime.now(UTC),
            }
        )

    for (namespace, name), removals in sorted(by_stream.items()):
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                stream = api.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "imagestreams", name
                )
                new, removed = prune_stream_status(stream, removals)
                if removed:
                    api.replace_namespaced_custom_object_status(
                        GROUP, VERSION, namespace, "imagestreams", name, new
                    )
                act("ImageStream", namespace, name, "updated" if removed else "unchanged", removed)
                break
            except ApiException as exc:
                if exc.status == 404:
                    act("ImageStream", namespace, name, "gone")
                    break
                if exc.status == 409 and attempt < CONFLICT_RETRIES:
                    continue
                act("ImageStream", namespace, name, "failed", f"HTTP {exc.status} {exc.reason}")
                break

    held = _held_now(api, source)
    for image in images:
        if image in held:
            act("Image", None, image, "kept", "an ImageStream holds it now")
            continue
        try:
            call_with_retries(
                functools.partial(
                    api.delete_cluster_custom_object, GROUP, VERSION, "images", image
                ),
                f"delete image {image}",
                source.max_retries,
            )
            act("Image", None, image, "deleted")
        except Exception as exc:  # recorded, never counted as done
            if _api_error(exc) == 404:
                act("Image", None, image, "gone")
            else:
                act("Image", None, image, "failed", exc)
    _write_actions(run / ACTIONS_FILE, actions)
    counts: dict[str, int] = defaultdict(int)
    for row in actions:
        counts[f"{row['kind']}:{row['status']}"] += 1
    return dict(sorted(counts.items()))


def _held_now(api: Any, source: MetadataSource) -> set[str]:
    """Images every stream holds now (any item), and the children of held lists."""
    held: set[str] = set()
    for page in list_pages(api, "imagestreams", source):
        for stream in page:
            for entry in (stream.get("status") or {}).get("tags") or []:
                held.update(i.get("image") for i in entry.get("items") or [] if i.get("image"))
    children: set[str] = set()
    for page in list_pages(api, "images", source):
        for image in page:
            if (image.get("metadata") or {}).get("name") in held:
                children.update(
                    m.get("digest") for m in image.get("dockerImageManifests") or [] if m
                )
    return held | children


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

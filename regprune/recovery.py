"""Restore lost manifests as ``lost-found-<hex>`` tags, one ``ImageStreamMapping`` each.

``sql/check/recover_images.sql`` decides what every Image holds; this module shapes the JSON and
makes the API calls: batches of mappings on a few threads under one client-side rate limit,
creating a missing ImageStream and retrying as the reference does (restore.go,
``CreateImageStreamMapping``). A 409/422 for one mapping is recorded and the others go on;
429/5xx are retried with backoff; a 401/403 stops the whole recovery, since every later call
would fail the same way.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from regprune.layout import blob_data_path
from regprune.metadata import (
    GROUP,
    LAYERS_ORDER_ANNOTATION,
    MANAGED_ANNOTATION,
    VERSION,
    MetadataError,
    MetadataSource,
    call_with_retries,
)
from regprune.models import fetch_records
from regprune.snapshots import read_snapshot_summary
from regprune.storage import StorageSpec, open_storage
from regprune.tables import sql_literal

RECOVER_MODEL = "recover_images"
RESULTS_FILE = "recover_results.parquet"
RECOVER_BATCH = 500
"""Mappings per task run; batches run one after another, so the rate limit is global and a
403 stops before the next batch."""
RECOVER_THREADS = 4
"""Threads per batch, sharing the batch's rate limit."""
DEFAULT_RECOVER_RATE = 10.0
"""API requests per second (mappings, stream creations and retries alike)."""

API_VERSION = f"{GROUP}/{VERSION}"
BLOB_STORED_ANNOTATION = "image.openshift.io/manifestBlobStored"
DOCKER_IMAGE_METADATA_API_VERSION = "image.openshift.io/1.0"
STOPPING_STATUSES = frozenset({401, 403})
PLAN_ORDER = "is_list, namespace, name, digest"  # the order recover_images.sql writes

RESULT_SCHEMA = pa.schema(
    [
        ("namespace", pa.string()),
        ("name", pa.string()),
        ("digest", pa.string()),
        ("tag", pa.string()),
        ("status", pa.string()),  # added | failed | skipped
        ("error", pa.string()),
    ]
)


class RecoveryError(MetadataError):
    """Recovery cannot start, or had to stop; the message says why and what was done."""


# --- the objects -----------------------------------------------------------------------------


def image_for(row: Mapping[str, Any]) -> dict[str, Any]:
    """The Image the integrated registry creates for a push of this manifest."""
    image: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Image",
        "metadata": {
            "name": row["digest"],
            "annotations": {
                MANAGED_ANNOTATION: "true",
                BLOB_STORED_ANNOTATION: "true",
                # a list has no layers: OpenShift's registry sends the annotation empty
                LAYERS_ORDER_ANNOTATION: "" if row["is_list"] else row["layer_order"],
            },
        },
        "dockerImageReference": row["docker_image_reference"],
        "dockerImageManifestMediaType": row["media_type"],
        "dockerImageMetadataVersion": "1.0",
    }
    if row.get("manifest_text"):
        # What a push sends (and the reference's recover): the texts, from which the
        # apiserver derives dockerImageMetadata (Size, Architecture, Os, Created, Config) and
        # which it drops, as manifestBlobStored says.
        image["dockerImageManifest"] = row["manifest_text"]
        if row.get("config_text"):
            image["dockerImageConfig"] = row["config_text"]
    elif row["config_digest"]:
        image["dockerImageMetadata"] = {
            "kind": "DockerImage",
            "apiVersion": DOCKER_IMAGE_METADATA_API_VERSION,
            "Id": row["config_digest"],
        }
    if row["is_list"]:
        image["dockerImageManifests"] = [_child_manifest(child) for child in row["manifests"]]
    else:
        image["dockerImageLayers"] = [
            {"name": layer["digest"], "size": layer["size"], "mediaType": layer["media_type"]}
            for layer in row["layers"]
        ]
    return image


def _child_manifest(child: Mapping[str, Any]) -> dict[str, Any]:
    """The API requires architecture and os (empty when the list gives no platform)."""
    entry = {
        "digest": child["digest"],
        "mediaType": child["media_type"],
        "manifestSize": child["size"],
        "architecture": child["architecture"] or "",
        "os": child["os"] or "",
    }
    if child["variant"]:
        entry["variant"] = child["variant"]
    return entry


def mapping_for(row: Mapping[str, Any]) -> dict[str, Any]:
    """Tag ``lost-found-<hex>`` of ImageStream ``<namespace>/<name>`` -> the Image."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ImageStreamMapping",
        "metadata": {"namespace": row["namespace"], "name": row["name"]},
        "image": image_for(row),
        "tag": row["tag"],
    }


# --- the target ------------------------------------------------------------------------------


def check_recovery_target(run_dir: str, cluster: MetadataSource) -> None:
    """Candidates are only lost relative to the metadata the snapshot listed: recovering
    them into another cluster (or from a dump) would tag what that cluster may already have."""
    listed = read_snapshot_summary(run_dir)["metadata"]
    if not cluster.is_kube:
        raise RecoveryError("recovery writes to the cluster: it needs --metadata kube")
    if listed != cluster.display:
        raise RecoveryError(
            f"the snapshot's metadata was read from {listed!r} but recovery would write to "
            f"{cluster.display!r}: take a fresh snapshot from the cluster to recover into"
        )


# --- the API calls ---------------------------------------------------------------------------


class RateLimiter:
    """At most ``rate`` calls per second over all threads: each call takes the next slot."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.interval = 1.0 / rate
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._next = clock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self.sleep(slot - now)


def api_status(error: BaseException) -> tuple[int | None, dict[str, Any]]:
    """HTTP status and Status ``details`` of the API error behind a :class:`MetadataError`."""
    cause = error.__cause__
    status = getattr(cause, "status", None)
    try:
        details = json.loads(getattr(cause, "body", None) or "{}").get("details") or {}
    except (TypeError, ValueError, AttributeError):
        details = {}
    return status, details if isinstance(details, dict) else {}


class MappingCreator:
    """Creates the mappings of one batch; the first 401/403 stops every thread."""

    def __init__(
        self, api: Any, limiter: RateLimiter, cluster: MetadataSource, stopped: str | None
    ):
        self.api = api
        self.limiter = limiter
        self.max_retries = cluster.max_retries
        self.timeout = cluster.request_timeout
        self.stopped = stopped
        self._stop = threading.Event()
        if stopped:
            self._stop.set()

    def restore(self, rows: list[dict[str, Any]], not_restored: set[str]) -> list[dict[str, Any]]:
        """Manifests first, then lists whose children all have an Image."""
        singles = [row for row in rows if not row["is_list"]]
        results = self._each(singles, not_restored)
        failed = not_restored | {candidate_key(r) for r in results if r["status"] != "added"}
        return results + self._each([row for row in rows if row["is_list"]], failed)

    def _each(self, rows: list[dict[str, Any]], not_restored: set[str]) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(RECOVER_THREADS, thread_name_prefix="recover") as pool:
            return list(pool.map(lambda row: self._restore_one(row, not_restored), rows))

    def _restore_one(self, row: dict[str, Any], not_restored: set[str]) -> dict[str, Any]:
        if self._stop.is_set():
            return _result(row, "skipped", f"not attempted: recovery stopped ({self.stopped})")
        unrestored = [
            child["digest"]
            for child in row["manifests"]
            if f"{row['repository']}@{child['digest']}" in not_restored
        ]
        missing = [*row["missing_children"], *unrestored]
        if missing:
            return _result(
                row, "skipped", f"child manifest {missing[0]} has no Image and is not restored"
            )
        try:
            self._create_mapping(row)
        except MetadataError as exc:
            status, _ = api_status(exc)
            if status in STOPPING_STATUSES:
                self.stopped = self.stopped or str(exc)
                self._stop.set()
            return _result(row, "failed", str(exc))
        return _result(row, "added", None)

    def _call(self, call: Callable[[], Any], what: str) -> Any:
        def limited() -> Any:
            self.limiter.wait()
            return call()

        return call_with_retries(limited, what, self.max_retries)

    def _create_mapping(self, row: dict[str, Any]) -> None:
        namespace, name, body = row["namespace"], row["name"], mapping_for(row)
        what = f'create imagestreammappings.{GROUP} in namespace "{namespace}"'

        def create() -> Any:
            return self.api.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "imagestreammappings",
                body,
                _request_timeout=self.timeout,
            )

        try:
            self._call(create, what)
        except MetadataError as exc:
            status, details = api_status(exc)
            # The apiserver names the resource of the request in the 404 of the stream it did
            # not find ("imagestreammappings", as OpenShift's registry expects); older ones
            # named the stream's.
            stream_missing = (
                status == 404
                and str(details.get("kind", "")).lower()
                in ("imagestreammappings", "imagestream", "imagestreams")
                and details.get("name") == name
            )
            if not stream_missing:
                raise
            self._create_stream(namespace, name)
            self._call(create, what)

    def _create_stream(self, namespace: str, name: str) -> None:
        body = {
            "apiVersion": API_VERSION,
            "kind": "ImageStream",
            "metadata": {"namespace": namespace, "name": name},
        }
        try:
            self._call(
                lambda: self.api.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "imagestreams", body, _request_timeout=self.timeout
                ),
                f'create imagestreams.{GROUP} "{name}" in namespace "{namespace}"',
            )
        except MetadataError as exc:
            if api_status(exc)[0] != 409:  # created meanwhile (another thread, another user)
                raise


def candidate_key(row: Mapping[str, Any]) -> str:
    return f"{row['repository']}@{row['digest']}"


def _result(row: Mapping[str, Any], status: str, error: str | None) -> dict[str, Any]:
    return {
        "namespace": row["namespace"],
        "name": row["name"],
        "repository": row["repository"],
        "digest": row["digest"],
        "tag": row["tag"],
        "status": status,
        "error": error,
    }


def _blob_text(data: bytes | Exception | None, digest: str) -> str | None:
    """A stored blob's text when it is there and matches its digest, else None."""
    if not isinstance(data, bytes) or f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def attach_texts(rows: list[dict[str, Any]], spec: StorageSpec) -> None:
    """Add each manifest's text and its config's (``manifest_text``, ``config_text``), read
    from storage, so its Image is the one a push creates: openshift-apiserver derives the
    metadata from them (from a list's text too: its ``dockerImageMetadata.Id`` is the list's
    own digest, as for a pushed list). A blob that cannot be read as it was when checked
    leaves the row in the metadata form (``dockerImageMetadata.Id``; a list: its children)."""
    wanted = {
        blob_data_path(digest): digest
        for row in rows
        for digest in (row["digest"], row["config_digest"])
        if digest
    }
    if not wanted:
        return
    contents = open_storage(spec).read_many(list(wanted))
    for row in rows:
        manifest = _blob_text(contents.get(blob_data_path(row["digest"])), row["digest"])
        config = None
        if row["config_digest"]:
            path = blob_data_path(row["config_digest"])
            config = _blob_text(contents.get(path), row["config_digest"])
        if manifest is not None and (config is not None or not row["config_digest"]):
            row["manifest_text"], row["config_text"] = manifest, config


def read_plan_rows(images_path: str, offset: int, limit: int) -> list[dict[str, Any]]:
    with duckdb.connect() as con:
        return fetch_records(
            con.execute(
                f"SELECT * FROM read_parquet({sql_literal(images_path)}) "
                f"ORDER BY {PLAN_ORDER} LIMIT ? OFFSET ?",
                [limit, offset],
            )
        )


def write_results(results: Iterable[Mapping[str, Any]], path: Path) -> Path:
    rows = list(results)
    columns = {name: [row[name] for row in rows] for name in RESULT_SCHEMA.names}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pydict(columns, schema=RESULT_SCHEMA), path)
    return path

"""The cluster as prune-images' executor and its undo see it: ImageStreams and Images, read
in pages and changed one object at a time — and the one place that decides whether a change
is made or only recorded.

:func:`cluster_for` is that place: the confirmed run gets :class:`KubeCluster` (the API),
the dry run the same wrapped in :class:`DryRunCluster`, which reads through and answers each
change with its ``would-…`` outcome without a request (as ``DryRunStorage`` does for the
hard prune). A dump is read by :class:`DumpCluster` (it cannot be changed: a dry run only).
A dry run whose plan was made from a listing this run just took reads that listing
(:class:`TablesCluster`, the run's tables) instead of the cluster again.
The executor (regprune/images_execute.py) runs unchanged over any of them.

Errors the executor decides on are typed (:class:`NotFound`, :class:`Conflict`,
:class:`AlreadyExists`); everything else is a :class:`~regprune.metadata.MetadataError`
with one line to say.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from regprune.metadata import (
    GROUP,
    VERSION,
    MetadataError,
    MetadataSource,
    call_with_retries,
    custom_objects_api,
    list_pages,
    read_dump_objects,
)
from regprune.tables import sql_literal

Page = list[dict[str, Any]]


class ClusterError(MetadataError):
    """An API answer the caller decides on (``status`` is the HTTP status)."""

    status = 0

    def __init__(self, message: str, after_retry: bool = False):
        super().__init__(message)
        self.after_retry = after_retry
        """An earlier attempt of the same call got no answer (or a 5xx): it may have applied."""


class NotFound(ClusterError):
    status = 404


class Conflict(ClusterError):
    """409: a stale resourceVersion or a failed precondition."""

    status = 409


class AlreadyExists(Conflict):
    """409 AlreadyExists: a create of an object that exists."""


class ImagesCluster:
    """What the executor and the undo read and change. Each change returns its outcome word
    (``updated``, ``deleted``, ``created``; a dry run's ``would-…``)."""

    dry_run = False
    display = "cluster"
    frozen = False
    """Nothing but this run changes it (a listing read back): the executor need not list again
    to see what others changed meanwhile."""

    def list_streams(self) -> Iterator[Page]:
        raise NotImplementedError

    def list_images(self) -> Iterator[Page]:
        raise NotImplementedError

    def get_stream(self, namespace: str, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def get_image(self, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def replace_stream_status(self, stream: dict[str, Any]) -> str:
        """``PUT .../imagestreams/NAME/status`` with the stream's resourceVersion."""
        raise NotImplementedError

    def delete_image(self, name: str, uid: str | None, resource_version: str | None) -> str:
        """``DELETE /images/NAME`` on the preconditions that it is still this object as read
        (uid and resourceVersion), so what was saved is what was deleted."""
        raise NotImplementedError

    def create_image(self, image: dict[str, Any]) -> str:
        raise NotImplementedError


def _stream_key(namespace: str, name: str) -> str:
    return f"imagestream {namespace}/{name}"


class KubeCluster(ImagesCluster):
    """The cluster through the official client: reads and changes retried on 429, 5xx and
    lost connections (regprune/metadata.py call_with_retries)."""

    def __init__(self, source: MetadataSource):
        self.source = source
        self.api = custom_objects_api(source)
        self.display = source.display

    def _call(self, call: Callable[[], Any], what: str) -> Any:
        attempts = 0

        def once() -> Any:
            nonlocal attempts
            attempts += 1
            return call()

        try:
            return call_with_retries(once, what, self.source.max_retries)
        except MetadataError as exc:
            status = getattr(exc.__cause__, "status", None)
            retried = attempts > 1
            if status == 404:
                raise NotFound(str(exc), retried) from exc
            if status == 409:
                reason = _reason(exc.__cause__)
                error = AlreadyExists if reason == "AlreadyExists" else Conflict
                raise error(str(exc), retried) from exc
            raise

    def list_streams(self) -> Iterator[Page]:
        return list_pages(self.api, "imagestreams", self.source)

    def list_images(self) -> Iterator[Page]:
        return list_pages(self.api, "images", self.source)

    def get_stream(self, namespace: str, name: str) -> dict[str, Any]:
        call = functools.partial(
            self.api.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "imagestreams",
            name,
            _request_timeout=self.source.request_timeout,
        )
        return self._call(call, f"get {_stream_key(namespace, name)}")

    def get_image(self, name: str) -> dict[str, Any]:
        call = functools.partial(
            self.api.get_cluster_custom_object,
            GROUP,
            VERSION,
            "images",
            name,
            _request_timeout=self.source.request_timeout,
        )
        return self._call(call, f"get image {name}")

    def replace_stream_status(self, stream: dict[str, Any]) -> str:
        meta = stream["metadata"]
        call = functools.partial(
            self.api.replace_namespaced_custom_object_status,
            GROUP,
            VERSION,
            meta["namespace"],
            "imagestreams",
            meta["name"],
            stream,
            _request_timeout=self.source.request_timeout,
        )
        self._call(call, f"update the status of {_stream_key(meta['namespace'], meta['name'])}")
        return "updated"

    def delete_image(self, name: str, uid: str | None, resource_version: str | None) -> str:
        preconditions = {"uid": uid, "resourceVersion": resource_version}
        body = {"preconditions": {k: v for k, v in preconditions.items() if v}}
        call = functools.partial(
            self.api.delete_cluster_custom_object,
            GROUP,
            VERSION,
            "images",
            name,
            body=body,
            _request_timeout=self.source.request_timeout,
        )
        try:
            self._call(call, f"delete image {name}")
        except NotFound as exc:
            if exc.after_retry:  # an attempt without an answer deleted it
                return "deleted"
            raise
        return "deleted"

    def create_image(self, image: dict[str, Any]) -> str:
        call = functools.partial(
            self.api.create_cluster_custom_object,
            GROUP,
            VERSION,
            "images",
            image,
            field_manager="regprune",
            _request_timeout=self.source.request_timeout,
        )
        try:
            self._call(call, f"create image {image['metadata']['name']}")
        except AlreadyExists as exc:
            if exc.after_retry:  # an attempt without an answer created it
                return "created"
            raise
        return "created"


def _reason(exc: Any) -> str | None:
    try:
        return json.loads(exc.body).get("reason")
    except (TypeError, ValueError, AttributeError):
        return None


class DryRunCluster(ImagesCluster):
    """Reads through ``cluster``; each change is recorded in ``changes`` (verb, what) and
    answered with its ``would-…`` outcome, without a request. What it would have changed it
    reads back as changed (a stream's status as it would be written, an Image deleted is not
    found, one created is), so the steps after a change — the executor's re-check of what
    the streams hold once their revisions are gone — see what the confirmed run would see."""

    dry_run = True

    def __init__(self, cluster: ImagesCluster):
        self.cluster = cluster
        self.display = cluster.display
        self.frozen = cluster.frozen
        self.changes: list[tuple[str, str]] = []
        self.streams: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self.created: dict[str, dict[str, Any]] = {}

    def _stream(self, stream: dict[str, Any]) -> dict[str, Any]:
        meta = stream.get("metadata") or {}
        return self.streams.get((str(meta.get("namespace")), str(meta.get("name"))), stream)

    def list_streams(self) -> Iterator[Page]:
        for page in self.cluster.list_streams():
            yield [self._stream(stream) for stream in page]

    def list_images(self) -> Iterator[Page]:
        for page in self.cluster.list_images():
            yield [i for i in page if (i.get("metadata") or {}).get("name") not in self.deleted]
        if self.created:
            yield list(self.created.values())

    def get_stream(self, namespace: str, name: str) -> dict[str, Any]:
        return self._stream(self.cluster.get_stream(namespace, name))

    def get_image(self, name: str) -> dict[str, Any]:
        if name in self.created:
            return self.created[name]
        if name in self.deleted:
            raise NotFound(f"image {name} would be deleted")
        return self.cluster.get_image(name)

    def replace_stream_status(self, stream: dict[str, Any]) -> str:
        meta = stream["metadata"]
        self.streams[(meta["namespace"], meta["name"])] = stream
        self.changes.append(("update-status", f"{meta['namespace']}/{meta['name']}"))
        return "would-update"

    def delete_image(self, name: str, uid: str | None, resource_version: str | None) -> str:
        if name in self.deleted:  # as the API would answer (no request: a dry run's cost
            raise NotFound(f"image {name} would be deleted")  # is the reads it shares)
        self.created.pop(name, None)
        self.deleted.add(name)
        self.changes.append(("delete", name))
        return "would-delete"

    def create_image(self, image: dict[str, Any]) -> str:
        name = image["metadata"]["name"]
        try:
            self.get_image(name)
        except NotFound:
            self.deleted.discard(name)
            self.created[name] = image
            self.changes.append(("create", name))
            return "would-create"
        raise AlreadyExists(f"image {name} exists")


class DumpCluster(ImagesCluster):
    """A dump of ``oc get images,imagestreams -A -o json`` as the cluster: read in pages as the
    API would list it (in the dump's order); it cannot be changed."""

    def __init__(self, source: MetadataSource):
        self.source = source
        self.display = source.display

    def _pages(self, kind: str) -> Iterator[Page]:
        page: Page = []
        for obj in read_dump_objects(self.source.source):
            if obj.get("kind") == kind:
                page.append(obj)
                if len(page) == self.source.page_size:
                    yield page
                    page = []
        if page:
            yield page

    def list_streams(self) -> Iterator[Page]:
        return self._pages("ImageStream")

    def list_images(self) -> Iterator[Page]:
        return self._pages("Image")

    def _find(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        for page in self._pages(kind):
            for obj in page:
                meta = obj.get("metadata") or {}
                if meta.get("name") == name and meta.get("namespace") == namespace:
                    return obj
        raise NotFound(f"{kind} {namespace + '/' if namespace else ''}{name} not in the dump")

    def get_stream(self, namespace: str, name: str) -> dict[str, Any]:
        return self._find("ImageStream", namespace, name)

    def get_image(self, name: str) -> dict[str, Any]:
        return self._find("Image", None, name)

    def _unchangeable(self) -> str:
        raise MetadataError(f"{self.source.display} is a dump: it cannot be changed")

    def replace_stream_status(self, stream: dict[str, Any]) -> str:
        return self._unchangeable()

    def delete_image(self, name: str, uid: str | None, resource_version: str | None) -> str:
        return self._unchangeable()

    def create_image(self, image: dict[str, Any]) -> str:
        return self._unchangeable()


class TablesCluster(ImagesCluster):
    """The listing a run took moments ago, as the cluster: its tables (``imagestreams``,
    ``imagestream_tags``, ``images``, the manifest list children of ``image_blobs``) read back
    as the objects the executor reads — the streams' tag history items (``image``,
    ``dockerImageReference``) at their positions, each Image's name and children — in the
    API's order (namespace and name; Image name), in pages of ``page_size``.

    Why: a dry run of a plan made from this listing would list the cluster again only to read
    what it read seconds ago (at 100k Images: the streams twice and every Image once more).
    Read-only (a dry run only, wrapped in :class:`DryRunCluster`); a confirmed run always reads
    the cluster."""

    frozen = True

    def __init__(self, run_dir: str | Path, display: str, page_size: int = 500):
        self.run_dir = Path(run_dir)
        self.display = display
        self.page_size = page_size

    def _table(self, name: str) -> str:
        return f"read_parquet({sql_literal(self.run_dir / f'{name}.parquet')})"

    def _rows(self, query: str, *params: Any) -> Iterator[tuple[Any, ...]]:
        import duckdb

        with duckdb.connect() as con:  # through Arrow: DuckDB's own rows cost 3x the CPU
            for batch in con.sql(query, params=list(params)).to_arrow_reader(10_000):
                yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)

    def _streams(self, where: str = "", *params: Any) -> Iterator[dict[str, Any]]:
        rows = self._rows(
            f"SELECT s.namespace, s.name, s.uid, t.tag, t.position, t.image, "
            f"t.docker_image_reference FROM {self._table('imagestreams')} AS s "
            f"LEFT JOIN {self._table('imagestream_tags')} AS t USING (namespace, name) {where} "
            "ORDER BY s.namespace, s.name, t.tag NULLS FIRST, t.position",
            *params,
        )
        stream: dict[str, Any] | None = None
        for namespace, name, uid, tag, position, image, reference in rows:
            if stream is None or (namespace, name) != _key(stream):
                if stream is not None:
                    yield stream
                meta = {"namespace": namespace, "name": name, "uid": uid}
                stream = {"kind": "ImageStream", "metadata": meta, "status": {"tags": []}}
            if position is None:  # a stream without tag history
                continue
            tags = stream["status"]["tags"]
            if not tags or tags[-1]["tag"] != tag:
                tags.append({"tag": tag, "items": []})
            items = tags[-1]["items"]
            if position > len(items):  # an item not recorded: keep the positions
                items.extend({} for _ in range(position - len(items)))
            items.append({"image": image, "dockerImageReference": reference})
        if stream is not None:
            yield stream

    def _images(self, where: str = "", *params: Any) -> Iterator[dict[str, Any]]:
        rows = self._rows(
            f"SELECT i.image, list(c.digest ORDER BY c.position) FILTER (c.digest IS NOT NULL) "
            f"FROM {self._table('images')} AS i LEFT JOIN (SELECT image, digest, position "
            f"FROM {self._table('image_blobs')} WHERE kind = 'manifest_list_child') AS c "
            f"USING (image) {where} GROUP BY i.image ORDER BY i.image",
            *params,
        )
        for name, children in rows:
            image: dict[str, Any] = {"kind": "Image", "metadata": {"name": name}}
            if children:
                image["dockerImageManifests"] = [{"digest": d} for d in children]
            yield image

    def _pages(self, objects: Iterator[dict[str, Any]]) -> Iterator[Page]:
        page: Page = []
        for obj in objects:
            page.append(obj)
            if len(page) == self.page_size:
                yield page
                page = []
        if page:
            yield page

    def list_streams(self) -> Iterator[Page]:
        return self._pages(self._streams())

    def list_images(self) -> Iterator[Page]:
        return self._pages(self._images())

    def get_stream(self, namespace: str, name: str) -> dict[str, Any]:
        found = self._streams("WHERE s.namespace = ? AND s.name = ?", namespace, name)
        stream = next(found, None)
        if stream is None:
            raise NotFound(f"{_stream_key(namespace, name)} not in the listing")
        return stream

    def get_image(self, name: str) -> dict[str, Any]:
        image = next(self._images("WHERE i.image = ?", name), None)
        if image is None:
            raise NotFound(f"image {name} not in the listing")
        return image

    def _unchangeable(self) -> str:
        raise MetadataError(f"the listing in {self.run_dir} cannot be changed")

    def replace_stream_status(self, stream: dict[str, Any]) -> str:
        return self._unchangeable()

    def delete_image(self, name: str, uid: str | None, resource_version: str | None) -> str:
        return self._unchangeable()

    def create_image(self, image: dict[str, Any]) -> str:
        return self._unchangeable()


def _key(stream: dict[str, Any]) -> tuple[str, str]:
    return stream["metadata"]["namespace"], stream["metadata"]["name"]


def cluster_for(
    source: MetadataSource, confirm: bool, listed: str | Path | None = None
) -> ImagesCluster:
    """The cluster a run acts on: the mode of prune-images is decided here and nowhere else.
    ``listed``: the run folder whose tables this run listed from ``source`` moments ago; a dry
    run reads them (:class:`TablesCluster`) instead of the cluster. A confirmed run reads the
    cluster whatever was listed before: its re-check is what makes its changes safe."""
    if confirm:
        return KubeCluster(source) if source.is_kube else DumpCluster(source)
    if listed is not None:
        return DryRunCluster(TablesCluster(listed, source.display, source.page_size))
    return DryRunCluster(KubeCluster(source) if source.is_kube else DumpCluster(source))

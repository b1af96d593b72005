"""Cluster metadata (OpenShift ``Image`` and ``ImageStream`` objects) as table rows.

Two sources share every row function: the live API through the official ``kubernetes``
client (paginated, retried) and a dump written by ``oc get images,imagestreams -A -o json``.
A listing that cannot complete raises: later steps delete what is *not* listed, so a
partial listing must never pass for a complete one.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from regprune import interrupts
from regprune.layout import is_digest
from regprune.mediatypes import IMAGE_MEDIA_TYPES
from regprune.retries import backoff

GROUP = "image.openshift.io"
VERSION = "v1"
MANAGED_ANNOTATION = "openshift.io/image.managed"
LAYERS_ORDER_ANNOTATION = "image.openshift.io/dockerLayersOrder"
MEDIA_TYPES_WITH_CONFIG = IMAGE_MEDIA_TYPES  # schema 2 and OCI manifests name a config blob
RETRY_BASE_SECONDS = 0.5
"""First backoff delay of a retried API call; it doubles per attempt (with jitter) up to
``RETRY_MAX_SECONDS``. Module-level so tests (and impatient operators) can shorten it."""
RETRY_MAX_SECONDS = 30.0
RETRY_AFTER_MAX_SECONDS = 60.0
"""A server's ``Retry-After`` is honoured up to this many seconds."""
TIMED_OUT_ATTEMPTS = 3
"""Attempts of a call whose requests run out of time (regprune/timeouts.py): a silent server
fails a listing after three read timeouts, not seven."""


class MetadataError(RuntimeError):
    """The metadata could not be read completely; nothing may be decided from it."""


@dataclass(frozen=True)
class Listed:
    """What one listing task read: its Parquet part of each table, the objects it read per
    kind and the pages it took; ``missing`` when the API does not serve that kind at all."""

    parts: dict[str, str]
    objects: dict[str, int]
    pages: int = 0
    missing: bool = False


@dataclass(frozen=True)
class MetadataSource:
    """``kube`` (with optional kubeconfig and context) or a dump file / folder of dumps."""

    source: str = "kube"
    kubeconfig: str | None = None
    context: str | None = None
    page_size: int = 500
    max_retries: int = 6
    request_timeout: float | None = None
    """Seconds for a whole API call; None: the bounds of every API call (regprune/timeouts.py:
    connect, read and request timeouts), which apply in any case."""

    @property
    def is_kube(self) -> bool:
        return self.source == "kube"

    @property
    def display(self) -> str:
        if not self.is_kube:
            return str(self.source)
        parts = ["kube"]
        if self.context:
            parts.append(f"context={self.context}")
        return " ".join(parts)


# --- rows ------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):  # an unquoted timestamp in a hand-written YAML dump
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# A dump may be edited by hand: every field is checked for its type, so a wrong one becomes an
# anomaly (or a null) instead of a traceback or a non-string in a string column.


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _sequence(
    value: Any, what: str, anomalies: list[dict], owner: tuple[str, str | None, Any]
) -> list[Any]:
    """A list field; anything else but null is an anomaly (and counts as empty)."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    anomalies.append(_anomaly(*owner, f"{what} is not a list"))
    return []


def image_rows(obj: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict], list[dict]]:
    """(images row, image_blobs rows, metadata_anomalies rows) for one ``Image``."""
    meta = _mapping(obj.get("metadata"))
    name = meta.get("name")
    if not is_digest(name):
        return None, [], [_anomaly("Image", None, name, "Image name is not a sha256 digest")]
    owner = ("Image", None, name)
    annotations = _mapping(meta.get("annotations"))
    media_type = _text(obj.get("dockerImageManifestMediaType")) or None
    docker_metadata = obj.get("dockerImageMetadata") or {}
    config = docker_metadata.get("Id") if isinstance(docker_metadata, dict) else None
    # Without a media type an Id that is a digest may still be a config: keeping it is safe.
    may_have_config = media_type is None or media_type in MEDIA_TYPES_WITH_CONFIG
    config_digest = config if may_have_config and is_digest(config) else None
    anomalies: list[dict] = []
    layers = list(_sequence(obj.get("dockerImageLayers"), "dockerImageLayers", anomalies, owner))
    children = _sequence(obj.get("dockerImageManifests"), "dockerImageManifests", anomalies, owner)
    # The Image as OpenShift's registry sends it (kept so without the apiserver's strategy):
    # dockerImageMetadata null, the manifest as text. The text says what the Image references.
    text = _manifest_text(obj, anomalies, owner)
    if annotations.get(LAYERS_ORDER_ANNOTATION) == "descending":
        layers.reverse()
    if text is not None:
        media_type = media_type or text.media_type
        config_digest = config_digest or next(
            (r.digest for r in text.references if r.kind == "config"), None
        )
        if not layers:
            layers = [
                {"name": r.digest, "size": r.size} for r in text.references if r.kind == "layer"
            ]
            if text.layer_order == "descending":
                layers.reverse()
        if not children:
            children = [
                {"digest": r.digest, "manifestSize": r.size}
                for r in text.references
                if r.kind == "manifest"
            ]
    blobs = [_blob(name, name, "manifest", None, None)]
    if config_digest:
        blobs.append(_blob(name, config_digest, "config", None, None))
    for position, layer in enumerate(layers):
        digest = layer.get("name") if isinstance(layer, dict) else None
        if not is_digest(digest):
            anomalies.append(_anomaly(*owner, f"layer {position} is not a digest"))
            continue
        blobs.append(_blob(name, digest, "layer", position, layer.get("size")))
    for position, child in enumerate(children):
        digest = child.get("digest") if isinstance(child, dict) else None
        if not is_digest(digest):
            anomalies.append(_anomaly(*owner, f"manifest {position} is not a digest"))
            continue
        blobs.append(
            _blob(name, digest, "manifest_list_child", position, child.get("manifestSize"))
        )
    row = {
        "image": name,
        "managed": annotations.get(MANAGED_ANNOTATION) == "true",
        "media_type": media_type,
        "docker_image_reference": _text(obj.get("dockerImageReference")),
        "config_digest": config_digest,
        "created": parse_time(meta.get("creationTimestamp")),
    }
    return row, blobs, anomalies


def _manifest_text(
    obj: dict[str, Any], anomalies: list[dict], owner: tuple[str, str | None, Any]
) -> Any:
    """The parsed ``dockerImageManifest`` text, None when absent; a text that does not parse
    is an anomaly (the Image then is not read in full, which stops a deletion)."""
    text = obj.get("dockerImageManifest")
    if not isinstance(text, str) or not text:
        return None
    from regprune.manifests import ManifestError, parse_manifest

    try:
        return parse_manifest(text.encode())
    except ManifestError as exc:
        anomalies.append(_anomaly(*owner, f"dockerImageManifest does not parse: {exc}"))
        return None


def _blob(image: str, digest: str, kind: str, position: int | None, size: Any) -> dict:
    return {
        "image": image,
        "digest": digest,
        "kind": kind,
        "position": position,
        "size": size if isinstance(size, int) and not isinstance(size, bool) else None,
    }


def imagestream_rows(obj: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict], list[dict]]:
    """(imagestreams row, imagestream_tags rows, metadata_anomalies rows) for one stream."""
    meta = _mapping(obj.get("metadata"))
    namespace, name = meta.get("namespace"), meta.get("name")
    if not namespace or not name or not isinstance(namespace, str) or not isinstance(name, str):
        return None, [], [_anomaly("ImageStream", _text(namespace), name, "no namespace or name")]
    owner = ("ImageStream", namespace, name)
    row = {
        "namespace": namespace,
        "name": name,
        "uid": _text(meta.get("uid")),
        "created": parse_time(meta.get("creationTimestamp")),
    }
    tags: list[dict] = []
    anomalies: list[dict] = []
    status = _mapping(obj.get("status"))
    for index, tag in enumerate(_sequence(status.get("tags"), "status.tags", anomalies, owner)):
        tag = _mapping(tag)
        raw_name = tag.get("tag")
        tag_name = raw_name if isinstance(raw_name, str) and raw_name else None
        if tag_name is None:  # its items are still recorded: they keep their images
            problem = (
                "has no tag name"
                if raw_name in (None, "")
                else f"tag name {raw_name!r} is not a string (quote it in YAML)"
            )
            anomalies.append(_anomaly(*owner, f"status.tags[{index}] {problem}"))
        items = _sequence(tag.get("items"), f"tag {tag_name} items", anomalies, owner)
        for position, item in enumerate(items):
            item = _mapping(item)
            image = item.get("image")
            if not is_digest(image):
                problem = f"tag {tag_name} item {position} image is not a digest"
                anomalies.append(_anomaly(*owner, problem))
            tags.append(
                {
                    "namespace": namespace,
                    "name": name,
                    "tag": tag_name,
                    "position": position,
                    "image": image if is_digest(image) else None,
                    "docker_image_reference": _text(item.get("dockerImageReference")),
                    "created": parse_time(item.get("created")),
                }
            )
    return row, tags, anomalies


def _anomaly(kind: str, namespace: str | None, name: Any, problem: str) -> dict:
    return {"kind": kind, "namespace": namespace, "name": str(name), "problem": problem}


# --- the garbage collector while rows are made ------------------------------------------------

GC_YOUNG_THRESHOLD = 50_000
"""Container allocations between collections of the youngest generation while objects are
turned into rows (Python's default: 700). A page of 500 Images allocates some 15,000 dicts and
lists that die with the page; collecting every 700 made the listing of 100k Images 20-25 %
dearer in CPU (2.95-3.07 s instead of 2.26-2.50 s, bench notes in bench/RESULTS.md)."""

_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect the youngest generation less often inside the block (process-wide: the
    threshold is the interpreter's; nested and concurrent blocks share one raise, and the
    last one out restores the setting it found)."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(GC_YOUNG_THRESHOLD, _gc_saved[0]), *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                _gc_saved = None


# --- dumps -----------------------------------------------------------------------------------

LIST_KINDS = ("List", "ImageList", "ImageStreamList")


def read_dump_objects(source: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every object of a JSON/YAML dump (a ``List``, typed list, single object or a stream of
    YAML documents), or of every such file in a folder, sorted by name."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".yaml", ".yml"))
        if not files:
            raise MetadataError(f"no .json, .yaml or .yml dump files in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise MetadataError(f"metadata dump {path} does not exist")
    for file in files:
        yield from _read_dump_file(file)


def _read_dump_file(file: Path) -> Iterator[dict[str, Any]]:
    """A JSON List is read item by item (a dump of a big cluster is hundreds of MB: parsed
    whole it would take GBs); anything else is loaded whole, as JSON or YAML."""
    stream = _JsonListStream(file)
    try:
        yield from stream.items()
    except _NotAJsonList as exc:
        if stream.yielded:  # too late to read it another way: those items are written
            cause = getattr(exc.__cause__, "msg", exc.__cause__) or "it ends too early"
            raise MetadataError(
                f"{file} is broken JSON after {stream.yielded} items ({cause}): was it cut short?"
            ) from exc
        yield from _objects_of(_load_documents(file), file)


class _NotAJsonList(Exception):
    """The file is not one JSON object with ``items`` (YAML, a single object, broken JSON)."""


class _JsonListStream:
    """Decode ``{"kind": ..., "items": [...], ...}`` one item at a time from a file read in
    chunks, with :mod:`json`'s own decoder for each value."""

    CHUNK = 1 << 20
    _decoder = json.JSONDecoder()

    def __init__(self, file: Path):
        self.file = file
        self.buffer = ""
        self.pos = 0
        self.eof = False
        self.yielded = 0

    def items(self) -> Iterator[dict[str, Any]]:
        try:
            self.handle = self.file.open(encoding="utf-8")
        except OSError as exc:
            raise MetadataError(f"cannot read metadata dump {self.file}: {exc}") from exc
        with self.handle:
            try:
                yield from self._items()
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise _NotAJsonList from exc

    def _items(self) -> Iterator[dict[str, Any]]:
        self._expect("{")
        document: dict[str, Any] = {}
        waiting: list[dict[str, Any]] = []  # items without a kind, before the list's kind
        streamed = False
        while self._peek() != "}":
            key = self._value()
            self._expect(":")
            if key == "items" and self._peek() == "[" and not streamed:
                streamed = True
                for position, item in enumerate(self._array()):
                    if not isinstance(item, dict):
                        kind = document.get("kind") or "list"
                        raise MetadataError(
                            f"{self.file}: item {position} of the {kind} is not an object"
                        )
                    if "kind" in item or "kind" in document:
                        yield self._with_list_kind(item, document.get("kind"))
                    else:
                        waiting.append(item)
            else:
                document[key] = self._value()
            if self._peek() == ",":
                self.pos += 1
        self.pos += 1
        if self._peek() != "" or not streamed:
            raise _NotAJsonList
        kind = document.get("kind")
        if kind not in LIST_KINDS:
            raise MetadataError(
                f"{self.file}: a document with items but kind {kind!r}, not List, ImageList or "
                "ImageStreamList (was the dump cut short?)"
            )
        check_whole_list(document, self.file)
        for item in waiting:
            yield self._with_list_kind(item, kind)

    def _with_list_kind(self, item: dict[str, Any], kind: Any) -> dict[str, Any]:
        self.yielded += 1
        return _with_kind(item, kind)

    def _array(self) -> Iterator[Any]:
        self._expect("[")
        while self._peek() != "]":
            yield self._value()
            if self._peek() == ",":
                self.pos += 1
        self.pos += 1

    def _more(self) -> bool:
        chunk = self.handle.read(self.CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buffer = self.buffer[self.pos :] + chunk
        self.pos = 0
        return True

    def _peek(self) -> str:
        """The next character that is not white space; '' at the end of the file."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer) or not self._more():
                return self.buffer[self.pos : self.pos + 1]

    def _expect(self, char: str) -> None:
        if self._peek() != char:
            raise _NotAJsonList
        self.pos += 1

    def _value(self) -> Any:
        self._peek()
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError:
                if self._more():
                    continue
                raise
            if end == len(self.buffer) and self._more():
                continue  # a number may go on in the next chunk
            self.pos = end
            return value


def _load_documents(file: Path) -> list[Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MetadataError(f"cannot read metadata dump {file}: {exc}") from exc
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise MetadataError(f"{file} is neither JSON nor YAML: {exc}") from exc
    if not documents:
        # oc writes a List even when there is nothing to list: an empty file is a failed dump,
        # and reading it as "no images" would let a prune delete everything
        raise MetadataError(f"metadata dump {file} is empty")
    return documents


def _objects_of(documents: list[Any], file: Path) -> Iterator[dict[str, Any]]:
    for document in documents:
        if not isinstance(document, dict):
            raise MetadataError(
                f"{file}: expected an object or a List, got {type(document).__name__}"
            )
        kind = document.get("kind")
        if kind in LIST_KINDS and document.get("items", []) is None:
            continue  # "items": null, as Go writes an empty list: nothing listed
        if kind in LIST_KINDS and not isinstance(document.get("items"), list):
            raise MetadataError(
                f"{file}: the {kind}'s items are {type(document.get('items')).__name__}, not a "
                "list (write the dump with: oc get images,imagestreams -A -o json)"
            )
        if isinstance(document.get("items"), list):
            if kind not in LIST_KINDS:
                # oc prints "kind: List" after the items: a YAML dump cut short loses it
                raise MetadataError(
                    f"{file}: a document with items but kind {kind!r}, not List, ImageList or "
                    "ImageStreamList (was the dump cut short?)"
                )
            check_whole_list(document, file)
            for position, item in enumerate(document["items"]):
                if not isinstance(item, dict):
                    raise MetadataError(f"{file}: item {position} of the {kind} is not an object")
                yield _with_kind(item, kind)
        elif kind in ("Image", "ImageStream"):
            yield document
        else:
            raise MetadataError(
                f"{file}: kind {kind!r} is not a List, ImageList, ImageStreamList, Image or "
                "ImageStream (write it with: oc get images,imagestreams -A -o json)"
            )


def check_whole_list(document: dict[str, Any], file: Path) -> None:
    """A list the API cut into pages says so (``metadata.continue``, ``remainingItemCount``):
    saved as it came, one page is a partial view, and what the other pages hold would be
    deleted. ``oc get`` follows every page and writes neither."""
    meta = _mapping(document.get("metadata"))
    if meta.get("continue") or meta.get("remainingItemCount"):
        raise MetadataError(
            f"{file}: a {document.get('kind')} that is one page of a longer listing "
            "(metadata.continue is set): the rest of the cluster is missing. Dump it whole with "
            "'oc get images,imagestreams -A -o json'"
        )


def _with_kind(item: dict[str, Any], list_kind: Any) -> dict[str, Any]:
    if "kind" not in item and list_kind in ("ImageList", "ImageStreamList"):
        return {**item, "kind": list_kind.removesuffix("List")}
    return item


# --- the live API ----------------------------------------------------------------------------


class ListingRestart(Exception):
    """The server expired our continue token (410): the whole list must start again."""


MAX_LIST_RESTARTS = 3
"""A list whose continue token expires (410 Gone) starts again from the beginning at most this
many times (the Image and ImageStream listings and every workload kind's)."""

CLIENT_REUSE_SECONDS = 300.0
"""How long one process reuses an API client (its kubeconfig read, its TLS context and its
connection pool): every listing task and thread of a run shares one instead of building a
dozen, and a long-lived worker still reloads its kubeconfig (and a rotated token) soon."""

_clients: dict[tuple[Any, ...], tuple[float, Any]] = {}
_clients_lock = threading.Lock()


def _client_key(source: MetadataSource) -> tuple[Any, ...]:
    """What an API client is built from: the kubeconfig file as it is now (a rewritten file
    gets a new client), the context, or the in-cluster service account."""
    kubeconfig = source.kubeconfig or os.environ.get("KUBECONFIG")
    try:
        default = [str(Path.home() / ".kube" / "config")]
    except RuntimeError:  # no HOME and a UID without a passwd entry
        default = []
    stamps: list[tuple[str, int | None, int | None]] = []
    for path in kubeconfig.split(os.pathsep) if kubeconfig else default:
        try:
            stat = os.stat(path)
            stamps.append((path, stat.st_mtime_ns, stat.st_size))
        except OSError:
            stamps.append((path, None, None))
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    return (kubeconfig, source.context, tuple(stamps), in_cluster)


def api_client(source: MetadataSource) -> Any:
    """The official client's ``ApiClient`` for ``source``, shared by the process for
    ``CLIENT_REUSE_SECONDS`` (thread-safe: urllib3's pool); a kubeconfig that fails to load is
    tried again by the next call."""
    key = _client_key(source)
    with _clients_lock:
        cached = _clients.get(key)
        if cached is not None and time.monotonic() - cached[0] < CLIENT_REUSE_SECONDS:
            return cached[1]
        client = _new_api_client(source)
        _clients[key] = (time.monotonic(), client)
        return client


def _new_api_client(source: MetadataSource) -> Any:
    """From a kubeconfig (``--kubeconfig``, ``KUBECONFIG``, ~/.kube) or, inside a pod with
    none of those, the in-cluster service account."""
    from kubernetes import client, config

    kubeconfig = source.kubeconfig or os.environ.get("KUBECONFIG")
    try:
        default_exists = (Path.home() / ".kube" / "config").exists()
    except RuntimeError:  # no HOME and a UID without a passwd entry: an arbitrary UID in a pod
        default_exists = False
    if kubeconfig or default_exists or "KUBERNETES_SERVICE_HOST" not in os.environ:
        try:
            return _bounded(
                config.new_client_from_config(config_file=kubeconfig, context=source.context)
            )
        except (config.ConfigException, OSError, TypeError, yaml.YAMLError) as exc:
            raise MetadataError(f"cannot load kubeconfig: {exc}") from exc
    # the pod's ServiceAccount: token and CA from the kubelet's mount, re-read as the
    # token rotates; into a configuration of our own, not the client's global default
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as exc:
        raise MetadataError(
            f"cannot load the in-cluster configuration (KUBERNETES_SERVICE_HOST is set, "
            f"no kubeconfig found): {exc} (the ServiceAccount's token and ca.crt belong "
            f"in {Path(config.incluster_config.SERVICE_TOKEN_FILENAME).parent})"
        ) from exc
    return _bounded(client.ApiClient(configuration))


def _bounded(api_client: Any) -> Any:
    """Every request of the client within the run's timeouts (regprune/timeouts.py)."""
    from regprune.timeouts import bound_pool_manager

    bound_pool_manager(api_client.rest_client.pool_manager)
    return api_client


def custom_objects_api(source: MetadataSource) -> Any:
    """The official client's ``CustomObjectsApi`` over the process's shared client."""
    from kubernetes import client

    return client.CustomObjectsApi(api_client(source))


def decode_json(data: bytes) -> Any:
    """A JSON answer as Python objects: orjson (several times faster than :mod:`json` on list
    pages), :mod:`json` for what orjson refuses (NaN), so every error is :mod:`json`'s. One
    difference: an integer beyond 64 bits becomes a float (:mod:`json` kept an int, which no
    int64 column could hold: the listing failed); a row takes such a size as unknown."""
    import orjson

    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def cluster_bearer_token(source: MetadataSource) -> str | None:
    """The bearer token the client sends to the cluster (the kubeconfig user's, an exec
    plugin's, or the in-cluster ServiceAccount's); None for credentials without one (client
    certificates). ``oc adm prune images`` sends the same token to the registry."""
    configuration = custom_objects_api(source).api_client.configuration
    if configuration.refresh_api_key_hook is not None:
        configuration.refresh_api_key_hook(configuration)
    value = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
    if not value:
        return None
    scheme, _, token = str(value).partition(" ")
    return (token if scheme.lower() == "bearer" else str(value)).strip() or None


def call_with_retries(
    call: Callable[[], Any],
    what: str,
    max_retries: int,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Retry 429/5xx and connection errors with capped exponential backoff (honouring
    Retry-After); turn 403/401 and 410 into errors that say what to do. A request that ran
    out of time is tried :data:`TIMED_OUT_ATTEMPTS` times at most: each took a timeout."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from regprune.timeouts import RequestTimeout

    timed_out = 0
    for attempt in range(max_retries + 1):
        try:
            return call()
        except ApiException as exc:
            if exc.status == 410:
                raise ListingRestart(what) from exc
            if exc.status in (401, 403):
                raise MetadataError(
                    f"{'forbidden' if exc.status == 403 else 'unauthorized'}: cannot {what}: "
                    f"{_status_message(exc)}"
                ) from exc
            retryable = exc.status == 429 or exc.status >= 500 or exc.status == 0
            if not retryable or attempt == max_retries:
                raise MetadataError(
                    f"cannot {what}: HTTP {exc.status} {_status_message(exc)}"
                    + (f" (after {attempt + 1} attempts)" if retryable else "")
                ) from exc
            delay = _retry_after(exc) or backoff(attempt, RETRY_BASE_SECONDS, RETRY_MAX_SECONDS)
        except (HTTPError, OSError) as exc:
            timed_out += isinstance(exc, RequestTimeout)
            if attempt == max_retries or timed_out == TIMED_OUT_ATTEMPTS:
                raise MetadataError(f"cannot {what}: {exc} (after {attempt + 1} attempts)") from exc
            delay = backoff(attempt, RETRY_BASE_SECONDS, RETRY_MAX_SECONDS)
        sleep(delay)
    raise AssertionError("unreachable")


def _retry_after(exc: Any) -> float | None:
    value = (exc.headers or {}).get("Retry-After") if exc.headers else None
    try:
        return min(RETRY_AFTER_MAX_SECONDS, float(value)) if value is not None else None
    except ValueError:
        return None


def _status_message(exc: Any) -> str:
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def get_json(client: Any, path: str, query: list[tuple[str, Any]], timeout: float | None) -> Any:
    """GET ``path`` of the API with the official client's connection and credentials, as
    JSON decoded by :func:`decode_json`: no typed API class (importing CoreV1Api, AppsV1Api
    and BatchV1Api costs a CPU second) and no model objects. A non-2xx answer raises the
    client's ``ApiException``, as the typed calls do."""
    headers = {"Accept": "application/json"}
    if hasattr(client, "param_serialize"):  # kubernetes >= 37
        from kubernetes.client.exceptions import ApiException

        request = client.param_serialize(
            "GET", path, query_params=query, header_params=headers, auth_settings=["BearerToken"]
        )
        response = client.call_api(*request, _request_timeout=timeout)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return _decoded(response.data)
    response = client.call_api(  # the older generator's signature (kubernetes < 37)
        path,
        "GET",
        query_params=query,
        header_params=headers,
        auth_settings=["BearerToken"],
        _preload_content=False,
        _request_timeout=timeout,
        _return_http_data_only=True,
    )
    return _decoded(response.data)


def _decoded(data: bytes) -> Any:
    """JSON as objects; an answer that is not JSON (a proxy's login page) as its text, which
    the caller names in its one line (:func:`_list_page`)."""
    try:
        return decode_json(data)
    except ValueError:
        return data.decode(errors="replace")


def list_pages(api: Any, plural: str, source: MetadataSource) -> Iterator[list[dict[str, Any]]]:
    """Pages of a cluster-wide list of ``plural`` (``api``: a ``CustomObjectsApi`` or an
    ``ApiClient``), following ``continue`` tokens to the end; the next page is fetched while
    the caller turns this one into rows."""
    client = getattr(api, "api_client", api)
    what = f"list {plural}.{GROUP}"

    def fetch(token: str | None) -> dict[str, Any]:
        query: list[tuple[str, Any]] = [("limit", source.page_size)]
        if token:
            query.append(("continue", token))
        page = call_with_retries(
            lambda: get_json(
                client, f"/apis/{GROUP}/{VERSION}/{plural}", query, source.request_timeout
            ),
            what,
            source.max_retries,
        )
        return page

    yield from prefetched(fetch, what)


def prefetched(
    fetch: Callable[[str | None], Any], what: str | None = None
) -> Iterator[list[dict[str, Any]]]:
    """The items of each page ``fetch(token)`` returns, following ``metadata.continue``; page
    N+1 is requested (in a thread) as soon as page N's token is known, so the server's time
    and the caller's overlap. An error of any page is raised where that page would be.
    With ``what`` every page must be a Kubernetes list (:func:`_list_page`); without, a page
    must be a JSON object. An interrupted run stops between pages."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="list-prefetch")
    try:
        upcoming = pool.submit(fetch, None)
        while True:
            page = upcoming.result()
            if what is not None:
                items, token = _list_page(page, what)
            elif isinstance(page, dict):
                items = list(page.get("items") or [])
                token = _mapping(page.get("metadata")).get("continue")
            else:
                raise MetadataError("cannot list: the answer is not a JSON object")
            if token:
                upcoming = pool.submit(fetch, token)
            yield items
            if not token:
                return
            interrupts.check()
    finally:
        # a caller that stops early does not wait for a page it will not read
        pool.shutdown(wait=False, cancel_futures=True)


def _list_page(page: Any, what: str) -> tuple[list[dict[str, Any]], str | None]:
    """A list page's items and continue token; anything else (a proxy's HTML login page, a
    half-read answer) stops the listing with what came instead."""
    metadata = page.get("metadata") if isinstance(page, dict) else None
    items = page.get("items") if isinstance(page, dict) else None
    token = metadata.get("continue") if isinstance(metadata, dict) else None
    if (
        not isinstance(page, dict)
        or not isinstance(items, list | None)
        or not isinstance(metadata, dict | None)
        or not isinstance(token, str | None)
        or not all(isinstance(item, dict) for item in items or ())
    ):
        shown = " ".join(str(page).split())[:80]
        raise MetadataError(
            f"cannot {what}: the answer is not a Kubernetes list ({type(page).__name__} "
            f"{shown!r}); is the kubeconfig's server the cluster's API server?"
        )
    return list(items or []), token or None

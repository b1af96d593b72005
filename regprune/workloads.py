"""What the cluster's workloads use: image references as rows, LimitRanges, Image sizes.

``oc adm prune images`` keeps the tag revisions and Images that Pods, controllers, Jobs and Builds
reference; this module turns those objects into rows of ``workload_references``,
``limit_ranges`` and ``image_sizes`` (schemas in :mod:`regprune.tables`). A reference is parsed
exactly as oc does (``sql/prune-images-rules.md``, "Parsing an image reference"); one that does
not parse becomes a row with its ``problem`` and a ``metadata_anomalies`` row, never an
exception: whether it stops the prune is the plan's decision (``--ignore-invalid-refs``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from regprune.metadata import (
    MetadataError,
    MetadataSource,
    call_with_retries,
    get_json,
    parse_time,
    prefetched,
)

# --- references --------------------------------------------------------------------------------

_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = _HOST_COMPONENT + r"(?:\." + _HOST_COMPONENT + r")*(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"  # RE2 has "[-]*": same language
_NAME = r"(?:" + _HOST + r"/)?" + _COMPONENT + r"(?:/" + _COMPONENT + r")*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
REFERENCE = re.compile(r"(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?", re.ASCII)
NAME_MAX = 255
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


class InvalidReference(ValueError):
    """The reference does not parse; oc aborts on it unless ``--ignore-invalid-refs``."""


@dataclass(frozen=True)
class Reference:
    """A parsed pull spec. ``counted``: it names ``host/ns/name`` (oc ignores the others)."""

    registry_host: str | None
    ref_namespace: str | None
    ref_name: str | None
    tag: str | None
    digest: str | None

    @property
    def counted(self) -> bool:
        return bool(self.registry_host and self.ref_namespace and self.ref_name) and (
            "/" not in (self.ref_name or "")
        )


def parse_reference(spec: str) -> Reference:
    """Parse an image pull spec the way oc's library-go ``reference.Parse`` does.

    The tag defaults to ``latest`` only for a counted reference without a digest; with a digest
    the tag plays no part (``tag`` is then ``None``)."""
    match = REFERENCE.fullmatch(spec)
    if match is None:
        if not spec:
            raise InvalidReference("repository name must have at least one component")
        if REFERENCE.fullmatch(spec.lower()) is not None:
            raise InvalidReference("repository name must be lowercase")
        raise InvalidReference("invalid reference format")
    name, tag, digest = match.group(1), match.group(2), match.group(3)
    if len(name) > NAME_MAX:
        raise InvalidReference(f"repository name must not be more than {NAME_MAX} characters")
    if digest is not None:
        algorithm, _, hexpart = digest.partition(":")
        if algorithm not in DIGEST_HEX_LENGTHS:
            raise InvalidReference("unsupported digest algorithm")
        if len(hexpart) != DIGEST_HEX_LENGTHS[algorithm]:
            raise InvalidReference("invalid checksum digest length")
    slash = name.find("/")
    registry_only = slash == -1 and ("." in name or name.startswith("localhost"))
    first = name[:slash] if slash != -1 else name
    name_only = (slash == -1 and not registry_only) or (
        slash != -1 and not any(c in first for c in ":.") and first != "localhost"
    )
    if registry_only:
        return Reference(spec, None, None, None, digest)
    host, rest = (None, name) if name_only else (name[:slash], name[slash + 1 :])
    namespace, _, repo = rest.partition("/")
    if not repo:
        namespace, repo = None, rest
    if digest is None and tag is None:
        tag = "latest"
    return Reference(host, namespace, repo, None if digest else tag, digest)


def parse_istag(value: str) -> tuple[str, str]:
    """``name:tag`` of a build's ``from`` of kind ImageStreamTag (oc's rules: no ``@``, exactly
    one ``:``, both parts non-empty)."""
    if "@" in value:
        raise InvalidReference(f"{value!r} is an image stream image, not an image stream tag")
    parts = value.split(":", 2)
    if len(parts) != 2:
        raise InvalidReference(f"expected exactly one : delimiter in the istag {value!r}")
    if not parts[0] or not parts[1]:
        raise InvalidReference(f"image stream tag name {value!r} must have a name and a tag")
    return parts[0], parts[1]


def parse_isimage(value: str) -> tuple[str, str]:
    """``name@id`` of a build's ``from`` of kind ImageStreamImage (exactly one ``@``)."""
    parts = value.split("@", 2)
    if len(parts) != 2:
        raise InvalidReference(f"expected exactly one @ in the isimage name {value!r}")
    if not parts[0] or not parts[1]:
        raise InvalidReference(f"image stream image name {value!r} must have a name and ID")
    return parts[0], parts[1]


# --- workload objects --------------------------------------------------------------------------

POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    # kind: path from the object to its pod spec
    "Pod": ("spec",),
    "ReplicationController": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "DeploymentConfig": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
BUILD_KINDS = ("Build", "BuildConfig")
WORKLOAD_KINDS = (*POD_SPEC_PATHS, *BUILD_KINDS)
BUILD_STRATEGIES = ("sourceStrategy", "dockerStrategy", "customStrategy")
"""Their ``from`` is the build's input image; the first present strategy decides (oc's
``buildutil.GetInputReference``)."""
IMAGE_LIMIT_TYPE = "openshift.io/Image"


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _anomaly(kind: str, namespace: str | None, name: Any, problem: str) -> dict[str, Any]:
    return {"kind": kind, "namespace": namespace, "name": str(name), "problem": problem}


def workload_rows(obj: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(workload_references rows, metadata_anomalies rows) for one workload object."""
    kind = obj.get("kind")
    meta = _mapping(obj.get("metadata"))
    namespace, name = _text(meta.get("namespace")), _text(meta.get("name"))
    if kind not in WORKLOAD_KINDS:
        return [], [_anomaly(str(kind), namespace, name, "not a workload kind")]
    if not namespace or not name:
        # cannot be attributed, but what it references must still protect: keep its rows
        anomalies = [_anomaly(kind, namespace, name, "no namespace or name")]
    else:
        anomalies = []
    base = {
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "created": parse_time(meta.get("creationTimestamp")),
        "phase": _text(_mapping(obj.get("status")).get("phase")) if kind == "Pod" else None,
    }
    rows: list[dict[str, Any]] = []
    if kind in BUILD_KINDS:
        _build_rows(obj, base, rows, anomalies)
    else:
        spec: Any = obj
        for key in POD_SPEC_PATHS[kind]:
            spec = _mapping(spec).get(key)
        spec = _mapping(spec)
        for field in ("initContainers", "containers"):
            containers = spec.get(field)
            if containers is None:
                continue
            if not isinstance(containers, list):
                anomalies.append(_anomaly(kind, namespace, name, f"{field} is not a list"))
                continue
            for container in containers:
                container = _mapping(container)
                image = container.get("image")
                if image is None or (isinstance(image, str) and not image.strip()):
                    continue
                rows.append(
                    _reference_row(base, _text(container.get("name")), field, image, anomalies)
                )
    return rows, anomalies


def _reference_row(
    base: dict[str, Any], container: str | None, field: str, raw: Any, anomalies: list[dict]
) -> dict[str, Any]:
    row = {**base, "container": container, "field": field, "reference": _text(raw)}
    try:
        if not isinstance(raw, str):
            raise InvalidReference(f"image is a {type(raw).__name__}, not a string")
        ref = parse_reference(raw)
    except InvalidReference as exc:
        return _invalid(row, str(exc), anomalies)
    return row | {
        "registry_host": ref.registry_host,
        "ref_namespace": ref.ref_namespace,
        "ref_name": ref.ref_name,
        "tag": ref.tag,
        "digest": ref.digest,
        "counted": ref.counted,
        "problem": None,
    }


def _invalid(row: dict[str, Any], problem: str, anomalies: list[dict]) -> dict[str, Any]:
    where = f"{row['field']} {row['container']}" if row.get("container") else row["field"]
    anomalies.append(
        _anomaly(
            row["kind"],
            row["namespace"],
            row["name"],
            f"{where}: invalid reference {row['reference']!r}: {problem}",
        )
    )
    return row | {"counted": False, "problem": problem}


def _build_rows(
    obj: dict[str, Any], base: dict[str, Any], rows: list[dict], anomalies: list[dict]
) -> None:
    strategy = _mapping(_mapping(obj.get("spec")).get("strategy"))
    source = next((strategy[s] for s in BUILD_STRATEGIES if strategy.get(s) is not None), None)
    if source is None:
        return  # a JenkinsPipeline or empty strategy: no input image
    origin = _mapping(_mapping(source).get("from"))
    from_kind = _text(origin.get("kind"))
    raw = origin.get("name")
    field = f"from:{from_kind}"
    if from_kind == "DockerImage":
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return
        rows.append(_reference_row(base, None, field, raw, anomalies))
        return
    if from_kind not in ("ImageStreamTag", "ImageStreamImage"):
        if from_kind is not None or raw is not None:
            problem = f"unrecognized build from kind {from_kind!r}, ignored"
            anomalies.append(_anomaly(base["kind"], base["namespace"], base["name"], problem))
        return
    row = {**base, "container": None, "field": field, "reference": _text(raw)}
    try:
        if not isinstance(raw, str):
            raise InvalidReference(f"from.name is a {type(raw).__name__}, not a string")
        if from_kind == "ImageStreamTag":
            ref_name, tag = parse_istag(raw)
            digest = None
        else:
            ref_name, digest = parse_isimage(raw)
            tag = None
    except InvalidReference as exc:
        rows.append(_invalid(row, str(exc), anomalies))
        return
    ref_namespace = _text(origin.get("namespace")) or base["namespace"]
    rows.append(
        row
        | {
            "registry_host": None,
            "ref_namespace": ref_namespace,
            "ref_name": ref_name,
            "tag": tag,
            "digest": digest,
            "counted": bool(ref_namespace),
            "problem": None,
        }
    )


# --- LimitRanges and Image sizes ---------------------------------------------------------------

_QUANTITY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))([a-zA-Z]*|[eE][+-]?\d+)")
_SUFFIXES: dict[str, int | Decimal] = {
    "": 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes resource quantity (``1Gi``, ``500M``, ``1e9``, ``1.5Gi``, a number)."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise ValueError(f"not a quantity: {value!r}")
    match = _QUANTITY.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = match.group(1), match.group(2)
    try:
        amount = Decimal(number)
        if suffix[:1] in ("e", "E") and len(suffix) > 1:
            return amount * Decimal(10) ** int(suffix[1:])
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not a quantity: {value!r}") from exc
    if suffix not in _SUFFIXES:
        raise ValueError(f"not a quantity: {value!r} (unknown suffix {suffix!r})")
    return amount * Decimal(_SUFFIXES[suffix])


def limit_range_rows(obj: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(limit_ranges rows, metadata_anomalies rows): one row per ``openshift.io/Image`` limit
    with ``max.storage``. A limit that does not parse is an anomaly and a row without bytes (it
    then limits nothing: an image that cannot be shown to exceed it is kept)."""
    meta = _mapping(obj.get("metadata"))
    namespace, name = _text(meta.get("namespace")), _text(meta.get("name"))
    rows: list[dict[str, Any]] = []
    anomalies: list[dict[str, Any]] = []
    limits = _mapping(obj.get("spec")).get("limits")
    if not isinstance(limits, list):
        if limits is not None:
            anomalies.append(_anomaly("LimitRange", namespace, name, "spec.limits is not a list"))
        return rows, anomalies
    for position, limit in enumerate(limits):
        limit = _mapping(limit)
        if limit.get("type") != IMAGE_LIMIT_TYPE:
            continue
        raw = _mapping(limit.get("max")).get("storage")
        if raw is None:
            continue
        try:
            max_bytes: int | None = int(parse_quantity(raw).to_integral_value(rounding=ROUND_FLOOR))
        except ValueError as exc:
            anomalies.append(_anomaly("LimitRange", namespace, name, f"limit {position}: {exc}"))
            max_bytes = None
        rows.append(
            {
                "namespace": namespace,
                "name": name,
                "position": position,
                "max_storage": max_bytes,
                "max_storage_raw": str(raw),
            }
        )
    return rows, anomalies


def image_size_row(obj: dict[str, Any]) -> dict[str, Any] | None:
    """``dockerImageMetadata.Size`` of an Image (what oc compares with a LimitRange)."""
    name = _text(_mapping(obj.get("metadata")).get("name"))
    if not name:
        return None
    size = _mapping(obj.get("dockerImageMetadata")).get("Size")
    if not isinstance(size, int) or isinstance(size, bool):
        size = None
    return {"image": name, "size": size}


# --- listing from the cluster ------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """One cluster-wide list: its kind, and its resource (the core group is ``""``)."""

    kind: str
    group: str
    plural: str
    version: str = "v1"
    optional: bool = False  # a 404 (the API group is not installed) counts as empty

    @property
    def path(self) -> str:
        prefix = f"/apis/{self.group}" if self.group else "/api"
        return f"{prefix}/{self.version}/{self.plural}"

    @property
    def what(self) -> str:
        return f"list {self.plural}" + (f".{self.group}" if self.group else "")


LISTINGS: tuple[Listing, ...] = (
    Listing("Pod", "", "pods"),
    Listing("ReplicationController", "", "replicationcontrollers"),
    Listing("LimitRange", "", "limitranges"),
    Listing("ReplicaSet", "apps", "replicasets"),
    Listing("Deployment", "apps", "deployments"),
    Listing("DaemonSet", "apps", "daemonsets"),
    Listing("StatefulSet", "apps", "statefulsets"),
    Listing("Job", "batch", "jobs"),
    Listing("CronJob", "batch", "cronjobs"),
    Listing("DeploymentConfig", "apps.openshift.io", "deploymentconfigs", optional=True),
    Listing("Build", "build.openshift.io", "builds", optional=True),
    Listing("BuildConfig", "build.openshift.io", "buildconfigs", optional=True),
)


class ApiGroupMissing(Exception):
    """A 404 on an optional list: the API group is not served, so there are no such objects."""


def list_workload_pages(
    client: Any, listing: Listing, source: MetadataSource
) -> Iterator[list[dict[str, Any]]]:
    """Pages of one cluster-wide list as plain dicts (the JSON as served: no model objects),
    following ``continue`` tokens, the next page fetched while this one is read; raises
    :class:`ApiGroupMissing` on a 404 of an optional one. ``client``: the process's
    ``ApiClient`` (:func:`regprune.metadata.api_client`)."""
    from kubernetes.client.exceptions import ApiException

    def fetch(token: str | None) -> dict[str, Any]:
        query: list[tuple[str, Any]] = [("limit", source.page_size)]
        if token:
            query.append(("continue", token))

        def call() -> Any:
            try:
                return get_json(client, listing.path, query, source.request_timeout)
            except ApiException as exc:
                if exc.status == 404 and listing.optional:
                    raise ApiGroupMissing(listing.kind) from exc
                raise

        page = call_with_retries(call, listing.what, source.max_retries)
        if not isinstance(page, dict):
            raise MetadataError(f"cannot {listing.what}: the answer is not a JSON object")
        return page

    for items in prefetched(fetch):
        yield [
            item if "kind" in item else {**item, "kind": listing.kind}
            for item in items
            if isinstance(item, dict)
        ]

"""The docker/distribution storage layout, path <-> meaning, both ways.

Like distribution's ``registry/storage/paths.go`` this is the only module that knows where
things live under ``<root>/docker/registry/v2``. Keys here are relative to that v2 root and
always use ``/``. Parsing never guesses: anything that does not match the layout raises
:class:`LayoutError` with a short problem text, which the snapshot records as an anomaly.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeGuard

import pyarrow as pa
import pyarrow.compute as pc

V2_ROOT = "docker/registry/v2"
BLOBS_PREFIX = "blobs/sha256/"
REPOSITORIES_PREFIX = "repositories/"

ALGORITHM = "sha256"
LINK_SIZE = len("sha256:") + 64
"""A link file holds exactly ``sha256:<64 hex>`` (no newline): any other size is malformed."""

_HEX = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PREFIX = re.compile(r"[0-9a-f]{2}")
# distribution's reference grammar for one path component of a repository name
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
# OpenShift namespaces are DNS-1123 labels (dots tolerated here: leniency only keeps more)
_OPENSHIFT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
# ImageStream names follow openshift-apiserver's ValidateImageStreamName, which allows "_"
# (``[a-z0-9]+(?:[._-][a-z0-9]+)*``); a superset of it, so no live stream is ever "invalid"
_IMAGESTREAM_NAME = re.compile(r"[a-z0-9]([-a-z0-9._]*[a-z0-9])?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
BLOB_PREFIXES = tuple(f"{i:02x}" for i in range(256))

QUARANTINE_ROOT = "_regprune/quarantine"
"""Where a confirmed hard prune moves what it removes (regprune/prune_execute.py), relative to
the storage root, beside ``docker/`` and the lock: ``_regprune/quarantine/<id>/<key>``,
``<key>`` relative to the v2 root as everywhere here. The registry never reads there."""
_QUARANTINE_ID = re.compile(r"(?P<time>\d{8}T\d{6}\d{6})Z-(?P<tag>[0-9a-f]{6})")


class LayoutError(ValueError):
    """A storage key that does not fit the layout; the message is the anomaly's problem."""


class RepoEntryKind(StrEnum):
    LAYER_LINK = "layer_link"
    MANIFEST_LINK = "manifest_link"
    TAG_CURRENT = "tag_current"
    TAG_INDEX = "tag_index"
    UPLOAD_STARTEDAT = "upload_startedat"
    UPLOAD_FILE = "upload_file"


@dataclass(frozen=True, slots=True)
class RepoEntry:
    """What one file under ``repositories/`` means."""

    repository: str
    kind: RepoEntryKind
    digest: str | None = None
    tag: str | None = None
    upload_id: str | None = None


def is_digest(value: object) -> TypeGuard[str]:
    """A ``sha256:<64 hex>`` string (what the layout stores; other algorithms are not used)."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def digest_hex(digest: str) -> str:
    if not is_digest(digest):
        raise LayoutError(f"not a sha256 digest: {digest!r}")
    return digest[len("sha256:") :]


# --- the quarantine ------------------------------------------------------------------------


def new_quarantine_id(now: datetime) -> str:
    """``<UTC time to the microsecond>Z-<6 hex>``: sorts by time, tells its age
    (:func:`quarantine_time`), and two runs never share one."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(3)}"


def is_quarantine_id(value: str) -> bool:
    return _QUARANTINE_ID.fullmatch(value) is not None


def quarantine_time(quarantine_id: str) -> datetime:
    """When the run that owns the quarantine started quarantining."""
    match = _QUARANTINE_ID.fullmatch(quarantine_id)
    if match is None:
        raise LayoutError(f"not a quarantine id: {quarantine_id!r}")
    return datetime.strptime(match["time"], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)


def quarantine_area(quarantine_id: str) -> str:
    """The folder (relative to the storage root) holding one run's quarantined keys."""
    if not is_quarantine_id(quarantine_id):
        raise LayoutError(f"not a quarantine id: {quarantine_id!r}")
    return f"{QUARANTINE_ROOT}/{quarantine_id}"


def is_content_addressed(key: str) -> bool:
    """A key whose bytes its name fixes: blob data (the registry verifies the digest before
    it writes one) and links to a digest (their content is the digest in their path). Two
    copies of such a key of the same size hold the same bytes."""
    return _BLOB_DATA_RE.fullmatch(key) is not None or _DIGEST_LINK_RE.fullmatch(key) is not None


# --- meaning -> path -------------------------------------------------------------------------


def blob_dir(digest: str) -> str:
    """``blobs/sha256/<2hex>/<hex>/``: the folder a blob deletion removes."""
    hex_ = digest_hex(digest)
    return f"{BLOBS_PREFIX}{hex_[:2]}/{hex_}/"


def blob_data_path(digest: str) -> str:
    return blob_dir(digest) + "data"


def blob_shard_prefix(prefix: str) -> str:
    return f"{BLOBS_PREFIX}{prefix}/"


def repository_dir(repository: str) -> str:
    return f"{REPOSITORIES_PREFIX}{repository}/"


def layer_link_path(repository: str, digest: str) -> str:
    return f"{repository_dir(repository)}_layers/sha256/{digest_hex(digest)}/link"


def manifest_link_path(repository: str, digest: str) -> str:
    return f"{repository_dir(repository)}_manifests/revisions/sha256/{digest_hex(digest)}/link"


def tag_dir(repository: str, tag: str) -> str:
    return f"{repository_dir(repository)}_manifests/tags/{tag}/"


def tag_current_link_path(repository: str, tag: str) -> str:
    return tag_dir(repository, tag) + "current/link"


def tag_index_link_path(repository: str, tag: str, digest: str) -> str:
    return tag_dir(repository, tag) + f"index/sha256/{digest_hex(digest)}/link"


def upload_dir(repository: str, upload_id: str) -> str:
    return f"{repository_dir(repository)}_uploads/{upload_id}/"


def upload_startedat_path(repository: str, upload_id: str) -> str:
    return upload_dir(repository, upload_id) + "startedat"


# --- meaning -> path, many at once (the executor's files of a batch of actions) ------------


def _bulk_hex(digests: pa.Array) -> pa.Array:
    """:func:`digest_hex` of every digest; raises :class:`LayoutError` on the first that is
    not one, as the per-key function does."""
    digests = _one_chunk(digests)
    valid = pc.fill_null(pc.match_substring_regex(digests, f"^{_DIGEST.pattern}$"), False)
    if not pc.all(valid, min_count=0).as_py():
        bad = pc.filter(digests, pc.invert(valid))[0].as_py()
        raise LayoutError(f"not a sha256 digest: {bad!r}")
    return pc.utf8_slice_codeunits(digests, len("sha256:"))


def _join(*parts: str | pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def blob_data_paths(digests: pa.Array | pa.ChunkedArray) -> pa.Array:
    """:func:`blob_data_path` of every digest."""
    hex_ = _bulk_hex(digests)
    return _join(BLOBS_PREFIX, pc.utf8_slice_codeunits(hex_, 0, 2), "/", hex_, "/data")


def layer_link_paths(
    repositories: pa.Array | pa.ChunkedArray, digests: pa.Array | pa.ChunkedArray
) -> pa.Array:
    """:func:`layer_link_path` of every (repository, digest)."""
    return _join(
        REPOSITORIES_PREFIX,
        _one_chunk(repositories),
        "/_layers/sha256/",
        _bulk_hex(digests),
        "/link",
    )


def manifest_link_paths(
    repositories: pa.Array | pa.ChunkedArray, digests: pa.Array | pa.ChunkedArray
) -> pa.Array:
    """:func:`manifest_link_path` of every (repository, digest)."""
    return _join(
        REPOSITORIES_PREFIX,
        _one_chunk(repositories),
        "/_manifests/revisions/sha256/",
        _bulk_hex(digests),
        "/link",
    )


def tag_index_link_paths(
    repositories: pa.Array | pa.ChunkedArray,
    tags: pa.Array | pa.ChunkedArray,
    digests: pa.Array | pa.ChunkedArray,
) -> pa.Array:
    """:func:`tag_index_link_path` of every (repository, tag, digest)."""
    return _join(
        REPOSITORIES_PREFIX,
        _one_chunk(repositories),
        "/_manifests/tags/",
        _one_chunk(tags),
        "/index/sha256/",
        _bulk_hex(digests),
        "/link",
    )


def link_content(digest: str) -> bytes:
    """The bytes distribution writes into every link file."""
    digest_hex(digest)
    return digest.encode()


# --- path -> meaning -------------------------------------------------------------------------


def parse_blob_key(key: str) -> str:
    """Return the digest of ``blobs/sha256/<2hex>/<hex>/data``."""
    if not key.startswith(BLOBS_PREFIX):
        raise LayoutError("not under blobs/sha256/")
    parts = key[len(BLOBS_PREFIX) :].split("/")
    if not parts[0] or _PREFIX.fullmatch(parts[0]) is None:
        raise LayoutError("blob prefix folder is not two hex digits")
    if len(parts) < 2 or _HEX.fullmatch(parts[1]) is None:
        raise LayoutError("blob folder is not a sha256 hex digest")
    hex_ = parts[1]
    if hex_[:2] != parts[0]:
        raise LayoutError("blob folder is under the wrong prefix folder")
    if len(parts) == 3 and parts[2] == "":
        raise LayoutError("blob folder without data")
    if len(parts) != 3 or parts[2] != "data":
        raise LayoutError("unknown file in blob folder")
    return f"sha256:{hex_}"


def parse_repository_key(key: str) -> RepoEntry:
    """Classify one file below ``repositories/``; nested repository names are allowed."""
    if not key.startswith(REPOSITORIES_PREFIX):
        raise LayoutError("not under repositories/")
    parts = key[len(REPOSITORIES_PREFIX) :].split("/")
    marker = next((i for i, part in enumerate(parts) if part.startswith("_")), None)
    if marker is None:
        raise LayoutError("file outside _layers, _manifests and _uploads")
    if marker == 0:
        raise LayoutError("repository name is empty")
    repository = "/".join(parts[:marker])
    rest = parts[marker:]
    section = rest[0]
    if section == "_layers":
        return RepoEntry(repository, RepoEntryKind.LAYER_LINK, digest=_link_digest(rest[1:]))
    if section == "_manifests":
        return _parse_manifests(repository, rest[1:])
    if section == "_uploads":
        if len(rest) < 3 or not rest[1] or not rest[-1]:
            raise LayoutError("unknown file in _uploads")
        kind = (
            RepoEntryKind.UPLOAD_STARTEDAT
            if len(rest) == 3 and rest[2] == "startedat"
            else RepoEntryKind.UPLOAD_FILE
        )
        return RepoEntry(repository, kind, upload_id=rest[1])
    raise LayoutError(f"unknown repository section {section}")


def _parse_manifests(repository: str, rest: list[str]) -> RepoEntry:
    if rest and rest[0] == "revisions":
        return RepoEntry(repository, RepoEntryKind.MANIFEST_LINK, digest=_link_digest(rest[1:]))
    if rest and rest[0] == "tags" and len(rest) >= 4:
        tag = rest[1]
        if _TAG.fullmatch(tag) is None:
            raise LayoutError("tag folder is not a valid tag name")
        if rest[2:] == ["current", "link"]:
            return RepoEntry(repository, RepoEntryKind.TAG_CURRENT, tag=tag)
        if rest[2] == "index":
            digest = _link_digest(rest[3:])
            return RepoEntry(repository, RepoEntryKind.TAG_INDEX, digest=digest, tag=tag)
    raise LayoutError("unknown file in _manifests")


def _link_digest(rest: list[str]) -> str:
    """``sha256/<hex>/link`` -> digest."""
    if len(rest) != 3 or rest[2] != "link":
        raise LayoutError("not a link file")
    if rest[0] != ALGORITHM:
        raise LayoutError(f"unsupported digest algorithm {rest[0]}")
    if _HEX.fullmatch(rest[1]) is None:
        raise LayoutError("link folder is not a sha256 hex digest")
    return f"sha256:{rest[1]}"


def split_repository(repository: str) -> tuple[str | None, str]:
    """``ns/name`` -> (ns, name); a one-segment name has no namespace."""
    namespace, sep, name = repository.partition("/")
    return (namespace, name) if sep else (None, repository)


def is_valid_repository_name(repository: str) -> bool:
    """distribution's grammar: ``/``-separated lowercase path components."""
    return all(_PATH_COMPONENT.fullmatch(part) for part in repository.split("/"))


def is_openshift_repository(repository: str) -> bool:
    """Exactly ``<namespace>/<imagestream>``, both valid OpenShift names: anything else cannot
    belong to an ImageStream (the reference prunes such "old bug" repositories whole)."""
    namespace, name = split_repository(repository)
    return (
        namespace is not None
        and "/" not in name
        and is_valid_repository_name(repository)
        and _OPENSHIFT_NAME.fullmatch(namespace) is not None
        and _IMAGESTREAM_NAME.fullmatch(name) is not None
    )


# --- path -> meaning, for whole listings -------------------------------------------------------
# The common keys matched in bulk (RE2 through Arrow); every key the patterns miss goes through
# the parsers above, which decide and word the problem. The patterns are narrower than the
# parsers (ASCII tags, no empty path components), never wider: tests/test_layout.py checks both
# agree on every key.

_BLOB_DATA_PATTERN = r"^blobs/sha256/(?P<prefix>[0-9a-f]{2})/(?P<hex>[0-9a-f]{64})/data$"
_REPOSITORY_PATTERN = (
    r"^repositories/(?P<repository>[^_/][^/]*(?:/[^_/][^/]*)*)/(?:"
    r"_layers/sha256/(?P<layer>[0-9a-f]{64})/link"
    r"|_manifests/revisions/sha256/(?P<revision>[0-9a-f]{64})/link"
    r"|_manifests/tags/(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})/"
    r"(?:current/link|index/sha256/(?P<index>[0-9a-f]{64})/link)"
    r"|_uploads/(?P<upload>[^/]+)/(?P<upload_file>.*[^/]))$"
)
_BLOB_DATA_RE = re.compile(_BLOB_DATA_PATTERN)
_DIGEST_LINK_RE = re.compile(
    r"repositories/.+/(?:_layers|_manifests/revisions|_manifests/tags/[^/]+/index)"
    r"/sha256/[0-9a-f]{64}/link"
)
BLOB_KEYS_SCHEMA = pa.schema([("digest", pa.string()), ("problem", pa.string())])
REPOSITORY_KEYS_SCHEMA = pa.schema(
    [
        ("repository", pa.string()),
        ("kind", pa.string()),
        ("digest", pa.string()),
        ("tag", pa.string()),
        ("upload_id", pa.string()),
        ("problem", pa.string()),
    ]
)


def classify_blob_keys(keys: pa.Array | pa.ChunkedArray) -> pa.Table:
    """:func:`parse_blob_key` of every key, as columns ``digest`` and ``problem``."""
    keys = _one_chunk(keys)
    found = pc.extract_regex(keys, _BLOB_DATA_PATTERN)
    hex_ = pc.struct_field(found, "hex")
    fits = pc.and_kleene(
        found.is_valid(),
        pc.equal(pc.struct_field(found, "prefix"), pc.utf8_slice_codeunits(hex_, 0, 2)),
    )
    fits = pc.fill_null(fits, False)
    table = pa.table(
        {
            "digest": pc.if_else(fits, pc.binary_join_element_wise("sha256:", hex_, ""), None),
            "problem": pa.nulls(len(keys), pa.string()),
        },
        schema=BLOB_KEYS_SCHEMA,
    )
    return _parse_the_rest(keys, fits, table, _blob_row)


def classify_repository_keys(keys: pa.Array | pa.ChunkedArray) -> pa.Table:
    """:func:`parse_repository_key` of every key, as the columns of a :class:`RepoEntry`
    (``kind`` its value) plus ``problem``."""
    keys = _one_chunk(keys)
    found = pc.extract_regex(keys, _REPOSITORY_PATTERN)
    fits = pc.fill_null(found.is_valid(), False)
    group = {name: pc.struct_field(found, name) for name in found.type.names}

    def given(name: str) -> pa.Array:
        return pc.fill_null(pc.not_equal(group[name], ""), False)

    is_layer, is_revision, is_tag = given("layer"), given("revision"), given("tag")
    is_index, is_upload = given("index"), given("upload")
    kind = pc.case_when(
        pc.make_struct(
            is_layer,
            is_revision,
            pc.and_(is_tag, is_index),
            is_tag,
            pc.and_(is_upload, pc.equal(group["upload_file"], "startedat")),
            is_upload,
        ),
        RepoEntryKind.LAYER_LINK.value,
        RepoEntryKind.MANIFEST_LINK.value,
        RepoEntryKind.TAG_INDEX.value,
        RepoEntryKind.TAG_CURRENT.value,
        RepoEntryKind.UPLOAD_STARTEDAT.value,
        RepoEntryKind.UPLOAD_FILE.value,
    )
    hex_ = pc.coalesce(
        *(pc.if_else(given(name), group[name], None) for name in ("layer", "revision", "index"))
    )
    table = pa.table(
        {
            "repository": pc.if_else(fits, group["repository"], None),
            "kind": kind,
            "digest": pc.binary_join_element_wise("sha256:", hex_, ""),
            "tag": pc.if_else(is_tag, group["tag"], None),
            "upload_id": pc.if_else(is_upload, group["upload"], None),
            "problem": pa.nulls(len(keys), pa.string()),
        },
        schema=REPOSITORY_KEYS_SCHEMA,
    )
    return _parse_the_rest(keys, fits, table, _repository_row)


def _blob_row(key: str) -> dict[str, str | None]:
    try:
        return {"digest": parse_blob_key(key), "problem": None}
    except LayoutError as exc:
        return {"digest": None, "problem": str(exc)}


def _repository_row(key: str) -> dict[str, str | None]:
    try:
        entry = parse_repository_key(key)
    except LayoutError as exc:
        return {"problem": str(exc)}
    return {
        "repository": entry.repository,
        "kind": entry.kind.value,
        "digest": entry.digest,
        "tag": entry.tag,
        "upload_id": entry.upload_id,
        "problem": None,
    }


def _one_chunk(keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


def _parse_the_rest(
    keys: pa.Array,
    fits: pa.Array,
    table: pa.Table,
    parse_row: Callable[[str], dict[str, str | None]],
) -> pa.Table:
    """Fill the rows the bulk pattern did not match with the parser's verdict."""
    rest = pc.invert(fits)
    if not pc.any(rest).as_py():
        return table
    rows = pa.Table.from_pylist(
        [parse_row(key) for key in pc.filter(keys, rest).to_pylist()], schema=table.schema
    )
    columns = [
        pc.replace_with_mask(table[name].combine_chunks(), rest, rows[name].combine_chunks())
        for name in table.column_names
    ]
    return pa.table(columns, schema=table.schema)

"""The storage layout, path <-> meaning, both ways (no Prefect, no storage).

layout.py is the only module that knows where distribution keeps things; every table row and
every anomaly of the snapshot goes through it, so a key that parses to the wrong meaning would
silently mislead the pruner. Each builder is checked against the exact path distribution
writes, then parsed back.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regprune import layout
from regprune.layout import (
    LINK_SIZE,
    LayoutError,
    RepoEntry,
    RepoEntryKind,
    blob_data_path,
    blob_dir,
    blob_shard_prefix,
    classify_blob_keys,
    classify_repository_keys,
    digest_hex,
    is_digest,
    is_openshift_repository,
    is_valid_repository_name,
    layer_link_path,
    link_content,
    manifest_link_path,
    parse_blob_key,
    parse_repository_key,
    split_repository,
    tag_current_link_path,
    tag_index_link_path,
    upload_dir,
    upload_startedat_path,
)

HEX = hashlib.sha256(b"layout").hexdigest()
DIGEST = f"sha256:{HEX}"
OTHER_HEX = hashlib.sha256(b"other").hexdigest()
REPOSITORIES = ["ns/app", "app", "a/b/c", "team-a/my.app_x"]


# --- digests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [DIGEST, f"sha256:{'0' * 64}"],
)
def test_is_digest_accepts_lowercase_sha256(value: str) -> None:
    assert is_digest(value)
    assert digest_hex(value) == value.removeprefix("sha256:")


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        "",
        HEX,
        DIGEST.upper(),
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        f"sha512:{HEX}",
        f"sha256:{HEX}\n",
        f" {DIGEST}",
    ],
)
def test_is_digest_rejects_everything_else(value: object) -> None:
    """Digests come from paths and Image names: near misses must not pass."""
    assert not is_digest(value)
    if isinstance(value, str):
        with pytest.raises(LayoutError, match="not a sha256 digest"):
            digest_hex(value)


def test_link_content_is_the_bare_digest() -> None:
    """distribution writes the digest without a newline: the size check relies on it."""
    assert link_content(DIGEST) == DIGEST.encode()
    assert len(link_content(DIGEST)) == LINK_SIZE == 71
    with pytest.raises(LayoutError):
        link_content("sha256:nothex")


# --- blobs -----------------------------------------------------------------------------------


def test_blob_paths_match_distribution() -> None:
    assert blob_dir(DIGEST) == f"blobs/sha256/{HEX[:2]}/{HEX}/"
    assert blob_data_path(DIGEST) == f"blobs/sha256/{HEX[:2]}/{HEX}/data"
    assert blob_shard_prefix(HEX[:2]) == f"blobs/sha256/{HEX[:2]}/"


def test_blob_round_trip() -> None:
    assert parse_blob_key(blob_data_path(DIGEST)) == DIGEST


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (f"blobs/sha512/{HEX[:2]}/{HEX}/data", "not under blobs/sha256/"),
        (f"repositories/{HEX[:2]}/{HEX}/data", "not under blobs/sha256/"),
        (f"blobs/sha256/zz/{HEX}/data", "prefix folder is not two hex digits"),
        (f"blobs/sha256/{HEX[:3]}/{HEX}/data", "prefix folder is not two hex digits"),
        (f"blobs/sha256/{HEX[:2].upper()}/{HEX}/data", "prefix folder is not two hex digits"),
        (f"blobs/sha256//{HEX}/data", "prefix folder is not two hex digits"),
        (f"blobs/sha256/{HEX[:2]}/{HEX[:-1]}g/data", "blob folder is not a sha256 hex digest"),
        (f"blobs/sha256/{HEX[:2]}/{HEX.upper()}/data", "blob folder is not a sha256 hex digest"),
        (f"blobs/sha256/{HEX[:2]}/{HEX[:40]}/data", "blob folder is not a sha256 hex digest"),
        (f"blobs/sha256/{HEX[:2]}/notes.txt", "blob folder is not a sha256 hex digest"),
        (f"blobs/sha256/{OTHER_HEX[:2]}/{HEX}/data", "under the wrong prefix folder"),
        (f"blobs/sha256/{HEX[:2]}/{HEX}/", "blob folder without data"),
        (f"blobs/sha256/{HEX[:2]}/{HEX}/data.tmp", "unknown file in blob folder"),
        (f"blobs/sha256/{HEX[:2]}/{HEX}/data/extra", "unknown file in blob folder"),
        (f"blobs/sha256/{HEX[:2]}/{HEX}", "unknown file in blob folder"),
    ],
)
def test_malformed_blob_keys(key: str, problem: str) -> None:
    """Each malformed key says what is wrong: the text becomes the anomaly's problem."""
    assert OTHER_HEX[:2] != HEX[:2]
    with pytest.raises(LayoutError, match=problem):
        parse_blob_key(key)


# --- repositories ----------------------------------------------------------------------------


@pytest.mark.parametrize("repository", REPOSITORIES)
def test_repository_paths_match_distribution(repository: str) -> None:
    base = f"repositories/{repository}"
    assert layer_link_path(repository, DIGEST) == f"{base}/_layers/sha256/{HEX}/link"
    assert (
        manifest_link_path(repository, DIGEST) == f"{base}/_manifests/revisions/sha256/{HEX}/link"
    )
    assert tag_current_link_path(repository, "v1") == f"{base}/_manifests/tags/v1/current/link"
    assert (
        tag_index_link_path(repository, "v1", DIGEST)
        == f"{base}/_manifests/tags/v1/index/sha256/{HEX}/link"
    )
    assert upload_dir(repository, "u-1") == f"{base}/_uploads/u-1/"
    assert upload_startedat_path(repository, "u-1") == f"{base}/_uploads/u-1/startedat"


@pytest.mark.parametrize("repository", REPOSITORIES)
def test_repository_round_trips(repository: str) -> None:
    """Every builder's path parses back to the meaning it was built from."""
    upload = "0f6d2c5e-9c6b-4a8e-9d6f-3b2a1c0e9f8d"
    cases = [
        (
            layer_link_path(repository, DIGEST),
            RepoEntry(repository, RepoEntryKind.LAYER_LINK, DIGEST),
        ),
        (
            manifest_link_path(repository, DIGEST),
            RepoEntry(repository, RepoEntryKind.MANIFEST_LINK, DIGEST),
        ),
        (
            tag_current_link_path(repository, "v1.0-rc_1"),
            RepoEntry(repository, RepoEntryKind.TAG_CURRENT, tag="v1.0-rc_1"),
        ),
        (
            tag_index_link_path(repository, "latest", DIGEST),
            RepoEntry(repository, RepoEntryKind.TAG_INDEX, DIGEST, tag="latest"),
        ),
        (
            upload_startedat_path(repository, upload),
            RepoEntry(repository, RepoEntryKind.UPLOAD_STARTEDAT, upload_id=upload),
        ),
        (
            upload_dir(repository, upload) + "data",
            RepoEntry(repository, RepoEntryKind.UPLOAD_FILE, upload_id=upload),
        ),
        (
            upload_dir(repository, upload) + "hashstates/sha256/0",
            RepoEntry(repository, RepoEntryKind.UPLOAD_FILE, upload_id=upload),
        ),
    ]
    for key, meaning in cases:
        assert parse_repository_key(key) == meaning, key


def test_nested_repository_name_ends_at_the_first_section() -> None:
    """``a/b/c/_layers/...`` is repository ``a/b/c``; a folder named like a section inside a
    section does not move the split."""
    key = f"repositories/a/b/c/_manifests/revisions/sha256/{HEX}/link"
    assert parse_repository_key(key).repository == "a/b/c"
    entry = parse_repository_key("repositories/ns/app/_uploads/u1/_hidden/data")
    assert (entry.repository, entry.upload_id) == ("ns/app", "u1")


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (f"blobs/sha256/{HEX[:2]}/{HEX}/data", "not under repositories/"),
        ("repositories/ns/app/README", "file outside _layers, _manifests and _uploads"),
        ("repositories/ns/notes.txt", "file outside _layers, _manifests and _uploads"),
        (f"repositories/_layers/sha256/{HEX}/link", "repository name is empty"),
        ("repositories/ns/app/_blobs/x", "unknown repository section _blobs"),
        (f"repositories/ns/_app/_layers/sha256/{HEX}/link", "unknown repository section _app"),
        # links
        (f"repositories/ns/app/_layers/sha512/{HEX}/link", "unsupported digest algorithm sha512"),
        (
            f"repositories/ns/app/_manifests/revisions/md5/{HEX}/link",
            "unsupported digest algorithm md5",
        ),
        ("repositories/ns/app/_layers/sha256/not-a-digest/link", "not a sha256 hex digest"),
        (f"repositories/ns/app/_layers/sha256/{HEX.upper()}/link", "not a sha256 hex digest"),
        (f"repositories/ns/app/_layers/sha256/{HEX}/data", "not a link file"),
        (f"repositories/ns/app/_layers/sha256/{HEX}/link/", "not a link file"),
        (f"repositories/ns/app/_layers/sha256/{HEX}", "not a link file"),
        (f"repositories/ns/app/_layers/{HEX}/link", "not a link file"),
        # _manifests
        ("repositories/ns/app/_manifests/README", "unknown file in _manifests"),
        ("repositories/ns/app/_manifests/tags/v1/link", "unknown file in _manifests"),
        ("repositories/ns/app/_manifests/tags/v1/current/data", "unknown file in _manifests"),
        ("repositories/ns/app/_manifests/tags/v1/previous/link", "unknown file in _manifests"),
        ("repositories/ns/app/_manifests/tags/-v1/current/link", "not a valid tag name"),
        (f"repositories/ns/app/_manifests/tags/{'t' * 129}/current/link", "not a valid tag name"),
        (
            f"repositories/ns/app/_manifests/tags/v1/index/sha384/{HEX}/link",
            "unsupported digest algorithm sha384",
        ),
        (
            "repositories/ns/app/_manifests/revisions/sha256/xyz/link",
            "not a sha256 hex digest",
        ),
        # _uploads
        ("repositories/ns/app/_uploads/u1", "unknown file in _uploads"),
        ("repositories/ns/app/_uploads//startedat", "unknown file in _uploads"),
        ("repositories/ns/app/_uploads/u1/", "unknown file in _uploads"),
    ],
)
def test_malformed_repository_keys(key: str, problem: str) -> None:
    with pytest.raises(LayoutError, match=problem):
        parse_repository_key(key)


def test_builders_refuse_non_digests() -> None:
    """A builder never produces a path from a bad digest (a deletion could hit a wrong key)."""
    for build in (blob_dir, blob_data_path):
        with pytest.raises(LayoutError):
            build("sha256:../../etc")
    for build_repo in (layer_link_path, manifest_link_path):
        with pytest.raises(LayoutError):
            build_repo("ns/app", HEX)
    with pytest.raises(LayoutError):
        tag_index_link_path("ns/app", "v1", f"sha512:{HEX}")


# --- repository names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        ("ns/app", ("ns", "app")),
        ("app", (None, "app")),
        ("a/b/c", ("a", "b/c")),
        ("", (None, "")),
    ],
)
def test_split_repository(repository: str, expected: tuple[str | None, str]) -> None:
    assert split_repository(repository) == expected


@pytest.mark.parametrize(
    "repository",
    [
        "ns/app",
        "openshift-monitoring/prometheus",
        "team-a/my.app",
        "a1/b2",
        "ns/a-b.c",
        "ns/my_app",  # ImageStream names may hold "_" (openshift-apiserver's name rule)
        "ns/a_b.c-d",
    ],
)
def test_openshift_repositories(repository: str) -> None:
    """A repository of a live ImageStream must never count as "invalid": the pruner removes
    invalid-name repositories whole."""
    assert is_openshift_repository(repository)
    assert is_valid_repository_name(repository)


@pytest.mark.parametrize(
    "repository",
    [
        "app",  # no namespace
        "a/b/c",  # three segments
        "NS/app",  # upper case
        "ns/App",
        "ns/-app",  # leading dash
        "ns/app-",  # trailing dash
        "-ns/app",
        "my_ns/app",  # namespaces are DNS labels: no "_"
        "ns/app..x",  # distribution rejects consecutive dots
        "ns/",
        "/app",
        "ns//app",
        "",
    ],
)
def test_not_openshift_repositories(repository: str) -> None:
    """Such repositories cannot belong to an ImageStream."""
    assert not is_openshift_repository(repository)


@pytest.mark.parametrize(
    ("repository", "valid"),
    [
        ("app", True),
        ("a/b/c", True),
        ("ns/my_app", True),
        ("ns/my__app", True),
        ("ns/a---b", True),
        ("ns/a___b", False),
        ("ns/.app", False),
        ("Ns/app", False),
        ("ns/app/", False),
    ],
)
def test_distribution_repository_grammar(repository: str, valid: bool) -> None:
    assert is_valid_repository_name(repository) is valid


# --- whole listings: the bulk classifiers agree with the parsers ---------------------------------

_SEGMENTS = st.sampled_from(
    [
        "blobs",
        "sha256",
        "sha512",
        "repositories",
        "ns",
        "app",
        "a.b",
        "x_y",
        "_x",
        "",
        "data",
        "link",
        "_layers",
        "_manifests",
        "_uploads",
        "revisions",
        "tags",
        "current",
        "index",
        "v1",
        "1.0-rc",
        "vé",
        "startedat",
        "hashstates",
        "u-1",
        HEX,
        HEX[:2],
        HEX[2:4],
        HEX.upper(),
    ]
)


@st.composite
def _storage_keys(draw: st.DrawFn) -> str:
    """Keys near the layout: mostly real paths, then the same with one segment changed."""
    hex_ = draw(st.sampled_from([HEX, hashlib.sha256(b"other").hexdigest()]))
    repository = draw(st.sampled_from(["ns/app", "a/b/c", "ns", "x_y/z.1"]))
    tag = draw(st.sampled_from(["v1", "1.0-rc", "vé", "-x", "a" * 129]))
    real = draw(
        st.sampled_from(
            [
                blob_data_path(f"sha256:{hex_}"),
                layer_link_path(repository, f"sha256:{hex_}"),
                manifest_link_path(repository, f"sha256:{hex_}"),
                f"repositories/{repository}/_manifests/tags/{tag}/current/link",
                f"repositories/{repository}/_manifests/tags/{tag}/index/sha256/{hex_}/link",
                upload_startedat_path(repository, "u-1"),
                f"{upload_dir(repository, 'u-1')}hashstates/sha256/0",
            ]
        )
    )
    parts = real.split("/")
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["replace", "insert", "drop", "cut"]))
        at = draw(st.integers(0, len(parts) - 1))
        if action == "replace":
            parts[at] = draw(_SEGMENTS)
        elif action == "insert":
            parts.insert(draw(st.integers(0, len(parts))), draw(_SEGMENTS))
        elif action == "cut":  # a folder key, as an S3 folder marker is
            parts[at + 1 :] = [""]
        elif len(parts) > 1:
            del parts[at]
    return "/".join(parts)


def _parsed_blob(key: str) -> dict[str, str | None]:
    try:
        return {"digest": parse_blob_key(key), "problem": None}
    except LayoutError as exc:
        return {"digest": None, "problem": str(exc)}


def _parsed_repository(key: str) -> dict[str, str | None]:
    try:
        entry = parse_repository_key(key)
    except LayoutError as exc:
        return dict.fromkeys(("repository", "kind", "digest", "tag", "upload_id"), None) | {
            "problem": str(exc)
        }
    return {
        "repository": entry.repository,
        "kind": entry.kind.value,
        "digest": entry.digest,
        "tag": entry.tag,
        "upload_id": entry.upload_id,
        "problem": None,
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(_storage_keys(), min_size=1, max_size=40))
def test_bulk_classification_equals_the_parsers(keys: list[str]) -> None:
    """The snapshot classifies whole listings with RE2 patterns and falls back to the parsers:
    every key must get exactly the parser's meaning or problem, in the same row."""
    halves = pa.chunked_array([keys[: len(keys) // 2], keys[len(keys) // 2 :]], pa.string())
    assert classify_blob_keys(halves).to_pylist() == [_parsed_blob(k) for k in keys]
    assert classify_repository_keys(halves).to_pylist() == [_parsed_repository(k) for k in keys]


def test_bulk_classification_takes_the_fast_path_for_real_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real keys never reach the per-key parser (that is the point of the bulk path)."""
    keys = [
        layer_link_path("ns/app", DIGEST),
        manifest_link_path("a/b/c", DIGEST),
        tag_current_link_path("ns/app", "v1.0"),
        tag_index_link_path("ns/app", "v1.0", DIGEST),
        upload_startedat_path("ns/app", "u-1"),
    ]

    def refuse(key: str) -> dict[str, str | None]:
        raise AssertionError(f"{key} went through the parser")

    monkeypatch.setattr(layout, "_repository_row", refuse)
    kinds = classify_repository_keys(pa.array(keys))["kind"].to_pylist()
    assert kinds == ["layer_link", "manifest_link", "tag_current", "tag_index", "upload_startedat"]


_DIGESTS = st.one_of(
    st.sampled_from([DIGEST, f"sha256:{OTHER_HEX}"]),
    st.sampled_from([None, HEX, f"sha256:{HEX.upper()}", f"sha512:{HEX}", DIGEST[:-1], "sha256:"]),
)
_NAMES = st.one_of(st.sampled_from(REPOSITORIES), st.text(min_size=1, max_size=12))


def _per_key(build: Any, *columns: list[Any]) -> list[str] | str:
    """The per-key builder over every row, or the problem of the first row it refuses."""
    try:
        return [build(*row) for row in zip(*columns, strict=True)]
    except LayoutError as exc:
        return str(exc)


def _bulk(build: Any, *columns: list[Any]) -> list[str] | str:
    try:
        return build(*(pa.array(column, pa.string()) for column in columns)).to_pylist()
    except LayoutError as exc:
        return str(exc)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(_NAMES, st.text(max_size=8), st.one_of(st.just(DIGEST), _DIGESTS)),
        max_size=20,
    )
)
def test_bulk_paths_equal_the_per_key_paths(rows: list[tuple[str, str, str | None]]) -> None:
    """The executor builds a batch's files with the bulk builders: every path must be the
    per-key builder's, and a bad digest refused with the same problem."""
    repositories = [repository for repository, _, _ in rows]
    tags = [tag for _, tag, _ in rows]
    digests = [digest for _, _, digest in rows]
    assert _bulk(layout.blob_data_paths, digests) == _per_key(blob_data_path, digests)
    for bulk, per_key in (
        (layout.layer_link_paths, layer_link_path),
        (layout.manifest_link_paths, manifest_link_path),
    ):
        assert _bulk(bulk, repositories, digests) == _per_key(per_key, repositories, digests)
    assert _bulk(layout.tag_index_link_paths, repositories, tags, digests) == _per_key(
        tag_index_link_path, repositories, tags, digests
    )

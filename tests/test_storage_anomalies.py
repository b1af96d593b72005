"""Broken registry storage: every entry that does not fit the layout is an anomaly, never a row.

The pruner deletes by the blobs/links/tags tables, so a malformed entry that slipped into them
could be acted upon, and one that crashed the walk would stop every prune. Storage trees are
written by hand (local folder and S3 through moto), with good entries next to the broken ones
to show that the walk carries on and records them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import s3fs
from prefect import get_client
from prefect.client.schemas.sorting import FlowRunSort

from regprune.cli.main import main
from regprune.layout import (
    BLOB_PREFIXES,
    LINK_SIZE,
    V2_ROOT,
    blob_data_path,
    blob_dir,
    layer_link_path,
    link_content,
    manifest_link_path,
    tag_current_link_path,
    tag_index_link_path,
    upload_dir,
    upload_startedat_path,
)
from regprune.storage import S3Storage, StorageSpec
from tests.conftest import rows, write_dump
from tests.harness.registry_bench import MotoServer

REPO = "ns/app"
UPLOAD = "6c3e2a9e-2f0b-4a51-9f0e-0d6f1b2a3c4d"
BAD_UPLOAD = "0a1b2c3d-0000-4000-8000-000000000000"


def digest_of(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def hex_of(seed: str) -> str:
    return digest_of(seed).removeprefix("sha256:")


# good entries
LAYER = digest_of("layer")
MANIFEST = digest_of("manifest")
# broken entries (each seed names what is wrong with it)
EMPTY = hex_of("empty-link")
GARBAGE = hex_of("garbage-link")
NEWLINE = hex_of("link-with-newline")
SHA512 = hex_of("sha512-link")
NO_DATA = hex_of("blob-without-data")
ONLY_JUNK = hex_of("blob-with-junk-only")
FIFO = hex_of("fifo")
LINKED = hex_of("symlinked-data")
MOVED = hex_of("moved-blob")
OTHER_PREFIX = next(f"{i:02x}" for i in range(256) if f"{i:02x}" != MOVED[:2])


def good_entries() -> dict[str, bytes]:
    """One pushed image: two blobs, their links, a tag with its index, one open upload."""
    return {
        blob_data_path(LAYER): b"layer bytes",
        blob_data_path(MANIFEST): b"{}",
        layer_link_path(REPO, LAYER): link_content(LAYER),
        manifest_link_path(REPO, MANIFEST): link_content(MANIFEST),
        tag_current_link_path(REPO, "latest"): link_content(MANIFEST),
        tag_index_link_path(REPO, "latest", MANIFEST): link_content(MANIFEST),
        upload_startedat_path(REPO, UPLOAD): b"2026-01-02T03:04:05Z",
        upload_dir(REPO, UPLOAD) + "data": b"partial",
    }


def check_good_entries(out: Path) -> None:
    """The good entries are all recorded, and nothing else is."""
    assert {r["digest"] for r in rows(out / "blobs.parquet")} == {LAYER, MANIFEST}
    links = [(r["repository"], r["digest"]) for r in rows(out / "layer_links.parquet")]
    assert links == [(REPO, LAYER)]
    links = [(r["repository"], r["digest"]) for r in rows(out / "manifest_links.parquet")]
    assert links == [(REPO, MANIFEST)]
    tags = [(r["repository"], r["tag"], r["digest"]) for r in rows(out / "tags.parquet")]
    assert tags == [(REPO, "latest", MANIFEST)]
    index = [(r["repository"], r["tag"], r["digest"]) for r in rows(out / "tag_index.parquet")]
    assert index == [(REPO, "latest", MANIFEST)]


def anomalies(out: Path) -> dict[str, str]:
    found = rows(out / "storage_anomalies.parquet")
    paths = [a["path"] for a in found]
    assert len(paths) == len(set(paths)), "an entry is reported twice"
    return {a["path"]: a["problem"] for a in found}


def snapshot(storage: str, tmp_path: Path, *extra: str) -> tuple[int, Path]:
    """``regprune snapshot`` with an empty metadata dump: only storage matters here."""
    dump = write_dump(tmp_path / "dump.json", [])
    out = tmp_path / "snap"
    args = ["snapshot", "--storage", storage, "--metadata", str(dump), "--out", str(out)]
    return main([*args, "--shards", "2", *extra]), out


# --- a local folder --------------------------------------------------------------------------


def write(v2: Path, key: str, data: bytes = b"") -> Path:
    path = v2 / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_raw(v2: Path, key: bytes) -> None:
    """Create a file whose name is not UTF-8 (str paths cannot spell it)."""
    path = os.fsencode(v2) + b"/" + key
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


BROKEN_LOCAL: dict[str, str] = {
    # links
    f"repositories/{REPO}/_layers/sha256/{EMPTY}/link": "empty link file",
    f"repositories/{REPO}/_manifests/revisions/sha256/{GARBAGE}/link": (
        "malformed link file (7 bytes)"
    ),
    f"repositories/{REPO}/_layers/sha256/{NEWLINE}/link": "malformed link file (72 bytes)",
    f"repositories/{REPO}/_layers/sha512/{SHA512}/link": "unsupported digest algorithm sha512",
    f"repositories/{REPO}/_layers/sha256/not-a-digest/link": (
        "link folder is not a sha256 hex digest"
    ),
    f"repositories/{REPO}/_manifests/tags/latest/index/sha256/{GARBAGE[:12]}/link": (
        "link folder is not a sha256 hex digest"
    ),
    f"repositories/{REPO}/_layers/sha256/{LAYER[7:]}/link.tmp": "not a link file",
    # tags and uploads: their content is read
    f"repositories/{REPO}/_manifests/tags/broken/current/link": (
        "link file does not hold a sha256 digest"
    ),
    f"repositories/{REPO}/_manifests/tags/empty/current/link": "empty link file",
    f"repositories/{REPO}/_uploads/{BAD_UPLOAD}/startedat": "startedat is not an RFC 3339 time",
    # unknown files and folders in repositories
    f"repositories/{REPO}/README": "file outside _layers, _manifests and _uploads",
    f"repositories/{REPO}/_manifests/notes.txt": "unknown file in _manifests",
    f"repositories/{REPO}/_blobs/whatever": "unknown repository section _blobs",
    f"repositories/{REPO}/_uploads/stray-file": "unknown file in _uploads",
    f"repositories/{REPO}/_manifests/tags/latest/current/link.bak": "unknown file in _manifests",
    # blobs
    f"blobs/sha256/{NO_DATA[:2]}/{NO_DATA}/": "blob folder without data",
    f"blobs/sha256/{ONLY_JUNK[:2]}/{ONLY_JUNK}/data.partial": "unknown file in blob folder",
    f"blobs/sha256/{OTHER_PREFIX}/{MOVED}/data": "blob folder is under the wrong prefix folder",
    f"blobs/sha256/{LAYER[7:9]}/not-a-digest/data": "blob folder is not a sha256 hex digest",
    f"blobs/sha256/zz/{LAYER[7:]}/data": "blob prefix folder is not two hex digits",
    f"blobs/sha512/{SHA512[:2]}/{SHA512}/data": "not under blobs/sha256/",
    f"blobs/sha256/{FIFO[:2]}/{FIFO}/data": "not a regular file",
    f"blobs/sha256/{LINKED[:2]}/{LINKED}/data": "symbolic link",
    f"repositories/{REPO}/_manifests/revisions/sha256/{LINKED}/link": "symbolic link",
    # files and folders where only folders belong, names that are not UTF-8
    "blobs/README": "unexpected file",
    "blobs/sha256/README": "unexpected file",
    "repositories/README": "unexpected file",
    "repositories/elsewhere": "symbolic link",
    "repositories/bad\\xffns": "name is not UTF-8",
    f"repositories/{REPO}/_uploads/{UPLOAD}/hash\\xfe": "name is not UTF-8",
    f"blobs/sha256/{LAYER[7:9]}/\\xfe": "name is not UTF-8",
}


CONTENT: dict[str, bytes] = {
    f"repositories/{REPO}/_layers/sha256/{EMPTY}/link": b"",
    f"repositories/{REPO}/_manifests/revisions/sha256/{GARBAGE}/link": b"garbage",
    f"repositories/{REPO}/_layers/sha256/{NEWLINE}/link": link_content(LAYER) + b"\n",
    f"repositories/{REPO}/_manifests/tags/broken/current/link": b"x" * LINK_SIZE,
    f"repositories/{REPO}/_manifests/tags/empty/current/link": b"",
    f"repositories/{REPO}/_uploads/{BAD_UPLOAD}/startedat": b"yesterday, roughly",
}


@pytest.fixture
def broken_tree(tmp_path: Path) -> Path:
    """Good entries plus one of each kind of broken entry (see ``BROKEN_LOCAL``)."""
    root = tmp_path / "registry"
    v2 = root / V2_ROOT
    for key, data in good_entries().items():
        write(v2, key, data)
    for key in BROKEN_LOCAL:
        if "\\x" in key or key.endswith("/") or key == "repositories/elsewhere":
            continue
        # well-formed link content by default: for most entries the path alone is wrong
        write(v2, key, CONTENT.get(key, link_content(LAYER)))
    (v2 / blob_dir(f"sha256:{NO_DATA}")).mkdir(parents=True)
    fifo = v2 / blob_data_path(f"sha256:{FIFO}")
    fifo.unlink()
    os.mkfifo(fifo)
    for key in (blob_data_path(f"sha256:{LINKED}"), manifest_link_path(REPO, f"sha256:{LINKED}")):
        (v2 / key).unlink()
        (v2 / key).symlink_to(v2 / blob_data_path(LAYER))
    (v2 / "repositories/elsewhere").symlink_to(tmp_path)
    write_raw(v2, b"repositories/bad\xffns/app/_layers/sha256/" + LAYER[7:].encode() + b"/link")
    write_raw(v2, f"repositories/{REPO}/_uploads/{UPLOAD}/hash".encode() + b"\xfe")
    write_raw(v2, f"blobs/sha256/{LAYER[7:9]}/".encode() + b"\xfe")
    # the registry's own deletes leave empty folders behind: not anomalies
    (v2 / f"repositories/{REPO}/_layers/sha256/{hex_of('deleted')}").mkdir(parents=True)
    (v2 / f"repositories/{REPO}/_uploads/{hex_of('finished')[:8]}").mkdir(parents=True)
    used = {key.split("/")[2] for key in [*BROKEN_LOCAL, *good_entries()] if key.count("/") > 2}
    (v2 / "blobs/sha256" / next(p for p in BLOB_PREFIXES if p not in used)).mkdir()
    return root


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_every_broken_entry_is_an_anomaly_and_nothing_else(
    broken_tree: Path, tmp_path: Path
) -> None:
    """The walk completes; each broken entry is one anomaly row with its problem."""
    code, out = snapshot(str(broken_tree), tmp_path)
    assert code == 0
    assert anomalies(out) == BROKEN_LOCAL
    check_good_entries(out)

    repositories = rows(out / "repositories.parquet")
    assert [(r["repository"], r["valid_name"]) for r in repositories] == [(REPO, True)]
    uploads = {u["upload_id"]: u for u in rows(out / "uploads.parquet")}
    assert set(uploads) == {UPLOAD, BAD_UPLOAD}
    assert uploads[UPLOAD]["started_at"].isoformat() == "2026-01-02T03:04:05+00:00"
    assert uploads[UPLOAD]["size"] == len(b"partial") + len(b"2026-01-02T03:04:05Z")
    assert uploads[BAD_UPLOAD]["started_at"] is None

    summary = json.loads((out / "snapshot.json").read_text())
    assert summary["rows"]["storage_anomalies"] == len(BROKEN_LOCAL)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_storage_without_a_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder that is not a registry rootdirectory: exit 1 at once, saying what is expected."""
    (tmp_path / "not-a-registry" / "docker").mkdir(parents=True)
    code, out = snapshot(str(tmp_path / "not-a-registry"), tmp_path)
    assert code == 1
    err = capsys.readouterr().err
    assert "regprune: error: no registry storage in" in err
    assert "expected docker/registry/v2/ inside it" in err
    assert not (out / "snapshot.json").exists()

    code, _ = snapshot(str(tmp_path / "missing"), tmp_path)
    assert code == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_unsupported_storage_driver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The registry config decides the driver; the message lists the ones regprune reads."""
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\nstorage:\n  oss: {bucket: b, accesskeyid: x}\n  delete: {enabled: true}\n"
    )
    dump = write_dump(tmp_path / "dump.json", [])
    args = ["snapshot", "--registry-config", str(config), "--metadata", str(dump)]
    assert main([*args, "--out", str(tmp_path / "snap")]) == 1
    err = capsys.readouterr().err
    assert "unsupported storage driver" in err and "oss" in err
    assert "supports filesystem, s3, gcs, azure, swift" in err


def test_credentials_as_storage_options_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Options are stored with the flow run: a credential there is refused, not echoed."""
    root = tmp_path / "registry"
    write(root / V2_ROOT, blob_data_path(LAYER), b"layer bytes")
    code, out = snapshot(str(root), tmp_path, "--storage-option", "secret=hunter2")
    assert code in (1, 2)  # a failure, or bad usage once refused before the flow starts
    err = capsys.readouterr().err
    assert "storage option 'secret' looks like a credential" in err
    assert "AWS_SECRET_ACCESS_KEY" in err
    assert "hunter2" not in err
    assert not (out / "snapshot.json").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_refused_credentials_never_reach_prefect(tmp_path: Path) -> None:
    """The point of refusing them: flow-run parameters are stored by and shown in Prefect."""
    root = tmp_path / "registry"
    write(root / V2_ROOT, blob_data_path(LAYER), b"layer bytes")
    secret = f"hunter2-{os.urandom(4).hex()}"
    code, _ = snapshot(str(root), tmp_path, "--storage-option", f"secret={secret}")
    assert code != 0
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=5)
    parameters = [json.dumps(run.parameters, default=str) for run in runs]
    assert parameters and not any(secret in p for p in parameters)


# --- S3 --------------------------------------------------------------------------------------


@pytest.fixture
def s3_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every S3 API call s3fs makes in this process (moto_server keeps no request log)."""
    calls: list[str] = []
    original = s3fs.core.S3FileSystem._call_s3

    original_sync = s3fs.core.S3FileSystem.call_s3  # bound to the original at class creation

    async def counting(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        return await original(self, method, *args, **kwargs)

    def counting_sync(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        return original_sync(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.core.S3FileSystem, "_call_s3", counting)
    monkeypatch.setattr(s3fs.core.S3FileSystem, "call_s3", counting_sync)
    return calls


def put_multipart(client: Any, bucket: str, key: str, body: bytes) -> None:
    """A one-part multipart upload: the ETag is not the MD5 of the content."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    part = client.upload_part(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=body
    )
    client.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_s3_anomalies_and_requests(
    moto: MotoServer,
    s3_env: dict[str, str],
    s3_calls: list[str],
    tmp_path: Path,
) -> None:
    """Links are validated by their listing ETag; only those that do not match are read."""
    bucket = moto.create_bucket(f"anomalies-{os.getpid()}-{os.urandom(3).hex()}")
    client = moto.client()
    base = f"registry/{V2_ROOT}/"
    for key, data in good_entries().items():
        client.put_object(Bucket=bucket, Key=base + key, Body=data)
    wrong = f"repositories/{REPO}/_layers/sha256/{GARBAGE}/link"
    broken = {
        f"repositories/{REPO}/_layers/sha256/{EMPTY}/link": (b"", "empty link file"),
        wrong: (
            link_content(LAYER),
            f"link content {LAYER} does not match its path (sha256:{GARBAGE})",
        ),
        f"repositories/{REPO}/_manifests/tags/broken/current/link": (
            b"sha256:" + b"x" * 64,
            "link file does not hold a sha256 digest",
        ),
        f"repositories/{REPO}/_uploads/{BAD_UPLOAD}/startedat": (
            b"\xff\xfe",
            "startedat is not an RFC 3339 time",
        ),
        f"blobs/sha256/{NO_DATA[:2]}/{NO_DATA}/": (b"", "blob folder without data"),
        f"blobs/sha256/{LAYER[7:9]}/not-a-digest/data": (
            b"x",
            "blob folder is not a sha256 hex digest",
        ),
    }
    for key, (data, _) in broken.items():
        client.put_object(Bucket=bucket, Key=base + key, Body=data)
    # folder markers next to real content, as S3 consoles create them: not anomalies
    for key in (blob_dir(LAYER), f"repositories/{REPO}/_layers/", "repositories/"):
        client.put_object(Bucket=bucket, Key=base + key, Body=b"")
    # a correct link whose ETag is not an MD5 (multipart upload): read, found fine
    suspect = layer_link_path(REPO, MANIFEST)
    put_multipart(client, bucket, base + suspect, link_content(MANIFEST))

    code, out = snapshot(f"s3://{bucket}/registry", tmp_path)
    assert code == 0
    assert anomalies(out) == {key: problem for key, (_, problem) in broken.items()}
    assert {r["digest"] for r in rows(out / "blobs.parquet")} == {LAYER, MANIFEST}
    links = {(r["repository"], r["digest"]) for r in rows(out / "layer_links.parquet")}
    assert links == {(REPO, LAYER), (REPO, MANIFEST)}
    tags = [(r["tag"], r["digest"]) for r in rows(out / "tags.parquet")]
    assert tags == [("latest", MANIFEST)]
    uploads = {u["upload_id"]: u["started_at"] for u in rows(out / "uploads.parquet")}
    assert uploads[BAD_UPLOAD] is None and uploads[UPLOAD] is not None

    # reads: the two tag links, two startedat files, the mismatched and the multipart link
    assert sorted(c for c in s3_calls if c != "list_objects_v2") == ["get_object"] * 6
    # listings: four to plan (root check, blobs/, blobs/sha256/, repositories/), then one flat
    # listing per blob prefix folder and one per namespace folder
    prefixes = {LAYER[7:9], MANIFEST[7:9], NO_DATA[:2]}
    assert s3_calls.count("list_objects_v2") == 4 + len(prefixes) + 1


@pytest.mark.slow
def test_s3_stat_of_scattered_keys_is_one_head_each(
    moto: MotoServer, s3_env: dict[str, str], s3_calls: list[str]
) -> None:
    """Keys with no narrow common folder (the blobs of a batch's layer links) are read with
    one HEAD each, a missing one too (s3fs's ``info`` lists after a 404)."""
    bucket = moto.create_bucket(f"stat-{os.getpid()}-{os.urandom(3).hex()}")
    present, missing = blob_data_path(LAYER), blob_data_path(MANIFEST)
    moto.client().put_object(Bucket=bucket, Key=f"registry/{V2_ROOT}/{present}", Body=b"12345")
    found = S3Storage(StorageSpec(f"s3://{bucket}/registry")).stat_many([present, missing])
    assert s3_calls == ["head_object", "head_object"]
    assert found[missing] is None
    stat = found[present]
    assert stat is not None and stat.size == 5 and stat.modified is not None
    assert stat.etag == hashlib.md5(b"12345").hexdigest()

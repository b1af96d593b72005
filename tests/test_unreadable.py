"""Unreadable is not absent (issue 20 item 5): a folder or object that exists but cannot be
listed or read is an error for the run, never a missing object.

Issue 20's case 4: with ``blobs/sha256/ff`` unreadable (mode 000, no CAP_DAC_OVERRIDE) the
dry run said nothing and planned to delete the layer links of blobs that exist; ``--confirm``
deleted 179 files, then failed with a raw ``PermissionError``. Now the dry run fails in one
line naming the folder and ``--confirm`` deletes nothing.

How the errors are made: at the library, injected at the OS call (``os.scandir``,
``Path.lstat``, ``Path.read_bytes`` raise ``PermissionError`` or ``EIO`` for one path: the
tests run as root here, whom a mode cannot stop); through the command on a folder, a real mode
000 folder with the command run as root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
(``setpriv --bounding-set``), or as it is when the tests run as another user; on S3, the
fault proxy (tests/harness/s3_proxy.py) answering 403 to one prefix's listing, one object's GET and
HEAD.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regprune import layout
from regprune.cli.main import EXIT_FAILURE, main
from regprune.demo.synthetic import SyntheticSpec, generate
from regprune.storage import (
    LocalStorage,
    S3Storage,
    StorageConfigError,
    StorageListingError,
    StorageSpec,
)
from tests.harness.registry_bench import MotoServer
from tests.harness.s3_proxy import S3FaultProxy

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = SyntheticSpec(namespaces=2, streams_per_namespace=2, tags_per_stream=2, history_per_tag=2)


# --- the library: what a backend says ---------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A registry root with two blobs in two prefix folders and one repository."""
    v2 = tmp_path / layout.V2_ROOT
    for digest in ("sha256:" + "ab" * 32, "sha256:" + "cd" * 32):
        data = v2 / layout.blob_data_path(digest)
        data.parent.mkdir(parents=True)
        data.write_bytes(b"x")
        link = v2 / layout.layer_link_path("ns/app", digest)
        link.parent.mkdir(parents=True)
        link.write_text(digest)
    return tmp_path


def failing(
    monkeypatch: pytest.MonkeyPatch, target: Any, name: str, path: Path, error: OSError
) -> None:
    """``target.name`` raises ``error`` for ``path`` (and works for every other path)."""
    original = getattr(target, name)

    def call(self_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(self_or_path).rstrip("/") == str(path):
            raise error
        return original(self_or_path, *args, **kwargs)

    monkeypatch.setattr(target, name, call)


DENIED = PermissionError(errno.EACCES, "Permission denied")
IO_ERROR = OSError(errno.EIO, "Input/output error")


def test_a_folder_that_cannot_be_listed_stops_the_walk(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tree / layout.V2_ROOT / "blobs/sha256/cd"
    backend = LocalStorage(StorageSpec(str(tree)))
    assert backend.list_files("blobs/").num_rows == 2
    failing(monkeypatch, os, "scandir", folder, DENIED)
    with pytest.raises(StorageConfigError, match=r"access denied: folder listing of .*sha256/cd"):
        backend.list_files("blobs/")
    with pytest.raises(StorageConfigError, match="access denied"):
        backend.list_children("blobs/sha256/cd/")


def test_an_io_error_stops_the_walk_and_is_retried_as_a_failed_listing(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing(monkeypatch, os, "scandir", tree / layout.V2_ROOT / "repositories/ns", IO_ERROR)
    with pytest.raises(StorageListingError, match="Input/output error"):
        LocalStorage(StorageSpec(str(tree))).list_files("repositories/")


def test_a_folder_gone_while_walking_is_absent(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = FileNotFoundError(errno.ENOENT, "No such file or directory")
    failing(monkeypatch, os, "scandir", tree / layout.V2_ROOT / "blobs/sha256/cd", gone)
    listing = LocalStorage(StorageSpec(str(tree))).list_files("blobs/")
    assert listing["key"].to_pylist() == [layout.blob_data_path("sha256:" + "ab" * 32)]


def test_a_file_that_cannot_be_stated_or_read_is_not_absent(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalStorage(StorageSpec(str(tree)))
    key = layout.blob_data_path("sha256:" + "ab" * 32)
    missing = layout.blob_data_path("sha256:" + "ef" * 32)
    assert backend.stat_many([missing]) == {missing: None}
    assert isinstance(backend.read_existing([missing])[missing], FileNotFoundError)
    failing(monkeypatch, Path, "lstat", tree / layout.V2_ROOT / key, DENIED)
    failing(monkeypatch, Path, "read_bytes", tree / layout.V2_ROOT / key, IO_ERROR)
    with pytest.raises(StorageConfigError, match="access denied: folder stat of"):
        backend.stat_many([key, missing])
    with pytest.raises(StorageListingError, match=r"folder read of .*/data failed"):
        backend.read_existing([key, missing])
    assert isinstance(backend.read_many([key])[key], OSError)  # the raw answer, per key


def test_the_snapshot_walk_stops_on_an_unreadable_tag_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tag's ``current/link`` is read: unreadable, it was an anomaly (the tag absent)."""
    from regprune.tasks.storage_snapshot import walk_repository_shard

    generate(tmp_path / "registry", SPEC, tmp_path / "metadata.json", now=NOW)
    v2 = tmp_path / "registry" / layout.V2_ROOT
    link = next(v2.glob("repositories/*/*/_manifests/tags/*/current/link"))
    failing(monkeypatch, Path, "read_bytes", link, DENIED)
    (tmp_path / "parts").mkdir()
    spec = StorageSpec(str(tmp_path / "registry"))
    namespace = link.relative_to(v2).parts[1]
    with pytest.raises(StorageConfigError, match=r"access denied: folder read of .*current/link"):
        walk_repository_shard.fn(spec, [f"repositories/{namespace}/"], str(tmp_path / "parts"), 0)


# --- the command on a folder: a real mode 000 ---------------------------------------------------


def without_dac_override() -> list[str]:
    """The command prefix that makes a mode bind this process: none for another user; for
    root, dropping the capabilities that let root read past a mode."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to run as root without CAP_DAC_OVERRIDE")
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot drop capabilities here: {probe.stderr.decode().strip()}")
    return prefix


def used_blob_prefix(registry: Path, dump: Path) -> str:
    """The prefix folder of a layer an Image references and a repository links."""
    images = [i for i in json.loads(dump.read_text())["items"] if i["kind"] == "Image"]
    v2 = registry / layout.V2_ROOT
    for image in images:
        for layer in image.get("dockerImageLayers") or []:
            digest = layer["name"]
            if (v2 / layout.blob_data_path(digest)).exists() and list(
                v2.glob(f"repositories/*/*/_layers/sha256/{digest[7:]}/link")
            ):
                return digest[7:9]
    raise AssertionError("no linked layer")


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_an_unreadable_blob_folder_fails_the_dry_run_and_deletes_nothing(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    prefix = without_dac_override()
    registry, dump = tmp_path / "registry", tmp_path / "metadata.json"
    generate(registry, SPEC, dump, now=NOW)
    hexes = used_blob_prefix(registry, dump)
    folder = registry / layout.V2_ROOT / "blobs" / "sha256" / hexes
    before = files(registry)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}

    def prune(out: str, *extra: str) -> subprocess.CompletedProcess[str]:
        args = ["prune", "--storage", str(registry), "--metadata", str(dump)]
        args += ["--out", str(tmp_path / out), "--keep-younger-than", "0s", *extra]
        command = [*prefix, sys.executable, "-m", "regprune.cli.main", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=False)

    folder.chmod(0)
    try:
        for out, extra in (("dry", ()), ("run", ("--confirm",))):
            done = prune(out, *extra)
            assert done.returncode == EXIT_FAILURE, done.stderr
            line = done.stderr.strip().splitlines()[-1]
            assert line.startswith("regprune: error: access denied: folder listing of ")
            assert f"blobs/sha256/{hexes}" in line and "Permission denied" in line
            assert "Traceback" not in done.stderr
            assert not (tmp_path / out / "actions").exists()
    finally:
        folder.chmod(0o755)
    assert files(registry) == before


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_an_unreadable_quarantine_stops_the_re_check_before_it_restores_or_purges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The re-check after the quarantine walks the quarantine like the registry's tree: a
    folder of it that cannot be listed (injected at ``os.scandir``, as everything has
    moved) fails the run in one line, and what is quarantined stays there, neither moved
    back nor purged (``--quarantine-retention 0s`` would purge it right after the re-check),
    for the next run's re-check or ``regprune undo``."""
    from regprune import hooks

    registry, dump = tmp_path / "registry", tmp_path / "metadata.json"
    generate(registry, SPEC, dump, now=NOW)
    seen: dict[str, Any] = {}

    def deny_a_quarantined_folder(**_: Any) -> None:
        quarantine = registry / "_regprune" / "quarantine"
        seen["held"] = stored(registry)
        folders = sorted(p for p in quarantine.rglob("*") if p.is_dir() and p.name != "data")
        seen["denied"] = folders[-1]
        failing(monkeypatch, os, "scandir", folders[-1], DENIED)

    args = ["prune", "--storage", str(registry), "--metadata", str(dump), "--confirm"]
    args += ["--out", str(tmp_path / "run"), "--quarantine-retention", "0s"]
    with hooks.at(hooks.QUARANTINED, deny_a_quarantined_folder):
        assert main(args) == EXIT_FAILURE
    monkeypatch.undo()  # the folder readable again, to the test's own walk
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("regprune: error: access denied: folder listing of ")
    assert str(seen["denied"]) in lines[0]
    assert any("_regprune/quarantine/" in key for key in seen["held"])
    assert stored(registry) == seen["held"]  # nothing restored, nothing purged


def stored(registry: Path) -> dict[str, bytes]:
    """The registry's tree and the quarantines (not the lock: the failed run released it)."""
    kept = ("docker/", "_regprune/quarantine/")
    return {key: data for key, data in files(registry).items() if key.startswith(kept)}


# --- S3: a 403 on one prefix, one GET, one HEAD -------------------------------------------------


@pytest.fixture
def s3_copy(moto: MotoServer, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    bucket = moto.create_bucket(f"unreadable-{uuid.uuid4().hex[:8]}")
    generate(
        f"s3://{bucket}/registry",
        SPEC,
        tmp_path / "metadata.json",
        now=NOW,
        storage_options=moto.storage_options,
    )
    yield bucket, f"s3://{bucket}/registry", tmp_path / "metadata.json"


@pytest.fixture
def proxy(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(moto.endpoint_url) as started:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": started.url,
            "AWS_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "2",
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        yield started


def bucket_keys(moto: MotoServer, bucket: str) -> set[tuple[str, str]]:
    pages = moto.client().get_paginator("list_objects_v2")
    return {
        (item["Key"], item["ETag"])
        for page in pages.paginate(Bucket=bucket, Prefix="registry/")
        for item in page.get("Contents", [])
    }


def forbid_listing(proxy: S3FaultProxy, prefix: str) -> None:
    """403 for every listing of ``prefix`` (however the query string encodes it)."""
    for where in (prefix, prefix.replace("/", "%2F")):
        proxy.inject("list", "forbidden", times=None, where=where)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("what", ["listing", "get"])
def test_a_403_on_s3_fails_the_dry_run_and_deletes_nothing(
    what: str,
    moto: MotoServer,
    s3_copy: tuple[str, str, Path],
    proxy: S3FaultProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket, url, dump = s3_copy
    keys = bucket_keys(moto, bucket)
    v2 = f"registry/{layout.V2_ROOT}/"
    if what == "listing":
        digest = next(k for k, _ in sorted(keys) if k.endswith("/data"))
        hexes = digest[len(v2) :].split("/")[2]
        forbid_listing(proxy, f"{v2}blobs/sha256/{hexes}/")
        expected = f"access denied: S3 listing of s3://{bucket}/{v2}blobs/sha256/{hexes}/"
    else:  # the tag links the walk reads
        link = next(k for k, _ in sorted(keys) if k.endswith("/current/link"))
        proxy.inject("get", "forbidden", times=None, where=link)
        expected = f"access denied: s3 read of {url}/{layout.V2_ROOT}/{link[len(v2) :]}"
    for out, extra in (("dry", []), ("run", ["--confirm"])):
        args = ["prune", "--storage", url, "--metadata", str(dump), "--out", str(tmp_path / out)]
        assert main([*args, "--keep-younger-than", "0s", *extra]) == EXIT_FAILURE
        err = capsys.readouterr().err
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"regprune: error: {expected}"), err
        assert "Traceback" not in err
    assert proxy.count("delete_objects") == 0 and proxy.count("delete") == 0
    assert bucket_keys(moto, bucket) == keys


@pytest.mark.slow
def test_s3_says_a_forbidden_object_is_not_absent(
    moto: MotoServer, s3_copy: tuple[str, str, Path], proxy: S3FaultProxy
) -> None:
    bucket, url, _ = s3_copy
    backend = S3Storage(StorageSpec(url))
    v2 = f"registry/{layout.V2_ROOT}/"
    key = next(k for k, _ in sorted(bucket_keys(moto, bucket)) if k.endswith("/data"))[len(v2) :]
    missing = layout.blob_data_path("sha256:" + "0" * 64)
    assert backend.stat_many([missing]) == {missing: None}
    assert isinstance(backend.read_existing([missing])[missing], FileNotFoundError)
    proxy.inject("head", "forbidden", times=None, where=key)
    proxy.inject("get", "forbidden", times=None, where=key)
    with pytest.raises(StorageConfigError, match="access denied: S3 HEAD of"):
        backend.stat_many([missing, key])
    with pytest.raises(StorageConfigError, match="access denied: s3 read of"):
        backend.read_existing([key, missing])
    forbid_listing(proxy, f"{v2}{key.rsplit('/', 2)[0]}/")
    with pytest.raises(StorageConfigError, match="access denied: S3 listing of"):
        backend.list_files(key.rsplit("/", 2)[0] + "/")

"""``regprune undo RUN`` gives back the storage a confirmed prune found: the same keys with
the same bytes, on a folder, S3 (moto), GCS, Azure and Swift (the emulators of
tests/harness/storage_emulators.py; on Swift the DLOs' manifests and segments too), and says in one
line when there is nothing left to undo. The metadata side of undo (prune-images) has its own
tests.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regprune.cli.main import EXIT_FAILURE, EXIT_OK, main
from regprune.demo.synthetic import SyntheticSpec, generate
from tests.harness.registry_bench import MotoServer
from tests.harness.storage_emulators import V2, copy_registry_tree, uploaded_blobs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

AGES = ["--keep-younger-than", "0s", "--upload-max-age", "0s"]
"""A copy's objects are all new; the folder's are generated with their own ages."""


@dataclass
class Bucket:
    """A storage URL and every object it holds, with its bytes (and, on Swift, a DLO's
    manifest header), keyed as the service keys them."""

    url: str
    objects: Callable[[], dict[str, Any]]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("undo-tree")
    generate(folder / "registry", SyntheticSpec.demo(), folder / "metadata.json")
    return folder / "registry", folder / "metadata.json"


def _folder(tree: Path, tmp_path: Path) -> Bucket:
    root = tmp_path / "storage"
    shutil.copytree(tree, root)

    def objects() -> dict[str, Any]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
        }

    return Bucket(str(root), objects)


def _s3(tree: Path, moto: MotoServer) -> Bucket:
    bucket = moto.create_bucket(f"undo-{uuid.uuid4().hex[:10]}")
    client = moto.client()
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        key = f"root/{path.relative_to(tree).as_posix()}"
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    def objects() -> dict[str, Any]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}

    return Bucket(f"s3://{bucket}/root", objects)


def _emulated(kind: str, tree: Path, emulator: Any) -> Bucket:
    bucket = emulator.create_bucket(f"undo-{uuid.uuid4().hex[:10]}")
    dlo = uploaded_blobs(tree) if kind == "swift" else []
    copy_registry_tree(tree, emulator, bucket, swift_dlo=dlo)

    def read(key: str) -> Any:
        if kind == "gcs":
            return bytes(emulator.filesystem().cat_file(f"{bucket}/{key}"))
        if kind == "azure":
            client = emulator.service().get_container_client(bucket)
            return client.download_blob(key).readall()
        conn = emulator.connection()
        head = conn.head_object(bucket, key)
        return (conn.get_object(bucket, key)[1], head.get("x-object-manifest"))

    def objects() -> dict[str, Any]:
        return {key: read(key) for key in emulator.list_keys(bucket)}

    scheme = {"gcs": "gs", "azure": "az", "swift": "swift"}[kind]
    return Bucket(f"{scheme}://{bucket}", objects)


@pytest.fixture(params=["folder", "s3", "gcs", "azure", "swift"])
def bucket(
    request: pytest.FixtureRequest,
    tree: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Bucket]:
    kind = request.param
    if kind == "folder":
        yield _folder(tree[0], tmp_path)
        return
    if kind == "s3":
        moto: MotoServer = request.getfixturevalue("moto")
        request.getfixturevalue("s3_env")
        yield _s3(tree[0], moto)
        return
    fixture = {"gcs": "gcs_emulator", "azure": "azurite", "swift": "swift_aio"}[kind]
    emulator = request.getfixturevalue(fixture)
    for name, value in emulator.env.items():
        monkeypatch.setenv(name, value)
    yield _emulated(kind, tree[0], emulator)


def quarantined(objects: dict[str, Any]) -> list[str]:
    return [key for key in objects if "_regprune/quarantine/" in key]


def test_undo_gives_back_the_same_keys_and_bytes(
    bucket: Bucket, tree: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = bucket.objects()
    run = tmp_path / "run"
    args = ["prune", "--storage", bucket.url, "--metadata", str(tree[1]), "--out", str(run)]
    report = tmp_path / "run.json"
    assert main([*args, *AGES, "--confirm", "--report", str(report)]) == EXIT_OK
    executed = json.loads(report.read_text())["executed"]
    assert executed["blobs"]["done"] > 0 and executed["repositories"]["done"] > 0
    pruned = bucket.objects()
    assert quarantined(pruned)
    assert {k for k in pruned if V2 in k and "_regprune" not in k} < {k for k in before if V2 in k}

    assert main(["undo", str(run)]) == EXIT_OK

    after = bucket.objects()
    assert quarantined(after) == []
    assert {k: v for k, v in after.items() if "_regprune/" not in k} == before
    capsys.readouterr()
    assert main(["undo", str(run)]) == EXIT_FAILURE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds nothing any more (purged, or undone already)" in err[0]


def test_undo_refuses_another_storage(
    tree: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _folder(tree[0], tmp_path / "a"), _folder(tree[0], tmp_path / "b")
    run = tmp_path / "run"
    args = ["prune", "--storage", first.url, "--metadata", str(tree[1]), "--out", str(run)]
    assert main([*args, *AGES, "--confirm"]) == EXIT_OK
    held, other = first.objects(), second.objects()
    capsys.readouterr()

    assert main(["undo", str(run), "--storage", second.url]) == EXIT_FAILURE

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"quarantined in {first.url}, not in {second.url}" in err[0]
    assert first.objects() == held and second.objects() == other

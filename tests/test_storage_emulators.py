"""The cloud storage emulators of the bench: each starts, a registry tree copied into it reads
back in that backend's key form, and OpenShift's registry, through its own drivers, sees the
same repositories, blobs and manifests as on the folder the tree came from.

Also pins what the emulators do with paging and bulk deletes, which the storage backends built
on them rely on (see each test's docstring).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.openshift_api import OpenShiftAPIServer
from tests.harness.registry_bench import OciLayouts, Registry, _http, _skopeo, push
from tests.harness.storage_emulators import (
    AzuriteEmulator,
    GcsEmulator,
    GcsPagingFront,
    ReferenceServer,
    SwiftAllInOne,
    azure_key,
    copy_registry_tree,
    folder_files,
    reference_listing,
    run_reference,
    uploaded_blobs,
)

pytestmark = pytest.mark.slow  # every test starts an emulator (and most a registry)

#: What is pushed into the module's folder registry: shared layers, a manifest list.
PUSHES = (("base", "ns1/base:latest"), ("app-v1", "ns1/app:v1"), ("multi", "ns2/multi:latest"))


@dataclass
class Tree:
    """A tree the Debian registry wrote on a folder."""

    storage_root: Path
    files: dict[str, Path]

    def largest_blob(self) -> str:
        """``docker/registry/v2/blobs/.../data`` of the largest blob (the DLO candidate)."""
        blobs = [rel for rel in self.files if rel.startswith("docker/registry/v2/blobs/")]
        return max(blobs, key=lambda rel: (self.files[rel].stat().st_size, rel))


@pytest.fixture(scope="module")
def tree(registry_fs: Registry, oci_layouts: OciLayouts) -> Tree:
    """Three repositories pushed with skopeo into a folder registry."""
    for name, repo in PUSHES:
        ref = oci_layouts[name]
        push(registry_fs, ref.layout_dir, ref.tag, repo)
    assert registry_fs.storage_root is not None
    return Tree(registry_fs.storage_root, folder_files(registry_fs.storage_root))


@pytest.fixture(scope="module")
def folder_listing(tree: Tree) -> dict[str, list[tuple[str, ...]]]:
    """What OpenShift's registry lists on the folder itself: the ground truth to compare."""
    listing = reference_listing({"filesystem": {"rootdirectory": str(tree.storage_root)}})
    assert [r[0] for r in listing["repositories"]] == sorted(r.split(":")[0] for _, r in PUSHES)
    return listing


def _bucket() -> str:
    """A fresh bucket/container name valid on all three backends."""
    return f"reg-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- GCS


def test_gcs_copy_round_trips(gcs_emulator: GcsEmulator, tree: Tree) -> None:
    """Keys are ``docker/registry/v2/...`` at the top of the bucket, bytes unchanged."""
    bucket = gcs_emulator.create_bucket(_bucket())
    copied = copy_registry_tree(tree.storage_root, gcs_emulator, bucket)
    assert gcs_emulator.list_keys(bucket) == sorted(tree.files) == copied.all_keys()
    fs = gcs_emulator.filesystem()
    rel = tree.largest_blob()
    assert fs.cat_file(f"{bucket}/{rel}") == tree.files[rel].read_bytes()


def test_gcs_env_variable_alone_reaches_the_emulator(
    gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``STORAGE_EMULATOR_HOST`` is enough for gcsfs (no endpoint argument), as for the
    registry's Go client; ``token="anon"`` skips credential discovery."""
    from gcsfs.core import GCSFileSystem

    bucket = gcs_emulator.create_bucket(_bucket())
    gcs_emulator.put_object(bucket, "docker/registry/v2/x", b"1")
    for key, value in gcs_emulator.env.items():
        monkeypatch.setenv(key, value)
    fs = GCSFileSystem(token="anon", skip_instance_cache=True, use_listings_cache=False)
    assert fs.find(bucket) == [f"{bucket}/docker/registry/v2/x"]


def test_gcs_emulator_ignores_max_results(gcs_emulator: GcsEmulator) -> None:
    """The emulator returns every object in one page whatever ``maxResults`` says, with no
    ``nextPageToken``: a GCS listing's paging (1,000 a page on GCS) cannot be exercised here.
    If this starts failing, the emulator pages, and backend tests can rely on it."""
    bucket = gcs_emulator.create_bucket(_bucket())
    gcs_emulator.put_objects(bucket, {f"k/{i:03d}": b"x" for i in range(7)})
    page = _gcs_json(gcs_emulator, f"/storage/v1/b/{bucket}/o?maxResults=2")
    assert len(page["items"]) == 7
    assert "nextPageToken" not in page


def test_gcs_paging_front_pages_like_gcs(gcs_emulator: GcsEmulator) -> None:
    """Through :class:`GcsPagingFront` a flat listing comes in pages of at most ``max_page``
    (``maxResults`` lowers it) with a ``nextPageToken``; gcsfs follows the tokens to the end,
    and uploads pass through the front unchanged."""
    from gcsfs.core import GCSFileSystem

    bucket = gcs_emulator.create_bucket(_bucket())
    front = GcsPagingFront(gcs_emulator.endpoint, max_page=3).start()
    try:
        fs = GCSFileSystem(
            endpoint_url=front.url, token="anon", skip_instance_cache=True, use_listings_cache=False
        )
        keys = [f"docker/registry/v2/k{i}" for i in range(7)]
        fs.pipe({f"{bucket}/{key}": b"x" for key in keys})
        sizes, token, seen = [], "", []
        while True:
            page = json.loads(
                _get(f"{front.url}/storage/v1/b/{bucket}/o?maxResults=1000&pageToken={token}")
            )
            sizes.append(len(page["items"]))
            seen += [item["name"] for item in page["items"]]
            token = page.get("nextPageToken", "")
            if not token:
                break
        assert (sizes, seen) == ([3, 3, 1], keys)
        two = json.loads(_get(f"{front.url}/storage/v1/b/{bucket}/o?maxResults=2"))
        assert len(two["items"]) == 2 and "nextPageToken" in two

        front.pages.clear()
        assert fs.find(bucket) == [f"{bucket}/{key}" for key in keys]
        assert [(n, more) for _, n, more in front.pages] == [(3, False), (3, True), (1, True)]
    finally:
        front.stop()


def test_gcs_batch_delete(gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON batch API (``POST /batch/storage/v1``, up to 100 calls a batch) deletes on the
    emulator, a 204 per object and a 404 for a missing one. gcsfs' ``rm`` does not use it (one
    ``DELETE`` per object): a batch needs google-cloud-storage's ``client.batch()``."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    bucket = gcs_emulator.create_bucket(_bucket())
    keys = [f"docker/registry/v2/k{i:02d}" for i in range(6)]
    gcs_emulator.put_objects(bucket, dict.fromkeys(keys, b"x"))
    for key, value in gcs_emulator.env.items():
        monkeypatch.setenv(key, value)
    client = storage.Client(project="regprune-test", credentials=AnonymousCredentials())
    with client.batch(raise_exception=False) as batch:
        for key in [*keys[:4], "docker/registry/v2/absent"]:
            client.bucket(bucket).delete_blob(key)
    assert [r.status_code for r in batch._responses] == [204, 204, 204, 204, 404]
    assert gcs_emulator.list_keys(bucket) == keys[4:]


def _gcs_json(emulator: GcsEmulator, path: str) -> dict[str, Any]:
    """GET one JSON API path of the emulator."""
    status, _, body = _http("GET", emulator.endpoint + path)
    assert status == 200, body[:300]
    return dict(json.loads(body))


# --------------------------------------------------------------------------- Azure


def test_azure_copy_round_trips_with_leading_slash(azurite: AzuriteEmulator, tree: Tree) -> None:
    """Blob names are ``/docker/registry/v2/...`` as OpenShift's registry writes them."""
    container = azurite.create_bucket(_bucket())
    copied = copy_registry_tree(tree.storage_root, azurite, container)
    expected = sorted("/" + rel for rel in tree.files)
    assert azurite.list_keys(container) == expected == copied.all_keys()
    rel = tree.largest_blob()
    blob = azurite.service().get_container_client(container).download_blob("/" + rel)
    assert blob.readall() == tree.files[rel].read_bytes()


def test_azure_plain_and_mixed_forms(azurite: AzuriteEmulator, tree: Tree) -> None:
    """``docker/...`` (upstream v3) and a mix of both forms (a migrated container)."""
    plain = azurite.create_bucket(_bucket())
    copy_registry_tree(tree.storage_root, azurite, plain, azure_form="plain")
    assert azurite.list_keys(plain) == sorted(tree.files)

    mixed = azurite.create_bucket(_bucket())
    copied = copy_registry_tree(tree.storage_root, azurite, mixed, azure_form="mixed")
    keys = azurite.list_keys(mixed)
    assert keys == sorted(azure_key(rel, "mixed") for rel in tree.files) == copied.all_keys()
    assert any(k.startswith("/docker/") for k in keys)
    assert any(k.startswith("docker/") for k in keys)


def test_adlfs_sees_leading_slash_names_only_in_flat_listings(azurite: AzuriteEmulator) -> None:
    """adlfs' ``find`` returns ``container//docker/...`` for ``/docker/...`` names and reads
    them back by that path; its ``ls`` of the container shows a ``docker`` folder for the
    plain form only (the empty first segment of ``/docker`` is not a folder to it)."""
    container = azurite.create_bucket(_bucket())
    azurite.put_object(container, "/docker/registry/v2/slash", b"s")
    azurite.put_object(container, "docker/registry/v2/plain", b"p")
    fs = azurite.filesystem()
    assert sorted(fs.find(container)) == [
        f"{container}//docker/registry/v2/slash",
        f"{container}/docker/registry/v2/plain",
    ]
    assert fs.cat_file(f"{container}//docker/registry/v2/slash") == b"s"
    assert fs.ls(container, detail=False) == [f"{container}/docker"]


def test_azure_paging_follows_markers(azurite: AzuriteEmulator) -> None:
    """A flat listing comes in pages with a continuation marker (5,000 names a page by
    default; 2 here); following markers to the end gives every name once."""
    container = azurite.create_bucket(_bucket())
    names = [f"/docker/registry/v2/k{i}" for i in range(5)]
    azurite.put_objects(container, dict.fromkeys(names, b"x"))
    client = azurite.service().get_container_client(container)
    pages = client.list_blobs(results_per_page=2).by_page()
    sizes, seen = [], []
    for page in pages:
        batch = [b.name for b in page]
        sizes.append(len(batch))
        seen.extend(batch)
    assert sizes == [2, 2, 1]
    assert seen == sorted(names)


def test_azure_batch_delete_with_leading_slash(azurite: AzuriteEmulator) -> None:
    """Blob batch (``delete_blobs``, up to 256 per request) deletes ``/docker/...`` names."""
    container = azurite.create_bucket(_bucket())
    names = [f"/docker/registry/v2/k{i:03d}" for i in range(10)] + ["docker/registry/v2/p"]
    azurite.put_objects(container, dict.fromkeys(names, b"x"))
    client = azurite.service().get_container_client(container)
    results = list(client.delete_blobs(*names[:6], names[-1]))
    assert [r.status_code for r in results] == [202] * 7
    assert azurite.list_keys(container) == names[6:10]


# --------------------------------------------------------------------------- Swift


def test_swift_copy_round_trips_with_dlo(swift_aio: SwiftAllInOne, tree: Tree) -> None:
    """Objects are ``files/docker/registry/v2/...``; the largest blob is a Dynamic Large
    Object: a 0-byte manifest with ``X-Object-Manifest``, whose HEAD and GET give the whole
    blob, its data in ``segments/xxx/yyy/0000000000000001...``."""
    container = swift_aio.create_bucket(_bucket())
    big = tree.largest_blob()
    size = tree.files[big].stat().st_size
    copied = copy_registry_tree(
        tree.storage_root, swift_aio, container, swift_dlo=[big], segment_size=1000
    )
    manifest = f"files/{big}"
    segments = copied.segments[manifest]
    assert len(segments) == -(-size // 1000) >= 2
    assert swift_aio.list_keys(container) == copied.all_keys()
    assert swift_aio.list_keys(container, "files/") == sorted(f"files/{rel}" for rel in tree.files)
    assert swift_aio.list_keys(container, "segments/") == sorted(segments)

    conn = swift_aio.connection()
    _, listing = conn.get_container(container, prefix=manifest)
    assert [(o["name"], o["bytes"]) for o in listing] == [(manifest, 0)]
    head = conn.head_object(container, manifest)
    assert int(head["content-length"]) == size
    assert head["x-object-manifest"] == f"{container}/{segments[0].rsplit('/', 1)[0]}"
    assert re.fullmatch(f"{SEGMENTS}/0000000000000001", segments[0])
    _, body = conn.get_object(container, manifest)
    assert body == tree.files[big].read_bytes()


def test_swift_paging_follows_markers(swift_aio: SwiftAllInOne) -> None:
    """Listings stop at ``limit`` (10,000 by default, from ``/info``) and go on from a
    ``marker``; python-swiftclient's ``full_listing`` follows them to the end."""
    container = swift_aio.create_bucket(_bucket())
    names = [f"files/docker/registry/v2/k{i}" for i in range(5)]
    swift_aio.put_objects(container, dict.fromkeys(names, b"x"))
    conn = swift_aio.connection()
    _, first = conn.get_container(container, limit=2)
    _, second = conn.get_container(container, limit=2, marker=first[-1]["name"])
    assert [o["name"] for o in first + second] == names[:4]
    info = json.loads(_get(swift_aio.endpoint + "/info"))
    assert info["swift"]["container_listing_limit"] == 10000
    assert info["bulk_delete"]["max_deletes_per_request"] == 10000


def test_swift_bulk_delete(swift_aio: SwiftAllInOne) -> None:
    """``POST ?bulk-delete`` with one ``/container/object`` a line (URL-encoded) deletes
    them in one request and reports what it did, missing names counted as not found."""
    from urllib.parse import quote

    container = swift_aio.create_bucket(_bucket())
    names = [f"files/docker/registry/v2/k{i}" for i in range(6)]
    swift_aio.put_objects(container, dict.fromkeys(names, b"x"))
    targets = [*names[:4], "files/docker/registry/v2/absent"]
    body = "\n".join(quote(f"/{container}/{name}") for name in targets)
    _, reply = swift_aio.connection().post_account(
        headers={"Content-Type": "text/plain", "Accept": "application/json"},
        data=body,
        query_string="bulk-delete",
    )
    result = json.loads(reply)
    assert (result["Number Deleted"], result["Number Not Found"]) == (4, 1)
    assert result["Errors"] == []
    assert swift_aio.list_keys(container) == names[4:]


def _get(url: str) -> bytes:
    """GET ``url`` (no auth), expecting 200."""
    status, _, body = _http("GET", url)
    assert status == 200, body[:300]
    return body


# --------------------------------------------------------------------------- reference


def test_reference_reads_gcs_copy(
    gcs_emulator: GcsEmulator, tree: Tree, folder_listing: dict[str, list[tuple[str, ...]]]
) -> None:
    """OpenShift's registry, GCS driver, reads the copied bucket as it read the folder."""
    bucket = gcs_emulator.create_bucket(_bucket())
    copy_registry_tree(tree.storage_root, gcs_emulator, bucket)
    assert reference_listing(*gcs_emulator.reference_storage(bucket)) == folder_listing


def test_reference_reads_azure_copy(
    azurite: AzuriteEmulator, tree: Tree, folder_listing: dict[str, list[tuple[str, ...]]]
) -> None:
    """Azure driver on ``/docker/...`` names: the same listing as on the folder. The same
    tree in the upstream ``docker/...`` form is invisible to it (it prefixes ``/``)."""
    container = azurite.create_bucket(_bucket())
    copy_registry_tree(tree.storage_root, azurite, container)
    assert reference_listing(*azurite.reference_storage(container)) == folder_listing

    plain = azurite.create_bucket(_bucket())
    copy_registry_tree(tree.storage_root, azurite, plain, azure_form="plain")
    proc = run_reference(["-list-repositories", "-experimental"], *azurite.reference_storage(plain))
    assert proc.returncode != 0
    assert "Path not found: /docker/registry/v2/repositories" in proc.stderr


def test_reference_reads_swift_copy_with_dlo(
    swift_aio: SwiftAllInOne,
    tree: Tree,
    folder_listing: dict[str, list[tuple[str, ...]]],
    tmp_path: Path,
) -> None:
    """Swift driver on ``files/...`` with the largest blob as a DLO of several segments: the
    same listing as on the folder, and serving that blob gives its bytes whole."""
    container = swift_aio.create_bucket(_bucket())
    big = tree.largest_blob()
    copied = copy_registry_tree(
        tree.storage_root, swift_aio, container, swift_dlo=[big], segment_size=1000
    )
    assert len(copied.segments[f"files/{big}"]) >= 2
    storage, env = swift_aio.reference_storage(container)
    assert reference_listing(storage, env) == folder_listing

    # Shaped as the driver leaves it: every uploaded blob (layers, configs) a DLO.
    shaped = swift_aio.create_bucket(_bucket())
    dlos = uploaded_blobs(tree.storage_root)
    copied_shaped = copy_registry_tree(tree.storage_root, swift_aio, shaped, swift_dlo=dlos)
    manifests = {digest for _, digest in folder_listing["manifests"]}
    assert len(copied_shaped.segments) == len(dlos) == len(folder_listing["blobs"]) - len(manifests)
    assert reference_listing(*swift_aio.reference_storage(shaped)) == folder_listing

    digest = "sha256:" + big.split("/")[-2]
    suffix = f"/_layers/sha256/{digest[7:]}/link"
    repo = next(r for r in tree.files if r.endswith(suffix)).split("/repositories/")[1]
    with (
        OpenShiftAPIServer() as api,
        ReferenceServer(tmp_path / "reference", storage, env, api) as registry,
    ):
        status, _, body = _http(
            "GET",
            f"http://{registry.url}/v2/{repo.removesuffix(suffix)}/blobs/{digest}",
            headers={"Authorization": _basic(api.token)},
        )
    assert status == 200, f"{status} {body[:300]!r}\n{registry.log()[-3000:]}"
    assert body == tree.files[big].read_bytes()


def _basic(token: str) -> str:
    """The Authorization header OpenShift's registry takes: any user, the API token."""
    return "Basic " + base64.b64encode(f"tester:{token}".encode()).decode()


#: How distribution's swift driver names a DLO's segment folder (sha1 hex split 3 + 37).
SEGMENTS = r"segments/[0-9a-f]{3}/[0-9a-f]{37}"


def test_reference_serves_pushes_on_swift(
    swift_aio: SwiftAllInOne, oci_layouts: OciLayouts, tmp_path: Path
) -> None:
    """OpenShift's registry serves a push on the Swift all-in-one (it cannot on the GCS
    emulator or Azurite): every blob that came through an upload (layers, config) is a DLO
    with one segment per 20 MiB, the manifest is a plain object, no tag link is written (tags
    live in the ImageStream), and a blob GET through the registry reads the DLO back."""

    container = swift_aio.create_bucket(_bucket())
    with OpenShiftAPIServer() as api:
        api.add_imagestream("ns1", "app")
        storage, env = swift_aio.reference_storage(container)
        with ReferenceServer(tmp_path / "reference", storage, env, api) as registry:
            ref = oci_layouts["app-v1"]
            proc = _skopeo(
                "copy",
                "--dest-tls-verify=false",
                f"--dest-creds=tester:{api.token}",
                "--retry-times",
                "0",
                "--format",
                "v2s2",
                f"oci:{ref.layout_dir}:{ref.tag}",
                f"docker://{registry.url}/ns1/app:v1",
            )
            assert proc.returncode == 0, f"{proc.stderr}\n{registry.log()[-3000:]}"

            keys = swift_aio.list_keys(container)
            revisions = [k for k in keys if "/_manifests/revisions/" in k]
            assert len(revisions) == 1
            digest = "sha256:" + revisions[0].split("/")[-2]
            assert [i["metadata"]["name"] for i in api.images()] == [digest]
            assert not [k for k in keys if "/_manifests/tags/" in k]

            conn = swift_aio.connection()
            files = f"files/docker/registry/v2/blobs/sha256/{digest[7:9]}/{digest[7:]}/data"
            manifest_head = conn.head_object(container, files)
            assert "x-object-manifest" not in manifest_head
            manifest = json.loads(conn.get_object(container, files)[1])
            uploaded = [manifest["config"]["digest"], *(x["digest"] for x in manifest["layers"])]
            for blob in uploaded:
                key = f"files/docker/registry/v2/blobs/sha256/{blob[7:9]}/{blob[7:]}/data"
                head = conn.head_object(container, key)
                pointer = head["x-object-manifest"]
                assert re.fullmatch(f"{container}/{SEGMENTS}", pointer), pointer
                segments = swift_aio.list_keys(container, pointer.split("/", 1)[1] + "/")
                assert [s.rsplit("/", 1)[1] for s in segments] == ["0000000000000001"]
                assert int(head["content-length"]) > 0

            layer = uploaded[-1]
            status, _, body = _http(
                "GET",
                f"http://{registry.url}/v2/ns1/app/blobs/{layer}",
                headers={"Authorization": _basic(api.token)},
            )
            assert status == 200, f"{status} {body[:300]!r}\n{registry.log()[-3000:]}"
            assert "sha256:" + hashlib.sha256(body).hexdigest() == layer

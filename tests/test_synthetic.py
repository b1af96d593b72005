"""The synthetic registry generator: layout, digests, drift and a truth that holds up.

Why: the demo, the benchmarks and many tests trust ``truth.json``; these tests check it
against the written files and the metadata dump themselves (re-derived here from disk, not
from the generator's model), so a generator bug cannot hide behind its own bookkeeping.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from regprune import layout
from regprune.demo.synthetic import (
    MANIFEST_LIST,
    MANIFEST_V2,
    SyntheticSpec,
    Truth,
    build_model,
    generate,
    load_truth,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@dataclass
class Generated:
    root: Path
    metadata_path: Path
    truth_path: Path
    truth: Truth

    @property
    def v2(self) -> Path:
        return self.root / layout.V2_ROOT

    def files(self) -> dict[str, Path]:
        """Every file, by its key relative to the v2 root."""
        return {p.relative_to(self.v2).as_posix(): p for p in self.v2.rglob("*") if p.is_file()}

    def metadata(self) -> list[dict[str, Any]]:
        doc = json.loads(self.metadata_path.read_text())
        assert doc["apiVersion"] == "v1" and doc["kind"] == "List"
        return doc["items"]


def _generate(base: Path, spec: SyntheticSpec, now: datetime | None = NOW) -> Generated:
    truth = generate(base / "storage", spec, base / "metadata.json", base / "truth.json", now=now)
    return Generated(base / "storage", base / "metadata.json", base / "truth.json", truth)


HEAVY = SyntheticSpec(
    namespaces=2,
    manifest_list_fraction=0.5,
    cross_tagged_count=3,
    deleted_image_fraction=0.5,
    deleted_stream_fraction=0.4,
    dangling_history_count=2,
    mounted_count=4,
    missing_blob_count=6,
    lost_manifest_count=4,
    invalid_repository_count=5,
    young_fraction=0.4,
    seed=7,
)
"""Much drift, many young pushes and lists: the rules meet each other more often."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    return _generate(tmp_path_factory.mktemp("demo"), SyntheticSpec.demo())


@pytest.fixture(scope="module", params=["demo", "heavy"])
def registry(
    request: pytest.FixtureRequest, demo: Generated, tmp_path_factory: pytest.TempPathFactory
) -> Generated:
    if request.param == "demo":
        return demo
    return _generate(tmp_path_factory.mktemp("heavy"), HEAVY)


def _image_refs(image: dict[str, Any]) -> set[str]:
    """What an Image object references, read from the dump as the SQL reads it."""
    refs = {image["metadata"]["name"]}
    config = image.get("dockerImageMetadata", {}).get("Id")
    if config:
        refs.add(config)
    refs.update(layer["name"] for layer in image.get("dockerImageLayers") or [])
    refs.update(m["digest"] for m in image.get("dockerImageManifests") or [])
    return refs


def test_blob_paths_are_the_sha256_of_their_data(registry: Generated) -> None:
    blobs = {k: p for k, p in registry.files().items() if k.startswith(layout.BLOBS_PREFIX)}
    assert len(blobs) == registry.truth.counts["blobs"]
    for key, path in blobs.items():
        digest = layout.parse_blob_key(key)
        data = path.read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        assert 64 <= len(data) <= 4096


def test_links_match_their_paths(registry: Generated) -> None:
    repo_files = {
        k: p for k, p in registry.files().items() if k.startswith(layout.REPOSITORIES_PREFIX)
    }
    assert len(repo_files) + registry.truth.counts["blobs"] == registry.truth.counts["files"]
    kinds = set()
    for key, path in repo_files.items():
        entry = layout.parse_repository_key(key)
        kinds.add(entry.kind)
        content = path.read_bytes()
        if entry.digest is not None:
            assert content == layout.link_content(entry.digest), key
            assert len(content) == layout.LINK_SIZE
        elif entry.kind is layout.RepoEntryKind.TAG_CURRENT:
            assert layout.is_digest(content.decode()), key
            index = layout.tag_index_link_path(entry.repository, entry.tag or "", content.decode())
            assert (registry.v2 / index).is_file(), "current tag is in the tag index"
        elif entry.kind is layout.RepoEntryKind.UPLOAD_STARTEDAT:
            datetime.strptime(content.decode(), "%Y-%m-%dT%H:%M:%SZ")
    assert kinds == set(layout.RepoEntryKind)


def test_manifests_reference_existing_blobs_unless_deliberately_broken(registry: Generated) -> None:
    files = registry.files()
    present = {layout.parse_blob_key(k) for k in files if k.startswith(layout.BLOBS_PREFIX)}
    missing = {m["digest"] for m in registry.truth.drift["missing_blobs"]}
    assert missing and not missing & present
    media_types = set()
    for digest in present:
        data = (registry.v2 / layout.blob_data_path(digest)).read_bytes()
        try:
            doc = json.loads(data)
        except ValueError:
            continue
        media_type = doc.get("mediaType")
        if media_type not in (MANIFEST_V2, MANIFEST_LIST):
            continue
        media_types.add(media_type)
        refs = [doc["config"], *doc["layers"]] if media_type == MANIFEST_V2 else doc["manifests"]
        for ref in refs:
            if ref["digest"] in missing:
                continue
            assert ref["digest"] in present, (digest, ref)
            size = (registry.v2 / layout.blob_data_path(ref["digest"])).stat().st_size
            assert ref["size"] == size
    assert media_types == {MANIFEST_V2, MANIFEST_LIST}


def test_metadata_dump_looks_like_oc_get(demo: Generated) -> None:
    items = demo.metadata()
    images = {i["metadata"]["name"]: i for i in items if i["kind"] == "Image"}
    streams = [i for i in items if i["kind"] == "ImageStream"]
    assert len(images) == demo.truth.counts["images"]
    assert len(streams) == demo.truth.counts["imagestreams"]
    host = SyntheticSpec.demo().registry_host
    lists = 0
    for digest, image in images.items():
        assert image["apiVersion"] == "image.openshift.io/v1"
        annotations = image["metadata"]["annotations"]
        assert annotations["openshift.io/image.managed"] == "true"
        assert annotations["image.openshift.io/dockerLayersOrder"] == "ascending"
        assert image["dockerImageReference"].startswith(host + "/")
        assert image["dockerImageReference"].endswith("@" + digest)
        assert image["dockerImageMetadataVersion"] == "1.0"
        if image["dockerImageManifestMediaType"] == MANIFEST_LIST:
            lists += 1
            for child in image["dockerImageManifests"]:
                assert child["digest"] in images, "list children are Images"
                assert {"mediaType", "manifestSize", "architecture", "os", "variant"} <= set(child)
        else:
            assert layout.is_digest(image["dockerImageMetadata"]["Id"])
            assert image["dockerImageLayers"]
    assert lists
    for stream in streams:
        meta = stream["metadata"]
        repo = f"{meta['namespace']}/{meta['name']}"
        assert stream["status"]["dockerImageRepository"] == f"{host}/{repo}"
        for tag in stream["status"]["tags"]:
            created = [item["created"] for item in tag["items"]]
            assert created == sorted(created, reverse=True), "position 0 is the newest"
            for item in tag["items"]:
                assert item["dockerImageReference"] == f"{host}/{repo}@{item['image']}"


def test_orphans_are_exactly_what_no_image_references(registry: Generated) -> None:
    referenced = set()
    for item in registry.metadata():
        if item["kind"] == "Image":
            referenced |= _image_refs(item)
    present = {
        layout.parse_blob_key(k) for k in registry.files() if k.startswith(layout.BLOBS_PREFIX)
    }
    orphans = set(registry.truth.prune.orphan_blobs)
    assert orphans and not orphans & referenced
    assert present - orphans == present & referenced
    assert set(registry.truth.prune_grace.orphan_blobs) < orphans


def test_prune_truth_matches_an_independent_reading_of_disk(registry: Generated) -> None:
    """Re-derive the hard-prune rules from the files and the dump alone (mtimes included)."""
    items = registry.metadata()
    images = {i["metadata"]["name"]: i for i in items if i["kind"] == "Image"}
    keep = set().union(*(_image_refs(i) for i in images.values()))
    history: dict[str, set[str]] = {}
    for s in (i for i in items if i["kind"] == "ImageStream"):
        found = history.setdefault(f"{s['metadata']['namespace']}/{s['metadata']['name']}", set())
        for tag in s["status"]["tags"]:
            for item in tag["items"]:
                found.add(item["image"])
                found |= {
                    m["digest"]
                    for m in images.get(item["image"], {}).get("dockerImageManifests", [])
                }
    blobs: dict[str, float] = {}
    repos: dict[str, dict[str, dict[str, Any]]] = {}
    for key, path in registry.files().items():
        mtime = path.stat().st_mtime
        if key.startswith(layout.BLOBS_PREFIX):
            blobs[layout.parse_blob_key(key)] = mtime
            continue
        entry = layout.parse_repository_key(key)
        repo = repos.setdefault(
            entry.repository, {"manifests": {}, "layers": {}, "files": {}, "uploads": {}}
        )
        if entry.kind is layout.RepoEntryKind.MANIFEST_LINK:
            repo["manifests"][entry.digest] = mtime
        elif entry.kind is layout.RepoEntryKind.LAYER_LINK:
            repo["layers"][entry.digest] = mtime
        elif entry.kind is layout.RepoEntryKind.UPLOAD_STARTEDAT:
            started = datetime.strptime(path.read_text(), "%Y-%m-%dT%H:%M:%SZ")
            repo["uploads"][entry.upload_id] = (started.replace(tzinfo=UTC).timestamp(), mtime)
        repo["files"][key] = mtime
    now = NOW.timestamp()

    def expected(grace: float) -> dict[str, set[Any]]:
        def young(t: float) -> bool:
            return grace > 0 and t > now - grace

        candidates = {
            name: "invalid-name"
            if not layout.is_openshift_repository(name)
            else "imagestream-missing"
            for name in repos
            if not layout.is_openshift_repository(name) or name not in history
        }
        newest = {name: max(r["files"].values()) for name, r in repos.items()}
        link_times: dict[str, float] = {}
        for r in repos.values():
            for d, t in [*r["manifests"].items(), *r["layers"].items()]:
                link_times[d] = max(t, link_times.get(d, 0.0))
        orphans = {
            d
            for d, t in blobs.items()
            if d not in keep and not young(t) and not young(link_times.get(d, 0.0))
        }
        result: dict[str, set[Any]] = {
            "orphan_blobs": orphans,
            "prunable_repositories": {
                (n, reason) for n, reason in candidates.items() if not young(newest[n])
            },
            "prunable_manifest_links": set(),
            "dangling_layer_links": set(),
            "stale_uploads": set(),
        }
        for name, r in repos.items():
            if name in candidates:
                continue
            for d, t in r["manifests"].items():
                if (d not in keep or d not in history[name]) and not young(t):
                    result["prunable_manifest_links"].add((name, d))
            for d, t in r["layers"].items():
                if (d not in blobs or d in orphans) and not young(t):
                    result["dangling_layer_links"].add((name, d))
            for upload_id, (started, t) in r["uploads"].items():
                if started < now - 7 * 86400 and not young(t):
                    result["stale_uploads"].add((name, upload_id))
        return result

    grace = registry.truth.spec["keep_younger_than_hours"] * 3600
    for truth, seconds in ((registry.truth.prune, 0.0), (registry.truth.prune_grace, grace)):
        want = expected(seconds)
        assert set(truth.orphan_blobs) == want["orphan_blobs"]
        assert {(r.repository, r.reason) for r in truth.prunable_repositories} == want[
            "prunable_repositories"
        ]
        got_links = {(i.repository, i.digest) for i in truth.prunable_manifest_links}
        assert got_links == want["prunable_manifest_links"]
        assert {(i.repository, i.digest) for i in truth.dangling_layer_links} == want[
            "dangling_layer_links"
        ]
        assert {(u.repository, u.upload_id) for u in truth.stale_uploads} == want["stale_uploads"]


def test_check_truth_matches_an_independent_reading_of_disk(registry: Generated) -> None:
    items = registry.metadata()
    images = {i["metadata"]["name"]: i for i in items if i["kind"] == "Image"}
    files = registry.files()
    present = {layout.parse_blob_key(k) for k in files if k.startswith(layout.BLOBS_PREFIX)}

    def kind_of(image: dict[str, Any], ref: str) -> str:
        if ref == image.get("dockerImageMetadata", {}).get("Id"):
            return "config"
        layers = {layer["name"] for layer in image.get("dockerImageLayers") or []}
        return "layer" if ref in layers else "manifest"

    broken = {
        (name, ref, kind_of(image, ref))
        for name, image in images.items()
        for ref in _image_refs(image)
        if ref not in present
    }
    assert broken and {tuple(b) for b in registry.truth.check.broken_images} == broken

    history: dict[str, set[str]] = {}
    for s in (i for i in items if i["kind"] == "ImageStream"):
        found = history.setdefault(f"{s['metadata']['namespace']}/{s['metadata']['name']}", set())
        for tag in s["status"]["tags"]:
            for item in tag["items"]:
                found.add(item["image"])
                children = images.get(item["image"], {}).get("dockerImageManifests", [])
                found |= {m["digest"] for m in children}
    lost = set()
    for key in files:
        if not key.startswith(layout.REPOSITORIES_PREFIX):
            continue
        entry = layout.parse_repository_key(key)
        repo = entry.repository
        if entry.kind is not layout.RepoEntryKind.MANIFEST_LINK:
            continue
        if not layout.is_openshift_repository(repo) or entry.digest in history.get(repo, ()):
            continue
        if entry.digest not in present:
            continue
        doc = json.loads((registry.v2 / layout.blob_data_path(entry.digest or "")).read_bytes())
        refs = [doc["config"], *doc["layers"]] if "config" in doc else doc["manifests"]
        if all(r["digest"] in present for r in refs):
            namespace, name = repo.split("/")
            lost.add((namespace, name, entry.digest))
    assert lost and {tuple(m) for m in registry.truth.check.lost_found} == lost


def test_demo_has_every_kind_of_drift(demo: Generated) -> None:
    truth = demo.truth
    for kind in (
        "deleted_images",
        "deleted_streams",
        "deleted_stream_images",
        "dangling_history_images",
        "missing_blobs",
        "lost_manifests",
        "invalid_repositories",
        "uploads",
        "cross_tagged",
        "mounted",
    ):
        assert truth.drift[kind], kind
    assert {m["kind"] for m in truth.drift["missing_blobs"]} == {"layer", "config", "manifest"}
    invalid = truth.drift["invalid_repositories"]
    assert any("/" not in r for r in invalid)
    assert any(r.count("/") == 2 for r in invalid)
    assert any(r != r.lower() for r in invalid)

    prune = truth.prune
    assert {r.reason for r in prune.prunable_repositories} == {
        "invalid-name",
        "imagestream-missing",
    }
    assert {i.reason for i in prune.prunable_manifest_links} == {
        "image-missing",
        "not-in-imagestream",
    }
    assert {i.reason for i in prune.dangling_layer_links} == {"blob-missing", "blob-deleted"}
    assert prune.orphan_blobs and prune.stale_uploads
    assert len(prune.stale_uploads) < len(truth.drift["uploads"]), "some uploads are young"
    for category in ("blobs", "repositories", "manifest_links"):
        assert truth.prune_grace.kept_young[category], category
    old_data = [
        d
        for d in truth.prune_grace.kept_young["blobs"]
        if (demo.v2 / layout.blob_data_path(d)).stat().st_mtime < NOW.timestamp() - 86400
    ]
    assert old_data, "an old blob kept young by a fresh link to it"

    check = truth.check
    assert {t.kind for t in check.broken_tags} == {"image", "manifest", "config", "layer"}
    assert check.broken_images
    lost = {(m.namespace, m.name, m.digest) for m in check.lost_found}
    for m in truth.drift["lost_manifests"]:
        namespace, name = m["repository"].split("/")
        assert (namespace, name, m["digest"]) in lost

    # ages: old objects are at least age_days old, young ones were written within the hour
    spec = SyntheticSpec.demo()
    ages = {NOW.timestamp() - p.stat().st_mtime for p in demo.files().values()}
    assert all(a > spec.age_days * 86400 or 0 < a <= 3600 for a in ages)
    assert any(a <= 3600 for a in ages) and any(a > 3600 for a in ages)
    assert 100 <= truth.counts["blobs"] <= 350


def test_truth_json_round_trips(demo: Generated) -> None:
    loaded = load_truth(demo.truth_path)
    assert loaded.to_json() == demo.truth.to_json()
    assert demo.truth.prune_with_grace(timedelta(0)) == demo.truth.prune
    hours = SyntheticSpec.demo().keep_younger_than_hours
    assert demo.truth.prune_with_grace(timedelta(hours=hours)) == demo.truth.prune_grace


def test_same_seed_same_registry(demo: Generated, tmp_path: Path) -> None:
    again = _generate(tmp_path / "again", SyntheticSpec.demo())
    mine, theirs = demo.truth.to_json(), again.truth.to_json()
    for volatile in ("target", "seconds"):
        del mine[volatile], theirs[volatile]
    assert mine == theirs
    assert again.metadata_path.read_bytes() == demo.metadata_path.read_bytes()
    mine, theirs = demo.files(), again.files()
    assert mine.keys() == theirs.keys()
    for key, path in mine.items():
        assert path.read_bytes() == theirs[key].read_bytes(), key
        assert path.stat().st_mtime_ns == theirs[key].stat().st_mtime_ns, key

    other = build_model(replace(SyntheticSpec.demo(), seed=1), NOW)
    assert not set(other.blob_time) & set(build_model(SyntheticSpec.demo(), NOW).blob_time)


def _timeless(value: Any) -> Any:
    """``value`` without the wall-clock times a generation carries (they move with ``now``)."""
    wall = {"now", "target", "seconds", "started_at", "created", "creationTimestamp", "Created"}
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in wall}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


@pytest.mark.parametrize("later", [timedelta(seconds=1), timedelta(days=40, seconds=1)])
def test_when_it_runs_moves_only_the_times(
    demo: Generated, tmp_path: Path, later: timedelta
) -> None:
    """A second (or 40 days) later, the same seed writes the same bytes and the same truth.

    Image configs carry a creation time inside them: once that time was the wall clock's, a
    second's difference changed digests and the seeded choices made in digest order (the
    demo's "Would delete" went 74, 70, 66 between runs a second apart).
    """
    again = _generate(tmp_path, SyntheticSpec.demo(), now=NOW + later)
    assert _timeless(again.truth.to_json()) == _timeless(demo.truth.to_json())
    assert _timeless(again.metadata()) == _timeless(demo.metadata())
    mine, theirs = demo.files(), again.files()
    assert mine.keys() == theirs.keys()
    for key, path in mine.items():
        if not key.endswith("/startedat"):  # the upload's start, a wall-clock time
            assert path.read_bytes() == theirs[key].read_bytes(), key
        moved = theirs[key].stat().st_mtime_ns - path.stat().st_mtime_ns
        assert abs(moved - later.total_seconds() * 1e9) < 1_000, key
    assert again.truth.now == (NOW + later).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_generate_refuses_a_registry_that_exists(demo: Generated) -> None:
    with pytest.raises(FileExistsError):
        generate(demo.root, SyntheticSpec.demo(), demo.metadata_path.with_name("m2.json"))


@pytest.mark.parametrize("blobs", [500, 5_000, 20_000])
def test_for_blobs_sizes_the_registry(blobs: int) -> None:
    model = build_model(SyntheticSpec.for_blobs(blobs), NOW)
    assert 0.8 * blobs <= len(model.blob_time) <= 1.25 * blobs


def test_process_pool_writes_the_same_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from regprune.demo import synthetic

    monkeypatch.setattr(synthetic, "_POOL_MIN_FILES", 0)
    monkeypatch.setattr(synthetic, "_TASK_FILES", 100)
    spec = replace(SyntheticSpec.demo(), namespaces=2)
    pooled = _generate(tmp_path / "pooled", spec)
    monkeypatch.setattr(synthetic, "_POOL_MIN_FILES", 10**9)
    serial = _generate(tmp_path / "serial", spec)
    assert pooled.files().keys() == serial.files().keys()
    assert pooled.truth.counts["files_written"] == serial.truth.counts["files"]


@pytest.mark.slow
def test_s3_target(moto: Any, tmp_path: Path) -> None:
    """Through s3fs to a real moto_server; S3 cannot backdate, so everything is young."""
    import fsspec

    bucket = moto.create_bucket("synthetic-test")
    options = moto.storage_options
    spec = replace(SyntheticSpec.demo(), namespaces=1, streams_per_namespace=3)
    truth = generate(
        f"s3://{bucket}/root",
        spec,
        tmp_path / "metadata.json",
        tmp_path / "truth.json",
        now=datetime.now(UTC),
        storage_options=options,
    )
    fs = fsspec.filesystem("s3", **options)
    base = f"{bucket}/root/{layout.V2_ROOT}"
    keys = [k[len(base) + 1 :] for k in fs.find(base)]
    assert len(keys) == truth.counts["files"]
    blobs = [k for k in keys if k.startswith(layout.BLOBS_PREFIX)]
    assert len(blobs) == truth.counts["blobs"]
    for key in blobs[:20]:
        digest = layout.parse_blob_key(key)
        assert "sha256:" + hashlib.sha256(fs.cat(f"{base}/{key}")).hexdigest() == digest
    link = next(k for k in keys if k.endswith("/link"))
    assert fs.cat(f"{base}/{link}").startswith(b"sha256:")
    assert truth.prune.orphan_blobs, "without grace the garbage is there"
    grace = truth.prune_grace
    assert not grace.orphan_blobs and not grace.prunable_repositories
    assert not grace.prunable_manifest_links and not grace.dangling_layer_links

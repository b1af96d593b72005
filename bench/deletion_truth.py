"""Did a real prune delete exactly what ``truth.json`` says? Storage listings before and after,
compared key by key.

Independent of regprune's own layout module on purpose: every key listed before the run is
read here with the docker/distribution layout and judged by the truth's ``prune`` section (a
blob's folder, a repository's own ``_layers``/``_manifests``/``_uploads``, a manifest link with
its tag index entries, a layer link, an upload's folder). Keys the truth deletes must be gone;
every other key must still be there, and no key may appear.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

V2_ROOT = "docker/registry/v2/"
_BLOB = re.compile(r"blobs/sha256/[0-9a-f]{2}/([0-9a-f]{64})/")
# a repository name never has a component starting with "_": its own folders start there
_REPOSITORY = re.compile(r"repositories/((?:[^_/][^/]*/)*?[^_/][^/]*)/_(layers|manifests|uploads)/")
_LAYER_LINK = re.compile(r"sha256/([0-9a-f]{64})/link")
_MANIFEST_LINK = re.compile(r"(?:revisions|tags/[^/]+/index)/sha256/([0-9a-f]{64})/link")
_UPLOAD = re.compile(r"([^/]+)/")
CATEGORIES = ("repositories", "manifest_links", "layer_links", "uploads", "blobs")


@dataclass(frozen=True)
class DeletionCheck:
    """The objects of one category of the truth (or all the others), before and after."""

    category: str
    objects: int
    """objects of this category listed before the run"""
    gone: int
    """of those, objects no longer listed after it"""
    deleted_by_truth: bool
    """True: the truth deletes them all; False: the truth keeps them all"""
    appeared: int = 0
    """objects listed after but not before (only on the kept row)"""
    unmatched: int = 0
    """truth items with no object at all before (the bucket or these rules are off)"""

    @property
    def ok(self) -> bool:
        if self.deleted_by_truth:
            return self.gone == self.objects and self.unmatched == 0
        return self.gone == 0 and self.appeared == 0

    def describe(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        if not self.deleted_by_truth:
            detail = f" ({self.gone} of them gone, {self.appeared} new)" if not self.ok else ""
            return f"{verdict} everything else: {self.objects - self.gone:,} objects kept{detail}"
        still = self.objects - self.gone
        problems = [f"{still} still there"] if still else []
        problems += [f"{self.unmatched} truth items without any object"] if self.unmatched else []
        detail = f" ({', '.join(problems)})" if problems else ""
        return f"{verdict} {self.category}: {self.gone:,} of {self.objects:,} objects gone{detail}"


def _digest(hex_: str) -> str:
    return f"sha256:{hex_}"


def deleting_item(key: str, prune: dict[str, Any]) -> tuple[str, Any] | None:
    """(category, truth item) whose deletion removes ``key`` (relative to the v2 root), or
    None when the truth keeps it. A repository deleted whole takes its links and uploads."""
    if match := _BLOB.match(key):
        digest = _digest(match.group(1))
        return ("blobs", digest) if digest in prune["orphan_blobs"] else None
    match = _REPOSITORY.match(key)
    if not match:
        return None
    repository, kind, rest = match.group(1), match.group(2), key[match.end() :]
    if repository in prune["prunable_repositories"]:
        return "repositories", repository
    if kind == "layers" and (link := _LAYER_LINK.fullmatch(rest)):
        item = (repository, _digest(link.group(1)))
        return ("layer_links", item) if item in prune["dangling_layer_links"] else None
    if kind == "manifests" and (link := _MANIFEST_LINK.fullmatch(rest)):
        item = (repository, _digest(link.group(1)))
        return ("manifest_links", item) if item in prune["prunable_manifest_links"] else None
    if kind == "uploads" and (upload := _UPLOAD.match(rest)):
        item = (repository, upload.group(1))
        return ("uploads", item) if item in prune["stale_uploads"] else None
    return None


def truth_sets(prune_truth: dict[str, Any]) -> dict[str, set[Any]]:
    """The deleted items of one ``truth.json`` prune section as sets of plain tuples."""
    return {
        "orphan_blobs": set(prune_truth["orphan_blobs"]),
        "prunable_repositories": {r["repository"] for r in prune_truth["prunable_repositories"]},
        "prunable_manifest_links": {
            (x["repository"], x["digest"]) for x in prune_truth["prunable_manifest_links"]
        },
        "dangling_layer_links": {
            (x["repository"], x["digest"]) for x in prune_truth["dangling_layer_links"]
        },
        "stale_uploads": {(x["repository"], x["upload_id"]) for x in prune_truth["stale_uploads"]},
    }


def _classify(
    keys: Iterable[str], prune: dict[str, set[Any]], root: str
) -> tuple[dict[str, set[str]], dict[str, set[Any]]]:
    """Per category, the keys the truth deletes and the truth items they belong to."""
    v2 = root + V2_ROOT
    expected: dict[str, set[str]] = {c: set() for c in CATEGORIES}
    matched: dict[str, set[Any]] = {c: set() for c in CATEGORIES}
    for key in keys:
        found = deleting_item(key[len(v2) :], prune) if key.startswith(v2) else None
        if found:
            category, item = found
            expected[category].add(key)
            matched[category].add(item)
    return expected, matched


def expected_deletions(
    keys: Iterable[str], prune_truth: dict[str, Any], root: str = ""
) -> dict[str, set[str]]:
    """Per category, the keys among ``keys`` that one prune section of ``truth.json`` deletes."""
    return _classify(keys, truth_sets(prune_truth), root)[0]


def against_truth(
    before: Iterable[str], after: Iterable[str], prune_truth: dict[str, Any], root: str = ""
) -> list[DeletionCheck]:
    """Compare the keys of a storage listed before and after a real prune with one prune
    section of ``truth.json``. ``root`` is the registry's rootdirectory as a key prefix (e.g.
    ``bucket/registry/``); keys outside its v2 root (regprune's lock) are judged kept."""
    prune = truth_sets(prune_truth)
    before, after = set(before), set(after)
    gone, appeared = before - after, after - before
    expected, matched = _classify(before, prune, root)
    items = {
        "repositories": prune["prunable_repositories"],
        "manifest_links": prune["prunable_manifest_links"],
        "layer_links": prune["dangling_layer_links"],
        "uploads": prune["stale_uploads"],
        "blobs": prune["orphan_blobs"],
    }
    checks = [
        DeletionCheck(
            category,
            len(expected[category]),
            len(expected[category] & gone),
            deleted_by_truth=True,
            unmatched=len(items[category] - matched[category]),
        )
        for category in CATEGORIES
    ]
    kept = before - set().union(*expected.values())
    checks.append(DeletionCheck("kept", len(kept), len(kept & gone), False, appeared=len(appeared)))
    return checks

"""The listing's plumbing, without a server: pages fetched ahead, JSON decoded as :mod:`json`
would, one API client per kubeconfig per process."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from regprune.metadata import (
    MetadataError,
    MetadataSource,
    api_client,
    decode_json,
    prefetched,
)


def pages_of(*sizes: int) -> dict[str | None, dict[str, Any]]:
    """``fetch`` answers by token: page i holds ``sizes[i]`` items and names page i+1."""
    answers: dict[str | None, dict[str, Any]] = {}
    for i, size in enumerate(sizes):
        token = None if i == 0 else f"t{i}"
        following = f"t{i + 1}" if i + 1 < len(sizes) else None
        answers[token] = {
            "metadata": {"continue": following} if following else {},
            "items": [{"n": f"{i}.{j}"} for j in range(size)],
        }
    return answers


def test_prefetched_follows_the_tokens_and_asks_for_the_next_page_early() -> None:
    answers = pages_of(2, 3, 1)
    asked: list[str | None] = []
    seen_when_asked: list[int] = []
    consumed = 0

    def fetch(token: str | None) -> dict[str, Any]:
        asked.append(token)
        seen_when_asked.append(consumed)
        return answers[token]

    got = []
    for items in prefetched(fetch):
        got.append([item["n"] for item in items])
        consumed += 1
    assert got == [["0.0", "0.1"], ["1.0", "1.1", "1.2"], ["2.0"]]
    assert asked == [None, "t1", "t2"]
    # page 2 is asked for before the caller has finished with page 1 (0 or 1 pages consumed
    # when asked: it runs in a thread), never after
    assert seen_when_asked[1] <= 1 and seen_when_asked[2] <= 2


def test_prefetched_raises_a_page_error_where_that_page_would_be() -> None:
    answers = pages_of(1, 1, 1)

    def fetch(token: str | None) -> dict[str, Any]:
        if token == "t2":
            raise MetadataError("cannot list: HTTP 500")
        return answers[token]

    pages = prefetched(fetch)
    assert next(pages) == [{"n": "0.0"}]
    assert next(pages) == [{"n": "1.0"}]
    with pytest.raises(MetadataError, match="HTTP 500"):
        next(pages)


def test_prefetched_does_not_wait_for_a_page_nobody_reads() -> None:
    release = threading.Event()
    answers = pages_of(1, 1)

    def fetch(token: str | None) -> dict[str, Any]:
        if token == "t1":
            release.wait(30)  # a slow server: the caller stops before this page comes
        return answers[token]

    pages = prefetched(fetch)
    assert next(pages) == [{"n": "0.0"}]
    pages.close()  # returns at once, while the fetch of page 2 still waits
    assert not release.is_set()
    release.set()


@pytest.mark.parametrize(
    "text",
    [
        b'{"items": [], "metadata": {"continue": "abc"}}',
        b'{"digest": "sha256:12345678901234567890123456789012345678901234567890123456789abcde"}',
        b'{"a": NaN}',
        '{"name": "caf\u00e9 \u2603"}'.encode(),
        b"[1, 2.5, null, true]",
    ],
)
def test_decode_json_is_json_loads(text: bytes) -> None:
    assert repr(decode_json(text)) == repr(json.loads(text))


def test_an_integer_beyond_64_bits_is_no_integer() -> None:
    """json kept it an int, which the int64 size columns could not hold (the listing failed);
    orjson makes it a float, and a row takes a size that is not an int as unknown."""
    assert decode_json(b'{"size": 18446744073709551615}') == {"size": 2**64 - 1}
    assert isinstance(decode_json(b'{"size": 123456789012345678901234567890}')["size"], float)


@pytest.mark.parametrize("text", [b"", b'{"a": ', b"\xff\xfe", b"{} {}"])
def test_decode_json_fails_as_json_loads_does(text: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        decode_json(text)


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))
    return path


def test_one_api_client_per_kubeconfig_and_a_new_one_when_the_file_changes(
    tmp_path: Path,
) -> None:
    first = write_kubeconfig(tmp_path / "a", "https://127.0.0.1:1")
    other = write_kubeconfig(tmp_path / "b", "https://127.0.0.1:2")
    client = api_client(MetadataSource(kubeconfig=str(first)))
    assert api_client(MetadataSource(kubeconfig=str(first))) is client
    assert api_client(MetadataSource(kubeconfig=str(other))) is not client
    write_kubeconfig(first, "https://127.0.0.1:3/" + "x" * 10)  # rewritten: read again
    again = api_client(MetadataSource(kubeconfig=str(first)))
    assert again is not client
    assert again.configuration.host.startswith("https://127.0.0.1:3")


def test_a_kubeconfig_that_does_not_load_is_an_error_each_time(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_text("clusters: [")
    for _ in range(2):
        with pytest.raises(MetadataError, match="cannot load kubeconfig"):
            api_client(MetadataSource(kubeconfig=str(broken)))


def test_fewer_collections_raises_the_threshold_and_the_last_one_out_restores_it() -> None:
    import gc

    from regprune.metadata import GC_YOUNG_THRESHOLD, fewer_collections

    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold()[0] == max(GC_YOUNG_THRESHOLD, before[0])
        with fewer_collections():  # a second listing at the same time
            pass
        assert gc.get_threshold()[0] == max(GC_YOUNG_THRESHOLD, before[0])
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("a failed listing")
    assert gc.get_threshold() == before

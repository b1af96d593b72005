"""Tests of the OpenShift image API test server, driven through the official kubernetes client.

They pin down the behaviours regprune's own tests rely on (pagination snapshots, 410 Expired,
fault injection, RBAC/auth errors, ImageStreamMapping semantics), so a regression in the fake
shows up here rather than as a confusing failure elsewhere.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.harness.openshift_api import (
    API_VERSION,
    DOCKER_MANIFEST_LIST,
    GROUP,
    VERSION,
    OpenShiftAPIServer,
    fake_digest,
    make_image,
)

EXPIRED_PREFIX = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter"
)


@pytest.fixture
def api(openshift_api: OpenShiftAPIServer) -> client.CustomObjectsApi:
    """The client regprune uses, pointed at the per-test server."""
    return client.CustomObjectsApi(openshift_api.api_client())


def status_body(exc: ApiException) -> dict[str, Any]:
    """Decode the Kubernetes Status carried by an ApiException."""
    body = json.loads(exc.body)
    assert body["kind"] == "Status"
    assert body["status"] == "Failure"
    assert body["code"] == exc.status
    return body


def list_images(api: client.CustomObjectsApi, **kwargs: Any) -> dict[str, Any]:
    return api.list_cluster_custom_object(GROUP, VERSION, "images", **kwargs)


def all_pages(api: client.CustomObjectsApi, plural: str, limit: int) -> Iterator[dict[str, Any]]:
    """Follow continue tokens like a careful client does."""
    token: str | None = None
    while True:
        page = api.list_cluster_custom_object(GROUP, VERSION, plural, limit=limit, _continue=token)
        yield page
        token = page["metadata"].get("continue")
        if not token:
            return


def mapping(namespace: str, stream: str, tag: str, image: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ImageStreamMapping",
        "metadata": {"namespace": namespace, "name": stream},
        "image": image,
        "tag": tag,
    }


def create_mapping(api: client.CustomObjectsApi, body: dict[str, Any]) -> dict[str, Any]:
    ns = body["metadata"]["namespace"]
    return api.create_namespaced_custom_object(GROUP, VERSION, ns, "imagestreammappings", body)


# ---- lists and pagination -------------------------------------------------------------------


def test_pagination_returns_every_object_exactly_once(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """Chunked lists must neither lose nor repeat objects, and keep one resourceVersion."""
    names = {openshift_api.add_image()["metadata"]["name"] for _ in range(23)}
    pages = list(all_pages(api, "images", limit=5))

    seen = [item["metadata"]["name"] for page in pages for item in page["items"]]
    assert len(seen) == len(names) and set(seen) == names
    assert seen == sorted(seen)
    assert [len(p["items"]) for p in pages] == [5, 5, 5, 5, 3]
    assert [p["metadata"].get("remainingItemCount") for p in pages] == [18, 13, 8, 3, None]
    assert len({p["metadata"]["resourceVersion"] for p in pages}) == 1
    assert all(p["kind"] == "ImageList" and p["apiVersion"] == API_VERSION for p in pages)
    assert openshift_api.count("GET", r"/images$") == 5

    unpaged = list_images(api)
    assert len(unpaged["items"]) == 23 and "continue" not in unpaged["metadata"]


def test_continued_pages_are_a_consistent_snapshot(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """Objects created or deleted after the first page must not show up in later pages."""
    before = sorted(openshift_api.add_image()["metadata"]["name"] for _ in range(6))
    first = list_images(api, limit=2)

    late = "sha256:" + "f" * 64  # sorts after everything already listed
    api.create_cluster_custom_object(GROUP, VERSION, "images", make_image(late))
    api.delete_cluster_custom_object(GROUP, VERSION, "images", before[-1])

    rest = list(all_pages_from(api, first["metadata"]["continue"], limit=2))
    seen = [i["metadata"]["name"] for p in [first, *rest] for i in p["items"]]
    assert seen == before
    fresh = [i["metadata"]["name"] for i in list_images(api)["items"]]
    assert late in fresh and before[-1] not in fresh


def all_pages_from(
    api: client.CustomObjectsApi, token: str, limit: int
) -> Iterator[dict[str, Any]]:
    while token:
        page = list_images(api, limit=limit, _continue=token)
        yield page
        token = page["metadata"].get("continue")


def test_imagestream_lists_all_namespaces_and_one_namespace(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """Both list endpoints page correctly and in key order."""
    for ns in ("b", "a"):
        for name in ("two", "one", "three"):
            openshift_api.add_imagestream(ns, name, {"latest": [fake_digest(ns + name)]})
    pages = list(all_pages(api, "imagestreams", limit=4))
    keys = [(i["metadata"]["namespace"], i["metadata"]["name"]) for p in pages for i in p["items"]]
    assert keys == sorted(keys) and len(keys) == 6
    assert pages[0]["kind"] == "ImageStreamList"

    page = api.list_namespaced_custom_object(GROUP, VERSION, "b", "imagestreams", limit=2)
    rest = api.list_namespaced_custom_object(
        GROUP, VERSION, "b", "imagestreams", limit=2, _continue=page["metadata"]["continue"]
    )
    names = [i["metadata"]["name"] for i in page["items"] + rest["items"]]
    assert names == ["one", "three", "two"] and "continue" not in rest["metadata"]


def test_expired_continue_token_gives_410(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """After compaction an old token answers 410 Expired; a new list works again."""
    for _ in range(5):
        openshift_api.add_image()
    token = list_images(api, limit=2)["metadata"]["continue"]
    openshift_api.expire_continue_tokens()

    with pytest.raises(ApiException) as info:
        list_images(api, limit=2, _continue=token)
    body = status_body(info.value)
    assert info.value.status == 410 and body["reason"] == "Expired"
    assert body["message"].startswith(EXPIRED_PREFIX)
    # Like the apiserver, the 410 carries a token for an (inconsistent) continuation.
    inconsistent = list_images(api, limit=10, _continue=body["metadata"]["continue"])
    assert len(inconsistent["items"]) == 3

    assert len([p for p in all_pages(api, "images", limit=2)]) == 3


def test_malformed_continue_token_gives_400(api: client.CustomObjectsApi) -> None:
    """Garbage tokens are a client bug (400), not an expiry (410)."""
    with pytest.raises(ApiException) as info:
        list_images(api, limit=1, _continue="not-a-token")
    assert info.value.status == 400
    assert status_body(info.value)["reason"] == "BadRequest"


# ---- faults -----------------------------------------------------------------------------------


def test_injected_500_fires_once_then_recovers(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """A one-shot fault fails exactly one matching request and is visible in the log."""
    openshift_api.add_image()
    fault = openshift_api.inject("GET", r".*/images$", status=500)
    with pytest.raises(ApiException) as info:
        list_images(api)
    assert info.value.status == 500
    assert status_body(info.value)["reason"] == "InternalError"
    assert len(list_images(api)["items"]) == 1
    assert fault.fired == 1
    assert [r.status for r in openshift_api.requests] == [500, 200]


def test_injected_429_with_retry_after_on_a_later_page(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """``after`` lets a fault hit the second page; urllib3 honours Retry-After on 429 itself.

    The client's default urllib3 Retry retries a GET answered 429/503 with Retry-After up to
    3 times (sleeping as told) before the ApiException reaches the caller.
    """
    for _ in range(4):
        openshift_api.add_image()
    fault = openshift_api.inject("GET", r"/images$", status=429, after=1, times=None, retry_after=0)
    first = list_images(api, limit=2)
    with pytest.raises(ApiException) as info:
        list_images(api, limit=2, _continue=first["metadata"]["continue"])
    assert info.value.status == 429
    assert info.value.headers["Retry-After"] == "0"
    body = status_body(info.value)
    assert body["reason"] == "TooManyRequests"
    assert body["details"]["retryAfterSeconds"] == 0
    assert fault.fired == 4
    assert openshift_api.count("GET", r"/images$", status=429) == 4

    # The snapshot is still valid once the throttling stops: the page is served.
    openshift_api.clear_faults()
    again = list_images(api, limit=2, _continue=first["metadata"]["continue"])
    assert len(again["items"]) == 2
    last = openshift_api.requests[-1]
    assert last.query["limit"] == "2" and last.query["continue"] == first["metadata"]["continue"]


def test_injected_500_carries_retry_after(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """A 500 is not retried by urllib3, so its Retry-After header reaches the caller."""
    openshift_api.inject(None, r"/namespaces/ns/imagestreams$", status=500, retry_after=5)
    with pytest.raises(ApiException) as info:
        api.list_namespaced_custom_object(GROUP, VERSION, "ns", "imagestreams")
    assert info.value.status == 500 and info.value.headers["Retry-After"] == "5"
    assert api.list_namespaced_custom_object(GROUP, VERSION, "ns", "imagestreams")["items"] == []


def test_injected_delay_and_disconnect(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """Delay-only faults slow a request down; a dropped connection is retried by urllib3."""
    openshift_api.inject("GET", r"/images$", delay=0.2)
    started = time.monotonic()
    list_images(api)
    assert time.monotonic() - started >= 0.2

    fault = openshift_api.inject("GET", r"/images$", disconnect=True)
    assert list_images(api)["items"] == []
    assert fault.fired == 1
    assert [r.status for r in openshift_api.requests][-2:] == [0, 200]


# ---- auth -------------------------------------------------------------------------------------


def test_rbac_forbidden_message(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """403s read exactly like the apiserver's, for cluster and namespace scope."""
    openshift_api.add_imagestream("team-a", "app")
    openshift_api.allow({("list", "imagestreams"), ("get", "imagestreams", "team-b")})

    assert len(api.list_cluster_custom_object(GROUP, VERSION, "imagestreams")["items"]) == 1
    with pytest.raises(ApiException) as info:
        list_images(api)
    assert info.value.status == 403
    body = status_body(info.value)
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        'images.image.openshift.io is forbidden: User "system:serviceaccount:test:regprune" '
        'cannot list resource "images" in API group "image.openshift.io" at the cluster scope'
    )
    with pytest.raises(ApiException) as info:
        api.get_namespaced_custom_object(GROUP, VERSION, "team-a", "imagestreams", "app")
    assert status_body(info.value)["message"] == (
        'imagestreams.image.openshift.io "app" is forbidden: User '
        '"system:serviceaccount:test:regprune" cannot get resource "imagestreams" in API group '
        '"image.openshift.io" in the namespace "team-a"'
    )
    openshift_api.allow(None)
    assert api.get_namespaced_custom_object(GROUP, VERSION, "team-a", "imagestreams", "app")


def test_requests_without_the_bearer_token_get_401(openshift_api: OpenShiftAPIServer) -> None:
    """No token or a wrong token is Unauthorized."""
    for key in ({}, {"authorization": "Bearer wrong"}):
        configuration = client.Configuration(host=openshift_api.url, api_key=key)
        with client.ApiClient(configuration) as api_client, pytest.raises(ApiException) as info:
            list_images(client.CustomObjectsApi(api_client))
        assert info.value.status == 401
        assert status_body(info.value)["reason"] == "Unauthorized"


def test_kubeconfig_file_loads_with_official_loader(
    openshift_api: OpenShiftAPIServer, openshift_kubeconfig: Path
) -> None:
    """The kubeconfig works with load_kube_config exactly as production code would use it."""
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(openshift_kubeconfig), context="test", client_configuration=configuration
    )
    assert configuration.host == openshift_api.url
    with client.ApiClient(configuration) as api_client:
        api = client.CustomObjectsApi(api_client)
        assert list_images(api)["items"] == []


# ---- objects ----------------------------------------------------------------------------------


def test_create_get_delete_and_conflicts(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """409 on duplicates, 404 on missing objects, server-managed metadata on creation."""
    image = make_image(fake_digest("one"), repository="ns/app")
    created = api.create_cluster_custom_object(GROUP, VERSION, "images", image)
    meta = created["metadata"]
    assert meta["uid"] and int(meta["resourceVersion"]) > 0 and meta["creationTimestamp"]
    assert api.get_cluster_custom_object(GROUP, VERSION, "images", meta["name"]) == created

    with pytest.raises(ApiException) as info:
        api.create_cluster_custom_object(GROUP, VERSION, "images", image)
    assert info.value.status == 409
    assert status_body(info.value)["reason"] == "AlreadyExists"

    stream = {"apiVersion": API_VERSION, "kind": "ImageStream", "metadata": {"name": "app"}}
    api.create_namespaced_custom_object(GROUP, VERSION, "ns", "imagestreams", stream)
    with pytest.raises(ApiException) as info:
        api.create_namespaced_custom_object(GROUP, VERSION, "ns", "imagestreams", stream)
    assert info.value.status == 409

    deleted = api.delete_cluster_custom_object(GROUP, VERSION, "images", meta["name"])
    assert deleted["status"] == "Success" and deleted["details"]["uid"] == meta["uid"]
    for call in (api.get_cluster_custom_object, api.delete_cluster_custom_object):
        with pytest.raises(ApiException) as info:
            call(GROUP, VERSION, "images", meta["name"])
        assert info.value.status == 404
        assert status_body(info.value)["message"] == (
            f'images.image.openshift.io "{meta["name"]}" not found'
        )


def test_create_rejects_resource_version_and_delete_checks_preconditions(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """Restoring a dumped object verbatim fails like on a real cluster; stale UIDs conflict."""
    stored = openshift_api.add_image()
    with pytest.raises(ApiException) as info:
        api.create_cluster_custom_object(GROUP, VERSION, "images", stored)
    assert info.value.status == 500
    assert "resourceVersion should not be set" in status_body(info.value)["message"]

    name = stored["metadata"]["name"]
    options = {"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}}
    with pytest.raises(ApiException) as info:
        api.delete_cluster_custom_object(GROUP, VERSION, "images", name, body=options)
    assert info.value.status == 409
    assert openshift_api.image(name) is not None


def test_helpers_and_dump_list(openshift_api: OpenShiftAPIServer) -> None:
    """add_imagestream builds tag history like the registry; dump_list looks like ``oc get``."""
    old, new = fake_digest("old"), fake_digest("new")
    openshift_api.add_image(
        make_image(fake_digest("list"), media_type=DOCKER_MANIFEST_LIST, manifests=[old])
    )
    stream = openshift_api.add_imagestream(
        "ns",
        "app",
        {"v2": [new, old], "latest": [new]},
        created="2024-05-01T10:00:00Z",
        create_images=True,
    )
    assert [t["tag"] for t in stream["status"]["tags"]] == ["latest", "v2"]
    items = stream["status"]["tags"][1]["items"]
    assert [i["image"] for i in items] == [new, old]
    assert items[1]["dockerImageReference"] == f"{openshift_api.registry_host}/ns/app@{old}"
    assert items[1]["created"] == stream["metadata"]["creationTimestamp"] == "2024-05-01T10:00:00Z"

    dump = openshift_api.dump_list()
    assert dump["apiVersion"] == "v1" and dump["kind"] == "List"
    assert [i["kind"] for i in dump["items"]] == ["Image"] * 3 + ["ImageStream"]


# ---- ImageStreamMapping --------------------------------------------------------------------


def test_mapping_needs_an_existing_stream(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """404 NotFound without the stream, and nothing is created."""
    image = make_image(fake_digest("x"), repository="ns/app")
    with pytest.raises(ApiException) as info:
        create_mapping(api, mapping("ns", "app", "latest", image))
    assert info.value.status == 404
    assert status_body(info.value)["reason"] == "NotFound"
    assert openshift_api.images() == []


def test_mapping_creates_image_and_tags_at_position_zero(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """A push: the Image is created and becomes item 0 of the tag, history preserved."""
    old = fake_digest("old")
    openshift_api.add_imagestream("ns", "app", {"latest": [old]}, create_images=True)
    rv_before = int(openshift_api.imagestream("ns", "app")["metadata"]["resourceVersion"])
    image = make_image(fake_digest("new"), repository="ns/app")

    result = create_mapping(api, mapping("ns", "app", "latest", image))
    assert result["status"] == "Success" and result["code"] == 201
    assert openshift_api.image(image["metadata"]["name"]) is not None

    create_mapping(api, mapping("ns", "app", "a-first", image))
    stream = api.get_namespaced_custom_object(GROUP, VERSION, "ns", "imagestreams", "app")
    assert int(stream["metadata"]["resourceVersion"]) > rv_before
    assert [t["tag"] for t in stream["status"]["tags"]] == ["a-first", "latest"]
    latest = stream["status"]["tags"][1]["items"]
    assert [i["image"] for i in latest] == [image["metadata"]["name"], old]
    assert set(latest[0]) == {"created", "dockerImageReference", "image", "generation"}
    assert latest[0]["dockerImageReference"] == image["dockerImageReference"]


def test_mapping_keeps_an_existing_image(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """The stored Image wins; a managed image's tag event points at the mapping's stream."""
    digest = fake_digest("shared")
    existing = openshift_api.add_image(digest=digest, repository="other/base")
    openshift_api.add_imagestream("ns", "app")
    sent = make_image(digest, repository="other/base", annotations={"extra": "ignored"})

    create_mapping(api, mapping("ns", "app", "latest", sent))
    assert openshift_api.image(digest) == existing
    stream = openshift_api.imagestream("ns", "app")
    event = stream["status"]["tags"][0]["items"][0]
    assert event["dockerImageReference"] == f"{openshift_api.registry_host}/ns/app@{digest}"

    # Mapping the same image to the same tag again changes nothing.
    create_mapping(api, mapping("ns", "app", "latest", sent))
    assert openshift_api.imagestream("ns", "app") == stream


@pytest.mark.parametrize(
    ("name", "tag", "field"),
    [
        ("not-a-digest", "latest", "image.metadata.name"),
        (fake_digest("ok"), "", "tag"),
        (fake_digest("ok"), "bad/tag", "tag"),
    ],
)
def test_mapping_validation_gives_422(
    openshift_api: OpenShiftAPIServer,
    api: client.CustomObjectsApi,
    name: str,
    tag: str,
    field: str,
) -> None:
    """Invalid image names and tags are rejected before anything is stored."""
    openshift_api.add_imagestream("ns", "app")
    image = make_image(fake_digest("ok"), repository="ns/app")
    image["metadata"]["name"] = name
    with pytest.raises(ApiException) as info:
        create_mapping(api, mapping("ns", "app", tag, image))
    assert info.value.status == 422
    body = status_body(info.value)
    assert body["reason"] == "Invalid"
    assert [c["field"] for c in body["details"]["causes"]] == [field]
    assert openshift_api.images() == []


def test_concurrent_mappings_are_all_recorded(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """The store is thread-safe: parallel pushes to one tag lose no tag event."""
    openshift_api.add_imagestream("ns", "app")
    digests = [fake_digest(f"c{i}") for i in range(24)]

    def push(chunk: list[str]) -> None:
        for digest in chunk:
            create_mapping(api, mapping("ns", "app", "latest", make_image(digest)))

    threads = [threading.Thread(target=push, args=(digests[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    items = openshift_api.imagestream("ns", "app")["status"]["tags"][0]["items"]
    assert sorted(i["image"] for i in items) == sorted(digests)
    assert len(openshift_api.images()) == 24


def test_status_update_needs_the_current_resource_version(
    openshift_api: OpenShiftAPIServer, api: client.CustomObjectsApi
) -> None:
    """Removing tag history (what ``oc adm prune`` does) uses optimistic concurrency."""
    old, new = fake_digest("old"), fake_digest("new")
    openshift_api.add_imagestream("ns", "app", {"latest": [new, old]})
    stream = api.get_namespaced_custom_object(GROUP, VERSION, "ns", "imagestreams", "app")
    stream["status"]["tags"][0]["items"].pop()
    create_mapping(api, mapping("ns", "app", "other", make_image(fake_digest("x"))))

    with pytest.raises(ApiException) as info:
        api.replace_namespaced_custom_object_status(
            GROUP, VERSION, "ns", "imagestreams", "app", stream
        )
    assert info.value.status == 409 and status_body(info.value)["reason"] == "Conflict"

    stream = api.get_namespaced_custom_object(GROUP, VERSION, "ns", "imagestreams", "app")
    latest = next(t for t in stream["status"]["tags"] if t["tag"] == "latest")
    latest["items"].pop()
    updated = api.replace_namespaced_custom_object_status(
        GROUP, VERSION, "ns", "imagestreams", "app", stream
    )
    assert [t["tag"] for t in updated["status"]["tags"]] == ["latest", "other"]
    assert [i["image"] for i in updated["status"]["tags"][0]["items"]] == [new]
    assert updated["metadata"]["generation"] == stream["metadata"]["generation"]

"""The API test server's parts for OpenShift's registry, without the registry: HTTPS with a
certificate made at start, access reviews in JSON and in Kubernetes protobuf (how client-go
sends built-in kinds), answered from the server's grants, and the stream subresources."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.openshift_api import OpenShiftAPIServer

SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SAR = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


@pytest.fixture
def tls_api() -> Iterator[OpenShiftAPIServer]:
    server = OpenShiftAPIServer(tls=True).start()
    try:
        yield server
    finally:
        server.stop()


def post(api: OpenShiftAPIServer, path: str, body: bytes, token: str, ctype: str) -> Any:
    context = ssl.create_default_context(cadata=(api.ca_pem or b"").decode())
    request = urllib.request.Request(
        api.url + path,
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": ctype,
            "Accept": "application/vnd.kubernetes.protobuf,application/json",
        },
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        assert answer.headers["Content-Type"] == "application/json"
        return json.loads(answer.read())


def get(api: OpenShiftAPIServer, path: str) -> Any:
    context = ssl.create_default_context(cadata=(api.ca_pem or b"").decode())
    request = urllib.request.Request(
        api.url + path, headers={"Authorization": f"Bearer {api.token}"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        return json.loads(answer.read())


def _field(number: int, value: bytes) -> bytes:
    """One length-delimited protobuf field (lengths < 128 here)."""
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


def protobuf_review(kind: str, attrs: dict[int, str], user: str | None = None) -> bytes:
    """A ``k8s\\x00`` envelope as client-go writes it for a (Self)SubjectAccessReview."""
    resource_attributes = b"".join(_field(n, v.encode()) for n, v in attrs.items())
    spec = _field(1, resource_attributes)
    if user is not None:
        spec += _field(3, user.encode()) + _field(4, b"system:unauthenticated")
    type_meta = _field(1, b"authorization.k8s.io/v1") + _field(2, kind.encode())
    unknown = _field(1, type_meta) + _field(2, _field(2, spec))
    return b"k8s\x00" + unknown


def test_https_with_the_kubeconfig_ca_works_for_the_python_client(
    tls_api: OpenShiftAPIServer,
) -> None:
    from kubernetes import client

    tls_api.add_imagestream("ns", "app")
    api = client.CustomObjectsApi(tls_api.api_client())
    found = api.get_namespaced_custom_object(
        "image.openshift.io", "v1", "ns", "imagestreams", "app"
    )
    assert found["metadata"]["name"] == "app"
    assert tls_api.url.startswith("https://")


def test_access_reviews_answer_from_the_grants_in_json_and_protobuf(
    tls_api: OpenShiftAPIServer,
) -> None:
    reader = tls_api.add_token("reader", [("get", "imagestreams/layers", "ns1")])
    pull = {1: "ns1", 2: "get", 3: "image.openshift.io", 5: "imagestreams/layers", 7: "app"}
    push = {**pull, 2: "update"}
    other = {**pull, 1: "ns2"}
    proto = "application/vnd.kubernetes.protobuf"
    kind = "SelfSubjectAccessReview"
    answers = [
        post(tls_api, SSAR, protobuf_review(kind, attrs), reader, proto)["status"]["allowed"]
        for attrs in (pull, push, other)
    ]
    assert answers == [True, False, False]
    as_json = {"kind": kind, "spec": {"resourceAttributes": {"namespace": "ns1", "verb": "get",
               "resource": "imagestreams", "subresource": "layers"}}}  # fmt: skip
    body = json.dumps(as_json).encode()
    assert post(tls_api, SSAR, body, reader, "application/json")["status"]["allowed"]
    # Anonymous subject access reviews (the registry's fallback) get the anonymous grants.
    anon = protobuf_review("SubjectAccessReview", pull, user="system:anonymous")
    assert not post(tls_api, SAR, anon, tls_api.token, proto)["status"]["allowed"]
    tls_api.anonymous_grants = frozenset({("get", "imagestreams/layers")})
    assert post(tls_api, SAR, anon, tls_api.token, proto)["status"]["allowed"]
    who = post(tls_api, "/apis/authentication.k8s.io/v1/selfsubjectreviews", b"", reader, proto)
    assert who["status"]["userInfo"]["username"] == "reader"


def test_layers_and_stream_images_include_list_children(tls_api: OpenShiftAPIServer) -> None:
    child = tls_api.add_image(repository="ns/app")
    config = child["dockerImageMetadata"]["Id"]
    parent = tls_api.add_image(
        repository="ns/app",
        media_type="application/vnd.docker.distribution.manifest.list.v2+json",
        manifests=[child["metadata"]["name"]],
    )
    tls_api.add_imagestream("ns", "app", {"latest": [parent["metadata"]["name"]]})
    name = child["metadata"]["name"]
    base = "/apis/image.openshift.io/v1/namespaces/ns"
    layers = get(tls_api, f"{base}/imagestreams/app/layers")
    assert layers["images"][parent["metadata"]["name"]]["manifests"] == [name]
    assert layers["images"][name]["config"] == config
    assert get(tls_api, f"{base}/imagestreamimages/app@{name}")["image"]["metadata"]["name"] == name

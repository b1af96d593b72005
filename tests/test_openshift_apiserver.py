"""The real OpenShift API harness (``tests/harness/openshift_apiserver.py``): what its helpers leave
in the cluster is what the server made of them, and each test starts from an empty cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.openshift_api import DOCKER_SCHEMA2, fake_digest
from tests.harness.openshift_apiserver import REGISTRY_HOST, APIError, RealOpenShiftAPI

pytestmark = pytest.mark.slow

OLD = "2020-01-01T00:00:00Z"


def test_streams_keep_the_tag_history_written_through_the_status_subresource(
    openshift_apiserver: RealOpenShiftAPI,
) -> None:
    api = openshift_apiserver
    d = [fake_digest(f"harness-{i}") for i in range(3)]
    for digest in d:
        api.add_image(digest=digest, repository="a/app", created=OLD)
    api.add_imagestream("a", "app", {"latest": d[:2], "v1": [d[2]]}, created=OLD)

    stream = api.imagestream("a", "app")
    assert stream is not None
    assert stream["status"]["dockerImageRepository"] == f"{REGISTRY_HOST}/a/app"
    history = {
        t["tag"]: [(i["image"], i["created"]) for i in t["items"]] for t in stream["status"]["tags"]
    }
    assert history == {"latest": [(d[0], OLD), (d[1], OLD)], "v1": [(d[2], OLD)]}
    # The server dates the objects itself; the Image keeps the metadata it was given.
    (image,) = [i for i in api.images() if i["metadata"]["name"] == d[0]]
    assert image["metadata"]["creationTimestamp"] != OLD
    assert image["dockerImageMetadata"]["Created"] == OLD


def test_a_mapping_gets_the_image_completed_by_the_server(
    openshift_apiserver: RealOpenShiftAPI,
) -> None:
    """An ImageStreamMapping with the manifest and config texts, as a push sends it: the server
    fills dockerImageMetadata from them and tags the stream."""
    api = openshift_apiserver
    config = json.dumps({"architecture": "arm64", "os": "linux", "config": {}, "rootfs": {}})
    config_digest = fake_digest(config.encode())
    layer = fake_digest("layer")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_SCHEMA2,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": config_digest,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 1234,
                    "digest": layer,
                }
            ],
        }
    )
    digest = fake_digest(manifest.encode())
    api.add_imagestream("m", "app")
    stored = api.map_image(
        "m",
        "app",
        "latest",
        {
            "metadata": {"name": digest},
            "dockerImageReference": f"{REGISTRY_HOST}/m/app@{digest}",
            "dockerImageManifestMediaType": DOCKER_SCHEMA2,
            "dockerImageManifest": manifest,
            "dockerImageConfig": config,
        },
    )
    assert stored["dockerImageMetadata"]["Id"] == config_digest
    assert stored["dockerImageMetadata"]["Architecture"] == "arm64"
    assert stored["dockerImageMetadata"]["Size"] == 1234 + len(config)
    assert [entry["name"] for entry in stored["dockerImageLayers"]] == [layer]
    stream = api.imagestream("m", "app")
    assert stream is not None
    assert [(t["tag"], t["items"][0]["image"]) for t in stream["status"]["tags"]] == [
        ("latest", digest)
    ]


def test_the_rbac_manifests_grant_what_they_say_and_one_grant_can_be_left_out(
    openshift_apiserver: RealOpenShiftAPI, tmp_path: Path
) -> None:
    api = openshift_apiserver
    token = api.rbac_token()
    assert api.allowed(token, "image.openshift.io", "images", "list")
    assert api.allowed(token, "image.openshift.io", "images", "delete")
    assert api.allowed(token, "image.openshift.io", "images", "create")  # undo-prune-images.yaml
    assert not api.allowed(token, "image.openshift.io", "images", "update")  # no manifest's
    assert api.allowed(
        token,
        "apps",
        "deployments",
        "patch",
        namespace="openshift-image-registry",
        name="image-registry",
    )
    assert not api.allowed(token, "apps", "deployments", "patch", namespace="default", name="x")

    fewer = api.rbac_token(without=["delete images.image.openshift.io"])
    assert not api.allowed(fewer, "image.openshift.io", "images", "delete")
    assert api.allowed(fewer, "image.openshift.io", "images", "list")
    # the full grants are untouched by the variant
    assert api.allowed(token, "image.openshift.io", "images", "delete")

    with pytest.raises(ValueError, match="no such grant"):
        api.rbac_token(without=["delete pods"])

    # the kubeconfig carries the token: oc as the ServiceAccount
    kubeconfig = api.kubeconfig(tmp_path / "kc", token=token)
    whoami = api.oc("whoami", kubeconfig=kubeconfig).stdout.strip()
    assert whoami == "system:serviceaccount:regprune:regprune"
    denied = api.oc("get", "secrets", "-n", "default", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


def test_images_page_with_a_continue_token(openshift_apiserver: RealOpenShiftAPI) -> None:
    api = openshift_apiserver
    for i in range(5):
        api.add_image(digest=fake_digest(f"page-{i}"))
    first = api.request("GET", api.path_of("Image"), query={"limit": 2})
    assert len(first["items"]) == 2
    assert first["metadata"]["continue"]
    assert first["metadata"]["remainingItemCount"] == 3
    assert len(api.list("Image")) == 5


def test_each_test_starts_from_an_empty_cluster(openshift_apiserver: RealOpenShiftAPI) -> None:
    """What the tests above created is gone; the session server is the same one."""
    api = openshift_apiserver
    assert api.images() == []
    assert api.imagestreams() == []
    assert api.get("ServiceAccount", "regprune", "regprune") is None
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "w"},
            "spec": {"containers": [{"name": "c", "image": f"{REGISTRY_HOST}/w/app:latest"}]},
        }
    )
    assert [p["status"]["phase"] for p in api.list("Pod", "w")] == ["Pending"]
    api.reset()
    assert api.list("Pod") == []


def test_errors_come_back_as_the_servers_status(openshift_apiserver: RealOpenShiftAPI) -> None:
    api = openshift_apiserver
    with pytest.raises(APIError) as caught:
        api.request("GET", api.path_of("Image", name=fake_digest("missing")))
    assert caught.value.status == 404
    assert caught.value.reason == "NotFound"
    with pytest.raises(APIError) as caught:
        api.request("GET", api.path_of("Image"), token=api.alice_token)
    assert caught.value.status == 403

"""Workload references, LimitRanges and Image sizes as rows (``regprune.workloads``): parsed as
``oc adm prune images`` parses them (sql/prune-images-rules.md), from a dump and from the API
test server, and never a traceback for a reference that does not parse."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from regprune.metadata import MetadataSource, api_client
from regprune.tasks.metadata_snapshot import read_metadata_dump
from regprune.workloads import (
    LISTINGS,
    ApiGroupMissing,
    InvalidReference,
    limit_range_rows,
    list_workload_pages,
    parse_quantity,
    parse_reference,
    workload_rows,
)
from tests.conftest import rows
from tests.harness.openshift_api import OpenShiftAPIServer
from tests.harness.workloads_api import add_workload, remove_api

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("reg.io/ns/name:v1", ("reg.io", "ns", "name", "v1", None, True)),
        ("reg.io/ns/name", ("reg.io", "ns", "name", "latest", None, True)),
        (f"reg.io/ns/name@{D1}", ("reg.io", "ns", "name", None, D1, True)),
        (f"reg.io/ns/name:v1@{D1}", ("reg.io", "ns", "name", None, D1, True)),  # digest wins
        ("reg:5000/ns/name:v1", ("reg:5000", "ns", "name", "v1", None, True)),
        ("localhost/ns/name", ("localhost", "ns", "name", "latest", None, True)),
        ("docker.io/library/nginx", ("docker.io", "library", "nginx", "latest", None, True)),
        ("UPPER.io/ns/name", ("UPPER.io", "ns", "name", "latest", None, True)),  # hosts may
        ("nginx", (None, None, "nginx", "latest", None, False)),
        ("library/nginx:1", (None, "library", "nginx", "1", None, False)),
        ("quay.io/a/b/c", ("quay.io", "a", "b/c", "latest", None, False)),
        ("localhost:5000", ("localhost:5000", None, None, None, None, False)),
    ],
)
def test_references_parse_as_oc_does(spec: str, expected: tuple) -> None:
    ref = parse_reference(spec)
    got = (ref.registry_host, ref.ref_namespace, ref.ref_name, ref.tag, ref.digest, ref.counted)
    assert got == expected


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("reg.io/NS/name", "lowercase"),
        (" reg.io/ns/name", "invalid reference format"),
        ("reg.io/ns/name@sha256:abc", "invalid reference format"),
        ("reg.io/ns/name@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("reg.io/ns/name@sha256:" + "a" * 63 + "aa", "length"),
        ("reg.io/ns/name:" + "t" * 129, "invalid reference format"),
        ("reg.io/" + "n" * 250 + "/x", "255"),
        ("", "at least one component"),
    ],
)
def test_invalid_references_are_errors_with_a_reason(spec: str, problem: str) -> None:
    with pytest.raises(InvalidReference, match=problem):
        parse_reference(spec)


def pod(ns: str, name: str, *images: str, init: str | None = None, phase: str = "Running"):
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]
    }
    if init is not None:
        spec["initContainers"] = [{"name": "init", "image": init}]
    return {
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": spec,
        "status": {"phase": phase},
    }


def build(kind: str, ns: str, name: str, strategy: str, origin: dict[str, Any]) -> dict:
    return {
        "kind": kind,
        "metadata": {"namespace": ns, "name": name},
        "spec": {"strategy": {strategy: {"from": origin}}},
    }


def test_pod_rows_hold_init_and_regular_containers_and_the_phase() -> None:
    refs, anomalies = workload_rows(pod("a", "p", "reg.io/a/x:1", " ", init=f"reg.io/b/y@{D1}"))
    assert anomalies == []
    assert [
        (r["field"], r["container"], r["ref_namespace"], r["tag"], r["digest"]) for r in refs
    ] == [
        ("initContainers", "init", "b", None, D1),
        ("containers", "c0", "a", "1", None),
    ]  # the blank image is skipped, as oc does
    assert {r["phase"] for r in refs} == {"Running"}


def test_every_pod_spec_kind_is_read_at_its_path() -> None:
    template = {"spec": {"containers": [{"name": "c", "image": "reg.io/n/i:t"}]}}
    objects = [
        {
            "kind": k,
            "metadata": {"namespace": "n", "name": k.lower()},
            "spec": {"template": template},
        }
        for k in (
            "ReplicationController",
            "ReplicaSet",
            "Deployment",
            "DeploymentConfig",
            "DaemonSet",
            "StatefulSet",
            "Job",
        )
    ] + [
        {
            "kind": "CronJob",
            "metadata": {"namespace": "n", "name": "cj"},
            "spec": {"jobTemplate": {"spec": {"template": template}}},
        },
    ]
    for obj in objects:
        refs, anomalies = workload_rows(obj)
        assert [(r["kind"], r["ref_name"], r["tag"]) for r in refs] == [(obj["kind"], "i", "t")]
        assert anomalies == []


def test_build_inputs_of_every_kind() -> None:
    cases = [
        (
            build("Build", "b", "1", "sourceStrategy", {"kind": "ImageStreamTag", "name": "s:t"}),
            ("b", "s", "t", None, True),
        ),
        (
            build(
                "BuildConfig",
                "b",
                "2",
                "dockerStrategy",
                {"kind": "ImageStreamTag", "name": "s:t", "namespace": "o"},
            ),
            ("o", "s", "t", None, True),
        ),
        (
            build(
                "Build", "b", "3", "customStrategy", {"kind": "ImageStreamImage", "name": f"s@{D2}"}
            ),
            ("b", "s", None, D2, True),
        ),
        (
            build(
                "Build", "b", "4", "sourceStrategy", {"kind": "DockerImage", "name": "r.io/x/y:z"}
            ),
            ("x", "y", "z", None, True),
        ),
    ]
    for obj, expected in cases:
        refs, anomalies = workload_rows(obj)
        assert anomalies == []
        (r,) = refs
        assert (r["ref_namespace"], r["ref_name"], r["tag"], r["digest"], r["counted"]) == expected
    pipeline = {
        "kind": "BuildConfig",
        "metadata": {"namespace": "b", "name": "p"},
        "spec": {"strategy": {"jenkinsPipelineStrategy": {}}},
    }
    assert workload_rows(pipeline) == ([], [])


def test_unparsable_references_become_rows_and_anomalies_not_tracebacks() -> None:
    objs = [
        pod("a", "p", "reg.io/A/b"),
        build("Build", "b", "x", "sourceStrategy", {"kind": "ImageStreamTag", "name": "a:b:c"}),
        build("Build", "b", "y", "sourceStrategy", {"kind": "ImageStreamImage", "name": "noat"}),
        {
            "kind": "Pod",
            "metadata": {"namespace": "a", "name": "q"},
            "spec": {"containers": [{"name": "c", "image": 7}]},
        },
    ]
    for obj in objs:
        refs, anomalies = workload_rows(obj)
        (r,) = refs
        assert r["counted"] is False and r["problem"]
        assert len(anomalies) == 1 and "invalid reference" in anomalies[0]["problem"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", 2**30),
        ("500M", 500 * 10**6),
        ("1e3", 1000),
        ("1.5Ki", 1536),
        ("100", 100),
        ("100m", Decimal("0.1")),
    ],
)
def test_quantities(text: str, value: Any) -> None:
    assert parse_quantity(text) == value


def test_limit_ranges_keep_image_limits_only_and_flag_bad_ones() -> None:
    obj = {
        "kind": "LimitRange",
        "metadata": {"namespace": "n", "name": "l"},
        "spec": {
            "limits": [
                {"type": "Container", "max": {"memory": "1Gi"}},
                {"type": "openshift.io/Image", "max": {"storage": "1Mi"}},
                {"type": "openshift.io/Image", "max": {"storage": "lots"}},
            ]
        },
    }
    limits, anomalies = limit_range_rows(obj)
    assert [(r["position"], r["max_storage"]) for r in limits] == [(1, 2**20), (2, None)]
    assert len(anomalies) == 1 and "lots" in anomalies[0]["problem"]


def test_a_dump_with_workloads_fills_the_workload_tables(tmp_path: Path) -> None:
    items = [
        {"kind": "Image", "metadata": {"name": D1}, "dockerImageMetadata": {"Size": 1234}},
        pod("a", "p", f"reg.io/a/s@{D1}"),
        {
            "kind": "LimitRange",
            "metadata": {"namespace": "a", "name": "l"},
            "spec": {"limits": [{"type": "openshift.io/Image", "max": {"storage": "1Ki"}}]},
        },
    ]
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({"kind": "List", "items": items}))
    result = read_metadata_dump.fn(MetadataSource(str(dump)), str(tmp_path / "parts"), True)
    parts = result.parts
    assert rows(parts["image_sizes"]) == [{"image": D1, "size": 1234}]
    assert [r["digest"] for r in rows(parts["workload_references"])] == [D1]
    assert [r["max_storage"] for r in rows(parts["limit_ranges"])] == [1024]
    assert rows(parts["metadata_anomalies"]) == []
    assert result.objects["Pod"] == 1
    # without workloads the same dump is read as before: other kinds are anomalies
    plain = read_metadata_dump.fn(MetadataSource(str(dump)), str(tmp_path / "plain"))
    assert "workload_references" not in plain.parts
    assert {r["kind"] for r in rows(plain.parts["metadata_anomalies"])} == {"Pod", "LimitRange"}


def test_listing_from_the_api_is_paginated_and_404_means_no_such_api(
    openshift_api: OpenShiftAPIServer, tmp_path: Path
) -> None:
    for i in range(5):
        add_workload(openshift_api, pod(f"ns{i % 2}", f"p{i}", f"reg.io/ns/s:{i}"))
    remove_api(openshift_api, "builds")
    source = MetadataSource("kube", str(openshift_api.kubeconfig(tmp_path / "kc")), page_size=2)
    clients = api_client(source)
    listing = {lst.kind: lst for lst in LISTINGS}
    pages = list(list_workload_pages(clients, listing["Pod"], source))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert {p["kind"] for page in pages for p in page} == {"Pod"}  # typed lists omit it
    assert list(list_workload_pages(clients, listing["CronJob"], source)) == [[]]
    with pytest.raises(ApiGroupMissing):
        list(list_workload_pages(clients, listing["Build"], source))


@pytest.mark.parametrize(
    "spec",
    [
        "image-registry.openshift-image-registry.svc:5000/b/App:1",
        "reg.io/ns/" + "a-" * 40 + "B",
        "a" * 5000 + "!",
        "reg.io/" + "a_" * 2000 + "B",
    ],
)
def test_a_failing_reference_is_rejected_in_linear_time(spec: str) -> None:
    """RE2 (oc) never backtracks; Python's re would take exponential time on an ambiguous
    pattern (the grammar's separator "[-]*" may be empty): a reference must not hang a run."""
    import time

    started = time.monotonic()
    with pytest.raises(InvalidReference):
        parse_reference(spec)
    assert time.monotonic() - started < 0.5

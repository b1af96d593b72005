"""Workload lists for the OpenShift API test server (``tests/harness/openshift_api.py``).

What ``oc adm prune images`` and ``regprune prune-images`` read besides Images and ImageStreams:
Pods, ReplicationControllers, LimitRanges (core), ReplicaSets, Deployments, DaemonSets,
StatefulSets (apps), Jobs, CronJobs (batch), DeploymentConfigs (apps.openshift.io), Builds and
BuildConfigs (build.openshift.io). Cluster-wide and namespaced lists, paginated with ``limit``
and ``continue``; kept in this file so the server's own module only needs one hook
(``workloads_route``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.harness.openshift_api import OpenShiftAPIServer, _ApiError, _Response, _Route

RESOURCES: dict[str, tuple[str, str, str]] = {
    # plural: (path prefix, apiVersion, kind)
    "pods": ("api/v1", "v1", "Pod"),
    "replicationcontrollers": ("api/v1", "v1", "ReplicationController"),
    "limitranges": ("api/v1", "v1", "LimitRange"),
    "replicasets": ("apis/apps/v1", "apps/v1", "ReplicaSet"),
    "deployments": ("apis/apps/v1", "apps/v1", "Deployment"),
    "daemonsets": ("apis/apps/v1", "apps/v1", "DaemonSet"),
    "statefulsets": ("apis/apps/v1", "apps/v1", "StatefulSet"),
    "jobs": ("apis/batch/v1", "batch/v1", "Job"),
    "cronjobs": ("apis/batch/v1", "batch/v1", "CronJob"),
    "deploymentconfigs": ("apis/apps.openshift.io/v1", "apps.openshift.io/v1", "DeploymentConfig"),
    "builds": ("apis/build.openshift.io/v1", "build.openshift.io/v1", "Build"),
    "buildconfigs": ("apis/build.openshift.io/v1", "build.openshift.io/v1", "BuildConfig"),
}
PLURALS = {kind: plural for plural, (_, _, kind) in RESOURCES.items()}


def _store(server: OpenShiftAPIServer) -> dict[str, dict[str, dict[str, Any]]]:
    """The server's workloads: plural -> "<namespace>/<name>" -> object (made on first use)."""
    with server._lock:
        if not hasattr(server, "_workloads"):
            server._workloads = {plural: {} for plural in RESOURCES}
            server._workloads_missing = set()
        return server._workloads


def add_workload(server: OpenShiftAPIServer, obj: dict[str, Any]) -> dict[str, Any]:
    """Store a workload (its ``kind`` says which list serves it)."""
    meta = obj["metadata"]
    store = _store(server)
    plural = PLURALS[obj["kind"]]
    with server._lock:
        meta.setdefault("uid", f"uid-{plural}-{meta['namespace']}-{meta['name']}")
        store[plural][f"{meta['namespace']}/{meta['name']}"] = obj
    return obj


def remove_api(server: OpenShiftAPIServer, plural: str) -> None:
    """Serve 404 for this resource, as a cluster without its API group does."""
    _store(server)
    server._workloads_missing.add(plural)


def workloads_route(server: OpenShiftAPIServer, method: str, parts: list[str]) -> _Route | None:
    """The route of a workload list request, or None when the path is not one."""
    for plural, (prefix, _, _) in RESOURCES.items():
        head = prefix.split("/")
        if parts[: len(head)] != head:
            continue
        rest = parts[len(head) :]
        if rest == [plural]:
            namespace = None
        elif len(rest) == 3 and rest[0] == "namespaces" and rest[2] == plural:
            namespace = rest[1]
        else:
            continue
        if method != "GET":
            raise _ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        if plural in getattr(server, "_workloads_missing", ()):
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Route(
            "list",
            plural,
            namespace,
            None,
            lambda query, body, p=plural, ns=namespace: _list(server, p, ns, query),
            group=_group_version(prefix)[0] if _group_version(prefix) else "",
        )
    return None


def _list(
    server: OpenShiftAPIServer, plural: str, namespace: str | None, query: dict[str, str]
) -> _Response:
    store = _store(server)
    with server._lock:
        keys = sorted(
            k for k in store[plural] if namespace is None or k.startswith(namespace + "/")
        )
        objects = [store[plural][k] for k in keys]
    start = int(base64.b64decode(query["continue"])) if query.get("continue") else 0
    limit = int(query.get("limit") or 0)
    end = len(objects) if limit <= 0 else min(len(objects), start + limit)
    _, api_version, kind = RESOURCES[plural]
    metadata: dict[str, Any] = {"resourceVersion": str(server.resource_version)}
    if end < len(objects):
        metadata["continue"] = base64.b64encode(str(end).encode()).decode()
    body = {
        "apiVersion": api_version,
        "kind": f"{kind}List",
        "metadata": metadata,
        "items": [
            {k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
            for o in objects[start:end]
        ],
    }
    return _Response(200, json.dumps(body).encode())


def _group_version(prefix: str) -> tuple[str, str] | None:
    parts = prefix.split("/")
    return (parts[1], parts[2]) if parts[0] == "apis" else None


def workload_groups() -> list[dict[str, Any]]:
    """APIGroup entries of the workload groups, for the server's ``/apis`` document."""
    groups: dict[str, dict[str, Any]] = {}
    for prefix, _, _ in RESOURCES.values():
        found = _group_version(prefix)
        if found:
            name, version = found
            entry = {"groupVersion": f"{name}/{version}", "version": version}
            groups[name] = {"name": name, "versions": [entry], "preferredVersion": entry}
    return list(groups.values())


def workloads_discovery(path: str) -> dict[str, Any] | None:
    """Discovery documents of the workload groups (``/apis/<group>[/<version>]``) and the core
    resources in ``/api/v1``; None for any other path."""
    path = path.rstrip("/")
    if path == "/api/v1":
        resources = [p for p, (prefix, _, _) in RESOURCES.items() if prefix == "api/v1"]
        return _resource_list("v1", resources)
    for group in workload_groups():
        name, version = group["name"], group["preferredVersion"]["version"]
        if path == f"/apis/{name}":
            return {"kind": "APIGroup", "apiVersion": "v1", **group}
        if path == f"/apis/{name}/{version}":
            resources = [p for p, (prefix, _, _) in RESOURCES.items() if prefix == path[1:]]
            return _resource_list(f"{name}/{version}", resources)
    return None


def _resource_list(group_version: str, plurals: list[str]) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {
                "name": plural,
                "singularName": RESOURCES[plural][2].lower(),
                "namespaced": True,
                "kind": RESOURCES[plural][2],
                "verbs": ["get", "list"],
            }
            for plural in plurals
        ],
    }

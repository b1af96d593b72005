"""The cluster manifests in deployments/: valid Kubernetes objects, and the RBAC grants
exactly what regprune/permissions.py says the code needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient
from prefect.utilities.templating import apply_values, find_placeholders

from regprune.permissions import (
    PRUNE_IMAGES,
    READ_METADATA,
    ROLES,
    SERVICE_ACCOUNT,
    SERVICE_ACCOUNT_NAMESPACE,
    UNDO_PRUNE_IMAGES,
    Role,
)
from regprune.workloads import LISTINGS

DEPLOYMENTS = Path(__file__).resolve().parents[1] / "deployments"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")


def as_model(obj: dict[str, Any], kind: str) -> Any:
    """The official client's model of ``obj`` (its OpenAPI types), as if the API sent it."""
    return ApiClient().deserialize(json.dumps(obj), f"V1{kind}", "application/json")


def assert_valid(obj: dict[str, Any], kind: str) -> Any:
    """Deserializing keeps every field the model knows, with its type checked: a field that
    does not survive the round trip is misspelt, misplaced or of the wrong type."""
    model = as_model(obj, kind)
    assert ApiClient().sanitize_for_serialization(model) == obj, f"{kind} does not round-trip"
    return model


def rbac_manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOYMENTS / "rbac").glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


def grants_in(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {
        (group, resource, verb, tuple(sorted(rule.get("resourceNames", []))))
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def grants_of(role: Role) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {
        (grant.group, grant.resource, verb, tuple(sorted(grant.names)))
        for grant in role.grants
        for verb in grant.verbs
    }


@pytest.mark.parametrize(
    "doc", rbac_manifests(), ids=lambda d: f"{d.get('kind')}-{d.get('metadata', {}).get('name')}"
)
def test_every_rbac_manifest_is_a_valid_kubernetes_object(doc: dict[str, Any]) -> None:
    assert doc["kind"] in RBAC_KINDS
    assert_valid(doc, doc["kind"])


def test_roles_grant_exactly_what_the_code_needs() -> None:
    docs = rbac_manifests()
    roles = {
        (doc["metadata"]["name"], doc["metadata"].get("namespace")): doc
        for doc in docs
        if doc["kind"] in ("ClusterRole", "Role")
    }
    assert set(roles) == {(role.name, role.namespace) for role in ROLES}
    for role in ROLES:
        doc = roles[role.name, role.namespace]
        assert doc["kind"] == ("ClusterRole" if role.namespace is None else "Role")
        assert grants_in(doc["rules"]) == grants_of(role), role.name


def test_only_recovery_the_registry_restart_and_prune_images_write() -> None:
    """Snapshot, prune and check never write to the cluster; the roles that do are separate,
    so a cluster can leave them out, and only prune-images deletes (Images, nothing else);
    its undo creates Images and updates the streams' status, nothing else."""
    verbs = {role.name: {verb for grant in role.grants for verb in grant.verbs} for role in ROLES}
    assert verbs[READ_METADATA.name] == {"get", "list", "watch"}
    for name, granted in verbs.items():
        assert "*" not in granted and "deletecollection" not in granted, name
        if name not in (PRUNE_IMAGES.name, UNDO_PRUNE_IMAGES.name):
            assert not granted & {"delete", "update"}, name
    assert {(g.resource, v) for g in UNDO_PRUNE_IMAGES.grants for v in g.verbs} == {
        ("images", "create"),
        ("imagestreams/status", "update"),
    }
    writes = {
        (grant.group, grant.resource, verb)
        for grant in PRUNE_IMAGES.grants
        for verb in grant.verbs
        if verb != "list"
    }
    assert writes == {
        ("image.openshift.io", "imagestreams/status", "update"),
        ("image.openshift.io", "images", "delete"),
    }


def test_prune_images_lists_exactly_what_the_workload_snapshot_lists() -> None:
    """Every list of regprune/workloads.py, with its API group, and nothing more."""
    listed = {(listing.group, listing.plural) for listing in LISTINGS}
    lists = {
        (grant.group, grant.resource) for grant in PRUNE_IMAGES.grants if "list" in grant.verbs
    }
    assert lists == listed
    assert all(grant.verbs == ("list",) for grant in PRUNE_IMAGES.grants if "list" in grant.verbs)


def test_each_role_is_bound_to_the_service_account() -> None:
    docs = rbac_manifests()
    accounts = [doc for doc in docs if doc["kind"] == "ServiceAccount"]
    assert [(a["metadata"]["name"], a["metadata"]["namespace"]) for a in accounts] == [
        (SERVICE_ACCOUNT, SERVICE_ACCOUNT_NAMESPACE)
    ]
    bindings = [doc for doc in docs if doc["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert len(bindings) == len(ROLES)
    for role in ROLES:
        (binding,) = [b for b in bindings if b["roleRef"]["name"] == role.name]
        assert binding["kind"] == (
            "ClusterRoleBinding" if role.namespace is None else "RoleBinding"
        )
        assert binding["metadata"].get("namespace") == role.namespace
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole" if role.namespace is None else "Role",
            "name": role.name,
        }
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": SERVICE_ACCOUNT,
                "namespace": SERVICE_ACCOUNT_NAMESPACE,
            }
        ]


def job_template() -> dict[str, Any]:
    return json.loads((DEPLOYMENTS / "kubernetes-job-template.json").read_text())


def test_the_kubernetes_job_template_declares_every_variable_it_uses() -> None:
    """The rule the Prefect server applies when the work pool is created."""
    template = job_template()
    used = {
        placeholder.name
        for value in template["job_configuration"].values()
        for placeholder in find_placeholders(json.dumps(value))
    }
    declared = set(template["variables"]["properties"])
    assert used <= declared, used - declared
    for name, schema in template["variables"]["properties"].items():
        assert schema.get("description"), f"variable {name} has no description"


def test_the_kubernetes_job_is_a_valid_job_run_as_the_service_account() -> None:
    template = job_template()
    defaults = {
        name: schema["default"]
        for name, schema in template["variables"]["properties"].items()
        if "default" in schema
    }
    # What a worker renders for a run (it adds the command and the environment itself).
    values = {**defaults, "name": "regprune-nightly-gc", "labels": {"app": "regprune"}}
    job = apply_values(template["job_configuration"]["job_manifest"], values)
    # Prefect's Kubernetes worker insists on these two Job fields inside the pod spec, where
    # the API server drops them: take them out, valid or not, before checking the rest.
    pod_spec = job["spec"]["template"]["spec"]
    assert (pod_spec.pop("parallelism"), pod_spec.pop("completions")) == (1, 1)
    model = assert_valid(job, "Job")

    pod = model.spec.template.spec
    assert model.metadata.namespace == SERVICE_ACCOUNT_NAMESPACE
    assert pod.service_account_name == SERVICE_ACCOUNT
    (container,) = pod.containers
    assert container.name == "prefect-job"  # the name Prefect's Kubernetes worker expects
    assert container.image == defaults["image"]
    assert container.resources.requests == {"cpu": "500m", "memory": "2Gi"}
    assert container.resources.limits["memory"] == defaults["memory_limit"]
    (source,) = container.env_from
    assert source.secret_ref.name == defaults["aws_credentials_secret"]
    assert container.security_context.allow_privilege_escalation is False
    assert pod.security_context.run_as_non_root is True
    # a read-only root: the runs' folder and /tmp (PREFECT_HOME) are the only writable paths
    assert container.security_context.read_only_root_filesystem is True
    mounts = {mount.name: mount.mount_path for mount in container.volume_mounts}
    assert mounts == {"runs": f"{container.working_dir}/regprune-runs", "tmp": "/tmp"}
    assert {volume.name for volume in pod.volumes if volume.empty_dir} == set(mounts)

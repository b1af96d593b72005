"""Restart the registry through the Kubernetes API after deleting, so its blob-descriptor
cache (distribution's global one too, which no registry API call clears) starts empty."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task

from regprune.metadata import MetadataError, MetadataSource, call_with_retries, custom_objects_api
from regprune.permissions import APPS_GROUP, RESTART_REGISTRY, Grant, Role, denied

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def parse_deployment(value: str) -> tuple[str, str]:
    """``NAMESPACE/DEPLOYMENT`` -> (namespace, name)."""
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"--restart-registry expects NAMESPACE/DEPLOYMENT, got {value!r}")
    return namespace, name


def require_restart_access(cluster: MetadataSource, deployment: str) -> None:
    """Refuse before deleting when the API would not let this user restart the registry: a
    prune whose restart then failed would leave the registry's cache claiming deleted blobs."""
    namespace, name = parse_deployment(deployment)
    role = Role(
        RESTART_REGISTRY.name,
        (Grant(APPS_GROUP, "deployments", ("patch",), (name,)),),
        namespace=namespace,
    )
    missing = denied(cluster, (role,))
    if missing:
        raise MetadataError(
            f"forbidden: --restart-registry {deployment} needs {', '.join(missing)} in "
            f"namespace {namespace}, which the API does not grant this user (the Role "
            f"{RESTART_REGISTRY.name} of deployments/rbac/ does) - nothing deleted"
        )


@task(name="restart-registry")
def restart_registry(cluster: MetadataSource, deployment: str) -> str:
    """What ``kubectl rollout restart`` does: stamp the pod template, so the Deployment
    rolls its pods. Returns the time stamped."""
    from kubernetes import client

    namespace, name = parse_deployment(deployment)
    apps = client.AppsV1Api(custom_objects_api(cluster).api_client)
    stamp = datetime.now(UTC).isoformat()
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    call_with_retries(
        lambda: apps.patch_namespaced_deployment(name, namespace, body),
        f"patch deployments.apps {deployment} (restart the registry)",
        cluster.max_retries,
    )
    return stamp

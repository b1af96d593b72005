"""Restart the registry through the Kubernetes API after deleting, so its blob-descriptor
cache (distribution's global one too, which no registry API call clears) starts empty."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task

from regprune.metadata import MetadataSource, call_with_retries, custom_objects_api

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def parse_deployment(value: str) -> tuple[str, str]:
    """``NAMESPACE/DEPLOYMENT`` -> (namespace, name)."""
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"--restart-registry expects NAMESPACE/DEPLOYMENT, got {value!r}")
    return namespace, name


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

"""The Kubernetes API access regprune needs, in one place.

The RBAC manifests in ``deployments/rbac/`` grant exactly these roles to the ``regprune``
service account (``tests/test_rbac.py`` compares them), and the flows are tested against the
OpenShift API test server restricted to the same grants, so the code cannot quietly start
needing more than the manifests give.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from regprune.metadata import MetadataSource

IMAGE_GROUP = "image.openshift.io"
CORE_GROUP = ""
APPS_GROUP = "apps"
BATCH_GROUP = "batch"
OPENSHIFT_APPS_GROUP = "apps.openshift.io"
BUILD_GROUP = "build.openshift.io"
READ_VERBS = ("get", "list", "watch")
SERVICE_ACCOUNT = "regprune"
SERVICE_ACCOUNT_NAMESPACE = "regprune"
REGISTRY_NAMESPACE = "openshift-image-registry"
REGISTRY_DEPLOYMENT = "image-registry"


@dataclass(frozen=True)
class Grant:
    """Verbs on one resource of an API group (``""`` is the core group); ``names`` limits the
    grant to those objects (empty: all of them)."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Role:
    """A ClusterRole (``namespace`` None) or a Role in ``namespace``, bound to the service
    account by a binding of the same name."""

    name: str
    grants: tuple[Grant, ...]
    namespace: str | None = None


READ_METADATA = Role(
    "regprune-read-images",
    (
        Grant(IMAGE_GROUP, "images", READ_VERBS),
        Grant(IMAGE_GROUP, "imagestreams", READ_VERBS),
    ),
)
"""Snapshot, prune and check: list every Image and ImageStream of the cluster."""

RECOVER = Role(
    "regprune-recover",
    (
        Grant(IMAGE_GROUP, "imagestreammappings", ("create",)),
        Grant(IMAGE_GROUP, "imagestreams", ("create",)),
    ),
)
"""``check --recover --confirm``: tag lost manifests (creating a stream that is gone)."""

RESTART_REGISTRY = Role(
    "regprune-restart-registry",
    (Grant(APPS_GROUP, "deployments", ("patch",), (REGISTRY_DEPLOYMENT,)),),
    namespace=REGISTRY_NAMESPACE,
)
"""``--restart-registry NAMESPACE/DEPLOYMENT``: a rollout restart (a patch of the pod
template) of the registry after deleting, so its blob cache forgets deleted blobs. The
manifest names OpenShift's own registry; edit both names for another one."""

PRUNE_IMAGES = Role(
    "regprune-prune-images",
    (
        # what uses an image: every list of regprune/workloads.py LISTINGS, cluster-wide
        Grant(CORE_GROUP, "pods", ("list",)),
        Grant(CORE_GROUP, "replicationcontrollers", ("list",)),
        Grant(CORE_GROUP, "limitranges", ("list",)),
        Grant(APPS_GROUP, "replicasets", ("list",)),
        Grant(APPS_GROUP, "deployments", ("list",)),
        Grant(APPS_GROUP, "daemonsets", ("list",)),
        Grant(APPS_GROUP, "statefulsets", ("list",)),
        Grant(BATCH_GROUP, "jobs", ("list",)),
        Grant(BATCH_GROUP, "cronjobs", ("list",)),
        Grant(OPENSHIFT_APPS_GROUP, "deploymentconfigs", ("list",)),
        Grant(BUILD_GROUP, "builds", ("list",)),
        Grant(BUILD_GROUP, "buildconfigs", ("list",)),
        # --confirm (regprune/images_execute.py): PUT .../imagestreams/<name>/status, then
        # DELETE /images/<name>; the stream's fresh GET is READ_METADATA's
        Grant(IMAGE_GROUP, "imagestreams/status", ("update",)),
        Grant(IMAGE_GROUP, "images", ("delete",)),
    ),
)
"""``prune-images`` and the nightly GC, on top of READ_METADATA: list what uses images, and with
``--confirm`` take tag revisions out of the streams' status and delete Images. OpenShift's
registry asks the API for the same ``delete images`` before it clears its caches, so a
``prune --confirm --registry-url`` with this account's token needs it too (regprune/registry.py
asks the registry before deleting)."""

UNDO_PRUNE_IMAGES = Role(
    "regprune-undo-prune-images",
    (
        # regprune/images_undo.py: POST /images (the saved Images), then PUT
        # .../imagestreams/<name>/status (the removed items back); the GETs are READ_METADATA's
        Grant(IMAGE_GROUP, "images", ("create",)),
        Grant(IMAGE_GROUP, "imagestreams/status", ("update",)),
    ),
)
"""Undoing a ``prune-images --confirm`` run, on top of READ_METADATA: create the Images it
deleted and put the tag history items it removed back."""

ROLES = (READ_METADATA, RECOVER, RESTART_REGISTRY, PRUNE_IMAGES, UNDO_PRUNE_IMAGES)


def grant_label(grant: Grant, verb: str) -> str:
    """``verb resource.group`` as the apiserver names it (the core group has no suffix)."""
    return f"{verb} {grant.resource}" + (f".{grant.group}" if grant.group else "")


def denied(
    source: MetadataSource, roles: Iterable[Role], verbs: Iterable[str] | None = None
) -> list[str]:
    """The grants of ``roles`` (only ``verbs`` of them, if given) the API server denies to the
    caller, asked with SelfSubjectAccessReviews (which every authenticated user may create):
    a run can refuse, naming them all, before it reads or changes anything."""
    from kubernetes import client

    from regprune.metadata import call_with_retries, custom_objects_api

    api = client.AuthorizationV1Api(custom_objects_api(source).api_client)
    wanted = None if verbs is None else set(verbs)
    missing = []
    for role in roles:
        for grant in role.grants:
            resource, _, subresource = grant.resource.partition("/")
            for verb in grant.verbs:
                if wanted is not None and verb not in wanted:
                    continue
                for name in grant.names or (None,):
                    attributes = client.V1ResourceAttributes(
                        group=grant.group,
                        resource=resource,
                        subresource=subresource or None,
                        verb=verb,
                        name=name,
                        namespace=role.namespace,
                    )
                    review = client.V1SelfSubjectAccessReview(
                        spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
                    )
                    ask = functools.partial(
                        api.create_self_subject_access_review,
                        review,
                        _request_timeout=source.request_timeout,
                    )
                    answer = call_with_retries(
                        ask,
                        f"review access to {grant_label(grant, verb)}",
                        source.max_retries,
                    )
                    if not answer.status.allowed:
                        missing.append(grant_label(grant, verb) + (f" {name}" if name else ""))
    return missing

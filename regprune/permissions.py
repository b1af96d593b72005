"""The Kubernetes API access regprune needs, in one place.

The RBAC manifests in ``deployments/rbac/`` grant exactly these roles to the ``regprune``
service account (``tests/test_rbac.py`` compares them), and the flows are tested against the
OpenShift API test server restricted to the same grants, so the code cannot quietly start
needing more than the manifests give.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_GROUP = "image.openshift.io"
APPS_GROUP = "apps"
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

ROLES = (READ_METADATA, RECOVER, RESTART_REGISTRY)

"""The running registry's HTTP API, as the hard prune calls it: clearing its blob caches as
links and blobs go. OpenShift's registry authenticates every call with a bearer token and, for
both cache calls, asks the API whether the caller may ``delete images.image.openshift.io``
(its ``verifyPruneAccess``, pkg/dockerregistry/server/auth.go of openshift/image-registry)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from regprune.metadata import MetadataError, MetadataSource, cluster_bearer_token
from regprune.timeouts import Timeouts

PREFLIGHT_REPOSITORY = "regprune/pre-flight"
"""Where the pre-flight asks: OpenShift's registry checks the same cluster-wide right for any
repository; a valid name that holds nothing."""
PREFLIGHT_DIGEST = "sha256:" + hashlib.sha256(b"regprune: no blob has this content").hexdigest()
"""A digest no registry stores: the pre-flight's DELETE finds nothing to unlink (404)."""
UNLINK_OK = (200, 202, 404)
"""What ``DELETE /v2/<repository>/blobs/<digest>`` answers when the call did its work."""
TOKEN_TTL_SECONDS = 60.0


class RegistryRefused(RuntimeError):
    """The registry would not accept the calls a confirmed run makes: nothing was deleted."""


@dataclass(frozen=True)
class RegistryAPI:
    """The running registry, to clear its blob-descriptor cache as links disappear:
    ``DELETE /v2/<repository>/blobs/<digest>`` removes the link *and* the cache entry
    (distribution answers 202; 404 when it neither has nor caches the link).

    The bearer token, as ``oc adm prune images`` sends its client config's: the file of
    ``--registry-token-file`` when given, else the token of ``cluster`` (the kubeconfig's
    user, or the in-cluster ServiceAccount's); none when neither has one."""

    url: str
    token_file: str | None = None
    """Read when used: the token never travels in parameters, logs or reports."""
    cluster: MetadataSource | None = None
    """Where the default token comes from (its kubeconfig path and context, never the token)."""
    timeout: float = field(default_factory=lambda: Timeouts.current().read)
    """Seconds for the connection and for each read (urllib has one number for both)."""

    def token(self) -> str | None:
        """The bearer token this registry gets (see the class)."""
        if self.token_file:
            return read_token(self.token_file)
        if self.cluster is None or not self.cluster.is_kube:
            return None
        return _cached_cluster_token(self.cluster)

    def token_origin(self) -> str:
        """Where the token comes from, for messages (never the token)."""
        if self.token_file:
            return f"the token of {self.token_file}"
        if self.cluster is not None and self.cluster.is_kube and self.token():
            return "the cluster credentials' token"
        return "no token (the cluster credentials have none)"

    def preflight(self) -> None:
        """Ask the registry once, before anything is deleted, with the call the cache clearing
        makes: an authenticated ``DELETE /v2/<repository>/blobs/<digest>`` of a digest no
        registry holds (404 when allowed; OpenShift's registry first checks the very right
        both cache calls need). Raises :class:`RegistryRefused` on 401/403, on any other
        answer the cache calls would fail on, or when the registry cannot be reached."""
        status = self._delete(f"/v2/{PREFLIGHT_REPOSITORY}/blobs/{PREFLIGHT_DIGEST}")
        where = f"--registry-url {self.url}"
        if isinstance(status, str):
            raise RegistryRefused(f"refusing to delete: {where}: {status} - nothing deleted")
        if status in (401, 403):
            raise RegistryRefused(
                f"refusing to delete: the registry ({where}) answered {status} to an "
                f"authenticated DELETE with {self.token_origin()}: its cache calls need a "
                "token allowed to delete images.image.openshift.io (give one with "
                "--registry-token-file) - nothing deleted"
            )
        if status not in UNLINK_OK:
            raise RegistryRefused(
                f"refusing to delete: the registry ({where}) answered {status} to a blob "
                "DELETE (is storage.delete.enabled off?), so its cache could not be cleared "
                "- nothing deleted"
            )

    def unlink(self, repository: str, digest: str) -> str | None:
        """None when the registry no longer links (nor caches) the blob, else the error."""
        status = self._delete(f"/v2/{repository}/blobs/{digest}")
        if isinstance(status, str):
            return status
        return None if status in UNLINK_OK else f"registry answered {status}"

    def forget(self, digest: str) -> str | None:
        """After the bytes are gone: ``DELETE /admin/blobs/<digest>`` makes OpenShift's
        registry drop the digest from its registry-wide blob cache (its cache replaces
        distribution's; a repository's ``DELETE`` above clears only that repository's entry,
        so a push of the same blob would be skipped and its image would not pull). It answers
        204 also when the blob is already gone; distribution has no such route (404)."""
        status = self._delete(f"/admin/blobs/{digest}")
        if isinstance(status, str):
            return status
        return None if status in (200, 202, 204, 404, 405) else f"registry answered {status}"

    def _delete(self, path: str) -> int | str:
        """The status of a DELETE, or why there is none."""
        request = urllib.request.Request(f"{self.url.rstrip('/')}{path}", method="DELETE")
        token = self.token()
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            return f"registry unreachable: {exc}"
        return status


def read_token(path: str | None) -> str | None:
    """The registry bearer token, from a file so it never appears in arguments or logs."""
    if not path:
        return None
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"registry token file {path} is empty")
    return token


_tokens: dict[tuple[str | None, ...], tuple[float, str | None]] = {}
_tokens_lock = threading.Lock()


def _cached_cluster_token(cluster: MetadataSource) -> str | None:
    """The cluster credentials' token, loaded at most once a minute per kubeconfig and
    context (an exec plugin may run a command each time), kept in this process only."""
    key = (cluster.kubeconfig, cluster.context, os.environ.get("KUBECONFIG"))
    now = time.monotonic()
    with _tokens_lock:
        found = _tokens.get(key)
        if found and now - found[0] < TOKEN_TTL_SECONDS:
            return found[1]
    try:
        token = cluster_bearer_token(cluster)
    except MetadataError:  # no cluster credentials at all: no token, as for a dump
        token = None
    with _tokens_lock:
        _tokens[key] = (now, token)
    return token

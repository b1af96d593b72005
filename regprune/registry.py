"""The running registry's HTTP API, as the hard prune calls it: clearing its blob caches as
links and blobs go. OpenShift's registry authenticates every call with a bearer token."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from regprune.timeouts import Timeouts


@dataclass(frozen=True)
class RegistryAPI:
    """The running registry, to clear its blob-descriptor cache as links disappear:
    ``DELETE /v2/<repository>/blobs/<digest>`` removes the link *and* the cache entry
    (distribution answers 202; 404 when it neither has nor caches the link)."""

    url: str
    token_file: str | None = None
    """Read when used: the token never travels in parameters, logs or reports."""
    timeout: float = field(default_factory=lambda: Timeouts.current().read)
    """Seconds for the connection and for each read (urllib has one number for both)."""

    def unlink(self, repository: str, digest: str) -> str | None:
        """None when the registry no longer links (nor caches) the blob, else the error."""
        status = self._delete(f"/v2/{repository}/blobs/{digest}")
        if isinstance(status, str):
            return status
        return None if status in (200, 202, 404) else f"registry answered {status}"

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
        token = read_token(self.token_file)
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

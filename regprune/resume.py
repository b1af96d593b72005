"""Whether ``prune --resume RUN`` is the same job as the run that planned in RUN.

``--resume`` executes the plan of a run folder again. It may only do so on the storage and the
cluster (or dump) that plan was made from, and only while the folder's snapshot is the one the
plan was made from: ``snapshot.json`` records what identifies the storage and the metadata
(:func:`storage_identity`, :func:`metadata_identity`: locations and endpoints, never
credentials), and ``plan.json`` the snapshot a plan was made from (:func:`record_plan`).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from regprune.metadata import MetadataSource
from regprune.snapshots import SnapshotSource, metadata_of_snapshot
from regprune.storage import StorageSpec
from regprune.tables import SNAPSHOT_FILE

PLAN_FILE = "plan.json"
"""Written beside the plan's Parquet files: the snapshot the plan was made from, its settings."""

Identity = dict[str, str | None]


class ResumeError(ValueError):
    """The folder cannot be resumed, or not with this storage or metadata; nothing deleted."""


def storage_identity(spec: StorageSpec) -> Identity:
    """Where the storage is: an absolute folder, or a bucket/container and root with the
    service endpoint the client will talk to (from the options or the environment, as the
    backends read them). Credentials are no part of it."""
    if spec.scheme == "file":
        return {"storage": "file", "location": str(spec.local_root().resolve())}
    parsed = urlparse(spec.url)
    location = "/".join(p for p in (parsed.netloc, parsed.path.strip("/")) if p)
    return {"storage": spec.scheme, "location": location, "endpoint": _endpoint(spec)}


def _endpoint(spec: StorageSpec) -> str | None:
    options, env = spec.options, os.environ
    if spec.scheme == "s3":
        found = (
            options.get("endpoint_url")
            or (options.get("client_kwargs") or {}).get("endpoint_url")
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
        )
    elif spec.scheme in ("gs", "gcs"):
        found = options.get("endpoint_url") or env.get("STORAGE_EMULATOR_HOST")
    elif spec.scheme in ("az", "azure"):
        found = (
            options.get("account_url")
            or env.get("AZURE_STORAGE_BLOB_ENDPOINT")
            or _connection_string_endpoint(env.get("AZURE_STORAGE_CONNECTION_STRING"))
            or options.get("account_name")
            or env.get("AZURE_STORAGE_ACCOUNT_NAME")
        )
    elif spec.scheme == "swift":
        found = options.get("authurl") or env.get("OS_AUTH_URL") or env.get("ST_AUTH")
    else:
        found = None
    return _without_userinfo(str(found)).rstrip("/") if found else None


def _without_userinfo(url: str) -> str:
    """An endpoint as recorded: ``user:password@`` left out (it identifies nothing)."""
    parsed = urlparse(url)
    if parsed.username or parsed.password:
        host = parsed.hostname or ""
        return parsed._replace(netloc=f"{host}:{parsed.port}" if parsed.port else host).geturl()
    return url


def _connection_string_endpoint(text: str | None) -> str | None:
    """BlobEndpoint, else AccountName, of an Azure connection string (never its key)."""
    fields = dict(
        part.split("=", 1) for part in (text or "").split(";") if "=" in part and part.strip()
    )
    return fields.get("BlobEndpoint") or fields.get("AccountName")


def metadata_identity(source: MetadataSource) -> Identity:
    """A dump's absolute path, or the API server of the kubeconfig context (or the in-cluster
    service) the cluster is listed through."""
    if not source.is_kube:
        return {"metadata": "dump", "location": str(Path(source.source).resolve())}
    return {"metadata": "kube", "location": cluster_server(source)}


def cluster_server(source: MetadataSource) -> str | None:
    """The server URL the kubeconfig's context names, read without authenticating (None when
    no kubeconfig can be read: the listing itself then fails)."""
    from kubernetes.config import kube_config

    path = source.kubeconfig or os.environ.get("KUBECONFIG")
    default = Path(kube_config.KUBE_CONFIG_DEFAULT_LOCATION).expanduser()
    if not path and not default.exists() and "KUBERNETES_SERVICE_HOST" in os.environ:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        return f"https://{host}:{os.environ.get('KUBERNETES_SERVICE_PORT') or 443}"
    try:
        config = kube_config.KubeConfigMerger(path or str(default)).config.value or {}
    except Exception:  # an unreadable kubeconfig: the listing says why
        return None
    name = source.context or config.get("current-context")
    contexts = _named(config.get("contexts"), "context")
    servers = _named(config.get("clusters"), "cluster")
    server = servers.get(contexts.get(name, {}).get("cluster"), {}).get("server")
    return str(server).rstrip("/") if server else None


def _named(entries: Any, field: str) -> dict[Any, dict[str, Any]]:
    """A kubeconfig list (of the merger's nodes) as name -> its ``field`` mapping."""
    out = {}
    for entry in entries or []:
        entry = getattr(entry, "value", entry)
        if isinstance(entry, dict) and isinstance(entry.get(field), dict):
            out[entry.get("name")] = entry[field]
    return out


def snapshot_digest(run_dir: str | Path) -> str:
    """What identifies a folder's snapshot: the SHA-256 of its ``snapshot.json`` (written
    last by every snapshot, with its start and end times)."""
    return hashlib.sha256((Path(run_dir) / SNAPSHOT_FILE).read_bytes()).hexdigest()


def record_plan(run_dir: str | Path, settings: dict[str, Any]) -> None:
    """Write ``plan.json``: the snapshot this plan was just made from, and its settings."""
    plan = {
        "snapshot_sha256": snapshot_digest(run_dir),
        "planned_at": datetime.now(UTC).isoformat(),
        **settings,
    }
    (Path(run_dir) / PLAN_FILE).write_text(json.dumps(plan, indent=2) + "\n")


def check_resumable(run_dir: str | Path) -> dict[str, Any]:
    """The folder holds a snapshot and a plan made from it; returns its ``snapshot.json``.
    Reads only: a folder that is not there is not created."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise ResumeError(
            f"--resume {run_dir}: no such run folder (give the folder of a prune run that "
            "planned, e.g. regprune-runs/prune-<time>)"
        )
    try:
        recorded = json.loads((folder / SNAPSHOT_FILE).read_text())
        plan = json.loads((folder / PLAN_FILE).read_text())
    except FileNotFoundError as exc:
        raise ResumeError(
            f"--resume {run_dir}: not a planned prune run folder ({Path(str(exc.filename)).name} "
            "missing): plan it with 'regprune prune --snapshot FOLDER'"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ResumeError(f"--resume {run_dir}: cannot read the run folder: {exc}") from exc
    if plan.get("snapshot_sha256") != snapshot_digest(folder):
        raise ResumeError(
            f"--resume {run_dir}: its plan was made from another snapshot than the folder's "
            f"{SNAPSHOT_FILE} (the snapshot was taken again since): plan it again with "
            f"'regprune prune --snapshot {run_dir}'"
        )
    return dict(recorded)


def check_same_job(
    run_dir: str | Path,
    storage: StorageSpec | None = None,
    metadata: MetadataSource | None = None,
) -> None:
    """Refuse to resume on another storage or metadata than the run's: ``storage`` and
    ``metadata`` are what the command names (None: the run's own, as they resolve now in
    this environment, which must still be where they were)."""
    recorded = check_resumable(run_dir)
    storage = storage or StorageSpec(recorded["storage"])
    metadata = metadata or metadata_of_snapshot(str(run_dir))
    checks = (
        ("storage", recorded.get("storage_identity"), storage_identity(storage)),
        ("metadata", recorded.get("metadata_identity"), metadata_identity(metadata)),
    )
    for what, then, now in checks:
        if then is None:  # a snapshot of an older regprune: what it displayed
            then = _legacy_identity(what, recorded)
            now = _legacy_identity(what, {"storage": storage.display, "metadata": metadata.display})
        if then != now:
            raise ResumeError(
                f"--resume {run_dir} is another job: its {what} is {_describe(then)}, this "
                f"run's {_describe(now)}. Resume it on its own {what} (give no --{what} or the "
                f"same one), or plan this {what} with a new run"
            )


def _legacy_identity(what: str, recorded: dict[str, Any]) -> Identity:
    return {what: str(recorded.get(what))}


def _describe(identity: Identity) -> str:
    return " ".join(f"{value}" for value in identity.values() if value) or "unknown"


def resume_source(
    run_dir: str | Path, source: SnapshotSource | None, metadata: MetadataSource | None
) -> SnapshotSource | None:
    """Check that resuming ``run_dir`` with what the command names is the same job
    (:func:`check_same_job`) and return the source the resumed run reads: the one named, with
    the run's own metadata when the command named none."""
    check_same_job(run_dir, given_storage(source), metadata)
    if source is None or metadata is not None:
        return source
    own = metadata_of_snapshot(str(run_dir))
    return source.model_copy(
        update={"metadata": own.source, "kubeconfig": own.kubeconfig, "context": own.context}
    )


def given_storage(source: SnapshotSource | None) -> StorageSpec | None:
    """The storage a source names (None: none, the run's own)."""
    if source is None or not (source.storage or source.registry_config):
        return None
    return source.storage_spec()

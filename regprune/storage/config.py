"""Which storage a run uses: a URL, options, or the registry's own config.yml; open it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from regprune.storage.base import (
    Storage,
    StorageConfigError,
    StorageSpec,
)
from regprune.storage.local import LocalStorage
from regprune.storage.s3 import S3Storage

SUPPORTED_DRIVERS = ("filesystem", "s3")


def parse_storage_option(text: str) -> tuple[str, Any]:
    """``key=value`` from ``--storage-option``; values ``true``/``false``/numbers are typed."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise StorageConfigError(f"--storage-option expects key=value, got {text!r}")
    lowered = value.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    try:
        return key, int(value)
    except ValueError:
        return key, value


def storage_from_registry_config(path: str | os.PathLike[str]) -> StorageSpec:
    """Read the registry's own ``config.yml``: its ``storage`` section decides."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StorageConfigError(f"cannot read registry config {path}: {exc}") from exc
    storage = (config or {}).get("storage") if isinstance(config, dict) else None
    if not isinstance(storage, dict):
        raise StorageConfigError(f"{path} has no storage section")
    drivers = [k for k in storage if k not in ("delete", "cache", "maintenance", "redirect")]
    if "filesystem" in drivers:
        section = storage["filesystem"] or {}
        return StorageSpec(str(section.get("rootdirectory", "/var/lib/registry")))
    if "s3" in drivers:
        return _s3_from_registry(storage["s3"] or {}, path)
    found = ", ".join(drivers) or "none"
    raise StorageConfigError(
        f"unsupported storage driver in {path}: {found}; regprune supports "
        f"{' and '.join(SUPPORTED_DRIVERS)}"
    )


def _s3_from_registry(section: dict[str, Any], path: str | os.PathLike[str]) -> StorageSpec:
    bucket = section.get("bucket")
    if not bucket:
        raise StorageConfigError(f"{path}: storage.s3.bucket is missing")
    root = str(section.get("rootdirectory") or "").strip("/")
    client_kwargs: dict[str, Any] = {}
    if section.get("region"):
        client_kwargs["region_name"] = section["region"]
    endpoint = section.get("regionendpoint")
    if endpoint:
        if "://" not in endpoint:
            secure = section.get("secure", True)
            endpoint = f"{'https' if secure else 'http'}://{endpoint}"
        client_kwargs["endpoint_url"] = endpoint
    options: dict[str, Any] = {"client_kwargs": client_kwargs}
    if section.get("accesskey"):
        options["key"] = section["accesskey"]
        options["secret"] = section.get("secretkey", "")
    return StorageSpec(f"s3://{bucket}/{root}".rstrip("/"), options)


SECRET_OPTION_WORDS = ("secret", "key", "token", "password", "credential")


def check_options_hold_no_secrets(options: dict[str, Any]) -> None:
    """Storage options become flow-run parameters, which Prefect stores and shows: refuse
    credentials there and point at the places that keep them private."""
    for name, value in options.items():
        if isinstance(value, dict):
            check_options_hold_no_secrets(value)
        elif any(word in name.lower() for word in SECRET_OPTION_WORDS):
            raise StorageConfigError(
                f"storage option {name!r} looks like a credential; pass credentials through "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) or the registry "
                "config file, never as options: those are stored with the flow run"
            )


def resolve_storage(
    storage: str | None,
    storage_options: dict[str, Any] | None = None,
    registry_config: str | None = None,
) -> StorageSpec:
    """One of ``storage`` (URL) or ``registry_config`` (the registry's config.yml)."""
    if bool(storage) == bool(registry_config):
        raise StorageConfigError("give exactly one of --storage URL or --registry-config FILE")
    if registry_config:
        return storage_from_registry_config(registry_config)
    options = dict(storage_options or {})
    check_options_hold_no_secrets(options)
    return StorageSpec(str(storage), options)


def open_storage(spec: StorageSpec) -> Storage:
    if spec.scheme == "file":
        return LocalStorage(spec)
    if spec.scheme == "s3":
        return S3Storage(spec)
    raise StorageConfigError(
        f"unsupported storage URL {spec.display}: use a folder, file:///folder or s3://bucket/root"
    )

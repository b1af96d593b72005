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

SUPPORTED_DRIVERS = ("filesystem", "s3", "gcs", "azure", "swift")
URL_FORMS = (
    "a folder, file:///folder, s3://BUCKET[/ROOT], gs://BUCKET[/ROOT], "
    "az://CONTAINER[/ROOT] or swift://CONTAINER[/PREFIX]"
)
_NOT_DRIVERS = ("delete", "cache", "maintenance", "redirect", "tag")


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
    """Read the registry's own ``config.yml``: its ``storage`` section decides, with the
    ``REGISTRY_STORAGE*`` environment overrides the registry applies (the image registry
    operator configures cloud storage through them: ``REGISTRY_STORAGE=azure``,
    ``REGISTRY_STORAGE_AZURE_ACCOUNTKEY``, ...)."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StorageConfigError(f"cannot read registry config {path}: {exc}") from exc
    storage = (config or {}).get("storage") if isinstance(config, dict) else None
    storage = _with_environment(storage if isinstance(storage, dict) else {})
    if not storage:
        raise StorageConfigError(f"{path} has no storage section")
    drivers = [k for k in storage if k not in _NOT_DRIVERS]
    if "filesystem" in drivers:
        section = storage["filesystem"] or {}
        return StorageSpec(str(section.get("rootdirectory", "/var/lib/registry")))
    for driver, read in (
        ("s3", _s3_from_registry),
        ("gcs", _gcs_from_registry),
        ("azure", _azure_from_registry),
        ("swift", _swift_from_registry),
    ):
        if driver in drivers:
            return read(storage[driver] or {}, path)
    found = ", ".join(drivers) or "none"
    raise StorageConfigError(
        f"unsupported storage driver in {path}: {found}; regprune supports "
        f"{', '.join(SUPPORTED_DRIVERS)}"
    )


def _with_environment(storage: dict[str, Any]) -> dict[str, Any]:
    """The storage section as the registry sees it: ``REGISTRY_STORAGE=<driver>`` replaces
    the driver, ``REGISTRY_STORAGE_<DRIVER>_<PARAM>`` sets one parameter (lower-cased)."""
    storage = {k: (dict(v) if isinstance(v, dict) else v) for k, v in storage.items()}
    chosen = os.environ.get("REGISTRY_STORAGE", "").strip().lower()
    if chosen:
        storage = {k: v for k, v in storage.items() if k in _NOT_DRIVERS or k == chosen}
        storage.setdefault(chosen, {})
    for name, value in os.environ.items():
        if not name.startswith("REGISTRY_STORAGE_"):
            continue
        driver, _, param = name[len("REGISTRY_STORAGE_") :].lower().partition("_")
        if driver in SUPPORTED_DRIVERS and param and isinstance(storage.get(driver), dict):
            storage[driver][param] = yaml.safe_load(value) if value else value
    return storage


def _gcs_from_registry(section: dict[str, Any], path: str | os.PathLike[str]) -> StorageSpec:
    bucket = section.get("bucket")
    if not bucket:
        raise StorageConfigError(f"{path}: storage.gcs.bucket is missing")
    root = str(section.get("rootdirectory") or "").strip("/")
    options: dict[str, Any] = {}
    if section.get("keyfile"):
        options["token"] = str(section["keyfile"])  # a path: gcsfs reads the key file
    elif isinstance(section.get("credentials"), dict):
        options["token"] = dict(section["credentials"])  # inline service account JSON
    return StorageSpec(f"gs://{bucket}/{root}".rstrip("/"), options)


def _azure_from_registry(section: dict[str, Any], path: str | os.PathLike[str]) -> StorageSpec:
    container = section.get("container")
    if not container:
        raise StorageConfigError(f"{path}: storage.azure.container is missing")
    account = section.get("accountname")
    root = str(section.get("rootdirectory") or "").strip("/")
    options: dict[str, Any] = {}
    if account:
        options["account_name"] = str(account)
    if section.get("serviceurl"):
        options["account_url"] = str(section["serviceurl"])
    elif account:
        realm = str(section.get("realm") or "core.windows.net")
        options["account_url"] = f"https://{account}.blob.{realm}"
    if section.get("accountkey"):
        options["account_key"] = str(section["accountkey"])
    return StorageSpec(f"az://{container}/{root}".rstrip("/"), options)


def _swift_from_registry(section: dict[str, Any], path: str | os.PathLike[str]) -> StorageSpec:
    container = section.get("container")
    if not container:
        raise StorageConfigError(f"{path}: storage.swift.container is missing")
    prefix = str(section.get("prefix") or "").strip("/")
    options: dict[str, Any] = {}
    for param, name in (("authurl", "authurl"), ("username", "user"), ("password", "key")):
        if section.get(param):
            options[name] = str(section[param])
    if section.get("authversion"):
        version = str(section["authversion"])
        options["auth_version"] = "1.0" if version in ("1", "1.0") else version
    os_options = {
        name: str(section[param])
        for param, name in (
            ("tenant", "tenant_name"),
            ("tenantid", "tenant_id"),
            ("domain", "user_domain_name"),
            ("domainid", "user_domain_id"),
            ("tenantdomain", "project_domain_name"),
            ("tenantdomainid", "project_domain_id"),
            ("region", "region_name"),
            ("endpointtype", "endpoint_type"),
        )
        if section.get(param)
    }
    if os_options.get("tenant_name"):
        os_options["project_name"] = os_options["tenant_name"]
    if os_options.get("user_domain_name") and "project_domain_name" not in os_options:
        os_options["project_domain_name"] = os_options["user_domain_name"]
    if os_options:
        options["os_options"] = os_options
    if section.get("insecureskipverify"):
        options["insecure"] = True
    return StorageSpec(f"swift://{container}/{prefix}".rstrip("/"), options)


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


SECRET_OPTION_WORDS = (
    "secret",
    "key",
    "token",
    "password",
    "passwd",
    "credential",
    "connection_string",
    "sas",
    "private",
)


def check_options_hold_no_secrets(options: dict[str, Any]) -> None:
    """Storage options become flow-run parameters, which Prefect stores and shows: refuse
    credentials there and point at the places that keep them private."""
    for name, value in options.items():
        if isinstance(value, dict):
            check_options_hold_no_secrets(value)
        elif any(word in name.lower() for word in SECRET_OPTION_WORDS):
            raise StorageConfigError(
                f"storage option {name!r} looks like a credential; pass credentials through "
                "the storage's own environment (S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                "or AWS_PROFILE; GCS: GOOGLE_APPLICATION_CREDENTIALS; Azure: "
                "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_KEY; Swift: OS_* of "
                "an OpenStack RC file) or the registry config file, never as options: those "
                "are stored with the flow run"
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
    """The backend of the spec's URL scheme; the cloud ones import their client only here."""
    if spec.scheme == "file":
        return LocalStorage(spec)
    if spec.scheme == "s3":
        return S3Storage(spec)
    if spec.scheme in ("gs", "gcs"):
        from regprune.storage.gcs import GcsStorage

        return GcsStorage(spec)
    if spec.scheme in ("az", "azure"):
        from regprune.storage.azure import AzureStorage

        return AzureStorage(spec)
    if spec.scheme == "swift":
        from regprune.storage.swift import SwiftStorage

        return SwiftStorage(spec)
    raise StorageConfigError(f"unsupported storage URL {spec.display}: use {URL_FORMS}")

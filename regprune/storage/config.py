"""Which storage a run uses: a URL, options, or the registry's own config.yml; open it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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
    """``key=value`` from ``--storage-option``; values ``true``/``false``/numbers are typed,
    and a value in braces or brackets is JSON (``client_kwargs={"region_name": "eu"}``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise StorageConfigError(
            f"--storage-option expects key=value, got {_shown(text)} (credentials never: "
            "pass them through the storage's environment)"
        )
    lowered = value.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    if value.startswith(("{", "[")):
        try:
            return key, json.loads(value)
        except ValueError as exc:
            raise StorageConfigError(
                f"--storage-option {key}: a value in braces or brackets is JSON, and this is "
                f"not ({exc})"
            ) from None
    try:
        return key, int(value)
    except ValueError:
        return key, value


def _shown(text: str) -> str:
    """An input quoted for a message, cut short (it may be long, or hold a secret)."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


REGISTRY_CONFIG_VERSION = "0.1"
"""The one configuration version distribution (and OpenShift's registry) parses."""


def storage_from_registry_config(path: str | os.PathLike[str]) -> StorageSpec:
    """Read the registry's own ``config.yml``: its ``storage`` section decides, with the
    ``REGISTRY_STORAGE*`` environment overrides the registry applies (the image registry
    operator configures cloud storage through them: ``REGISTRY_STORAGE=azure``,
    ``REGISTRY_STORAGE_AZURE_ACCOUNTKEY``, ...). What the registry refuses is refused, as
    distribution's configuration parser does: no ``version: 0.1``, a storage section that
    is no mapping, no storage type or more than one (in the file, or once the environment
    is applied)."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise StorageConfigError(f"cannot read registry config {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise StorageConfigError(
            f"{path} is not a registry config: expected a YAML mapping with version and storage"
        )
    version = config.get("version")
    if not isinstance(version, str | float) or str(version) != REGISTRY_CONFIG_VERSION:
        raise StorageConfigError(
            f"{path}: unsupported version {version!r}: the registry reads version: 0.1"
        )
    storage = config.get("storage")
    if isinstance(storage, str) and storage:  # "storage: filesystem", as the registry reads it
        storage = {storage: {}}
    if storage is not None and not isinstance(storage, dict):
        raise StorageConfigError(
            f"{path}: storage must map one storage type to its parameters, not a "
            f"{type(storage).__name__}"
        )
    storage = dict(storage or {})
    for name, section in storage.items():
        if section is not None and not isinstance(section, dict):
            raise StorageConfigError(
                f"{path}: storage.{name} must be a mapping of parameters, not a "
                f"{type(section).__name__}"
            )
    written = _drivers(storage)
    if len(written) > 1:
        raise StorageConfigError(
            f"{path}: must provide exactly one storage type (as the registry says); it has "
            f"{', '.join(written)}"
        )
    storage = _with_environment(storage)
    drivers = _drivers(storage)
    if len(drivers) > 1:
        raise StorageConfigError(
            f"{path} and the environment name more than one storage type: "
            f"{', '.join(drivers)} (the registry refuses that too; check the "
            "REGISTRY_STORAGE* variables)"
        )
    if not drivers:
        raise StorageConfigError(
            f"{path} has no storage section: expected one of {', '.join(SUPPORTED_DRIVERS)}"
        )
    driver = drivers[0]
    section = storage[driver] or {}
    if driver == "filesystem":
        root = _text(section, "rootdirectory", driver, path)
        return StorageSpec(root or "/var/lib/registry")
    for name, read in (
        ("s3", _s3_from_registry),
        ("gcs", _gcs_from_registry),
        ("azure", _azure_from_registry),
        ("swift", _swift_from_registry),
    ):
        if driver == name:
            try:
                return read(section, path)
            except StorageConfigError:
                raise
            except (TypeError, AttributeError, ValueError):  # values unshown: keys among them
                raise StorageConfigError(
                    f"{path}: storage.{driver} has a parameter of the wrong type (text, "
                    "numbers and true/false where the registry's documentation says)"
                ) from None
    raise StorageConfigError(
        f"unsupported storage driver in {path}: {driver}; regprune supports "
        f"{', '.join(SUPPORTED_DRIVERS)}"
    )


def _drivers(storage: dict[str, Any]) -> list[str]:
    """The storage types a storage section names (its other keys configure the registry)."""
    return sorted(str(k) for k in storage if k not in _NOT_DRIVERS)


def _with_environment(storage: dict[str, Any]) -> dict[str, Any]:
    """The storage section as the registry sees it: ``REGISTRY_STORAGE=<driver>`` replaces
    the driver, ``REGISTRY_STORAGE_<NAME>_<PARAM>`` sets one parameter (lower-cased) of the
    section ``<name>``, which it creates when the file has none (as distribution does: a
    variable for another driver then makes two)."""
    storage = {k: (dict(v) if isinstance(v, dict) else v) for k, v in storage.items()}
    chosen = os.environ.get("REGISTRY_STORAGE", "").strip().lower()
    if chosen:
        storage = {k: v for k, v in storage.items() if k in _NOT_DRIVERS or k == chosen}
        storage.setdefault(chosen, {})
    for name, value in sorted(os.environ.items()):
        if not name.startswith("REGISTRY_STORAGE_"):
            continue
        driver, _, param = name[len("REGISTRY_STORAGE_") :].lower().partition("_")
        if not driver or not param or driver in _NOT_DRIVERS:
            continue
        if not isinstance(storage.get(driver), dict):
            storage[driver] = {}
        try:
            storage[driver][param] = yaml.safe_load(value) if value else value
        except yaml.YAMLError:  # the value is not shown: it may be a key
            raise StorageConfigError(f"{name}: its value does not parse as YAML") from None
    return storage


def _text(section: dict[str, Any], name: str, driver: str, path: str | os.PathLike[str]) -> str:
    """A parameter that is text (a YAML number reads as one too), or '' when absent."""
    value = section.get(name)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise StorageConfigError(
            f"{path}: storage.{driver}.{name} must be text, not a {type(value).__name__}"
        )
    return str(value)


def _gcs_from_registry(section: dict[str, Any], path: str | os.PathLike[str]) -> StorageSpec:
    bucket = _text(section, "bucket", "gcs", path)
    if not bucket:
        raise StorageConfigError(f"{path}: storage.gcs.bucket is missing")
    root = _text(section, "rootdirectory", "gcs", path).strip("/")
    options: dict[str, Any] = {}
    if section.get("keyfile"):
        options["token"] = str(section["keyfile"])  # a path: gcsfs reads the key file
    elif isinstance(section.get("credentials"), dict):
        options["token"] = dict(section["credentials"])  # inline service account JSON
    return StorageSpec(f"gs://{bucket}/{root}".rstrip("/"), options)


def _azure_from_registry(section: dict[str, Any], path: str | os.PathLike[str]) -> StorageSpec:
    container = _text(section, "container", "azure", path)
    if not container:
        raise StorageConfigError(f"{path}: storage.azure.container is missing")
    account = section.get("accountname")
    root = _text(section, "rootdirectory", "azure", path).strip("/")
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
    container = _text(section, "container", "swift", path)
    if not container:
        raise StorageConfigError(f"{path}: storage.swift.container is missing")
    prefix = _text(section, "prefix", "swift", path).strip("/")
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
    bucket = _text(section, "bucket", "s3", path)
    if not bucket:
        raise StorageConfigError(f"{path}: storage.s3.bucket is missing")
    root = _text(section, "rootdirectory", "s3", path).strip("/")
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


CREDENTIALS_ELSEWHERE = (
    "pass credentials through the storage's own environment (S3: AWS_ACCESS_KEY_ID / "
    "AWS_SECRET_ACCESS_KEY or AWS_PROFILE; GCS: GOOGLE_APPLICATION_CREDENTIALS; Azure: "
    "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_KEY; Swift: OS_* of an "
    "OpenStack RC file) or the registry config file, never as options: those are stored "
    "with the flow run"
)


def url_holds_credentials(value: Any) -> bool:
    """A URL with a user or password in it (``https://user:secret@host``)."""
    if not isinstance(value, str) or "@" not in value or "://" not in value:
        return False
    try:
        parsed = urlparse(value.strip())
        return bool(parsed.username or parsed.password)
    except ValueError:  # a port that is no number: judge by the text
        return "@" in value.split("://", 1)[1].split("/", 1)[0]


def check_options_hold_no_secrets(options: dict[str, Any], where: str = "") -> None:
    """Storage options become flow-run parameters, which Prefect stores and shows: refuse
    credentials there, at any depth (a key that names a key, secret, password, token or
    credential; a URL with a user or password), and point at the places that keep them
    private. The message names the option, never its value."""
    for name, value in options.items():
        path = f"{where}.{name}" if where else str(name)
        if any(word in str(name).lower() for word in SECRET_OPTION_WORDS):
            raise StorageConfigError(
                f"storage option {path!r} looks like a credential; {CREDENTIALS_ELSEWHERE}"
            )
        for position, item in _values(value):
            at = f"{path}{position}"
            if isinstance(item, dict):
                check_options_hold_no_secrets(item, at)
            elif url_holds_credentials(item):
                raise StorageConfigError(
                    f"storage option {at!r} is a URL with credentials in it; "
                    f"{CREDENTIALS_ELSEWHERE}"
                )


def _values(value: Any) -> list[tuple[str, Any]]:
    """An option's value, or the items of a list of them (with their position)."""
    if isinstance(value, list | tuple):
        return [(f"[{n}]", item) for n, item in enumerate(value)]
    return [("", value)]


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

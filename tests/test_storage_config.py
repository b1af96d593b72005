"""Cloud storage from a URL or the registry's config.yml, without touching any service: the
URL forms, the registry's gcs/azure/swift sections with the operator's environment
overrides, credentials refused as options, and a missing client named by its extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from regprune.storage import (
    StorageConfigError,
    StorageSpec,
    open_storage,
    resolve_storage,
    storage_from_registry_config,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("REGISTRY_STORAGE", "AZURE_", "OS_", "ST_", "GOOGLE_", "STORAGE_")):
            monkeypatch.delenv(name)


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text("version: 0.1\n" + text)
    return path


def test_gcs_section(tmp_path: Path) -> None:
    spec = storage_from_registry_config(
        config(tmp_path, "storage:\n  gcs: {bucket: b, keyfile: /k.json, rootdirectory: /r}\n")
    )
    assert (spec.url, spec.options) == ("gs://b/r", {"token": "/k.json"})


def test_azure_section_with_realm_and_the_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator leaves the key out of the file and sets REGISTRY_STORAGE_AZURE_ACCOUNTKEY;
    a realm other than the public cloud's names the endpoint."""
    monkeypatch.setenv("REGISTRY_STORAGE_AZURE_ACCOUNTKEY", "c2VjcmV0LWtleQ==")
    path = config(
        tmp_path,
        "storage:\n  azure: {accountname: acct, container: c, realm: core.usgovcloudapi.net}\n",
    )
    spec = storage_from_registry_config(path)
    assert spec.url == "az://c"
    assert spec.options == {
        "account_name": "acct",
        "account_url": "https://acct.blob.core.usgovcloudapi.net",
        "account_key": "c2VjcmV0LWtleQ==",
    }
    assert "c2VjcmV0" not in spec.display


def test_swift_section_keystone_v3(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        "storage:\n  swift:\n    authurl: https://keystone:5000/v3\n    username: u\n"
        "    password: p\n    container: c\n    prefix: /pre\n    authversion: 3\n"
        "    tenant: proj\n    domain: Default\n    region: RegionOne\n",
    )
    spec = storage_from_registry_config(path)
    assert spec.url == "swift://c/pre"
    assert spec.options["auth_version"] == "3"
    assert spec.options["os_options"] == {
        "tenant_name": "proj",
        "project_name": "proj",
        "user_domain_name": "Default",
        "project_domain_name": "Default",
        "region_name": "RegionOne",
    }


def test_the_driver_chosen_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``REGISTRY_STORAGE=gcs`` replaces the file's driver, as the registry does."""
    monkeypatch.setenv("REGISTRY_STORAGE", "gcs")
    monkeypatch.setenv("REGISTRY_STORAGE_GCS_BUCKET", "from-env")
    path = config(tmp_path, "storage:\n  filesystem: {rootdirectory: /x}\n")
    assert storage_from_registry_config(path).url == "gs://from-env"


@pytest.mark.parametrize(
    "option",
    ["account_key=x", "connection_string=x", "sas_token=x", "token=anon", "password=p"],
)
def test_credentials_as_options_are_refused(option: str) -> None:
    key, _, value = option.partition("=")
    with pytest.raises(StorageConfigError, match="looks like a credential") as caught:
        resolve_storage("az://c", {key: value})
    assert "AZURE_STORAGE_CONNECTION_STRING" in str(caught.value)


def test_unknown_scheme_lists_every_form() -> None:
    with pytest.raises(StorageConfigError) as caught:
        open_storage(StorageSpec("oss://b"))
    for form in ("s3://", "gs://", "az://", "swift://"):
        assert form in str(caught.value)


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("gs://b", "gcsfs.core", "gcs"),
        ("az://c", "azure.storage.blob", "azure"),
        ("swift://c", "swiftclient.client", "swift"),
    ],
)
def test_a_missing_client_names_its_extra(
    url: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules: ImportError
    with pytest.raises(StorageConfigError, match=rf"regprune\[{extra}\]"):
        open_storage(StorageSpec(url))


def test_missing_credentials_say_what_to_set() -> None:
    with pytest.raises(StorageConfigError, match="AZURE_STORAGE_CONNECTION_STRING"):
        open_storage(StorageSpec("az://c"))
    with pytest.raises(StorageConfigError, match="OS_AUTH_URL"):
        open_storage(StorageSpec("swift://c"))

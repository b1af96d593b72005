"""Cloud storage from a URL or the registry's config.yml, without touching any service: the
URL forms, the registry's gcs/azure/swift sections with the operator's environment
overrides, credentials refused as options, and a missing client named by its extra."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from regprune.storage import (
    StorageConfigError,
    StorageSpec,
    open_storage,
    parse_storage_option,
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


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("storage:\n  filesystem: {rootdirectory: /r}\n", "unsupported version None"),
        ("version: 2\nstorage:\n  filesystem: {}\n", "unsupported version 2"),
        ("version: 0.1\nstorage: [filesystem]\n", "storage must map one storage type"),
        ("version: 0.1\nstorage:\n  s3: the-bucket\n", "storage.s3 must be a mapping"),
        ("version: 0.1\nstorage:\n  delete: {enabled: true}\n", "has no storage section"),
        ("version: 0.1\nstorage:\n  s3: {bucket: [b]}\n", "storage.s3.bucket must be text"),
        ("version: 0.1\nstorage:\n  azure: {container: {c: 1}}\n", "container must be text"),
        (
            "version: 0.1\nstorage:\n  gcs: {bucket: b}\n  swift: {container: c}\n",
            "must provide exactly one storage type (as the registry says); it has gcs, swift",
        ),
        ("- just\n- a list\n", "is not a registry config"),
    ],
)
def test_a_config_the_registry_refuses_is_refused(tmp_path: Path, text: str, says: str) -> None:
    """As distribution's configuration parser: version 0.1, one storage type, mappings."""
    path = tmp_path / "config.yml"
    path.write_text(text)
    with pytest.raises(StorageConfigError, match=re.escape(says)):
        storage_from_registry_config(path)


def test_what_the_registry_accepts_is_read_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``storage: filesystem`` (a driver without parameters); a numeric bucket name; the
    sections that configure the registry beside the driver."""
    assert storage_from_registry_config(config(tmp_path, "storage: filesystem\n")).url == (
        "/var/lib/registry"
    )
    spec = storage_from_registry_config(
        config(tmp_path, "storage:\n  s3: {bucket: 2024}\n  cache: {}\n  maintenance: {}\n")
    )
    assert spec.url == "s3://2024"


def test_an_environment_variable_for_another_driver_makes_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry creates the section a REGISTRY_STORAGE_<DRIVER>_<PARAM> names; beside
    the file's driver that is two, which it refuses: so does regprune, naming the cause."""
    path = config(tmp_path, "storage:\n  filesystem: {rootdirectory: /x}\n")
    monkeypatch.setenv("REGISTRY_STORAGE_S3_REGION", "eu-west-1")
    with pytest.raises(StorageConfigError, match=r"filesystem, s3 .*REGISTRY_STORAGE"):
        storage_from_registry_config(path)
    monkeypatch.setenv("REGISTRY_STORAGE", "s3")  # the driver chosen: the file's goes
    monkeypatch.setenv("REGISTRY_STORAGE_S3_BUCKET", "b")
    assert storage_from_registry_config(path).url == "s3://b"


def test_an_unparsable_variable_is_named_without_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_STORAGE_AZURE_ACCOUNTKEY", "key: [unclosed")
    path = config(tmp_path, "storage:\n  azure: {accountname: a, container: c}\n")
    with pytest.raises(StorageConfigError) as caught:
        storage_from_registry_config(path)
    assert "REGISTRY_STORAGE_AZURE_ACCOUNTKEY" in str(caught.value)
    assert "unclosed" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"client_kwargs": {"aws_secret_access_key": "x"}}, "'client_kwargs.aws_secret_access"),
        ({"client_kwargs": {"endpoint_url": "https://u:p@h"}}, "is a URL with credentials"),
        ({"a": [{"b": {"password": "p"}}]}, "'a[0].b.password'"),
        ({"endpoints": ["https://h", "http://u@h"]}, "'endpoints[1]' is a URL with credentials"),
    ],
)
def test_credentials_at_any_depth_of_the_options_are_refused(
    options: dict[str, Any], says: str
) -> None:
    with pytest.raises(StorageConfigError, match=re.escape(says)):
        resolve_storage("s3://b", options)


def test_option_values_in_braces_are_json() -> None:
    assert parse_storage_option('client_kwargs={"region_name": "eu"}') == (
        "client_kwargs",
        {"region_name": "eu"},
    )
    assert parse_storage_option("n=3") == ("n", 3)
    assert parse_storage_option("flag=False") == ("flag", False)
    with pytest.raises(StorageConfigError, match="is JSON, and this is not"):
        parse_storage_option("client_kwargs={region_name: eu}")

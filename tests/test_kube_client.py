"""Which configuration regprune's kubernetes client takes: a kubeconfig when one is found,
else, inside a pod, the in-cluster ServiceAccount (token and CA where the kubelet mounts them).

The image runs in a pod with no kubeconfig (tests/test_container.py runs it so against the real
API); these tests pin the decision itself, without a server: the configuration the client
would send requests with.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.config import incluster_config

from regprune.metadata import MetadataError, MetadataSource, custom_objects_api


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What a pod sees: the service address in the environment, a ServiceAccount folder (at a
    temporary path instead of /var/run/secrets/...), no KUBECONFIG and no ~/.kube/config."""
    folder = tmp_path / "serviceaccount"
    folder.mkdir()
    (folder / "token").write_text("the-pods-token")
    (folder / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(folder / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(folder / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return folder


def test_in_a_pod_without_a_kubeconfig_the_service_account_is_used(pod: Path) -> None:
    default_host = client.Configuration.get_default_copy().host
    configuration = custom_objects_api(MetadataSource("kube")).api_client.configuration
    assert configuration.host == "https://10.0.0.1:443"
    assert configuration.get_api_key_with_prefix("BearerToken") == "bearer the-pods-token"
    assert configuration.ssl_ca_cert == str(pod / "ca.crt")
    # the client's process-wide default is left alone
    assert client.Configuration.get_default_copy().host == default_host


def test_a_pod_without_a_home_finds_the_service_account(
    pod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An arbitrary UID has no passwd entry; without HOME, Path.home() raises."""

    def no_home(cls: type[Path]) -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("HOME")
    monkeypatch.setattr(Path, "home", classmethod(no_home))
    configuration = custom_objects_api(MetadataSource("kube")).api_client.configuration
    assert configuration.host == "https://10.0.0.1:443"


def test_a_kubeconfig_wins_over_the_service_account(pod: Path, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://elsewhere:6443'}}]\n"
        "users: [{name: u, user: {token: the-users-token}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    source = MetadataSource("kube", kubeconfig=str(kubeconfig))
    configuration = custom_objects_api(source).api_client.configuration
    assert configuration.host == "https://elsewhere:6443"


def test_a_pod_without_its_token_gets_one_clear_error(pod: Path) -> None:
    (pod / "token").unlink()
    with pytest.raises(MetadataError) as refused:
        custom_objects_api(MetadataSource("kube"))
    message = str(refused.value)
    assert "cannot load the in-cluster configuration" in message
    assert "Service token file does not exist" in message
    assert str(pod) in message

"""regprune/registry.py: which token the registry gets, and what the pre-flight decides from
the registry's answer. A small local HTTP server stands for the registry (what OpenShift's
registry really answers is tests/test_registry_token.py's subject)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from regprune.metadata import MetadataSource
from regprune.registry import PREFLIGHT_DIGEST, RegistryAPI, RegistryRefused
from tests.harness.local_http import LocalHTTPServer


def kubeconfig(path: Path, user: dict) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


class FakeRegistry(LocalHTTPServer):
    """Answers every DELETE with ``status`` and remembers what was asked, with which token."""

    def __init__(self) -> None:
        self.status = 404
        self.seen: list[tuple[str, str | None]] = []

    def start(self) -> FakeRegistry:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_DELETE(self) -> None:
                fake.seen.append((self.path, self.headers.get("Authorization")))
                self.send_response(fake.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.serve(Handler)
        return self


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(autouse=True)
def no_ambient_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No KUBECONFIG, ~/.kube or in-cluster account leaks in from the machine."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_the_token_file_wins_then_the_kubeconfig_token_then_none(tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "kc", {"token": "from-kubeconfig"})
    cluster = MetadataSource("kube", kubeconfig=str(config))
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")

    assert RegistryAPI("http://r", str(token_file), cluster).token() == "from-file"
    assert RegistryAPI("http://r", None, cluster).token() == "from-kubeconfig"
    # a dump is no cluster; no kubeconfig anywhere is no token, not an error
    assert RegistryAPI("http://r", None, MetadataSource("dump.json")).token() is None
    missing = MetadataSource("kube", kubeconfig=str(tmp_path / "absent"))
    assert RegistryAPI("http://r", None, missing).token() is None
    assert RegistryAPI("http://r").token() is None


def test_client_certificates_give_no_token(tmp_path: Path) -> None:
    pem = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n").decode()
    config = kubeconfig(tmp_path / "kc", {"client-certificate-data": pem, "client-key-data": pem})
    cluster = MetadataSource("kube", kubeconfig=str(config))
    assert RegistryAPI("http://r", None, cluster).token() is None


def test_the_preflight_asks_once_with_the_token_and_passes_when_nothing_is_found(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    config = kubeconfig(tmp_path / "kc", {"token": "sa-token"})
    api = RegistryAPI(registry.url, None, MetadataSource("kube", kubeconfig=str(config)))
    api.preflight()
    assert registry.seen == [
        (f"/v2/regprune/pre-flight/blobs/{PREFLIGHT_DIGEST}", "Bearer sa-token")
    ]


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (401, "answered 401 to an authenticated DELETE with the cluster credentials' token"),
        (403, "need a token allowed to delete images.image.openshift.io"),
        (405, "answered 405 to a blob DELETE (is storage.delete.enabled off?)"),
        (500, "answered 500"),
    ],
)
def test_the_preflight_refuses_what_the_cache_calls_would_fail_on(
    registry: FakeRegistry, tmp_path: Path, status: int, words: str
) -> None:
    registry.status = status
    config = kubeconfig(tmp_path / "kc", {"token": "sa-token"})
    api = RegistryAPI(registry.url, None, MetadataSource("kube", kubeconfig=str(config)))
    with pytest.raises(RegistryRefused, match="nothing deleted") as refused:
        api.preflight()
    assert words in str(refused.value)
    assert "sa-token" not in str(refused.value)
    assert len(registry.seen) == 1


def test_the_preflight_names_a_missing_token_and_an_unreachable_registry(
    registry: FakeRegistry,
) -> None:
    registry.status = 401
    with pytest.raises(RegistryRefused, match="with no token"):
        RegistryAPI(registry.url).preflight()
    assert registry.seen[0][1] is None
    with pytest.raises(RegistryRefused, match="registry unreachable"):
        RegistryAPI("http://127.0.0.1:9", timeout=2).preflight()


def test_202_and_200_pass_the_preflight(registry: FakeRegistry) -> None:
    for status in (200, 202):
        registry.status = status
        RegistryAPI(registry.url).preflight()

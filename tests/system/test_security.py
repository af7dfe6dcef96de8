"""Security checks of the repository and the client: no credential in git, the secrets
file ignored, TLS verified for anything that is not loopback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sync.oppen.client import OppenClient
from sync.settings import Settings, validate
from sync.errors import ConfigError, OppenTransportError

from helpers import http_server

ROOT = Path(__file__).resolve().parents[2]


def _git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout


needs_git = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                               reason="not a git checkout")


@needs_git
def test_secrets_file_is_ignored_and_not_tracked():
    assert _git("check-ignore", ".streamlit/secrets.toml").strip() == ".streamlit/secrets.toml"
    assert ".streamlit/secrets.toml\n" not in _git("ls-files") + "\n"


@needs_git
def test_no_credential_in_tracked_files():
    # The seed's hard-coded test password, and anything that looks like a real secret
    # assignment, must never be committed outside tests and docs.
    hits = _git("grep", "-nI", "-e", "apingprueba123", "--", ":!tests/", ":!*.md")
    assert hits == ""
    example = (ROOT / ".streamlit" / "secrets.toml.example").read_text()
    for line in example.splitlines():
        stripped = line.strip()
        if stripped.startswith("OPPEN_PASSWORD") or stripped.startswith("password_hash"):
            pytest.fail(f"an uncommented credential in the example: {line!r}")


def test_tls_is_verified_and_plain_http_is_loopback_only():
    with pytest.raises(ConfigError, match="https"):
        validate(Settings(oppen_env="test", base_url="http://ngprueba.oppen.io",
                          username="API", password="x"))
    ok = validate(Settings(oppen_env="test", username="API", password="x"))
    assert ok.base_url == "https://ngprueba.oppen.io"
    client = OppenClient(base_url=ok.base_url, api="ApiNg", username="API", password="x")
    assert client.session.verify is True


def test_a_certificate_that_does_not_verify_is_refused(tmp_path):
    """A real TLS server on loopback with a self-signed certificate: the client refuses
    it (as it would refuse a man in the middle), with a Spanish message."""
    import ssl
    from http.server import BaseHTTPRequestHandler

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a self-signed certificate")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *a):
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with http_server(Handler, wrap=lambda sock: context.wrap_socket(sock, server_side=True)) as url:
        client = OppenClient(base_url=url, api="ApiNg", username="API", password="x", timeout=3)
        with pytest.raises(OppenTransportError) as info:
            client.authenticate()
        assert info.value.message == "Error de conexión: el certificado TLS de Oppen no es válido"
        assert info.value.maybe_applied is False

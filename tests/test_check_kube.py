"""proxy/check/kube.py: the check commands' API client, over real HTTPS with the
in-cluster credentials' shapes (a CA file, a bearer token file), and what it
does with answers a Kubernetes API server would not give."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509

from proxy.check import kube
from proxy.identity import ca

pytestmark = pytest.mark.timeout(60)


class Handler(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, bytes]] = {}
    seen: list[tuple[str, str, str | None, bytes]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
        status, payload = self.answers.get(self.path, (404, b'{"kind": "Status", "message": "not found"}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server with a certificate for 127.0.0.1 from a CA whose certificate is in tmp_path/ca.crt."""
    root = ca.create_root("cluster.local", dt.timedelta(days=1))
    issuer = ca.create_issuer(root, "cluster.local", dt.timedelta(days=1))
    key = ca.new_key()
    leaf = ca.sign_leaf(issuer, key.public_key(), "kubernetes",
                        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], dt.timedelta(hours=1))
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem(root.cert))
    (tmp_path / "tls.crt").write_bytes(ca.cert_pem(leaf) + ca.cert_pem(issuer.cert))
    (tmp_path / "tls.key").write_bytes(ca.key_pem(key))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    Handler.answers, Handler.seen = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_https_with_the_ca_file_and_the_token(https_api: tuple[str, Path]) -> None:
    url, files = https_api
    (files / "token").write_text("abc.def\n")
    Handler.answers["/version"] = (200, b'{"major": "1", "minor": "29"}')
    Handler.answers["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"] = (201, b'{"status": {"allowed": true}}')
    client = kube.Client(url + "/", str(files / "token"), str(files / "ca.crt"), timeout=5)
    assert client.authenticated
    assert client.get("/version") == kube.Answer(200, {"major": "1", "minor": "29"})
    answer = client.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {"spec": {}})
    assert answer.status == 201 and answer.body["status"]["allowed"] is True
    assert [(m, p, a) for m, p, a, _ in Handler.seen] == [
        ("GET", "/version", "Bearer abc.def"),
        ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "Bearer abc.def")]
    assert json.loads(Handler.seen[1][3]) == {"spec": {}}
    missing = client.get("/api/v1/namespaces/meshproxy")
    assert missing.status == 404 and missing.message == "not found"


def test_a_server_the_ca_does_not_vouch_for_is_refused(https_api: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = https_api
    other = ca.create_root("other.example", dt.timedelta(days=1))
    (tmp_path / "other.crt").write_bytes(ca.cert_pem(other.cert))
    client = kube.Client(url, None, str(tmp_path / "other.crt"), timeout=5)
    with pytest.raises(kube.ApiUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        client.get("/version")
    assert Handler.seen == []
    # A missing token file is no token (kubectl proxy's URL needs none).
    assert not kube.Client(url, str(tmp_path / "no-token"), None, timeout=5).authenticated


@pytest.mark.parametrize("payload, problem", [
    (b"<html>maintenance</html>", "not JSON"),
    (b'["a list"]', "not an object"),
    (b'{"items": [' + b'"x", ' * 40 + b'"x"]}', "larger than"),
])
def test_answers_that_are_not_api_objects(https_api: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
                                          payload: bytes, problem: str) -> None:
    url, files = https_api
    monkeypatch.setattr(kube, "MAX_BODY", 128)
    Handler.answers["/api/v1/pods"] = (200, payload)
    client = kube.Client(url, None, str(files / "ca.crt"), timeout=5)
    with pytest.raises(kube.ApiUnavailable, match=problem):
        client.get("/api/v1/pods")


def test_bad_urls_and_where_the_api_is(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy import config

    for bad in ("ftp://host", "http://", "127.0.0.1:6443"):
        with pytest.raises(ValueError, match="expected http"):
            kube.Client(bad, None, None, timeout=1)
    settings = config.load(env={}).discovery
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert kube.api_url(settings) is None
    assert kube.api_url(settings, "http://127.0.0.1:8001/") == "http://127.0.0.1:8001"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    assert kube.api_url(settings) == "https://[fd00::1]:6443"
    configured = config.load(env={"MESHPROXY_K8S_API": "https://api.example:443"}).discovery
    assert kube.api_url(configured) == "https://api.example:443"

"""Mutual TLS between two proxies, with certificates from the real issuer process.

Proxy A (identity web) sends to a service whose endpoint discovery says is
meshed behind proxy B (identity api). The hop A -> B must be TLS 1.3 with
both certificates checked; B tells its app who called (``l5d-client-id``);
each side counts the other's identity in its metrics. A TCP recorder sits
between A and B so the tests can read what crosses the wire.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

WEB = "web.default.serviceaccount.identity.cluster.local"
API = "api.default.serviceaccount.identity.cluster.local"
ROGUE = "rogue.default.serviceaccount.identity.cluster.local"


class Recorder:
    """A TCP relay that keeps a copy of the bytes each connection sends upstream."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sent: list[bytearray] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            buf = bytearray()
            self.sent.append(buf)
            threading.Thread(target=self._pipe, args=(client, up, buf), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, client, None), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if record is not None and len(record) < 1 << 20:
                    record += data
                dst.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    from helpers.issuer import Issuer

    iss = Issuer(tmp_path_factory.mktemp("issuer"), [WEB, API, ROGUE]).start()
    yield iss
    iss.stop()


def _endpoints(path: Path, app, peer_addr: str, identity: str, protocol: str = "http1", name: str = "api.mesh:80"):
    path.write_text(
        "services:\n"
        f"  {name}:\n"
        "    endpoints:\n"
        f"      - address: {app.hostport}\n"
        f"        proxy: {peer_addr}\n"
        f"        identity: {identity}\n"
        f"        protocol: {protocol}\n"
    )


@pytest.fixture(scope="module")
def mesh(issuer, tmp_path_factory):
    from helpers.meshproxy import MeshProxy
    from helpers.upstream import HttpUpstream

    tmp: Path = tmp_path_factory.mktemp("mtls")
    app = HttpUpstream(name="api-app")
    b = MeshProxy(env=issuer.env(API), name="proxy-B", log_path=tmp / "b.log").start()
    recorder = Recorder(b.inbound)
    endpoints = tmp / "endpoints.yaml"
    _endpoints(endpoints, app, f"127.0.0.1:{recorder.port}", API)
    a = MeshProxy(env={**issuer.env(WEB), "MESHPROXY_DESTINATION": f"file://{endpoints}"},
                  name="proxy-A", log_path=tmp / "a.log").start()
    try:
        yield a, b, app, recorder, tmp
    finally:
        a.close()
        b.close()
        recorder.close()
        app.stop()


def _get(proxy, path: str, host: str = "api.mesh:80", headers: dict | None = None, method: str = "GET", body=None):
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=20)
    conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def _header(req, name: bytes) -> list[bytes]:
    return [v for n, v in req.head.headers if n.lower() == name]


def test_request_crosses_mutual_tls_and_app_learns_the_client_identity(mesh):
    a, b, app, recorder, _ = mesh
    resp, _ = _get(a, "/hello-over-mtls", headers={"l5d-client-id": "spoofed.identity"})
    assert resp.status == 200
    req = app.requests[-1]
    assert req.head.raw.startswith(b"GET /hello-over-mtls HTTP/1.1\r\n")
    # B replaced what the client claimed with what TLS proved.
    assert _header(req, b"l5d-client-id") == [WEB.encode()]


def test_the_wire_between_the_proxies_is_tls(mesh):
    a, _, _, recorder, _ = mesh
    marker = b"/plaintext-marker-7f3a9c"
    resp, _ = _get(a, marker.decode())
    assert resp.status == 200
    assert recorder.sent, "nothing crossed the recorder"
    wire = b"".join(bytes(s) for s in recorder.sent)
    for stream in recorder.sent:
        # Every connection starts with a TLS handshake record (ClientHello).
        assert stream[:1] == b"\x16" and stream[5:6] == b"\x01", bytes(stream[:16])
    assert marker not in wire
    assert b"\x00MPX" not in wire, "the transport header must travel inside TLS"
    assert b"api.mesh" not in wire


def test_each_side_reports_the_other_identity(mesh):
    a, b, _, _, _ = mesh
    _get(a, "/count-me")
    ma, mb = a.metrics(), b.metrics()
    assert mb.get("tls_connections_total", direction="inbound", client_id=WEB) >= 1
    assert ma.get("tls_connections_total", direction="outbound", server_id=API) >= 1
    now = time.time()
    for m in (ma, mb):
        assert m.get("identity_cert_expiration_timestamp_seconds") > now + 3600
        assert m.get("identity_cert_refresh_total", result="ok") >= 1


def test_openssl_s_client_sees_the_chain_and_sans(mesh, issuer):
    _, b, _, _, _ = mesh
    out = subprocess.run(
        ["openssl", "s_client", "-connect", b.inbound_hostport, "-servername", API, "-showcerts",
         "-CAfile", str(issuer.anchors), "-verify_return_error", "-brief"],
        input=b"", capture_output=True, timeout=20)
    text = out.stdout.decode() + out.stderr.decode()
    assert "Verification: OK" in text or "Verify return code: 0" in text, text
    assert "TLSv1.3" in text, text
    full = subprocess.run(
        ["openssl", "s_client", "-connect", b.inbound_hostport, "-servername", API, "-showcerts"],
        input=b"", capture_output=True, timeout=20).stdout
    pems = [p for p in full.split(b"-----BEGIN CERTIFICATE-----")[1:]]
    assert len(pems) == 2, "leaf and issuer must both be sent"
    leaf = (b"-----BEGIN CERTIFICATE-----" + pems[0].split(b"-----END CERTIFICATE-----")[0]
            + b"-----END CERTIFICATE-----\n")
    sans = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=leaf,
                          capture_output=True, timeout=10).stdout.decode()
    assert f"DNS:{API}" in sans
    assert "URI:spiffe://cluster.local/ns/default/sa/api" in sans


def test_wrong_server_identity_fails_with_a_clear_error(mesh, issuer):
    from helpers.meshproxy import MeshProxy

    a, b, app, _, tmp = mesh
    endpoints = tmp / "wrong.yaml"
    # Discovery expects "rogue", but B proves "api".
    _endpoints(endpoints, app, b.inbound_hostport, ROGUE, name="wrong.mesh:80")
    with MeshProxy(env={**issuer.env(WEB), "MESHPROXY_DESTINATION": f"file://{endpoints}"}, name="proxy-W") as w:
        w.start()
        resp, _ = _get(w, "/x", host="wrong.mesh:80")
        assert resp.status == 502
        assert "mesh TLS handshake failed" in (resp.getheader("l5d-proxy-error") or "")
        assert "hostname mismatch" in resp.getheader("l5d-proxy-error")
        assert w.metrics().get("tls_handshake_errors_total", direction="outbound") >= 1


def _client_context(issuer, tmp: Path, name: str = WEB, alpn: str = "transport.l5d.io/v1") -> ssl.SSLContext:
    """What a peer proxy holds: a leaf for ``name`` from the issuer, the trust anchors, mesh ALPN."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from proxy.identity import ca

    authority, _ = ca.load_issuer(issuer.dir)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = ca.sign_leaf(authority, key.public_key(), name, [x509.DNSName(name)], dt.timedelta(hours=1))
    (tmp / "client.pem").write_bytes(ca.key_pem(key) + ca.cert_pem(leaf) + ca.cert_pem(authority.cert))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(issuer.anchors))
    ctx.load_cert_chain(str(tmp / "client.pem"))
    ctx.set_alpn_protocols([alpn])
    return ctx


def test_opaque_session_inside_mesh_tls_reaches_the_port_its_header_names(issuer, tmp_path):
    """The inbound half of a meshed opaque connection: ALPN transport.l5d.io/v1, then the header, inside TLS."""
    from helpers.meshproxy import MeshProxy
    from proxy.protocol import transport_header

    echo = socket.create_server(("127.0.0.1", 0))
    port = echo.getsockname()[1]

    def serve():
        conn, _ = echo.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    with MeshProxy(env=issuer.env(API), name="proxy-Bo") as b:
        b.start()
        ctx = _client_context(issuer, tmp_path)
        with ctx.wrap_socket(socket.create_connection(b.inbound, timeout=10), server_hostname=API) as tls:
            assert tls.version() == "TLSv1.3"
            assert tls.selected_alpn_protocol() == "transport.l5d.io/v1"
            tls.sendall(transport_header.encode(port, transport_header.PROTO_OPAQUE, "db") + b"secret-opaque-payload")
            got = b""
            while len(got) < 21:
                got += tls.recv(4096)
            assert got == b"SECRET-OPAQUE-PAYLOAD"
        assert b.metrics().get("tls_connections_total", direction="inbound", client_id=WEB) == 1
        assert b.metrics().get("inbound_tcp_authz_allow_total") >= 1
    echo.close()


def test_mesh_tls_session_without_its_header_is_closed(issuer, tmp_path):
    from helpers.meshproxy import MeshProxy

    with MeshProxy(env=issuer.env(API), name="proxy-Bh") as b:
        b.start()
        ctx = _client_context(issuer, tmp_path)
        with ctx.wrap_socket(socket.create_connection(b.inbound, timeout=10), server_hostname=API) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert tls.recv(100) == b""
        assert b.wait_line("without its transport header", timeout=5)


def test_non_mesh_tls_passes_through_to_the_app(issuer, tmp_path):
    """TLS whose SNI is not the proxy's identity belongs to the app: relayed untouched."""
    from helpers.meshproxy import MeshProxy

    echo = socket.create_server(("127.0.0.1", 0))
    port = echo.getsockname()[1]
    received = bytearray()

    def serve():
        conn, _ = echo.accept()
        with conn:
            while data := conn.recv(65536):
                received.extend(data)
                if len(received) > 20:
                    conn.sendall(b"raw-reply")
                    return

    threading.Thread(target=serve, daemon=True).start()
    env = {**issuer.env(API), "MESHPROXY_INBOUND_DEFAULT_TARGET": f"127.0.0.1:{port}"}
    with MeshProxy(env=env, name="proxy-Bp") as b:
        b.start()
        ctx = ssl.create_default_context()
        raw = socket.create_connection(b.inbound, timeout=10)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="www.example.com")
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        hello = outgoing.read()
        raw.sendall(hello)
        reply = raw.recv(100)
        raw.close()
        assert reply == b"raw-reply"
        assert bytes(received[: len(hello)]) == hello
    echo.close()


def test_rotation_under_load_loses_no_request(tmp_path_factory):
    """Leaves that live 6 s are renewed at 70% (about every 4 s) while requests flow."""
    from helpers.issuer import Issuer
    from helpers.meshproxy import MeshProxy
    from helpers.upstream import HttpUpstream

    tmp = tmp_path_factory.mktemp("rotate")
    iss = Issuer(tmp / "issuer", [WEB, API], leaf_lifetime="6s").start()
    app = HttpUpstream(name="rot-app")
    b = MeshProxy(env=iss.env(API), name="proxy-Br").start()
    endpoints = tmp / "endpoints.yaml"
    _endpoints(endpoints, app, b.inbound_hostport, API)
    a = MeshProxy(env={**iss.env(WEB), "MESHPROXY_DESTINATION": f"file://{endpoints}",
                       # New connections often, so fresh handshakes use the renewed certificates.
                       "MESHPROXY_POOL_IDLE_TIMEOUT": "200ms"}, name="proxy-Ar").start()
    try:
        failures, ok = [], 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ok < 5000:
            try:
                resp, _ = _get(a, "/rot")
                if resp.status == 200:
                    ok += 1
                else:
                    failures.append(resp.status)
            except OSError as err:
                failures.append(repr(err))
            time.sleep(0.005)
        assert not failures, failures[:5]
        assert ok > 100
        for proxy in (a, b):
            assert proxy.metrics().get("identity_cert_refresh_total", result="ok") >= 3
            assert proxy.metrics().get("identity_cert_refresh_total", result="failed") == 0
    finally:
        a.close()
        b.close()
        app.stop()
        iss.stop()


def test_not_ready_until_the_first_certificate(tmp_path, issuer):
    from helpers.meshproxy import MeshProxy

    env = {**issuer.env(WEB), "MESHPROXY_IDENTITY_SERVICE": "https://127.0.0.1:9",  # nothing listens there
           "MESHPROXY_IDENTITY_MIN_BACKOFF": "100ms", "MESHPROXY_IDENTITY_MAX_BACKOFF": "200ms"}
    with MeshProxy(env=env, name="proxy-N") as p:
        p.start(wait_ready=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                status, _, _ = p.admin_request("GET", "/live", timeout=1.0)
                if status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5)
        status, _, _ = p.admin_request("GET", "/ready", timeout=1.0)
        assert status == 503
        assert p.metrics().get("identity_cert_refresh_total", result="failed") >= 2
        assert any("certificate request failed" in line for line in p.lines())


def test_expired_certificate_files_are_refused_at_load(tmp_path, issuer):
    """Certificate files (cert-manager style) holding an expired leaf: not used, not ready, logged."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from helpers.meshproxy import MeshProxy
    from helpers.upstream import HttpUpstream
    from proxy.identity import ca

    authority, _ = ca.load_issuer(issuer.dir)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = ca.sign_leaf(authority, key.public_key(), API,
                        [x509.DNSName(API), x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/api")],
                        dt.timedelta(seconds=1))
    time.sleep(2.2)  # validity has whole seconds: the last second counts as valid
    (tmp_path / "tls.crt").write_bytes(ca.cert_pem(leaf) + ca.cert_pem(authority.cert))
    (tmp_path / "tls.key").write_bytes(ca.key_pem(key))
    app = HttpUpstream(name="exp-app")
    env_b = {"MESHPROXY_IDENTITY_NAME": API, "MESHPROXY_IDENTITY_TRUST_ANCHORS": str(issuer.anchors),
             "MESHPROXY_IDENTITY_CERT_FILE": str(tmp_path / "tls.crt"),
             "MESHPROXY_IDENTITY_KEY_FILE": str(tmp_path / "tls.key")}
    with MeshProxy(env=env_b, name="proxy-Be") as b:
        b.start(wait_ready=False)
        assert b.wait_line("certificate files rejected", timeout=10)
        # An expired certificate does not verify: the proxy refuses to use it.
        m = b.metrics()
        assert m.get("identity_cert_refresh_total", result="failed") >= 1, (m, b.tail())
        assert any("certificate files rejected" in line and "expired" in line.lower() for line in b.lines()), b.tail()
        status, _, _ = b.admin_request("GET", "/ready", timeout=1.0)
        assert status == 503
    app.stop()


def _file_identity(tmp: Path, authority, anchors_pem: bytes, lifetime) -> dict[str, str]:
    """Settings for proxy B with certificate files signed by ``authority``."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from proxy.identity import ca

    key = ec.generate_private_key(ec.SECP256R1())
    leaf = ca.sign_leaf(authority, key.public_key(), API, [x509.DNSName(API)], lifetime)
    (tmp / "tls.crt").write_bytes(ca.cert_pem(leaf) + ca.cert_pem(authority.cert))
    (tmp / "tls.key").write_bytes(ca.key_pem(key))
    (tmp / "anchors.crt").write_bytes(anchors_pem)
    return {"MESHPROXY_IDENTITY_NAME": API, "MESHPROXY_IDENTITY_TRUST_ANCHORS": str(tmp / "anchors.crt"),
            "MESHPROXY_IDENTITY_CERT_FILE": str(tmp / "tls.crt"), "MESHPROXY_IDENTITY_KEY_FILE": str(tmp / "tls.key")}


@pytest.mark.parametrize("case", ["expired", "wrongly-signed"])
def test_bad_peer_certificate_fails_with_a_clear_error(case, tmp_path, issuer):
    import datetime as dt

    from helpers.meshproxy import MeshProxy
    from helpers.upstream import HttpUpstream
    from proxy.identity import ca

    if case == "expired":
        authority, _ = ca.load_issuer(issuer.dir)
        env_b = _file_identity(tmp_path, authority, issuer.anchors.read_bytes(), dt.timedelta(seconds=3))
        expect = "certificate has expired"
    else:
        root = ca.create_root("cluster.local", dt.timedelta(days=10))
        other = ca.create_issuer(root, "cluster.local", dt.timedelta(days=5))
        env_b = _file_identity(tmp_path, other, ca.cert_pem(root.cert), dt.timedelta(days=1))
        expect = "unable to get local issuer certificate"
    app = HttpUpstream(name="bad-app")
    with MeshProxy(env=env_b, name="proxy-Bb") as b:
        b.start()
        endpoints = tmp_path / "endpoints.yaml"
        _endpoints(endpoints, app, b.inbound_hostport, API)
        if case == "expired":
            time.sleep(3.5)  # B keeps serving the leaf it loaded, now past its validity
        with MeshProxy(env={**issuer.env(WEB), "MESHPROXY_DESTINATION": f"file://{endpoints}"}, name="proxy-Ab") as a:
            a.start()
            resp, _ = _get(a, "/bad-peer")
            assert resp.status == 502
            error = resp.getheader("l5d-proxy-error") or ""
            assert "mesh TLS handshake failed" in error and expect in error, error
            assert not app.requests
            assert a.metrics().get("tls_handshake_errors_total", direction="outbound", reason=expect) >= 1
    app.stop()


def test_certificate_files_are_reloaded_when_they_change(tmp_path, issuer):
    import datetime as dt

    from helpers.meshproxy import MeshProxy
    from proxy.identity import ca

    authority, _ = ca.load_issuer(issuer.dir)
    env = _file_identity(tmp_path, authority, issuer.anchors.read_bytes(), dt.timedelta(hours=1))
    with MeshProxy(env=env, name="proxy-F") as b:
        b.start()
        first = b.metrics().get("identity_cert_expiration_timestamp_seconds")
        assert b.metrics().get("identity_cert_refresh_total", result="ok") == 1
        time.sleep(1.1)  # a later second: the new leaf's expiry differs
        _file_identity(tmp_path, authority, issuer.anchors.read_bytes(), dt.timedelta(hours=2))
        deadline = time.monotonic() + 10
        while b.metrics().get("identity_cert_refresh_total", result="ok") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        m = b.metrics()
        assert m.get("identity_cert_refresh_total", result="ok") == 2
        assert m.get("identity_cert_expiration_timestamp_seconds") > first + 3000
        # A broken edit keeps the certificate in use.
        (tmp_path / "tls.key").write_text("not a key")
        assert b.wait_line("certificate files rejected", timeout=10)
        assert b.admin_request("GET", "/ready", timeout=2)[0] == 200


def test_h2_negotiated_by_alpn_inside_mesh_tls(issuer, tmp_path):
    """A meshed client that reaches the app's port (no transport header) negotiates h2 by ALPN;
    curl with a mesh certificate stands in for the peer proxy."""
    from helpers.h2server import H2Origin
    from helpers.meshproxy import MeshProxy

    origin = H2Origin(name="alpn-origin")
    try:
        env = {**issuer.env(API), "MESHPROXY_INBOUND_DEFAULT_TARGET": origin.hostport}
        with MeshProxy(env=env, name="proxy-H") as b:
            b.start()
            _client_context(issuer, tmp_path, alpn="h2")  # writes client.pem (key, leaf, issuer)
            port = b.inbound[1]
            out = subprocess.run(
                ["curl", "-sS", "--http2", "--cert", str(tmp_path / "client.pem"), "--cacert", str(issuer.anchors),
                 "--resolve", f"{API}:{port}:127.0.0.1", "-o", "/dev/null", "-H", "l5d-client-id: spoofed.identity",
                 "-w", "%{http_version} %{http_code}", f"https://{API}:{port}/alpn-h2"],
                capture_output=True, text=True, timeout=20)
            assert out.stdout == "2 200", out.stderr
            req = origin.requests[-1]
            assert req.path == "/alpn-h2"
            # The client's own l5d-client-id is dropped over HTTP/2 too: only the proxy's stays.
            assert req.header_all("l5d-client-id") == [WEB]
    finally:
        origin.stop()

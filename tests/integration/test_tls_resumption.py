"""TLS session resumption between two real proxies (proxy/transport/sessions.py).

Proxy A (web) sends to a service meshed behind proxy B (api). Requests share
one long-lived HTTP/2 connection, so each test opens CONNECT tunnels through
A instead: every tunnel is a new mesh TLS connection. Each side counts the
connections that resumed. Certificates are
files (cert-manager style) so a test can rotate either side's at will.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

WEB = "web.default.serviceaccount.identity.cluster.local"
API = "api.default.serviceaccount.identity.cluster.local"
ROGUE = "rogue.default.serviceaccount.identity.cluster.local"


@pytest.fixture(scope="module")
def authority():
    from proxy.identity import ca

    root = ca.create_root("cluster.local", dt.timedelta(days=10))
    return root, ca.create_issuer(root, "cluster.local", dt.timedelta(days=5))


def _identity(tmp: Path, authority, name: str, extra: dict | None = None) -> dict[str, str]:
    """Certificate files for ``name`` (written again to rotate), and the settings naming them."""
    from cryptography import x509

    from proxy.identity import ca

    root, issuer = authority
    key = ca.new_key()
    leaf = ca.sign_leaf(issuer, key.public_key(), name, [x509.DNSName(name)], dt.timedelta(hours=1))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "tls.crt").write_bytes(ca.cert_pem(leaf) + ca.cert_pem(issuer.cert))
    (tmp / "tls.key").write_bytes(ca.key_pem(key))
    (tmp / "anchors.crt").write_bytes(ca.cert_pem(root.cert))
    return {"MESHPROXY_IDENTITY_NAME": name, "MESHPROXY_IDENTITY_TRUST_ANCHORS": str(tmp / "anchors.crt"),
            "MESHPROXY_IDENTITY_CERT_FILE": str(tmp / "tls.crt"), "MESHPROXY_IDENTITY_KEY_FILE": str(tmp / "tls.key"),
            **(extra or {})}


def _endpoints(path: Path, app: str, peer: str, identity: str) -> None:
    path.write_text("services:\n  api.mesh:80:\n    endpoints:\n"
                    f"      - address: {app}\n        proxy: {peer}\n        identity: {identity}\n"
                    "        protocol: http1\n")


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _new_connection(a, path: str = "/r") -> tuple[int, str]:
    """A CONNECT tunnel through A to api.mesh (a new mesh TLS connection), then a request in it:
    (status, l5d-proxy-error) of the CONNECT when it failed, else of the request."""
    with socket.create_connection(a.outbound, timeout=20) as sock:
        sock.sendall(b"CONNECT api.mesh:80 HTTP/1.1\r\nHost: api.mesh:80\r\n\r\n")
        head = _read_head(sock)
        status = int(head.split(b" ", 2)[1])
        if status == 200:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: api.mesh\r\nConnection: close\r\n\r\n".encode())
            head = _read_head(sock)
            status = int(head.split(b" ", 2)[1])
        error = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                 if line.lower().startswith(b"l5d-proxy-error:")]
        return status, (error or [""])[0]


def _counts(proxy, direction: str) -> tuple[float, float]:
    """(connections, resumed) for ``direction``."""
    m = proxy.metrics()
    label = {"outbound": "server_id", "inbound": "client_id"}[direction]
    peer = API if direction == "outbound" else WEB
    return (m.get("tls_connections_total", direction=direction, **{label: peer}) or 0,
            m.get("tls_session_resumed_total", direction=direction) or 0)


def _wait_refreshed(proxy, count: int) -> None:
    deadline = time.monotonic() + 10
    while proxy.metrics().get("identity_cert_refresh_total", result="ok") < count:
        assert time.monotonic() < deadline, proxy.tail()
        time.sleep(0.1)


@pytest.fixture
def pair(authority, tmp_path):
    """(a, b, app, tmp, endpoints) with B's session cache setting from the test's ``b_extra``."""
    from helpers.meshproxy import MeshProxy
    from helpers.upstream import HttpUpstream

    started: list = []

    def start(b_extra: dict | None = None, a_extra: dict | None = None):
        app = HttpUpstream(name="resume-app")
        started.append(app)
        b = MeshProxy(env=_identity(tmp_path / "b", authority, API, b_extra), name="proxy-B",
                      log_path=tmp_path / "b.log").start()
        started.append(b)
        endpoints = tmp_path / "endpoints.yaml"
        _endpoints(endpoints, app.hostport, b.inbound_hostport, API)
        env = _identity(tmp_path / "a", authority, WEB, {"MESHPROXY_DESTINATION": f"file://{endpoints}",
                                                          **(a_extra or {})})
        a = MeshProxy(env=env, name="proxy-A", log_path=tmp_path / "a.log").start()
        started.append(a)
        return a, b, app, endpoints

    yield start
    for item in reversed(started):
        if hasattr(item, "close"):
            item.close()
        else:
            item.stop()


def test_new_connections_resume_and_the_client_is_still_proven(pair):
    a, b, app, _ = pair()
    for i in range(5):
        assert _new_connection(a, f"/resume-{i}")[0] == 200
    assert len(app.requests) == 5
    # The first connection shakes hands in full; each later one resumes its ticket,
    # and B still knows the client's identity (counted by it): the certificate is in the session.
    assert _counts(a, "outbound") == (5, 4)
    assert _counts(b, "inbound") == (5, 4)


def test_a_cache_of_zero_issues_and_resumes_nothing(pair):
    # B issues no tickets: A asks for one for a few reads per connection, then gives up.
    a, b, _, _ = pair(b_extra={"MESHPROXY_TLS_SESSION_CACHE": "0"})
    for _ in range(3):
        assert _new_connection(a)[0] == 200
    assert _counts(a, "outbound") == (3, 0)
    assert _counts(b, "inbound") == (3, 0)


def test_another_expected_identity_at_the_same_address_is_refused_despite_a_cached_session(pair, authority,
                                                                                           tmp_path):
    from helpers.meshproxy import MeshProxy

    a, b, app, endpoints = pair()
    for _ in range(2):
        assert _new_connection(a)[0] == 200
    assert _counts(a, "outbound") == (2, 1)
    # Discovery now expects another identity at B's address (as a new endpoint:
    # the balancer keys endpoints by app address): the session cached for
    # "api" there is not offered, and B's certificate fails.
    mark = a.mark()
    _endpoints(endpoints, f"127.0.0.2:{app.port}", b.inbound_hostport, ROGUE)
    assert a.wait_line("endpoints updated", since=mark, timeout=10), a.tail()
    status, error = _new_connection(a)
    assert status == 502 and "hostname mismatch" in error and ROGUE in error, error
    assert _counts(a, "outbound") == (2, 1)
    # Discovery expects "api" again, but another proxy (rogue) now holds B's
    # port: A offers the cached ticket, which the newcomer cannot open, and the full handshake fails.
    mark = a.mark()
    _endpoints(endpoints, app.hostport, b.inbound_hostport, API)
    assert a.wait_line("endpoints updated", since=mark, timeout=10), a.tail()
    port = b.inbound[1]
    b.close()
    with MeshProxy(env=_identity(tmp_path / "r", authority, ROGUE), name="proxy-R",
                   inbound=f"127.0.0.1:{port}") as rogue:
        rogue.start()
        status, error = _new_connection(a)
        assert status == 502 and "hostname mismatch" in error and API in error, error
        assert rogue.metrics().get("tls_session_resumed_total", direction="inbound") == 0
    assert a.metrics().get("tls_session_resumed_total", direction="outbound") == 1


def test_rotation_on_either_side_starts_with_a_full_handshake(pair, authority, tmp_path):
    a, b, _, _ = pair()
    for _ in range(2):
        assert _new_connection(a)[0] == 200
    assert _counts(a, "outbound") == (2, 1)
    # A's own certificate changes: its cache goes with the old one (B would still accept the ticket).
    _identity(tmp_path / "a", authority, WEB)
    _wait_refreshed(a, 2)
    assert _new_connection(a)[0] == 200
    assert _counts(a, "outbound") == (3, 1)
    assert _new_connection(a)[0] == 200
    assert _counts(a, "outbound") == (4, 2)
    # B's certificate changes: new ticket keys, so A's cached ticket is refused and a full handshake follows.
    _identity(tmp_path / "b", authority, API)
    _wait_refreshed(b, 2)
    assert _new_connection(a)[0] == 200
    assert _counts(a, "outbound") == (5, 2)
    assert _new_connection(a)[0] == 200
    assert _counts(a, "outbound") == (6, 3)
    assert _counts(b, "inbound") == (6, 3)

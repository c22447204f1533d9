"""Who may steer an inbound connection with a transport header (Linkerd's rule), and to which ports.

A header is obeyed only inside mesh TLS with a verified client identity, or,
on a proxy without an identity, only from ``MESHPROXY_CLUSTER_NETWORKS``; it
may never name one of the proxy's own ports. A refused header closes the
connection with one log line naming the reason: nothing is relayed, and the
bytes are not detected as another protocol either (the default target, a
real server here, never sees a connection).
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest

from helpers.checks import assert_one_log_line, delta
from helpers.servers import TcpEchoServer

pytestmark = pytest.mark.timeout(90)

API = "api.default.serviceaccount.identity.cluster.local"
WEB = "web.default.serviceaccount.identity.cluster.local"
REFUSED = "transport header refused"


@pytest.fixture(scope="module")
def echo():
    server = TcpEchoServer(name="header-echo", bye=None)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bystander():
    """The inbound default target: a connection must never reach it when a header was refused."""
    server = TcpEchoServer(name="bystander", bye=None)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    from helpers.issuer import Issuer

    iss = Issuer(tmp_path_factory.mktemp("issuer"), [WEB, API]).start()
    yield iss
    iss.stop()


def _header(port: int, protocol: str = "opaque") -> bytes:
    from proxy.protocol import transport_header as th

    return th.encode(port, th.PROTO_OPAQUE if protocol == "opaque" else th.PROTO_HTTP, "test")


def _relays(sock, payload: bytes = b"ping through the header") -> bool:
    """The echo server behind the header answers ``payload``."""
    sock.sendall(payload)
    got = b""
    sock.settimeout(5)
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            return False
        got += chunk
    return got == payload


def _closed(sock, timeout: float = 5.0) -> bool:
    """The proxy closed the connection without sending a byte."""
    sock.settimeout(timeout)
    try:
        return sock.recv(100) == b""
    except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return True
    except TimeoutError:
        return False


def _assert_refused(mp, mark, sock, why: str, bystander) -> None:
    accepted = bystander.accept_count
    assert _closed(sock), "a refused transport header must close the connection"
    line = assert_one_log_line(mp, mark, REFUSED)
    assert why in line, line
    time.sleep(0.2)
    assert bystander.accept_count == accepted, "the connection was relayed to the default target"


def _plain(mp, data: bytes) -> socket.socket:
    sock = socket.create_connection(mp.inbound, timeout=10)
    sock.sendall(data)
    return sock


def test_plaintext_header_from_outside_the_cluster_networks_is_refused(make_proxy, echo, bystander):
    """Default cluster networks (private ranges) do not include loopback: a local process is not a peer proxy."""
    mp = make_proxy({"MESHPROXY_INBOUND_DEFAULT_TARGET": bystander.hostport})
    mark = mp.mark()
    with _plain(mp, _header(echo.address[1]) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") as sock:
        _assert_refused(mp, mark, sock, "outside MESHPROXY_CLUSTER_NETWORKS", bystander)


def test_plaintext_header_from_the_cluster_networks_is_obeyed_without_identity(make_proxy, echo):
    mp = make_proxy({"MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8"})
    with _plain(mp, _header(echo.address[1])) as sock:
        assert _relays(sock)


@pytest.mark.parametrize("listener", ["admin", "outbound", "inbound"])
def test_a_header_naming_the_proxys_own_port_is_refused(make_proxy, bystander, listener):
    mp = make_proxy({"MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8", "MESHPROXY_SHUTDOWN_ENDPOINT_ENABLED": "true",
                     "MESHPROXY_INBOUND_DEFAULT_TARGET": bystander.hostport})
    port = getattr(mp, listener)[1]
    before, mark = mp.metrics(), mp.mark()
    request = b"POST /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    with _plain(mp, _header(port, "http" if listener == "admin" else "opaque") + request) as sock:
        _assert_refused(mp, mark, sock, f"own {listener} port {port}", bystander)
    after = mp.metrics()
    assert delta(before, after, "tcp_open_total", direction="inbound", peer="src") == 1
    assert delta(before, after, "tcp_open_total", direction="inbound", peer="dst") == 0
    assert delta(before, after, "tcp_open_total", direction="outbound", peer="src") == 0
    assert mp.running(), mp.tail()
    assert not mp.wait_line("shutdown requested", since=mark, timeout=0.1)


def test_nested_headers_do_not_loop(make_proxy, echo, bystander):
    """One prefix of many headers each naming the inbound port: one connection, refused at the first."""
    mp = make_proxy({"MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8",
                     "MESHPROXY_INBOUND_DEFAULT_TARGET": bystander.hostport})
    nested = _header(mp.inbound[1]) * 50 + _header(echo.address[1]) + b"payload"
    assert len(nested) < 1000
    before, mark = mp.metrics(), mp.mark()
    with _plain(mp, nested) as sock:
        _assert_refused(mp, mark, sock, f"own inbound port {mp.inbound[1]}", bystander)
    time.sleep(0.3)
    after = mp.metrics()
    assert delta(before, after, "tcp_open_total", direction="inbound", peer="src") == 1, "the header looped"
    assert delta(before, after, "tcp_open_total", direction="inbound", peer="dst") == 0


# ---- with an identity: only mesh TLS with a verified client identity ------------------------------------


def _client_context(issuer, tmp: Path, with_certificate: bool) -> ssl.SSLContext:
    """What a peer proxy holds: the trust anchors, the transport ALPN, and (or not) a leaf for WEB."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from proxy.identity import ca

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(issuer.anchors))
    ctx.set_alpn_protocols(["transport.l5d.io/v1"])
    if with_certificate:
        authority, _ = ca.load_issuer(issuer.dir)
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = ca.sign_leaf(authority, key.public_key(), WEB, [x509.DNSName(WEB)], dt.timedelta(hours=1))
        (tmp / "client.pem").write_bytes(ca.key_pem(key) + ca.cert_pem(leaf) + ca.cert_pem(authority.cert))
        ctx.load_cert_chain(str(tmp / "client.pem"))
    return ctx


@pytest.fixture(scope="module")
def meshed(issuer, bystander, tmp_path_factory):
    """A proxy with an identity; loopback is even listed as a cluster network, which must not matter."""
    from helpers.meshproxy import MeshProxy

    tmp = tmp_path_factory.mktemp("meshed")
    env = {**issuer.env(API), "MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8",
           "MESHPROXY_INBOUND_DEFAULT_TARGET": bystander.hostport}
    mp = MeshProxy(env=env, name="proxy-id", log_path=tmp / "proxy.log")
    try:
        mp.start()
        yield mp, tmp
    finally:
        mp.close()


def test_plaintext_header_to_a_proxy_with_an_identity_is_refused(meshed, echo, bystander):
    mp, _ = meshed
    mark = mp.mark()
    with _plain(mp, _header(echo.address[1])) as sock:
        _assert_refused(mp, mark, sock, "plaintext", bystander)


def test_mesh_tls_without_a_client_certificate_cannot_send_a_header(meshed, issuer, echo, bystander):
    mp, tmp = meshed
    ctx = _client_context(issuer, tmp, with_certificate=False)
    mark = mp.mark()
    with ctx.wrap_socket(socket.create_connection(mp.inbound, timeout=10), server_hostname=API) as tls:
        assert tls.selected_alpn_protocol() == "transport.l5d.io/v1"
        tls.sendall(_header(echo.address[1]) + b"payload")
        _assert_refused(mp, mark, tls, "without a verified client identity", bystander)


def test_mesh_tls_with_a_verified_client_identity_is_obeyed(meshed, issuer, echo):
    mp, tmp = meshed
    ctx = _client_context(issuer, tmp, with_certificate=True)
    with ctx.wrap_socket(socket.create_connection(mp.inbound, timeout=10), server_hostname=API) as tls:
        tls.sendall(_header(echo.address[1]))
        assert _relays(tls)


def test_mesh_tls_header_naming_the_admin_port_is_refused(meshed, issuer, bystander):
    mp, tmp = meshed
    ctx = _client_context(issuer, tmp, with_certificate=True)
    mark = mp.mark()
    with ctx.wrap_socket(socket.create_connection(mp.inbound, timeout=10), server_hostname=API) as tls:
        tls.sendall(_header(mp.admin[1], "http") + b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
        _assert_refused(mp, mark, tls, f"own admin port {mp.admin[1]}", bystander)

"""What crosses the meshed hop besides plain requests: upgrades, CONNECT through discovery, endpoint protocol hints.

Proxy A (outbound) learns from its endpoints file which apps are behind
proxy B; the hop is plaintext (B trusts 127.0.0.0/8) or mutual TLS (identities
from the test issuer). Two apps of each kind listen on different ports
behind the same B and tag what they send, so a test sees which app each
connection reached and that the other one got nothing.

Everything runs in a network namespace the module creates (loopback, real
iptables): the opaque-hint tests need a redirected connection, whose
original destination is the only thing that tells the outbound side where
raw bytes go.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from helpers.issuer import Issuer, identity_name
from helpers.matrix_apps import Counters, H2App, StreamApp
from helpers.netns import NetNs, NsMeshProxy
from helpers.servers import ServerConn, TcpServer

pytestmark = pytest.mark.timeout(90)

WEB = identity_name("web")
API = identity_name("api")
HINT_IP = "127.0.0.6"  # redirected to the outbound side of the proxy pair without the server-first probe
HOPS = ("plain", "mtls")


class TagWs:
    """A WebSocket echo that prefixes every answer with its tag."""

    def __init__(self, tag: str) -> None:
        from websockets.sync.server import serve

        self.tag = tag
        self.counts = Counters()
        self.server = serve(self._handle, "127.0.0.1", 0, compression=None)
        self.port = self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handle(self, ws: Any) -> None:
        self.counts.add("requests", ws.request.path)
        for message in ws:
            ws.send(f"{self.tag}:{message}")

    def stop(self) -> None:
        self.server.shutdown()


class TagUpgrade(TcpServer):
    """HTTP/1.1 that switches to a made-up protocol (``Upgrade: tag-echo/1``): 101, its tag, then an echo."""

    def __init__(self, tag: str, **kwargs: Any) -> None:
        self.tag = tag
        self.counts = Counters()
        super().__init__(**kwargs)

    def handle(self, conn: ServerConn) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.sock.recv(4096)
            if not data:
                return
            head += data
        self.counts.add("requests", head.split(b"\r\n", 1)[0].decode())
        if b"upgrade: tag-echo/1" not in head.lower():
            conn.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        conn.send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: tag-echo/1\r\n\r\n"
                  + self.tag.encode() + b"\n")
        rest = head.split(b"\r\n\r\n", 1)[1]
        if rest:
            conn.send(rest)
        while True:
            data = conn.sock.recv(65536)
            if not data:
                return
            conn.send(data)


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ns = NetNs("mpf").create()
        self.proxies: dict[str, NsMeshProxy] = {}
        self.stoppers: list[Any] = []

    def start(self) -> None:
        with self.ns:
            self.issuer = Issuer(self.tmp / "issuer", [WEB, API]).start()
            self.stoppers.append(self.issuer.stop)
            self.ws = {tag: TagWs(tag) for tag in ("one", "two")}
            self.up = {tag: TagUpgrade(tag, name=f"upgrade-{tag}") for tag in ("one", "two")}
            self.tunnel = {tag: StreamApp(banner=f"endpoint {tag}\r\n".encode(), name=f"tunnel-{tag}")
                           for tag in ("one", "two")}
            self.banner = StreamApp(banner=b"220 hinted banner\r\n", name="banner")
            self.h2only = H2App(name="h2-only")
            for app in [*self.ws.values(), *self.up.values(), *self.tunnel.values(), self.banner, self.h2only]:
                self.stoppers.append(app.stop)
            b_plain = NsMeshProxy(self.ns, env={"MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8"}, name="B-plain",
                                  log_path=self.tmp / "b-plain.log")
            b_tls = NsMeshProxy(self.ns, env=self.issuer.env(API), name="B-mtls", log_path=self.tmp / "b-mtls.log")
            # The hint pair: no server-first probe, so only the hint can make a server-first app answer at once.
            no_probe = {"MESHPROXY_SERVER_FIRST_PROBE": "0", "MESHPROXY_DETECT_TIMEOUT": "3s"}
            b_hint = NsMeshProxy(self.ns, env={"MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8", **no_probe},
                                 name="B-hint", log_path=self.tmp / "b-hint.log")
            self._endpoints("plain", b_plain, None)
            self._endpoints("mtls", b_tls, API)
            self._hint_endpoints(b_hint)
            a_plain = NsMeshProxy(self.ns, env={"MESHPROXY_DESTINATION": f"file://{self.tmp / 'plain.yaml'}"},
                                  name="A-plain", log_path=self.tmp / "a-plain.log")
            a_tls = NsMeshProxy(self.ns, env={**self.issuer.env(WEB),
                                              "MESHPROXY_DESTINATION": f"file://{self.tmp / 'mtls.yaml'}"},
                                name="A-mtls", log_path=self.tmp / "a-mtls.log")
            a_hint = NsMeshProxy(self.ns, env={"MESHPROXY_DESTINATION": f"file://{self.tmp / 'hint.yaml'}",
                                               **no_probe}, name="A-hint", log_path=self.tmp / "a-hint.log")
            self.proxies = {"plain": a_plain, "mtls": a_tls, "B-plain": b_plain, "B-mtls": b_tls,
                            "hint": a_hint, "B-hint": b_hint}
            for mp in self.proxies.values():
                mp.start(wait_ready=False)
            for mp in self.proxies.values():
                mp.wait_ready(30)
            self.ns.exempt_proxies()
            self.ns.redirect(HINT_IP, a_hint.outbound[1])

    def _endpoints(self, hop: str, peer: NsMeshProxy, identity: str | None) -> None:
        ident = f"        identity: {identity}\n" if identity else ""

        def service(name: str, ports: list[int], protocol: str | None = None, meshed: bool = True) -> str:
            text = f"  {name}:\n    endpoints:\n"
            for port in ports:
                text += f"      - address: 127.0.0.1:{port}\n"
                if meshed:
                    text += f"        proxy: {peer.inbound_hostport}\n" + ident
                if protocol:
                    text += f"        protocol: {protocol}\n"
            return text

        body = "services:\n"
        for tag in ("one", "two"):
            body += service(f"ws-{tag}.mesh:80", [self.ws[tag].port])
            body += service(f"up-{tag}.mesh:80", [self.up[tag].port])
            body += service(f"tunnel-{tag}.mesh:7000", [self.tunnel[tag].port])
        body += service("tunnel.mesh:7000", [self.tunnel["one"].port, self.tunnel["two"].port])
        body += service("h2only.mesh:80", [self.h2only.port], protocol="h2")
        body += service("h2only-direct.mesh:80", [self.h2only.port], protocol="h2", meshed=False)
        (self.tmp / f"{hop}.yaml").write_text(body)

    def _hint_endpoints(self, peer: NsMeshProxy) -> None:
        self.hinted_port, self.unhinted_port = 7101, 7102
        lines = ["services:"]
        for name, port, hint in (("hinted", self.hinted_port, True), ("unhinted", self.unhinted_port, False)):
            lines += [f"  {name}.mesh:{port}:", f"    addresses: [{HINT_IP}:{port}]", "    endpoints:",
                      f"      - address: 127.0.0.1:{self.banner.port}", f"        proxy: {peer.inbound_hostport}"]
            if hint:
                lines.append("        protocol: opaque")
        (self.tmp / "hint.yaml").write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        for mp in self.proxies.values():
            mp.close()
        for stop in self.stoppers:
            try:
                stop()
            except Exception as err:
                print(f"teardown: {err!r}")
        self.ns.delete()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    m = Mesh(tmp_path_factory.mktemp("mesh-features"))
    try:
        m.start()
        yield m
    finally:
        m.stop()


@pytest.fixture(autouse=True)
def _inside(mesh):
    marks = {name: mp.mark() for name, mp in mesh.proxies.items()}
    with mesh.ns:
        yield
    for name, mp in mesh.proxies.items():
        assert mp.running(), f"{name} exited;\n{mp.tail()}"
        bad = [line for line in mp.lines(marks[name]) if "Traceback" in line]
        assert not bad, f"{name} wrote a traceback:\n" + "\n".join(mp.lines(marks[name])[-40:])


def _recv_line(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while not out.endswith(b"\n"):
        data = sock.recv(1)
        if not data:
            raise ConnectionError(f"EOF after {out!r}")
        out += data
    return out


def _head(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while b"\r\n\r\n" not in out:
        data = sock.recv(1)
        if not data:
            raise ConnectionError(f"EOF after {out!r}")
        out += data
    return out


# ---------------------------------------------------------------------------
# upgrades and CONNECT reach the right app port


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("tag", ["one", "two"])
def test_websocket_crosses_the_hop_to_its_own_app(mesh, hop, tag):
    from websockets.sync.client import connect

    other = "two" if tag == "one" else "one"
    before = {t: len(mesh.ws[t].counts.requests) for t in ("one", "two")}
    sock = socket.create_connection(mesh.proxies[hop].outbound, timeout=10)
    with connect(f"ws://ws-{tag}.mesh/chat", sock=sock, open_timeout=10, compression=None) as ws:
        for i in range(5):
            ws.send(f"hello {i}")
            assert ws.recv(timeout=10) == f"{tag}:hello {i}"
    assert len(mesh.ws[tag].counts.requests) == before[tag] + 1
    assert len(mesh.ws[other].counts.requests) == before[other], "the other app got this connection's traffic"


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("tag", ["one", "two"])
def test_other_upgrades_cross_the_hop_to_their_own_app(mesh, hop, tag):
    other = "two" if tag == "one" else "one"
    before = {t: len(mesh.up[t].counts.requests) for t in ("one", "two")}
    with socket.create_connection(mesh.proxies[hop].outbound, timeout=10) as sock:
        sock.sendall(f"GET /switch HTTP/1.1\r\nHost: up-{tag}.mesh\r\nConnection: Upgrade\r\n"
                     "Upgrade: tag-echo/1\r\n\r\n".encode())
        head = _head(sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert _recv_line(sock) == f"{tag}\n".encode()
        payload = bytes(range(256)) * 64
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            data = sock.recv(65536)
            assert data, f"EOF after {len(got)} echoed bytes"
            got += data
        assert got == payload
    assert len(mesh.up[tag].counts.requests) == before[tag] + 1
    assert len(mesh.up[other].counts.requests) == before[other]


def _connect_tunnel(proxy: NsMeshProxy, authority: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(proxy.outbound, timeout=10)
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    head = _head(sock)
    return sock, head


@pytest.mark.parametrize("hop", HOPS)
@pytest.mark.parametrize("tag", ["one", "two"])
def test_connect_to_a_service_name_reaches_its_endpoint_through_the_hop(mesh, hop, tag):
    other = "two" if tag == "one" else "one"
    before = {t: mesh.tunnel[t].accept_count for t in ("one", "two")}
    peer = mesh.proxies["B-plain" if hop == "plain" else "B-mtls"]
    peer_before = peer.metrics().get("tcp_open_total", direction="inbound", peer="src")
    sock, head = _connect_tunnel(mesh.proxies[hop], f"tunnel-{tag}.mesh:7000")
    with sock:
        assert head.startswith(b"HTTP/1.1 200"), head
        assert _recv_line(sock) == f"endpoint {tag}\r\n".encode()
        sock.sendall(b"ECHO\nthrough the tunnel")
        got = b""
        while len(got) < len(b"through the tunnel"):
            data = sock.recv(4096)
            assert data
            got += data
        assert got == b"through the tunnel"
    assert mesh.tunnel[tag].accept_count == before[tag] + 1
    assert mesh.tunnel[other].accept_count == before[other]
    assert peer.metrics().get("tcp_open_total", direction="inbound", peer="src") > peer_before, \
        "the tunnel did not go through the peer proxy"


@pytest.mark.parametrize("hop", HOPS)
def test_connect_tunnels_are_balanced_over_the_service_endpoints(mesh, hop):
    tunnels = []
    seen: Counter[str] = Counter()
    try:
        # Held open together: each pick sees the others pending, as a balancer should.
        for _ in range(12):
            sock, head = _connect_tunnel(mesh.proxies[hop], "tunnel.mesh:7000")
            tunnels.append(sock)
            assert head.startswith(b"HTTP/1.1 200"), head
            seen[_recv_line(sock).decode().strip()] += 1
    finally:
        for sock in tunnels:
            sock.close()
    assert set(seen) == {"endpoint one", "endpoint two"}, seen
    assert min(seen.values()) >= 3, f"12 concurrent tunnels split {dict(seen)}"


# ---------------------------------------------------------------------------
# endpoint protocol hints


def _first_bytes_after(addr: tuple[str, int], timeout: float) -> tuple[bytes, float]:
    sock = socket.create_connection(addr, timeout=10)
    start = time.monotonic()
    try:
        sock.settimeout(timeout)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            data = b""
        return data, time.monotonic() - start
    finally:
        sock.close()


def test_opaque_hint_makes_a_server_first_app_answer_at_once_through_the_hop(mesh):
    """No probe, no opaque-ports entry: only the endpoint's ``protocol: opaque`` can make the banner come at once."""
    data, elapsed = _first_bytes_after((HINT_IP, mesh.hinted_port), 2.0)
    assert data == b"220 hinted banner\r\n", (data, elapsed)
    assert elapsed < 0.5, f"banner after {elapsed:.2f}s"


def test_without_the_hint_the_same_app_waits_for_detection(mesh):
    """The control of the test above: the same app and hop without the hint (and without the probe) is not
    heard before the client speaks, so the hinted test measures the hint."""
    data, elapsed = _first_bytes_after((HINT_IP, mesh.unhinted_port), 1.0)
    assert data == b"", f"banner came after {elapsed:.2f}s without the hint or the probe"


def test_opaque_hint_travels_as_opaque_transport_on_both_proxies(mesh):
    """Bytes that look like broken HTTP reach the app exactly as sent: neither proxy parsed them."""
    a, b = mesh.proxies["hint"], mesh.proxies["B-hint"]
    before_a = a.metrics().get("request_total", direction="outbound")
    before_b = b.metrics().get("request_total", direction="inbound")
    broken = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    with socket.create_connection((HINT_IP, mesh.hinted_port), timeout=10) as sock:
        assert _recv_line(sock, 2.0) == b"220 hinted banner\r\n"
        sock.sendall(b"ECHO\n" + broken)
        got = b""
        sock.settimeout(10)
        while len(got) < len(broken):
            data = sock.recv(4096)
            assert data, f"closed after {got!r}"
            got += data
    assert got == broken
    assert mesh.banner.counts.requests[-1] == "ECHO"
    assert a.metrics().get("request_total", direction="outbound") == before_a
    assert b.metrics().get("request_total", direction="inbound") == before_b


@pytest.mark.parametrize("service", ["h2only-direct.mesh", "h2only.mesh"], ids=["unmeshed", "meshed"])
@pytest.mark.parametrize("hop", HOPS)
def test_h2_hint_carries_http1_clients_over_http2_to_the_endpoint(mesh, hop, service):
    """The app speaks only HTTP/2: an HTTP/1 client reaches it because the endpoint says ``protocol: h2``."""
    app = mesh.h2only
    before = len(app.counts.requests)
    with socket.create_connection(mesh.proxies[hop].outbound, timeout=10) as sock:
        body = b"x" * 3000
        sock.sendall(f"POST /up-down?n=5 HTTP/1.1\r\nHost: {service}\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
        sock.settimeout(10)
        got = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            got += data
    assert got.startswith(b"HTTP/1.1 200"), got[:500]
    assert b"x-up-length: 3000" in got.lower()
    assert len(app.counts.requests) == before + 1, "the HTTP/2-only app did not see the request"

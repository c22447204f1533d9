"""Real iptables interception: the proxy learns each connection's original destination (SO_ORIGINAL_DST).

Everything runs inside a network namespace created by the test (loopback
only): nat OUTPUT rules redirect the app's connections to the proxy's
listeners, and the proxy, running with its own group id, is exempted from the
redirect by ``-m owner --gid-owner`` (as iptables-init does by uid), so its
upstream connections are not looped back into it. IPv4 and IPv6 both.
Needs root, as CI has.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers.metrics import parse as parse_metrics

PROXY_GID = 2102
HTTP_PORT = 18080  # the "remote service" the app calls (redirected to outbound)
TCP_PORT = 6379  # in the default opaque-port list: relayed without detection
APP_PORT = 18081  # the local app behind the inbound side
DB_PORT = 5432  # a "cluster IP" port that discovery maps to two endpoints (opaque: balanced per connection)
DB_ENDPOINTS = (15432, 15433)
INBOUND_REDIRECT_PORT = 18082  # connections to it are redirected to the inbound listener

pytestmark = pytest.mark.timeout(90)

SERVER = textwrap.dedent(
    """
    import json, socket, socketserver, sys, threading
    class Http(socketserver.StreamRequestHandler):
        def handle(self):
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                headers = {}
                while True:
                    h = self.rfile.readline()
                    if h in (b"\\r\\n", b""):
                        break
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                me = self.connection.getsockname()
                body = json.dumps({"line": line.decode().strip(), "host": headers.get("host"),
                                   "server": [me[0], me[1]]}).encode()
                self.wfile.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: %d\\r\\n\\r\\n" % len(body) + body)
    class Tagged(socketserver.BaseRequestHandler):
        def handle(self):
            # Server speaks first (as PostgreSQL does): names itself, then echoes.
            self.request.sendall(b"endpoint=%d\\n" % self.request.getsockname()[1])
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)
    class Echo(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                data = self.request.recv(65536)
                if not data:
                    self.request.shutdown(socket.SHUT_WR)
                    return
                self.request.sendall(data)
    class V6(socketserver.ThreadingTCPServer):
        address_family = socket.AF_INET6
        allow_reuse_address = True
        daemon_threads = True
        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()
    for port, handler in ((HTTP_PORT, Http), (APP_PORT, Http), (TCP_PORT, Echo), (15432, Tagged), (15433, Tagged)):
        srv = V6(("::", port), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("up", flush=True)
    threading.Event().wait()
    """
).replace("HTTP_PORT", str(HTTP_PORT)).replace("APP_PORT", str(APP_PORT)).replace("TCP_PORT", str(TCP_PORT))


def _ns(ns: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True, text=True, **kw)


def _rules(ns: str, tool: str) -> None:
    for rule in (
        # The proxy's own connections (its group) go where they were addressed.
        ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-m", "owner", "--gid-owner", str(PROXY_GID), "-j", "RETURN"],
        ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", str(HTTP_PORT), "-j", "REDIRECT", "--to-ports", "4140"],
        ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", str(TCP_PORT), "-j", "REDIRECT", "--to-ports", "4140"],
        ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", str(DB_PORT), "-j", "REDIRECT", "--to-ports", "4140"],
        ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", str(INBOUND_REDIRECT_PORT), "-j", "REDIRECT",
         "--to-ports", "4143"],
    ):
        _ns(ns, tool, *rule)


@pytest.fixture(scope="module")
def mesh_ns(tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.fail("interception tests need root and iptables (the README's test command installs iptables)")
    ns = f"mpt-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen] = []
    tmp = tmp_path_factory.mktemp("interception")
    try:
        _ns(ns, "ip", "link", "set", "lo", "up")
        _rules(ns, "iptables")
        _rules(ns, "ip6tables")
        servers = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER],
                                   stdout=subprocess.PIPE, text=True)
        procs.append(servers)
        assert servers.stdout is not None and servers.stdout.readline().strip() == "up"
        endpoints = tmp / "endpoints.yaml"
        endpoints.write_text(
            "services:\n"
            f"  db.test:{DB_PORT}:\n"
            f"    addresses: [127.0.0.1:{DB_PORT}]\n"
            "    endpoints:\n" + "".join(f"      - address: 127.0.0.1:{p}\n" for p in DB_ENDPOINTS)
        )
        env = dict(os.environ, MESHPROXY_DESTINATION=f"file://{endpoints}",
                   MESHPROXY_OUTBOUND_LISTEN="[::]:4140", MESHPROXY_INBOUND_LISTEN="[::]:4143",
                   MESHPROXY_ADMIN_LISTEN="127.0.0.1:4191", MESHPROXY_INBOUND_FORWARD_HOST="127.0.0.1",
                   MESHPROXY_LOG_FORMAT="json")
        log = open(tmp / "proxy.log", "w")
        proxy = subprocess.Popen(
            ["ip", "netns", "exec", ns, "setpriv", f"--regid={PROXY_GID}", "--clear-groups",
             sys.executable, "-m", "proxy", "run"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).parents[2]),
        )
        procs.append(proxy)
        deadline = time.monotonic() + 20
        while True:
            probe = subprocess.run(["ip", "netns", "exec", ns, "curl", "-sf", "http://127.0.0.1:4191/ready"],
                                   capture_output=True, text=True)
            if probe.returncode == 0:
                break
            assert proxy.poll() is None, (tmp / "proxy.log").read_text()
            assert time.monotonic() < deadline, "proxy not ready in 20 s"
            time.sleep(0.1)
        yield ns, tmp / "proxy.log"
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _curl(ns: str, *args: str) -> dict:
    out = _ns(ns, "curl", "-sS", "--max-time", "10", *args).stdout
    return json.loads(out)


def _metrics(ns: str) -> str:
    return _ns(ns, "curl", "-sS", "http://127.0.0.1:4191/metrics").stdout


def _value(metrics: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s series whose labels include ``labels``."""
    return parse_metrics(metrics).get(name, **labels)


def test_outbound_ipv4_original_destination_wins_over_host(mesh_ns):
    ns, _ = mesh_ns
    before = _value(_metrics(ns), "request_total", direction="outbound")
    got = _curl(ns, "-H", "Host: elsewhere.invalid:9", f"http://127.0.0.1:{HTTP_PORT}/v4")
    # The app reached its real destination although Host named another one:
    # the original destination comes first.
    assert got["line"] == "GET /v4 HTTP/1.1"
    assert got["host"] == "elsewhere.invalid:9"
    assert got["server"][1] == HTTP_PORT
    after = _value(_metrics(ns), "request_total", direction="outbound")
    assert after == before + 1, "the request did not pass through the outbound proxy"


def test_outbound_ipv6_original_destination(mesh_ns):
    ns, _ = mesh_ns
    before = _value(_metrics(ns), "request_total", direction="outbound")
    got = _curl(ns, f"http://[::1]:{HTTP_PORT}/v6")
    assert got["line"] == "GET /v6 HTTP/1.1"
    assert got["server"][0] == "::1"
    assert _value(_metrics(ns), "request_total", direction="outbound") == before + 1


def test_outbound_opaque_port_relays_raw_bytes(mesh_ns):
    ns, _ = mesh_ns
    script = textwrap.dedent(
        f"""
        import socket
        s = socket.create_connection(("127.0.0.1", {TCP_PORT}), timeout=10)
        payload = bytes(range(256)) * 4096
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        print(got == payload, len(got))
        """
    )
    before = _value(_metrics(ns), "tcp_open_total", direction="outbound", peer="dst")
    out = _ns(ns, sys.executable, "-c", script).stdout.split()
    assert out == ["True", str(256 * 4096)]
    assert _value(_metrics(ns), "tcp_open_total", direction="outbound", peer="dst") == before + 1


def test_inbound_forwards_to_original_port_on_forward_host(mesh_ns):
    ns, _ = mesh_ns
    # Connections to INBOUND_REDIRECT_PORT are redirected to the inbound
    # listener, which forwards to 127.0.0.1 at the original port; nothing
    # listens there, so the proxy answers 502 naming the refusal: the proof
    # that it used the original destination port.
    out = _ns(ns, "curl", "-sS", "-i", "--max-time", "10", f"http://127.0.0.1:{INBOUND_REDIRECT_PORT}/in").stdout
    assert out.startswith("HTTP/1.1 502")
    assert "l5d-proxy-error: connection refused" in out
    before = _value(_metrics(ns), "request_total", direction="inbound")
    assert before >= 1


def test_proxy_does_not_loop_its_own_connections(mesh_ns):
    ns, log = mesh_ns
    for i in range(20):
        got = _curl(ns, f"http://127.0.0.1:{HTTP_PORT}/n{i}")
        assert got["line"] == f"GET /n{i} HTTP/1.1"
    metrics = _metrics(ns)
    # Each upstream connection went to the server, none came back into the proxy.
    assert _value(metrics, "tcp_open_total", direction="inbound", peer="src") <= 2
    assert "loop" not in log.read_text().lower()


def test_opaque_connections_to_a_discovered_address_are_balanced_per_connection(mesh_ns):
    ns, _ = mesh_ns
    script = textwrap.dedent(
        f"""
        import socket
        seen = []
        for i in range(12):
            s = socket.create_connection(("127.0.0.1", {DB_PORT}), timeout=10)
            f = s.makefile("rb")
            tag = f.readline().decode().strip()
            s.sendall(b"ping %d\\n" % i)
            assert f.readline() == b"ping %d\\n" % i
            s.close()
            seen.append(tag)
        print(" ".join(seen))
        """
    )
    before = _value(_metrics(ns), "tcp_open_total", direction="outbound", peer="dst")
    tags = _ns(ns, sys.executable, "-c", script).stdout.split()
    assert len(tags) == 12
    # The app dialled one address; discovery mapped it to two endpoints and
    # each connection went to one of them.
    assert set(tags) == {f"endpoint={p}" for p in DB_ENDPOINTS}, tags
    assert _value(_metrics(ns), "tcp_open_total", direction="outbound", peer="dst") == before + 12

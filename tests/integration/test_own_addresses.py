"""Nothing reaches the proxy's own listeners through its relays, under any spelling of its addresses.

The proxy runs with ``POST /shutdown`` enabled, so a request that reached the
admin port through a relay would stop it: every refusal below is also the
proof that the admin never saw the request. Loops are counted with
``tcp_open_total``: one refused request is one accepted client connection and
no upstream connection. The pod's own IP is exercised twice: as the address
of this machine's interface (Host header), and as the original destination of
a connection redirected by real iptables rules in a network namespace.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers.checks import assert_one_log_line, assert_proxy_error, delta
from helpers.clients import RawClient, clean_env
from helpers.h2client import H2Client
from helpers.metrics import parse as parse_metrics
from helpers.ports import free_port

pytestmark = pytest.mark.timeout(120)


def _host_ip() -> str | None:
    """This machine's own non-loopback address (a pod's IP), if it has one."""
    for probe in ("192.0.2.1", "10.255.255.254", "8.8.8.8"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.connect((probe, 9))  # UDP: nothing is sent, the kernel only picks the source address
            ip = sock.getsockname()[0]
        except OSError:
            continue
        finally:
            sock.close()
        if not ip.startswith("127."):
            return ip
    return None


def _name_for_loopback() -> str:
    """A DNS name (not the word localhost) that the resolver maps to a loopback address."""
    name = socket.gethostname()
    try:
        if socket.gethostbyname(name).startswith("127."):
            return name
    except OSError:
        pass
    return "localhost"


HOST_IP = _host_ip()
LOOPBACK_NAME = _name_for_loopback()
# Every way to spell "this machine" that reaches a listener bound to 127.0.0.1 or 0.0.0.0.
LOOPBACK_SPELLINGS = ["127.0.0.1", "127.1", "127.0.1", "0.0.0.0", "[::ffff:127.0.0.1]", "localhost", "2130706433",
                      "0x7f.1", LOOPBACK_NAME]
# Listeners bound to a wildcard are reached through the machine's own IP too.
WILDCARD_SPELLINGS = LOOPBACK_SPELLINGS + ([HOST_IP] if HOST_IP else [])


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """One proxy with the shutdown endpoint on, listeners shaped like the defaults, and discovery
    naming its own inbound (allowed: a pod calling its own service) and its own admin (refused)."""
    from helpers.meshproxy import MeshProxy
    from helpers.upstream import HttpUpstream

    tmp: Path = tmp_path_factory.mktemp("own")
    app = HttpUpstream(name="own-app")
    admin, inbound, outbound = free_port(), free_port(), free_port()
    endpoints = tmp / "endpoints.yaml"
    endpoints.write_text(
        "services:\n"
        "  self.mesh:80:\n"
        "    endpoints:\n"
        f"      - address: {app.hostport}\n"
        f"        proxy: 127.0.0.1:{inbound}\n"
        "        protocol: http1\n"
        "  admin.mesh:80:\n"
        "    endpoints:\n"
        f"      - address: 127.0.0.1:{admin}\n"
        f"        proxy: 127.0.0.1:{admin}\n"
        "        protocol: http1\n"
    )
    env = {
        "MESHPROXY_SHUTDOWN_ENDPOINT_ENABLED": "true",
        "MESHPROXY_ADMIN_LISTEN": f"0.0.0.0:{admin}",
        "MESHPROXY_INBOUND_LISTEN": f"0.0.0.0:{inbound}",
        "MESHPROXY_OUTBOUND_LISTEN": f"127.0.0.1:{outbound}",
        "MESHPROXY_INBOUND_DEFAULT_TARGET": app.hostport,
        "MESHPROXY_DESTINATION": f"file://{endpoints}",
        # The meshed hop to itself is plaintext on loopback: the inbound side must
        # trust a transport header from 127.0.0.0/8 (no identity here).
        "MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8",
    }
    mp = MeshProxy(env=env, name="proxy-own", log_path=tmp / "proxy.log")
    try:
        mp.start()
        yield mp, app, {"admin": admin, "inbound": inbound, "outbound": outbound}
    finally:
        mp.close()
        app.stop()


def _authority(spelling: str, port: int) -> str:
    return f"{spelling}:{port}"


def _absolute(spelling: str, port: int, path: str) -> str:
    return f"http://{spelling}:{port}{path}"


def _assert_refused(mp, mark, before, resp, listener: str, status: int = 403) -> None:
    """The clear refusal: status, l5d-proxy-error naming the listener, one log line, no loop, proxy alive."""
    reason = assert_proxy_error(resp, status)
    assert f"own {listener} listener" in reason, reason
    assert_one_log_line(mp, mark, reason)
    after = mp.metrics()
    assert delta(before, after, "tcp_open_total", direction="outbound", peer="src") == 1, "a loop through outbound"
    assert delta(before, after, "tcp_open_total", direction="inbound", peer="src") == 0, "a loop through inbound"
    assert delta(before, after, "tcp_open_total", direction="outbound", peer="dst") == 0, "an upstream connection"
    assert mp.running(), f"the proxy stopped: the admin saw the request;\n{mp.tail()}"
    assert not mp.wait_line("shutdown requested", since=mark, timeout=0.1)


@pytest.mark.parametrize("via", ["host", "dst-override", "absolute-form"])
@pytest.mark.parametrize("spelling", WILDCARD_SPELLINGS)
def test_outbound_never_reaches_the_admin_port(own, spelling, via):
    mp, _, ports = own
    port = ports["admin"]
    if via == "host":
        line, headers = "/shutdown", [("Host", _authority(spelling, port))]
    elif via == "dst-override":
        line, headers = "/shutdown", [("Host", "admin.example"), ("l5d-dst-override", _authority(spelling, port))]
    else:
        line, headers = _absolute(spelling, port, "/shutdown"), [("Host", _authority(spelling, port))]
    before, mark = mp.metrics(), mp.mark()
    with RawClient(mp.outbound) as client:
        resp = client.exchange("POST", line, headers + [("Content-Length", "0")])
    _assert_refused(mp, mark, before, resp, "admin")


@pytest.mark.parametrize("listener,spellings", [("outbound", LOOPBACK_SPELLINGS), ("inbound", WILDCARD_SPELLINGS)])
def test_outbound_never_reaches_its_own_data_listeners(own, listener, spellings):
    mp, _, ports = own
    for spelling in spellings:
        before, mark = mp.metrics(), mp.mark()
        with RawClient(mp.outbound) as client:
            resp = client.exchange("GET", "/", [("Host", _authority(spelling, ports[listener]))])
        _assert_refused(mp, mark, before, resp, listener)


@pytest.mark.parametrize("spelling", ["127.1", "0.0.0.0", "localhost", "[::ffff:127.0.0.1]"])
def test_connect_to_the_admin_port_is_refused(own, spelling):
    mp, _, ports = own
    authority = _authority(spelling, ports["admin"])
    before, mark = mp.metrics(), mp.mark()
    with RawClient(mp.outbound) as client:
        client.request("CONNECT", authority, [("Host", authority)])
        resp = client.final(method="CONNECT")
        _assert_refused(mp, mark, before, resp, "admin")
        # No tunnel was opened: nothing sent now can reach the admin.
        try:
            client.send(b"POST /shutdown HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass
    time.sleep(0.3)
    assert mp.running(), mp.tail()


@pytest.mark.parametrize("spelling", ["127.0.0.1", "127.0.1", "localhost", "2130706433"])
def test_http2_authority_naming_the_admin_port_is_refused(own, spelling):
    mp, _, ports = own
    before, mark = mp.metrics(), mp.mark()
    with H2Client(mp.outbound) as client:
        resp = client.exchange("POST", "/shutdown", _authority(spelling, ports["admin"]), body=b"")
    assert resp.status == 403, resp.summary()
    reason = resp.header("l5d-proxy-error")
    assert reason and "own admin listener" in reason, resp.summary()
    assert_one_log_line(mp, mark, reason)
    after = mp.metrics()
    assert delta(before, after, "tcp_open_total", direction="outbound", peer="src") == 1
    assert delta(before, after, "tcp_open_total", direction="outbound", peer="dst") == 0
    assert mp.running(), mp.tail()


def test_a_meshed_endpoint_may_be_this_proxys_own_inbound(own):
    """Linkerd's exception: a pod calling its own service through the mesh crosses its own inbound."""
    mp, app, _ = own
    before = mp.metrics()
    with RawClient(mp.outbound) as client:
        resp = client.exchange("POST", "/echo", [("Host", "self.mesh:80")], b"to myself")
    assert resp.status == 200 and resp.data == b"to myself", (resp.status, resp.headers, resp.data[:200])
    after = mp.metrics()
    assert delta(before, after, "request_total", direction="inbound") == 1
    assert delta(before, after, "tcp_open_total", direction="inbound", peer="src") <= 1  # one hop, no loop


def test_a_meshed_endpoint_may_never_be_the_admin(own):
    mp, _, _ = own
    before, mark = mp.metrics(), mp.mark()
    with RawClient(mp.outbound) as client:
        resp = client.exchange("POST", "/shutdown", [("Host", "admin.mesh:80"), ("Content-Length", "0")])
    _assert_refused(mp, mark, before, resp, "admin")


def test_the_inbound_listener_never_forwards_to_the_proxy_itself(make_proxy):
    """A default target (or forward port) that is one of the proxy's own ports: HTTP gets 403, opaque is closed."""
    admin = free_port()
    mp = make_proxy({"MESHPROXY_SHUTDOWN_ENDPOINT_ENABLED": "true", "MESHPROXY_ADMIN_LISTEN": f"0.0.0.0:{admin}",
                     "MESHPROXY_INBOUND_DEFAULT_TARGET": f"127.1:{admin}"})
    before, mark = mp.metrics(), mp.mark()
    with RawClient(mp.inbound) as client:
        resp = client.exchange("POST", "/shutdown", [("Host", "app"), ("Content-Length", "0")])
    reason = assert_proxy_error(resp, 403)
    assert "own admin listener" in reason
    assert_one_log_line(mp, mark, reason)

    mark = mp.mark()
    with RawClient(mp.inbound) as client:
        client.send(b"\x01\x02 not http: opaque bytes for the admin port\n")
        assert client.closed_within(5), "an opaque connection to the proxy's own port must be closed"
    line = assert_one_log_line(mp, mark, "opaque connection failed")
    assert "own admin listener" in line, line
    after = mp.metrics()
    assert delta(before, after, "tcp_open_total", direction="inbound", peer="src") == 2
    assert delta(before, after, "tcp_open_total", direction="inbound", peer="dst") == 0
    assert mp.running(), mp.tail()


# ---- the pod's own IP, through real iptables redirection -----------------------------------------------

PROXY_GID = 2103
POD_IP = "10.213.0.5"
ADMIN_PORT = 4191

CLIENT = textwrap.dedent(
    """
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    s.sendall(bytes.fromhex(sys.argv[3]))
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    print(got.hex() or "-")
    """
)


def _ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=check, capture_output=True, text=True,
                          timeout=30)


def _metric(ns: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s series whose labels include ``labels``."""
    text = _ns(ns, "curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{ADMIN_PORT}/metrics").stdout
    return parse_metrics(text).get(name, **labels)


@pytest.fixture(scope="module")
def pod_ns(tmp_path_factory):
    """A pod: a network namespace with its own IP, iptables sending the app's connections for the
    pod IP's admin port to the outbound listener (the proxy's group exempt), the admin on 0.0.0.0."""
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.fail("the pod-IP test needs root and iptables (the README's test command installs iptables)")
    ns = f"mpown-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    tmp = tmp_path_factory.mktemp("podns")
    proxy = None
    try:
        _ns(ns, "ip", "link", "set", "lo", "up")
        _ns(ns, "ip", "addr", "add", f"{POD_IP}/32", "dev", "lo")
        for rule in (
            ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-m", "owner", "--gid-owner", str(PROXY_GID), "-j", "RETURN"],
            ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", POD_IP, "--dport", str(ADMIN_PORT), "-j", "REDIRECT",
             "--to-ports", "4140"],
        ):
            _ns(ns, "iptables", *rule)
        env = clean_env(MESHPROXY_OUTBOUND_LISTEN="[::]:4140", MESHPROXY_INBOUND_LISTEN="[::]:4143",
                        MESHPROXY_ADMIN_LISTEN=f"0.0.0.0:{ADMIN_PORT}", MESHPROXY_SHUTDOWN_ENDPOINT_ENABLED="true")
        log = open(tmp / "proxy.log", "w")
        proxy = subprocess.Popen(
            ["ip", "netns", "exec", ns, "setpriv", f"--regid={PROXY_GID}", "--clear-groups",
             sys.executable, "-m", "proxy", "run"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).parents[2]),
        )
        deadline = time.monotonic() + 20
        while _ns(ns, "curl", "-sf", f"http://127.0.0.1:{ADMIN_PORT}/ready", check=False).returncode != 0:
            assert proxy.poll() is None, (tmp / "proxy.log").read_text()
            assert time.monotonic() < deadline, "proxy not ready in 20 s"
            time.sleep(0.1)
        yield ns, proxy, tmp / "proxy.log"
    finally:
        if proxy is not None:
            proxy.kill()
            proxy.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_a_redirected_connection_to_the_pods_own_ip_and_admin_port_is_refused(pod_ns):
    ns, proxy, log = pod_ns
    before_src = _metric(ns, "tcp_open_total", direction="outbound", peer="src")
    out = _ns(ns, "curl", "-sS", "-i", "--max-time", "10", "-X", "POST",
              f"http://{POD_IP}:{ADMIN_PORT}/shutdown").stdout
    assert out.startswith("HTTP/1.1 403"), out[:500]
    assert "l5d-proxy-error: destination" in out and "own admin listener" in out, out[:500]
    time.sleep(0.3)
    assert proxy.poll() is None, "the admin saw the shutdown: " + log.read_text()[-2000:]
    text = log.read_text()
    assert text.count("own admin listener") == 1, text[-2000:]
    assert "shutdown requested" not in text
    # One client connection through outbound, none looped back in.
    assert _metric(ns, "tcp_open_total", direction="outbound", peer="src") == before_src + 1
    assert _metric(ns, "tcp_open_total", direction="outbound", peer="dst") == 0


def test_an_opaque_redirected_connection_to_the_pods_own_admin_port_is_closed(pod_ns):
    ns, proxy, log = pod_ns
    mark = len(log.read_text())
    got = _ns(ns, sys.executable, "-c", CLIENT, POD_IP, str(ADMIN_PORT), b"\x01\x02binary, not http\n".hex())
    assert got.stdout.strip() == "-", got.stdout  # closed, nothing answered
    time.sleep(0.3)
    new = log.read_text()[mark:]
    assert new.count("opaque connection failed") == 1 and "own admin listener" in new, new
    assert proxy.poll() is None
    assert _metric(ns, "tcp_open_total", direction="outbound", peer="dst") == 0

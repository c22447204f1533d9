"""``meshproxy check`` (proxy/check/): run as a user runs it, against a real
proxy, a real issuer, a real iptables table in a namespace of its own, and
things that are missing or wrong. Each test reads the lines it is about from
``--output json`` (and the text output once), and the exit status."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helpers.clients import clean_env
from helpers.meshproxy import MeshProxy
from helpers.ports import free_port
from proxy.check import host
from proxy.config import HostPort

REPO = Path(__file__).resolve().parents[1]
SBIN_PATH = f"{os.environ.get('PATH', '')}:/usr/local/sbin:/usr/sbin:/sbin"
INIT = REPO / "iptables-init" / "meshproxy-init"
ENDPOINTS = "services:\n  web.test:80:\n    endpoints:\n      - address: 127.0.0.1:8080\n"

pytestmark = pytest.mark.timeout(90)


def check(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> tuple[int, dict]:
    """``meshproxy check --output json ARGS`` -> (exit status, check id -> result)."""
    run = subprocess.run([*prefix, sys.executable, "-m", "proxy", "check", "--output", "json", *args],
                         env=clean_env(PYTHONPATH=str(REPO), PATH=SBIN_PATH, **(env or {})), cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    document = json.loads(run.stdout)
    assert document["ok"] == (run.returncode == 0), run.stdout
    return run.returncode, {result["check"]: result for result in document["checks"]}


def statuses(results: dict) -> dict[str, str]:
    return {name: result["status"] for name, result in results.items()}


@pytest.fixture(scope="module")
def endpoints_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("check") / "endpoints.yaml"
    path.write_text(ENDPOINTS)
    return path


@pytest.fixture(scope="module")
def running_proxy(endpoints_file):
    proxy = MeshProxy(env={"MESHPROXY_DESTINATION": f"file://{endpoints_file}"}, name="checked-proxy")
    proxy.start()
    yield proxy
    proxy.close()


# ---- a healthy proxy without interception or identity ------------------------


def test_a_healthy_proxy_passes(running_proxy):
    code, results = check("--no-iptables", env=running_proxy.env)
    assert code == 0, results
    assert statuses(results) == {
        "port-outbound": "ok", "port-inbound": "ok", "port-admin": "ok", "admin-ready": "ok",
        "certificate": "skip", "inbound-tls": "skip", "identity-token": "skip", "issuer": "skip",
        "discovery": "ok",
    }
    assert "1 service" in results["discovery"]["message"]
    assert "answered 200" in results["admin-ready"]["message"]


def test_text_output_marks_each_line_and_hints_at_the_fix(running_proxy):
    env = dict(running_proxy.env, MESHPROXY_ADMIN_LISTEN=f"127.0.0.1:{free_port()}")
    run = subprocess.run([sys.executable, "-m", "proxy", "check", "--no-iptables"], cwd=REPO, capture_output=True,
                         env=clean_env(PYTHONPATH=str(REPO), PYTHONIOENCODING="utf-8", **env), text=True, timeout=60)
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert lines[0].startswith("meshproxy check: admin 127.0.0.1:")
    assert any(line.startswith("✔ outbound listener:") for line in lines)
    failed = [i for i, line in enumerate(lines) if line.startswith("✘ admin /ready:")]
    assert failed and lines[failed[0] + 1].startswith("    hint: ")
    assert any(line.startswith("- certificate: no identity configured") for line in lines)
    assert lines[-1].endswith("failed, 4 skipped")


def test_admin_flag_overrides_the_settings(running_proxy):
    env = dict(running_proxy.env, MESHPROXY_ADMIN_LISTEN="127.0.0.1:1")
    code, results = check("--no-iptables", "--admin", f"127.0.0.1:{running_proxy.admin[1]}", env=env)
    assert code == 0 and results["admin-ready"]["status"] == "ok"
    code, results = check("--no-iptables", "--admin", "127.0.0.1:1", env=running_proxy.env)
    assert code == 1 and results["admin-ready"]["status"] == "fail"
    assert results["port-admin"]["status"] == "fail" and results["port-outbound"]["status"] == "ok"


# ---- failures ------------------------------------------------------------------


def test_no_proxy_fails_ports_and_ready():
    env = {f"MESHPROXY_{name}_LISTEN": f"127.0.0.1:{free_port()}" for name in ("OUTBOUND", "INBOUND", "ADMIN")}
    code, results = check("--no-iptables", env=env)
    assert code == 1
    for name in ("port-outbound", "port-inbound", "port-admin", "admin-ready"):
        assert results[name]["status"] == "fail" and results[name]["hint"], name
    assert "nothing listens on 127.0.0.1:" in results["port-inbound"]["message"]


def test_a_broken_or_missing_endpoints_file_fails_discovery(running_proxy, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  web.test:80:\n    endpoints:\n      - address: nowhere\n")
    code, results = check("--no-iptables", env=dict(running_proxy.env, MESHPROXY_DESTINATION=f"file://{bad}"))
    assert code == 1 and results["discovery"]["status"] == "fail"
    assert "endpoints[0].address" in results["discovery"]["message"]
    missing = dict(running_proxy.env, MESHPROXY_DESTINATION=f"file://{tmp_path}/none.yaml")
    code, results = check("--no-iptables", env=missing)
    assert results["discovery"]["status"] == "fail" and "cannot read" in results["discovery"]["message"]


def test_invalid_settings_are_one_failing_line():
    code, results = check(env={"MESHPROXY_LOG_LEVEL": "loud"})
    assert code == 1 and list(results) == ["settings"]
    assert "MESHPROXY_LOG_LEVEL" in results["settings"]["message"]


class _Dns:
    """Answers every query NXDOMAIN, on a UDP port of 127.0.0.1 (a thread)."""

    def __init__(self) -> None:
        import dns.message
        import dns.rcode

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

        def serve() -> None:
            while True:
                try:
                    data, peer = self.sock.recvfrom(4096)
                except OSError:
                    return
                reply = dns.message.make_response(dns.message.from_wire(data))
                reply.set_rcode(dns.rcode.NXDOMAIN)
                self.sock.sendto(reply.to_wire(), peer)

        threading.Thread(target=serve, daemon=True).start()


def test_dns_discovery_needs_a_server_that_answers():
    server = _Dns()
    try:
        env = {"MESHPROXY_DESTINATION": "dns", "MESHPROXY_DNS_NAMESERVERS": f"127.0.0.1:{server.port}"}
        _, results = check("--no-iptables", env=env)
        assert results["discovery"]["status"] == "ok", results["discovery"]
        assert "NXDOMAIN" in results["discovery"]["message"]
    finally:
        server.sock.close()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    with silent:
        env = {"MESHPROXY_DESTINATION": "dns", "MESHPROXY_DNS_NAMESERVERS": f"127.0.0.1:{silent.getsockname()[1]}"}
        _, results = check("--no-iptables", "--timeout", "0.5", env=env)
    assert results["discovery"]["status"] == "fail" and "no DNS server answered" in results["discovery"]["message"]


def test_an_unreachable_kubernetes_api_fails_discovery():
    env = {"MESHPROXY_DESTINATION": "k8s", "MESHPROXY_K8S_API": f"http://127.0.0.1:{free_port()}"}
    _, results = check("--no-iptables", env=env)
    assert results["discovery"]["status"] == "fail" and "cannot reach" in results["discovery"]["message"]


# ---- the issuer -----------------------------------------------------------------


def _identity_init(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "proxy", "identity", "init", "--out", str(directory)], cwd=REPO,
                   env=clean_env(PYTHONPATH=str(REPO)), check=True, capture_output=True, timeout=60)
    return directory


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    """A running ``meshproxy identity serve`` on loopback, with one token for web."""
    base = tmp_path_factory.mktemp("issuer")
    ca = _identity_init(base / "ca")
    (base / "tokens").write_text("web-token web.test.serviceaccount.identity.cluster.local\n")
    (base / "web.token").write_text("web-token\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "identity", "serve", "--issuer", str(ca), "--listen", f"127.0.0.1:{port}",
         "--tokens", str(base / "tokens")], cwd=REPO, env=clean_env(PYTHONPATH=str(REPO)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and "identity issuer serving" in proc.stderr.readline()
    env = {
        "MESHPROXY_IDENTITY_NAME": "web.test.serviceaccount.identity.cluster.local",
        "MESHPROXY_IDENTITY_SERVICE": f"https://127.0.0.1:{port}",
        "MESHPROXY_IDENTITY_TOKEN_FILE": str(base / "web.token"),
        "MESHPROXY_IDENTITY_TRUST_ANCHORS": str(ca / "ca.crt"),
    }
    yield env, base
    proc.terminate()
    proc.wait(10)


def test_the_issuer_is_reached_and_verified_with_the_trust_anchors(issuer):
    env, _ = issuer
    _, results = check("--no-iptables", env=env)
    assert results["issuer"]["status"] == "ok", results["issuer"]
    assert "TLSv1.3" in results["issuer"]["message"]
    assert results["identity-token"]["status"] == "ok"


def test_an_issuer_from_other_trust_anchors_or_a_missing_token_fails(issuer):
    env, base = issuer
    other = _identity_init(base / "other-ca")
    _, results = check("--no-iptables", env=dict(env, MESHPROXY_IDENTITY_TRUST_ANCHORS=str(other / "ca.crt")))
    assert results["issuer"]["status"] == "fail" and "does not verify" in results["issuer"]["message"]
    _, results = check("--no-iptables", env=dict(env, MESHPROXY_IDENTITY_TOKEN_FILE=str(base / "none")))
    assert results["identity-token"]["status"] == "fail"
    _, results = check("--no-iptables", env=dict(env, MESHPROXY_IDENTITY_SERVICE=f"https://127.0.0.1:{free_port()}"))
    assert results["issuer"]["status"] == "fail" and "cannot reach" in results["issuer"]["message"]


def test_a_proxy_with_identity_has_a_valid_certificate_and_serves_mesh_tls(issuer, tmp_path):
    env, _ = issuer
    with MeshProxy(env=dict(env, MESHPROXY_DESTINATION="file://" + str(tmp_path / "e.yaml")), name="id-proxy",
                   log_path=tmp_path / "proxy.log") as proxy:
        (tmp_path / "e.yaml").write_text(ENDPOINTS)
        proxy.start(timeout=30)
        code, results = check("--no-iptables", env=proxy.env)
    assert results["certificate"]["status"] == "ok", results["certificate"]
    assert "web.test.serviceaccount.identity.cluster.local valid, expires in" in results["certificate"]["message"]
    assert results["inbound-tls"]["status"] == "ok", results["inbound-tls"]
    assert code == 0, results


# ---- iptables, in a namespace of the test's own -----------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip", path=SBIN_PATH) is None
                                or shutil.which("iptables", path=SBIN_PATH) is None,
                                reason="reading and changing iptables needs root, iproute2 and iptables")


@pytest.fixture
def netns():
    name = f"mpchk-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, env=clean_env(PATH=SBIN_PATH))
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], env=clean_env(PATH=SBIN_PATH), capture_output=True)


def _init(ns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, str(INIT), *args], check=True, capture_output=True,
                   env=clean_env(PATH=SBIN_PATH), timeout=60)


@needs_root
def test_iptables_rules_are_checked_in_the_current_namespace(netns):
    inside = ("ip", "netns", "exec", netns)
    _, results = check(prefix=inside)
    assert results["iptables"]["status"] == "ok"
    assert results["iptables-rules"]["status"] == "fail"
    assert "no MESHPROXY_INBOUND/MESHPROXY_OUTBOUND chains" in results["iptables-rules"]["message"]
    assert "meshproxy-init" in results["iptables-rules"]["hint"]

    _init(netns)  # the defaults: 4143 and 4140, as the proxy's defaults
    _, results = check(prefix=inside)
    assert results["iptables-rules"]["status"] == "ok", results["iptables-rules"]
    assert "MESHPROXY_INBOUND -> 4143, MESHPROXY_OUTBOUND -> 4140" in results["iptables-rules"]["message"]

    _init(netns, "--inbound-port", "5143")  # rules for another proxy setup
    _, results = check(prefix=inside)
    assert results["iptables-rules"]["status"] == "fail"
    assert "MESHPROXY_INBOUND redirects to 5143, the proxy listens on 4143" in results["iptables-rules"]["message"]
    _, results = check(prefix=inside, env={"MESHPROXY_INBOUND_LISTEN": "0.0.0.0:5143"})
    assert results["iptables-rules"]["status"] == "ok"

    _init(netns, "--cleanup")
    _, results = check(prefix=inside)
    assert results["iptables-rules"]["status"] == "fail"


# ---- reading /proc/net/tcp ---------------------------------------------------------


def test_listening_sockets_are_read_from_proc():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        found = host.listening()
        assert found is not None and ("127.0.0.1", port) in found
        assert host.port_bound("x", HostPort("127.0.0.1", port), found).status == "ok"
        assert host.port_bound("x", HostPort("127.0.0.2", port), found).status == "fail"


@pytest.mark.parametrize(("listener", "wanted", "covered"), [
    (("0.0.0.0", 80), HostPort("127.0.0.1", 80), True),
    (("::", 80), HostPort("127.0.0.1", 80), True),
    (("127.0.0.1", 80), HostPort("127.0.0.1", 81), False),
    (("::ffff:127.0.0.1", 80), HostPort("127.0.0.1", 80), True),
    (("::1", 80), HostPort("::1", 80), True),
    (("127.0.0.1", 80), HostPort("localhost", 80), True),
])
def test_which_listener_serves_an_address(listener, wanted, covered):
    assert host._covers(listener, wanted) is covered
    assert ipaddress.ip_address(listener[0])

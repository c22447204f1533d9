"""examples/compose, run for real: the two images built offline, ``docker-compose up``,
and what a user checks once every container is healthy.

web calls api across the two proxies over mutual TLS (api's app sees the
``l5d-client-id`` web's proxy proved; both proxies count the TLS connection;
api's proxy counts the request); the init container's rules are in the
pods' shared network namespace; the host reaches web through its inbound
proxy; ``docker-compose down -v`` leaves no container, network or volume of
the project. Also measured: start-to-ready of a proxy and its idle RSS.
Each wait is bounded. The engine and images come from conftest.py.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.containers.engine import SAVE_NAT, Engine

pytestmark = pytest.mark.timeout(1500)  # the first run on a machine builds the base images

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "examples" / "compose" / "docker-compose.yml"
UP_TIMEOUT = 180.0
HEALTHY_TIMEOUT = 120.0
INITS = ("identity-init", "web-init", "api-init")
SERVICES = {*INITS, "identity", "web", "web-proxy", "api", "api-proxy"}
IDENTITY = "{}.default.serviceaccount.identity.cluster.local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mesh:
    engine: Engine
    project: str
    env: dict[str, str]
    web_port: int
    web_admin_port: int
    up_seconds: float
    healthy_seconds: float

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["docker-compose", "-p", self.project, "-f", str(COMPOSE), *args],
                                capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def python(self, service: str, code: str) -> str:
        """Run Python in a service's container (the app's or the proxy's interpreter)."""
        return self.compose("exec", "-T", service, "python", "-c", code).stdout

    def fetch(self, service: str, url: str) -> str:
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
        return self.python(service, code)

    def states(self) -> dict[str, dict]:
        label = f"label=com.docker.compose.project={self.project}"
        ids = self.engine.docker("ps", "-aq", "--filter", label).stdout.split()
        if not ids:
            return {}
        inspected = json.loads(self.engine.docker("inspect", *ids).stdout)
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in inspected}


def leftovers(engine: Engine, project: str) -> list[str]:
    label = f"label=com.docker.compose.project={project}"
    found = []
    for kind, args in (("container", ["ps", "-aq", "--filter", label]),
                       ("network", ["network", "ls", "-q", "--filter", label]),
                       ("volume", ["volume", "ls", "-q", "--filter", label])):
        found += [f"{kind} {name}" for name in engine.docker(*args).stdout.split()]
    return found


def wait_healthy(mesh: Mesh) -> None:
    """Inits exited 0; every other container running, and healthy where it has a health check."""
    deadline = time.monotonic() + HEALTHY_TIMEOUT
    waiting: list[str] = []
    while time.monotonic() < deadline:
        waiting = []
        for service, info in mesh.states().items():
            state = info["State"]
            if service in INITS:
                if state["Status"] == "exited" and state["ExitCode"] != 0:
                    logs = mesh.compose("logs", "--no-color", service, check=False).stdout
                    raise AssertionError(f"{service} exited {state['ExitCode']}:\n{logs}")
                if state["Status"] != "exited":
                    waiting.append(f"{service}: {state['Status']}")
            elif state["Status"] != "running":
                logs = mesh.compose("logs", "--no-color", service, check=False).stdout
                raise AssertionError(f"{service} is {state['Status']} (exit {state['ExitCode']}):\n{logs}")
            elif "Health" in state and state["Health"]["Status"] != "healthy":
                waiting.append(f"{service}: {state['Health']['Status']}")
        if not waiting and set(mesh.states()) == SERVICES:
            return
        time.sleep(0.5)
    logs = mesh.compose("logs", "--no-color", "--tail", "30", check=False).stdout
    raise AssertionError(f"not healthy within {HEALTHY_TIMEOUT:.0f}s: {waiting}\n{logs}")


@pytest.fixture(scope="module")
def mesh(engine: Engine, images: dict[str, str]) -> Iterator[Mesh]:
    project = f"mptest{int(time.time()) % 100000}"
    web_port, web_admin_port = free_port(), free_port()
    env = {**engine.env, "WEB_PORT": str(web_port), "WEB_ADMIN_PORT": str(web_admin_port)}
    mesh = Mesh(engine, project, env, web_port, web_admin_port, 0.0, 0.0)
    start = time.monotonic()
    try:
        mesh.compose("up", "-d", "--no-build", timeout=UP_TIMEOUT)
        mesh.up_seconds = time.monotonic() - start
        wait_healthy(mesh)
        mesh.healthy_seconds = time.monotonic() - start
        yield mesh
    finally:
        mesh.compose("down", "-v", "--remove-orphans", timeout=UP_TIMEOUT, check=False)


def metric(text: str, family: str, **labels: str) -> float:
    """The sum of the family's samples whose labels include these."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{family}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_every_container_healthy(mesh: Mesh, figures: dict[str, str]) -> None:
    states = mesh.states()
    assert set(states) == SERVICES
    figures["docker-compose up -d"] = (f"{mesh.up_seconds:.1f} s; every container healthy after "
                                       f"{mesh.healthy_seconds:.1f} s")


def test_web_calls_api_over_mutual_tls(mesh: Mesh) -> None:
    # From web's app, by the compose DNS name, with a plain client: iptables
    # sends it to web's proxy, which goes to api's proxy over mutual TLS.
    answer = json.loads(mesh.fetch("web", "http://api:8000/from-web"))
    assert answer["app"] == "api" and answer["path"] == "/from-web"
    headers = {k.lower(): v for k, v in answer["headers"].items()}
    assert headers.get("l5d-client-id") == IDENTITY.format("web"), headers

    web_metrics = urllib.request.urlopen(f"http://127.0.0.1:{mesh.web_admin_port}/metrics", timeout=10).read().decode()
    assert metric(web_metrics, "tls_connections_total", direction="outbound", tls="true",
                  server_id=IDENTITY.format("api")) >= 1, web_metrics
    assert metric(web_metrics, "request_total", direction="outbound", tls="true",
                  server_id=IDENTITY.format("api")) >= 1, web_metrics

    api_metrics = mesh.fetch("api-proxy", "http://127.0.0.1:4191/metrics")
    assert metric(api_metrics, "tls_connections_total", direction="inbound", tls="true",
                  client_id=IDENTITY.format("web")) >= 1, api_metrics
    assert metric(api_metrics, "request_total", direction="inbound", tls="true",
                  client_id=IDENTITY.format("web")) >= 1, api_metrics
    assert metric(api_metrics, "response_total", direction="inbound", status_code="200",
                  classification="success") >= 1, api_metrics


def test_host_reaches_web_through_its_inbound_proxy(mesh: Mesh) -> None:
    body = urllib.request.urlopen(f"http://127.0.0.1:{mesh.web_port}/from-host", timeout=10).read()
    answer = json.loads(body)
    assert answer["app"] == "web" and answer["path"] == "/from-host"
    # Not meshed (the host has no proxy): no client identity, and web's proxy counted it inbound.
    assert "l5d-client-id" not in {k.lower() for k in answer["headers"]}
    web_metrics = urllib.request.urlopen(f"http://127.0.0.1:{mesh.web_admin_port}/metrics", timeout=10).read().decode()
    assert metric(web_metrics, "request_total", direction="inbound") >= 1, web_metrics


@pytest.mark.parametrize("app", ["web", "api"])
def test_init_rules_are_in_the_shared_namespace(mesh: Mesh, images: dict[str, str], app: str) -> None:
    # Read with the init image's own iptables (both backends: it picks one by
    # what the namespace holds), joined to the app's namespace.
    rules = mesh.engine.docker(
        "run", "--rm", f"--network=container:{mesh.container(app)}", "--cap-add", "NET_ADMIN",
        "--cap-add", "NET_RAW", "--entrypoint", "sh", images["init"], "-c", SAVE_NAT).stdout
    assert ":MESHPROXY_INBOUND" in rules and ":MESHPROXY_OUTBOUND" in rules, rules
    assert re.search(r"-A PREROUTING .*-j MESHPROXY_INBOUND", rules), rules
    assert re.search(r"-A OUTPUT .*-j MESHPROXY_OUTBOUND", rules), rules
    assert re.search(r"-A MESHPROXY_INBOUND .*REDIRECT --to-ports 4143", rules), rules
    assert re.search(r"-A MESHPROXY_OUTBOUND .*REDIRECT --to-ports 4140", rules), rules
    assert re.search(r"-A MESHPROXY_OUTBOUND -m owner --uid-owner 2102 .*-j RETURN", rules), rules
    # The init service said so too, and exited 0.
    assert mesh.states()[f"{app}-init"]["State"]["ExitCode"] == 0


def _log_time(line: str) -> datetime:
    stamp = re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z?", line)
    assert stamp, line
    return datetime.fromisoformat(stamp.group(1)[:26])


def test_start_to_ready_and_idle_rss(mesh: Mesh, figures: dict[str, str]) -> None:
    for app in ("web", "api"):
        service = f"{app}-proxy"
        info = mesh.states()[service]
        started = datetime.fromisoformat(info["State"]["StartedAt"][:26])
        logs = mesh.compose("logs", "--no-color", service).stdout.splitlines()
        # /ready turns 200 once the proxy listens and holds its certificate:
        # "meshproxy ready" when both are so at once, else "meshproxy
        # listening" and then the certificate.
        at_once = [_log_time(line) for line in logs if "meshproxy ready" in line]
        listening = [_log_time(line) for line in logs if "meshproxy listening" in line]
        certified = [_log_time(line) for line in logs if "certificate installed" in line]
        assert at_once or (listening and certified), logs
        ready = at_once[0] if at_once else max(listening[0], certified[0])
        seconds = (ready - started).total_seconds()
        assert 0 < seconds < 30
        status = mesh.compose("exec", "-T", service, "cat", "/proc/1/status").stdout
        rss = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert rss, status
        rss_kib = int(rss.group(1))
        assert rss_kib < 200 * 1024
        cmdline = mesh.compose("exec", "-T", service, "cat", "/proc/1/cmdline").stdout
        assert "meshproxy" in cmdline
        figures[f"{service}: start to ready"] = f"{seconds:.2f} s (container start to ready: listening, certificate)"
        figures[f"{service}: idle RSS"] = f"{rss_kib / 1024:.1f} MiB"
    assert urllib.request.urlopen(f"http://127.0.0.1:{mesh.web_admin_port}/ready", timeout=10).status == 200


def test_down_leaves_nothing(mesh: Mesh) -> None:
    mesh.compose("down", "-v", "--remove-orphans", timeout=UP_TIMEOUT)
    assert leftovers(mesh.engine, mesh.project) == []
    # Compose names them after the project; nothing by that name either.
    for args in (["ps", "-a", "--format", "{{.Names}}"], ["network", "ls", "--format", "{{.Name}}"],
                 ["volume", "ls", "--format", "{{.Name}}"]):
        names = mesh.engine.docker(*args).stdout.split()
        assert not [n for n in names if n.startswith(mesh.project)], names

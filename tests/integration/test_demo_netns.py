"""``meshproxy demo`` in namespace mode (root): pods are network namespaces,
iptables-init redirects their traffic, the proxies run as uid 2102.

One demo runs for 20 s. While it runs, a plain client in web's namespace
calls api's pod IP: the request must be counted by web's outbound proxy and
api's inbound proxy (it went through both, over mutual TLS when identity is
on). When it ends: exit 0, a summary with traffic through every service, and
nothing of it left: no namespace, link, process or iptables rule. A demo
stopped by SIGINT, or by SIGTERM while still building its namespaces, cleans
up the same way.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from helpers.metrics import parse as parse_metrics

REPO = Path(__file__).resolve().parents[2]
SBIN_PATH = f"{os.environ.get('PATH', '')}:/usr/local/sbin:/usr/sbin:/sbin"
SERVICES = ("web", "api", "backend")
PROXY_UID = 2102

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip", path=SBIN_PATH) is None
                       or shutil.which("iptables", path=SBIN_PATH) is None,
                       reason="namespace mode needs root, iproute2 and iptables (CI runs as root with them)"),
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHPROXY_")}
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = SBIN_PATH
    return env


def _sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=_env(), timeout=20).stdout


def _namespaces(prefix: str) -> list[str]:
    return [line.split()[0] for line in _sh("ip", "netns", "list").splitlines()
            if line.split() and line.split()[0].startswith(prefix)]


def _root_nat() -> list[str]:
    """The host's own nat table (rules and chains, no counters or comments)."""
    text = _sh("iptables-save", "-t", "nat")
    return [re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines() if not line.startswith("#")]


def _processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


class Demo:
    """A namespace-mode demo child whose stdout is read line by line; as a
    context manager, a test that fails stops it (SIGTERM: it cleans up)."""

    def __init__(self, log_dir: Path, *args: str) -> None:
        self.log_dir = log_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "demo", "--mode", "netns", "--log-dir", str(log_dir), *args],
            env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.prefix = f"mpdemo-{self.proc.pid}-"
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        self.proc.kill()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.seen)}\nstderr:\n{err}")

    def finish(self, timeout: float) -> tuple[int, str, str]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        time.sleep(0.1)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        assert self.proc.stderr is not None
        return code, "".join(self.seen), self.proc.stderr.read()

    def metrics(self, pod: str):
        return parse_metrics(_sh("ip", "netns", "exec", self.prefix + pod, "curl", "-sS", "--max-time", "5",
                                 "http://127.0.0.1:4191/metrics"))

    def assert_nothing_left(self, nat_before: list[str]) -> None:
        deadline = time.monotonic() + 10
        while _processes_mentioning(str(self.log_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_mentioning(str(self.log_dir)) == [], "processes of the demo left behind"
        assert _namespaces(self.prefix) == []
        assert self.prefix not in _sh("ip", "link") and "v-web" not in _sh("ip", "link")
        assert _root_nat() == nat_before


def _status_count(metrics, direction: str, status: str) -> float:
    return metrics.get("response_total", direction=direction, status_code=status)


@pytest.fixture(scope="module")
def nat_before() -> list[str]:
    return _root_nat()


@pytest.fixture
def log_dir():
    """Like tmp_path, but every user may enter it: the proxies (uid 2102) read their files there."""
    path = Path(tempfile.mkdtemp(prefix="mpdemo-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_demo_of_20_seconds_meshes_every_hop_and_leaves_nothing(log_dir, nat_before):
    with Demo(log_dir, "--duration", "20", "--interval", "5") as demo:
        demo.wait_for(r"^load: ", timeout=60)
        seen = "".join(demo.seen)
        assert "namespace mode" in seen
        identity = "issuer " in seen and "identity off" not in seen
        namespaces = _namespaces(demo.prefix)
        assert sorted(namespaces) == sorted(demo.prefix + pod for pod in ("node", "load", *SERVICES))

        # Each pod: meshproxy-init's chains, and a proxy running as uid 2102.
        nat = _sh("ip", "netns", "exec", demo.prefix + "web", "iptables-save", "-t", "nat")
        assert ":MESHPROXY_INBOUND" in nat and ":MESHPROXY_OUTBOUND" in nat
        pids = [int(pid) for pid in re.findall(r"proxy pid (\d+)", seen)]
        assert len(pids) == 4
        for pid in pids:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            uids = next(line for line in status if line.startswith("Uid:"))
            assert uids.split()[1:] == [str(PROXY_UID)] * 4

        # A plain client in web's pod calls api's pod IP: interception carries it
        # through web's outbound proxy and api's inbound proxy. Its 404s (the
        # load only ever gets 200, 500 or 502) tell these requests apart.
        web_before, api_before = demo.metrics("web"), demo.metrics("api")
        for _ in range(3):
            code = _sh("ip", "netns", "exec", demo.prefix + "web", "curl", "-sS", "-o", "/dev/null",
                       "-w", "%{http_code}", "--max-time", "5", "http://10.77.0.12:8080/not-here")
            assert code == "404"
        web_after, api_after = demo.metrics("web"), demo.metrics("api")
        assert _status_count(web_after, "outbound", "404") - _status_count(web_before, "outbound", "404") == 3
        assert _status_count(api_after, "inbound", "404") - _status_count(api_before, "inbound", "404") == 3
        if identity:
            # The hop was mutual TLS, each side naming the other: web's outbound
            # connected to api's identity, and every connection api's inbound
            # accepted came from web's.
            web_id, api_id = (f"{pod}.demo.serviceaccount.identity.cluster.local" for pod in ("web", "api"))
            assert web_after.get("tls_connections_total", direction="outbound", tls="true", server_id=api_id) >= 1
            assert api_after.get("tls_connections_total", direction="inbound", tls="true", client_id=web_id) >= 1
            accepted = api_after.get("tcp_open_total", direction="inbound", peer="src")
            assert api_after.get("tls_connections_total", direction="inbound", tls="true") == accepted > 0

        code, out, err = demo.finish(timeout=60)
        assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
        summary = out.split("\nsummary:", 1)[1]
        rows = {line.split()[0]: line.split() for line in summary.splitlines()[2:]
                if line.split() and line.split()[0] in SERVICES}
        assert set(rows) == set(SERVICES), out
        for service, (_, meshed, success, rps, p50, _p95, p99, tls) in rows.items():
            assert meshed == "yes", out
            assert 25 <= float(rps) <= 60, (service, out)
            assert float(success.rstrip("%")) >= 90.0 and p50 != "-" and p99 != "-", (service, out)
            assert tls == ("100%" if identity else "0%"), (service, out)
        assert re.search(r"load generator: sent (\d{3,}), .* errors [0-2],", out), out
        demo.assert_nothing_left(nat_before)


def test_ctrl_c_removes_every_namespace_and_process(log_dir, nat_before):
    with Demo(log_dir, "--interval", "1", "--no-identity") as demo:
        demo.wait_for(r"^\[\s*1\.\d+s\]", timeout=60)
        assert len(_namespaces(demo.prefix)) == 5
        demo.proc.send_signal(signal.SIGINT)
        code, out, err = demo.finish(timeout=60)
        assert code == 0, err
        assert "\nsummary:" in out
        demo.assert_nothing_left(nat_before)


def test_sigterm_while_building_the_namespaces_cleans_up(log_dir, nat_before):
    with Demo(log_dir, "--duration", "30", "--no-identity") as demo:
        demo.wait_for(r"^meshproxy demo: starting", timeout=60)
        deadline = time.monotonic() + 10
        while not _namespaces(demo.prefix) and time.monotonic() < deadline:
            time.sleep(0.01)
        demo.proc.send_signal(signal.SIGTERM)
        code, out, err = demo.finish(timeout=60)
        assert code in (0, 130), err  # 130 while starting; 0 if the mesh was already up
        demo.assert_nothing_left(nat_before)

"""Namespace mode (root on Linux): every pod is a network namespace with real
interception, the way a Kubernetes node runs pods.

Topology, all of it inside namespaces named ``mpdemo-<pid>-*`` so the host's
own network (links, routes, iptables) is never touched::

    mpdemo-<pid>-node      bridge br0 10.77.0.1/24, the identity issuer on :8443
      v-load  --veth--     mpdemo-<pid>-load     eth0 10.77.0.10  load generator
      v-web   --veth--     mpdemo-<pid>-web      eth0 10.77.0.11  web     :8080
      v-api   --veth--     mpdemo-<pid>-api      eth0 10.77.0.12  api     :8080
      v-backend --veth--   mpdemo-<pid>-backend  eth0 10.77.0.13  backend :8080

In each pod namespace ``iptables-init/meshproxy-init`` installs its nat
rules, and ``meshproxy run`` runs as uid 2102 (the uid those rules exempt),
started with ``ip netns exec NS setpriv --reuid 2102 ...``. An app calls the
next service at its pod IP and port 8080 with a plain HTTP client: the OUTPUT
rule redirects that connection to the pod's proxy (4140), which reads the
original destination (``SO_ORIGINAL_DST``), finds the service in the
endpoints file and connects to the callee's proxy (4143) with mutual TLS.

The apps themselves are coroutines of the demo process: a socket belongs to
the namespace it was created in, so each app's sockets are created inside its
pod's namespace (``setns`` around ``socket()``), and the iptables rules see
them exactly as they would see a separate process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from proxy import config
from proxy.demo.apps import Callee
from proxy.demo.http import Connect, Http1Client
from proxy.demo.mesh import Address, Mesh, Net, Pod
from proxy.demo.processes import command_name, meshproxy_command, package_env
from proxy.demo.spec import SERVICE_PORT, DemoError

PROXY_UID = 2102
SUBNET_PREFIX = "10.77.0."
NODE_IP = SUBNET_PREFIX + "1"
FIRST_POD_HOST = 10
ISSUER_PORT = 8443
INBOUND_PORT, OUTBOUND_PORT, ADMIN_PORT, TAP_PORT = 4143, 4140, 4191, 4190
NS_PREFIX = "mpdemo-"
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
TOOL_ENV = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:{SBIN}"}
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def init_script() -> Path | None:
    """``iptables-init/meshproxy-init`` beside the package (a source checkout), else on PATH."""
    beside = Path(__file__).resolve().parents[2] / "iptables-init" / "meshproxy-init"
    if beside.is_file():
        return beside
    found = shutil.which("meshproxy-init", path=TOOL_ENV["PATH"])
    return Path(found) if found else None


def proxy_prefix(namespace: str) -> list[str]:
    """Run a command in ``namespace`` as the proxy uid, with no groups or
    capabilities, and the parent-death signal set again after the uid change."""
    return ["ip", "netns", "exec", namespace, "setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}",
            "--clear-groups", "--inh-caps=-all", "--pdeathsig=TERM"]


def unavailable(state_dir: Path) -> str | None:
    """Why namespace mode cannot run here, or None when it can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces and iptables need root"
    for tool in ("ip", "setpriv", "iptables", "iptables-restore"):
        if shutil.which(tool, path=TOOL_ENV["PATH"]) is None:
            return f"{tool} not found"
    if init_script() is None:
        return "iptables-init/meshproxy-init not found"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, env=TOOL_ENV)
    if probe.returncode != 0:
        return f"'ip netns' does not work: {probe.stderr.strip()}"
    # The proxies run as uid 2102: the interpreter, the packages and the
    # demo's files must all be readable by that uid.
    check = ("import os, sys, uvloop, yaml, cryptography, proxy.config\n"
             "sys.exit(0 if os.access(sys.argv[1], os.R_OK | os.X_OK) else 3)")
    probe = subprocess.run(["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups",
                            sys.executable, "-c", check, str(state_dir)],
                           capture_output=True, text=True, env=package_env(TOOL_ENV), cwd="/", timeout=60)
    if probe.returncode == 3:
        return f"uid {PROXY_UID} cannot read {state_dir} (give --log-dir a directory all users can enter)"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return (f"uid {PROXY_UID} cannot run the proxy with {sys.executable} ({last}); "
                "install meshproxy where every user can read it (scripts/bootstrap.sh makes .venv in the checkout)")
    return None


def stale_namespaces() -> list[str]:
    """Namespaces an earlier demo left behind (its pid is gone): killed with SIGKILL, it could not clean up."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, env=TOOL_ENV).stdout
    stale = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.match(rf"^{NS_PREFIX}(\d+)-", name)
        if match and not Path(f"/proc/{match[1]}").exists():
            stale.append(name)
    return stale


class NamespaceNet(Net):
    """Sockets created inside one named network namespace."""

    def __init__(self, name: str, home_fd: int) -> None:
        self.name, self.home_fd = name, home_fd
        self.fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)

    @contextlib.contextmanager
    def _inside(self) -> Iterator[None]:
        _setns(self.fd)
        try:
            yield
        finally:
            _setns(self.home_fd)

    def _socket(self) -> socket.socket:
        with self._inside():
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def connector(self, host: str, port: int) -> Connect:
        async def connect():
            sock = self._socket()
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
            except BaseException:
                sock.close()
                raise
            return await asyncio.open_connection(sock=sock)
        return connect

    def listen(self, host: str, port: int) -> socket.socket:
        sock = self._socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class NetnsPod(Pod):
    def __init__(self, spec, net: NamespaceNet, ip: str) -> None:
        super().__init__(spec, net)
        self.namespace = net.name
        self.ip = ip
        self.app_listen = ("0.0.0.0", SERVICE_PORT)
        self.admin = ("127.0.0.1", ADMIN_PORT)


class NetnsMesh(Mesh):
    mode = "netns"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = f"{NS_PREFIX}{os.getpid()}-"
        self.node = self.prefix + "node"
        self.created: list[str] = []  # namespaces, in creation order
        self.initialized: list[str] = []  # namespaces meshproxy-init changed
        self.nets: list[NamespaceNet] = []
        self.home_fd = -1
        self.init = init_script()

    # ---- the network -------------------------------------------------------------

    def _ip(self, *args: str) -> None:
        run = subprocess.run(["ip", *args], capture_output=True, text=True, env=TOOL_ENV, timeout=20)
        if run.returncode != 0:
            raise DemoError(f"ip {' '.join(args)} failed: {run.stderr.strip()}")

    def _add_namespace(self, name: str) -> NamespaceNet:
        self._ip("netns", "add", name)
        self.created.append(name)
        self._ip("-n", name, "link", "set", "lo", "up")
        net = NamespaceNet(name, self.home_fd)
        self.nets.append(net)
        return net

    def _run_init(self, namespace: str, *extra: str) -> subprocess.CompletedProcess:
        assert self.init is not None
        return subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, str(self.init), f"--proxy-uid={PROXY_UID}",
             f"--inbound-port={INBOUND_PORT}", f"--outbound-port={OUTBOUND_PORT}", f"--admin-port={ADMIN_PORT}",
             f"--tap-port={TAP_PORT}", *extra],
            capture_output=True, text=True, env=TOOL_ENV, timeout=60,
        )

    def setup(self) -> None:
        if self.init is None:
            raise DemoError("iptables-init/meshproxy-init not found")
        self.home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.node_net = self._add_namespace(self.node)
        self._ip("-n", self.node, "link", "add", "br0", "type", "bridge")
        self._ip("-n", self.node, "addr", "add", f"{NODE_IP}/24", "dev", "br0")
        self._ip("-n", self.node, "link", "set", "br0", "up")
        for index, spec in enumerate(self.services):
            namespace = self.prefix + spec.name
            net = self._add_namespace(namespace)
            ip = f"{SUBNET_PREFIX}{FIRST_POD_HOST + index}"
            veth = f"v-{spec.name}"[:15]
            self._ip("-n", self.node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            self._ip("-n", self.node, "link", "set", veth, "master", "br0", "up")
            self._ip("-n", namespace, "addr", "add", f"{ip}/24", "dev", "eth0")
            self._ip("-n", namespace, "link", "set", "eth0", "up")
            self._ip("-n", namespace, "route", "add", "default", "via", NODE_IP)
            self.pods[spec.name] = NetnsPod(spec, net, ip)
        for pod in self.pods.values():
            assert isinstance(pod, NetnsPod)
            run = self._run_init(pod.namespace)
            (self.log_dir / f"{pod.name}-init.log").write_text(run.stdout + run.stderr)
            if run.returncode != 0:
                raise DemoError(f"meshproxy-init failed in {pod.namespace} ({run.returncode}): {run.stderr.strip()}")
            self.initialized.append(pod.namespace)

    def teardown(self) -> None:
        """Rules (meshproxy-init --cleanup), then namespaces (which takes their
        veths and the bridge with them). Idempotent; reports what it could not remove."""
        for net in self.nets:
            net.close()
        self.nets.clear()
        if self.home_fd >= 0:
            os.close(self.home_fd)
            self.home_fd = -1
        problems = []
        for namespace in self.initialized:
            run = self._run_init(namespace, "--cleanup")
            if run.returncode != 0:
                problems.append(f"meshproxy-init --cleanup in {namespace}: {run.stderr.strip()}")
        self.initialized.clear()
        for namespace in reversed(self.created):
            run = subprocess.run(["ip", "netns", "del", namespace], capture_output=True, text=True, env=TOOL_ENV)
            if run.returncode != 0:
                problems.append(f"ip netns del {namespace}: {run.stderr.strip()}")
        self.created.clear()
        for problem in problems:
            print(f"meshproxy demo: cleanup: {problem}", file=sys.stderr)

    # ---- the pods -------------------------------------------------------------------

    def callee(self, pod: Pod, service: str) -> Callee:
        target = self.pods[service]
        assert isinstance(target, NetnsPod)
        connect = pod.net.connector(target.ip, SERVICE_PORT)
        # A plain client of the pod IP: interception takes it to the caller's proxy.
        return Callee(service, Http1Client(connect, max_idle=32), f"{target.ip}:{SERVICE_PORT}")

    def service_entry(self, pod: Pod) -> dict:
        assert isinstance(pod, NetnsPod)
        endpoint = {"address": f"{pod.ip}:{SERVICE_PORT}", "proxy": f"{pod.ip}:{INBOUND_PORT}"}
        return {"addresses": [f"{pod.ip}:{SERVICE_PORT}"],
                "endpoints": [{**endpoint, **self.endpoint_identity(pod), "labels": self.endpoint_labels(pod)}]}

    def proxy_settings(self, pod: Pod) -> dict[str, str]:
        return {
            config.OUTBOUND_LISTEN: f"127.0.0.1:{OUTBOUND_PORT}",
            config.INBOUND_LISTEN: f"0.0.0.0:{INBOUND_PORT}",
            config.ADMIN_LISTEN: f"0.0.0.0:{ADMIN_PORT}",
            config.TAP_LISTEN: f"0.0.0.0:{TAP_PORT}",
            config.INBOUND_FORWARD_HOST: "127.0.0.1",
        }

    def proxy_argv(self, pod: Pod, config_file: Path) -> list[str]:
        assert isinstance(pod, NetnsPod)
        return proxy_prefix(pod.namespace) + meshproxy_command("run", "--config", str(config_file))

    def viz_prefix(self) -> str:
        # The pods are reachable on the bridge of the node namespace, not from the host's.
        return f"ip netns exec {self.node} "

    def check_command(self, pod: Pod) -> str:
        assert isinstance(pod, NetnsPod)
        return (f"ip netns exec {pod.namespace} {command_name()} check "
                f"--config {self.log_dir / (pod.name + '-proxy.yaml')}")

    def issuer_place(self) -> tuple[Address, list[str], Net, int | None]:
        return (NODE_IP, ISSUER_PORT), ["ip", "netns", "exec", self.node], self.node_net, PROXY_UID

    def banner(self) -> str:
        return (f"namespace mode: each pod is a network namespace {self.prefix}<pod> on bridge br0 in "
                f"{self.node} ({SUBNET_PREFIX}0/24); meshproxy-init redirects its traffic to its proxy, "
                f"which runs as uid {PROXY_UID}")

    def describe_pod(self, pod: Pod) -> str:
        assert isinstance(pod, NetnsPod)
        app = f"app {pod.ip}:{SERVICE_PORT}" if pod.spec.serves else f"load generator at {pod.ip}"
        calls = f"  calls {', '.join(pod.spec.calls)}" if pod.spec.calls else ""
        pid = pod.proxy.pid if pod.proxy else "-"
        return (f"  {pod.name:<8} netns {pod.namespace}  {app}  proxy pid {pid} (uid {PROXY_UID}): "
                f"inbound :{INBOUND_PORT} outbound 127.0.0.1:{OUTBOUND_PORT} admin :{ADMIN_PORT}{calls}")

"""Loopback mode (no root needed): every pod is a set of ports on 127.0.0.1.

There is no interception here, so an app sends its requests to its own
proxy's outbound port and names the service in ``Host``
(``api.demo.svc.cluster.local:8080``); discovery (the endpoints file) maps
that name to the callee's app port and its proxy's inbound port, so the hop
between the two proxies is meshed exactly as in namespace mode.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

from proxy import config
from proxy.demo.apps import Callee
from proxy.demo.http import Http1Client, tcp
from proxy.demo.mesh import Address, Mesh, Net, Pod
from proxy.demo.processes import command_name, meshproxy_command
from proxy.demo.spec import DemoError, service_authority
from proxy.viz.tap import TAP_PORT_LABEL
from proxy.viz.targets import ADMIN_PORT_LABEL

HOST = "127.0.0.1"

_given_ports: set[int] = set()


def pick_port() -> int:
    """A free loopback port below the kernel's ephemeral range, so the client
    side of some other connection cannot take it before the proxy binds."""
    for _ in range(500):
        port = random.randrange(20000, 32000)
        if port in _given_ports:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    raise DemoError("no free port on 127.0.0.1")


class LoopbackPod(Pod):
    def __init__(self, spec, net: Net) -> None:
        super().__init__(spec, net)
        self.inbound, self.outbound = pick_port(), pick_port()
        self.admin = (HOST, pick_port())
        self.tap = (HOST, pick_port())
        self.app_listen = (HOST, 0)


class LoopbackMesh(Mesh):
    mode = "loopback"

    def setup(self) -> None:
        net = Net()
        self.pods = {spec.name: LoopbackPod(spec, net) for spec in self.services}
        self.issuer_port = pick_port() if self.with_identity else 0

    def callee(self, pod: Pod, service: str) -> Callee:
        assert isinstance(pod, LoopbackPod)
        return Callee(service, Http1Client(tcp(HOST, pod.outbound), max_idle=32), service_authority(service))

    def service_entry(self, pod: Pod) -> dict:
        assert isinstance(pod, LoopbackPod)
        endpoint = {"address": f"{HOST}:{pod.app_port}", "proxy": f"{HOST}:{pod.inbound}"}
        return {"endpoints": [{**endpoint, **self.endpoint_identity(pod), "labels": self.endpoint_labels(pod)}]}

    def endpoint_labels(self, pod: Pod) -> dict[str, str]:
        # Every pod's proxy shares 127.0.0.1: its admin and tap ports, for meshproxy viz.
        assert isinstance(pod, LoopbackPod)
        return {**super().endpoint_labels(pod), ADMIN_PORT_LABEL: str(pod.admin[1]), TAP_PORT_LABEL: str(pod.tap[1])}

    def proxy_settings(self, pod: Pod) -> dict[str, str]:
        assert isinstance(pod, LoopbackPod)
        settings = {
            config.INBOUND_LISTEN: f"{HOST}:{pod.inbound}",
            config.OUTBOUND_LISTEN: f"{HOST}:{pod.outbound}",
            config.ADMIN_LISTEN: f"{HOST}:{pod.admin[1]}",
            config.TAP_LISTEN: f"{HOST}:{pod.tap[1]}",
        }
        if pod.spec.serves:
            settings[config.INBOUND_DEFAULT_TARGET] = f"{HOST}:{pod.app_port}"
        if not self.with_identity:
            # --no-identity: a proxy without an identity obeys a peer's transport
            # header only from the cluster networks, and here the peers are on loopback.
            settings[config.CLUSTER_NETWORKS] = "127.0.0.0/8"
        return settings

    def proxy_argv(self, pod: Pod, config_file: Path) -> list[str]:
        return meshproxy_command("run", "--config", str(config_file))

    def check_command(self, pod: Pod) -> str:
        return f"{command_name()} check --no-iptables --config {self.log_dir / (pod.name + '-proxy.yaml')}"

    def issuer_place(self) -> tuple[Address, list[str], Net, int | None]:
        return (HOST, self.issuer_port), [], Net(), None

    def banner(self) -> str:
        return ("loopback mode: each pod is a set of ports on 127.0.0.1; apps send to their own proxy's "
                "outbound port (no interception)")

    def describe_pod(self, pod: Pod) -> str:
        assert isinstance(pod, LoopbackPod)
        app = f"app {HOST}:{pod.app_port}" if pod.spec.serves else "load generator"
        calls = f"  calls {', '.join(pod.spec.calls)}" if pod.spec.calls else ""
        return (f"  {pod.name:<8} {app}  proxy pid {pod.proxy.pid if pod.proxy else '-'}: inbound {HOST}:{pod.inbound}"
                f"  outbound {HOST}:{pod.outbound}  admin {HOST}:{pod.admin[1]}  tap {HOST}:{pod.tap[1]}{calls}")

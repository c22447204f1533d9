"""What both modes share: pods (an app plus its proxy), the order things
start and stop in, discovery and identity settings, readiness and scraping.

A mode (``loopback.LoopbackMesh``, ``netns.NetnsMesh``) decides where each
pod lives: how its sockets are made (``Net``), the address its app listens
on, how an app reaches another service, and how the proxy is started. Every
resource a mode creates is released by its ``teardown``, which is
synchronous and idempotent so that it runs from ``finally`` whatever
happened before.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import yaml

from proxy import config
from proxy.demo import identity
from proxy.demo.apps import Callee, SampleApp
from proxy.demo.http import CLIENT_ERRORS, Connect, get_once, tcp
from proxy.demo.metrics import DirectionStats, parse_prometheus, summarize
from proxy.demo.processes import Child, package_env, stop_all
from proxy.demo.spec import NAMESPACE, DemoError, Interrupted, ServiceSpec, identity_name, service_authority

Address = tuple[str, int]


class Net:
    """Where a pod's sockets live. This one: the demo's own network namespace."""

    def connector(self, host: str, port: int) -> Connect:
        return tcp(host, port)

    def listen(self, host: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
        return sock


class Pod:
    """One service's app and proxy; addresses are filled in by the mode."""

    def __init__(self, spec: ServiceSpec, net: Net) -> None:
        self.spec, self.net = spec, net
        self.app_listen: Address = ("127.0.0.1", 0)  # where the app binds (port 0: any)
        self.app_port = 0  # the port it got
        self.admin: Address = ("127.0.0.1", 4191)  # the proxy's admin port, reached through ``net``
        self.tap: Address = ("127.0.0.1", 4190)  # its tap server
        self.app: SampleApp | None = None
        self.proxy: Child | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    async def admin_get(self, path: str, timeout: float = 2.0):
        host, port = self.admin
        return await get_once(self.net.connector(host, port), path, f"{host}:{port}", timeout)

    async def scrape(self) -> dict[str, DirectionStats] | None:
        try:
            response = await self.admin_get("/metrics")
        except CLIENT_ERRORS:
            return None
        if response.status != 200:
            return None
        return summarize(parse_prometheus(response.body.decode("utf-8", "replace")))


class Mesh:
    """The pods of the demo and the issuer, started and stopped together."""

    mode = "?"

    def __init__(self, services: tuple[ServiceSpec, ...], log_dir: Path, with_identity: bool,
                 trust_domain: str) -> None:
        self.services = services
        self.log_dir = log_dir
        self.with_identity = with_identity
        self.trust_domain = trust_domain
        self.pods: dict[str, Pod] = {}
        self.issuer: Child | None = None
        self.identity: identity.IdentityFiles | None = None
        self.endpoints_path = log_dir / "endpoints.yaml"
        self.viz_dir: Path | None = None  # the tap identity's certificate for meshproxy viz tap|top

    # ---- what a mode provides ------------------------------------------------

    def setup(self) -> None:
        """Create the pods (and whatever network they need)."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release everything ``setup`` created; idempotent."""

    def callee(self, pod: Pod, service: str) -> Callee:
        """How ``pod``'s app calls ``service``."""
        raise NotImplementedError

    def service_entry(self, pod: Pod) -> dict:
        """``pod``'s service in the endpoints file."""
        raise NotImplementedError

    def proxy_settings(self, pod: Pod) -> dict[str, str]:
        """The mode's MESHPROXY_* settings for ``pod``'s proxy (on top of ``base_settings``)."""
        raise NotImplementedError

    def proxy_argv(self, pod: Pod, config_file: Path) -> list[str]:
        raise NotImplementedError

    def viz_prefix(self) -> str:
        """What runs a ``meshproxy viz`` command where the proxies can be reached (nothing: here)."""
        return ""

    def check_command(self, pod: Pod) -> str:
        """How a user runs ``meshproxy check`` against ``pod``'s proxy."""
        raise NotImplementedError

    def issuer_place(self) -> tuple[Address, list[str], Net, int | None]:
        """Where the issuer listens, the command prefix that runs it, the Net
        that reaches it, and the uid owning the proxies' tokens."""
        raise NotImplementedError

    def banner(self) -> str:
        raise NotImplementedError

    def describe_pod(self, pod: Pod) -> str:
        raise NotImplementedError

    # ---- shared ------------------------------------------------------------------

    def serving(self) -> list[Pod]:
        return [pod for pod in self.pods.values() if pod.spec.serves]

    def base_settings(self, pod: Pod) -> dict[str, str]:
        """Settings every proxy gets, whatever the mode."""
        settings = {config.DESTINATION: f"file://{self.endpoints_path}", config.DRAIN_TIMEOUT: "2s",
                    # Who the pod is, as the downward API says in Kubernetes (tap reports it).
                    config.WORKLOAD_NAMESPACE: NAMESPACE, config.WORKLOAD_POD: pod.name,
                    config.WORKLOAD_KIND: "deployment", config.WORKLOAD_NAME: pod.name}
        if self.identity is not None:
            (host, port), _, _, _ = self.issuer_place()
            settings.update(identity.proxy_settings(self.identity, pod.name, f"https://{host}:{port}"))
        return settings

    def write_proxy_config(self, pod: Pod) -> tuple[Path, dict[str, str]]:
        """``pod``'s proxy settings as a ``meshproxy run --config`` file (so that
        ``meshproxy check --config`` can read the very same), and the
        environment to run it with: the user's own, minus the names the file
        sets (the environment would win over the file)."""
        settings = {**self.base_settings(pod), **self.proxy_settings(pod)}
        if config.DRAIN_TIMEOUT in os.environ:
            del settings[config.DRAIN_TIMEOUT]  # the user's choice
        path = self.log_dir / f"{pod.name}-proxy.yaml"
        document = {name[len(config.PREFIX):].lower(): value for name, value in settings.items()}
        path.write_text(f"# meshproxy run --config settings of the demo's {pod.name} proxy\n"
                        + yaml.safe_dump(document, sort_keys=False))
        path.chmod(0o644)
        env = {k: v for k, v in os.environ.items() if k not in settings}
        return path, package_env(env)

    def endpoints_document(self) -> str:
        services = {service_authority(pod.name): self.service_entry(pod) for pod in self.serving()}
        header = ("# The demo's services, written by meshproxy demo (MESHPROXY_DESTINATION=file://...).\n"
                  "# An endpoint with a proxy address is meshed: callers' proxies connect there.\n")
        return header + yaml.safe_dump({"services": services}, sort_keys=False)

    def endpoint_labels(self, pod: Pod) -> dict[str, str]:
        """What discovery says of a pod's endpoint, as Kubernetes would: its namespace, pod and deployment
        (callers' metrics carry them as ``dst_*``; ``meshproxy viz`` names workloads by them)."""
        return {"namespace": NAMESPACE, "pod": pod.name, "deployment": pod.name}

    def endpoint_identity(self, pod: Pod) -> dict[str, str]:
        return {"identity": identity_name(pod.name, self.trust_domain)} if self.with_identity else {}

    async def start(self, stop: asyncio.Event) -> None:
        """Issuer, apps, discovery file, proxies: in that order."""
        self.setup()
        self.check_stop(stop)
        if self.with_identity:
            await self._start_issuer(stop)
        for pod in self.serving():
            pod.app = SampleApp(pod.spec, [self.callee(pod, name) for name in pod.spec.calls])
            host, port = pod.app_listen
            pod.app_port = await pod.app.start(pod.net.listen(host, port))
        self.endpoints_path.write_text(self.endpoints_document())
        self.endpoints_path.chmod(0o644)
        for pod in self.pods.values():
            path, env = self.write_proxy_config(pod)
            pod.proxy = Child(f"{pod.name} proxy", self.proxy_argv(pod, path), env,
                              self.log_dir / f"{pod.name}-proxy.log")
            pod.proxy.start()

    async def _start_issuer(self, stop: asyncio.Event) -> None:
        (host, port), prefix, net, token_uid = self.issuer_place()
        self.identity = identity.prepare(self.log_dir, list(self.pods), self.trust_domain, token_uid)
        self.viz_dir = identity.viz_identity(self.identity, self.log_dir)
        self.issuer = identity.issuer(self.identity, f"{host}:{port}", prefix, self.log_dir)
        self.issuer.start()
        deadline = asyncio.get_running_loop().time() + 20.0
        while True:
            try:
                _, writer = await asyncio.wait_for(net.connector(host, port)(), 1.0)
            except (OSError, TimeoutError):
                pass
            else:
                writer.close()
                return
            status = self.issuer.exited()
            if status is not None:
                raise DemoError(f"the issuer exited with status {status} while starting; "
                                f"log {self.issuer.log_path}:\n{self.issuer.log_tail()}")
            self.check_stop(stop)
            if asyncio.get_running_loop().time() > deadline:
                raise DemoError(f"the issuer is not listening on {host}:{port} in time; log {self.issuer.log_path}")
            await asyncio.sleep(0.05)

    @staticmethod
    def check_stop(stop: asyncio.Event) -> None:
        if stop.is_set():
            raise Interrupted()

    async def wait_ready(self, ready_timeout: float, stop: asyncio.Event) -> None:
        deadline = asyncio.get_running_loop().time() + ready_timeout
        await asyncio.gather(*(self._wait_ready(pod, deadline, stop) for pod in self.pods.values()))

    async def _wait_ready(self, pod: Pod, deadline: float, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        assert pod.proxy is not None
        last = "no answer"
        while True:
            status = pod.proxy.exited()
            if status is not None:
                raise DemoError(f"{pod.name} proxy exited with status {status} while starting; "
                                f"log {pod.proxy.log_path}:\n{pod.proxy.log_tail()}")
            try:
                response = await pod.admin_get("/ready", timeout=1.0)
                if response.status == 200:
                    return
                last = f"/ready answered {response.status}"
            except CLIENT_ERRORS as err:
                last = f"{type(err).__name__}: {err}"
            self.check_stop(stop)
            if loop.time() > deadline:
                raise DemoError(f"{pod.name} proxy not ready in time ({last}); "
                                f"log {pod.proxy.log_path}:\n{pod.proxy.log_tail()}")
            await asyncio.sleep(0.1)

    def check_alive(self) -> None:
        for child in self.children():
            status = child.exited()
            if status is not None:
                raise DemoError(f"{child.name} exited with status {status}; "
                                f"log {child.log_path}:\n{child.log_tail()}")

    def children(self) -> list[Child]:
        found = [pod.proxy for pod in self.pods.values() if pod.proxy is not None]
        return found + ([self.issuer] if self.issuer is not None else [])

    async def scrape(self) -> dict[str, dict[str, DirectionStats] | None]:
        """Each serving pod's proxy metrics (None: its admin port did not answer)."""
        pods = self.serving()
        results = await asyncio.gather(*(pod.scrape() for pod in pods))
        return {pod.name: result for pod, result in zip(pods, results, strict=True)}

    async def stop_apps(self) -> None:
        for pod in self.pods.values():
            if pod.app is not None:
                await pod.app.stop()

    def stop_processes(self) -> None:
        """Proxies first (they drain), then the issuer."""
        stop_all([pod.proxy for pod in self.pods.values() if pod.proxy is not None])
        if self.issuer is not None:
            stop_all([self.issuer])

    def close(self) -> None:
        """Processes, then the mode's resources; safe to call more than once."""
        try:
            self.stop_processes()
        finally:
            self.teardown()

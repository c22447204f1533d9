"""Wires listeners, admin and the two directions together; owns the lifecycle.

start: bind admin, outbound and inbound (any failure stops the start), then
ready; each listener is recorded in ``own`` as it binds, so that no upstream
connection reaches it (a later listener, such as tap, is added the same way).
SIGTERM, SIGINT or POST /shutdown (when enabled): not ready, listeners stop
accepting, idle connections close, in-flight requests finish with
``Connection: close`` until the drain deadline, then whatever is left is cut
and the process exits 0.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

import proxy
import proxy.compiled as fastpath
from proxy.admin.server import AdminHooks, AdminProtocol, AdminSettings
from proxy.config import Config
from proxy.core.accept import AcceptStage
from proxy.exchange.context import ExchangeContext
from proxy.inbound import server as inbound
from proxy.inbound.authz import InboundAuthorizer
from proxy.outbound import server as outbound
from proxy.telemetry import metrics
from proxy.telemetry import tls as tls_metrics
from proxy.telemetry.labels import text as labels_text
from proxy.telemetry.logging import get_logger
from proxy.telemetry.memory import Trimmer
from proxy.transport.connect import Connector
from proxy.transport.listen import bound_address, listen, listener_address
from proxy.transport.own import OwnAddresses

if TYPE_CHECKING:
    from proxy.discovery.metrics import DiscoveryMetrics
    from proxy.discovery.resolver import Resolver
    from proxy.identity.local import LocalIdentity
    from proxy.outbound.policy import OutboundPolicy
    from proxy.outbound.server import OutboundRouter
    from proxy.policy.watch import PolicyWatch
    from proxy.telemetry.accesslog import AccessLog
    from proxy.telemetry.tapserver import TapServer
    from proxy.telemetry.trace_export import SpanExporter
    from proxy.transport.tls import MeshTls

log = get_logger("proxy.app")

SWEEP_INTERVAL = 1.0
INTERFACES_INTERVAL = 30.0  # seconds between re-reads of the local interface addresses


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        # MESHPROXY_METRICS_WORKLOAD_LABELS: the workload's labels on every sample, made once.
        self._workload_labels = labels_text(config.metrics.labels())
        self.loop = asyncio.get_running_loop()
        self.ready = False
        self.stopping = asyncio.Event()
        self.servers: dict[str, asyncio.Server] = {}
        self.stages: dict[str, AcceptStage] = {}
        self.contexts: dict[str, ExchangeContext] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.trimmer = Trimmer()
        self.resolver: Resolver | None = None
        self.discovery_metrics: DiscoveryMetrics | None = None
        self.outbound_router: OutboundRouter | None = None
        # The policy file (None when MESHPROXY_POLICY is unset): ``policy_watch.current``
        # is the PolicySet in force, ``policy_watch.subscribe(cb)`` hears of new ones.
        self.policy_watch: PolicyWatch | None = None
        self.outbound_policy: OutboundPolicy | None = None
        self.identity: LocalIdentity | None = None  # when MESHPROXY_IDENTITY_NAME is set
        # MESHPROXY_ACCESS_LOG: one line per HTTP request on both listeners (None: off).
        self.access_log: AccessLog | None = None
        if config.access_log:
            # Imported only when on: an idle proxy does not pay for its writer's modules.
            from proxy.telemetry.accesslog import AccessLog
            self.access_log = AccessLog(config.access_log, config.access_log_buffer, self.loop)
        self.span_exporter: SpanExporter | None = None  # when MESHPROXY_TRACE_COLLECTOR is set
        self.tap_server: TapServer | None = None  # at the first tap connection
        self.tls_stats = {d: tls_metrics.TlsStats(d, config.policy.peer_label_limit) for d in ("outbound", "inbound")}
        self.authorizer = InboundAuthorizer(config.policy, config.identity.name is not None)
        # Every listener this proxy binds, recorded as it binds: no upstream
        # connection may reach one (proxy/transport/own.py).
        self.own = OwnAddresses()
        self._interfaces_read = self.loop.time()

    def _connector(self, direction: str) -> Connector:
        return Connector(self.loop, self.config.limits.connect_timeout, self.identity, self.tls_stats[direction],
                         self.own)

    def is_ready(self) -> bool:
        """Listening, and (with an identity) holding a certificate peers will accept."""
        return self.ready and (self.identity is None or self.identity.ready)

    async def start(self) -> None:
        cfg = self.config
        self._load_policy()
        hooks = AdminHooks(is_ready=self.is_ready, metrics=self.render_metrics,
                           shutdown=self.shutdown, config=cfg.describe)
        admin_settings = AdminSettings.from_config(cfg)
        self.servers["admin"] = await listen(self.loop, cfg.admin_listen, lambda: AdminProtocol(hooks, admin_settings))
        self.own.add_server("admin", self.servers["admin"])
        if cfg.identity.name is not None:
            from proxy.identity.local import LocalIdentity

            self.identity = LocalIdentity(cfg.identity, self.loop)
            self.identity.start()  # raises ConfigError: the command exits 64

        if cfg.discovery.destination is not None:
            # Loaded only when configured: the sources' libraries cost memory.
            from proxy.discovery.metrics import DiscoveryMetrics
            from proxy.discovery.resolver import build_resolver

            self.discovery_metrics = DiscoveryMetrics()
            self.resolver = build_resolver(cfg.discovery, self.discovery_metrics)
            assert self.resolver is not None  # a destination is set
            await self.resolver.start()
        record = self.access_log.record if self.access_log is not None else None
        tracers = self._tracers()
        out_stage, out_router = outbound.build(cfg, self.loop, self._connector("outbound"), self.own, self.resolver,
                                               self.outbound_policy, record, tracers["outbound"])
        self.outbound_router = out_router
        in_stage = inbound.build(cfg, self.loop, self._connector("inbound"), self.own, self.identity,
                                 self.tls_stats["inbound"], self.authorizer, record, tracers["inbound"])
        self.stages = {"outbound": out_stage, "inbound": in_stage}
        self.contexts = {name: stage.ctx for name, stage in self.stages.items()}
        self.servers["outbound"] = await listen(self.loop, cfg.outbound_listen, out_stage.protocol_factory())
        self.own.add_server("outbound", self.servers["outbound"])
        out_stage.listener = listener_address(self.servers["outbound"])
        self.servers["inbound"] = await listen(self.loop, cfg.inbound_listen, in_stage.protocol_factory())
        self.own.add_server("inbound", self.servers["inbound"])
        in_stage.listener = listener_address(self.servers["inbound"])
        if not cfg.tap.disabled:
            self.servers["tap"] = await listen(self.loop, cfg.tap.listen, self._tap_protocol)
            self.own.add_server("tap", self.servers["tap"])
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        self.ready = True
        log.info(
            "meshproxy listening" if not self.is_ready() else "meshproxy ready",
            identity=cfg.identity.name,
            version=proxy.__version__,
            compiled=all(fastpath.loaded_status().values()) and not fastpath.PURE_REQUESTED,
            **{name: str(bound_address(server)) for name, server in self.servers.items()},
        )

    def _tap_protocol(self) -> asyncio.Protocol:
        """A tap connection; the tap's modules and hub are made at the first one (an idle proxy does
        not carry them)."""
        if self.tap_server is None:
            from proxy.telemetry.tap import TapHub
            from proxy.telemetry.tapserver import TapServer

            hub = TapHub(self.config.metrics.workload())
            for ctx in self.contexts.values():
                hub.attach(ctx)
            self.tap_server = TapServer(self.loop, self.config, hub, self._mesh_tls)
        return self.tap_server.protocol()

    def _mesh_tls(self) -> MeshTls | None:
        return self.identity.tls if self.identity is not None else None

    def _tracers(self) -> dict:
        """A span maker per direction sharing one exporter, or None each when no collector is set."""
        settings = self.config.tracing
        if settings.collector is None:
            return {"outbound": None, "inbound": None}
        from proxy.telemetry.trace_export import SpanExporter
        from proxy.telemetry.tracing import Tracer

        identity = self.identity
        self.span_exporter = SpanExporter(self.loop, settings,
                                          mesh_tls=(lambda: identity.tls) if identity is not None else None)
        mtls = self.config.identity.name is not None
        return {d: Tracer(d, self.span_exporter, mtls) for d in ("outbound", "inbound")}

    def _load_policy(self) -> None:
        """Read MESHPROXY_POLICY before anything binds: an invalid file is a configuration error."""
        settings = self.config.policy
        if settings.path is None:
            return
        from proxy.config import POLICY, ConfigError
        from proxy.outbound.policy import OutboundPolicy
        from proxy.policy.watch import PolicyFileError, PolicyWatch

        watch = PolicyWatch(settings.path, self.config.discovery.cluster_domain)
        try:
            watch.load()
        except PolicyFileError as err:
            raise ConfigError(POLICY, settings.path, str(err)) from None
        self.policy_watch = watch
        from proxy.outbound.mirror import MirrorHub

        mirrors = MirrorHub(settings.mirror_max_in_flight, settings.mirror_max_body_bytes, settings.route_label_limit)
        self.outbound_policy = OutboundPolicy(watch.current, settings.retry_limit, settings.retry_buffer_bytes,
                                              settings.route_label_limit, self.config.discovery.cluster_domain,
                                              mirrors)
        watch.subscribe(self.outbound_policy.update)
        watch.subscribe(lambda policy_set: self.authorizer.update(policy_set.authz))
        self.authorizer.update(watch.current.authz)

    def addresses(self) -> dict[str, str]:
        return {name: str(bound_address(server)) for name, server in self.servers.items()}

    def _sweep(self) -> None:
        for ctx in self.contexts.values():
            ctx.sweep()
        if self.outbound_router is not None:
            self.outbound_router.sweep(self.loop.time())
        if self.identity is not None:
            self.identity.check_files()
        self.authorizer.sweep()
        if self.loop.time() - self._interfaces_read >= INTERFACES_INTERVAL:
            # Addresses come and go (a pod IP assigned late): a literal pod IP is then
            # refused before connecting again; the connected-socket check never waits for this.
            self._interfaces_read = self.loop.time()
            self.own.refresh_interfaces()
        if self.policy_watch is not None:
            self.policy_watch.poll()
        self.trimmer.observe(self._open() + sum(ctx.upstreams.idle_count() for ctx in self.contexts.values()))
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def render_metrics(self) -> bytes:
        http = [s for ctx in self.contexts.values() for s in ctx.labels.http_sets()]
        tcp = [s for ctx in self.contexts.values() for s in ctx.labels.tcp_sets()]
        extra: list[str] = []
        if self.discovery_metrics is not None:
            self.discovery_metrics.render(extra)
        if self.outbound_router is not None and self.resolver is not None:
            metrics.render_balancers(extra, self.outbound_router.services)
        if self.identity is not None:
            self.identity.render(extra)
            tls_metrics.render(extra, list(self.tls_stats.values()))
        self.authorizer.render(extra)
        if self.access_log is not None:
            self.access_log.render(extra)
        if self.span_exporter is not None:
            self.span_exporter.render(extra)
        if self.policy_watch is not None:
            self.policy_watch.render(extra)
            metrics.render_routes(extra, self.outbound_policy)
            egress = self.outbound_router.egress if self.outbound_router is not None else None
            if egress is not None:
                egress.render(extra)
            if self.outbound_policy is not None:
                self.outbound_policy.render(extra)
        if self.tap_server is not None:
            self.tap_server.render(extra)
        elif not self.config.tap.disabled:
            metrics.render_tap(extra, 0, 0, 0, 0, 0)
        return metrics.render(http, tcp, extra, self._workload_labels)

    def shutdown(self) -> None:
        if not self.stopping.is_set():
            log.info("shutdown: draining", drain_timeout_s=self.config.drain_timeout)
            self.stopping.set()

    def _open(self) -> int:
        return sum(len(ctx.connections) for ctx in self.contexts.values()) + sum(
            stage.open_connections for stage in self.stages.values()
        )

    async def drain(self) -> None:
        """Stop accepting, let in-flight work finish until the deadline, then cut the rest."""
        self.ready = False
        for name in ("outbound", "inbound"):
            server = self.servers.get(name)
            if server is not None:
                server.close()
        for ctx in self.contexts.values():
            ctx.drain()
        deadline = self.loop.time() + self.config.drain_timeout
        while self._open() and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for ctx in self.contexts.values():
            ctx.upstreams.close_all()
        left = self._open()
        if left:
            log.warning("drain deadline reached: closing remaining connections", connections=left)
            for ctx in self.contexts.values():
                for conn in list(ctx.connections):
                    if conn.transport is not None:
                        conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.resolver is not None:
            await self.resolver.stop()
        if self.identity is not None:
            await self.identity.stop()
        if self.span_exporter is not None:
            await self.span_exporter.close(min(self.config.tracing.export_timeout, 5.0))
        self.servers["admin"].close()
        if "tap" in self.servers:
            self.servers["tap"].close()
        if self.access_log is not None:
            self.access_log.close()  # what the last requests logged is written before the exit
        log.info("meshproxy stopped")

    async def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.shutdown)
        await self.stopping.wait()
        await self.drain()

"""Inbound: accept -> detect -> forward to the local app -> relay.

Connections redirected by iptables go to ``MESHPROXY_INBOUND_FORWARD_HOST`` at
their original destination port. A connection addressed to the listener
itself (no iptables) goes to ``MESHPROXY_INBOUND_DEFAULT_TARGET`` when set and
is refused (with a log line) otherwise. Every request of a connection goes to
the same place: the app behind this proxy.
"""

from __future__ import annotations

from proxy.config import Config, HostPort
from proxy.core.accept import AcceptStage
from proxy.core.addr import ConnMeta, Target
from proxy.errors import NoDestination
from proxy.exchange.context import ExchangeContext
from proxy.http.upstreams import Upstreams
from proxy.telemetry.counters import HttpStats, TcpStats

DIRECTION = "inbound"


class InboundRouter:
    """Chooses the local target of each inbound connection."""

    def __init__(self, forward_host: str, default_target: HostPort | None) -> None:
        self.forward_host = forward_host
        self.default = Target(default_target.host, default_target.port) if default_target else None
        self._by_port: dict[int, Target] = {}

    def connection_target(self, meta: ConnMeta) -> Target | None:
        if meta.orig_dst is None:
            return self.default
        port = meta.orig_dst[1]
        target = self._by_port.get(port)
        if target is None:
            target = Target(self.forward_host, port)
            self._by_port[port] = target  # bounded by the 65535 ports
        return target

    # Inbound relays an opaque connection to the same place its requests would go.
    tunnel_target = connection_target

    def route(self, head, meta: ConnMeta, conn=None) -> Target:
        target = self.connection_target(meta)
        if target is None:
            raise NoDestination("no inbound target for this connection")
        return target


def build(config: Config, loop, connector, identity=None, tls_stats=None, authorizer=None) -> AcceptStage:
    """The inbound accept stage, its exchange context and router, whole."""
    router = InboundRouter(config.inbound_forward_host, config.inbound_default_target)
    limits = config.limits
    tcp_dst = TcpStats(DIRECTION, "dst")
    upstreams = Upstreams(loop, True, connector, tcp_dst, limits)
    ctx = ExchangeContext(loop, DIRECTION, router, upstreams, HttpStats(DIRECTION), TcpStats(DIRECTION, "src"),
                          tcp_dst, limits)
    return AcceptStage(
        direction=DIRECTION,
        ctx=ctx,
        connector=connector,
        limits=limits,
        opaque_ports=config.opaque_ports,
        max_connections=config.max_connections,
        connection_target=router.connection_target,
        tunnel_target=router.tunnel_target,
        refuse_without_target=True,
        # Peer proxies name the app port first (read before detection).
        accept_transport_header=True,
        identity=identity,
        tls_stats=tls_stats,
        handshake_timeout=config.identity.handshake_timeout,
        authorizer=authorizer,
    )

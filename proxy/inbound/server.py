"""Inbound: accept -> detect -> forward to the local app -> relay.

Connections redirected by iptables go to ``MESHPROXY_INBOUND_FORWARD_HOST`` at
their original destination port. A connection addressed to the listener
itself (no iptables) goes to ``MESHPROXY_INBOUND_DEFAULT_TARGET`` when set and
is refused (with a log line) otherwise. Every request of a connection goes to
the same place: the app behind this proxy.

A peer proxy names the app port in a transport header; who may send one is
decided by ``HeaderTrust`` (Linkerd's rule), and it may never name one of
this proxy's own listener ports.
"""

from __future__ import annotations

import ipaddress

from proxy.config import Config, HostPort
from proxy.core.accept import AcceptStage
from proxy.core.addr import ConnMeta, Target
from proxy.errors import NoDestination
from proxy.exchange.context import ExchangeContext
from proxy.http.upstreams import Upstreams
from proxy.inbound.authz import ConnGrants
from proxy.telemetry.labels import LabelSets
from proxy.transport.own import OwnAddresses, parse_ip

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


class HeaderTrust:
    """Who may steer a connection with a transport header, and to which ports.

    The header decides which local port a connection reaches, so it is obeyed
    only from a peer proxy that proved itself: inside mesh TLS this proxy
    terminated, with a verified client identity. When this proxy has no
    identity at all (identity disabled on purpose), there is no proof to ask
    for, and the header is obeyed only from clients inside
    ``MESHPROXY_CLUSTER_NETWORKS``. It may name only the app's ports: never a
    port of this proxy's own listeners (that would loop, open the outbound
    listener as a relay, or reach the admin).
    """

    __slots__ = ("has_identity", "networks", "own")

    def __init__(self, has_identity: bool, networks: tuple[str, ...], own: OwnAddresses) -> None:
        self.has_identity = has_identity
        self.networks = tuple(ipaddress.ip_network(net, strict=False) for net in networks)
        self.own = own

    def refusal(self, meta: ConnMeta, alpn_transport: bool) -> str | None:
        """Why a header on this connection is not to be obeyed; None when it is.

        ``alpn_transport``: the mesh TLS session negotiated the transport ALPN.
        """
        if meta.tls:
            if meta.client_id is None:
                return "mesh TLS without a verified client identity"
            if not alpn_transport:
                return "mesh TLS session that did not negotiate the transport protocol"
            return None
        if self.has_identity:
            return "plaintext (this proxy has an identity: headers are accepted only inside mesh TLS)"
        client = parse_ip(meta.client[0])
        if client is None or not any(client in net for net in self.networks if net.version == client.version):
            return "plaintext from a client outside MESHPROXY_CLUSTER_NETWORKS"
        return None

    def port_refusal(self, port: int) -> str | None:
        """Why a header may not name ``port``; None for an app port."""
        if port in self.own.ports:
            names = sorted({item.name for item in self.own.listeners if item.port == port})
            return f"names this proxy's own {'/'.join(names)} port {port}"
        return None


def build(config: Config, loop, connector, own: OwnAddresses, identity=None, tls_stats=None,
          authorizer=None, access_log=None, tracer=None) -> AcceptStage:
    """The inbound accept stage, its exchange context and router, whole (``access_log``: the hook, or None)."""
    router = InboundRouter(config.inbound_forward_host, config.inbound_default_target)
    limits = config.limits
    labels = LabelSets(DIRECTION, config.policy.peer_label_limit, config.identity.name is not None,
                       router.connection_target)
    upstreams = Upstreams(loop, True, connector, labels.tcp_dst_default, limits, labels)
    ctx = ExchangeContext(loop, DIRECTION, router, upstreams, labels.http_default, labels.tcp_src_default,
                          labels.tcp_dst_default, limits, 0, labels,
                          access_log=access_log, tracer=tracer)
    grants = ConnGrants(authorizer, labels.tcp_src, config.policy.authz_cache) if authorizer is not None else None
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
        header_trust=HeaderTrust(config.identity.name is not None,
                                 config.policy.cluster_networks, own),
        identity=identity,
        tls_stats=tls_stats,
        handshake_timeout=config.identity.handshake_timeout,
        authorizer=authorizer,
        grants=grants,
    )

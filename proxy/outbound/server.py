"""Outbound: accept -> detect -> pick the destination of each request -> connect -> relay.

Destination precedence (per request): the connection's original destination
when iptables redirected it here, then ``l5d-dst-override``, then an
absolute-form request URI (``http_proxy=`` clients) or ``CONNECT host:port``,
then ``Host``. With no discovery configured, the destination is connected to
directly. With a policy file, a destination that has a policy gets its route
(timeouts, retries, metrics; see outbound/policy.py) and is split over its
concrete backends, each balanced like any discovered service.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from proxy.config import BalancerSettings, Config
from proxy.core.accept import AcceptStage
from proxy.core.addr import ConnMeta, parse_authority
from proxy.core.target import Target
from proxy.errors import NoDestination, NoEndpoints, OwnAddress, RouteRedirect, RoutingError
from proxy.exchange.context import ExchangeContext
from proxy.http.upstreams import Upstreams
from proxy.telemetry.labels import LabelSets
from proxy.telemetry.logging import get_logger
from proxy.transport.own import OwnAddresses

if TYPE_CHECKING:
    from proxy.outbound.balance import BalancedService
    from proxy.outbound.egress import EgressPolicy, EgressRuntime
    from proxy.outbound.failover import FailoverState
    from proxy.outbound.policy import OutboundPolicy, ServiceRuntime

DIRECTION = "outbound"
CACHE_LIMIT = 4096  # distinct authorities remembered; the cache is cleared when full
SERVICE_LIMIT = 1024  # discovered services kept at once
SERVICE_IDLE = 60.0  # a service unused this long is forgotten (and its watch dropped)

log = get_logger("proxy.outbound")


class OutboundRouter:
    """Chooses the target of each outbound request: the logical destination, then its endpoint.

    With discovery configured, a destination that discovery knows becomes a
    ``BalancedService`` whose balancer picks the endpoint per request; one it
    does not know is forwarded to the destination unchanged (passthrough).
    """

    def __init__(self, own: OwnAddresses, loop=None, resolver=None,
                 settings: BalancerSettings | None = None, policy: OutboundPolicy | None = None) -> None:
        # This proxy's listeners: a destination naming one (as an IP literal,
        # in any spelling) is refused here, before any balancer pick; the connector
        # catches names once resolved, and the pod's IPs once connected.
        self.own = own
        self.loop = loop
        self.resolver = resolver
        self.settings = settings
        # None: no policy file configured; the only per-request cost is this check.
        self.policy = policy
        self._authorities: dict[tuple[bytes, int], Target] = {}
        self._orig: dict[tuple[str, int], Target] = {}
        self._concrete: dict[tuple[str, int], Target] = {}
        # (host, port) -> BalancedService, or None for names discovery does not know.
        self.services: dict[tuple[str, int], BalancedService | None] = {}
        # Host -> HostDecision; emptied whenever a policy or a service it may name changes.
        self._hosts: dict[bytes, HostDecision] = {}
        if policy is not None:
            policy.listeners.append(self._policy_changed)
        # EgressNetworks of the policy file (outbound/egress.py): None without a policy file.
        self.egress: EgressPolicy | None = None

    # -- the logical destination ------------------------------------------------
    def connection_target(self, meta: ConnMeta) -> Target | None:
        if meta.orig_dst is None:
            return None
        target = self._orig.get(meta.orig_dst)
        if target is None:
            target = Target(meta.orig_dst[0], meta.orig_dst[1])
            self._remember(self._orig, meta.orig_dst, target)
        return target

    def connection_protocol(self, meta: ConnMeta) -> str | None:
        """Discovery's protocol hint for a redirected connection's destination: "opaque" when every
        endpoint of its service is opaque (detection is skipped), else None."""
        target = self.connection_target(meta)
        if target is None or self.resolver is None:
            return None
        service = self._service(target)
        if service is None:
            return None
        endpoints = service.watch.snapshot.endpoints
        if endpoints and all(ep.protocol == "opaque" for ep in endpoints):
            return "opaque"
        return None

    def logical(self, head, meta: ConnMeta) -> Target:
        if meta.orig_dst is not None:
            target = self.connection_target(meta)
            assert target is not None
            self._refuse_own(target)
            return target
        via_connect = False
        if head.dst_override is not None:
            target = self._authority(head.dst_override, 80)
        elif head.method == b"CONNECT":
            target = self._authority(head.target, 443)
            via_connect = True
        elif head.target[:1] not in (b"/", b"*"):
            target = self._absolute(head.target)
        elif head.host is not None:
            target = self._authority(head.host, 80)
        else:
            raise NoDestination()
        self._refuse_own(target)
        if via_connect:
            target = Target(target.host, target.port, via_connect=True)
        return target

    def _refuse_own(self, target: Target) -> None:
        own = self.own
        if target.port in own.ports:  # one set lookup for nearly every request
            hit = own.listener(target.host, target.port)
            if hit is not None:
                raise OwnAddress(f"destination {target} is this proxy's own {hit.name} listener")

    # -- the endpoint ------------------------------------------------------------
    def route(self, head, meta: ConnMeta, conn=None):
        host = head.host
        if (host is not None and meta.orig_dst is None and head.dst_override is None
                and len(head.target) > 0 and head.target[0] == 47 and head.method != b"CONNECT"):
            # The common request: named by its Host alone, whose decision (the logical target, its policy
            # runtime or its discovered service) is remembered; the route, split and endpoint are still
            # picked per request.
            decision = self._hosts.get(host)
            if decision is None:
                decision = self._decide(host)
            elif decision.target.port in self.own.ports:  # own addresses can grow (a late pod IP): asked again
                self._refuse_own(decision.target)
            target = decision.target
            if decision.runtime is not None:
                return self._policy_route(decision.runtime, head, conn, target)
            if decision.service is not None:
                return decision.service.route(conn)
            return target
        target = self.logical(head, meta)
        egress = self.egress
        if egress is not None and meta.orig_dst is not None and egress.active:
            outside = egress.http(target)
            if outside is not None:
                return self._policy_route(outside, head, conn, target)
        if self.policy is not None and not target.via_connect:
            runtime = self.policy.lookup(target)
            if runtime is not None:
                return self._policy_route(runtime, head, conn, target)
        if self.resolver is None:
            return target
        if target.via_connect:
            # A CONNECT names a destination like any other: a service discovery
            # knows is balanced (per tunnel) over its endpoints, meshed ones
            # through their proxy.
            service = self._service(self._concrete_target((target.host, target.port)))
            if service is None:
                return target
            picked = service.pick_connection()
            if picked is None:
                raise NoEndpoints(f"no ready endpoints for {service.name}")
            return picked
        service = self._service(target)
        if service is None:
            return target
        return service.route(conn)

    def _decide(self, host: bytes) -> HostDecision:
        """What ``route`` decides for a request named by ``host`` alone (no original destination,
        override, absolute URI or CONNECT), remembered until the policy or the known services change."""
        target = self._authority(host, 80)
        self._refuse_own(target)
        runtime = self.policy.lookup(target) if self.policy is not None else None
        service = self._service(target) if runtime is None and self.resolver is not None else None
        decision = HostDecision(target, runtime, service)
        self._remember(self._hosts, host, decision)
        return decision

    def _policy_route(self, runtime: ServiceRuntime | EgressRuntime, head, conn, logical: Target):
        """The logical service has a policy: its route (told to the relay as ``conn.rp``), then the concrete backend."""
        rp = runtime.match(head, conn)
        rp.stats.requests += 1
        if rp.limit:
            rp.budget.deposit(time.monotonic())
        if conn is not None:
            conn.rp = rp
        if rp.redirect is not None:  # answered here: no backend is asked
            from proxy.outbound.policy import redirect_location  # with a policy only (it loads the route modules)

            raise RouteRedirect(redirect_location(rp.route, head.target, head.host, logical), rp.redirect.status)
        group = rp.failover
        if group is not None:
            address = group.pick(self._ready)
            rp.picked(address, conn)
        else:
            address = runtime.backend_for(rp, conn)
        return self._endpoint(self._concrete_target(address), conn)

    def _ready(self, address: tuple[str, int], group: FailoverState) -> bool:
        """Whether a failover group's backend can take a request: discovery lists an endpoint the balancer
        has not ejected, or one due for its probe (a name discovery does not know: yes)."""
        if self.resolver is None:
            return True
        service = self._service(self._concrete_target(address))
        if service is None:
            return True
        if address == group.order[0] and group.window is not None and service.observer != group.observe:
            service.observer = group.observe
        balancer = service.balancer
        if balancer.ready_count > 0:
            return True
        now = time.monotonic_ns()
        due = balancer.next_ready_ns(now)
        return 0 <= due <= now

    def _concrete_target(self, address) -> Target:  # address: (host, port); typed in server.pxd
        target = self._concrete.get(address)
        if target is None:
            host, port = address  # unpacked, not indexed: checked even where bounds checks are off
            target = Target(host, port)
            self._remember(self._concrete, address, target)
        return target

    def concrete_endpoint(self, address: tuple[str, int], conn):
        """The endpoint of a concrete service, no route policy asked (mirrored copies)."""
        return self._endpoint(self._concrete_target(address), conn)

    def _endpoint(self, target: Target, conn):
        if self.resolver is None:
            return target
        service = self._service(target)
        return target if service is None else service.route(conn)

    def reroute(self, head, meta: ConnMeta, failed: Target, conn, resplit: bool = False):
        """Another endpoint (a new balancer pick) for a request that failed on ``failed``; a retry or a
        connect that did not reach it. Unbalanced targets have only themselves.

        ``resplit`` (a policy retry): the route's traffic split picks the
        concrete backend again first; the endpoint that failed is avoided
        when the same backend comes up.
        """
        rp = conn.rp if conn is not None else None
        group = rp.failover if rp is not None else None
        if group is not None or (resplit and rp is not None and rp.resplit is not None):
            # A failover group is asked again even after a connect error: the primary may just have gone.
            if group is not None:
                address = group.pick(self._ready)
                # A retry is a new attempt; after a connect error the attempt moves only if the group moved.
                if resplit or rp.by_address.get(address) is not conn.backend:  # type: ignore[union-attr]
                    rp.picked(address, conn)  # type: ignore[union-attr]
            else:
                address = rp.resplit(conn)  # type: ignore[union-attr]
            concrete = self._concrete_target(address)
            service = self._service(concrete) if self.resolver is not None else None
            if service is None:
                return concrete
            return service.route(conn, failed.endpoint if service is failed.service else None)
        service = failed.service
        return failed if service is None else service.route(conn, failed.endpoint)

    def tunnel_target(self, meta: ConnMeta, quiet: bool = False) -> Target | None:
        """Opaque TCP is split by weight and balanced per connection with the same balancer.
        Raises ``EgressDenied`` when an EgressNetwork refuses the connection; ``quiet`` (the
        server-first probe asks): None instead, and nothing counted."""
        target = self.connection_target(meta)
        egress = self.egress
        if target is not None and egress is not None and egress.active:
            where = egress.connection(meta, target, quiet)
            if where is False:
                return None  # denied, asked quietly by the probe (a real hand-off raises EgressDenied)
            if isinstance(where, tuple):
                target = self._concrete_target(where)
                return self._balanced_tunnel(target)
        if target is not None and self.policy is not None:
            runtime = self.policy.lookup(target)
            if runtime is not None:
                group = runtime.failover
                target = self._concrete_target(group.pick(self._ready) if group is not None
                                               else runtime.backend_for_connection())
        return self._balanced_tunnel(target)

    def probe_target(self, meta: ConnMeta) -> Target | None:
        return self.tunnel_target(meta, quiet=True)

    def _balanced_tunnel(self, target: Target | None) -> Target | None:
        if target is None or self.resolver is None:
            return target
        service = self._service(target)
        if service is None:
            return target
        return service.pick_connection()

    def _service(self, target: Target) -> BalancedService | None:
        key = (target.host, target.port)
        try:
            return self.services[key]
        except KeyError:
            pass
        watch = self.resolver.lookup(target.host, target.port)
        service = None
        if watch is not None:
            # Imported here: without discovery the balancer is never loaded.
            from proxy.outbound.balance import BalancedService

            assert self.settings is not None
            service = BalancedService(self.loop, watch.name, watch, self.settings)
            if self.policy is not None:
                service.set_policy_accrual(self.policy.accrual_for(target.host, target.port))
        if len(self.services) >= SERVICE_LIMIT:
            self.sweep(self.loop.time(), 0.0)
        self.services[key] = service
        return service

    def _policy_changed(self) -> None:
        """A policy reload: its failureAccrual settings reach the balancers already built."""
        assert self.policy is not None
        self._hosts.clear()
        for (host, port), service in self.services.items():
            if service is not None:
                service.set_policy_accrual(self.policy.accrual_for(host, port))

    def unqueue(self, conn) -> None:
        """Take a request that gave up (route timeout) out of every balancer's queue."""
        for service in self.services.values():
            if service is not None and service.waiters:
                service.forget_waiter(conn)

    def sweep(self, now: float, idle_limit: float = SERVICE_IDLE) -> None:
        """Forget services (and unknown names) nobody used for ``idle_limit`` seconds."""
        for key, service in list(self.services.items()):
            if service is None:
                if idle_limit == 0.0:
                    del self.services[key]
                    self._hosts.clear()
            elif service.idle(now, idle_limit):
                service.close()
                del self.services[key]
                self._hosts.clear()

    def _authority(self, value: bytes, default_port: int) -> Target:
        key = (value, default_port)
        target = self._authorities.get(key)
        if target is None:
            target = parse_authority(value, default_port)
            if target is None:
                raise RoutingError(f"invalid destination authority {value[:100].decode('latin-1')!r}")
            self._remember(self._authorities, key, target)
        return target

    def _absolute(self, uri: bytes) -> Target:
        scheme, sep, rest = uri.partition(b"://")
        scheme = scheme.lower()
        if not sep or scheme not in (b"http", b"https"):
            raise RoutingError("unsupported request target (expected origin-form or http:// URI)")
        authority = rest.split(b"/", 1)[0].split(b"?", 1)[0]
        return self._authority(authority, 443 if scheme == b"https" else 80)

    @staticmethod
    def _remember(cache: dict, key, value) -> None:
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[key] = value


class HostDecision:
    """The router's decision for one Host: the logical target, and its policy runtime or discovered
    service (both None: passthrough)."""

    __slots__ = ("target", "runtime", "service")

    def __init__(self, target: Target, runtime: ServiceRuntime | None, service: BalancedService | None) -> None:
        self.target = target
        self.runtime = runtime
        self.service = service


def build(config: Config, loop, connector, own: OwnAddresses, resolver=None,
          policy: OutboundPolicy | None = None, access_log=None, tracer=None) -> tuple[AcceptStage, OutboundRouter]:
    """The outbound accept stage, its exchange context and router, whole (``access_log``: the hook, or None)."""
    router = OutboundRouter(own, loop, resolver, config.balancer, policy)
    limits = config.limits
    labels = LabelSets(DIRECTION, config.policy.peer_label_limit, config.identity.name is not None)
    upstreams = Upstreams(loop, False, connector, labels.tcp_dst_default, limits, labels)
    ctx = ExchangeContext(loop, DIRECTION, router, upstreams, labels.http_default, labels.tcp_src_default,
                          labels.tcp_dst_default, limits, config.balancer.max_in_flight,
                          labels, access_log=access_log, tracer=tracer)
    if policy is not None and policy.mirrors is not None:
        # Mirrored copies: their own context (no in-flight shedding, access log, tracing or error lines),
        # the same relays and balancers.
        mirrors = policy.mirrors
        mirrors.router = router
        mirrors.ctx = ExchangeContext(loop, DIRECTION, mirrors, upstreams, labels.http_default,
                                      labels.tcp_src_default, labels.tcp_dst_default, limits, 0, labels)
        mirrors.ctx.log_errors = False
    if policy is not None:
        from proxy.outbound.egress import EgressPolicy

        egress = router.egress = EgressPolicy(config.policy.cluster_networks, policy.registry, policy.retry_limit,
                                              policy.replay_limit)
        egress.update(policy.policy_set.egress)
        policy.listeners.append(lambda: egress.update(policy.policy_set.egress))
        # A new policy invalidates the per-connection route caches.
        policy.listeners.append(lambda: setattr(ctx, "policy_gen", ctx.policy_gen + 1))
    stage = AcceptStage(
        direction=DIRECTION,
        ctx=ctx,
        connector=connector,
        limits=limits,
        opaque_ports=config.opaque_ports,
        max_connections=config.max_connections,
        connection_target=router.connection_target,
        tunnel_target=router.tunnel_target,
        refuse_without_target=False,
        connection_protocol=router.connection_protocol,
        probe_target=router.probe_target,
    )
    return stage, router

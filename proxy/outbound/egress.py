"""Egress control at run time: traffic whose original destination is in an EgressNetwork, by route or by policy.

``EgressPolicy`` compiles the policy file's EgressNetworks (egress_model.py)
once per version. A connection the app made to an address outside the
mesh (its SO_ORIGINAL_DST) belongs to the most specific network holding it
(the longest matching CIDR; a network without ``networks`` holds every
address outside ``MESHPROXY_CLUSTER_NETWORKS`` and ranks last); then, as in
Linkerd:

* HTTP (HTTP/1 and HTTP/2): the network's HTTPRoutes and GRPCRoutes for the
  destination port, by Host, are matched like a Service's (``EgressRuntime``
  is a ServiceRuntime per hostname group); a request matching none takes the
  network's default route ``http-egress-allow`` (to the original
  destination) or ``http-egress-deny`` (403 ``traffic not allowed``, gRPC
  PERMISSION_DENIED). Route metrics are the outbound route families
  (``outbound_grpc_route_*`` for a GRPCRoute) with ``parent_kind="EgressNetwork"``
  and the request's ``hostname``, and their ``backend_*`` families per backend:
  the original destination as Linkerd names it (``backend_kind="EgressNetwork"``,
  the network's name and namespace, the destination port), or a Service;
* TLS (not terminated here): the TLSRoute whose hostnames hold the
  ClientHello's SNI, else a TCPRoute, else the default; TCP: a TCPRoute, else
  the default. A denied connection is closed (``EgressDenied``: the accept
  stage logs it); each routed
  connection counts in ``outbound_tls_route_open_total`` /
  ``outbound_tcp_route_open_total`` and, when it ends, in
  ``outbound_tls_route_close_total`` / ``outbound_tcp_route_close_total``
  with Linkerd's ``error``: empty for a connection that ran its course,
  ``forbidden`` for a denied one, ``unexpected`` when the backend could not
  be reached (``invalid_backend`` and ``invalid_policy`` are Linkerd's too,
  for states this proxy refuses when it loads the policy: always 0).
"""

from __future__ import annotations

import copy
import ipaddress
import random

from proxy.core.addr import TRANSPORT_ROUTE, ConnMeta, Target
from proxy.errors import EgressDenied
from proxy.outbound.policy import Registry, RoutePolicy, ServiceRuntime, _backend_address, service_backend_ref
from proxy.policy.egress_model import HTTP_KINDS, ORIGINAL_DST, EgressNetwork, EgressRoute
from proxy.policy.model import Backend, Route, ServicePolicy
from proxy.policy.split import WeightedBackends
from proxy.telemetry.labels import text

CACHE_LIMIT = 4096  # destinations (address, port) remembered per policy version; cleared when full
HOSTS_PER_ROUTE = 256  # distinct Host labels per egress runtime; more share "other"
DENIED = "traffic not allowed"  # Linkerd's message for the default deny route
_POLICY_GROUP = "policy.linkerd.io"
CLOSE_ERRORS = ("", "forbidden", "invalid_backend", "invalid_policy", "unexpected")  # Linkerd's, in its order


class RouteConnections:
    """One egress TLS or TCP route's connection counters (one label set): opened, and closed by ``error``."""

    __slots__ = ("opened", "closed")

    def __init__(self) -> None:
        self.opened = 0
        self.closed = [0] * len(CLOSE_ERRORS)

    def close(self, unexpected: bool) -> None:
        """The connection ended (``unexpected``: its backend could not be reached)."""
        self.closed[4 if unexpected else 0] += 1


def _authority(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _host_of(value: bytes | str | None) -> str:
    """A Host header or SNI, lower case, without its port."""
    if value is None:
        return ""
    host = value.decode("latin-1") if isinstance(value, bytes) else value
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _host_rank(hostnames: tuple[str, ...], host: str) -> int | None:
    """Gateway API hostname precedence: 0 an exact name, then wildcards by suffix length, last a route
    without hostnames; None: the route is not for this host."""
    if not hostnames:
        return 1 << 16
    best = None
    for name in hostnames:
        if name == host:
            return 0
        if name.startswith("*.") and host.endswith(name[1:]) and len(host) > len(name) - 1:
            rank = (1 << 8) - len(name)
            best = rank if best is None or rank < best else best
    return best


def parent_text(network: EgressNetwork, port: int) -> str:
    return text((("parent_group", _POLICY_GROUP), ("parent_kind", "EgressNetwork"),
                 ("parent_namespace", network.namespace), ("parent_name", network.name),
                 ("parent_port", str(port)), ("parent_section_name", "")))


def _route_ref(route: EgressRoute | None, default_name: str) -> tuple[str, str, str, str]:
    if route is None:
        return ("", "default", "", default_name)
    return (route.group, route.kind, route.namespace, route.name)


class EgressRuntime:
    """HTTP to one original destination (address, port) in an EgressNetwork; the router's runtime interface
    (``match``, ``backend_for``), like a Service's ``ServiceRuntime``."""

    def __init__(self, network: EgressNetwork, ip: str, port: int, registry: Registry, retry_limit: int,
                 replay_limit: int) -> None:
        self.network = network
        self.dst = _authority(ip, port)
        self.registry = registry
        self.parent = parent_text(network, port)
        self.deny = network.traffic_policy == "Deny"
        self.address = (ip, port)
        # The original destination as a route's backend, as Linkerd's policy controller names it.
        self.backend_ref = text((("backend_group", _POLICY_GROUP), ("backend_kind", "EgressNetwork"),
                                 ("backend_namespace", network.namespace), ("backend_name", network.name),
                                 ("backend_port", str(port)), ("backend_section_name", "")))
        self.default_name = "http-egress-deny" if self.deny else "http-egress-allow"
        groups: dict[tuple[str, ...], list[EgressRoute]] = {}
        for route in network.routes:
            if route.kind in HTTP_KINDS and route.port in (None, port):
                groups.setdefault(route.hostnames, []).append(route)
        # (hostnames, runtime, rule id -> its EgressRoute); rules going to the original destination have no backends.
        self.groups = []
        self.owner: dict[int, ServiceRuntime] = {}
        for hostnames, members in groups.items():
            rules = tuple(r for x in members for r in x.rules)
            runtime = ServiceRuntime(ServicePolicy(self.dst, gateway_routes=rules), port, registry, retry_limit,
                                     replay_limit, count_backends=False)
            by_rule = {id(rule): x for x in members for rule in x.rules}
            self.groups.append((hostnames, runtime, by_rule))
            for rp in runtime.routes.values():
                self.owner[id(rp)] = runtime
        self.base = ServiceRuntime(ServicePolicy(self.dst), port, registry, retry_limit, replay_limit,
                                   count_backends=False)
        self.owner[id(self.base.default)] = self.base
        self._by_host: dict[tuple[int, str], RoutePolicy] = {}
        self.random = random.random

    def match(self, head, conn) -> RoutePolicy:
        host = _host_of(head.host)
        ranked = sorted((rank, i) for i, (names, _, _) in enumerate(self.groups)
                        if (rank := _host_rank(names, host)) is not None)
        for _, i in ranked:
            _, runtime, by_rule = self.groups[i]
            rp = runtime.match(head, conn)
            if rp is not runtime.default:
                return self._labelled(rp, by_rule[id(rp.route)], host, runtime)
        rp = self._labelled(self.base.default, None, host, self.base)
        if self.deny:
            # Counted and answered like a route's own response (Linkerd's failure-injecting default route).
            rp.stats.requests += 1
            if conn is not None:
                conn.rp = rp
            raise EgressDenied(DENIED)
        return rp

    def _labelled(self, rp: RoutePolicy, route: EgressRoute | None, host: str, owner: ServiceRuntime) -> RoutePolicy:
        """``rp`` counted under this request's ``hostname`` (a copy per host, bounded)."""
        key = (id(rp), host)
        found = self._by_host.get(key)
        if found is not None:
            return found
        if len(self._by_host) >= HOSTS_PER_ROUTE:
            host, key = "other", (id(rp), "other")
            found = self._by_host.get(key)
            if found is not None:
                return found
        group, kind, namespace, name = _route_ref(route, self.default_name)
        route_text = self.parent + "," + text((("route_group", group), ("route_kind", kind),
                                               ("route_namespace", namespace), ("route_name", name)))
        grpc = kind == "GRPCRoute"
        clone = copy.copy(rp)
        clone.stats = self.registry.route_stats(self.dst, f"{rp.route.name}@{host}",
                                                route_text + "," + text((("hostname", host),)), grpc)
        # Every hostname's copy of a rule shares its backends' counters (the backend families have no hostname);
        # Linkerd's deny route has no backend at all.
        if route is not None or not self.deny:
            clone.concretes = tuple((address, self.registry.backend_stats(
                self.dst, rp.route.name, route_text + "," + self._backend_text(address), grpc))
                for address, _ in rp.concretes)
        self._by_host[key] = clone
        self.owner[id(clone)] = owner
        return clone

    def backend_for(self, rp: RoutePolicy, conn=None) -> tuple[str, int]:
        return self.owner[id(rp)].backend_for(rp, conn)

    def _backend_text(self, address: tuple[str, int]) -> str:
        """The ``backend_*`` labels of a route's backend: the original destination, or a Service."""
        if address == self.address:
            return self.backend_ref
        return service_backend_ref(address)


class EgressPolicy:
    """The EgressNetworks of one policy version, compiled; ``update`` swaps in the next."""

    def __init__(self, cluster_networks: tuple[str, ...], registry: Registry, retry_limit: int,
                 replay_limit: int) -> None:
        self.cluster = tuple(ipaddress.ip_network(net.strip(), strict=False) for net in cluster_networks)
        self.registry = registry
        self.retry_limit = retry_limit
        self.replay_limit = replay_limit
        self.networks: tuple[EgressNetwork, ...] = ()
        # (prefix length, file order, network, (network, excluded) or () for "outside the cluster").
        self._compiled: list[tuple[int, int, EgressNetwork, tuple]] = []
        self._by_ip: dict[str, EgressNetwork | None] = {}
        self._http: dict[tuple[str, int], EgressRuntime | None] = {}
        # Linkerd's outbound_{tls,tcp}_route_open_total and _close_total, by label text (bounded).
        self.routes: dict[str, dict[str, RouteConnections]] = {"tls": {}, "tcp": {}}
        self.denied_connections = 0

    def update(self, networks: tuple[EgressNetwork, ...]) -> None:
        compiled: list[tuple[int, int, EgressNetwork, tuple]] = []
        for order, network in enumerate(networks):
            if network.networks is None:
                compiled.append((-1, order, network, ()))
                continue
            for net in network.networks:
                parsed = ipaddress.ip_network(net.cidr, strict=False)
                excluded = tuple(ipaddress.ip_network(x, strict=False) for x in net.exclude)
                compiled.append((parsed.prefixlen, order, network, (parsed, excluded)))
        # The most specific network first; equally specific ones in file order.
        compiled.sort(key=lambda item: (-item[0], item[1]))
        self.networks = networks
        self._compiled = compiled
        self._by_ip = {}
        self._http = {}

    @property
    def active(self) -> bool:
        return bool(self._compiled)

    def network(self, ip: str) -> EgressNetwork | None:
        """The most specific EgressNetwork holding ``ip`` (cached per address), or None."""
        try:
            return self._by_ip[ip]
        except KeyError:
            pass
        found = None
        try:
            addr = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            addr = None
        if addr is not None:
            for prefix, _, network, spec in self._compiled:
                if prefix < 0:
                    if not any(addr.version == net.version and addr in net for net in self.cluster):
                        found = network
                        break
                    continue
                net, excluded = spec
                if addr.version == net.version and addr in net and not any(addr in x for x in excluded):
                    found = network
                    break
        if len(self._by_ip) >= CACHE_LIMIT:
            self._by_ip.clear()
        self._by_ip[ip] = found
        return found

    def http(self, target: Target) -> EgressRuntime | None:
        """The egress runtime of an HTTP request's original destination; None when it is not egress."""
        key = (target.host, target.port)
        try:
            return self._http[key]
        except KeyError:
            pass
        network = self.network(target.host)
        runtime = None if network is None else EgressRuntime(network, target.host, target.port, self.registry,
                                                             self.retry_limit, self.replay_limit)
        if len(self._http) >= CACHE_LIMIT:
            self._http.clear()
        self._http[key] = runtime
        return runtime

    def connection(self, meta: ConnMeta, target: Target, quiet: bool = False) -> tuple[str, int] | None | bool:
        """Where an opaque or TLS connection to ``target`` (its original destination) goes: an address, or
        None when it is not egress. Denied: ``EgressDenied`` (counted; the accept stage logs and closes), or
        False when ``quiet``."""
        network = self.network(target.host)
        if network is None:
            return None
        sni = _host_of(meta.sni) if meta.sni else ""
        chosen: tuple[EgressRoute, Route] | None = None
        if sni:
            ranked = sorted((rank, i) for i, r in enumerate(network.routes)
                            if r.kind == "TLSRoute" and r.port in (None, target.port)
                            and (rank := _host_rank(r.hostnames, sni)) is not None)
            if ranked:
                route = network.routes[ranked[0][1]]
                chosen = (route, route.rules[0])
        if chosen is None:
            for route in network.routes:
                if route.kind == "TCPRoute" and route.port in (None, target.port):
                    chosen = (route, route.rules[0])
                    break
        family = "tls" if meta.sni is not None else "tcp"
        deny = chosen is None and network.traffic_policy == "Deny"
        default = f"{family}-egress-{'deny' if deny else 'allow'}"
        labels = parent_text(network, target.port) + "," + text(
            (*zip(("route_group", "route_kind", "route_namespace", "route_name"),
                  _route_ref(chosen[0] if chosen else None, default)),
             *((("hostname", sni),) if family == "tls" else ())))
        counted = None
        if not quiet:
            counted = self._count(family, labels)
        if deny:
            if counted is None:
                return False
            counted.closed[1] += 1  # forbidden: closed as soon as it was routed
            self.denied_connections += 1
            raise EgressDenied(f"{DENIED}: {_authority(target.host, target.port)}"
                               + (f" (SNI {meta.sni})" if meta.sni else "")
                               + f" by EgressNetwork {network.namespace}/{network.name}")
        if counted is not None:  # the connection's relay counts its close (proxy/core/opaque.py)
            meta.stats_cache[TRANSPORT_ROUTE] = counted
        if chosen is None or not chosen[1].backends:
            return (target.host, target.port)
        backends = chosen[1].backends
        backend: Backend = backends[0] if len(backends) == 1 else WeightedBackends(backends).pick(random.random())
        if backend.authority == ORIGINAL_DST:
            return (target.host, target.port)
        return _backend_address(backend, target.port)

    def _count(self, family: str, labels: str) -> RouteConnections:
        table = self.routes[family]
        route = table.get(labels)
        if route is None:
            if len(table) >= self.registry.limit:
                labels = 'route_name="other"'
                route = table.get(labels)
            if route is None:
                route = table[labels] = RouteConnections()
        route.opened += 1
        return route

    def render(self, out: list[str]) -> None:
        for family in ("tls", "tcp"):
            routes = sorted(self.routes[family].items())
            name = f"outbound_{family}_route_open_total"
            out.append(f"# HELP {name} The number of connections opened (egress {family.upper()} routes).")
            out.append(f"# TYPE {name} counter")
            for labels, route in routes:
                out.append(f"{name}{{{labels}}} {route.opened}")
            name = f"outbound_{family}_route_close_total"
            out.append(f"# HELP {name} The number of connections closed (egress {family.upper()} routes), by error.")
            out.append(f"# TYPE {name} counter")
            for labels, route in routes:
                for error, n in zip(CLOSE_ERRORS, route.closed):
                    out.append(f'{name}{{{labels},error="{error}"}} {n}')

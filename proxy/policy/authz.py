"""Inbound authorization, sans-IO: may this client use this port, and this HTTP request?

``InboundPolicy.build`` compiles an AuthzSet (authz_model.py) once: networks
become integer masks, identity patterns a set plus a suffix tuple, each
server's HTTPRoutes a routes.RouteTable, and every "allowed" Decision is made
in advance. ``port()`` is a dict lookup; the checks walk the authorizations of
one port, with the client address parsed once per distinct peer (cached).

Semantics, as Linkerd's:

* a port without a Server follows the default policy (``all-unauthenticated``,
  ``all-authenticated``, ``cluster-unauthenticated``, ``cluster-authenticated``,
  ``deny``, ``audit``); cluster-* needs the client address in the cluster
  networks, *-authenticated a verified mesh identity;
* a Server admits a client if one of its authorizations admits it (for a
  request, also one of the matched route's), else its access policy decides:
  ``deny`` unless a v1beta3 Server says otherwise, so a Server nobody
  authorizes denies everything;
* a Server with HTTPRoutes refuses a request matching none of them (reason
  ``no route: ...``); without HTTPRoutes one default route covers everything;
* probe paths (GET or HEAD, exact path, query ignored) are allowed on every
  port whatever the policy. Linkerd only does this on default-policy ports and
  route-less servers; meshproxy keeps kubelet probes working everywhere.

Decision labels (Linkerd's metric labels): allowed decisions carry
``srv_group, srv_kind, srv_name, authz_group, authz_kind, authz_name`` and,
for HTTP, ``route_group, route_kind, route_name``; denied ones carry the same
minus the authz labels (Linkerd's deny counters have none). A request
matching no route has empty route labels and ``route_not_found`` set. The
default policy labels itself group ``""``, kind ``default``, name <policy>
for both srv and authz; a probe is authz and route ``default``/``probe``.
The connection's port (``srv_port``), address and TLS are the caller's to add.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from proxy.policy.authz_model import (
    ACCESS_POLICIES,
    ALL_NETWORKS,
    POLICY_GROUP,
    Authorization,
    AuthzSet,
    InboundRoute,
    Network,
    Requirement,
    Server,
)
from proxy.record import record

__all__ = ["REASON_NO_ROUTE", "REASON_UNAUTHORIZED", "AuthzSet", "Client", "Decision", "InboundPolicy", "PortPolicy"]

# Every denial's reason starts with one of these (then ": " and the details).
REASON_UNAUTHORIZED = "unauthorized"
REASON_NO_ROUTE = "no route"

Labels = tuple[tuple[str, str], ...]
_DEFAULT_ROUTE: Labels = (("route_group", ""), ("route_kind", "default"), ("route_name", "default"))
_NO_ROUTE: Labels = (("route_group", ""), ("route_kind", ""), ("route_name", ""))
_PROBE: Labels = (("authz_group", ""), ("authz_kind", "default"), ("authz_name", "probe"),
                  ("route_group", ""), ("route_kind", "default"), ("route_name", "probe"))
_PROBE_METHODS = frozenset(("GET", "HEAD"))
_NOT_HTTP = ("opaque", "tls")

# Compiled requirement kinds; a compiled authorization is a tuple of (kind, argument).
_IDENTITY, _TLS, _NETWORK = 0, 1, 2
# (kind, (any identity, exact names, *.suffixes)), as _requirement compiles an identity requirement.
_ANY_IDENTITY: tuple[int, tuple[bool, frozenset[str], tuple[str, ...]]] = (_IDENTITY, (True, frozenset(), ()))


@record
class Client:
    ip: str                 # normalized IP literal of the peer
    identity: str | None    # verified mesh identity (DNS SAN) or None
    tls: bool               # the connection was mesh TLS terminated by us (identity may still be None)

    def __init__(self, ip: str, identity: str | None, tls: bool) -> None:  # one per connection: not the shared one
        object.__setattr__(self, "ip", ip)
        object.__setattr__(self, "identity", identity)
        object.__setattr__(self, "tls", tls)


@record
class Decision:
    allowed: bool
    labels: Labels          # see the module docstring for which labels, in this order
    reason: str             # "" when allowed; starts with REASON_UNAUTHORIZED or REASON_NO_ROUTE

    def __init__(self, allowed: bool, labels: Labels, reason: str) -> None:  # one per denial: not the shared one
        object.__setattr__(self, "allowed", allowed)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "reason", reason)

    @property
    def route_not_found(self) -> bool:
        """Denied because no route of the server matched (Linkerd counts these apart from denials)."""
        return self.reason.startswith(REASON_NO_ROUTE)


# ---- compiling -------------------------------------------------------------------


def _networks(networks: Iterable[Network]) -> tuple:
    out: list[tuple] = []
    for net in networks:
        parsed = ipaddress.ip_network(net.cidr, strict=False)
        excluded = tuple((int(e.network_address), int(e.netmask))
                         for e in (ipaddress.ip_network(x, strict=False) for x in net.exclude))
        out.append((parsed.version, int(parsed.network_address), int(parsed.netmask), excluded))
    return tuple(out)


def _requirement(req: Requirement) -> tuple:
    if req.kind == "identity":
        ids = req.identities
        return (_IDENTITY, ("*" in ids, frozenset(i for i in ids if not i.startswith("*")),
                            tuple(i[1:] for i in ids if i.startswith("*."))))
    if req.kind == "tls":
        return (_TLS, None)
    if req.kind == "network":
        # Every address: nothing to check (and the port can skip per-request work).
        return (_NETWORK, _networks(req.networks)) if req.networks != ALL_NETWORKS else ()
    raise ValueError(f"unknown requirement kind {req.kind!r}")


def _access(policy: str, cluster: tuple) -> tuple | None:
    """A default/access policy as compiled requirements; None admits nobody."""
    if policy not in ACCESS_POLICIES:
        raise ValueError(f"unknown default policy {policy!r} (use {', '.join(ACCESS_POLICIES)})")
    return {
        "all-unauthenticated": (), "audit": (), "all-authenticated": (_ANY_IDENTITY,),
        "cluster-unauthenticated": ((_NETWORK, cluster),),
        "cluster-authenticated": ((_NETWORK, cluster), _ANY_IDENTITY),
        "deny": None,
    }[policy]


# ---- matching (the hot path) ---------------------------------------------------------


def _admits(requires: tuple, identity: str | None, tls: bool, addr: tuple[int, int] | None) -> bool:
    for kind, arg in requires:
        if kind == _IDENTITY:
            if identity is None:
                return False
            any_identity, exact, suffixes = arg
            if not (any_identity or identity in exact or identity.endswith(suffixes)):
                return False
        elif kind == _TLS:
            if not tls:
                return False
        elif addr is None or not _in_networks(addr, arg):
            return False
    return True


def _in_networks(addr: tuple[int, int], networks: tuple) -> bool:
    version, value = addr
    for net_version, net, mask, excluded in networks:
        if net_version == version and value & mask == net:
            for ex_net, ex_mask in excluded:
                if value & ex_mask == ex_net:
                    break
            else:
                return True
    return False


class _Addresses:
    """Client IP literal -> (version, integer), cached: peers repeat, parsing needn't."""

    __slots__ = ("_cache",)
    _LIMIT = 4096

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, int] | None] = {}

    def get(self, ip: str) -> tuple[int, int] | None:
        try:
            return self._cache[ip]
        except KeyError:
            pass
        try:
            addr = ipaddress.ip_address(ip)
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped  # a dual-stack listener's view of an IPv4 peer
            found: tuple[int, int] | None = (addr.version, int(addr))
        except ValueError:
            found = None  # not an IP (a unix socket peer): in no network
        if len(self._cache) >= self._LIMIT:
            self._cache.clear()
        self._cache[ip] = found
        return found


def _who(client: Client, identity: str | None) -> str:
    if identity is not None:
        return f"identity {identity} from {client.ip}"
    return f"{'TLS client without identity' if client.tls else 'unauthenticated client'} {client.ip}"


def _encode(text: str) -> bytes:
    # Callers decode request bytes as latin-1 (HTTP's own charset); fall back for anything else.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _host(value: str | None) -> str:
    if not value:
        return ""
    host = value.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0].rstrip(".")


def _host_rank(hostnames: tuple[str, ...], host: str) -> tuple[int, int] | None:
    """Gateway API hostname precedence: exact, then the longest wildcard, then routes naming no host."""
    if not hostnames:
        return (2, 0)
    best = None
    for name in hostnames:
        if name == host:
            return (0, 0)
        if name.startswith("*.") and host.endswith(name[1:]) and len(host) > len(name) - 1:
            rank = (1, -len(name))
            best = rank if best is None or rank < best else best
    return best


# ---- per port ---------------------------------------------------------------------------


class PortPolicy:
    """The compiled policy of one port; see the module docstring for what it decides.

    ``protocol``: from Server.proxyProtocol ("http1", "h2", "grpc", "opaque",
    "tls") or None (detect). ``per_request``: HTTP requests must each go through
    ``check_request`` (routes, route-scoped authorizations, or probe paths on a
    port that denies someone); the connection must then not be refused by
    ``check_connection``. When False, ``check_connection`` decides every request
    on the connection and ``check_request`` would only add route labels.
    """

    __slots__ = ("protocol", "per_request", "_addrs", "_srv", "_target", "_conn_rules", "_http_rules",
                 "_groups", "_header_names", "_probes", "_probe", "_route_kind")

    @property
    def srv_labels(self) -> Labels:
        """``srv_group``, ``srv_kind``, ``srv_name`` of the Server (or default policy) this port answers to."""
        return self._srv

    def __init__(self, protocol: str | None, srv: Labels, target: str, conn_rules: tuple, http_rules: tuple,
                 routes: tuple[InboundRoute, ...], route_rules: dict[str, tuple], probes: frozenset[str],
                 addrs: _Addresses) -> None:
        self.protocol = protocol
        self._addrs = addrs
        self._srv = srv
        self._target = target
        self._conn_rules = conn_rules
        self._http_rules = http_rules
        self._probes = probes
        self._probe = Decision(True, srv + _PROBE, "")
        self._route_kind = "GRPCRoute" if protocol == "grpc" else "HTTPRoute"  # the kind its routes are
        # Routes grouped by hostnames: precedence between groups is by Host, within one by RouteTable.
        groups: dict[tuple[str, ...], list[InboundRoute]] = {}
        for route in routes if protocol not in _NOT_HTTP else ():
            groups.setdefault(route.hostnames, []).append(route)
        self._groups = None
        if groups:
            # Imported only with HTTP routes: a proxy without a policy never loads the route tables.
            from proxy.policy.model import ServicePolicy
            from proxy.policy.routes import RouteTable

            self._groups = tuple(
                (hostnames,
                 RouteTable(ServicePolicy(target, gateway_routes=tuple(r for x in members for r in x.rules))),
                 {x.source: route_rules[x.source] for x in members})
                for hostnames, members in groups.items())
        self._header_names = tuple((name, name.encode("latin-1")) for name in sorted(
            {h.name for x in routes for r in x.rules for m in r.matches for h in m.headers}))
        admits_everyone = any(not requires for requires, _ in conn_rules)
        self.per_request = protocol not in _NOT_HTTP and (
            self._groups is not None or (bool(probes) and not admits_everyone))

    def check_connection(self, client: Client) -> Decision:
        """At accept: the server-wide authorizations and the access policy (no route is known)."""
        return self._judge(self._conn_rules, client, self._srv)

    def check_http(self, client: Client) -> Decision:
        """Every request of an HTTP connection on a port that is not ``per_request``: the same
        judgement as ``check_connection``, labelled with the default route (as Linkerd labels
        requests on a server without routes)."""
        return self._judge(self._http_rules, client, self._srv + _DEFAULT_ROUTE)

    def _judge(self, rules: tuple, client: Client, denied: Labels) -> Decision:
        identity = client.identity.lower() if client.identity is not None else None
        addr = self._addrs.get(client.ip)
        for requires, decision in rules:
            if _admits(requires, identity, client.tls, addr):
                return decision
        return Decision(False, denied, f"{REASON_UNAUTHORIZED}: {self._target} does not admit "
                                       f"{_who(client, identity)}")

    def check_request(self, client: Client, method: str, path: str,
                      header: Callable[[str], str | None]) -> Decision:
        """One HTTP request. ``path`` may carry ``?query``; ``header(lowercase name)`` gives a value or
        None, and must answer ``host`` with the HTTP/2 ``:authority`` too (hostname matching)."""
        if self._probes and method in _PROBE_METHODS and path.partition("?")[0] in self._probes:
            return self._probe
        if self._groups is None:
            rules, route = self._http_rules, _DEFAULT_ROUTE
        else:
            found = self._route(method, path, header)
            if found is None:
                # The query stays out of the reason: it is logged, and queries carry tokens.
                return Decision(False, self._srv + _NO_ROUTE,
                                f"{REASON_NO_ROUTE}: {self._target} has no {self._route_kind} matching "
                                f"{method} {path.partition('?')[0]}")
            route, rules = found
        identity = client.identity.lower() if client.identity is not None else None
        addr = self._addrs.get(client.ip)
        for requires, decision in rules:
            if _admits(requires, identity, client.tls, addr):
                return decision
        return Decision(False, self._srv + route, f"{REASON_UNAUTHORIZED}: {self._target} route {route[-1][1]} "
                                                  f"does not admit {_who(client, identity)}")

    def _route(self, method: str, path: str, header: Callable[[str], str | None]) -> tuple | None:
        raw_method, raw_path = _encode(method), _encode(path)
        headers = [(raw, _encode(value)) for name, raw in self._header_names if (value := header(name)) is not None]
        groups = self._groups or ()
        if len(groups) > 1 or groups[0][0]:
            host = _host(header("host"))
            ranked = sorted((rank, i) for i, group in enumerate(groups)
                            if (rank := _host_rank(group[0], host)) is not None)
            groups = tuple(groups[i] for _, i in ranked)
        for _, table, by_source in groups:
            matched = table.match(raw_method, raw_path, headers)
            if matched is not None:
                return by_source[matched.source]
        return None


def _rules(authzs: Iterable[Authorization], srv: Labels, route: Labels, access: tuple | None,
           access_name: str) -> tuple:
    """(compiled requirements, the allowed Decision) in the order they are tried; the access policy last."""
    out = [(tuple(c for c in map(_requirement, a.requires) if c),
            Decision(True, srv + (("authz_group", a.group), ("authz_kind", a.kind), ("authz_name", a.name)) + route,
                     ""))
           for a in authzs]
    if access is not None:
        out.append((access, Decision(True, srv + (("authz_group", ""), ("authz_kind", "default"),
                                                  ("authz_name", access_name)) + route, "")))
    return tuple(out)


def _server_port(server: Server, cluster: tuple, probes: frozenset[str], addrs: _Addresses) -> PortPolicy:
    srv = (("srv_group", POLICY_GROUP), ("srv_kind", server.kind), ("srv_name", server.name))
    access = _access(server.access_policy, cluster)
    policy = server.access_policy
    route_rules = {}
    for route in server.routes:
        labels = (("route_group", route.group), ("route_kind", route.kind), ("route_name", route.name))
        # Route-scoped authorizations first: the most specific grant names the decision.
        route_rules[route.source] = (labels, _rules(route.authorizations + server.authorizations, srv, labels,
                                                    access, policy))
    return PortPolicy(server.protocol, srv, f"Server {server.namespace}/{server.name}",
                      _rules(server.authorizations, srv, (), access, policy),
                      _rules(server.authorizations, srv, _DEFAULT_ROUTE, access, policy),
                      server.routes, route_rules, probes, addrs)


class InboundPolicy:
    """Every port's compiled policy; ports without a Server share the default policy's."""

    __slots__ = ("_ports", "_default")

    def __init__(self, ports: dict[int, PortPolicy], default: PortPolicy) -> None:
        self._ports = ports
        self._default = default

    @classmethod
    def build(cls, docs: AuthzSet | None, default_policy: str, cluster_networks: tuple[str, ...],
              probe_paths: tuple[str, ...]) -> InboundPolicy:
        """Compile once per policy (re)load; raises ValueError for a bad policy name, network or path."""
        cluster = _networks(Network(c.strip()) for c in cluster_networks)
        for path in probe_paths:
            if not path.startswith("/"):
                raise ValueError(f"probe paths must start with '/': {path!r}")
        probes = frozenset(p.partition("?")[0] for p in probe_paths)
        addrs = _Addresses()
        srv = (("srv_group", ""), ("srv_kind", "default"), ("srv_name", default_policy))
        access = _access(default_policy, cluster)
        default = PortPolicy(None, srv, f"default policy {default_policy}",
                             _rules((), srv, (), access, default_policy),
                             _rules((), srv, _DEFAULT_ROUTE, access, default_policy), (), {}, probes, addrs)
        ports: dict[int, PortPolicy] = {}
        for server in docs.servers if docs is not None else ():
            if server.port in ports:
                raise ValueError(f"port {server.port} has two Servers")
            ports[server.port] = _server_port(server, cluster, probes, addrs)
        return cls(ports, default)

    def port(self, port: int) -> PortPolicy:
        return self._ports.get(port, self._default)

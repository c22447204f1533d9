"""Inbound authorization on the data plane: who may open a connection to which
app port, and (for HTTP) which requests on it, with the decisions counted.

The decisions themselves come from proxy/policy/authz.py (sans-IO). This
module applies them: TCP is judged once at accept and judged again when the
policy changes (a revoked connection is cut); HTTP is judged per request,
through the ``ConnAuthz`` that the accept stage attaches to the connection.
The admin listener is never subject to it: probes of the proxy itself always
work, and kubelet probes of the app can be allowed by path
(``MESHPROXY_INBOUND_PROBE_PATHS``).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable

from proxy.config import PolicySettings
from proxy.core.addr import ConnMeta, authorized_meta
from proxy.errors import PolicyError, RateLimited, Unauthorized
from proxy.exchange.clock import now
from proxy.policy import ratelimit
from proxy.policy.authz import Client, Decision, InboundPolicy, PortPolicy
from proxy.policy.authz_model import POLICY_GROUP
from proxy.telemetry.counters import TcpStats
from proxy.telemetry.labels import inbound_tls_pairs, target_pairs, with_srv_port
from proxy.telemetry.logging import get_logger
from proxy.telemetry.metrics import label_set

log = get_logger("proxy.inbound.authz")

class InboundAuthorizer:
    """``has_identity``: this proxy has a mesh identity (the ``no_tls_reason`` of plaintext clients)."""

    def __init__(self, settings: PolicySettings, has_identity: bool = False) -> None:
        self.settings = settings
        self.has_identity = has_identity
        self.generation = 0
        self.policy = InboundPolicy.build(None, settings.default_policy, settings.cluster_networks,
                                          settings.probe_paths)
        # label set -> count; HTTP by request, TCP by connection. Linkerd's labels: the
        # connection's target and TLS (``conn_labels``) with the decision's (``key``).
        self.http_allow: dict[tuple, list[int]] = {}
        self.http_deny: dict[tuple, list[int]] = {}
        self.http_route_not_found: dict[tuple, list[int]] = {}
        self.tcp_allow: dict[tuple, list[int]] = {}
        self.tcp_deny: dict[tuple, list[int]] = {}
        self.tcp_revoked = 0
        # Inbound rate limits by app port (ratelimit.py), and the requests they refused.
        self.limits: dict[int, ratelimit.LocalRateLimit] = {}
        self.http_ratelimit: dict[tuple, list[int]] = {}
        # Open opaque connections, judged again when the policy changes.
        self._tcp_open: dict[asyncio.Transport, tuple[Client, int]] = {}

    # -- policy changes -------------------------------------------------------------
    def update(self, authz_set) -> None:
        """A new policy (``PolicySet.authz``): HTTP connections pick it up at their next
        request; opaque connections it no longer admits are closed now."""
        s = self.settings
        self.policy = InboundPolicy.build(authz_set, s.default_policy, s.cluster_networks, s.probe_paths)
        self.limits = self._rate_limits(authz_set)
        self.generation += 1
        for transport, (client, port) in list(self._tcp_open.items()):
            if transport.is_closing():
                del self._tcp_open[transport]
                continue
            decision = self.policy.port(port).check_connection(client)
            if not decision.allowed:
                del self._tcp_open[transport]
                self.tcp_revoked += 1
                log.info("connection closed: authorization revoked by a policy change", port=port,
                         client=client.ip, client_id=client.identity, reason=decision.reason)
                transport.abort()

    def _rate_limits(self, authz_set) -> dict[int, ratelimit.LocalRateLimit]:
        """Each Server's limits compiled; a limit unchanged by a reload keeps its buckets (a reload
        must not hand every client a fresh burst)."""
        out = {}
        for server in authz_set.servers if authz_set is not None else ():
            spec = server.rate_limit
            if spec is None:
                continue
            old = self.limits.get(server.port)
            out[server.port] = old if old is not None and old.spec == spec else \
                ratelimit.LocalRateLimit(spec, self.settings.ratelimit_identities)
        return out

    def sweep(self) -> None:
        for transport in [t for t in self._tcp_open if t.is_closing()]:
            del self._tcp_open[transport]

    # -- at accept -------------------------------------------------------------------
    def tcp(self, meta: ConnMeta, port: int, transport) -> bool:
        client = client_of(meta)
        decision = self.policy.port(port).check_connection(client)
        _count(self.tcp_allow if decision.allowed else self.tcp_deny, key(self.conn_labels(meta, port), decision, port),
               self.settings.peer_label_limit)
        if not decision.allowed:
            log.info("connection refused: unauthorized", port=port, client=client.ip,
                     client_id=client.identity, tls=client.tls, reason=decision.reason)
            return False
        self._tcp_open[transport] = (client, port)
        return True

    def tcp_allowed(self, meta: ConnMeta, port: int) -> bool:
        """Whether ``tcp`` would admit this connection, without counting or logging (for the server-first probe)."""
        return self.policy.port(port).check_connection(client_of(meta)).allowed

    def http(self, meta: ConnMeta, port: int) -> ConnAuthz:
        return ConnAuthz(self, client_of(meta), port, self.conn_labels(meta, port))

    def conn_labels(self, meta: ConnMeta, port: int) -> tuple:
        """``target_addr``/``target_ip``/``target_port`` (the address the client asked for, with the app
        port) and the client's TLS labels: the part of the authorization labels a connection fixes."""
        addr = meta.orig_dst if meta.orig_dst is not None else meta.local
        return target_pairs(addr[0], port) + inbound_tls_pairs(meta, self.has_identity)

    # -- metrics ------------------------------------------------------------------------
    def render(self, out: list[str]) -> None:
        for name, table, help_text in (
            ("inbound_http_authz_allow_total", self.http_allow, "Inbound HTTP requests authorized."),
            ("inbound_http_authz_deny_total", self.http_deny, "Inbound HTTP requests denied by policy (403)."),
            ("inbound_http_route_not_found_total", self.http_route_not_found,
             "Inbound HTTP requests matching no route of their server (403)."),
            ("inbound_http_local_ratelimit_total", self.http_ratelimit,
             "Inbound HTTP requests refused by the server's HTTPLocalRateLimitPolicy (429)."),
            ("inbound_tcp_authz_allow_total", self.tcp_allow, "Inbound connections authorized."),
            ("inbound_tcp_authz_deny_total", self.tcp_deny, "Inbound connections refused by policy."),
        ):
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} counter")
            for labels, cell in sorted(table.items()):
                out.append(f"{name}{label_set(labels)} {cell[0]}")
        out.append("# HELP inbound_tcp_authz_terminate_total "
                   "Open connections closed when a policy change revoked them.")
        out.append("# TYPE inbound_tcp_authz_terminate_total counter")
        out.append(f"inbound_tcp_authz_terminate_total {self.tcp_revoked}")


class ConnGrants:
    """One listener's HTTP connection authorizations, remembered: what ``InboundAuthorizer.http``
    and the connection's TCP label set (``tcp_src``) come to depends only on the client's address,
    TLS and identity, the address and port it asked for, and the policy, so a client's next
    connection under the same policy finds both with one lookup.

    The ``ConnAuthz`` found is shared by those connections: it holds nothing of one connection
    (its ``decision`` is read in the same call that set it), and it still judges every request
    against the current policy. So is the metadata's ``stats_cache`` (the requests' label sets by
    Host and decision, bounded per dict by the exchange): every part of their labels is in the key.
    A new policy empties the cache; at ``limit`` entries (MESHPROXY_INBOUND_AUTHZ_CACHE) it starts over.
    """

    __slots__ = ("authorizer", "tcp_src", "limit", "generation", "found")

    def __init__(self, authorizer: InboundAuthorizer, tcp_src: Callable[[ConnMeta], TcpStats], limit: int) -> None:
        self.authorizer = authorizer
        self.tcp_src = tcp_src
        self.limit = limit
        self.generation = authorizer.generation
        # (client IP, TLS, client identity, original destination, local address, port)
        # -> (ConnAuthz, TcpStats, stats_cache).
        self.found: dict[tuple, tuple[ConnAuthz, TcpStats, dict]] = {}

    def http(self, meta: ConnMeta, port: int) -> tuple[ConnMeta, TcpStats]:
        """The connection's metadata with its authorization, and its TCP label set."""
        authorizer, found = self.authorizer, self.found
        if self.generation != authorizer.generation:
            found.clear()
            self.generation = authorizer.generation
        key = (meta.client[0] if meta.client else "", meta.tls, meta.client_id, meta.orig_dst, meta.local, port)
        entry = found.get(key)
        if entry is not None:
            return authorized_meta(meta, entry[0], entry[2]), entry[1]
        authz = authorizer.http(meta, port)
        meta = authorized_meta(meta, authz)
        tcp = self.tcp_src(meta)
        if len(found) >= self.limit:
            found.clear()
        found[key] = (authz, tcp, meta.stats_cache)
        return meta, tcp


class ConnAuthz:
    """One HTTP connection's authorization: judged per request against the current policy.

    ``decision`` is the Decision that judged the connection's latest request
    (the exchange labels the request's metrics with it, once per distinct
    decision: allowed decisions are made once per policy, so it is the same
    object request after request on a port without routes).
    """

    __slots__ = ("owner", "client", "port", "conn_labels", "generation", "port_policy", "allow_all", "decision",
                 "limiter", "_cells", "_limit_cells")

    def __init__(self, owner: InboundAuthorizer, client: Client, port: int, conn_labels: tuple = ()) -> None:
        self.owner = owner
        self.client = client
        self.port = port
        self.conn_labels = conn_labels
        self.generation = -1
        self.port_policy: PortPolicy | None = None
        # When the port needs no per-request check: the connection's counter cell.
        self.allow_all: list[int] | None = None
        self.decision: Decision | None = None
        # The port's rate limits (checked once a request is authorized), or None.
        self.limiter: ratelimit.LocalRateLimit | None = None
        self._limit_cells: dict[int, list[int]] = {}
        # Decision -> its counter cell, for this connection (bounded by the policy's decisions).
        self._cells: dict[Decision, list[int]] = {}
        self._refresh()

    def _refresh(self) -> None:
        owner = self.owner
        self.generation = owner.generation
        self.port_policy = owner.policy.port(self.port)
        self.allow_all = None
        self._cells = {}
        self.limiter = owner.limits.get(self.port)
        self._limit_cells = {}
        if not self.port_policy.per_request:
            decision = self.port_policy.check_http(self.client)
            if decision.allowed:
                self.decision = decision
                self.allow_all = self._cell(decision)

    def _cell(self, decision: Decision) -> list[int]:
        cell = self._cells.get(decision)
        if cell is None:
            owner = self.owner
            table = (owner.http_allow if decision.allowed else
                     owner.http_route_not_found if decision.route_not_found else owner.http_deny)
            cell = _cell(table, key(self.conn_labels, decision, self.port), owner.settings.peer_label_limit)
            if len(self._cells) < _CELLS_PER_CONNECTION:
                self._cells[decision] = cell
        return cell

    def check_h1(self, head) -> PolicyError | None:
        """None when the request may go on; the error to answer it with otherwise."""
        cell = self.allow_all
        if cell is not None and self.generation == self.owner.generation:
            cell[0] += 1
            return None if self.limiter is None else self._limited()
        return self._check(head.method, head.target, _H1Headers(head))

    def check_h2(self, meta, headers: list) -> PolicyError | None:
        cell = self.allow_all
        if cell is not None and self.generation == self.owner.generation:
            cell[0] += 1
            return None if self.limiter is None else self._limited()
        return self._check(meta.method, meta.target, _H2Headers(headers))

    def _limited(self) -> RateLimited | None:
        """Linkerd's order: a request is rate limited only once authorized (denials cost no tokens)."""
        limiter = self.limiter
        assert limiter is not None
        identity = self.client.identity
        scope = limiter.check(identity, now())
        if scope == ratelimit.ADMITTED:
            return None
        cell = self._limit_cells.get(scope)
        if cell is None:
            spec, policy = limiter.spec, self.port_policy
            assert policy is not None
            labels = (self.conn_labels[:3] + with_srv_port(policy.srv_labels, self.port)
                      + (("ratelimit_group", POLICY_GROUP), ("ratelimit_kind", "HTTPLocalRateLimitPolicy"),
                         ("ratelimit_name", spec.name), ("ratelimit_scope", ratelimit.SCOPES[scope]))
                      + self.conn_labels[3:])
            cell = self._limit_cells[scope] = _cell(self.owner.http_ratelimit, labels,
                                                    self.owner.settings.peer_label_limit)
        cell[0] += 1
        return RateLimited(f"{ratelimit.KINDS[scope]} rate limit exceeded: {limiter.rate_of(scope, identity):g}rps")

    def _check(self, method: bytes, target: bytes, headers) -> PolicyError | None:
        if self.generation != self.owner.generation:
            self._refresh()
            if self.allow_all is not None:
                self.allow_all[0] += 1
                return None if self.limiter is None else self._limited()
        policy = self.port_policy
        assert policy is not None  # _refresh sets it in __init__
        if policy.per_request:
            # The whole target: routes may match query parameters too.
            decision: Decision = policy.check_request(self.client, method.decode("latin-1"),
                                                      target.decode("latin-1"), headers)
        else:
            decision = policy.check_http(self.client)
        self.decision = decision
        self._cell(decision)[0] += 1
        if decision.allowed:
            return None if self.limiter is None else self._limited()
        return Unauthorized(decision.reason or "unauthorized request")


class _H1Headers:
    """``header(name)`` over an HTTP/1 head, parsed only if a route asks."""

    __slots__ = ("head", "fields")

    def __init__(self, head) -> None:
        self.head = head
        self.fields: dict[str, str] | None = None

    def __call__(self, name: str) -> str | None:
        if self.fields is None:
            self.fields = {}
            for key, value in self.head.header_list():
                self.fields.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        return self.fields.get(name)


class _H2Headers:
    __slots__ = ("headers",)

    def __init__(self, headers: list) -> None:
        self.headers = headers

    def __call__(self, name: str) -> str | None:
        # HTTP/2 names the host in :authority (RFC 9113 8.3.1); routes ask for "host".
        want = b":authority" if name == "host" else name.encode("latin-1")
        for key, value in self.headers:
            if key == want:
                return value.decode("latin-1")
        return None


def client_of(meta: ConnMeta) -> Client:
    ip = meta.client[0] if meta.client else ""
    if ip.startswith("::ffff:"):
        # An IPv4 client on a dual-stack socket: judge it by its IPv4 address.
        try:
            ip = str(ipaddress.IPv6Address(ip).ipv4_mapped or ip)
        except ValueError:
            pass
    return Client(ip=ip, identity=meta.client_id, tls=meta.tls)


_CELLS_PER_CONNECTION = 64


def key(conn_labels: tuple, decision: Decision, port: int) -> tuple:
    """An authorization counter's labels, in Linkerd's order: the target, the decision's server,
    route and authorization (with ``srv_port``), then the client's TLS."""
    return conn_labels[:3] + with_srv_port(decision.labels, port) + conn_labels[3:]


def _cell(table: dict[tuple, list[int]], labels: tuple, limit: int) -> list[int]:
    """The counter of ``labels``; past ``limit`` label sets (MESHPROXY_PEER_LABEL_LIMIT) new ones share "other"."""
    cell = table.get(labels)
    if cell is None:
        if len(table) >= limit:
            labels = (("overflow", "other"),)
            cell = table.get(labels)
            if cell is not None:
                return cell
        cell = table[labels] = [0]
    return cell


def _count(table: dict[tuple, list[int]], labels: tuple, limit: int) -> None:
    _cell(table, labels, limit)[0] += 1


"""Outbound reliability policy at run time: the service's route and concrete backend, read by the relays per request.

The router asks ``OutboundPolicy.lookup`` for the logical destination (one
cached dict lookup; None when the service has no policy). A ``ServiceRuntime``
then matches the request's route, picks the concrete backend (the route's own
backends, else the service's split, else the service itself), counts the
request, and hands the relay a ``RoutePolicy`` (``conn.rp``): timeouts, which
responses are retried, the service's retry budget and the route's counters.

Everything here is per configuration or per request *decision*; the relays
keep per-attempt state and only call back on failures (``withdraw``), so a
request on a route without retries costs one route match and a few attribute
reads. A new PolicySet (file reload) replaces the runtimes atomically;
requests in flight keep the ``RoutePolicy`` they started with. Counters and
budgets live in a registry keyed by label, so they survive reloads.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable

from proxy.core.addr import Target, parse_authority
from proxy.outbound import failover as failover_group
from proxy.outbound.failover import FailoverState
from proxy.outbound.mirror import MirrorHub, MirrorRule
from proxy.policy.budget import RetryBudget
from proxy.policy.classify import classify, should_retry
from proxy.policy.model import (
    DEFAULT_ROUTE,
    Backend,
    Failover,
    FailureAccrual,
    HeaderModifier,
    PolicySet,
    Route,
    ServicePolicy,
)
from proxy.policy.routes import RouteTable
from proxy.policy.split import WeightedBackends
from proxy.telemetry.counters import BackendStats, RouteStats
from proxy.telemetry.labels import parent_labels, service_ref, text

CACHE_LIMIT = 4096  # logical destinations remembered per policy version
OTHER = "other"  # the label of routes over the cardinality limit


class HeaderEdit:
    """A route's Request- or ResponseHeaderModifier in the forms the relays apply.

    ``drop`` (lower-case names: every ``set`` and ``remove`` name) and
    ``extra`` (the ``set`` then ``add`` fields) go to the HTTP/1 head
    rewriter; ``apply`` edits an HTTP/2 field list. The parser refused
    framing, hop-by-hop and routing fields, so no edit changes how a message
    is delimited or where it goes.
    """

    __slots__ = ("drop", "extra", "_h2_extra")

    def __init__(self, modifier: HeaderModifier) -> None:
        names = [n.lower() for n, _ in modifier.set] + [n.lower() for n in modifier.remove]
        self.drop = tuple(dict.fromkeys(n.encode("ascii") for n in names))
        self.extra = tuple((n.encode("ascii"), v.encode("latin-1")) for n, v in (*modifier.set, *modifier.add))
        self._h2_extra = [(n.lower(), v) for n, v in self.extra]

    def apply(self, fields: list) -> list:
        drop = self.drop
        out = [f for f in fields if f[0] not in drop]
        out.extend(self._h2_extra)
        return out


class RoutePolicy:
    """One route of one service as the relays see it (duck-typed: the relays do not import this module).

    ``failure_status`` / ``retry_status`` answer per HTTP status (0..999)
    without a call; gRPC statuses go through ``failed`` / ``retry_on``.
    ``timeout`` bounds the whole exchange (the response body too), retries included;
    ``attempt_timeout`` one attempt; 0 disables either. ``limit`` is the most
    retries one request may make (0: the route is not retryable).
    ``idle_timeout`` bounds the time without a byte either way (0: none).
    ``headers`` / ``response_headers`` are the route's header edits (``HeaderEdit``), or None;
    ``rewrite`` its URLRewrite (``UrlRewrite``), or None; ``mirror`` its mirrors (``MirrorRule``), or None.
    """

    __slots__ = ("route", "stats", "timeout", "attempt_timeout", "limit", "budget",
                 "failure_status", "retry_status", "replay_limit", "split", "headers", "response_headers",
                 "redirect", "idle_timeout", "grpc_retry", "resplit", "rewrite", "mirror", "failover",
                 "concretes", "by_address")

    def __init__(self, route: Route, stats: RouteStats, budget: RetryBudget, default_limit: int,
                 replay_limit: int) -> None:
        self.route = route
        self.stats = stats
        self.budget = budget
        self.timeout = route.timeout or 0.0
        self.idle_timeout = route.idle_timeout or 0.0
        retry = route.retry
        attempt = retry.timeout if retry is not None and retry.timeout else route.backend_timeout
        self.attempt_timeout = attempt or 0.0
        if retry is not None:
            self.limit = max(0, retry.limit)
        else:
            self.limit = default_limit if route.is_retryable else 0
        self.replay_limit = replay_limit
        # A backend rule: matching requests split over the route's own backends.
        self.split = WeightedBackends(route.backends) if any(b.weight > 0 for b in route.backends) else None
        modifier = route.request_header_modifier
        self.headers = HeaderEdit(modifier) if modifier is not None else None
        modifier = route.response_header_modifier
        self.response_headers = HeaderEdit(modifier) if modifier is not None else None
        self.redirect = route.redirect
        self.rewrite = UrlRewrite(route) if route.rewrite is not None else None
        # Set by ServiceRuntime: the route's RequestMirror filters, and its failover group.
        self.mirror: MirrorRule | None = None
        self.failover: FailoverState | None = None
        # Set by ServiceRuntime when a retry may land on another backend.
        self.resplit: Callable[..., tuple[str, int]] | None = None
        # Set by ServiceRuntime: (address, BackendStats or None) per backend of the split the route uses, in
        # its order, and the BackendStats of a failover group's addresses.
        self.concretes: tuple[tuple[tuple[str, int], BackendStats | None], ...] = ()
        self.by_address: dict[tuple[str, int], BackendStats] = {}
        self.failure_status = bytes(1 if classify(route, s) else 0 for s in range(1000))
        self.retry_status = bytes(1 if self.limit and should_retry(route, s) else 0 for s in range(1000))
        # Whether some gRPC status is retried here (the HTTP/2 relay then peeks at trailers).
        self.grpc_retry = bool(self.limit) and (retry is None or bool(retry.grpc_codes))

    def failed(self, status: int, grpc_status: int | None) -> bool:
        if grpc_status is None:
            return bool(self.failure_status[status]) if 0 <= status < 1000 else True
        return classify(self.route, status, grpc_status)

    def retry_on(self, status: int, grpc_status: int | None) -> bool:
        """Whether this response (the head, with a trailers-only gRPC status) is worth another attempt."""
        if grpc_status is None or not self.grpc_retry:
            return 0 <= status < 1000 and bool(self.retry_status[status])
        return should_retry(self.route, status, grpc_status)

    def withdraw(self) -> bool:
        """Take budget for one retry (False: the budget is spent, answer with what we have)."""
        if self.budget.try_withdraw(time.monotonic()):
            return True
        self.stats.retry_overflow += 1
        return False

    def retried(self, failed: bool, status: int, grpc: int, error: int, attempts: int) -> None:
        """A request sent ``attempts`` > 0 retries ended (``grpc`` -1: no gRPC status; ``error``: the proxy's
        ERROR_LABELS index, 0: the app answered): Linkerd's retry success and limit counters."""
        stats = self.stats
        if not failed:
            stats.retry_successes += 1
        elif attempts >= self.limit and error == 0 and self.retry_on(status, None if grpc < 0 else grpc):
            stats.retry_limit_exceeded += 1  # worth another attempt, but the route allows no more

    def picked(self, address: tuple[str, int], conn) -> None:
        """A failover group chose ``address``: its backend counts the attempt (``conn``: the exchange)."""
        backend = self.by_address.get(address)
        if backend is not None:
            backend.requests += 1
            if conn is not None:
                conn.backend = backend


def redirect_location(route: Route, request_target: bytes, host: bytes | None, logical: Target) -> str:
    """The Location of a route's RequestRedirect for one request (Gateway API rules).

    Unset parts keep the request's: its host (without port), its path and
    query. The port is written only when it is not the scheme's own: an
    explicit ``port``, else (same scheme) the port the service was addressed on.
    """
    spec = route.redirect
    assert spec is not None
    scheme = spec.scheme or "http"
    if spec.hostname is not None:
        hostname = spec.hostname
    elif host:
        authority = parse_authority(host, logical.port)
        hostname = authority.host if authority is not None else logical.host
    else:
        hostname = logical.host
    if spec.port is not None:
        port = spec.port
    elif spec.scheme is not None:
        port = None  # a new scheme: its well-known port
    else:
        port = logical.port
    if port == {"http": 80, "https": 443}[scheme]:
        port = None
    full = _request_path(request_target).decode("latin-1")
    path, sep, query = full.partition("?")
    if spec.path_kind is not None:
        path = replace_path(route, spec.path_kind, spec.path, path)
    host_text = f"[{hostname}]" if ":" in hostname else hostname
    return f"{scheme}://{host_text}{'' if port is None else f':{port}'}{path}{sep}{query}"


def replace_path(route: Route, kind: str, new: str | None, path: str) -> str:
    """Gateway API HTTPPathModifier on a request path (no query): ``full`` replaces it, ``prefix``
    replaces the route's longest PathPrefix that matched it, element-wise, so ``/foo`` -> ``/xyz``
    turns ``/foo/bar`` into ``/xyz/bar``, ``/foo/`` into ``/xyz/`` and ``/foo`` into ``/xyz``; an empty
    (or ``/``) replacement removes the prefix, leaving at least ``/``."""
    if kind == "full":
        return new or "/"
    prefix = max((m.path.value for m in route.matches if m.path is not None and m.path.kind == "prefix"
                  and _under(path, m.path.value)), key=len, default="/")
    rest = path[len(prefix.rstrip("/")):]
    return (new or "/").rstrip("/") + rest if rest else (new or "/")


class UrlRewrite:
    """A route's URLRewrite in the forms the relays apply: ``target`` edits an origin-form request
    target (the query is kept), ``host`` (bytes, or None: kept) replaces Host, ``apply`` edits HTTP/2
    fields. Only the client's (outbound) proxy holds route policies, so a request is rewritten once."""

    __slots__ = ("route", "kind", "path", "host")

    def __init__(self, route: Route) -> None:
        spec = route.rewrite
        assert spec is not None
        self.route = route
        self.kind = spec.path_kind
        self.path = spec.path
        self.host = spec.hostname.encode("ascii") if spec.hostname else None

    def target(self, target: bytes) -> bytes:
        if self.kind is None or target[:1] != b"/":  # ``*`` (OPTIONS) is no path
            return target
        path, sep, query = target.partition(b"?")
        new = replace_path(self.route, self.kind, self.path, path.decode("latin-1")).encode("latin-1")
        return new + sep + query

    def apply(self, fields: list) -> list:
        host = self.host
        out = []
        for name, value in fields:
            if name == b":path":
                value = self.target(value)
            elif host is not None and (name == b":authority" or name == b"host"):
                value = host
            out.append((name, value))
        return out


def _under(path: str, prefix: str) -> bool:
    """Gateway API PathPrefix: element-wise (``/a`` covers ``/a`` and ``/a/b``, not ``/ab``)."""
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or prefix == ""


class Registry:
    """Counters and budgets by label, kept across policy versions; route labels are bounded."""

    def __init__(self, route_label_limit: int) -> None:
        self.limit = route_label_limit
        self.stats: dict[tuple[str, str], RouteStats] = {}
        self.overflow = RouteStats(OTHER, OTHER)
        self.budgets: dict[str, tuple[object, RetryBudget]] = {}
        self.mirrors: MirrorHub | None = None  # None: mirroring off (test rigs without a hub)
        self.failovers: dict[tuple[str, str], FailoverState] = {}
        self.backends: dict[tuple[str, str, str], BackendStats] = {}

    def route_stats(self, dst: str, route: str, labels: str = "", grpc: bool = False) -> RouteStats:
        """``labels``: the route's ``outbound_http_route_*`` label text (``route_labels``), "" for none;
        ``grpc``: a GRPCRoute's rule (the ``outbound_grpc_route_*`` families)."""
        key = (dst, route)
        stats = self.stats.get(key)
        if stats is None:
            if len(self.stats) >= self.limit:
                return self.overflow
            stats = self.stats[key] = RouteStats(dst, route, labels, grpc)
        elif stats.labels != labels or stats.grpc != grpc:
            stats.labels, stats.grpc = labels, grpc  # a reload moved the rule to another route document
        return stats

    def backend_stats(self, dst: str, route: str, labels: str, grpc: bool) -> BackendStats | None:
        """The counters of one backend of one route (``labels``: ``backend_labels``); None past the label
        limit (the route's own families still count its requests)."""
        key = (dst, route, labels)
        stats = self.backends.get(key)
        if stats is None:
            if len(self.backends) >= self.limit:
                return None
            stats = self.backends[key] = BackendStats(labels, grpc)
        elif stats.grpc != grpc:
            stats.grpc = grpc
        return stats

    def failover(self, dst: str, group: str, spec: Failover, addresses: list[tuple[str, int]]) -> FailoverState:
        """The failover group ``group`` ("" the service's split, else a route's name) of ``dst``; the same
        spec keeps its state (who serves, switch counts) across reloads."""
        key = (dst, group)
        state = self.failovers.get(key)
        if state is None or state.spec != spec or state.order != addresses:
            state = FailoverState(dst, spec, addresses)
            if key in self.failovers or len(self.failovers) < self.limit:
                self.failovers[key] = state
        return state

    def budget(self, dst: str, spec) -> RetryBudget:
        held = self.budgets.get(dst)
        if held is not None and held[0] == spec:
            return held[1]
        budget = RetryBudget(spec.retry_ratio, spec.min_retries_per_second, spec.ttl)
        self.budgets[dst] = (spec, budget)
        return budget


def route_labels(parent: str, route: Route) -> str:
    """Recent Linkerd's ``outbound_http_route_*`` labels of a route under ``parent`` (``parent_labels``):
    ``route_group``, ``route_kind``, ``route_namespace``, ``route_name`` and ``hostname`` (empty, as
    Linkerd exports it by default). An HTTPRoute or GRPCRoute is named by its document (every rule of it
    shares the labels); meshproxy's compact routes by their own name; the default route is Linkerd's
    ``default``/``http``. "" for a ServiceProfile's routes: they keep only the ``route_*`` families."""
    ref = _route_ref(route)
    return "" if ref is None else parent + "," + ref + ',hostname=""'


def backend_labels(parent: str, route: Route, address: tuple[str, int]) -> str:
    """The ``outbound_*_route_backend_*`` labels: ``parent_*``, ``route_*`` and the ``backend_*`` reference
    of the concrete service at ``address`` ("" for a ServiceProfile's routes)."""
    ref = _route_ref(route)
    if ref is None:
        return ""
    return parent + "," + ref + "," + service_backend_ref(address)


def service_backend_ref(address: tuple[str, int]) -> str:
    """The ``backend_*`` labels of the concrete service at ``address``."""
    return text((f"backend_{k}", v) for k, v in service_ref(f"{address[0]}:{address[1]}"))


def _route_ref(route: Route) -> str | None:
    source = route.source
    if source.startswith("ServiceProfile/"):
        return None
    kind, _, rest = source.partition("/")
    if kind in ("HTTPRoute", "GRPCRoute"):
        namespace, _, name = rest.partition("/")
        ref = (route.group, kind, namespace, name)
    elif route is DEFAULT_ROUTE:
        ref = ("", "default", "", "http")
    else:
        ref = ("", "compact", "", route.name)
    return text(zip(("route_group", "route_kind", "route_namespace", "route_name"), ref))


def _backend_address(backend: Backend, default_port: int) -> tuple[str, int]:
    target = parse_authority(backend.authority.encode("ascii", "replace"), default_port)
    if target is None:  # parse.py checked the shape; keep going with the text
        return backend.authority, default_port
    return target.host, target.port


def _request_path(target: bytes) -> bytes:
    """The path (and query) of a request target, for route matching."""
    if target[:1] == b"/":
        return target
    rest = target.partition(b"://")[2]
    slash = rest.find(b"/")
    return rest[slash:] if slash >= 0 else b"/"


def _failover_addresses(spec: Failover, port: int) -> list[tuple[str, int]]:
    return [_backend_address(Backend(a), port) for a in (spec.primary, *spec.secondaries)]


def _mirror_rule(hub: MirrorHub, dst: str, route: Route, port: int) -> MirrorRule | None:
    targets = []
    for spec in route.mirrors:
        counters = hub.counters_for(dst, spec.authority)
        if counters is not None and spec.fraction > 0:
            targets.append((_backend_address(Backend(spec.authority), port), spec.fraction, counters))
    return MirrorRule(hub, targets) if targets else None


class ServiceRuntime:
    """One logical service (as addressed on one port) under one policy version."""

    def __init__(self, policy: ServicePolicy, port: int, registry: Registry, default_limit: int,
                 replay_limit: int, count_backends: bool = True) -> None:
        self.policy = policy
        self.dst = policy.authority
        self.table = RouteTable(policy)
        budget = registry.budget(self.dst, policy.retry_budget)
        self.routes: dict[int, RoutePolicy] = {}
        parent = parent_labels(self.dst)
        for route in (*policy.ordered_routes, *policy.gateway_routes):
            stats = registry.route_stats(self.dst, route.name or "unnamed", route_labels(parent, route),
                                         route.source.startswith("GRPCRoute/"))
            rp = RoutePolicy(route, stats, budget, default_limit, replay_limit)
            if route.mirrors and registry.mirrors is not None:
                rp.mirror = _mirror_rule(registry.mirrors, self.dst, route, port)
            self.routes[id(route)] = rp
        # A ServiceProfile's service is routed by its profile (Linkerd's route_* families), not by a default route.
        profiled = any(r.source.startswith("ServiceProfile/") for r in policy.ordered_routes)
        self.default = RoutePolicy(DEFAULT_ROUTE, registry.route_stats(
            self.dst, DEFAULT_ROUTE.name, "" if profiled else route_labels(parent, DEFAULT_ROUTE)),
            budget, default_limit, replay_limit)
        self.needs_headers = any(m.headers for r in (*policy.ordered_routes, *policy.gateway_routes)
                                 for m in r.matches)
        self.has_routes = bool(self.routes)
        failover = policy.failover
        # A failover group's weights are the operator's business, not ours: the primary stands for it in the split.
        self.split = WeightedBackends((Backend(failover.primary),) if failover is not None else
                                      policy.backends or (Backend(policy.authority),))
        # Concrete backends: each addressed once (a backend without a port
        # takes the port the service was addressed on).
        self.addresses: dict[int, tuple[str, int]] = {}
        for backend in (*self.split.backends, *(b for r in self.routes.values() for b in r.route.backends)):
            self.addresses[id(backend)] = _backend_address(backend, port)
        self.random = random.random
        self.failover: FailoverState | None = None if failover is None else registry.failover(
            self.dst, "", failover, _failover_addresses(failover, port))
        for rp in (*self.routes.values(), self.default):
            spec = rp.route.failover
            if spec is not None:
                rp.failover = registry.failover(self.dst, rp.route.name, spec, _failover_addresses(spec, port))
            elif rp.split is None:
                rp.failover = self.failover
        # A retry goes through the split again (Linkerd retries above the
        # split), so a failing canary's requests mostly land on the stable
        # version when retried.
        for rp in (*self.routes.values(), self.default):
            if len((rp.split or self.split).backends) > 1:
                rp.resplit = functools.partial(self.backend_for, rp)
            # Only routes with Linkerd's route families (not a ServiceProfile's) get backend ones.
            self._backend_stats(rp, registry, parent if count_backends and rp.stats.labels else "")

    def _backend_stats(self, rp: RoutePolicy, registry: Registry, parent: str) -> None:
        """Each backend of the route's split (and of its failover group) with its counters (none without a
        ``parent``), found once here so that a pick hands the exchange a ready object."""
        route = rp.route
        grpc = route.source.startswith("GRPCRoute/")

        def stats(address: tuple[str, int]) -> BackendStats | None:
            labels = backend_labels(parent, route, address) if parent else ""
            return registry.backend_stats(self.dst, route.name, labels, grpc) if labels else None

        rp.concretes = tuple((self.addresses[id(b)], stats(self.addresses[id(b)]))
                             for b in (rp.split or self.split).backends)
        if rp.failover is not None:
            rp.by_address = {a: found for a in rp.failover.order if (found := stats(a)) is not None}

    def match(self, head, conn) -> RoutePolicy:
        if not self.has_routes:
            return self.default
        if self.needs_headers:
            headers = head.header_list() if hasattr(head, "header_list") else getattr(conn, "headers", ())
        else:
            headers = ()
        route = self.table.match(head.method, _request_path(head.target), headers)
        return self.default if route is None else self.routes[id(route)]

    def backend_for(self, rp: RoutePolicy, conn=None) -> tuple[str, int]:
        """The concrete backend of one attempt, by the route's split; its counters go with ``conn``."""
        address, backend = rp.concretes[(rp.split or self.split).index(self.random())]
        if backend is not None:
            backend.requests += 1
            if conn is not None:
                conn.backend = backend
        return address

    def backend_for_connection(self) -> tuple[str, int]:
        return self.addresses[id(self.split.pick(self.random()))]


class OutboundPolicy:
    """The current policy as the outbound router uses it; ``update`` swaps in a new PolicySet."""

    def __init__(self, policy_set: PolicySet, retry_limit: int, replay_limit: int, route_label_limit: int,
                 cluster_domain: str = "cluster.local", mirrors: MirrorHub | None = None) -> None:
        self.retry_limit = retry_limit
        self.replay_limit = replay_limit
        self.cluster_suffix = ".svc." + cluster_domain.strip(".").lower()
        self.registry = Registry(route_label_limit)
        self.registry.mirrors = self.mirrors = mirrors
        self.policy_set = policy_set
        self.cache: dict[tuple[str, int], ServiceRuntime | None] = {}
        self.listeners: list = []  # called after each update (the router re-reads failure accrual)

    def update(self, policy_set: PolicySet) -> None:
        """A new policy version: later requests see it; requests in flight keep theirs."""
        self.policy_set = policy_set
        self.cache = {}
        for listener in self.listeners:
            listener()

    def accrual_for(self, host: str, port: int) -> FailureAccrual | None:
        """The policy's failureAccrual for a concrete service as the balancer addresses it."""
        found = self._find(host, port)
        return found.failure_accrual if found is not None else None

    def lookup(self, target: Target) -> ServiceRuntime | None:
        key = (target.host, target.port)
        cache = self.cache
        try:
            return cache[key]
        except KeyError:
            pass
        runtime = None
        policy = self._find(target.host, target.port)
        if policy is not None:
            runtime = ServiceRuntime(policy, target.port, self.registry, self.retry_limit, self.replay_limit)
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[key] = runtime
        return runtime

    def _find(self, host: str, port: int) -> ServicePolicy | None:
        """``host:port``, then ``host``, then the cluster's full name of a short ``svc.ns`` form."""
        found = self.policy_set.get(f"{host}:{port}")
        if found is None and not host.endswith(self.cluster_suffix):
            base = host[:len(host) - 4] if host.endswith(".svc") else host
            if base.count(".") == 1:
                found = self.policy_set.get(f"{base}{self.cluster_suffix}:{port}")
        return found

    def render(self, out: list[str]) -> None:
        """The mirroring and failover families."""
        if self.mirrors is not None:
            self.mirrors.render(out)
        failover_group.render(out, self.registry.failovers.values())

    def budgets(self, now: float):
        """(dst, BudgetState) for metrics."""
        for dst, (_, budget) in self.registry.budgets.items():
            yield dst, budget.state(now)

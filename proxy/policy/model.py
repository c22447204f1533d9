"""Frozen values describing one service's reliability policy (what parse.py builds, the rest reads).

Routes come in two flavours, kept apart because they match differently:
``ordered_routes`` (ServiceProfile and the compact format: first match wins)
and ``gateway_routes`` (HTTPRoute: Gateway API precedence, see routes.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxy.policy.authz_model import AuthzSet

if TYPE_CHECKING:  # egress_model.py imports this module for Route: no import back at run time.
    from proxy.policy.egress_model import EgressNetwork

# Linkerd's retry budget defaults (ServiceProfile spec.retryBudget).
DEFAULT_RETRY_RATIO = 0.2
DEFAULT_MIN_RETRIES_PER_SECOND = 10
DEFAULT_BUDGET_TTL = 10.0

# Linkerd's retry.linkerd.io/limit default.
DEFAULT_RETRY_LIMIT = 1

GRPC_CODES = {
    "ok": 0, "cancelled": 1, "unknown": 2, "invalid-argument": 3, "deadline-exceeded": 4,
    "not-found": 5, "already-exists": 6, "permission-denied": 7, "resource-exhausted": 8,
    "failed-precondition": 9, "aborted": 10, "out-of-range": 11, "unimplemented": 12,
    "internal": 13, "unavailable": 14, "data-loss": 15, "unauthenticated": 16,
}


# ---- request matching --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathMatch:
    """``kind`` is ``exact``, ``prefix`` (Gateway API: element-wise) or ``regex`` (full match)."""

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """``name`` is lower case; ``kind`` is ``exact`` or ``regex`` (full match of the value)."""

    name: str
    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class QueryParamMatch:
    """A query parameter compared like a header (``exact`` or ``regex``); names are case-sensitive."""

    name: str
    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class RequestMatch:
    """All given parts must match (an HTTPRoute ``matches[]`` element). No path means any path."""

    method: str | None = None
    path: PathMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class Condition:
    """A ServiceProfile request condition: ``kind`` is method, path_regex, all, any or not.

    ``value`` holds the method or regex; ``children`` the operands of all/any/not.
    """

    kind: str
    value: str = ""
    children: tuple[Condition, ...] = ()


# ---- response classification and retries -------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseClass:
    """Responses with a status in [status_min, status_max] (or a gRPC code in ``grpc_codes``) are
    failures when ``is_failure``. A class with neither a range nor codes matches every response."""

    is_failure: bool
    status_min: int | None = None
    status_max: int | None = None
    grpc_codes: frozenset[int] | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Linkerd's retry annotations (or the compact ``retry`` key): which responses to retry, how often.

    ``timeout`` is the per-attempt timeout that makes a slow attempt retryable.
    """

    limit: int = DEFAULT_RETRY_LIMIT
    http_statuses: tuple[tuple[int, int], ...] = ()
    grpc_codes: frozenset[int] = frozenset()
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class HeaderModifier:
    """Gateway API RequestHeaderModifier / ResponseHeaderModifier (outbound/policy.py applies it)."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Redirect:
    """Gateway API RequestRedirect. None fields keep the request's own part; ``path_kind`` is
    ``full`` (the path becomes ``path``) or ``prefix`` (the matched prefix becomes ``path``)."""

    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    path_kind: str | None = None
    path: str | None = None
    status: int = 302


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Gateway API URLRewrite, applied once by the client's proxy. ``hostname`` (None: kept) replaces
    the Host / ``:authority``; ``path_kind``/``path`` as in ``Redirect`` (None: the path is kept)."""

    hostname: str | None = None
    path_kind: str | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Mirror:
    """Gateway API RequestMirror: ``fraction`` (0..1) of the matching requests are also sent to
    ``authority``, fire-and-forget (outbound/mirror.py)."""

    authority: str
    fraction: float = 1.0


@dataclass(frozen=True, slots=True)
class Failover:
    """linkerd-failover's model: ``primary`` takes the traffic while it has a ready endpoint (and, when
    ``min_success_rate`` is set, while its success rate over ``window`` seconds of at least
    ``min_requests`` responses stays at or above it); otherwise the first ready of ``secondaries``."""

    primary: str
    secondaries: tuple[str, ...]
    min_success_rate: float | None = None
    window: float = 10.0
    min_requests: int = 20


@dataclass(frozen=True, slots=True)
class Backend:
    """A concrete service to send to, by authority (``name.ns.svc.cluster.local[:port]``)."""

    authority: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Route:
    """One route. ``matches`` (HTTPRoute/compact, any of them) or ``condition`` (ServiceProfile).

    ``timeout`` bounds the whole request including retries; ``backend_timeout`` one attempt.
    ``backends`` non-empty makes this a backend rule: matching requests split over them.
    ``source`` names where it came from (``ServiceProfile/ns/name``) for metrics and errors;
    ``order`` is (creation timestamp, namespace/name, rule index) for Gateway tie-breaking.
    """

    name: str
    matches: tuple[RequestMatch, ...] = ()
    condition: Condition | None = None
    timeout: float | None = None
    backend_timeout: float | None = None
    idle_timeout: float | None = None
    is_retryable: bool = False
    retry: RetryPolicy | None = None
    response_classes: tuple[ResponseClass, ...] = ()
    backends: tuple[Backend, ...] = ()
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    mirrors: tuple[Mirror, ...] = ()
    failover: Failover | None = None  # over ``backends`` (an HTTPRoute managed by linkerd-failover)
    source: str = ""
    order: tuple = ()
    group: str = ""  # an HTTPRoute's API group (its ``route_group`` metric label)


DEFAULT_ROUTE = Route(name="default")


@dataclass(frozen=True, slots=True)
class RetryBudgetSpec:
    retry_ratio: float = DEFAULT_RETRY_RATIO
    min_retries_per_second: int = DEFAULT_MIN_RETRIES_PER_SECOND
    ttl: float = DEFAULT_BUDGET_TTL


@dataclass(frozen=True, slots=True)
class FailureAccrual:
    """Per-service override of the balancer's failure accrual (config.BalancerSettings)."""

    consecutive_failures: int | None = None
    min_backoff: float | None = None
    max_backoff: float | None = None


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """Everything known about one service. ``backends`` empty means "the service itself"."""

    authority: str
    ordered_routes: tuple[Route, ...] = ()
    gateway_routes: tuple[Route, ...] = ()
    retry_budget: RetryBudgetSpec = field(default_factory=RetryBudgetSpec)
    backends: tuple[Backend, ...] = ()
    failure_accrual: FailureAccrual | None = None
    failover: Failover | None = None  # over ``backends`` (TrafficSplit managed by linkerd-failover, compact)
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Service authority -> policy; ``warnings`` lists shadowed or ignored configuration.

    ``authz`` is the inbound side: servers and who may use them (authz_model.py).
    """

    services: dict[str, ServicePolicy]
    warnings: tuple[str, ...] = ()
    authz: AuthzSet = field(default_factory=AuthzSet)
    egress: tuple[EgressNetwork, ...] = ()  # egress_model.py

    def get(self, authority: str) -> ServicePolicy | None:
        """Exact ``host:port`` first, then the host alone (profiles are named without ports)."""
        found = self.services.get(authority)
        if found is None and ":" in authority:
            found = self.services.get(authority.rsplit(":", 1)[0])
        return found

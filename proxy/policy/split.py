"""Traffic split: choose a backend by weight, after header/path backend rules (HTTPRoute backendRefs).

The random number is passed in (``rnd`` in [0, 1)), so choices are
reproducible in tests and the caller owns the generator.
"""

from __future__ import annotations

from bisect import bisect_right

from proxy.policy.model import Backend, Route, ServicePolicy
from proxy.policy.routes import Headers, RouteTable


class WeightedBackends:
    """Backends with cumulative weights; zero-weight backends are never picked."""

    __slots__ = ("backends", "_cumulative", "_total")

    def __init__(self, backends: tuple[Backend, ...]) -> None:
        live = tuple(b for b in backends if b.weight > 0)
        if not live:
            raise ValueError("no backend has a positive weight")
        self.backends = live
        cumulative, total = [], 0.0
        for backend in live:
            total += backend.weight
            cumulative.append(total)
        self._cumulative = cumulative
        self._total = total

    def pick(self, rnd: float) -> Backend:
        return self.backends[self.index(rnd)]

    def index(self, rnd: float) -> int:
        """The position in ``backends`` of the one ``rnd`` picks."""
        return min(bisect_right(self._cumulative, rnd * self._total), len(self.backends) - 1)


class Splitter:
    """Per-service backend choice: a matching route's own backends first, then the service split.

    A service with no backends at all (and a request matching no backend
    rule) goes to the service itself: ``Backend(policy.authority)``.
    """

    __slots__ = ("table", "_default", "_by_route")

    def __init__(self, policy: ServicePolicy, table: RouteTable | None = None) -> None:
        self.table = table or RouteTable(policy)
        self._default = WeightedBackends(policy.backends or (Backend(policy.authority),))
        self._by_route: dict[int, WeightedBackends] = {}
        for route in (*policy.ordered_routes, *policy.gateway_routes):
            if route.backends and any(b.weight > 0 for b in route.backends):
                self._by_route[id(route)] = WeightedBackends(route.backends)

    def pick_for(self, route: Route | None, rnd: float) -> Backend:
        """When the caller already matched the route (it needs it for timeouts anyway)."""
        chosen = self._by_route.get(id(route)) if route is not None else None
        return (chosen or self._default).pick(rnd)

    def pick(self, method: bytes, path: bytes, headers: Headers, rnd: float) -> Backend:
        return self.pick_for(self.table.match(method, path, headers), rnd)

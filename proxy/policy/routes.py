"""Per-request route selection: ServiceProfile first-match-wins, HTTPRoute Gateway API precedence.

A ``RouteTable`` is compiled once per policy (regexes compiled, strings turned
into bytes, HTTPRoute matches sorted) so ``match`` does no parsing per request.

Gateway API precedence implemented (HTTPRoute spec, "matches" field), for
every (rule, match) pair of every HTTPRoute attached to the service:

1. an ``Exact`` path match;
2. the ``PathPrefix`` match with the most characters;
3. ``RegularExpression`` paths, longest pattern first (the spec leaves regex
   precedence to the implementation: we rank it below every prefix except
   the catch-all ``/``, so a regex rule is not shadowed by a default rule);
   then the catch-all (``PathPrefix /`` or no path match at all);
4. a method match over none;
5. the most header matches;
6. the most query-parameter matches;
7. the oldest route (``metadata.creationTimestamp``; routes without one sort
   first, in document order), then ``namespace/name`` alphabetically;
8. within one HTTPRoute, the first rule in list order, then the first match.

Services with ServiceProfile or compact-format routes use only those (first
match wins), as Linkerd does when a ServiceProfile exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from proxy.policy.model import Condition, RequestMatch, Route, ServicePolicy

Headers = Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]

_EXACT, _PREFIX, _REGEX, _ANY = 0, 1, 2, 3


def _compile_match(m: RequestMatch) -> tuple:
    method = m.method.encode("ascii") if m.method else None
    path_value: bytes | re.Pattern[bytes] | None
    if m.path is None:
        path_kind, path_value = _ANY, None
    elif m.path.kind == "exact":
        path_kind, path_value = _EXACT, m.path.value.encode()
    elif m.path.kind == "prefix":
        value = m.path.value.encode().rstrip(b"/")
        path_kind, path_value = (_ANY, None) if not value else (_PREFIX, value)
    else:
        path_kind, path_value = _REGEX, re.compile(m.path.value.encode())
    headers = tuple(
        (h.name.lower().encode(), re.compile(h.value.encode()) if h.kind == "regex" else h.value.encode())
        for h in m.headers
    )
    query = tuple(
        (q.name, re.compile(q.value) if q.kind == "regex" else q.value) for q in m.query_params
    )
    return method, path_kind, path_value, headers, query


def _precedence(m: RequestMatch) -> tuple:
    if m.path is None or (m.path.kind == "prefix" and not m.path.value.rstrip("/")):
        path_rank = (3, 0)
    elif m.path.kind == "exact":
        path_rank = (0, 0)
    elif m.path.kind == "prefix":
        path_rank = (1, -len(m.path.value.rstrip("/")))
    else:
        path_rank = (2, -len(m.path.value))
    return (*path_rank, 0 if m.method else 1, -len(m.headers), -len(m.query_params))


def _compile_condition(c: Condition) -> tuple:
    if c.kind == "method":
        return ("method", c.value.encode("ascii"))
    if c.kind == "path_regex":
        return ("path", re.compile(c.value.encode()))
    return (c.kind, tuple(_compile_condition(child) for child in c.children))


def _eval(cond: tuple, method: bytes, path: bytes) -> bool:
    kind, arg = cond
    if kind == "method":
        return method == arg
    if kind == "path":
        return arg.fullmatch(path) is not None
    if kind == "all":
        return all(_eval(c, method, path) for c in arg)
    if kind == "any":
        return any(_eval(c, method, path) for c in arg)
    return not _eval(arg[0], method, path)  # "not"


def _header_ok(headers: Any, name: bytes, want: Any) -> bool:
    items = headers.items() if hasattr(headers, "items") else headers
    for key, value in items:
        if len(key) == len(name) and key.lower() == name:
            if want.fullmatch(value) if isinstance(want, re.Pattern) else value == want:
                return True
    return False


def _query_ok(query: bytes, name: str, want: Any) -> bool:
    from urllib.parse import parse_qsl

    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key == name:
            # Gateway API: only the first value of a repeated parameter counts.
            return want.fullmatch(value) is not None if isinstance(want, re.Pattern) else value == want
    return False


class RouteTable:
    """The compiled routes of one ServicePolicy; ``match`` is the per-request call."""

    __slots__ = ("policy", "_ordered", "_gateway")

    def __init__(self, policy: ServicePolicy) -> None:
        self.policy = policy
        self._ordered: tuple = ()
        self._gateway: tuple = ()
        if policy.ordered_routes:
            ordered: list[tuple[Route, tuple | None, tuple]] = []  # (route, condition, matches)
            for route in policy.ordered_routes:
                if route.condition is not None:
                    ordered.append((route, _compile_condition(route.condition), ()))
                else:
                    ordered.append((route, None, tuple(_compile_match(m) for m in route.matches or (RequestMatch(),))))
            self._ordered = tuple(ordered)
        else:
            keyed = []
            for route in policy.gateway_routes:
                for index, m in enumerate(route.matches or (RequestMatch(),)):
                    keyed.append(((_precedence(m), route.order, index), route, _compile_match(m)))
            keyed.sort(key=lambda item: item[0])
            self._gateway = tuple((route, compiled) for _, route, compiled in keyed)

    def match(self, method: bytes, path: bytes, headers: Headers = ()) -> Route | None:
        """The route for a request (``path`` may carry ``?query``), or None when none matches."""
        qmark = path.find(b"?")
        query = b""
        if qmark >= 0:
            path, query = path[:qmark], path[qmark + 1 :]
        for route, cond, matches in self._ordered:
            if cond is not None:
                if _eval(cond, method, path):
                    return route
            elif any(_matches(m, method, path, query, headers) for m in matches):
                return route
        for route, compiled in self._gateway:
            if _matches(compiled, method, path, query, headers):
                return route
        return None


def _matches(compiled: tuple, method: bytes, path: bytes, query: bytes, headers: Headers) -> bool:
    want_method, path_kind, path_value, header_matches, query_matches = compiled
    if want_method is not None and method != want_method:
        return False
    if path_kind == _EXACT:
        if path != path_value:
            return False
    elif path_kind == _PREFIX:
        # Element-wise: /foo matches /foo, /foo/ and /foo/bar, never /foobar.
        if not path.startswith(path_value) or (
            len(path) > len(path_value) and path[len(path_value)] != 0x2F
        ):
            return False
    elif path_kind == _REGEX and path_value.fullmatch(path) is None:
        return False
    for name, want in header_matches:
        if not _header_ok(headers, name, want):
            return False
    for name, want in query_matches:
        if not _query_ok(query, name, want):
            return False
    return True


_TABLES: dict[int, RouteTable] = {}


def match(policy: ServicePolicy, method: bytes, path: bytes, headers: Headers = ()) -> Route | None:
    """Convenience wrapper caching one RouteTable per policy object; hold a RouteTable in hot code."""
    table = _TABLES.get(id(policy))
    if table is None or table.policy is not policy:
        if len(_TABLES) > 1024:
            _TABLES.clear()
        table = _TABLES[id(policy)] = RouteTable(policy)
    return table.match(method, path, headers)

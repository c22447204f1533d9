"""``meshproxy viz routes``: per route of the services a workload calls (the outbound route metrics
``route_*{dst,rt_route}``; ``[DEFAULT]`` for requests no route matched), effective and actual.

Effective numbers are the client's: one response per request, after retries
(``route_response_total``). Actual ones count every attempt: the requests plus
``route_retry_total``; a retry is only sent after a failed attempt, so the
actual successes are the effective ones, over more attempts.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from proxy.viz import table
from proxy.viz.query import Matcher, Query
from proxy.viz.resources import Resource
from proxy.viz.source import Source
from proxy.viz.stat import QUANTILES

DEFAULT = "[DEFAULT]"
_SERVICE = re.compile(r"^([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.")


@dataclass(slots=True)
class RouteRow:
    route: str
    dst: str  # the route's service as the proxy names it (host:port)
    success: float | None = None
    rps: float | None = None
    actual_success: float | None = None
    actual_rps: float | None = None
    latency: tuple[float | None, float | None, float | None] = (None, None, None)

    @property
    def service(self) -> str:
        match = _SERVICE.match(self.dst)
        return match.group(1) if match else self.dst

    def json(self) -> dict[str, object]:
        return {"route": self.route, "authority": self.dst, "service": self.service,
                "effective_success": self.success, "effective_rps": self.rps,
                "actual_success": self.actual_success, "actual_rps": self.actual_rps,
                "latency_ms_p50": self.latency[0], "latency_ms_p95": self.latency[1],
                "latency_ms_p99": self.latency[2]}


def matchers(resource: Resource | None, namespace: str | None, to: str | None) -> tuple[Matcher, ...]:
    m: list[Matcher] = [("direction", "=", "outbound")]
    if resource is not None and resource.name:
        m.append((resource.label, "=", resource.name))
    if namespace:
        m.append(("namespace", "=", namespace))
    if to:
        m.append(("dst", "=", to))
    return tuple(m)


async def routes(source: Source, m: tuple[Matcher, ...], window: float) -> list[RouteRow]:
    """Rows from the route metrics; a proxy without a policy has none, and then every request it
    sent went by the default route: one ``[DEFAULT]`` row per service, from ``response_total``."""
    by = ("dst", "rt_route")
    queries = [Query("increase", "route_response_total", m, by + ("classification",)),
               Query("increase", "route_retry_total", m, by)]
    queries += [Query("quantile", "route_response_latency_ms", m, by, q) for q in QUANTILES]
    responses, retries, *quantiles = await asyncio.gather(*(source.evaluate(q, window) for q in queries))
    if not responses:
        plain = tuple((label if label != "dst" else "authority", op, value) for label, op, value in m)
        queries = [Query("increase", "response_total", plain, ("authority", "classification"))]
        queries += [Query("quantile", "response_latency_ms", plain, ("authority",), q) for q in QUANTILES]
        responses, *quantiles = await asyncio.gather(*(source.evaluate(q, window) for q in queries))
        retries = []
        for vector in [responses, *quantiles]:
            for labels, _ in vector:
                labels["dst"] = labels.pop("authority", "")
    seconds = source.seconds(window)
    rows: dict[tuple[str, str], RouteRow] = {}
    counts: dict[tuple[str, str], list[float]] = {}
    for labels, value in responses:
        key = (labels.get("dst", ""), labels.get("rt_route", ""))
        if not key[0]:
            continue  # answered before any service was known (no route either)
        rows.setdefault(key, RouteRow(_route_name(key[1]), key[0]))
        counts.setdefault(key, [0.0, 0.0, 0.0])[0 if labels.get("classification") == "success" else 1] += value
    for labels, value in retries:
        key = (labels.get("dst", ""), labels.get("rt_route", ""))
        if key in counts:
            counts[key][2] += value
    for key, (ok, failed, retried) in counts.items():
        row = rows[key]
        if ok + failed > 0 and seconds > 0:
            row.success, row.rps = ok / (ok + failed), (ok + failed) / seconds
            row.actual_success, row.actual_rps = ok / (ok + failed + retried), (ok + failed + retried) / seconds
    for i, vector in enumerate(quantiles):
        for labels, value in vector:
            key = (labels.get("dst", ""), labels.get("rt_route", ""))
            if key in rows and rows[key].rps is not None:
                latency = list(rows[key].latency)
                latency[i] = value
                rows[key].latency = (latency[0], latency[1], latency[2])
    # Linkerd's order: by service, then route, the default route last.
    return sorted(rows.values(), key=lambda r: (r.dst, r.route == DEFAULT, r.route))


def _route_name(label: str) -> str:
    return DEFAULT if label in ("default", "") else label


def render(rows: list[RouteRow], wide: bool = False) -> str:
    if not rows:
        return "No traffic found."
    headers: tuple[str, ...]
    if wide:
        headers = ("ROUTE", "SERVICE", "EFFECTIVE_SUCCESS", "EFFECTIVE_RPS", "ACTUAL_SUCCESS", "ACTUAL_RPS",
                   "LATENCY_P50", "LATENCY_P95", "LATENCY_P99")
    else:
        headers = ("ROUTE", "SERVICE", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99")
    lines = []
    for r in rows:
        cells = [r.route, r.service, table.percent(r.success), table.rps(r.rps)]
        if wide:
            cells += [table.percent(r.actual_success), table.rps(r.actual_rps)]
        cells += [table.ms(v) for v in r.latency]
        lines.append(cells)
    return table.render(headers, lines, left=1)

"""``meshproxy viz stat``: per resource, Linkerd's golden metrics (success rate, requests per second,
latency percentiles) and TCP connections and bytes, from the queries of Linkerd's viz StatSummary."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from proxy.viz import table
from proxy.viz.query import Matcher, Query, Vector
from proxy.viz.resources import SHORT, Resource
from proxy.viz.source import Source

QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True, slots=True)
class StatRequest:
    resource: Resource
    namespace: str | None = "default"  # None: every namespace (-A)
    to: Resource | None = None
    to_namespace: str | None = None
    from_: Resource | None = None
    from_namespace: str | None = None
    window: float = 60.0


@dataclass(slots=True)
class StatRow:
    namespace: str
    kind: str
    name: str
    meshed: tuple[int, int] | None = None  # (answering, known) proxies; None: not a workload (svc, authority)
    success: float | None = None
    rps: float | None = None
    latency: tuple[float | None, float | None, float | None] = (None, None, None)
    tcp_conn: float | None = None
    read_rate: float | None = None
    write_rate: float | None = None

    def json(self) -> dict[str, object]:
        return {"namespace": self.namespace, "kind": self.kind, "name": self.name,
                "meshed": None if self.meshed is None else f"{self.meshed[0]}/{self.meshed[1]}",
                "success": self.success, "rps": self.rps, "latency_ms_p50": self.latency[0],
                "latency_ms_p95": self.latency[1], "latency_ms_p99": self.latency[2],
                "tcp_open_connections": self.tcp_conn, "tcp_read_bytes_rate": self.read_rate,
                "tcp_write_bytes_rate": self.write_rate}


@dataclass(frozen=True, slots=True)
class Plan:
    """Which side's series answer the request, how they are filtered and what names a row."""

    matchers: tuple[Matcher, ...]
    ns_label: str
    name_label: str
    tcp_peer: str | None  # None: no TCP columns (an authority has no TCP series)


def plan(req: StatRequest) -> Plan:
    """As Linkerd's StatSummary: a workload's own inbound series; a service seen by its callers
    (outbound ``dst_service``); ``--to``: the resource's outbound series towards the other one;
    ``--from``: the other one's outbound series, rows named by their ``dst_*`` labels."""
    res = req.resource
    m: list[Matcher] = []
    if req.from_ is not None:
        src = req.from_
        m.append(("direction", "=", "outbound"))
        if src.name:
            m.append((src.label, "=", src.name))
        if req.from_namespace and src.kind != "namespace":
            m.append(("namespace", "=", req.from_namespace))
        if res.name:
            m.append((res.dst_label, "=", res.name))
        if req.namespace and res.kind != "namespace":
            m.append(("dst_namespace", "=", req.namespace))
        ns_label = "dst_namespace"
        return Plan(tuple(m), ns_label, ns_label if res.kind == "namespace" else res.dst_label, "dst")
    if res.kind == "service":
        m.append(("direction", "=", "outbound"))
        if res.name:
            m.append(("dst_service", "=", res.name))
        if req.namespace:
            m.append(("dst_namespace", "=", req.namespace))
        return Plan(tuple(m), "dst_namespace", "dst_service", "dst")
    outbound = req.to is not None
    m.append(("direction", "=", "outbound" if outbound else "inbound"))
    if res.name:
        m.append((res.label, "=", res.name))
    if req.namespace and res.kind != "namespace":
        m.append(("namespace", "=", req.namespace))
    if req.to is not None:
        if req.to.name:
            m.append((req.to.dst_label, "=", req.to.name))
        to_ns = req.to_namespace or req.namespace
        if to_ns and req.to.kind not in ("namespace", "authority"):
            m.append(("dst_namespace", "=", to_ns))
    peer = None if res.kind == "authority" else ("dst" if outbound else "src")
    return Plan(tuple(m), "namespace", "namespace" if res.kind == "namespace" else res.label, peer)


async def stat(source: Source, req: StatRequest) -> list[StatRow]:
    """One row per resource that had traffic (or, for workloads, a proxy) in the window."""
    p = plan(req)
    by = (p.ns_label,) if p.ns_label == p.name_label else (p.ns_label, p.name_label)
    queries: dict[str, Query] = {"responses": Query("increase", "response_total", p.matchers, by + ("classification",))}
    for q in QUANTILES:
        queries[f"p{q}"] = Query("quantile", "response_latency_ms", p.matchers, by, q)
    if p.tcp_peer is not None:
        tcp = p.matchers + (("peer", "=", p.tcp_peer),)
        queries["conn"] = Query("gauge", "tcp_open_connections", tcp, by)
        queries["read"] = Query("increase", "tcp_read_bytes_total", tcp, by)
        queries["write"] = Query("increase", "tcp_write_bytes_total", tcp, by)
    names = list(queries)
    results = dict(zip(names, await asyncio.gather(*(source.evaluate(queries[n], req.window) for n in names)),
                       strict=True))
    seconds = source.seconds(req.window)
    rows: dict[tuple[str, str], StatRow] = {}

    def row(labels: dict[str, str]) -> StatRow | None:
        key = (labels.get(p.ns_label, ""), labels.get(p.name_label, ""))
        if not key[1]:
            return None  # series without the resource's label: not this kind of resource
        if key not in rows:
            rows[key] = StatRow(key[0], req.resource.kind, key[1])
        return rows[key]

    answered: dict[tuple[str, str], list[float]] = {}
    for labels, value in results["responses"]:
        r = row(labels)
        if r is not None:
            counts = answered.setdefault((r.namespace, r.name), [0.0, 0.0])
            counts[0 if labels.get("classification") == "success" else 1] += value
    for key, (ok, failed) in answered.items():
        if ok + failed > 0:
            rows[key].success = ok / (ok + failed)
            rows[key].rps = (ok + failed) / seconds if seconds > 0 else None
    latencies: dict[tuple[str, str], list[float | None]] = {}
    for i, q in enumerate(QUANTILES):
        for labels, value in results[f"p{q}"]:
            r = row(labels)
            if r is not None:
                latencies.setdefault((r.namespace, r.name), [None, None, None])[i] = value
    for key, values in latencies.items():
        if rows[key].rps is not None:
            rows[key].latency = (values[0], values[1], values[2])
    if p.tcp_peer is not None:
        _tcp(results, row, seconds)
    if req.resource.kind not in ("service", "authority"):
        await _meshed(source, req, by, rows)
    return sorted(rows.values(), key=lambda r: (r.namespace, r.name))


def _tcp(results: dict[str, Vector], row, seconds: float) -> None:
    for labels, value in results["conn"]:
        r = row(labels)
        if r is not None:
            r.tcp_conn = value
    for name, attr in (("read", "read_rate"), ("write", "write_rate")):
        for labels, value in results[name]:
            r = row(labels)
            if r is not None and seconds > 0:
                setattr(r, attr, value / seconds)


async def _meshed(source: Source, req: StatRequest, by: tuple[str, ...],
                  rows: dict[tuple[str, str], StatRow]) -> None:
    """MESHED: the resource's proxies that answer, of those known; a known workload without traffic
    gets a row of its own (as Linkerd lists every workload of the kind), except with --to/--from,
    whose rows are the traffic between two resources."""
    own = tuple(label.removeprefix("dst_") for label in by)  # --from rows are named by dst_* labels
    between = req.to is not None or req.from_ is not None
    for key, counts in (await source.proxies(own, req.window)).items():
        ns, name = (key[0], key[0]) if len(key) == 1 else key
        if not name or (req.resource.name and name != req.resource.name):
            continue
        if req.namespace and req.resource.kind != "namespace" and ns != req.namespace:
            continue
        if between and (ns, name) not in rows:
            continue
        if (ns, name) not in rows:
            rows[(ns, name)] = StatRow(ns, req.resource.kind, name)
        rows[(ns, name)].meshed = counts


HEADERS = ("NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN")
WIDE = ("READ_BYTES/SEC", "WRITE_BYTES/SEC")


def render(rows: list[StatRow], wide: bool = False, all_namespaces: bool = False, prefix: bool = False) -> str:
    """Linkerd's stat table (``prefix``: names as ``deploy/web``, for ``stat all``)."""
    if not rows:
        return "No traffic found."
    headers = (("NAMESPACE",) if all_namespaces else ()) + HEADERS + (WIDE if wide else ())
    lines = []
    for r in rows:
        name = f"{SHORT[r.kind]}/{r.name}" if prefix else r.name
        cells = [r.namespace] if all_namespaces else []
        cells += [name, "-" if r.meshed is None else f"{r.meshed[0]}/{r.meshed[1]}"]
        if r.rps is None:
            cells += ["-"] * 5
        else:
            cells += [table.percent(r.success), table.rps(r.rps)] + [table.ms(v) for v in r.latency]
        cells.append(table.count(r.tcp_conn))
        if wide:
            cells += [table.byte_rate(r.read_rate), table.byte_rate(r.write_rate)]
        lines.append(cells)
    return table.render(headers, lines, left=2 if all_namespaces else 1)

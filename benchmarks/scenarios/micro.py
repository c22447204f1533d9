"""Scenario ``micro``: in-process timings of the fast path, compiled vs uncompiled.

Each fast-path function is timed twice on the same inputs: from the compiled
extension (``proxy.<package>.<module>``) and from the very same ``.py``
source loaded uncompiled under another module name. It also prices counting
one request in prometheus_client against the proxy's own counters
(``proxy.telemetry.counters``). Numbers are ns per call including the Python
call itself (~20-40 ns), the minimum over repeats.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import ssl
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from benchmarks.lib.context import Context
from benchmarks.lib.procs import parse_cpu_list
from benchmarks.lib.report import ScenarioResult, Table

NAME = "micro"
DESCRIPTION = "in-process ns/op of fast-path functions, compiled vs pure Python; metrics cost"

WRK_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
CURL_HEAD = (
    b"GET /api/v1/items?id=42 HTTP/1.1\r\n"
    b"Host: web.default.svc.cluster.local:8080\r\n"
    b"User-Agent: curl/7.88.1\r\n"
    b"Accept: */*\r\n\r\n"
)
SERVICE_HEAD = (
    b"POST /orders HTTP/1.1\r\n"
    b"Host: orders.shop.svc.cluster.local\r\n"
    b"User-Agent: python-requests/2.31.0\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Accept: application/json\r\n"
    b"Connection: keep-alive\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 48\r\n"
    b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    b"l5d-dst-override: orders.shop.svc.cluster.local:8080\r\n\r\n"
)
NGINX_RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 64\r\nConnection: keep-alive\r\n\r\n"
)
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x12\x04\x00\x00\x00\x00\x00"
OPAQUE_BYTES = b"*1\r\n$4\r\nPING\r\n"  # a Redis command: not HTTP, not TLS
MAX_HEAD = 65536


def client_hello() -> bytes:
    """A real ClientHello (SNI + ALPN h2/http1.1) from this Python's OpenSSL."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname="web.default.svc.cluster.local")
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


@dataclass
class Case:
    """One function to time: module, name, and (label, args) inputs."""

    module: str
    function: str
    inputs: list[tuple[str, tuple[Any, ...]]]


def cases() -> list[Case]:
    hello = client_hello()
    return [
        Case("protocol.http1", "parse_request_head", [
            ("wrk head (2 lines)", (WRK_HEAD, MAX_HEAD)),
            ("curl head (4 lines)", (CURL_HEAD, MAX_HEAD)),
            ("service head (10 lines)", (SERVICE_HEAD, MAX_HEAD)),
        ]),
        Case("protocol.http1", "parse_response_head", [("nginx 200 head", (NGINX_RESPONSE_HEAD, MAX_HEAD))]),
        Case("protocol.detect", "detect", [
            ("HTTP/1 (wrk head)", (WRK_HEAD,)),
            ("HTTP/1 (service head)", (SERVICE_HEAD,)),
            ("HTTP/2 preface", (H2_PREFACE,)),
            (f"TLS ClientHello ({len(hello)} B)", (hello,)),
            ("opaque (Redis)", (OPAQUE_BYTES,)),
        ]),
        Case("protocol.detect", "peek_client_hello", [(f"TLS ClientHello ({len(hello)} B)", (hello,))]),
    ]


# ---- loading both builds --------------------------------------------------------


def load_compiled(module: str) -> tuple[ModuleType | None, str]:
    """``proxy.<module>`` (``protocol.http1``) if it imports *and* is the compiled extension."""
    try:
        mod = importlib.import_module(f"proxy.{module}")
    except Exception as err:  # the package may be mid-construction
        return None, f"import failed: {type(err).__name__}: {err}"
    origin = getattr(mod, "__file__", "") or ""
    if not origin.endswith((".so", ".pyd")):
        return None, f"not compiled (loaded from {os.path.basename(origin)}; build with setup.py build_ext)"
    return mod, ""


def load_pure(module: str) -> tuple[ModuleType | None, str]:
    """The same module's ``.py`` source, executed uncompiled under another name.

    The name stays inside the module's package so relative imports still work.
    """
    package_name, _, short = f"proxy.{module}".rpartition(".")
    try:
        package = importlib.import_module(package_name)
    except Exception as err:
        return None, f"import failed: {type(err).__name__}: {err}"
    source = os.path.join(os.path.dirname(package.__file__), f"{short}.py")
    if not os.path.exists(source):
        return None, f"no {short}.py source (a .pyx has no uncompiled twin)"
    name = f"{package_name}._bench_pure_{short}"
    spec = importlib.util.spec_from_file_location(name, source)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as err:
        del sys.modules[name]
        return None, f"uncompiled load failed: {type(err).__name__}: {err}"
    return mod, ""


# ---- timing -------------------------------------------------------------------------


def ns_per_call(fn: Callable[..., Any], args: tuple[Any, ...], repeats: int, min_time: float) -> float:
    """Minimum over ``repeats`` of the mean ns per call (loop sized by autorange)."""
    timer = timeit.Timer("fn(*args)", globals={"fn": fn, "args": args})
    number = 1
    while True:
        if timer.timeit(number) >= min_time:
            break
        number *= 2
    return min(timer.repeat(repeats, number)) / number * 1e9


def ns_per_stmt(stmt: str, namespace: dict[str, Any], repeats: int, min_time: float) -> float:
    timer = timeit.Timer(stmt, globals=namespace)
    number = 1
    while timer.timeit(number) < min_time:
        number *= 2
    return min(timer.repeat(repeats, number)) / number * 1e9


def _fmt_ns(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _time_case(case: Case, repeats: int, min_time: float) -> tuple[list[list[str]], list[dict], list[str]]:
    compiled_mod, c_why = load_compiled(case.module)
    pure_mod, p_why = load_pure(case.module)
    compiled = getattr(compiled_mod, case.function, None) if compiled_mod else None
    pure = getattr(pure_mod, case.function, None) if pure_mod else None
    notes = []
    if compiled is None:
        notes.append(f"{case.module}.{case.function} compiled: {c_why or 'no such function'}")
    if pure is None:
        notes.append(f"{case.module}.{case.function} pure: {p_why or 'no such function'}")
    rows, data = [], []
    if compiled is None and pure is None:
        return rows, data, notes
    for label, args in case.inputs:
        timings: dict[str, float | None] = {}
        for kind, fn in (("compiled", compiled), ("pure", pure)):
            if fn is None:
                timings[kind] = None
                continue
            try:
                fn(*args)
            except Exception as err:
                notes.append(f"{case.function}({label}) {kind} raised {type(err).__name__}: {err}")
                timings[kind] = None
                continue
            timings[kind] = ns_per_call(fn, args, repeats, min_time)
        c, p = timings["compiled"], timings["pure"]
        speedup = f"{p / c:.1f}x" if c and p else "-"
        rows.append([f"{case.module}.{case.function}", label, _fmt_ns(c), _fmt_ns(p), speedup])
        data.append({
            "function": f"{case.module}.{case.function}", "input": label,
            "compiled_ns": None if c is None else round(c, 1),
            "pure_ns": None if p is None else round(p, 1),
            "speedup": None if not (c and p) else round(p / c, 2),
        })
    return rows, data, notes


# ---- counting one request ------------------------------------------------------------


def _metrics_rows(repeats: int, min_time: float) -> tuple[list[list[str]], dict[str, Any], list[str]]:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    rows, data, notes = [], {}, []
    registry = CollectorRegistry()
    # Linkerd-shaped names and labels; buckets as the proxy's (ms).
    buckets = (1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
               1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000)
    counter = Counter("request_total", "requests", ["direction", "authority", "status_code", "classification"],
                      registry=registry)
    hist = Histogram("response_latency_ms", "latency", ["direction", "authority", "status_code"],
                     buckets=buckets, registry=registry)
    labels = ("outbound", "web.default.svc.cluster.local:8080", "200", "success")
    ns = {
        "counter": counter, "hist": hist, "labels": labels, "hlabels": labels[:3],
        "c_child": counter.labels(*labels), "h_child": hist.labels(*labels[:3]),
    }
    lookup_stmt = "counter.labels(*labels).inc(); hist.labels(*hlabels).observe(1.234)"
    prom_lookup = ns_per_stmt(lookup_stmt, ns, repeats, min_time)
    prom_bound = ns_per_stmt("c_child.inc(); h_child.observe(1.234)", ns, repeats, min_time)
    rows.append(["prometheus_client", "Counter.labels().inc() + Histogram.labels().observe()",
                 _fmt_ns(prom_lookup), ""])
    rows.append(["prometheus_client", "pre-bound children: .inc() + .observe()", _fmt_ns(prom_bound), ""])
    data["prometheus_client_labels_ns"] = round(prom_lookup, 1)
    data["prometheus_client_bound_ns"] = round(prom_bound, 1)

    stmt = "stats.requests += 1; stats.record_response(200, 1.234, False)"
    for kind, loader in (("compiled", load_compiled), ("pure", load_pure)):
        mod, why = loader("telemetry.counters")
        cls = getattr(mod, "HttpStats", None) if mod else None
        if cls is None or not hasattr(cls, "record_response"):
            notes.append(f"proxy.telemetry.counters ({kind}) skipped: {why or 'no HttpStats.record_response'}")
            continue
        try:
            stats = cls("outbound")
            exec(stmt, {"stats": stats})
        except Exception as err:
            notes.append(f"proxy.telemetry.counters ({kind}) skipped: {type(err).__name__}: {err}")
            continue
        value = ns_per_stmt(stmt, {"stats": stats}, repeats, min_time)
        vs = f"prometheus_client (labels) is {prom_lookup / value:.1f}x this"
        rows.append([f"proxy.telemetry.counters ({kind})", "HttpStats: requests += 1; record_response()",
                     _fmt_ns(value), vs])
        data[f"proxy_metrics_{kind}_ns"] = round(value, 1)
    return rows, data, notes


def run(ctx: Context) -> ScenarioResult:
    repeats, min_time = (3, 0.05) if ctx.quick else (7, 0.2)
    # Time on the proxy's CPU, alone, as the proxy would run.
    saved = os.sched_getaffinity(0)
    cpus = parse_cpu_list(ctx.placement.proxy_cpus)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        ctx.progress(f"[{NAME}] timing fast-path functions")
        rows, data, notes = [], [], []
        for case in cases():
            r, d, n = _time_case(case, repeats, min_time)
            rows += r
            data += d
            notes += n
        ctx.progress(f"[{NAME}] timing per-request metrics")
        m_rows, m_data, m_notes = _metrics_rows(repeats, min_time)
    finally:
        os.sched_setaffinity(0, saved)
    tables = [
        Table(
            "Fast path: ns per call (min of repeats)",
            ["function", "input", "compiled ns", "pure ns", "speed-up"],
            rows or [["-", "nothing could be timed", "-", "-", "-"]],
            notes=notes,
            numeric={"compiled ns", "pure ns", "speed-up"},
        ),
        Table(
            "Counting one request (counter + latency histogram)",
            ["implementation", "operation", "ns", "comparison"],
            m_rows,
            notes=m_notes,
            numeric={"ns"},
        ),
    ]
    return ScenarioResult(
        name=NAME,
        description=DESCRIPTION,
        params={"repeats": repeats, "min_loop_s": min_time,
                "cpu": ctx.placement.proxy_cpus or "not pinned", "max_head_bytes": MAX_HEAD},
        tables=tables,
        data={"fastpath": data, "metrics": m_data},
    )

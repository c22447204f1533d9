"""Renders the fast path's counters as Prometheus text, with Linkerd's metric names and labels.

The counters themselves live in ``proxy.telemetry.counters`` (plain integers
bumped inline per request); this module only runs when /metrics is scraped.
"""

from __future__ import annotations

import errno
import gc
import os
import resource
import time
from collections.abc import Iterable

from proxy.telemetry.counters import (
    BACKEND_BUCKETS_MS,
    ERROR_LABELS,
    FRAME_BUCKETS,
    LATENCY_BUCKETS_MS,
    ROUTE_BUCKETS_MS,
    ROUTE_ERRORS,
    HttpStats,
    TcpStats,
)
from proxy.telemetry.labels import OTHER, service_ref, text
from proxy.telemetry.memory import frozen_objects

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_START = time.time()
_PAGE = os.sysconf("SC_PAGE_SIZE")


def label_set(pairs: Iterable[tuple[str, object]]) -> str:
    """``{k="v",...}`` with Prometheus escaping; every module that renders metrics uses this one."""
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs)
    return "{" + inner + "}"


def _labels(**labels: object) -> str:
    return label_set(labels.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _header(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def render_http(out: list[str], stats: Iterable[HttpStats]) -> None:
    """request_total, response_total and response_latency_ms, each family whole, one series per label set."""
    stats = list(stats)
    _header(out, "request_total", "counter", "Total count of HTTP requests.")
    for s in stats:
        out.append(f"request_total{{{s.labels}}} {s.requests}")
    _header(out, "response_total", "counter", "Total count of HTTP responses.")
    for s in stats:
        for status, grpc, error, failure, n in s.outcomes():
            pairs: list[tuple[str, object]] = [("status_code", status),
                                               ("classification", "failure" if failure else "success")]
            if grpc >= 0:
                pairs.append(("grpc_status", grpc))
            if error:
                name, errno = ERROR_LABELS[error]
                pairs.append(("error", name))
                if errno:
                    pairs.append(("errno", errno))
            out.append(f"response_total{{{s.labels},{text(pairs)}}} {n}")
        for klass, n in (("success", s.other_successes), ("failure", s.other_failures)):
            if n:
                out.append(f'response_total{{{s.labels},status_code="{OTHER}",classification="{klass}"}} {n}')
    _header(out, "response_latency_ms", "histogram",
            "Elapsed time between a request's head arriving and its response head being sent.")
    for s in stats:
        _histogram(out, "response_latency_ms", s.labels, s.latency_buckets, s.latency_sum_ms, s.latency_count)


def _histogram(out: list[str], name: str, labels: str, buckets, total: float, count: int) -> None:
    cumulative = 0
    for i, bound in enumerate(LATENCY_BUCKETS_MS):
        cumulative += buckets[i]
        out.append(f'{name}_bucket{{{labels},le="{bound}"}} {cumulative}')
    cumulative += buckets[len(LATENCY_BUCKETS_MS)]
    out.append(f'{name}_bucket{{{labels},le="+Inf"}} {cumulative}')
    out.append(f"{name}_sum{{{labels}}} {total:.3f}")
    out.append(f"{name}_count{{{labels}}} {count}")


def render_tcp(out: list[str], stats: Iterable[TcpStats]) -> None:
    """The TCP families, each whole, one series per label set (close errors by errno)."""
    stats = list(stats)
    series = (
        ("tcp_open_total", "counter", "Total count of opened connections.", lambda s: s.opened),
        ("tcp_open_connections", "gauge", "Number of currently-open connections.", lambda s: s.opened - s.closed),
        ("tcp_read_bytes_total", "counter", "Total count of bytes read from peers.", lambda s: s.read_bytes),
        ("tcp_write_bytes_total", "counter", "Total count of bytes written to peers.", lambda s: s.write_bytes),
    )
    for name, kind, help_text, value in series:
        _header(out, name, kind, help_text)
        for s in stats:
            out.append(f"{name}{{{s.labels}}} {value(s)}")
    _header(out, "tcp_close_total", "counter", "Total count of closed connections.")
    for s in stats:
        out.append(f'tcp_close_total{{{s.labels},classification="success"}} {s.clean_closes()}')
        for i in range(len(s.errnos)):
            if s.errnos[i]:
                name = errno.errorcode.get(s.errnos[i], str(s.errnos[i]))
                out.append(f'tcp_close_total{{{s.labels},classification="failure",errno="{name}"}} '
                           f"{s.errno_counts[i]}")
        if s.errno_other:
            out.append(f'tcp_close_total{{{s.labels},classification="failure",errno="{OTHER}"}} {s.errno_other}')
    _header(out, "tcp_connection_duration_ms", "histogram", "Connection lifetimes, from accept or connect to close.")
    for s in stats:
        _histogram(out, "tcp_connection_duration_ms", s.labels, s.duration_buckets, s.duration_sum_ms, s.closed)


def open_fds() -> int:
    """Open file descriptors. Linux 6.2 and later give the count as the size of /proc/self/fd: one stat
    instead of a listing, which took 5 ms of the loop per scrape with 5,000 connections open. Older kernels
    give 0 there and are listed."""
    try:
        size = os.stat("/proc/self/fd").st_size
        return size if size > 0 else len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def render_process(out: list[str]) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/self/statm") as fh:
            rss = int(fh.read().split()[1]) * _PAGE
    except OSError:
        rss = usage.ru_maxrss * 1024
    fds = open_fds()
    for name, kind, help_text, value in (
        ("process_start_time_seconds", "gauge", "Time the process started (Unix epoch seconds).", f"{_START:.3f}"),
        ("process_cpu_seconds_total", "counter", "CPU time used (user + system).",
         f"{usage.ru_utime + usage.ru_stime:.3f}"),
        ("process_resident_memory_bytes", "gauge", "Resident memory size.", str(rss)),
        ("process_open_fds", "gauge", "Open file descriptors.", str(fds)),
    ):
        _header(out, name, kind, help_text)
        out.append(f"{name} {value}")
    render_gc(out)


def render_gc(out: list[str]) -> None:
    """The cyclic collector's work by generation, and how much of the heap the start froze out of its
    reach (proxy/telemetry/memory.py): a rising generation-2 count is where latency tails come from."""
    stats = gc.get_stats()
    for name, key, help_text in (
        ("python_gc_collections_total", "collections", "Cyclic garbage collections, by generation."),
        ("python_gc_objects_collected_total", "collected", "Objects found unreachable, by generation."),
        ("python_gc_objects_uncollectable_total", "uncollectable", "Unreachable objects that could not be freed."),
    ):
        _header(out, name, "counter", help_text)
        out.extend(f'{name}{{generation="{gen}"}} {entry[key]}' for gen, entry in enumerate(stats))
    _header(out, "python_gc_objects_frozen", "gauge", "Objects frozen once started: never walked by a collection.")
    out.append(f"python_gc_objects_frozen {frozen_objects()}")


BALANCER_SERVICES_SHOWN = 100  # bounds the label cardinality of the balancer families


def render_tap(out: list[str], live: int, opened: int, refused: int, events: int, dropped: int) -> None:
    """The tap server's families (proxy/telemetry/tapserver.py); zeros until its first connection."""
    _header(out, "tap_sessions_open", "gauge", "Taps open now (Observe calls streaming events).")
    out.append(f"tap_sessions_open {live}")
    _header(out, "tap_sessions_total", "counter", "Taps opened since the proxy started.")
    out.append(f"tap_sessions_total {opened}")
    _header(out, "tap_refused_total", "counter",
            "Tap calls answered with an error (unauthenticated, invalid, too many taps).")
    out.append(f"tap_refused_total {refused}")
    _header(out, "tap_events_total", "counter", "Tap events queued for tap clients.")
    out.append(f"tap_events_total {events}")
    _header(out, "tap_events_dropped_total", "counter",
            "Tap events dropped: their tap client's buffer (MESHPROXY_TAP_BUFFER_BYTES) was full.")
    out.append(f"tap_events_dropped_total {dropped}")


def render_balancers(out: list[str], services: dict) -> None:
    """Endpoints per discovered service and state, pending and queued requests: each family whole."""
    endpoints: list[str] = []
    pending_lines: list[str] = []
    queued: list[str] = []
    linkerd_endpoints: list[str] = []
    linkerd_queue: list[str] = []
    shown = 0
    for service in services.values():
        if service is None:
            continue
        if shown >= BALANCER_SERVICES_SHOWN:
            break
        shown += 1
        counts = {"ready": 0, "ejected": 0, "probing": 0}
        pending = 0
        for member in service.balancer.endpoints():
            counts[("ready", "ejected", "probing", "ready")[member.state]] += 1
            pending += member.pending
        for state, n in counts.items():
            endpoints.append(f"balancer_endpoints{_labels(service=service.name, state=state)} {n}")
        pending_lines.append(f"balancer_pending_requests{_labels(service=service.name)} {pending}")
        queued.append(f"balancer_queued_requests{_labels(service=service.name)} {len(service.waiters)}")
        refs = balancer_labels(service.name)
        not_ready = counts["ejected"] + counts["probing"]
        linkerd_endpoints.append(f'outbound_http_balancer_endpoints{{endpoint_state="ready",{refs}}} {counts["ready"]}')
        linkerd_endpoints.append(f'outbound_http_balancer_endpoints{{endpoint_state="pending",{refs}}} {not_ready}')
        linkerd_queue.append(f"outbound_http_balancer_queue_length{{{refs}}} {len(service.waiters)}")
    _header(out, "balancer_endpoints", "gauge", "Endpoints of each discovered service, by state.")
    out.extend(endpoints)
    _header(out, "balancer_pending_requests", "gauge", "Requests in flight to each discovered service.")
    out.extend(pending_lines)
    _header(out, "balancer_queued_requests", "gauge", "Requests waiting for a ready endpoint of each service.")
    out.extend(queued)
    # Recent Linkerd's names for the same gauges: the balancer's parent (the service) and
    # backend (the same service: each backend of a split has a balancer of its own).
    _header(out, "outbound_http_balancer_endpoints", "gauge", "Endpoints of each balancer, ready or pending.")
    out.extend(linkerd_endpoints)
    _header(out, "outbound_http_balancer_queue_length", "gauge", "Requests waiting in each balancer's queue.")
    out.extend(linkerd_queue)


def balancer_labels(service: str) -> str:
    """Linkerd's parent_* and backend_* labels of a balancer, from its service name
    (``<name>.<namespace>.svc.<domain>:<port>``, or any other ``host:port``)."""
    ref = service_ref(service)
    return text([(f"{role}_{k}", v) for role in ("parent", "backend") for k, v in ref])


def render(http: Iterable[HttpStats], tcp: Iterable[TcpStats], extra: Iterable[str] = (),
           workload: str = "") -> bytes:
    """The whole exposition; ``workload`` (label text, e.g. ``namespace="shop",pod="web-1"``) is added
    to every sample when the proxy is asked to label its own metrics (MESHPROXY_METRICS_WORKLOAD_LABELS)."""
    out: list[str] = []
    render_http(out, http)
    render_tcp(out, tcp)
    render_process(out)
    out.extend(extra)
    if workload:
        out = with_labels(out, workload)
    return ("\n".join(out) + "\n").encode()


def with_labels(lines: list[str], labels: str) -> list[str]:
    """Every sample line of ``lines`` with ``labels`` (label text) put first in its label set."""
    out = []
    for line in lines:
        if not line or line.startswith("#"):
            out.append(line)
            continue
        brace = line.find("{")
        space = line.find(" ")
        if 0 <= brace < space:
            inner_empty = line[brace + 1] == "}"
            out.append(f"{line[:brace + 1]}{labels}{'' if inner_empty else ','}{line[brace + 1:]}")
        else:
            out.append(f"{line[:space]}{{{labels}}}{line[space:]}")
    return out


def _route_series(out: list[str], stats) -> None:
    labels = {"direction": "outbound", "dst": stats.dst, "rt_route": stats.route}
    out.append(f"route_request_total{_labels(**labels)} {stats.requests}")
    out.append(f"route_retry_total{_labels(**labels)} {stats.retries}")
    for klass, n in (("success", stats.successes), ("failure", stats.failures)):
        out.append(f"route_response_total{_labels(**labels, classification=klass)} {n}")
    cumulative = 0
    for i, bound in enumerate(LATENCY_BUCKETS_MS):
        cumulative += stats.latency_buckets[i]
        out.append(f"route_response_latency_ms_bucket{_labels(**labels, le=bound)} {cumulative}")
    cumulative += stats.latency_buckets[len(LATENCY_BUCKETS_MS)]
    out.append(f"route_response_latency_ms_bucket{_labels(**labels, le='+Inf')} {cumulative}")
    out.append(f"route_response_latency_ms_sum{_labels(**labels)} {stats.latency_sum_ms:.3f}")
    out.append(f"route_response_latency_ms_count{_labels(**labels)} {stats.latency_count}")


def render_routes(out: list[str], policy) -> None:
    """Per-route counters of the outbound policy (bounded by its label limit) and each retry budget's window."""
    registry = policy.registry
    everything = list(registry.stats.values())
    if registry.overflow.requests:
        everything.append(registry.overflow)
    # One sample group per metric name, as the exposition format wants.
    lines: list[str] = []
    for stats in everything:
        _route_series(lines, stats)
    for name, kind, help_text in (
        ("route_request_total", "counter", "Requests per route (a retried request counts once)."),
        ("route_retry_total", "counter", "Retries sent per route."),
        ("route_response_total", "counter", "Responses per route, by the route's classification."),
        ("route_response_latency_ms", "histogram",
         "Time from the request head to the response head, retries included."),
    ):
        _header(out, name, kind, help_text)
        out.extend(line for line in lines if line.startswith(name + "{") or line.startswith(name + "_"))
    render_linkerd_routes(out, everything, list(registry.backends.values()))
    now = time.monotonic()
    states = list(policy.budgets(now))
    for name, help_text, field in (
        ("route_retry_budget_available", "Retries the service's budget allows now.", "available"),
        ("route_retry_budget_requests", "Requests deposited in the budget's window.", "requests"),
        ("route_retry_budget_retries", "Retries withdrawn in the budget's window.", "retries"),
    ):
        _header(out, name, "gauge", help_text)
        for dst, state in states:
            out.append(f"{name}{_labels(direction='outbound', dst=dst)} {getattr(state, field)}")


# The ``le`` labels of recent Linkerd's route request-duration, backend response-duration and backend
# frame-size buckets (its Rust client writes every bound as a float).
ROUTE_DURATION_LE = ("0.05", "0.5", "1.0", "10.0")
BACKEND_DURATION_LE = ("0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "10.0")
FRAME_SIZE_LE = tuple(f"{size}.0" for size in FRAME_BUCKETS)
_ROUTE_FAMILIES = (
    ("request_duration_seconds", "histogram",
     "The time between request initialization and response completion (its last byte, trailers or reset)."),
    ("request_statuses_total", "counter", "Completed request-response streams."),
    ("backend_requests_total", "counter", "The total number of requests dispatched to each backend."),
    ("backend_response_duration_seconds", "histogram",
     "The time between a request's dispatch to a backend and its response's completion."),
    ("backend_response_statuses_total", "counter", "Completed responses of each backend."),
    ("backend_response_frame_size_bytes", "histogram", "Response data frame sizes."),
    ("retry_requests_total", "counter", "Retry requests emitted."),
    ("retry_successes_total", "counter", "Successful responses to retry requests."),
    ("retry_overflow_total", "counter", "Retryable requests not sent due to circuit breakers."),
    ("retry_limit_exceeded_total", "counter", "Retryable requests not sent due to retry limits."),
)
_RETRY_FIELDS = {"retry_requests_total": "retries", "retry_successes_total": "successes",
                 "retry_overflow_total": "overflow", "retry_limit_exceeded_total": "limit"}
# gRPC's status names, as Linkerd's ``grpc_status`` label writes them; no status at all is UNKNOWN.
GRPC_STATUS_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)


def _outcome_labels(grpc_route: bool, status: int, grpc: int, error: int) -> str:
    """``http_status`` (the head's; none when the proxy answered, 0) or ``grpc_status``, then ``error``."""
    if grpc_route:
        name = GRPC_STATUS_NAMES[grpc] if 0 <= grpc <= 16 else "UNKNOWN"
        return f'grpc_status="{name}",error="{ROUTE_ERRORS[error]}"'
    return f'http_status="{status or ""}",error="{ROUTE_ERRORS[error]}"'


def _add_outcomes(into: dict, outcomes, other: int) -> None:
    for status, grpc, error, n in outcomes:
        key = (status, grpc, error)
        into[key] = into.get(key, 0) + n
    if other:
        into[OTHER] = into.get(OTHER, 0) + other


def render_linkerd_routes(out: list[str], stats, backends=()) -> None:
    """Recent Linkerd's ``outbound_http_route_*`` and ``outbound_grpc_route_*`` families (GRPCRoute rules),
    each family whole. One series per route document (the rules of one HTTPRoute, counted apart for the
    ``route_*`` families, are summed here), and per route document and backend for the ``backend_*`` ones."""
    merged: dict[tuple[bool, str], dict] = {}
    for s in stats:
        if not s.labels:
            continue
        m = merged.get((s.grpc, s.labels))
        if m is None:
            m = merged[(s.grpc, s.labels)] = {"duration": _Histogram(len(ROUTE_BUCKETS_MS)), "outcomes": {},
                                              "retries": 0, "successes": 0, "overflow": 0, "limit": 0}
        m["duration"].add(s.duration_buckets, s.duration_sum_ms / 1000.0, s.duration_count)
        _add_outcomes(m["outcomes"], s.outcomes(), s.other_outcomes)
        m["retries"] += s.retries
        m["successes"] += s.retry_successes
        m["overflow"] += s.retry_overflow
        m["limit"] += s.retry_limit_exceeded
    per_backend: dict[tuple[bool, str], dict] = {}
    for b in backends:
        m = per_backend.get((b.grpc, b.labels))
        if m is None:
            m = per_backend[(b.grpc, b.labels)] = {"requests": 0, "outcomes": {},
                                                   "duration": _Histogram(len(BACKEND_BUCKETS_MS)),
                                                   "frame_size": _Histogram(len(FRAME_BUCKETS))}
        m["requests"] += b.requests
        m["duration"].add(b.duration_buckets, b.duration_sum_ms / 1000.0, b.duration_count)
        m["frame_size"].add(b.frame_buckets, float(b.frame_sum), b.frame_count)
        _add_outcomes(m["outcomes"], b.outcomes(), b.other_outcomes)
    bounds = {"request_duration_seconds": ("duration", ROUTE_DURATION_LE),
              "backend_response_duration_seconds": ("duration", BACKEND_DURATION_LE),
              "backend_response_frame_size_bytes": ("frame_size", FRAME_SIZE_LE)}
    for protocol, grpc in (("http", False), ("grpc", True)):
        for suffix, kind, help_text in _ROUTE_FAMILIES:
            name = f"outbound_{protocol}_route_{suffix}"
            _header(out, name, kind, help_text)
            source = per_backend if suffix.startswith("backend_") else merged
            for (is_grpc, labels), m in source.items():
                if is_grpc != grpc:
                    continue
                if kind == "histogram":
                    key, les = bounds[suffix]
                    m[key].render(out, name, labels, les)
                elif suffix.endswith("statuses_total"):
                    for outcome, n in sorted(m["outcomes"].items(), key=lambda item: str(item[0])):
                        what = (f'{"grpc" if grpc else "http"}_status="{OTHER}",error=""' if outcome == OTHER
                                else _outcome_labels(grpc, *outcome))
                        out.append(f"{name}{{{labels},{what}}} {n}")
                elif suffix == "backend_requests_total":
                    out.append(f"{name}{{{labels}}} {m['requests']}")
                else:
                    out.append(f"{name}{{{labels}}} {m[_RETRY_FIELDS[suffix]]}")


class _Histogram:
    """Bucket counts (one per bound, plus +Inf), sum and count of several label sets' counters summed."""

    def __init__(self, bounds: int) -> None:
        self.buckets = [0] * (bounds + 1)
        self.sum = 0.0
        self.count = 0

    def add(self, buckets, total: float, count: int) -> None:
        for i in range(len(self.buckets)):
            self.buckets[i] += buckets[i]
        self.sum += total
        self.count += count

    def render(self, out: list[str], name: str, labels: str, les: tuple[str, ...]) -> None:
        cumulative = 0
        for i, le in enumerate(les):
            cumulative += self.buckets[i]
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {cumulative}')
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {self.count}')
        out.append(f"{name}_sum{{{labels}}} {self.sum:.6f}")
        out.append(f"{name}_count{{{labels}}} {self.count}")

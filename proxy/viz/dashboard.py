"""``meshproxy viz dashboard``: what the dashboard shows, source-neutral, without the web server.

A refresh asks the source (the embedded scraper or Prometheus) what ``viz stat deploy``, ``viz edges
deploy`` and ``viz routes`` ask, every ``--interval``, and keeps the answers: the latest snapshot for
the pages, and a bounded history of each workload's success and latency for the charts. The web
server (``proxy/viz/web.py``, tornado) only serves these as JSON and streams them; it is imported
when the command runs, never by the other ``viz`` commands nor by ``meshproxy run``.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass, field

from proxy.viz import edges, routes, stat, tap
from proxy.viz.embedded import Embedded
from proxy.viz.query import Query
from proxy.viz.resources import Resource
from proxy.viz.source import Source

DEFAULT_ADDRESS = "127.0.0.1:50750"  # Linkerd's dashboard port
MAX_HISTORY = 300  # chart points kept per workload, whatever the window and interval
# The table lists deployments; when no proxy names one (proxies known by address, as in the demo),
# pods: every proxy is one.
KINDS = ("deployment", "pod")


def add_parser(sub: argparse._SubParsersAction, sources) -> None:
    d = sub.add_parser("dashboard", help="a live web dashboard: workloads, edges, routes, charts and tap")
    d.add_argument("--address", default=DEFAULT_ADDRESS, metavar="HOST:PORT",
                   help=f"where to serve the dashboard (default {DEFAULT_ADDRESS})")
    d.add_argument("--show", choices=("url",), help="url: only print the dashboard's URL")
    sources(d, outputs=False)
    d.add_argument("--tap", action="append", default=[], metavar="HOST:PORT",
                   help="a proxy's tap address for the live tap view (repeatable; default: every meshed endpoint "
                        "of --endpoints on port 4190, else 127.0.0.1:4190)")
    d.add_argument("--max-rps", type=float, default=100.0,
                   help="most requests the tap view reports per second, over all proxies (default 100)")
    d.add_argument("--identity-dir", metavar="DIR", help="tap over mutual TLS as the identity whose tls.crt and "
                                                          "tls.key are in DIR, trusting DIR/ca.crt (as viz tap)")


def url(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"http://{host or '127.0.0.1'}:{port}/"


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"--address {address!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass(slots=True)
class Snapshot:
    """One refresh: every workload's golden metrics and TLS share, every edge, proxies that failed."""

    at: float = 0.0
    workloads: list[dict[str, object]] = field(default_factory=list)
    edges: list[dict[str, object]] = field(default_factory=list)
    unreachable: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def json(self) -> dict[str, object]:
        return {"at": self.at, "workloads": self.workloads, "edges": self.edges,
                "unreachable": self.unreachable, "error": self.error}


class Dashboard:
    """The dashboard's state: refreshed from ``source``; ``embedded`` is scraped first when given."""

    def __init__(self, source: Source, embedded: Embedded | None, window: float, interval: float,
                 tap_targets: list[tap.Tapped] | None = None, max_rps: float = 100.0,
                 timeout: float = 5.0, tap_tls: ssl.SSLContext | None = None) -> None:
        self.source, self.embedded = source, embedded
        self.window, self.interval = window, interval
        self.tap_targets = tap_targets or []
        self.tap_tls = tap_tls  # mutual TLS as the tap identity, or None: plaintext (loopback proxies)
        self.max_rps, self.timeout = max_rps, timeout
        self.snapshot = Snapshot()
        self.kind = KINDS[0]  # of the workloads shown
        self.history: dict[str, deque[tuple[float, float | None, float | None, float | None, float | None,
                                            float | None]]] = {}
        self.changed = asyncio.Event()  # set and replaced at every refresh: the streams wait on it

    async def refresh(self) -> Snapshot:
        if self.embedded is not None:
            await self.embedded.scrape()
        snap = Snapshot(at=time.time())
        try:
            snap.workloads, snap.edges = await self._workloads(), [
                e.json() | {"rps": _rate(e.requests, self.source.seconds(self.window))}
                for e in await edges.edges(self.source, Resource(self.kind), None, self.window)]
        except Exception as err:  # Prometheus down, a bad answer: shown on the page, kept refreshing
            snap.error = str(err) or type(err).__name__
        if self.embedded is not None:
            snap.unreachable = [{"proxy": t.name(), "error": why} for t, why in self.embedded.unreachable()]
        self._record(snap)
        self.snapshot = snap
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()
        return snap

    async def _workloads(self) -> list[dict[str, object]]:
        for kind in KINDS:
            rows = await stat.stat(self.source, stat.StatRequest(Resource(kind), None, window=self.window))
            if rows:
                break
        self.kind = kind
        label = Resource(kind).label
        by_tls = await self.source.evaluate(Query("increase", "response_total", (("direction", "=", "inbound"),),
                                                  ("namespace", label, "tls")), self.window)
        secured: dict[tuple[str, str], list[float]] = {}
        for labels, value in by_tls:
            counts = secured.setdefault((labels.get("namespace", ""), labels.get(label, "")), [0.0, 0.0])
            counts[0] += value if labels.get("tls") == "true" else 0.0
            counts[1] += value
        out = []
        for row in rows:
            tls, total = secured.get((row.namespace, row.name), [0.0, 0.0])
            out.append(row.json() | {"tls_share": tls / total if total > 0 and row.rps is not None else None})
        return out

    def _record(self, snap: Snapshot) -> None:
        for w in snap.workloads:
            key = f"{w['namespace']}/{w['name']}"
            points = self.history.setdefault(key, deque(maxlen=MAX_HISTORY))
            points.append((snap.at, _num(w["success"]), _num(w["rps"]), _num(w["latency_ms_p50"]),
                           _num(w["latency_ms_p95"]), _num(w["latency_ms_p99"])))
        horizon = snap.at - self.window
        for points in self.history.values():
            while points and points[0][0] < horizon:
                points.popleft()

    def charts(self, key: str | None = None) -> dict[str, object]:
        """Per workload, column arrays (uPlot's shape): time, success, rps, p50, p95, p99."""
        names = ("t", "success", "rps", "p50", "p95", "p99")
        chosen = {key: self.history.get(key, deque())} if key else self.history
        return {k: {n: [p[i] for p in points] for i, n in enumerate(names)} for k, points in chosen.items()}

    async def workload(self, namespace: str, name: str) -> dict[str, object] | None:
        """One workload's page: its row, callers, callees, routes and charts; None when unknown."""
        snap = self.snapshot
        row = next((w for w in snap.workloads if w["namespace"] == namespace and w["name"] == name), None)
        if row is None:
            return None
        callers = [e for e in snap.edges if e["dst"] == name and e["dst_namespace"] == namespace]
        callees = [e for e in snap.edges if e["src"] == name and e["src_namespace"] == namespace]
        m = routes.matchers(Resource(self.kind, name), namespace, None)
        route_rows = await routes.routes(self.source, m, self.window)
        return {"workload": row, "callers": callers, "callees": callees,
                "routes": [r.json() for r in route_rows], "charts": self.charts(f"{namespace}/{name}")}

    async def run(self) -> None:
        """Refresh every ``interval`` until cancelled."""
        while True:
            started = time.monotonic()
            await self.refresh()
            await asyncio.sleep(max(0.1, self.interval - (time.monotonic() - started)))

    def tap_share(self) -> int:
        return max(1, -(-int(self.max_rps) // max(1, len(self.tap_targets))))

    def tap_request(self, params: dict[str, str]):
        """The Observe request for the tap view's filters (raises ``tap.TapError`` for a bad ``to``)."""
        labels = tap.to_labels(params.get("to") or None)
        method, path, authority = (params.get(k) or None for k in ("method", "path", "authority"))

        def request(limit: int) -> bytes:
            return tap.observe_request(limit, method, path, authority, labels)

        return request


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _rate(count: float, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


def main(args: argparse.Namespace, targets) -> int:
    """Serve until interrupted; ``targets`` is ``viz``'s own proxy list (``--proxy``/``--endpoints``)."""
    import sys

    from proxy.viz.prometheus import Prometheus
    from proxy.viz.targets import TargetError

    try:
        host, port = parse_address(args.address)
    except ValueError as err:
        print(f"meshproxy viz dashboard: {err}", file=sys.stderr)
        return 64
    if args.show == "url":
        print(url(f"{host}:{port}"))
        return 0
    try:  # the web server is the extra meshproxy[viz]: the proxy's image goes without it
        import tornado.web  # noqa: F401
    except ImportError as err:
        print(f"meshproxy viz dashboard: the web server's packages are not installed ({err}); "
              "install them with: pip install 'meshproxy[viz]'", file=sys.stderr)
        return 69
    embedded: Embedded | None = None
    try:
        if args.prometheus:
            if args.proxy:
                raise TargetError("--prometheus asks Prometheus: --proxy does not apply")
            source: Source = Prometheus(args.prometheus, timeout=max(args.timeout, 10.0))
        else:
            embedded = Embedded(targets(args), timeout=args.timeout)
            source = embedded
        # --tap names the tap targets; only without it do the endpoints file's proxies give them.
        taps = tap.targets(argparse.Namespace(tap=args.tap, endpoints=None) if args.tap else args)
        tap_tls = tap.tls_context(args.identity_dir)
    except (TargetError, tap.TapError) as err:
        print(f"meshproxy viz dashboard: {err}", file=sys.stderr)
        return err.code
    board = Dashboard(source, embedded, args.time_window, min(args.interval, args.time_window), taps, args.max_rps,
                      args.timeout, tap_tls)
    from proxy.telemetry.memory import settle_after_start
    from proxy.viz import web

    settle_after_start()
    try:
        return web.serve(board, host, port)
    except KeyboardInterrupt:
        return 0

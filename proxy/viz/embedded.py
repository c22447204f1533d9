"""The embedded source: scrape every proxy's /metrics concurrently, keep a bounded window of
scrapes per proxy in memory, and answer ``Query`` as Prometheus would over that window.

What the window is: the proxies keep no history, only counters since they
started, so a rate needs two scrapes. A one-shot command scrapes every proxy,
waits ``interval`` (at most the ``-t`` window) and scrapes again; its numbers
are over those seconds, not over a whole minute. Each proxy's counters are
read as series of (time, value) points and handled as PromQL's ``increase``
does (a counter that drops was reset: the proxy restarted); a series that
appears between two scrapes of a proxy that answered both started at zero (a
proxy creates a label set at its first count), where Prometheus would need a
second point to see it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.telemetry.scrape import parse_prometheus
from proxy.viz import promql
from proxy.viz.fetch import FetchError, get
from proxy.viz.query import Labels, Query, Vector, matches
from proxy.viz.targets import Target

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]  # (metric name, sorted labels)
MAX_SCRAPES = 16  # per proxy: a live view keeps this many, a one-shot command two


@dataclass(slots=True)
class Scrape:
    """One scrape of one proxy: its series' values, or why there are none."""

    at: float  # unix seconds
    values: dict[SeriesKey, float] | None
    error: str | None = None


def series(text: str, workload: Iterable[tuple[str, str]] = ()) -> dict[SeriesKey, float]:
    """The samples of a /metrics text by series; ``workload`` labels are added where the sample has
    none of that name (the proxy's own labels win, as with Prometheus's ``honor_labels``)."""
    extra = dict(workload)
    out: dict[SeriesKey, float] = {}
    for name, labels, value in parse_prometheus(text):
        merged = {**extra, **labels} if extra else labels
        out[(name, tuple(sorted(merged.items())))] = value
    return out


@dataclass(slots=True)
class ProxyWindow:
    """The last ``MAX_SCRAPES`` scrapes of one proxy."""

    target: Target
    scrapes: deque[Scrape] = field(default_factory=lambda: deque(maxlen=MAX_SCRAPES))
    # One key object per series across the window: each scrape parses new label tuples and strings
    # for the same series, and the window keeps MAX_SCRAPES of them (most of a live view's memory).
    keys: dict[SeriesKey, SeriesKey] = field(default_factory=dict)

    def add(self, scrape: Scrape) -> None:
        values = scrape.values
        if values:
            keys = self.keys
            if len(keys) > 2 * len(values) + 1024:  # series that went away: keep only the window's
                keys = self.keys = {k: k for s in self.scrapes if s.values for k in s.values}
            scrape.values = {keys.setdefault(k, k): v for k, v in values.items()}
        self.scrapes.append(scrape)

    @property
    def error(self) -> str | None:
        """Why the latest scrape failed; None when it succeeded."""
        return self.scrapes[-1].error if self.scrapes else "not scraped yet"

    def labels(self) -> Labels:
        """The workload labels of this proxy: the ones on its own process series (a proxy with
        MESHPROXY_METRICS_WORKLOAD_LABELS sends them; they include the target's), else the target's."""
        for scrape in reversed(self.scrapes):
            if scrape.values:
                for (name, labels), _ in scrape.values.items():
                    if name == "process_start_time_seconds":
                        return dict(labels)
                break
        return dict(self.target.labels)

    def ok(self, window: float) -> list[Scrape]:
        """The successful scrapes within ``window`` seconds of the newest one."""
        good = [s for s in self.scrapes if s.values is not None]
        return [s for s in good if s.at >= good[-1].at - window] if good else []

    def increases(self, metric: str, query: Query, window: float) -> Iterable[tuple[Labels, float]]:
        """(labels, increase) of each series of ``metric`` matching the query over the window."""
        scrapes = self.ok(window)
        if len(scrapes) < 2:
            return
        start, end = scrapes[0].at, scrapes[-1].at
        points: dict[SeriesKey, list[promql.Point]] = {}
        for i, scrape in enumerate(scrapes):
            assert scrape.values is not None
            for key, value in scrape.values.items():
                if key[0] != metric:
                    continue
                if key not in points:
                    # Absent from the earlier scrapes of a proxy that answered them: it started at zero.
                    points[key] = [(scrapes[i - 1].at, 0.0)] if i > 0 else []
                points[key].append((scrape.at, value))
        for (_, labels), pts in points.items():
            as_dict = dict(labels)
            if not matches(as_dict, query.matchers):
                continue
            grown = promql.increase(pts, start, end)
            if grown is not None:
                yield as_dict, grown

    def latest(self, metric: str, query: Query) -> Iterable[tuple[Labels, float]]:
        if not self.scrapes or self.scrapes[-1].values is None:
            return
        for (name, labels), value in self.scrapes[-1].values.items():
            as_dict = dict(labels)
            if name == metric and matches(as_dict, query.matchers):
                yield as_dict, value


class Embedded:
    """Scrapes ``targets`` and evaluates queries over their windows; no server needed."""

    def __init__(self, targets: list[Target], timeout: float = 2.0) -> None:
        # A proxy known by its address only is a pod of that name in the default namespace (as
        # Kubernetes would place it), so ``stat pod`` and ``-n default`` find it.
        self.windows = [ProxyWindow(_with_defaults(t)) for t in targets]
        self.timeout = timeout

    async def scrape(self) -> None:
        """Every proxy at once, each bounded by ``timeout``."""
        results = await asyncio.gather(*(self._scrape_one(w.target) for w in self.windows))
        for window, scrape in zip(self.windows, results, strict=True):
            window.add(scrape)

    async def _scrape_one(self, target: Target) -> Scrape:
        started = time.time()  # a scrape's time is when it was asked for, as Prometheus stamps it
        try:
            body = await get(target.url, self.timeout)
        except FetchError as err:
            return Scrape(started, None, str(err))
        return Scrape(started, series(body.decode("utf-8", "replace"), target.labels))

    async def sample(self, interval: float) -> None:
        """Two scrapes ``interval`` seconds apart (a one-shot command's window)."""
        await self.scrape()
        await asyncio.sleep(interval)
        await self.scrape()

    def window_seconds(self, window: float) -> float:
        """The seconds the window really spans (the widest span of any proxy's scrapes in it)."""
        spans = [s[-1].at - s[0].at for w in self.windows if len(s := w.ok(window)) >= 2]
        return max(spans, default=0.0)

    def unreachable(self) -> list[tuple[Target, str]]:
        return [(w.target, w.error) for w in self.windows if w.error is not None]

    async def evaluate(self, query: Query, window: float) -> Vector:
        return self.evaluate_now(query, window)

    def evaluate_now(self, query: Query, window: float) -> Vector:
        """The query's instant vector over the last ``window`` seconds of scrapes."""
        sums: dict[tuple[str, ...], float] = {}
        keys: dict[tuple[str, ...], Labels] = {}

        def add(labels: Labels, value: float, by: tuple[str, ...]) -> None:
            key = tuple(labels.get(name, "") for name in by)
            keys.setdefault(key, {n: v for n, v in zip(by, key, strict=True) if v})
            sums[key] = sums.get(key, 0.0) + value

        if query.func == "increase":
            for w in self.windows:
                for labels, value in w.increases(query.metric, query, window):
                    add(labels, value, query.by)
            return [(keys[k], v) for k, v in sums.items()]
        if query.func in ("gauge", "count"):
            for w in self.windows:
                for labels, value in w.latest(query.metric, query):
                    add(labels, value if query.func == "gauge" else 1.0, query.by)
            return [(keys[k], v) for k, v in sums.items()]
        by = ("le",) + query.by
        for w in self.windows:
            for labels, value in w.increases(query.metric + "_bucket", query, window):
                if "le" in labels:
                    add(labels, value, by)
        groups: dict[tuple[str, ...], list[tuple[float, float]]] = {}
        for key, value in sums.items():
            groups.setdefault(key[1:], []).append((float(key[0]), value))
        out: Vector = []
        for group, buckets in groups.items():
            estimate = promql.histogram_quantile(query.q, buckets)
            if estimate is not None:
                out.append(({n: v for n, v in zip(query.by, group, strict=True) if v}, estimate))
        return out

    def seconds(self, window: float) -> float:
        return self.window_seconds(window)

    async def proxies(self, by: tuple[str, ...], window: float) -> dict[tuple[str, ...], tuple[int, int]]:
        """Per value of the ``by`` labels: (proxies that answered, proxies known), from each proxy's
        workload labels (a proxy that did not answer is known by the labels its endpoint had)."""
        out: dict[tuple[str, ...], tuple[int, int]] = {}
        for w in self.windows:
            labels = w.labels()
            key = tuple(labels.get(name, "") for name in by)
            up, known = out.get(key, (0, 0))
            out[key] = (up + (w.error is None), known + 1)
        return out


def _with_defaults(target: Target) -> Target:
    labels = {"namespace": "default", "pod": target.hostport, **dict(target.labels)}
    return Target(target.host, target.port, tuple(sorted(labels.items())))

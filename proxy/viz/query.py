"""The query shapes the commands need, one description for both sources: rendered as PromQL for a
Prometheus server (Linkerd viz's own queries) or evaluated over scraped samples by ``embedded``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Op = Literal["=", "!="]
Matcher = tuple[str, Op, str]  # (label, op, value): label="value" or label!="value"
Labels = dict[str, str]
Vector = list[tuple[Labels, float]]  # an instant vector: one value per label set

Func = Literal["increase", "gauge", "quantile", "count"]


@dataclass(frozen=True, slots=True)
class Query:
    """``func`` of ``metric`` over the series that match ``matchers``, summed by ``by``.

    increase: ``sum(increase(metric{...}[w])) by (...)`` (counters over the window);
    gauge: ``sum(metric{...}) by (...)`` (the latest value);
    quantile: ``histogram_quantile(q, sum(irate(metric_bucket{...}[w])) by (le, ...))``;
    count: ``count(metric{...}) by (...)`` (how many series: proxies, for a per-proxy gauge).
    """

    func: Func
    metric: str
    matchers: tuple[Matcher, ...] = ()
    by: tuple[str, ...] = ()
    q: float = 0.0

    def promql(self, window: str) -> str:
        selector = f"{self.metric}{{{', '.join(f'{k}{op}{_quote(v)}' for k, op, v in self.matchers)}}}"
        by = ", ".join(self.by)
        if self.func == "increase":
            return f"sum(increase({selector}[{window}])) by ({by})"
        if self.func == "gauge":
            return f"sum({selector}) by ({by})"
        if self.func == "count":
            return f"count({selector}) by ({by})"
        bucket = selector.replace(self.metric, self.metric + "_bucket", 1)
        return f"histogram_quantile({self.q}, sum(irate({bucket}[{window}])) by (le{', ' if by else ''}{by}))"


def matches(labels: Labels, matchers: tuple[Matcher, ...]) -> bool:
    """PromQL's equality matchers: a missing label reads as the empty string."""
    for name, op, value in matchers:
        if (labels.get(name, "") == value) != (op == "="):
            return False
    return True


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def window_text(seconds: float) -> str:
    """A PromQL duration for a window in seconds (``1m``, ``90s``, ``1500ms``)."""
    ms = round(seconds * 1000)
    if ms % 60_000 == 0:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"

"""The Prometheus source: each ``Query`` rendered as PromQL (Linkerd viz's queries) and sent to a
Prometheus server's HTTP API (``GET /api/v1/query``), all of a table's queries at once."""

from __future__ import annotations

import asyncio
import json
import math
from urllib.parse import urlencode

from proxy.viz.fetch import FetchError, get
from proxy.viz.query import Query, Vector, window_text


class PrometheusError(Exception):
    """Prometheus did not answer a query, or refused it; the message names the query."""


class Prometheus:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.base = url.rstrip("/")
        self.timeout = timeout

    async def evaluate(self, query: Query, window: float) -> Vector:
        return await self.run(query.promql(window_text(window)))

    async def run(self, promql: str) -> Vector:
        """The instant vector of one PromQL expression (NaN samples, e.g. a quantile of nothing, left out)."""
        url = f"{self.base}/api/v1/query?{urlencode({'query': promql})}"
        try:
            body = await (get(url, self.timeout) if url.startswith("http://") else self._https(url))
        except FetchError as err:
            raise PrometheusError(f"Prometheus at {self.base} did not answer {promql!r}: {err}") from None
        try:
            document = json.loads(body)
            if document.get("status") != "success":
                raise PrometheusError(f"Prometheus refused {promql!r}: {document.get('error')}")
            data = document["data"]
            if data["resultType"] != "vector":
                raise PrometheusError(f"{promql!r} gave a {data['resultType']}, not an instant vector")
            out: Vector = []
            for item in data["result"]:
                value = float(item["value"][1])
                if not math.isnan(value):
                    out.append((dict(item["metric"]), value))
            return out
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise PrometheusError(f"Prometheus at {self.base} answered {promql!r} with something else: {err}") from None

    async def _https(self, url: str) -> bytes:
        # Imported here: urllib.request (with http.client, email and tempfile) is 2.8 MiB of RSS that the
        # embedded mode, whose bar is 20 MB, would carry for a Prometheus it does not ask.
        import urllib.error
        import urllib.request

        def fetch() -> bytes:
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310 (https only)
                    data: bytes = response.read()
                    return data
            except urllib.error.HTTPError as err:
                raise FetchError(f"HTTP {err.code}: {err.read()[:200].decode('utf-8', 'replace')}") from None
            except (OSError, ValueError) as err:
                raise FetchError(str(err)) from None

        return await asyncio.to_thread(fetch)

    def seconds(self, window: float) -> float:
        return window

    async def proxies(self, by: tuple[str, ...], window: float) -> dict[tuple[str, ...], tuple[int, int]]:
        """Per value of the ``by`` labels: (proxies whose last scrape worked, proxies seen in the window),
        counted on the proxies' own ``process_start_time_seconds`` (it carries the workload labels)."""
        seen = f"last_over_time(process_start_time_seconds[{window_text(window)}])"
        group = ", ".join(by)
        known = await self.run(f"count({seen}) by ({group})")
        up = await self.run(f"count({seen} and on (instance, job) up == 1) by ({group})")

        def key(labels: dict[str, str]) -> tuple[str, ...]:
            return tuple(labels.get(n, "") for n in by)

        answering = {key(labels): int(v) for labels, v in up}
        return {key(labels): (answering.get(key(labels), 0), int(v)) for labels, v in known}

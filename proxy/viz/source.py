"""What the commands need of a source of numbers, whichever it is (``embedded`` or ``prometheus``)."""

from __future__ import annotations

from typing import Protocol

from proxy.viz.query import Query, Vector


class Source(Protocol):
    async def evaluate(self, query: Query, window: float) -> Vector:
        """The query's instant vector over the last ``window`` seconds."""

    def seconds(self, window: float) -> float:
        """The seconds a rate is taken over (Prometheus: the window; embedded: what the scrapes span)."""

    async def proxies(self, by: tuple[str, ...], window: float) -> dict[tuple[str, ...], tuple[int, int]]:
        """(proxies answering, proxies known) per value of the ``by`` labels."""

"""Tables as ``linkerd viz`` prints them: columns three spaces apart, the name columns flush left and
the numbers flush right; and Linkerd's number formats (``100.00%``, ``1.2rps``, ``12ms``, ``-``)."""

from __future__ import annotations

from collections.abc import Sequence

NONE = "-"


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """The table's text; the first ``left`` columns are flush left, the others flush right."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = []
    for cells in [list(headers), *[list(r) for r in rows]]:
        parts = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        lines.append("   ".join(parts).rstrip())
    return "\n".join(lines)


def percent(ratio: float | None) -> str:
    return NONE if ratio is None else f"{ratio * 100:.2f}%"


def rps(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f}rps"


def ms(value: float | None) -> str:
    # Linkerd's metrics API rounds latencies to whole milliseconds.
    return NONE if value is None else f"{round(value)}ms"


def count(value: float | None) -> str:
    return NONE if value is None else f"{round(value)}"


def byte_rate(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f}B/s"

"""Prometheus text exposition read into a queryable form."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(value: str) -> str:
    return value.replace(r"\\", "\x00").replace(r"\"", '"').replace(r"\n", "\n").replace("\x00", "\\")


def _labels(text: str) -> dict[str, str]:
    out = {}
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if not match:
            raise ValueError(f"bad label set {text!r}")
        out[match.group(1)] = _unescape(match.group(2))
        pos = match.end()
    return out


def _value(text: str) -> float:
    lowered = text.lower()
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    return float(text)


@dataclass
class Metrics:
    """name -> list of (labels, value); ``types`` from the # TYPE lines."""

    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    def series(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (lbls, value)
            for lbls, value in self.samples.get(name, [])
            if all(lbls.get(k) == v for k, v in labels.items())
        ]

    def get(self, name: str, **labels: str) -> float:
        """Sum over every series of ``name`` whose labels include ``labels``."""
        return sum(value for _, value in self.series(name, **labels))

    def __contains__(self, name: str) -> bool:
        return name in self.samples

    def names(self) -> set[str]:
        return set(self.samples)

    def to_dict(self) -> dict[str, float]:
        """``'name{a="b",c="d"}' -> value`` with labels sorted, for printing
        and for comparing whole scrapes."""
        out = {}
        for name, series in self.samples.items():
            for labels, value in series:
                text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                out[f"{name}{{{text}}}" if text else name] = value
        return out


def parse(text: str) -> Metrics:
    out = Metrics()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                out.types[parts[2]] = parts[3]
            continue
        match = _SAMPLE.match(line)
        if not match:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        name, _, label_text, value = match.group(1), match.group(2), match.group(3), match.group(4)
        out.samples.setdefault(name, []).append((_labels(label_text or ""), _value(value)))
    return out

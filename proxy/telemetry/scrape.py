"""Reading Prometheus text back (the demo's summary, ``meshproxy check``):
samples as (name, labels, value). Pure; comments and malformed lines are skipped."""

from __future__ import annotations

import re

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')

Sample = tuple[str, dict[str, str], float]


def parse_prometheus(text: str) -> list[Sample]:
    """Samples of the Prometheus text format as (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        labels = {k: re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], v)
                  for k, v in _LABEL.findall(match[2] or "")}
        try:
            samples.append((match[1], labels, float(match[3])))
        except ValueError:
            continue
    return samples

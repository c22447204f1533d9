"""Typed field readers for policy documents; every error names the document and the field path."""

from __future__ import annotations

import re
from typing import Any

from proxy.policy.model import GRPC_CODES


class ParseError(ValueError):
    """A policy document is invalid. Carries ``index``, ``kind``, ``name`` and ``field``."""

    def __init__(self, index: int, kind: str, name: str, field: str, why: str) -> None:
        super().__init__(f"document {index} ({kind or '?'} {name or '?'}): {field}: {why}")
        self.index, self.kind, self.name, self.field, self.why = index, kind, name, field, why


class Doc:
    """The document being read: raises ParseError with its identity."""

    def __init__(self, index: int, body: Any) -> None:
        self.index = index
        self.body = body
        meta = body.get("metadata") if isinstance(body, dict) else None
        self.kind = str(body.get("kind", "")) if isinstance(body, dict) else ""
        self.name = str(meta.get("name", "")) if isinstance(meta, dict) else ""
        self.namespace = str(meta.get("namespace", "") or "") if isinstance(meta, dict) else ""

    def fail(self, field: str, why: str) -> ParseError:
        return ParseError(self.index, self.kind, self.name, field, why)

    def mapping(self, value: Any, field: str, allowed: set[str] | None = None) -> dict:
        if not isinstance(value, dict):
            raise self.fail(field, f"expected a mapping, got {type(value).__name__}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise self.fail(f"{field}.{key}", "unknown field")
        return value

    def seq(self, value: Any, field: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(field, f"expected a list, got {type(value).__name__}")
        return value

    def string(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(field, "expected a non-empty string")
        return value

    def boolean(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(field, "expected true or false")
        return value

    def integer(self, value: Any, field: str, lo: int = 0, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
            raise self.fail(field, f"expected an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))
        return value

    def number(self, value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise self.fail(field, "expected a non-negative number")
        return float(value)

    def regex(self, value: Any, field: str) -> str:
        text = self.string(value, field)
        try:
            re.compile(text)
        except re.error as err:
            raise self.fail(field, f"invalid regular expression: {err}") from None
        return text

    def duration(self, value: Any, field: str) -> float:
        """Go/Gateway durations: ``300ms``, ``10s``, ``1m30s``, ``1h``; a bare number is seconds."""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        text = value.strip() if isinstance(value, str) else ""
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise self.fail(field, f"expected a duration like 300ms, 10s or 1m30s, got {value!r}")
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(n) * scale[u] for n, u in parts)

    def quantity(self, value: Any, field: str) -> float:
        """A Kubernetes quantity as used by TrafficSplit v1alpha1 weights: ``500m``, ``1``, ``2k``."""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(m|k|M)?", value.strip()) if isinstance(value, str) else None
        if m is None:
            raise self.fail(field, f"expected a weight like 500m or 1, got {value!r}")
        return float(m.group(1)) * {None: 1.0, "m": 0.001, "k": 1e3, "M": 1e6}[m.group(2)]

    def grpc_code(self, value: Any, field: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 16:
            return value
        if isinstance(value, str):
            code = GRPC_CODES.get(value.strip().lower().replace("_", "-"))
            if code is not None:
                return code
        raise self.fail(field, f"unknown gRPC status code {value!r}")

    def status_ranges(self, value: Any, field: str) -> tuple[tuple[int, int], ...]:
        """Linkerd's retry.linkerd.io/http syntax: ``5xx``, ``gateway-error``, ``429``, ``500-504``, comma-separated."""
        text = str(value).strip() if isinstance(value, (str, int)) else ""
        out = []
        for item in (p.strip().lower() for p in text.split(",")):
            if item == "gateway-error":
                out.append((502, 504))
            elif re.fullmatch(r"[1-5]xx", item):
                base = int(item[0]) * 100
                out.append((base, base + 99))
            elif re.fullmatch(r"\d{3}", item):
                out.append((int(item), int(item)))
            elif re.fullmatch(r"\d{3}-\d{3}", item) and int(item[:3]) <= int(item[4:]):
                out.append((int(item[:3]), int(item[4:])))
            else:
                raise self.fail(field, f"bad status {item!r} (use 5xx, gateway-error, 503 or 500-504)")
        return tuple(out)

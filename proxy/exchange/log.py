"""The one log line for every response the proxy synthesizes or cuts short."""

from __future__ import annotations

from proxy.errors import ProxyError
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.http")


def error_line(direction: str, err: ProxyError, head, meta, target=None) -> None:
    """One structured line per synthesized response, at the error's level."""
    getattr(log, err.level)("proxy responded with error", **_fields(direction, err, head, meta, target))


def cut_line(direction: str, err: ProxyError, head, meta) -> None:
    """The line for a response the proxy had to cut short: its head had gone out, so no error response was possible."""
    fields = _fields(direction, err, head, meta, None)
    del fields["status"]
    getattr(log, err.level)("response cut short", **fields)


def _fields(direction: str, err: ProxyError, head, meta, target) -> dict:
    fields = {
        "direction": direction,
        "status": err.status,
        "error": err.reason,
        "error_kind": type(err).__name__,
        "client": f"{meta.client[0]}:{meta.client[1]}" if meta is not None and meta.client else None,
    }
    if head is not None:
        fields["method"] = head.method.decode("latin-1")
        fields["target"] = head.target.decode("latin-1")[:200]
    if target is not None:
        fields["upstream"] = str(target)
    return fields

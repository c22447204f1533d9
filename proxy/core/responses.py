"""Responses the proxy writes itself: errors with ``l5d-proxy-error``, and the log line for each."""

from __future__ import annotations

from http import HTTPStatus

import structlog

from proxy.errors import ProxyError

log = structlog.get_logger("proxy.http")


def error_response(err: ProxyError, close: bool) -> bytes:
    """An HTTP/1.1 response for ``err``: plain-text body, reason in ``l5d-proxy-error`` (a failure's)."""
    try:
        phrase = HTTPStatus(err.status).phrase
    except ValueError:
        phrase = "Error"
    reason = err.reason.replace("\r", " ").replace("\n", " ")
    body = f"{reason}\n".encode("utf-8", "replace")
    lines = [
        f"HTTP/1.1 {err.status} {phrase}",
        "content-type: text/plain; charset=utf-8",
        f"content-length: {len(body)}",
    ]
    if err.failure:
        lines.append(f"l5d-proxy-error: {reason}")
    lines.extend(f"{name}: {value}" for name, value in err.fields)
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


def log_error(direction: str, err: ProxyError, head, meta, target=None) -> None:
    """One structured line per synthesized response, at the error's level."""
    getattr(log, err.level)("proxy responded with error", **_fields(direction, err, head, meta, target))


def log_cut(direction: str, err: ProxyError, head, meta) -> None:
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
        "client": f"{meta.client[0]}:{meta.client[1]}" if meta is not None else None,
    }
    if head is not None:
        fields["method"] = head.method.decode("latin-1")
        fields["target"] = head.target.decode("latin-1")[:200]
    if target is not None:
        fields["upstream"] = str(target)
    return fields

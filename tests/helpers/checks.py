"""Assertions several test modules make about the proxy's behaviour."""

from __future__ import annotations

import time

from .clients import RawClient
from .meshproxy import MeshProxy
from .metrics import Metrics
from .upstream import HttpUpstream
from .wire import Response

PROXY_ERROR = "l5d-proxy-error"


def assert_proxy_error(resp: Response, status: int) -> str:
    """A response the proxy synthesized: the status and a non-empty reason."""
    reason = resp.header(PROXY_ERROR)
    assert resp.status == status, (
        f"expected synthesized {status}, got {resp.status} {resp.reason!r} "
        f"headers={resp.headers!r} body={resp.data[:300]!r}"
    )
    assert reason, f"{status} without an {PROXY_ERROR} header: {resp.headers!r}"
    return reason


def assert_not_proxy_error(resp: Response) -> None:
    assert resp.header(PROXY_ERROR) is None, f"unexpected {PROXY_ERROR} on {resp.status}: {resp.headers!r}"


def assert_one_log_line(proxy: MeshProxy, since: int, reason: str, settle: float = 0.3) -> str:
    """Exactly one stderr line after ``since`` mentions ``reason``."""
    line = proxy.wait_line(reason, since=since, timeout=5.0)
    assert line is not None, (
        f"no stderr line mentions {reason!r}; new lines:\n" + "\n".join(proxy.lines(since))
    )
    time.sleep(settle)  # a second line would come right after the first
    matching = [ln for ln in proxy.lines(since) if reason in ln]
    assert len(matching) == 1, f"{len(matching)} log lines mention {reason!r}:\n" + "\n".join(matching)
    return line


def assert_serving(proxy: MeshProxy, upstream: HttpUpstream) -> None:
    """A fresh, well-formed request through the outbound listener succeeds."""
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("POST", "/echo", [("Host", upstream.hostport)], b"still serving")
    assert resp.status == 200 and resp.data == b"still serving", (resp.status, resp.headers)


def delta(before: Metrics, after: Metrics, name: str, **labels: str) -> float:
    return after.get(name, **labels) - before.get(name, **labels)


def wait_metric(
    proxy: MeshProxy, name: str, predicate, timeout: float = 3.0, **labels: str
) -> float:
    """Poll /metrics until ``predicate(value)``; returns the last value."""
    end = time.monotonic() + timeout
    while True:
        value = proxy.metrics().get(name, **labels)
        if predicate(value) or time.monotonic() > end:
            return value
        time.sleep(0.05)

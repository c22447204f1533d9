"""Slowloris: a request head trickled one byte per second gets 408 and a close within the header timeout.

The proxy runs with ``MESHPROXY_HEADER_TIMEOUT=2s``; the head is never
finished, so the client must be answered 408 (with ``l5d-proxy-error``) and
closed no later than the timeout plus a scheduling allowance, counted from
the first byte, and nothing of it may reach the backend.
"""

from __future__ import annotations

import select
import socket
import time

import pytest

from . import findings as F
from .expect import refused
from .findings import Finding, assert_clean
from .harness_h1 import backend_findings, client_findings, read_client
from .listeners import LISTENERS

pytestmark = pytest.mark.timeout(30)

HEADER_TIMEOUT = 2.0
ALLOWANCE = 1.5
PROXY_ENV = {"MESHPROXY_HEADER_TIMEOUT": f"{HEADER_TIMEOUT:g}s"}


def _trickle(sock: socket.socket, data: bytes, limit: float) -> tuple[float, float | None]:
    """Send a byte a second until the proxy answers or closes (or ``limit``
    passes); returns (first byte time, time the proxy reacted or None)."""
    first = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return first, time.monotonic()
        readable, _, _ = select.select([sock], [], [], 1.0)
        if readable:
            return first, time.monotonic()
        if time.monotonic() - first > limit:
            break
    return first, None


@pytest.mark.parametrize("listener", LISTENERS)
def test_slowloris_gets_408_within_header_timeout(proxy, backend, listener):
    addr = getattr(proxy, listener)
    head = f"GET /slowloris HTTP/1.1\r\nHost: {backend.hostport}\r\nX-Slow: ".encode() + b"s" * 40
    log_mark, mark = proxy.mark(), backend.mark()
    out: list[Finding] = []
    with socket.create_connection(addr, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first, reacted = _trickle(sock, head, HEADER_TIMEOUT + ALLOWANCE + 1.0)
        if reacted is None:
            out.append(Finding(F.NO_ANSWER, f"still open {time.monotonic() - first:.1f}s after the first byte"))
        else:
            took = reacted - first
            if took > HEADER_TIMEOUT + ALLOWANCE:
                out.append(Finding(F.NO_ANSWER, f"answered {took:.1f}s after the first byte"))
            view = read_client(sock, 1, ["GET"], 2.0)
            out += client_findings(view, ["GET"], 1)
            finals = view.finals
            if not finals:
                out.append(Finding(F.CLOSED_SILENTLY, f"got {view.data[:200]!r}"))
            elif finals[0].status != 408 or finals[0].get(F.PROXY_ERROR) is None:
                out.append(Finding(F.WRONG_STATUS, f"{finals[0].start_line!r} {finals[0].fields!r}, wanted 408"))
            elif not view.eof:
                out.append(Finding(F.KEPT_OPEN, "open after the 408"))
    out += backend_findings(backend, mark, refused(408), refused=True)
    backend.close_unsettled()
    out += F.log_findings(proxy, log_mark)
    if proxy.running():
        out += F.good_h1_request(addr, backend.hostport)
    assert_clean(out)

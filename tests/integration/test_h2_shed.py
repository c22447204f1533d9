"""HTTP/2 requests are shed at MESHPROXY_OUTBOUND_MAX_IN_FLIGHT, as HTTP/1 ones are.

The limit is low (3); requests held open against a slow HTTP/2 origin fill
it, and every request beyond it gets 503 with ``l5d-proxy-error`` at once,
never reaching the origin. Once the held requests finish, the proxy serves
again.
"""

from __future__ import annotations

import time

import pytest

from helpers.h2client import H2Client
from helpers.h2server import H2Origin

pytestmark = pytest.mark.timeout(60)

LIMIT = 3
PROXY_ENV = {"MESHPROXY_OUTBOUND_MAX_IN_FLIGHT": str(LIMIT)}


@pytest.fixture(scope="module")
def origin():
    server = H2Origin(name="slow-h2")
    yield server
    server.stop()


def _slow_paths(origin: H2Origin) -> int:
    return sum(1 for r in origin.requests if r.path.startswith("/slow"))


@pytest.mark.parametrize("extra_from", ["same-connection", "another-connection"])
def test_h2_requests_beyond_max_in_flight_are_shed_with_503(proxy, origin, extra_from):
    held_before = _slow_paths(origin)
    named_before = sum(1 for r in origin.requests if r.path == "/name")
    with H2Client(proxy.outbound) as client, H2Client(proxy.outbound) as other:
        held = [client.request("GET", "/slow?delay=2", origin.hostport) for _ in range(LIMIT)]
        assert origin.wait_for(lambda: _slow_paths(origin) >= held_before + LIMIT, 5), "held requests never arrived"
        extra_client = client if extra_from == "same-connection" else other
        start = time.monotonic()
        extra = [extra_client.request("GET", "/name", origin.hostport) for _ in range(3)]
        for sid in extra:
            resp = extra_client.response(sid, timeout=5)
            assert resp.status == 503, resp.summary()
            assert resp.header("l5d-proxy-error"), resp.summary()
        assert time.monotonic() - start < 1.5, "shedding waited for the held requests"
        assert sum(1 for r in origin.requests if r.path == "/name") == named_before, "a shed request reached the origin"
        for sid in held:
            resp = client.response(sid, timeout=10)
            assert resp.status == 200 and bytes(resp.data) == b"slow done", resp.summary()
        # The limit counts requests in flight, not requests ever made.
        after = other.exchange("GET", "/name", origin.hostport, timeout=5)
        assert after.status == 200, after.summary()

"""Upstream HTTP/2 connections close after MESHPROXY_POOL_IDLE_TIMEOUT without a stream, never with one open.

Before, only HTTP/1 upstream connections were swept: an HTTP/2 one stayed open
until its peer closed it, so a peer that left discovery (or the extra
connections of a burst) kept a socket and its buffers for ever.
"""

from __future__ import annotations

import time

import pytest

from helpers.h2client import H2Client
from helpers.h2server import H2Origin
from helpers.meshproxy import MeshProxy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def origin():
    server = H2Origin(name="idle-origin")
    yield server
    server.stop()


@pytest.fixture
def proxy(origin, tmp_path):
    mp = MeshProxy(env={"MESHPROXY_POOL_IDLE_TIMEOUT": "500ms",
                        "MESHPROXY_INBOUND_DEFAULT_TARGET": origin.hostport},
                   name="h2-idle", log_path=tmp_path / "stderr.log")
    mp.start()
    yield mp
    mp.close()


def test_an_idle_upstream_connection_closes_and_a_busy_one_does_not(proxy, origin):
    with H2Client(proxy.inbound) as client:
        # A stream open for three times the idle limit keeps its connection.
        start = time.monotonic()
        resp = client.exchange("GET", "/slow?delay=1.5", "app.test")
        assert resp.status == 200 and bytes(resp.data) == b"slow done", resp.summary()
        assert time.monotonic() - start >= 1.4
        assert origin.accept_count == 1
        first = origin.conns[0]
        done = time.monotonic()
        # Then idle: the proxy says GOAWAY and closes within the limit and a sweep (about a second).
        assert first.closed.wait(5.0), "the idle upstream connection stayed open"
        assert 0.4 <= time.monotonic() - done < 4.0
        # The next request opens a new connection.
        assert client.exchange("GET", "/echo", "app.test").status == 200
        assert origin.accept_count == 2

"""Start and stop: ready once bound, SIGTERM drains (in-flight requests
finish, idle keep-alive connections close, listeners stop accepting,
/ready says 503) and the process exits 0."""

from __future__ import annotations

import signal
import time

import pytest

from helpers.clients import RawClient, connect_refused, wait_refused
from helpers.clients import host_header as host

pytestmark = pytest.mark.timeout(60)


def _wait_ready_status(mp, want: int, timeout: float) -> int | str:
    end = time.monotonic() + timeout
    last: int | str = "none"
    while time.monotonic() < end:
        try:
            last = mp.admin_request("GET", "/ready", timeout=1)[0]
        except OSError as err:
            last = repr(err)
        if last == want:
            return last
        time.sleep(0.02)
    return last


def test_ready_once_listeners_bound(make_proxy, fresh_upstream):
    mp = make_proxy(wait_ready=False)
    mp.wait_ready(20)
    # Ready means both listeners accept right now.
    assert not connect_refused(mp.outbound)
    assert not connect_refused(mp.inbound)
    with RawClient(mp.outbound) as client:
        assert client.exchange("GET", "/echo", host(fresh_upstream)).status == 200


def test_sigterm_idle_proxy_exits_zero(make_proxy):
    mp = make_proxy()
    start = time.monotonic()
    assert mp.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - start < 5


def test_sigterm_drains_in_flight_request(make_proxy, fresh_upstream):
    mp = make_proxy({"MESHPROXY_DRAIN_TIMEOUT": "15s"})
    idle = RawClient(mp.outbound)
    slow = RawClient(mp.outbound)
    try:
        assert idle.exchange("GET", "/echo", host(fresh_upstream)).status == 200
        slow.request("GET", "/slow?delay=3", host(fresh_upstream))
        assert fresh_upstream.wait_requests(2), "the slow request did not reach the upstream"

        signalled = time.monotonic()
        mp.send_signal(signal.SIGTERM)

        ready = _wait_ready_status(mp, 503, 2.0)
        assert ready == 503, f"/ready answered {ready} while draining"
        assert wait_refused(mp.outbound, 3.0), "outbound listener still accepts while draining"
        assert wait_refused(mp.inbound, 3.0), "inbound listener still accepts while draining"
        assert idle.closed_within(3.0), "idle keep-alive connection not closed on drain"
        assert mp.running(), "the proxy exited with a request in flight"

        resp = slow.final(timeout=10)
        assert resp.status == 200 and resp.data == b"slow done"
        assert time.monotonic() - signalled >= 2.0
    finally:
        idle.close()
        slow.close()
    code = mp.wait(10)
    assert code == 0, f"exit status {code};\n{mp.tail()}"


def test_sigterm_drain_timeout_bounds_shutdown(make_proxy, fresh_upstream):
    mp = make_proxy({"MESHPROXY_DRAIN_TIMEOUT": "1s"})
    with RawClient(mp.outbound) as client:
        client.request("GET", "/never", host(fresh_upstream))
        assert fresh_upstream.wait_requests(1)
        start = time.monotonic()
        mp.send_signal(signal.SIGTERM)
        code = mp.wait(10)
        elapsed = time.monotonic() - start
    assert code == 0, f"exit status {code};\n{mp.tail()}"
    assert 0.8 <= elapsed < 5.0, f"exited {elapsed:.2f}s after SIGTERM with a 1s drain timeout"


def test_sigterm_with_streaming_download_in_flight(make_proxy, fresh_upstream):
    """A response whose body is still arriving completes during the drain."""
    mp = make_proxy({"MESHPROXY_DRAIN_TIMEOUT": "15s"})
    with RawClient(mp.outbound) as client:
        client.request("GET", "/stream-out", host(fresh_upstream))
        head = client.stream.read_until(b"\r\n\r\n", time.monotonic() + 5)
        assert head.startswith(b"HTTP/1.1 200")
        client.read_exact(50_000)
        mp.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        fresh_upstream.release.set()
        rest = client.read_exact(50_000, timeout=10)
    assert len(rest) == 50_000
    assert mp.wait(10) == 0


def test_admin_shutdown_is_graceful(make_proxy, fresh_upstream):
    """POST /shutdown drains like SIGTERM: the request in flight completes."""
    mp = make_proxy({"MESHPROXY_DRAIN_TIMEOUT": "15s", "MESHPROXY_SHUTDOWN_ENDPOINT_ENABLED": "true"})
    with RawClient(mp.outbound) as slow:
        slow.request("GET", "/slow?delay=1.5", host(fresh_upstream))
        assert fresh_upstream.wait_requests(1)
        status, _, body = mp.admin_request("POST", "/shutdown")
        assert 200 <= status < 300, (status, body)
        assert wait_refused(mp.outbound, 3.0), "outbound listener still accepts after /shutdown"
        resp = slow.final(timeout=10)
        assert resp.status == 200 and resp.data == b"slow done"
    assert mp.wait(10) == 0

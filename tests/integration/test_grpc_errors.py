"""What a real gRPC client (grpcio) learns when the proxy fails its call: a gRPC status, never a bare HTTP one.

As Linkerd does, an error the proxy synthesizes for a gRPC call is a
trailers-only answer whose ``grpc-status`` says what happened (UNAVAILABLE,
DEADLINE_EXCEEDED, PERMISSION_DENIED...) and whose ``grpc-message`` and
``l5d-proxy-error`` say why; a call whose response had started and then
broke ends with those trailers instead of a reset. Each case runs through
one proxy's outbound side and through two proxies (the meshed hop), where the
inbound proxy's answer must survive the outbound one unchanged.
"""

from __future__ import annotations

import grpc
import pytest

from helpers.grpc_service import channel
from helpers.h2server import H2Origin
from helpers.meshproxy import proxy_to
from helpers.ports import free_port

pytestmark = pytest.mark.timeout(60)

CALL_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def origin():
    server = H2Origin(name="grpc-errors-origin")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dead_port():
    return free_port()  # nothing listens there: every connect is refused


@pytest.fixture(scope="module")
def proxy_a(origin, tmp_path_factory):
    mp = proxy_to(tmp_path_factory, "grpc-errors-a", origin.hostport)
    yield mp
    mp.close()


@pytest.fixture(scope="module")
def proxy_to_origin(origin, tmp_path_factory):
    mp = proxy_to(tmp_path_factory, "grpc-errors-b", origin.hostport)
    yield mp
    mp.close()


@pytest.fixture(scope="module")
def proxy_to_nothing(dead_port, tmp_path_factory):
    mp = proxy_to(tmp_path_factory, "grpc-errors-c", f"127.0.0.1:{dead_port}")
    yield mp
    mp.close()


def _error(chan: grpc.Channel, method: str, streaming: bool = False) -> grpc.RpcError:
    call = chan.unary_stream(method) if streaming else chan.unary_unary(method)
    with pytest.raises(grpc.RpcError) as info:
        if streaming:
            received = list(call(b"x", timeout=CALL_TIMEOUT))
            pytest.fail(f"the broken stream ended cleanly after {len(received)} messages")
        call(b"x", timeout=CALL_TIMEOUT)
    return info.value


def _proxy_error(err: grpc.RpcError) -> str | None:
    return dict(err.trailing_metadata() or ()).get("l5d-proxy-error")


@pytest.mark.parametrize("hops", ["outbound", "two-proxies"])
def test_a_refused_connection_is_unavailable_with_the_reason(hops, proxy_a, proxy_to_nothing, dead_port):
    authority = f"127.0.0.1:{dead_port}" if hops == "outbound" else proxy_to_nothing.inbound_hostport
    with channel(proxy_a.outbound_hostport, authority=authority) as chan:
        err = _error(chan, "/echo.Echo/Unary")
    assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
    assert err.details() == "connection refused" and _proxy_error(err) == "connection refused"


@pytest.mark.parametrize("hops", ["outbound", "two-proxies"])
def test_a_stream_the_upstream_resets_midway_ends_with_a_status(hops, proxy_a, proxy_to_origin, origin):
    authority = origin.hostport if hops == "outbound" else proxy_to_origin.inbound_hostport
    received: list[bytes] = []
    with channel(proxy_a.outbound_hostport, authority=authority) as chan:
        call = chan.unary_stream("/reset-after?grpc=1&code=2")
        with pytest.raises(grpc.RpcError) as info:
            for message in call(b"x", timeout=CALL_TIMEOUT):
                received.append(message)
    err = info.value
    # The message that came whole is delivered; then grpcio reports the proxy's status, not
    # "Received RST_STREAM with error code 2" as INTERNAL.
    assert received == [b"m" * 100]
    assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
    assert _proxy_error(err) and "reset" in err.details(), err.details()


def test_a_response_timeout_is_deadline_exceeded(origin, tmp_path_factory):
    mp = proxy_to(tmp_path_factory, "grpc-errors-timeout", origin.hostport, MESHPROXY_RESPONSE_TIMEOUT="300ms")
    try:
        with channel(mp.outbound_hostport, authority=origin.hostport) as chan:
            err = _error(chan, "/never")
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (err.code(), err.details())
        assert err.details() == "response timed out" and _proxy_error(err) == "response timed out"
    finally:
        mp.close()


def test_a_plain_http2_request_still_gets_the_http_status(proxy_a, dead_port):
    from helpers.h2client import H2Client

    with H2Client(proxy_a.outbound) as client:
        resp = client.exchange("GET", "/", f"127.0.0.1:{dead_port}")
    assert resp.status == 502 and resp.header("l5d-proxy-error") == "connection refused", resp.summary()

"""gRPC through the proxy: grpcio server and client, every call shape, errors, deadlines, large messages.

The service (``helpers.grpc_service``) is defined with grpcio's generic
handlers, so no generated code is needed. Each test runs over three routes:
the outbound listener (the channel's default authority names the server),
the inbound listener (its default target is the server), and two proxies in
a row (proxy A's outbound with the authority of proxy B's inbound).
"""

from __future__ import annotations

import hashlib
import queue
import time

import grpc
import pytest

from helpers.grpc_service import EchoStub, GrpcServer, channel
from helpers.meshproxy import proxy_to
from helpers.servers import det_bytes

pytestmark = pytest.mark.timeout(60)

CALL_TIMEOUT = 10.0  # every call is bounded


@pytest.fixture(scope="module")
def grpc_server():
    server = GrpcServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy_a(grpc_server, tmp_path_factory):
    mp = proxy_to(tmp_path_factory, "grpc-proxy-a", grpc_server.hostport)
    yield mp
    mp.close()


@pytest.fixture(scope="module")
def proxy_b(grpc_server, tmp_path_factory):
    mp = proxy_to(tmp_path_factory, "grpc-proxy-b", grpc_server.hostport)
    yield mp
    mp.close()


@pytest.fixture(scope="module", params=["outbound", "inbound", "two-proxies"])
def stub(request, grpc_server):
    a = request.getfixturevalue("proxy_a")
    if request.param == "outbound":
        chan = channel(a.outbound_hostport, authority=grpc_server.hostport)
    elif request.param == "inbound":
        chan = channel(a.inbound_hostport)
    else:
        b = request.getfixturevalue("proxy_b")
        chan = channel(a.outbound_hostport, authority=b.inbound_hostport)
    try:
        grpc.channel_ready_future(chan).result(timeout=CALL_TIMEOUT)
        yield EchoStub(chan)
    finally:
        chan.close()


def _key(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name}-{time.monotonic_ns()}"


# ---------------------------------------------------------------------------
# the four call shapes


def test_unary(stub, grpc_server):
    before = len(grpc_server.calls)
    for i in range(50):
        assert stub.unary(f"echo:hello {i}".encode(), timeout=CALL_TIMEOUT) == f"hello {i}".encode()
    assert len(grpc_server.calls) - before == 50


def test_concurrent_unary_calls_on_one_channel(stub):
    futures = [stub.unary.future(f"echo:{i}".encode(), timeout=CALL_TIMEOUT) for i in range(200)]
    assert [f.result() for f in futures] == [str(i).encode() for i in range(200)]


def test_server_streaming(stub):
    got = list(stub.server_stream(b"50:1000", timeout=CALL_TIMEOUT))
    assert got == [det_bytes(1000, i) for i in range(50)]


def test_client_streaming(stub):
    messages = [det_bytes(100 + 37 * i, i) for i in range(100)]
    reply = stub.client_stream(iter(messages), timeout=CALL_TIMEOUT)
    assert reply == f"100:{hashlib.sha256(b''.join(messages)).hexdigest()}".encode()


def test_bidirectional_streaming_interleaves(stub):
    """Each answer comes back before the next message is sent: the proxy
    relays stream frames as they come, it does not wait for the end."""
    outgoing: queue.Queue = queue.Queue()

    def requests():
        while True:
            item = outgoing.get(timeout=CALL_TIMEOUT)
            if item is None:
                return
            yield item

    responses = stub.bidi(requests(), timeout=CALL_TIMEOUT)
    for i in range(20):
        outgoing.put(f"upper:msg {i}".encode())
        assert next(responses) == f"MSG {i}".encode()
    outgoing.put(b"last")
    assert next(responses) == b"last"
    outgoing.put(None)
    assert list(responses) == []
    assert responses.code() == grpc.StatusCode.OK


# ---------------------------------------------------------------------------
# status, metadata, deadlines, cancellation, size


@pytest.mark.parametrize("code, details", [
    ("NOT_FOUND", "no such thing: ünïcode 100% <x>"),
    ("PERMISSION_DENIED", "not for you"),
    ("RESOURCE_EXHAUSTED", "too much"),
])
def test_error_status_details_and_trailing_metadata(stub, code, details):
    with pytest.raises(grpc.RpcError) as info:
        stub.unary(f"fail:{code}:{details}".encode(), timeout=3.0)  # an error comes back in milliseconds
    err = info.value
    assert err.code() == grpc.StatusCode[code], (err.code(), err.details())
    assert err.details() == details
    trailing = dict(err.trailing_metadata())
    assert trailing.get("x-error-detail") == "missing-thing"
    assert trailing.get("x-error-bin") == b"\x00\x01\xfe\xff"


def test_metadata_round_trip(stub):
    metadata = (("x-user", "alice"), ("x-multi", "one"), ("x-blob-bin", b"\x00\xffbinary\x7f"))
    reply, call = stub.unary.with_call(b"meta", metadata=metadata, timeout=CALL_TIMEOUT)
    assert reply == b"meta"
    initial = list(call.initial_metadata())
    trailing = list(call.trailing_metadata())
    assert ("x-initial-user", "alice") in initial and ("x-initial-multi", "one") in initial
    assert ("x-initial-blob-bin", b"\x00\xffbinary\x7f") in initial
    assert ("x-trailing-user", "alice") in trailing
    assert ("x-trailing-blob-bin", b"\x00\xffbinary\x7f") in trailing


def test_deadline_propagates_and_server_sees_cancellation(stub, grpc_server, request):
    key = _key(request)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stub.unary(f"sleep:8:{key}".encode(), timeout=0.6)
    elapsed = time.monotonic() - start
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 3.0, f"DEADLINE_EXCEEDED after {elapsed:.2f}s with a 0.6s deadline"
    call = [c for c in grpc_server.calls if c.get("key") == key]
    assert call, "the call never reached the server"
    remaining = call[0]["time_remaining"]
    # grpc-timeout crossed the proxy: the server knows the client's deadline
    # (grpcio reports about 9.2e18 s when a call has none).
    assert remaining < 1.0, remaining
    assert grpc_server.event(grpc_server.cancelled, key).wait(3.0), "the server never saw the call end"
    assert grpc_server.event(grpc_server.finished, key).wait(3.0), "the handler kept running past the deadline"


def test_client_cancel_reaches_server(stub, grpc_server, request):
    """No deadline here: only a relayed RST_STREAM can tell the server."""
    key = _key(request)
    future = stub.unary.future(f"sleep:20:{key}".encode())
    try:
        end = time.monotonic() + 5
        while not any(c.get("key") == key for c in grpc_server.calls) and time.monotonic() < end:
            time.sleep(0.01)
        call = [c for c in grpc_server.calls if c.get("key") == key]
        assert call, "the call never reached the server"
        assert call[0]["time_remaining"] > 1e6, call[0]["time_remaining"]  # grpcio: no deadline
    finally:
        future.cancel()
    assert future.cancelled()
    assert grpc_server.event(grpc_server.cancelled, key).wait(3.0), "the server never saw the cancellation"
    assert grpc_server.event(grpc_server.finished, key).wait(3.0)


def test_large_response_message(stub):
    reply = stub.unary(b"big:4194304", timeout=CALL_TIMEOUT)
    assert len(reply) == 4194304 and reply == det_bytes(4194304, 3)


def test_large_request_message(stub):
    payload = det_bytes(4 * 1024 * 1024, 9)
    reply = stub.unary(b"echo:" + payload, timeout=CALL_TIMEOUT)
    assert len(reply) == len(payload) and hashlib.sha256(reply).digest() == hashlib.sha256(payload).digest()


def test_large_streamed_messages(stub):
    got = list(stub.server_stream(b"4:1048576", timeout=CALL_TIMEOUT))
    assert [len(m) for m in got] == [1048576] * 4
    assert got == [det_bytes(1048576, i) for i in range(4)]

"""HTTP/1.1 bodies through the outbound listener: chunked both ways with
trailers, multi-megabyte transfers compared by sha256, read-until-close
responses, streaming in both directions with bounded buffering, and
Expect: 100-continue.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from helpers import wire
from helpers.clients import RawClient, curl, session
from helpers.clients import host_header as host
from helpers.servers import det_bytes, sha256

pytestmark = pytest.mark.timeout(60)


def test_chunked_upload_with_trailers(proxy, fresh_upstream):
    body = wire.chunked_bytes([b"first ", b"second ", b"x" * 10000], [("X-Sum", "abc"), ("X-Other", "1")])
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("POST", "/echo", host(fresh_upstream) + [("Transfer-Encoding", "chunked")], body)
    assert resp.status == 200
    assert resp.data == b"first second " + b"x" * 10000
    req = fresh_upstream.request_number(1)
    assert req.body.chunked
    assert req.body.trailers == [(b"X-Sum", b"abc"), (b"X-Other", b"1")]


def test_chunk_extensions_accepted(proxy, fresh_upstream):
    body = b"5;name=value\r\nhello\r\n6 ; quoted=\"a b\"\r\n world\r\n0\r\n\r\n"
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("POST", "/echo", host(fresh_upstream) + [("Transfer-Encoding", "chunked")], body)
    assert resp.status == 200 and resp.data == b"hello world"


def test_chunked_download_with_trailers(proxy, upstream):
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", "/chunked", host(upstream) + [("TE", "trailers")])
    assert resp.status == 200
    assert resp.body.chunked
    assert resp.data == b"hello chunked world"
    trailers = {n.lower(): v for n, v in resp.body.trailers}
    assert trailers.get(b"x-trailer-one") == b"1"
    assert trailers.get(b"x-checksum") == sha256(b"hello chunked world").encode()


def test_large_chunked_download(proxy, upstream):
    with RawClient(proxy.outbound) as client:
        resp = client.exchange("GET", "/bytes/3000000?chunked=1", host(upstream), timeout=20)
    assert resp.status == 200
    assert sha256(resp.data) == sha256(det_bytes(3_000_000))


def test_multi_megabyte_both_directions(proxy, fresh_upstream):
    data = det_bytes(6 * 1024 * 1024 + 7, 9)
    with session() as sess:
        got = sess.post(f"http://{proxy.outbound_hostport}/echo", data=data,
                        headers={"Host": fresh_upstream.hostport}, timeout=30)
    assert got.status_code == 200
    assert got.headers["X-Body-Sha256"] == sha256(data)  # what the upstream received
    assert sha256(got.content) == sha256(data)  # what came back


def test_multi_megabyte_chunked_upload_from_generator(proxy, fresh_upstream):
    data = det_bytes(5 * 1024 * 1024, 11)

    def pieces():
        for pos in range(0, len(data), 300_001):
            yield data[pos : pos + 300_001]

    with session() as sess:
        got = sess.post(f"http://{proxy.outbound_hostport}/echo", data=pieces(),
                        headers={"Host": fresh_upstream.hostport}, timeout=30)
    assert got.status_code == 200
    assert got.headers["X-Body-Chunked"] == "1"
    assert got.headers["X-Body-Sha256"] == sha256(data)
    assert sha256(got.content) == sha256(data)


def test_read_until_close_response(proxy, upstream):
    data = det_bytes(2_000_000)
    with RawClient(proxy.outbound) as client:
        client.request("GET", "/close?n=2000000", host(upstream))
        resp = client.final(timeout=20)
    assert resp.status == 200
    assert sha256(resp.data) == sha256(data)


def test_read_until_close_response_with_curl(proxy, upstream, tmp_path):
    out = tmp_path / "body"
    res = curl("-x", proxy.proxy_url, "-o", str(out), "-w", "%{http_code}", f"http://{upstream.hostport}/close?n=700000")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"200"
    assert out.read_bytes() == det_bytes(700_000)


def test_truncated_response_closes_client_connection(proxy, upstream):
    """The upstream dies mid-body: the client must see its connection end
    (not wait forever, not get made-up bytes)."""
    with RawClient(proxy.outbound) as client:
        client.request("GET", "/truncated", host(upstream))
        head = client.stream.read_until(b"\r\n\r\n", wire.deadline_in(5))
        assert head.startswith(b"HTTP/1.1 200")
        body = client.read_until_close(timeout=10)
    assert body == b"t" * 50


@pytest.mark.parametrize("client_kind", ["http1", "h2"])
def test_close_delimited_body_cut_by_a_reset_does_not_end_cleanly(proxy, client_kind):
    """An HTTP/1.0 app's body ends with its close (chunked for an HTTP/1.1 client, ended by END_STREAM for
    an HTTP/2 one): when the app's connection is reset instead, the client's response must be cut (the
    connection closed without the last chunk, or the stream reset), never end as if complete."""
    from helpers.h2client import H2Client

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        listener.settimeout(10)
        for _ in range(3):  # an HTTP/2 client's request is first tried in HTTP/2, which this app refuses
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                got = b""
                while b"\r\n\r\n" not in got:
                    got += conn.recv(4096)
                if got.startswith(b"PRI "):
                    conn.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    continue
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"partial " * 1000)
                time.sleep(0.2)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        if client_kind == "h2":
            with H2Client(proxy.outbound) as h2:
                resp = h2.exchange("GET", "/", f"127.0.0.1:{port}")
            assert resp.status == 200 and resp.reset_code is not None and not resp.ended, resp.summary()
            return
        with RawClient(proxy.outbound) as client:
            client.request("GET", "/", [("Host", f"127.0.0.1:{port}")])
            head = client.stream.read_until(b"\r\n\r\n", wire.deadline_in(5))
            assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower(), head
            rest = client.read_until_close(timeout=10)
        assert b"partial" in rest and not rest.endswith(b"0\r\n\r\n"), rest[-40:]
    finally:
        thread.join(5)
        listener.close()


def test_response_body_is_streamed(proxy, fresh_upstream):
    """The first half reaches the client while the upstream holds the second."""
    with RawClient(proxy.outbound) as client:
        client.request("GET", "/stream-out", host(fresh_upstream))
        head = client.stream.read_until(b"\r\n\r\n", wire.deadline_in(5))
        assert head.startswith(b"HTTP/1.1 200")
        first = client.read_exact(50_000, timeout=5)
        fresh_upstream.release.set()
        second = client.read_exact(50_000, timeout=5)
    assert first == det_bytes(50_000, 1) and second == det_bytes(50_000, 2)


def test_request_body_is_streamed(proxy, fresh_upstream):
    """The upstream sees the first half before the client sends the second."""
    data = det_bytes(200_000, 3)
    with RawClient(proxy.outbound) as client:
        client.send(wire.request_bytes("POST", "/stream-in",
                                       host(fresh_upstream) + [("Content-Length", str(len(data)))]))
        client.send(data[:100_000])
        assert fresh_upstream.partial_seen.wait(5), "upstream did not see the first half while the client held the rest"
        client.send(data[100_000:])
        resp = client.final()
    assert resp.status == 200 and resp.header("X-Body-Sha256") == sha256(data)


FLOOD = 64 << 20
# Direct: ~3 MiB in kernel buffers; two hops plus the proxy's own bounded buffers stay far below.
BUFFER_BOUND = 24 << 20


def test_download_backpressure(proxy, fresh_upstream):
    """A client that stops reading stops the upstream too: the proxy buffers
    a bounded amount, then the whole body still arrives."""
    with RawClient(proxy.outbound) as client:
        client.request("GET", f"/flood?n={FLOOD}", host(fresh_upstream))
        client.stream.read_until(b"\r\n\r\n", wire.deadline_in(5))
        time.sleep(1.5)
        held = fresh_upstream.flood_sent
        assert held < BUFFER_BOUND, f"upstream wrote {held >> 20} MiB to a client that reads nothing"
        client.discard(FLOOD, timeout=60)
    assert fresh_upstream.flood_sent == FLOOD


def test_upload_backpressure(proxy, fresh_upstream):
    """An upstream that reads nothing stops the client's upload after a
    bounded amount; once it reads, the whole body arrives."""
    data = bytes(FLOOD)
    with RawClient(proxy.outbound) as client:
        client.send(wire.request_bytes("POST", "/sink", host(fresh_upstream) + [("Content-Length", str(FLOOD))]))
        taken = client.send_until_blocked(data)
        assert taken < BUFFER_BOUND, f"the proxy took {taken >> 20} MiB the upstream did not read"
        fresh_upstream.release.set()
        client.send(data[taken:])
        resp = client.final(timeout=60)
    assert resp.status == 200 and resp.data == str(FLOOD).encode()


def test_expect_100_continue_relayed(proxy, fresh_upstream):
    with RawClient(proxy.outbound) as client:
        client.send(wire.request_bytes("POST", "/continue", host(fresh_upstream) + [
            ("Expect", "100-continue"), ("Content-Length", "11")]))
        interim = client.response(timeout=5)
        assert interim.status == 100, (interim.status, interim.headers)
        assert fresh_upstream.continue_sent.is_set()
        client.send(b"hello world")
        final = client.final(timeout=5)
    assert final.status == 200 and final.data == b"hello world"
    assert fresh_upstream.request_number(1).head.get("Expect") == b"100-continue"


def test_curl_large_post_with_expect(proxy, fresh_upstream, tmp_path):
    data = det_bytes(2_000_000, 4)
    src = tmp_path / "big"
    src.write_bytes(data)
    res = curl("-x", proxy.proxy_url, "-H", "Expect: 100-continue", "--expect100-timeout", "10",
               "--data-binary", f"@{src}", "-o", str(tmp_path / "o"), "-w", "%{http_code}",
               f"http://{fresh_upstream.hostport}/continue")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"200"
    assert (tmp_path / "o").read_bytes() == data
    assert fresh_upstream.continue_sent.is_set()

"""Tests for proxy.transport.meshtls: records as they arrive over real loopback TCP, both read paths, half-close.

A client and a server ``TlsLayer`` (the compiled build) on a uvloop loop,
certificates from a throwaway issuer. Several records in one TCP read, a
record cut over many reads, and a peer's ``close_notify`` must each reach the
app exactly: the reader stops decrypting when no ciphertext is left instead of
waiting for OpenSSL's "want read", so none may be left behind either.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket

import pytest
import uvloop
from cryptography import x509

import proxy.transport.meshtls as meshtls
from proxy.identity import ca
from proxy.transport import sessions, tls

assert meshtls.__file__.endswith(".so"), f"compiled meshtls not in use: {meshtls.__file__}"

TD = "cluster.local"
API = f"api.default.serviceaccount.identity.{TD}"
WEB = f"web.default.serviceaccount.identity.{TD}"
BUFFER = 256 * 1024


@pytest.fixture(scope="module")
def pair():
    root = ca.create_root(TD, dt.timedelta(days=1))
    issuer = ca.create_issuer(root, TD, dt.timedelta(days=1))

    def mesh(name: str) -> tls.MeshTls:
        key = ca.new_key()
        leaf = ca.sign_leaf(issuer, key.public_key(), name, [x509.DNSName(name)], dt.timedelta(hours=1))
        return tls.build(name, ca.cert_pem(leaf) + ca.cert_pem(issuer.cert), ca.key_pem(key), ca.cert_pem(root.cert))

    return mesh(WEB), mesh(API)


class App(asyncio.Protocol):
    """What the app above the TLS layer got: bytes, EOF; ``buffered`` offers get_buffer as the HTTP/2 relays do."""

    def __init__(self, buffered: bool) -> None:
        self.data = bytearray()
        self.eof = asyncio.Event()
        self.changed = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        if buffered:
            self.buf = memoryview(bytearray(BUFFER))
            self.get_buffer = lambda sizehint: self.buf
            self.buffer_updated = lambda n: self.data_received(bytes(self.buf[:n]))

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.changed.set()

    def eof_received(self) -> bool:
        self.eof.set()
        return True  # half-open: we may still answer

    def connection_lost(self, exc) -> None:
        self.eof.set()


async def _until(app: App, n: int) -> None:
    while len(app.data) < n:
        app.changed.clear()
        await asyncio.wait_for(app.changed.wait(), 10)


async def _connected(pair, buffered: bool):
    """(client app, server app, server's raw TCP transport) over a fresh loopback connection."""
    web, api = pair
    loop = asyncio.get_running_loop()
    server_app = App(buffered)
    handshaken = loop.create_future()

    def layer():
        def done(err):
            if not handshaken.done():
                handshaken.set_result(err)
        return meshtls.TlsLayer(loop, api.server, True, None, server_app, 10.0, done, sessions.SERVER)

    server = await loop.create_server(layer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    _, client_app = await tls.client_handshake(loop, sock, lambda: App(buffered), web.client_transport, API, 10.0)
    assert await asyncio.wait_for(handshaken, 10) is None
    return client_app, server_app, server


@pytest.mark.parametrize("buffered", [True, False], ids=["get_buffer", "data_received"])
def test_many_records_in_one_read_all_arrive_in_order(pair, buffered):
    async def main():
        client, server_app, server = await _connected(pair, buffered)
        # 300 writes in one callback: 300 records, which the server's TCP reads see many at a time.
        chunks = [b"%05d" % k * (1 + k % 40) for k in range(300)]
        for chunk in chunks:
            client.transport.write(chunk)
        want = b"".join(chunks)
        await _until(server_app, len(want))
        assert bytes(server_app.data) == want
        server.close()

    uvloop.run(main())


@pytest.mark.parametrize("buffered", [True, False], ids=["get_buffer", "data_received"])
def test_records_larger_than_reads_and_half_close_both_ways(pair, buffered):
    async def main():
        client, server_app, server = await _connected(pair, buffered)
        big = bytes(range(256)) * 4096  # 1 MiB: 64 full records, each cut over TCP reads
        client.transport.write(big)
        client.transport.write_eof()  # close_notify: the server hears EOF once everything before it arrived
        await asyncio.wait_for(server_app.eof.wait(), 10)
        assert bytes(server_app.data) == big
        server_app.transport.write(b"answer after the client's close_notify")
        server_app.transport.write_eof()
        await asyncio.wait_for(client.eof.wait(), 10)
        assert bytes(client.data) == b"answer after the client's close_notify"
        server.close()

    uvloop.run(main())


class Capture:
    """Stands in for the client layer's TCP transport for one write: keeps the record instead of sending it."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


def test_a_record_fed_one_octet_at_a_time_is_delivered_once_complete(pair):
    async def main():
        client, server_app, server = await _connected(pair, True)
        client_layer, server_layer = client.transport.layer, server_app.transport.layer
        capture = Capture(client_layer.raw)
        client_layer.raw = capture
        payload = b"y" * 200
        try:
            client.transport.write(payload)
        finally:
            client_layer.raw = capture.raw
        record = bytes(capture.data)
        assert len(record) > len(payload)
        # The server's layer gets the record one octet per read, as a slow network could cut it.
        for k in range(len(record)):
            server_layer.data_received(record[k:k + 1])
            assert len(server_app.data) == (len(payload) if k == len(record) - 1 else 0)
        assert bytes(server_app.data) == payload
        client.transport.write(b"z" * 10)  # and the reader's state after ~220 partial reads is sound
        await _until(server_app, len(payload) + 10)
        assert bytes(server_app.data) == payload + b"z" * 10
        server.close()

    uvloop.run(main())

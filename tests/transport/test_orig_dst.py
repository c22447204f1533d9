"""Tests of proxy/transport/orig_dst.py without iptables (tests/integration/test_interception.py has the real thing)."""

import asyncio
import socket
import struct

import pytest
import uvloop

from proxy.config import HostPort
from proxy.transport.listen import listen
from proxy.transport.orig_dst import connection_addresses, decode_sockaddr, original_dst


def test_decode_ipv4_and_ipv6_sockaddrs():
    v4 = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 8080) + socket.inet_aton("10.1.2.3") + b"\0" * 8
    assert decode_sockaddr(v4) == ("10.1.2.3", 8080)
    v6 = (struct.pack("=H", socket.AF_INET6) + struct.pack("!H", 443) + b"\0" * 4
          + socket.inet_pton(socket.AF_INET6, "fd00::1") + b"\0" * 4)
    assert decode_sockaddr(v6) == ("fd00::1", 443)
    assert decode_sockaddr(b"\x01") is None
    assert decode_sockaddr(struct.pack("=H", 99) + b"\0" * 14) is None


def test_a_connection_that_was_not_redirected_has_no_original_destination():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    try:
        assert original_dst(accepted) is None
        assert original_dst(object()) is None
    finally:
        for s in (client, accepted, server):
            s.close()


@pytest.mark.parametrize(("host", "connect_to"), [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("::", "127.0.0.1")])
def test_connection_addresses_of_a_uvloop_transport_are_the_sockets(host, connect_to):
    """What the accept stage reads per connection, from uvloop's own transport: with the listener's
    address given (bound to one) or not (a wildcard), the same addresses as the socket's."""
    seen = []

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport):
            sock = transport.get_extra_info("socket")
            listener = server.sockets[0].getsockname()[:2]
            seen.append((connection_addresses(transport, None), connection_addresses(transport, listener),
                         (sock.getpeername()[:2], sock.getsockname()[:2])))
            transport.close()

    async def main():
        nonlocal server
        loop = asyncio.get_running_loop()
        server = await listen(loop, HostPort(host, 0), Protocol)  # dual stack on "::"
        reader, writer = await asyncio.open_connection(connect_to, server.sockets[0].getsockname()[1])
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
        server.close()

    server = None
    uvloop.run(main())
    [(wildcard, bound, (peer, local))] = seen
    assert wildcard == (peer, local, None)
    if host != "::":  # a listener bound to one address: every connection's local address is it
        assert bound == (peer, local, None)

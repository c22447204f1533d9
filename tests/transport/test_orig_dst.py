"""Tests of proxy/transport/orig_dst.py without iptables (tests/integration/test_interception.py has the real thing)."""

import socket
import struct

from proxy.transport.orig_dst import decode_sockaddr, original_dst


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

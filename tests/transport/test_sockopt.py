"""proxy/transport/sockopt.pyx: getsockopt on a raw descriptor."""

import socket
import struct

import pytest

from proxy.transport.sockopt import getsockopt_bytes, original_destination


def test_reads_an_option_from_the_descriptor():
    with socket.socket() as s:
        raw = getsockopt_bytes(s.fileno(), socket.SOL_SOCKET, socket.SO_TYPE, 4)
        assert struct.unpack("=i", raw)[0] == socket.SOCK_STREAM
        # An unconnected socket has no original destination: None, not an exception.
        assert getsockopt_bytes(s.fileno(), socket.SOL_IP, 80, 16) is None


def test_refusals_are_none_and_sizes_are_bounded():
    assert getsockopt_bytes(-1, socket.SOL_SOCKET, socket.SO_TYPE, 4) is None
    with socket.socket() as s:
        for size in (0, 129):
            with pytest.raises(ValueError):
                getsockopt_bytes(s.fileno(), socket.SOL_SOCKET, socket.SO_TYPE, size)



@pytest.mark.parametrize(("family", "host", "connect_to"), [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
    (socket.AF_INET6, "::1", "::1"),
    (socket.AF_INET6, "::", "127.0.0.1"),  # dual stack: an IPv4 client, in the IPv4 conntrack table
])
def test_the_original_destination_of_a_connection_not_redirected_is_none_or_its_own_address(family, host,
                                                                                              connect_to):
    server = socket.socket(family)
    if family == socket.AF_INET6:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind((host, 0))
    server.listen()
    client = socket.create_connection((connect_to, server.getsockname()[1]))
    accepted, _ = server.accept()
    try:
        # ENOENT without conntrack; the address itself where conntrack tracks loopback.
        got = original_destination(accepted.fileno(), family == socket.AF_INET6)
        local = accepted.getsockname()[:2]
        assert got is None or got[1] == local[1]
    finally:
        for s in (client, accepted, server):
            s.close()


def test_no_original_destination_without_a_connection():
    assert original_destination(-1, False) is None and original_destination(-1, True) is None
    with socket.socket() as s:
        assert original_destination(s.fileno(), False) is None

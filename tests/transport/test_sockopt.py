"""proxy/transport/sockopt.pyx: getsockopt on a raw descriptor."""

import socket
import struct

import pytest

from proxy.transport.sockopt import accepted_addresses, getsockopt_bytes


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


def _accepted(family: int, host: str, connect_to: str) -> tuple[socket.socket, socket.socket, socket.socket]:
    server = socket.socket(family)
    if family == socket.AF_INET6:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind((host, 0))
    server.listen()
    client = socket.create_connection((connect_to, server.getsockname()[1]))
    accepted, _ = server.accept()
    return server, client, accepted


@pytest.mark.parametrize(("family", "host", "connect_to"), [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
    (socket.AF_INET6, "::1", "::1"),
    (socket.AF_INET6, "::", "127.0.0.1"),  # dual stack: an IPv4 client as a mapped address
])
def test_accepted_addresses_are_the_socket_modules_without_a_socket_object(family, host, connect_to):
    server, client, accepted = _accepted(family, host, connect_to)
    try:
        peer, local = accepted.getpeername()[:2], accepted.getsockname()[:2]
        # Not redirected: no original destination (whether or not conntrack tracks loopback here).
        assert accepted_addresses(accepted.fileno(), True) == (peer, local, None)
        # The caller knows the local address (a listener bound to one): not asked.
        got = accepted_addresses(accepted.fileno(), False)
        assert got is not None and got[:2] == (peer, None) and got[2] in (None, local)
    finally:
        for s in (client, accepted, server):
            s.close()


def test_accepted_addresses_of_no_connection_are_none():
    assert accepted_addresses(-1, True) is None
    with socket.socket() as s:
        assert accepted_addresses(s.fileno(), True) is None  # not connected
    with socket.socket(socket.AF_UNIX) as s:
        assert accepted_addresses(s.fileno(), True) is None

"""proxy/transport/sockopt.pyx: getsockopt on a raw descriptor."""

import socket
import struct

import pytest

from proxy.transport.sockopt import getsockopt_bytes


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

"""proxy/transport/listen.py: which listeners fix their connections' local address, checked
against what the kernel reports for real accepted sockets."""

from __future__ import annotations

import socket

import pytest

from proxy.config import HostPort
from proxy.transport.listen import fixed_local


@pytest.mark.parametrize("addr,expected", [
    (HostPort("127.0.0.1", 4140), ("127.0.0.1", 4140)),
    (HostPort("::1", 4140), ("::1", 4140)),
    (HostPort("0:0::1", 4140), ("::1", 4140)),  # spelled as getsockname() spells it
    (HostPort("0.0.0.0", 4143), None),  # each connection's own destination
    (HostPort("::", 4143), None),
    (HostPort("127.0.0.1", 0), None),  # the port is known only once bound
    (HostPort("localhost", 4140), None),  # a name: resolved at bind
    (HostPort("fe80::1%lo", 4140), None),
])
def test_only_one_ip_and_a_fixed_port_fix_the_local_address(addr, expected):
    assert fixed_local(addr) == expected


@pytest.mark.parametrize("host,family", [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)])
def test_the_fixed_address_is_what_the_kernel_reports(host, family):
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection((host, port), timeout=5):
            accepted, _ = listener.accept()
            with accepted:
                assert fixed_local(HostPort(host, port)) == accepted.getsockname()[:2]

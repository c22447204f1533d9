"""Tests of proxy/transport/own.py (address comparison) and of the connector's refusal to reach the proxy itself.

The connector (proxy/transport/connect.py) is tried against real loopback sockets; the whole proxy is in
tests/integration/test_own_addresses.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest
import uvloop

from proxy.core.addr import Target
from proxy.errors import OwnAddress, connect_error
from proxy.transport.connect import Connector, literal_sockaddr, open_connection
from proxy.transport.own import OwnAddresses, local_interface_addresses, parse_ip

POD_IP = "10.9.8.7"


def _own(*listeners, interfaces=()):
    own = OwnAddresses(frozenset(ipaddress.ip_address(a) for a in interfaces))
    for name, host, port in listeners:
        own.add(name, host, port)
    return own


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("127.0.1", "127.0.0.1"), ("2130706433", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("::ffff:127.0.0.1", "127.0.0.1"), ("[::ffff:127.0.0.1]", "127.0.0.1"), ("[::1]", "::1"),
    ("fe80::1%eth0", "fe80::1"), ("0.0.0.0", "0.0.0.0"), ("::", "::"), ("10.1.2.3", "10.1.2.3"),
    ("0", "0.0.0.0"), ("0X7F.1", "127.0.0.1"), ("017700000001", "127.0.0.1"), ("127.000.000.001", "127.0.0.1"),
    ("[::ffff:7f00:1]", "127.0.0.1"), ("::ffff:0.0.0.0", "0.0.0.0"),
])
def test_every_spelling_of_an_address_is_that_address(text, expected):
    assert parse_ip(text) == ipaddress.ip_address(expected)


@pytest.mark.parametrize("text", ["localhost", "web.default", "example.com", "", "[]", "1.2.3.4 x", "deadbeef.com",
                                  "127.0.0.1.nip.io", "0x7g.1", "1e2", "127.0.0.1."])
def test_names_are_not_addresses(text):
    assert parse_ip(text) is None


ADMIN_ANY = ("admin", "0.0.0.0", 4191)
OUTBOUND_LO = ("outbound", "127.0.0.1", 4140)
INBOUND_V6_ANY = ("inbound", "::", 4143)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "127.0.1", "127.5.6.7", "0.0.0.0", "::ffff:127.0.0.1",
                                  "2130706433", "::1", "::", "[::1]"])
def test_a_wildcard_listener_is_reached_through_loopback_and_unspecified(host):
    own = _own(ADMIN_ANY)
    assert own.is_own(host, 4191)
    assert own.listener(host, 4191).name == "admin"


def test_a_wildcard_listener_is_reached_through_the_connections_own_address_and_the_interfaces():
    own = _own(ADMIN_ANY, interfaces=["192.0.2.10", "fd00::5"])
    assert not own.is_own(POD_IP, 4191)
    assert own.is_own(POD_IP, 4191, local_ip=POD_IP)  # connected to ourselves: the kernel chose the same address
    assert own.is_own("::ffff:" + POD_IP, 4191, local_ip=POD_IP)
    assert own.is_own("192.0.2.10", 4191) and own.is_own("fd00::5", 4191)
    assert not own.is_own("192.0.2.11", 4191, local_ip="192.0.2.10")  # a neighbour on the same port


def test_a_listener_bound_to_one_address_is_reached_only_through_it():
    own = _own(OUTBOUND_LO)
    assert own.is_own("127.0.0.1", 4140) and own.is_own("127.1", 4140) and own.is_own("0.0.0.0", 4140)
    assert own.is_own("::ffff:127.0.0.1", 4140)
    assert not own.is_own("127.0.0.2", 4140)  # another loopback address: another listener
    assert not own.is_own("::1", 4140)
    assert not own.is_own("127.0.0.1", 4141)


def test_ports_not_ours_fail_fast_and_names_are_never_matched_as_strings():
    own = _own(ADMIN_ANY, OUTBOUND_LO, INBOUND_V6_ANY)
    assert own.ports == frozenset({4191, 4140, 4143})
    assert not own.is_own("127.0.0.1", 80)
    assert not own.is_own("localhost", 4191)  # a name: the connected socket's address decides
    assert not own.is_own(None, 4191)
    assert own.listener("127.0.0.1", 4143).name == "inbound"  # a v6 wildcard takes IPv4 too (dual-stack)


def test_listeners_of_a_bound_server_are_recorded():
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        try:
            own = OwnAddresses(frozenset())
            own.add_server("tap", server)
            port = server.sockets[0].getsockname()[1]
            assert own.listener("127.1", port).name == "tap"
        finally:
            server.close()

    uvloop.run(main())


def test_interfaces_include_loopback():
    assert ipaddress.ip_address("127.0.0.1") in local_interface_addresses()


# -- the connector -------------------------------------------------------------------


class Recorder(asyncio.Protocol):
    def __init__(self):
        self.made = False

    def connection_made(self, transport):
        self.made = True
        transport.close()


class Listener:
    """A real loopback listener standing in for one of the proxy's: records every byte it receives."""

    def __init__(self, host="127.0.0.1"):
        self.received = bytearray()
        self.accepted = 0
        self.host = host

    async def start(self):
        outer = self

        class Sink(asyncio.Protocol):
            def connection_made(self, transport):
                outer.accepted += 1

            def data_received(self, data):
                outer.received += data

        self.server = await asyncio.get_running_loop().create_server(Sink, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self


def _connect(target_of, listener_host="127.0.0.1", listener_name="admin"):
    """Connect to the target ``target_of(port)`` with a connector whose own set holds one listener."""

    async def main():
        listener = await Listener(listener_host).start()
        own = OwnAddresses(frozenset())
        own.add_server(listener_name, listener.server)
        connector = Connector(asyncio.get_running_loop(), 2.0, own=own)
        protocol = Recorder()
        try:
            await open_connection(connector, target_of(listener.port), lambda: protocol)
            outcome = None
        except OwnAddress as err:
            outcome = err
        await asyncio.sleep(0.05)
        listener.server.close()
        return outcome, protocol.made, listener

    return uvloop.run(main())


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "2130706433", "0.0.0.0", "::ffff:127.0.0.1"])
def test_an_ip_literal_naming_an_own_listener_is_refused_before_connecting(host):
    err, made, listener = _connect(lambda port: Target(host, port))
    assert isinstance(err, OwnAddress) and err.status == 403 and "admin" in err.reason
    assert not made and listener.accepted == 0


def test_a_name_resolving_to_an_own_listener_is_refused_before_connecting():
    err, made, listener = _connect(lambda port: Target("localhost", port))
    assert isinstance(err, OwnAddress)
    assert not made and listener.accepted == 0 and listener.received == b""
    assert connect_error(err) is err  # the relays pass it through as it is


def test_the_hosts_own_address_reaches_a_wildcard_listener_and_is_refused():
    addrs = [a for a in local_interface_addresses() if a.version == 4 and not a.is_loopback]
    if not addrs:
        addrs = [ipaddress.ip_address("127.0.0.1")]
    err, made, listener = _connect(lambda port: Target(str(addrs[0]), port), listener_host="0.0.0.0")
    assert isinstance(err, OwnAddress) and not made and listener.received == b""


def test_the_connected_socket_is_checked_even_when_the_interface_list_is_empty():
    """The pod-IP case without /proc: the connection's source address equals its destination."""

    async def main():
        listener = await Listener("0.0.0.0").start()
        own = OwnAddresses(frozenset())  # no interfaces known
        own.add_server("admin", listener.server)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: the kernel only picks a source address
            host_ip = probe.getsockname()[0]
        except OSError:
            host_ip = "127.0.0.1"
        finally:
            probe.close()
        connector = Connector(asyncio.get_running_loop(), 2.0, own=own)
        try:
            await open_connection(connector, Target(host_ip, listener.port), Recorder)
            outcome = None
        except OwnAddress as err:
            outcome = err
        await asyncio.sleep(0.05)
        listener.server.close()
        return outcome, listener

    err, listener = uvloop.run(main())
    # Connected (nothing said it was ours before), then aborted before a byte was written.
    assert isinstance(err, OwnAddress) and listener.received == b""


def test_a_meshed_target_may_reach_the_own_inbound_listener_but_nothing_else():
    err, made, _ = _connect(lambda port: Target("127.0.0.1", port, mesh_port=8080), listener_name="inbound")
    assert err is None and made
    err, made, _ = _connect(lambda port: Target("127.0.0.1", port, mesh_port=8080), listener_name="admin")
    assert isinstance(err, OwnAddress) and not made
    err, made, _ = _connect(lambda port: Target("127.0.0.1", port), listener_name="inbound")
    assert isinstance(err, OwnAddress) and not made


def test_other_destinations_connect_normally():
    async def main():
        listener = await Listener().start()
        own = OwnAddresses(frozenset())
        own.add("admin", "0.0.0.0", listener.port + 1 if listener.port < 65535 else 1)
        connector = Connector(asyncio.get_running_loop(), 2.0, own=own)
        protocol = Recorder()
        await open_connection(connector, Target("localhost", listener.port), lambda: protocol)
        await asyncio.sleep(0.05)
        listener.server.close()
        return protocol.made, listener.accepted

    made, accepted = uvloop.run(main())
    assert made and accepted == 1


def test_a_refused_connection_is_still_a_connection_refused_error():
    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # nobody listens there now
        connector = Connector(asyncio.get_running_loop(), 2.0, own=OwnAddresses(frozenset()))
        with pytest.raises(ConnectionRefusedError):
            await open_connection(connector, Target("127.0.0.1", port), Recorder)

    uvloop.run(main())


def test_a_literal_is_connected_to_as_the_address_it_spells_and_keeps_its_scope():
    assert literal_sockaddr("127.1", 80, parse_ip("127.1")) == (socket.AF_INET, ("127.0.0.1", 80))
    assert literal_sockaddr("[::ffff:127.0.0.1]", 80, parse_ip("::ffff:127.0.0.1")) == (socket.AF_INET,
                                                                                         ("127.0.0.1", 80))
    # fe80::1%eth0 is unreachable without its interface: the scope survives the parse.
    index = socket.if_nametoindex("lo")
    family, sockaddr = literal_sockaddr(f"fe80::1%{index}", 443, parse_ip(f"fe80::1%{index}"))
    assert family == socket.AF_INET6 and sockaddr[0] == "fe80::1" and sockaddr[1] == 443 and sockaddr[3] == index

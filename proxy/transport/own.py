"""The proxy's own listening addresses, and the test "would this address reach one of them?".

Nothing the relays forward may reach the proxy's own listeners (admin,
outbound, inbound, tap): that would loop through the proxy or hand its admin
endpoints to whoever can send it a request. Addresses are compared as
addresses, never as strings, so ``127.1``, ``2130706433``, ``[::ffff:127.0.0.1]``
and ``0.0.0.0`` are all the loopback address they spell. A listener bound to
a wildcard address is reached through every local address: loopback, the
unspecified address, the address the kernel picked as the connection's own
source (a connection to one of the host's addresses gets that same address as
its source, which covers the pod's IPs without a list of interfaces), and the
interfaces' addresses read once from ``/proc`` (so that a pod IP spelled as a
literal is refused before connecting, not only after).
"""

from __future__ import annotations

import ipaddress
import socket

from proxy.record import record

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LOOPBACK_V4 = ipaddress.IPv4Address("127.0.0.1")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")
# The characters of an IPv4 address in the forms inet_aton(3) accepts (127.1,
# 2130706433, 0x7f.1, 0177.0.0.1): a name with any other character is a name.
_ATON_CHARS = frozenset("0123456789abcdefxABCDEFX.")


def parse_ip(text: str) -> IPAddress | None:
    """``text`` as an IP address, in any spelling the resolver would accept as a literal; None for a name.

    Brackets and a scope id (``fe80::1%eth0``) are dropped; an IPv4-mapped
    IPv6 address is its IPv4 address.
    """
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    if not text:
        return None
    try:
        addr: IPAddress = ipaddress.ip_address(text)
    except ValueError:
        # glibc's resolver takes inet_aton's forms as literals too, so they must
        # be recognised here or they would pass as names and connect to 127.0.0.1.
        if not set(text) <= _ATON_CHARS:
            return None
        try:
            addr = ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _reached(addr: IPAddress) -> IPAddress:
    """Where a connection to ``addr`` lands: Linux sends one to the unspecified address to loopback."""
    if addr.is_unspecified:
        return _LOOPBACK_V4 if addr.version == 4 else _LOOPBACK_V6
    return addr


@record
class Listener:
    """One listening socket of this proxy."""

    name: str  # admin, outbound, inbound, tap
    addr: IPAddress  # the bound address, normalized
    port: int

    @property
    def wildcard(self) -> bool:
        return self.addr.is_unspecified

    def __str__(self) -> str:
        return f"{self.name} [{self.addr}]:{self.port}" if self.addr.version == 6 else \
            f"{self.name} {self.addr}:{self.port}"


class OwnAddresses:
    """The listeners this proxy has bound, filled as each one binds (``add_server``)."""

    def __init__(self, interfaces: frozenset[IPAddress] | None = None) -> None:
        self.listeners: list[Listener] = []
        # Every port some listener of ours holds: most addresses fail this one set lookup.
        self.ports: frozenset[int] = frozenset()
        self.interfaces = local_interface_addresses() if interfaces is None else interfaces

    def add(self, name: str, host: str, port: int) -> None:
        addr = parse_ip(host)
        if addr is None:
            raise ValueError(f"listener {name} bound to a non-IP address {host!r}")
        self.listeners.append(Listener(name, addr, port))
        self.ports = self.ports | {port}

    def add_server(self, name: str, server) -> None:
        """Record every socket of a bound ``asyncio`` server under ``name``."""
        for sock in server.sockets:
            host, port = sock.getsockname()[:2]
            self.add(name, host, port)

    def refresh_interfaces(self) -> None:
        self.interfaces = local_interface_addresses()

    def listener(self, ip: str | IPAddress | None, port: int,
                 local_ip: str | IPAddress | None = None) -> Listener | None:
        """The listener of ours that a connection to ``ip:port`` reaches, or None.

        ``local_ip`` is the connection's own source address, when connected:
        equal to the peer, the peer is this host whatever its interfaces.
        """
        if port not in self.ports or ip is None:
            return None
        peer = ip if not isinstance(ip, str) else parse_ip(ip)
        if peer is None:
            return None
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
            peer = peer.ipv4_mapped
        peer = _reached(peer)
        local = local_ip if not isinstance(local_ip, str) else parse_ip(local_ip)
        for own in self.listeners:
            if own.port != port:
                continue
            if own.wildcard:
                if peer.is_loopback or peer == local or peer in self.interfaces:
                    return own
            elif _reached(own.addr) == peer:
                return own
        return None

    def is_own(self, peer_ip: str | IPAddress | None, peer_port: int, local_ip: str | IPAddress | None = None) -> bool:
        return self.listener(peer_ip, peer_port, local_ip) is not None

    def describe(self) -> str:
        return ", ".join(str(item) for item in self.listeners)


def local_interface_addresses() -> frozenset[IPAddress]:
    """This network namespace's interface addresses, best effort (Linux ``/proc``; empty elsewhere).

    IPv4 from the kernel's local routing table (``/32 host LOCAL`` entries of
    ``/proc/net/fib_trie``), IPv6 from ``/proc/net/if_inet6``. Read once per
    call, a few kilobytes: cheap enough at start and at a slow refresh.
    """
    found: set[IPAddress] = set()
    try:
        with open("/proc/net/fib_trie", encoding="ascii", errors="replace") as fh:
            last = None
            for line in fh:
                text = line.strip()
                if text.startswith("|--"):
                    last = text[3:].strip()
                elif text.startswith("/32 host LOCAL") and last is not None:
                    try:
                        found.add(ipaddress.IPv4Address(last))
                    except ValueError:
                        pass
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6", encoding="ascii", errors="replace") as fh:
            for line in fh:
                hexaddr = line.split(" ", 1)[0].strip()
                if len(hexaddr) == 32:
                    try:
                        found.add(ipaddress.IPv6Address(int(hexaddr, 16)))
                    except ValueError:
                        pass
    except OSError:
        pass
    return frozenset(found)

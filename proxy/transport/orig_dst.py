"""Where a redirected connection was really going: ``SO_ORIGINAL_DST`` for IPv4 and IPv6.

iptables ``REDIRECT`` rewrites the destination to the proxy's listener;
netfilter keeps the original in conntrack, and this socket option reads it
back. Without a redirect (or without conntrack) the kernel answers ENOENT or
returns the listener's own address: both mean "no original destination".
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

Addr = tuple[str, int]
getsockopt_bytes: Callable[[int, int, int, int], bytes | None] | None
accepted_addresses: Callable[[int, bool], tuple[Addr, Addr | None, Addr | None] | None] | None
try:
    from proxy.transport.sockopt import accepted_addresses, getsockopt_bytes
except ImportError:  # extensions not built: the socket object's own methods
    getsockopt_bytes = accepted_addresses = None

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)


def decode_sockaddr(raw: bytes) -> tuple[str, int] | None:
    """Decode a ``sockaddr_in`` / ``sockaddr_in6`` as returned by the kernel."""
    if len(raw) < 8:
        return None
    family = struct.unpack_from("=H", raw, 0)[0]
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    return None


def _unmap(host: str) -> str:
    """``::ffff:10.0.0.1`` -> ``10.0.0.1``: IPv4 clients of a dual-stack listener."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def _query(sock, family: int) -> bytes | None:
    if family == socket.AF_INET6:
        level, option, size = SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28
    else:
        level, option, size = socket.SOL_IP, SO_ORIGINAL_DST, 16
    try:
        if getsockopt_bytes is not None:
            # One system call on the descriptor: uvloop's pseudo-socket would
            # build a Python socket object for every accepted connection.
            return getsockopt_bytes(sock.fileno(), level, option, size)
        return sock.getsockopt(level, option, size)
    except (OSError, ValueError):
        return None


def original_dst(sock, local: tuple[str, int] | None = None) -> tuple[str, int] | None:
    """The original destination of an accepted socket, or None when it was not redirected.

    ``local``: the socket's own address when the caller already has it.
    """
    if local is not None:
        # The address already says the family (asking uvloop's pseudo-socket costs more).
        family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
    else:
        try:
            family = sock.family
        except AttributeError:
            return None
    raw = _query(sock, family)
    if raw is None and family == socket.AF_INET6:
        # An IPv4 connection accepted by a dual-stack socket is tracked by
        # the IPv4 conntrack table: ask that one.
        raw = _query(sock, socket.AF_INET)
    dst = decode_sockaddr(raw) if raw is not None else None
    if dst is None:
        return None
    if local is None:
        try:
            local = sock.getsockname()[:2]
        except OSError:
            return dst
    if (_unmap(dst[0]), dst[1]) == (_unmap(local[0]), local[1]):
        return None  # addressed to the listener itself
    return dst


def connection_addresses(transport, listener: Addr | None) -> tuple[Addr, Addr, Addr | None]:
    """An accepted connection's client, local address and original destination (None: not redirected).

    ``listener``: the listening socket's own address when it is bound to one (not a wildcard): every
    connection it accepts has that local address, so the kernel is not asked for it. Read from the
    descriptor in one system call each when the extensions are built; through uvloop's
    pseudo-socket (a Python socket object per question) otherwise.
    """
    sock = transport.get_extra_info("socket")
    if accepted_addresses is not None and sock is not None:
        try:
            found = accepted_addresses(sock.fileno(), listener is None)
        except (OSError, ValueError):
            found = None
        if found is not None:
            client, local, dst = found
            if local is None:
                assert listener is not None
                local = listener
                if dst is not None and (_unmap(dst[0]), dst[1]) == (_unmap(local[0]), local[1]):
                    dst = None  # addressed to the listener itself
            return client, local, dst
    client = transport.get_extra_info("peername") or ("", 0)
    local = transport.get_extra_info("sockname") or ("", 0)
    return client[:2], local[:2], original_dst(sock, local[:2]) if sock is not None else None


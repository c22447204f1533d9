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
original_destination: Callable[[int, bool], Addr | None] | None
try:
    from proxy.transport.sockopt import getsockopt_bytes, original_destination
except ImportError:  # extensions not built: the socket object's own getsockopt
    getsockopt_bytes = original_destination = None

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

    uvloop reads the client's and the local address when it accepts (``get_extra_info`` converts
    what it saved, no system call); ``listener``, the listening socket's own address when it is
    bound to one, is every connection's local address, so not even that conversion is needed. The
    original destination is one ``getsockopt`` on the descriptor, decoded in C where compiled.
    """
    client = transport.get_extra_info("peername") or ("", 0)
    local = listener if listener is not None else (transport.get_extra_info("sockname") or ("", 0))
    sock = transport.get_extra_info("socket")
    if sock is None:
        return client[:2], local[:2], None
    if original_destination is None:
        return client[:2], local[:2], original_dst(sock, local[:2])
    try:
        dst = original_destination(sock.fileno(), ":" in local[0])
    except (OSError, ValueError):
        dst = None
    if dst is not None and (_unmap(dst[0]), dst[1]) == (_unmap(local[0]), local[1]):
        dst = None  # addressed to the listener itself
    return client[:2], local[:2], dst

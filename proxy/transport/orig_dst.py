"""Where a redirected connection was really going: ``SO_ORIGINAL_DST`` for IPv4 and IPv6.

iptables ``REDIRECT`` rewrites the destination to the proxy's listener;
netfilter keeps the original in conntrack, and this socket option reads it
back. Without a redirect (or without conntrack) the kernel answers ENOENT or
returns the listener's own address: both mean "no original destination".
"""

from __future__ import annotations

import ipaddress
import socket
import struct

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
        return str(ipaddress.IPv4Address(raw[4:8])), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        return str(ipaddress.IPv6Address(raw[8:24])), port
    return None


def _unmap(host: str) -> str:
    """``::ffff:10.0.0.1`` -> ``10.0.0.1``: IPv4 clients of a dual-stack listener."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def _query(sock, family: int) -> bytes | None:
    try:
        if family == socket.AF_INET6:
            return sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        return sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None


def original_dst(sock) -> tuple[str, int] | None:
    """The original destination of an accepted socket, or None when it was not redirected."""
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
    try:
        local = sock.getsockname()[:2]
    except OSError:
        return dst
    if (_unmap(dst[0]), dst[1]) == (_unmap(local[0]), local[1]):
        return None  # addressed to the listener itself
    return dst

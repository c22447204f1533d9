"""The connection header a proxy sends first to a peer proxy: which app port and session protocol the connection is for.

A meshed connection is addressed to the peer proxy's inbound port, not to the
app, so the receiving proxy cannot learn the target from the socket (iptables
leaves the proxy's own ports alone). The client proxy therefore starts every
connection to a peer with this header (Linkerd's opaque-transport idea), and
the inbound side reads it before protocol detection. Sans-IO.

With mutual TLS the header travels inside the TLS session, announced by the
ALPN protocol ``transport.l5d.io/v1`` (then it is required). When a peer is
reached at the app's own port (its iptables redirect names the port), no
header is sent: ``Target.needs_header``.

Wire format (all integers big-endian)::

    offset  size  field
    0       4     magic  b"\\x00MPX"  (no HTTP method, TLS record or h2 preface
                                      starts with NUL then 'M')
    4       1     version            1
    5       2     port               the app port on the receiving side
    7       1     protocol           1 = HTTP (an HTTP/2 session follows),
                                     2 = opaque (raw bytes follow),
                                     3 = HTTP/1 (an HTTP/1 connection follows: an
                                         Upgrade such as WebSocket, which cannot
                                         travel as a stream of the HTTP/2 session)
    8       1     name length N      0..255
    9       N     name               the logical destination (ASCII), for logs
"""

from __future__ import annotations

from proxy.record import record

MAGIC = b"\x00MPX"
VERSION = 1
FIXED = 9
PROTO_HTTP = 1
PROTO_OPAQUE = 2
PROTO_HTTP1 = 3


class NeedMore:
    """Not enough bytes yet to tell or to decode."""

    def __repr__(self) -> str:
        return "NEED_MORE"


class NotHeader:
    """The bytes do not start with a transport header."""

    def __repr__(self) -> str:
        return "NOT_HEADER"


NEED_MORE = NeedMore()
NOT_HEADER = NotHeader()


class HeaderError(ValueError):
    """Starts like a transport header but is malformed (the peer is broken or hostile)."""


@record
class TransportHeader:
    port: int
    protocol: int
    name: str
    size: int  # bytes it took on the wire

    def __init__(self, port: int, protocol: int, name: str, size: int) -> None:  # one per mesh connection
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "protocol", protocol)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "size", size)


def encode(port: int, protocol: int, name: str = "") -> bytes:
    if not 0 < port <= 65535:
        raise ValueError("port must be 1-65535")
    if protocol not in (PROTO_HTTP, PROTO_OPAQUE, PROTO_HTTP1):
        raise ValueError("unknown protocol")
    raw_name = name.encode("ascii", "replace")[:255]
    return MAGIC + bytes((VERSION,)) + port.to_bytes(2, "big") + bytes((protocol, len(raw_name))) + raw_name


def decode(data: bytes) -> TransportHeader | NeedMore | NotHeader:
    """A header at the start of ``data``; NEED_MORE, NOT_HEADER, or raises HeaderError."""
    head = data[: len(MAGIC)]
    if not MAGIC.startswith(head):
        return NOT_HEADER
    if len(data) < FIXED:
        return NEED_MORE
    if data[4] != VERSION:
        raise HeaderError(f"unsupported transport header version {data[4]}")
    port = int.from_bytes(data[5:7], "big")
    protocol = data[7]
    if port == 0:
        raise HeaderError("transport header names port 0")
    if protocol not in (PROTO_HTTP, PROTO_OPAQUE, PROTO_HTTP1):
        raise HeaderError(f"unknown transport protocol {protocol}")
    size = FIXED + data[8]
    if len(data) < size:
        return NEED_MORE
    name = data[FIXED:size].decode("ascii", "replace")
    return TransportHeader(port, protocol, name, size)

"""Mesh TLS on the wire: contexts built from PEM held in memory, the server
handshake on an already-accepted connection, and the peer's verified name.

Both directions speak TLS 1.3 only and verify the peer against the trust
anchors. The client names the identity it expects as SNI and checks it
against the server certificate's DNS SAN; the server asks for a client
certificate but does not require one, so that authorization policy (not the
handshake) decides what an unauthenticated client may do.

ALPN says what the session carries (Linkerd's scheme):
``transport.l5d.io/v1``: a transport header (proxy/core/transport_header.py)
comes first, naming the app port and the protocol; ``h2``: HTTP/2 for the
port the connection was addressed to (redirected here by iptables).

Sessions are resumed between proxies (proxy/transport/sessions.py): the
server issues one ticket per handshake, the client keeps them per peer,
identity and ALPN, and each certificate's contexts come with a cache of their own.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from typing import cast

from proxy.record import record
from proxy.transport import sessions

TRANSPORT_ALPN = "transport.l5d.io/v1"
H2_ALPN = "h2"


@record
class MeshTls:
    """The contexts of one certificate: new connections use whichever set is current."""

    name: str
    server: ssl.SSLContext
    client_h2: ssl.SSLContext  # HTTP/2 to a port the peer intercepts (no transport header)
    client_transport: ssl.SSLContext  # a transport header first: the peer's inbound port is addressed
    # (chain, key, anchors) PEM, for the rare client that needs other ALPN (``client``)
    pems: tuple[bytes, bytes, bytes] = (b"", b"", b"")
    # Sessions the client contexts resume; None: resumption is off. Never outlives this certificate.
    sessions: sessions.SessionCache | None = None

    def __repr__(self) -> str:  # not the key (in pems) nor the sessions
        return f"MeshTls(name={self.name!r})"

    def client(self, alpn: list[str]) -> ssl.SSLContext:
        """A new client context of this certificate offering ``alpn``; built on demand (each costs memory), so
        the caller keeps it for as long as this certificate is current."""
        ctx = _context(ssl.PROTOCOL_TLS_CLIENT, *self.pems)
        ctx.set_alpn_protocols(alpn)
        return ctx


def build(name: str, chain_pem: bytes, key_pem: bytes, anchors_pem: bytes, session_cache: int = 0) -> MeshTls:
    """Contexts for ``name``'s certificate chain and key, resuming up to ``session_cache``
    peers' sessions (0: none issued or resumed); raises ssl.SSLError or ValueError."""
    server = _context(ssl.PROTOCOL_TLS_SERVER, chain_pem, key_pem, anchors_pem)
    # Optional, not required: a TLS client without a certificate is still
    # admitted to the handshake and then judged by the authorization policy.
    server.verify_mode = ssl.CERT_OPTIONAL
    server.set_alpn_protocols([TRANSPORT_ALPN, H2_ALPN])
    # One ticket per handshake: a mesh client reuses it for every new
    # connection (sessions.py), so a second would be work for nothing. The
    # ticket keys are this context's own: a new certificate voids old tickets.
    server.num_tickets = 1 if session_cache > 0 else 0
    client_h2 = _context(ssl.PROTOCOL_TLS_CLIENT, chain_pem, key_pem, anchors_pem)
    client_h2.set_alpn_protocols([H2_ALPN])
    client_transport = _context(ssl.PROTOCOL_TLS_CLIENT, chain_pem, key_pem, anchors_pem)
    client_transport.set_alpn_protocols([TRANSPORT_ALPN])
    cache = sessions.SessionCache(session_cache) if session_cache > 0 else None
    return MeshTls(name, server, client_h2, client_transport, (chain_pem, key_pem, anchors_pem), cache)


def _context(protocol: int, chain_pem: bytes, key_pem: bytes, anchors_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)  # the client side checks the hostname and requires a certificate
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=anchors_pem.decode("ascii"))
    _load_chain(ctx, chain_pem, key_pem)
    return ctx


def _load_chain(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    # SSLContext reads keys only from files; an anonymous in-memory file keeps
    # the private key off every disk and out of every directory listing.
    fd = os.memfd_create("meshproxy-identity", os.MFD_CLOEXEC)
    try:
        data = memoryview(key_pem + b"\n" + chain_pem)
        while data:
            data = data[os.write(fd, data):]
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def peer_identity(ssl_object: ssl.SSLObject | None) -> str | None:
    """The verified peer certificate's first DNS SAN (its mesh identity), or None."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()  # {} when the peer sent none; only verified certificates appear
    sans = cast("tuple[tuple[str, str], ...]", (cert or {}).get("subjectAltName", ()))
    for kind, value in sans:
        if kind == "DNS":
            return value
    return None


def serve_handshake(loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, already_read: bytes,
                    app: asyncio.Protocol, ctx: ssl.SSLContext, timeout: float,
                    done: Callable[[BaseException | None], None]) -> None:
    """Run the server side of TLS on ``transport``, whose first bytes (the
    ClientHello the detector read) are ``already_read``.

    ``loop.start_tls`` cannot be used: it would start from the socket, and
    the ClientHello has already been taken out of it; nor could the loop's
    TLS half-close. A ``TlsLayer`` (proxy/transport/meshtls.py) is installed
    and handed those bytes first. ``app`` gets ``connection_made`` with the
    TLS transport once the handshake succeeds; ``done`` is called with None
    or the handshake's error.
    """
    from proxy.transport.meshtls import TlsLayer

    layer = TlsLayer(loop, ctx, True, None, app, timeout, done, sessions.SERVER)
    transport.set_protocol(cast(asyncio.Protocol, layer))  # compiled: a protocol by shape
    # The ClientHello goes in before the first handshake step: a step without it could only
    # raise "want read" (an exception made and caught, about 37,000 instructions per handshake).
    layer.incoming.write(already_read)
    layer.connection_made(transport)


async def client_handshake(loop: asyncio.AbstractEventLoop, sock, factory, ctx: ssl.SSLContext,
                           server_hostname: str, timeout: float, resume: sessions.ClientResumption | None = None):
    """Connect mesh TLS over the connected ``sock``: (TLS transport, protocol) once the handshake is done;
    ``resume`` offers a cached session of ``ctx``'s (and keeps the next)."""
    from proxy.transport.meshtls import TlsLayer

    app = factory()
    waiter = loop.create_future()

    def done(err: BaseException | None) -> None:
        if not waiter.done():
            if err is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(err)

    layer = TlsLayer(loop, ctx, False, server_hostname, app, timeout, done, resume)
    transport, _ = await loop.create_connection(lambda: cast(asyncio.Protocol, layer), sock=sock)
    try:
        await waiter
    except BaseException:
        transport.abort()
        raise
    return layer.transport, app

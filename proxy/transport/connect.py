"""Opening upstream connections: one task per new connection, bounded by the connect timeout.

The relay's pools call ``Connector`` with a ready protocol object; the
connector resolves and connects, and reports a failure back to the protocol
(``connect_failed``) instead of raising into the relay's callbacks.

A target that names a peer identity gets mutual TLS when this proxy has an
identity (the handshake is part of connecting, under the same time limit,
resuming the session of an earlier connection to the same peer address and
identity when there is one); everything else is a plain connection. TLS that an app originates itself
is never touched: it reaches the connector as opaque bytes.

Every upstream connection of the proxy is made here, so this is where the
proxy refuses to connect to itself (``proxy/transport/own.py``): an IP
literal naming one of its listeners is refused at once, a name once resolved
(before connecting), and every connected socket's addresses are checked
before a byte is written (the pod's own IPs, whatever the interface list
said). The socket is therefore connected here and handed to the loop only
once it passed.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

from proxy.errors import IdentityError, OwnAddress, ProxyError, tls_reason
from proxy.transport.own import OwnAddresses, parse_ip
from proxy.transport.sessions import ClientResumption
from proxy.transport.tls import H2_ALPN, TRANSPORT_ALPN, MeshTls, client_handshake

# Discovery may send a meshed request to this very proxy's inbound listener
# (a pod calling its own service, as Linkerd allows); no target may reach the others.
_MESHED_MAY_REACH = frozenset({"inbound"})


class Connector:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, identity=None, tls_stats=None,
                 own: OwnAddresses | None = None) -> None:
        self.loop = loop
        self.timeout = timeout
        self.identity = identity  # LocalIdentity or None
        self.tls_stats = tls_stats
        # The proxy's own listeners; None only in tests of the connector alone.
        self.own = own
        self.pending: set[asyncio.Task] = set()

    def __call__(self, target, protocol) -> None:
        task = self.loop.create_task(self._connect(target, protocol))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _connect(self, target, protocol) -> None:
        try:
            await open_connection(self, target, lambda: protocol)
        except (OSError, TimeoutError, ProxyError) as exc:
            protocol.connect_failed(exc)
        except asyncio.CancelledError:
            protocol.connect_failed(TimeoutError("cancelled"))
            raise

    def tls_for(self, target) -> MeshTls | None:
        """The certificate's contexts for ``target``: None for plaintext; raises IdentityError when
        TLS is due but this proxy has no certificate yet."""
        if target.identity is None or self.identity is None:
            return None
        mesh = self.identity.tls
        if mesh is None:
            raise IdentityError("no identity certificate yet: cannot open mutual TLS to a meshed peer")
        return mesh

    def refuse_own(self, target, peer, local=None) -> None:
        """Raise OwnAddress when connecting to ``peer`` ((ip, port)) reaches one of this proxy's listeners."""
        own = self.own
        if own is None or peer[1] not in own.ports:
            return
        hit = own.listener(peer[0], peer[1], local)
        if hit is None or (target.mesh_port != 0 and hit.name in _MESHED_MAY_REACH):
            return
        raise OwnAddress(f"destination {target} is this proxy's own {hit.name} listener")


async def open_connection(connector: Connector, target, factory):
    """Connect to ``target`` (TLS when it is a meshed peer), within the connect timeout."""
    mesh = connector.tls_for(target)  # kept: a renewal while connecting must not mix contexts and sessions
    literal = parse_ip(target.host)
    if literal is not None:
        connector.refuse_own(target, (literal, target.port))
    async with asyncio.timeout(connector.timeout):
        sock = await _connected_socket(connector, target, literal)
        try:
            peer = sock.getpeername()
            if connector.own is not None and peer[1] in connector.own.ports:
                connector.refuse_own(target, peer, sock.getsockname()[0])
        except BaseException:
            sock.close()  # still ours: the loop never saw it
            raise
        # From here the loop owns the socket (and closes it on failure).
        if mesh is None:
            return await connector.loop.create_connection(factory, sock=sock)
        ctx, alpn = (mesh.client_transport, TRANSPORT_ALPN) if target.needs_header else (mesh.client_h2, H2_ALPN)
        resume = None if mesh.sessions is None else ClientResumption(mesh.sessions, peer, target.identity, alpn)
        try:
            # Mesh TLS is ours (proxy/transport/meshtls.py): it can half-close.
            result = await client_handshake(connector.loop, sock, factory, ctx, target.identity, connector.timeout,
                                            resume)
        except ssl.SSLError as err:
            if connector.tls_stats is not None:
                connector.tls_stats.failed(tls_reason(err))
            raise
    if connector.tls_stats is not None:
        connector.tls_stats.connected(target.identity, result[0].get_extra_info("ssl_object").session_reused)
    return result


async def _connected_socket(connector: Connector, target, literal) -> socket.socket:
    """A connected non-blocking TCP socket to ``target``: each resolved address in turn, first success wins.

    An IP literal is connected to as the address it spells (``127.1`` is
    127.0.0.1), so what was checked is what is reached. A resolved address
    is checked before connecting to it: a name for the proxy itself is
    refused without even a connection to its listener.
    """
    loop = connector.loop
    if literal is not None:
        infos = [literal_sockaddr(target.host, target.port, literal)]
    else:
        resolved = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        infos = [(family, sockaddr) for family, _, _, _, sockaddr in resolved]
        if not infos:
            raise OSError(f"{target.host} resolved to no address")
    errors: list[OSError] = []
    for family, sockaddr in infos:
        connector.refuse_own(target, sockaddr)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await sock_connect(loop, sock, sockaddr)
            return sock
        except OSError as err:
            sock.close()
            errors.append(err)
        except BaseException:
            sock.close()
            raise
    # The first address's error says most (a refused connection stays ConnectionRefusedError).
    raise errors[0]


async def sock_connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, sockaddr: tuple) -> None:
    """Connect the non-blocking ``sock`` to the numeric ``sockaddr``, waiting for writability on the loop.

    Not ``loop.sock_connect``: uvloop's resolves even a numeric address through
    libuv's thread pool, which costs a thread hop per connection and starts four
    threads (each with its own malloc arena) at the proxy's first connection.
    """
    err = sock.connect_ex(sockaddr)
    if err == 0:
        return
    if err != errno.EINPROGRESS:
        raise OSError(err, f"Connect call failed {sockaddr}")
    writable = loop.create_future()

    def ready() -> None:
        if not writable.done():
            writable.set_result(None)

    fd = sock.fileno()
    loop.add_writer(fd, ready)
    try:
        await writable
    finally:
        loop.remove_writer(fd)
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, f"Connect call failed {sockaddr}")  # ECONNREFUSED: a ConnectionRefusedError


def literal_sockaddr(host: str, port: int, literal) -> tuple[int, tuple]:
    """(family, sockaddr) for an IP literal: the address it spells, and the scope of a scoped IPv6 one."""
    if literal.version == 6 and "%" in host:
        # fe80::1%eth0: the scope names the interface, without it the address is unreachable.
        numeric = socket.getaddrinfo(host.strip("[]"), port, socket.AF_INET6, socket.SOCK_STREAM, 0,
                                     socket.AI_NUMERICHOST)
        return socket.AF_INET6, numeric[0][4]
    return (socket.AF_INET if literal.version == 4 else socket.AF_INET6), (str(literal), port)

"""Frozen address types: where a connection came from, where it was going, where a request goes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request or connection is sent. Hashable by address: it keys connection pools.

    ``via_connect`` marks a target named by a ``CONNECT host:port`` request that
    the proxy itself must tunnel (as opposed to a CONNECT forwarded elsewhere).
    ``service`` and ``endpoint`` are set when a balancer picked this target: the
    relay settles every pick through ``service.settle`` (they take no part in
    equality, so balanced and passthrough traffic to one address share a pool).
    """

    host: str
    port: int
    via_connect: bool = False
    # Non-zero: host:port is a peer proxy's inbound listener and this is the
    # app port behind it (sent in the transport header; part of the pool key).
    mesh_port: int = 0
    # The peer proxy's identity, when discovery named one: the connection is
    # mutual TLS and the server must prove this name (part of the pool key).
    identity: str | None = None
    # Discovery's protocol hint for the endpoint: "http1", "h2", "opaque" or None (detect).
    protocol: str | None = field(default=None, compare=False)
    service: object = field(default=None, compare=False, hash=False, repr=False)
    endpoint: object = field(default=None, compare=False, hash=False, repr=False)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def needs_header(self) -> bool:
        """A peer proxy's inbound port is addressed directly: a transport header must name the app port.

        When the app port itself is addressed, the peer's iptables redirect
        tells its proxy the port (SO_ORIGINAL_DST) and no header is sent.
        """
        return self.mesh_port != 0 and self.mesh_port != self.port


@dataclass(frozen=True, slots=True)
class ConnMeta:
    """What is known about an accepted connection before its first byte."""

    direction: str
    client: tuple[str, int]
    local: tuple[str, int]
    orig_dst: tuple[str, int] | None  # None: addressed to the listener itself
    # Mesh TLS terminated by this proxy, and the client's verified identity
    # (None: no client certificate, or plaintext).
    tls: bool = False
    client_id: str | None = None
    # Inbound: the connection's authorization (proxy/inbound/authz.py), read per request.
    authz: object = field(default=None, compare=False, hash=False, repr=False)


def parse_authority(value: bytes, default_port: int) -> Target | None:
    """``host``, ``host:port``, ``[v6]:port`` -> Target; None when malformed."""
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if not text or any(c in text for c in " /\\@?#"):
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
        if ":" in port_text:
            return None
    if not host:
        return None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            return None
        port = int(port_text)
    else:
        port = default_port
    return Target(host.lower(), port)

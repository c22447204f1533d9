"""Frozen address types: where a connection came from, where it was going, where a request goes."""

from __future__ import annotations

import cython

from proxy.core.target import Target
from proxy.record import FrozenError

__all__ = ["TRANSPORT_ROUTE", "ConnMeta", "Target", "accepted_meta", "authorized_meta", "parse_authority",
           "redirected_meta", "sni_meta", "tls_meta"]

# The ``stats_cache`` key of an outbound TCP or TLS connection's route counters (``close(unexpected)``),
# set by the egress policy when it routes the connection, counted by the relay when the connection ends.
TRANSPORT_ROUTE = "transport_route"


class ConnMeta:
    """What is known about an accepted connection before its first byte.

    Frozen, compared and hashed by its first seven fields. Not a dataclass: this is the last one an idle
    proxy would build, and ``dataclasses`` (with ``copy``) costs about 340 KiB there. Made per connection
    by ``accepted_meta`` and its copies by the functions after it, at a C call per field.
    """

    __slots__ = ("direction", "client", "local", "orig_dst", "tls", "client_id", "sni", "authz", "stats_cache")

    direction: str
    client: tuple[str, int]
    local: tuple[str, int]
    orig_dst: tuple[str, int] | None  # None: addressed to the listener itself
    # Mesh TLS terminated by this proxy, and the client's verified identity
    # (None: no client certificate, or plaintext).
    tls: bool
    client_id: str | None
    # Outbound TLS the proxy relays without terminating: the ClientHello's SNI (egress TLSRoutes match it).
    sni: str | None
    # Inbound: the connection's authorization (proxy/inbound/authz.py), read per request;
    # not compared, hashed or shown.
    authz: object
    # The metric label sets of this connection found once: inbound, its requests' per
    # Host (proxy/telemetry/labels.py); outbound, its TCP/TLS route's (TRANSPORT_ROUTE).
    # Not copied by the functions below (unless authorized_meta is given one): a changed meta
    # (TLS, authorization) has other labels.
    stats_cache: dict

    def __init__(self, direction: str, client: tuple[str, int], local: tuple[str, int],
                 orig_dst: tuple[str, int] | None, tls: bool = False, client_id: str | None = None,
                 sni: str | None = None, authz: object = None) -> None:
        _fill(self, direction, client, local, orig_dst, tls, client_id, sni, authz, {})

    def _key(self) -> tuple:
        return (self.direction, self.client, self.local, self.orig_dst, self.tls, self.client_id, self.sni)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _COMPARED)
        return f"ConnMeta({shown})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenError(f"cannot delete field {name!r}")


def accepted_meta(direction: str, client: tuple[str, int], local: tuple[str, int],
                  orig_dst: tuple[str, int] | None) -> ConnMeta:
    """``ConnMeta(direction, client, local, orig_dst)``, made once per accepted connection.

    Without the Python calls of ``__init__`` (through ``type.__call__``): compiled, ``_fill`` is a C
    function, and ``_set`` the C function behind ``object.__setattr__`` (both declared in addr.pxd).
    """
    return _fill(_new(ConnMeta), direction, client, local, orig_dst, False, None, None, None, {})


def authorized_meta(meta: ConnMeta, authz: object, stats_cache: dict | None = None) -> ConnMeta:
    """``meta`` with ``authz`` (an inbound HTTP connection's, once per connection) and a new empty
    ``stats_cache`` unless one is given (shared by connections whose label sets are the same: ``ConnGrants``)."""
    return _fill(_new(ConnMeta), meta.direction, meta.client, meta.local, meta.orig_dst, meta.tls, meta.client_id,
                 meta.sni, authz, {} if stats_cache is None else stats_cache)


def tls_meta(meta: ConnMeta, client_id: str | None) -> ConnMeta:
    """``meta`` with ``tls`` and ``client_id``: the decrypted side of a mesh TLS connection this proxy
    terminated (once per handshake)."""
    return _fill(_new(ConnMeta), meta.direction, meta.client, meta.local, meta.orig_dst, True, client_id, meta.sni,
                 meta.authz, {})


def redirected_meta(meta: ConnMeta, orig_dst: tuple[str, int]) -> ConnMeta:
    """``meta`` with ``orig_dst``: the app port a peer's transport header named."""
    return _fill(_new(ConnMeta), meta.direction, meta.client, meta.local, orig_dst, meta.tls, meta.client_id,
                 meta.sni, meta.authz, {})


def sni_meta(meta: ConnMeta, sni: str | None) -> ConnMeta:
    """``meta`` with ``sni``: the ClientHello of an outbound TLS connection relayed untouched."""
    return _fill(_new(ConnMeta), meta.direction, meta.client, meta.local, meta.orig_dst, meta.tls, meta.client_id,
                 sni, meta.authz, {})


def _fill(meta, direction, client, local, orig_dst, tls, client_id, sni, authz, stats_cache):
    """``meta`` (new, uninitialized) with every field set, past its ``__setattr__`` (unannotated: typed in
    addr.pxd)."""
    _set(meta, "direction", direction)
    _set(meta, "client", client)
    _set(meta, "local", local)
    _set(meta, "orig_dst", orig_dst)
    _set(meta, "tls", tls)
    _set(meta, "client_id", client_id)
    _set(meta, "sni", sni)
    _set(meta, "authz", authz)
    _set(meta, "stats_cache", stats_cache)
    return meta


_new = object.__new__
if not cython.compiled:
    # Compiled, ``_set`` is ``PyObject_GenericSetAttr`` (addr.pxd): what ``object.__setattr__`` calls.
    _set = object.__setattr__
# The fields compared, hashed and shown (not authz nor stats_cache).
_COMPARED = ConnMeta.__slots__[:7]

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

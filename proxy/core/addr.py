"""Frozen address types: where a connection came from, where it was going, where a request goes."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

import cython

from proxy.core.target import Target

__all__ = ["TRANSPORT_ROUTE", "ConnMeta", "Target", "accepted_meta", "authorized_meta", "parse_authority",
           "redirected_meta", "tls_meta"]

# The ``stats_cache`` key of an outbound TCP or TLS connection's route counters (``close(unexpected)``),
# set by the egress policy when it routes the connection, counted by the relay when the connection ends.
TRANSPORT_ROUTE = "transport_route"


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
    # Outbound TLS the proxy relays without terminating: the ClientHello's SNI (egress TLSRoutes match it).
    sni: str | None = None
    # Inbound: the connection's authorization (proxy/inbound/authz.py), read per request.
    authz: object = field(default=None, compare=False, hash=False, repr=False)
    # The metric label sets of this connection found once: inbound, its requests' per
    # Host (proxy/telemetry/labels.py); outbound, its TCP/TLS route's (TRANSPORT_ROUTE).
    # Not copied by ``replace``: a changed meta (TLS, authorization) has other labels.
    stats_cache: dict = field(default_factory=dict, init=False, compare=False, hash=False, repr=False)


def accepted_meta(direction: str, client: tuple[str, int], local: tuple[str, int],
                  orig_dst: tuple[str, int] | None) -> ConnMeta:
    """``ConnMeta(direction, client, local, orig_dst)``, made once per accepted connection.

    The frozen dataclass's ``__init__`` sets each of its fields through a Python call of
    ``object.__setattr__``; compiled, this calls the C function behind it (``_set``, declared in
    addr.pxd) for each slot, without a Python call: 2.9k instructions per connection (6k when each
    slot's own ``__set__`` was called).
    """
    meta = _new(ConnMeta)
    _set(meta, "direction", direction)
    _set(meta, "client", client)
    _set(meta, "local", local)
    _set(meta, "orig_dst", orig_dst)
    for name, default, factory in _DEFAULTED:
        _set(meta, name, default if factory is None else factory())
    return meta


def authorized_meta(meta: ConnMeta, authz: object, stats_cache: dict | None = None) -> ConnMeta:
    """``dataclasses.replace(meta, authz=authz)`` (an inbound HTTP connection's, once per
    connection) at ``accepted_meta``'s price; like ``replace``, with a new empty ``stats_cache``
    unless one is given (shared by connections whose label sets are the same: ``ConnGrants``)."""
    copy = _new(ConnMeta)
    for name in _COPIED:
        _set(copy, name, getattr(meta, name))
    _set(copy, "authz", authz)
    _set(copy, "stats_cache", {} if stats_cache is None else stats_cache)
    return copy


def tls_meta(meta: ConnMeta, client_id: str | None) -> ConnMeta:
    """``dataclasses.replace(meta, tls=True, client_id=client_id)``: the decrypted side of a mesh TLS
    connection this proxy terminated (once per handshake; ``replace`` costs about 25k instructions)."""
    copy = _copied(meta)
    _set(copy, "tls", True)
    _set(copy, "client_id", client_id)
    return copy


def redirected_meta(meta: ConnMeta, orig_dst: tuple[str, int]) -> ConnMeta:
    """``dataclasses.replace(meta, orig_dst=orig_dst)``: the app port a peer's transport header named."""
    copy = _copied(meta)
    _set(copy, "orig_dst", orig_dst)
    return copy


def _copied(meta: ConnMeta) -> ConnMeta:
    """What ``replace`` starts from: every field given to ``__init__`` (authz too), a new empty ``stats_cache``."""
    copy = _new(ConnMeta)
    for name in _COPIED:
        _set(copy, name, getattr(meta, name))
    _set(copy, "authz", meta.authz)
    _set(copy, "stats_cache", {})
    return copy


_new = object.__new__
if not cython.compiled:
    # Compiled, ``_set`` is ``PyObject_GenericSetAttr`` (addr.pxd): what ``object.__setattr__`` calls,
    # and what a frozen dataclass's own ``__init__`` uses to get past its ``__setattr__``.
    _set = object.__setattr__
# The fields after the first four, in order, from the class itself (a new field needs no change here):
# (name, default, factory), with the init=False ones (stats_cache: a new dict each).
_DEFAULTED = tuple((f.name, None if f.default is MISSING else f.default,
                    None if f.default_factory is MISSING else f.default_factory)
                   for f in fields(ConnMeta)[4:])
_COPIED = tuple(f.name for f in fields(ConnMeta) if f.init and f.name != "authz")


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

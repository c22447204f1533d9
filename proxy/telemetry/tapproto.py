"""Reads Linkerd's tap request (io.linkerd.proxy.tap.ObserveRequest), sans-IO: protobuf bytes -> limit, match, extract.

The rules are Linkerd's proxy's: a positive ``limit``; a match is required,
and every node of it must be complete (a label with key and value, a port
range within 1..65535 where a missing bound means the other, a netmask with
an address and a prefix length that fits it, a known method or scheme, a
string match that says exact or prefix); ``extract.http.headers`` asks for
the headers. Anything else is an ``InvalidTap`` carrying the message the
client gets with gRPC ``INVALID_ARGUMENT``. A hostile request cannot nest
deeper than ``MAX_DEPTH`` nor hold more than ``MAX_NODES`` match nodes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from proxy.telemetry import tap
from proxy.telemetry.pbwire import LEN, VARINT, DecodeError, fields

MAX_DEPTH = 32
MAX_NODES = 1024
_HTTP_METHOD_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class InvalidTap(ValueError):
    """The request cannot start a tap; the message says why (sent back as gRPC INVALID_ARGUMENT)."""


@dataclass(frozen=True, slots=True)
class ObserveSpec:
    limit: int
    match: tap.Match
    extract_headers: bool


def parse_observe(data: bytes) -> ObserveSpec:
    try:
        top = fields(data)
    except DecodeError as err:
        raise InvalidTap(f"malformed ObserveRequest: {err}") from None
    limit = 0
    match_bytes = None
    extract = False
    for number, wire, value in top:
        if number == 1 and wire == VARINT:
            limit = value
        elif number == 2 and wire == LEN:
            match_bytes = value
        elif number == 3 and wire == LEN:
            extract = _extract_headers(value)
    if limit == 0:
        raise InvalidTap("limit must be positive")
    if limit > 0xFFFFFFFF:
        raise InvalidTap("limit out of range")
    if match_bytes is None:
        raise InvalidTap("missing required field: match")
    budget = [MAX_NODES]
    return ObserveSpec(limit, _match(match_bytes, 0, budget), extract)


def _decode(data: bytes) -> list[tuple[int, int, int | bytes]]:
    try:
        return fields(data)
    except DecodeError as err:
        raise InvalidTap(f"malformed ObserveRequest: {err}") from None


def _oneof(data: bytes) -> tuple[int, int | bytes] | None:
    """The member a oneof holds (the last one on the wire wins, as protobuf says), or None when unset."""
    found = None
    for number, _wire, value in _decode(data):
        found = (number, value)
    return found


def _message_member(data: bytes, what: str) -> tuple[int, bytes]:
    """The member a oneof of messages holds; unset (or not a message) is Linkerd's missing field."""
    member = _oneof(data)
    if member is None or not isinstance(member[1], bytes):
        raise InvalidTap(f"missing required field: {what}")
    return member[0], member[1]


def _match(data: bytes, depth: int, budget: list[int]) -> tap.Match:
    if depth >= MAX_DEPTH:
        raise InvalidTap(f"match nested deeper than {MAX_DEPTH}")
    budget[0] -= 1
    if budget[0] < 0:
        raise InvalidTap(f"match has more than {MAX_NODES} nodes")
    member = None
    for number, wire, value in _decode(data):
        if wire == LEN and 1 <= number <= 8:
            member = (number, value)
    if member is None:
        raise InvalidTap("missing required field: match")
    number, value = member
    assert isinstance(value, bytes)
    if number in (1, 2):  # all / any: a Seq of matches (entries without a member are skipped, as Linkerd does)
        items = []
        for n, wire, item in _decode(value):
            if n == 1 and wire == LEN:
                assert isinstance(item, bytes)
                if _oneof(item) is not None:
                    items.append(_match(item, depth + 1, budget))
        return tap.MatchAll(items) if number == 1 else tap.MatchAny(items)
    if number == 3:
        return tap.MatchNot(_match(value, depth + 1, budget))
    if number in (4, 5):
        return _tcp(value, number == 5)
    if number == 6:
        return _http(value)
    return _label(value, number == 8)


def _label(data: bytes, route: bool) -> tap.Match:
    key = value = ""
    for number, wire, item in _decode(data):
        if wire == LEN and isinstance(item, bytes):
            if number == 1:
                key = _text(item)
            elif number == 2:
                value = _text(item)
    if not key or not value:
        raise InvalidTap("missing required field: label key and value")
    return tap.MatchLabel(route, key, value)


def _tcp(data: bytes, destination: bool) -> tap.Match:
    number, value = _message_member(data, "tcp match")
    if number == 3:  # PortRange
        lo = hi = 0
        for n, wire, item in _decode(value):
            if wire == VARINT and isinstance(item, int):
                if n == 1:
                    lo = item
                elif n == 2:
                    hi = item
        lo, hi = (lo or hi), (hi or lo)  # a missing bound: a single port
        if lo == 0:
            raise InvalidTap("missing required field: port range")
        if lo > 65535 or hi > 65535:
            raise InvalidTap("invalid port number")
        return tap.MatchTcp(destination, None, lo, hi)
    if number == 1:  # Netmask
        ip = None
        mask = 0
        for n, wire, item in _decode(value):
            if n == 1 and wire == LEN and isinstance(item, bytes):
                ip = _ip_address(item)
            elif n == 2 and wire == VARINT and isinstance(item, int):
                mask = item
        if ip is None or mask == 0:
            raise InvalidTap("missing required field: netmask address and length")
        try:
            network = ipaddress.ip_network(f"{ip}/{mask}", strict=False)
        except ValueError:
            raise InvalidTap("invalid network address") from None
        return tap.MatchTcp(destination, network, 0, 0)
    raise InvalidTap("missing required field: tcp match")


def _ip_address(data: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """net.IPAddress: fixed32 ipv4 (field 1) or IPv6 {fixed64 first, fixed64 last} (field 2)."""
    member = _oneof(data)
    if member is None:
        return None
    number, value = member
    if number == 1 and isinstance(value, int):
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if number == 2 and isinstance(value, bytes):
        first = last = 0
        for n, _wire, item in _decode(value):
            if isinstance(item, int):
                if n == 1:
                    first = item
                elif n == 2:
                    last = item
        return ipaddress.IPv6Address((first << 64) | last)
    return None


def _http(data: bytes) -> tap.Match:
    number, value = _message_member(data, "http match")
    if number == 1:
        return tap.MatchScheme(_registered(value, tap.SCHEME_NAMES, "request scheme").lower())
    if number == 3:
        method = _registered(value, tap.METHOD_NAMES, "http method")
        if not method or len(method) > 15 or not set(method.encode("latin-1")) <= _HTTP_METHOD_TOKEN:
            raise InvalidTap("invalid http method")
        return tap.MatchMethod(method)
    string = _oneof(value)
    if string is None or string[0] not in (1, 2) or not isinstance(string[1], bytes):
        raise InvalidTap("missing required field: string match")
    text = _text(string[1])
    field = 0 if number == 2 else 1
    return tap.MatchString(field, text, "") if string[0] == 1 else tap.MatchString(field, None, text)


def _registered(data: bytes, names: dict[int, str], what: str) -> str:
    """http_types.HttpMethod or Scheme: a registered enum value (field 1) or any other name (field 2)."""
    member = _oneof(data)
    if member is None:
        raise InvalidTap(f"missing required field: {what}")
    number, value = member
    if number == 1 and isinstance(value, int):
        name = names.get(value)
        if name is None:
            raise InvalidTap(f"invalid {what}")
        return name
    if number == 2 and isinstance(value, bytes):
        return _text(value)
    raise InvalidTap(f"invalid {what}")


def _extract_headers(data: bytes) -> bool:
    """Extract.http.headers is set."""
    member = _oneof(data)
    if member is None or member[0] != 1 or not isinstance(member[1], bytes):
        return False
    inner = _oneof(member[1])
    return inner is not None and inner[0] == 1


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidTap("a string field is not UTF-8") from None

"""Linkerd's tap messages for ``meshproxy viz tap``, sans-IO: the ObserveRequest a tap sends, the
TapEvents it reads back (decoded from protobuf bytes), and Linkerd's ``req``/``rsp``/``end`` lines.

The field numbers are those of linkerd2-proxy-api's tap.proto, net.proto and http_types.proto, as the
proxy's own tap server (proxy/telemetry/tap.py) writes them.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

from proxy.telemetry.pbwire import LEN, VARINT, DecodeError, fields, len_field, str_field, uint_field

METHODS = {0: "GET", 1: "POST", 2: "PUT", 3: "DELETE", 4: "PATCH", 5: "OPTIONS", 6: "CONNECT", 7: "HEAD",
           8: "TRACE"}
SCHEMES = {0: "http", 1: "https"}
GRPC_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
              "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
H2_ERRORS = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
             "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
             "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")


# ---- the request -----------------------------------------------------------------------------


def observe_request(limit: int, method: str | None = None, path: str | None = None,
                    authority: str | None = None, to_labels: dict[str, str] | None = None) -> bytes:
    """ObserveRequest{limit, match: all of the filters given (none: every request)}."""
    matches = []
    if method:
        method = method.upper()
        registered = {v: k for k, v in METHODS.items()}.get(method)
        kind = uint_field(1, registered) if registered is not None else str_field(2, method)
        matches.append(len_field(6, len_field(3, kind)))
    if path:
        matches.append(len_field(6, len_field(4, str_field(2, path))))  # prefix, as Linkerd's --path
    if authority:
        matches.append(len_field(6, len_field(2, str_field(1, authority))))  # exact, as Linkerd's --authority
    for key, value in sorted((to_labels or {}).items()):
        matches.append(len_field(7, str_field(1, key) + str_field(2, value)))
    seq = b"".join(len_field(1, m) for m in matches)
    return uint_field(1, limit) + len_field(2, len_field(1, seq))


# ---- the events -----------------------------------------------------------------------------


@dataclass
class TapEvent:
    """One decoded event: where, which request (``base:stream``), what happened."""

    kind: str = ""  # request_init, response_init, response_end
    direction: str = ""  # in, out
    source: str = ""
    destination: str = ""
    source_labels: dict[str, str] = field(default_factory=dict)
    destination_labels: dict[str, str] = field(default_factory=dict)
    route_labels: dict[str, str] = field(default_factory=dict)
    id: str = ""
    method: str = ""
    scheme: str = ""
    authority: str = ""
    path: str = ""
    status: int = 0
    since_request_us: int = 0
    since_response_us: int = 0
    response_bytes: int = 0
    grpc_status: int | None = None
    reset_code: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def tls(self) -> str:
        """The TLS of the hop this proxy controls: outbound the destination's, inbound the source's."""
        labels = self.destination_labels if self.direction == "out" else self.source_labels
        return labels.get("tls", "")

    def line(self, wide: bool = False) -> str:
        """Linkerd's tap line: ``req``, ``rsp`` or ``end``, then id, proxy, src, dst, tls and the event's fields."""
        head = f"id={self.id} proxy={self.direction} src={self.source} dst={self.destination} tls={self.tls}"
        if wide:
            extra = [f"src_{k}={v}" for k, v in sorted(self.source_labels.items()) if k != "tls"]
            extra += [f"dst_{k}={v}" for k, v in sorted(self.destination_labels.items()) if k != "tls"]
            extra += [f"rt_{k}={v}" for k, v in sorted(self.route_labels.items())]
            if extra:
                head += " " + " ".join(extra)
        if self.kind == "request_init":
            return f"req {head} :method={self.method} :authority={self.authority} :path={self.path}"
        if self.kind == "response_init":
            return f"rsp {head} :status={self.status} latency={self.since_request_us}µs"
        end = ""
        if self.grpc_status is not None:
            code = self.grpc_status
            end = f"grpc-status={GRPC_CODES[code] if code < len(GRPC_CODES) else code} "
        elif self.reset_code is not None:
            code = self.reset_code
            end = f"reset-error={H2_ERRORS[code] if code < len(H2_ERRORS) else code} "
        return f"end {head} {end}duration={self.since_response_us}µs response-length={self.response_bytes}B"

    def json(self) -> str:
        direction = "INBOUND" if self.direction == "in" else "OUTBOUND"
        out: dict[str, object] = {
            "id": self.id, "event": self.kind, "proxyDirection": direction,
            "source": {"address": self.source, "labels": self.source_labels},
            "destination": {"address": self.destination, "labels": self.destination_labels}}
        if self.route_labels:
            out["route"] = self.route_labels
        if self.kind == "request_init":
            out.update(method=self.method, scheme=self.scheme, authority=self.authority, path=self.path)
        elif self.kind == "response_init":
            out.update(httpStatus=self.status, sinceRequestInitUs=self.since_request_us)
        else:
            out.update(sinceRequestInitUs=self.since_request_us, sinceResponseInitUs=self.since_response_us,
                       responseBytes=self.response_bytes)
            if self.grpc_status is not None:
                out["grpcStatusCode"] = self.grpc_status
            if self.reset_code is not None:
                out["resetErrorCode"] = self.reset_code
        if self.headers:
            out["headers"] = [{"name": n, "value": v} for n, v in self.headers]
        return json.dumps(out, ensure_ascii=False)


def decode_event(data: bytes) -> TapEvent:
    """A TapEvent from its protobuf bytes; raises DecodeError when they are not one."""
    event = TapEvent()
    for number, wire, value in fields(data):
        if wire == LEN and isinstance(value, bytes):
            if number == 1:
                event.source = _tcp_address(value)
            elif number == 2:
                event.destination = _tcp_address(value)
            elif number == 3:
                _http(event, value)
            elif number == 4:
                event.destination_labels = _labels(value)
            elif number == 5:
                event.source_labels = _labels(value)
            elif number == 7:
                event.route_labels = _labels(value)
        elif number == 6 and wire == VARINT:
            event.direction = {1: "in", 2: "out"}.get(int(value), "")
    if not event.kind:
        raise DecodeError("a TapEvent without an http event")
    return event


def _message(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError("expected a message")
    return value


def _text(value: int | bytes) -> str:
    return _message(value).decode("utf-8", "replace")


def _tcp_address(data: bytes) -> str:
    host = ""
    port = 0
    for number, _wire, value in fields(data):
        if number == 1:
            for n, _w, ip in fields(_message(value)):
                if n == 1 and isinstance(ip, int):
                    host = str(ipaddress.IPv4Address(ip))
                elif n == 2:
                    first, last = _pair(_message(ip))
                    host = f"[{ipaddress.IPv6Address((first << 64) | last)}]"
        elif number == 2 and isinstance(value, int):
            port = value
    return f"{host}:{port}"


def _labels(data: bytes) -> dict[str, str]:
    out = {}
    for number, _wire, entry in fields(data):
        if number != 1:
            continue
        key = value = ""
        for n, _w, part in fields(_message(entry)):
            if n == 1:
                key = _text(part)
            elif n == 2:
                value = _text(part)
        out[key] = value
    return out


def _pair(data: bytes) -> tuple[int, int]:
    """The integer fields 1 and 2 of a small message (0 when absent): IPv6 halves, a Duration, a StreamId."""
    out = [0, 0]
    for number, _wire, value in fields(data):
        if number in (1, 2) and isinstance(value, int):
            out[number - 1] = value
    return out[0], out[1]


def _duration_us(data: bytes) -> int:
    seconds, nanos = _pair(data)
    return seconds * 1_000_000 + nanos // 1000


def _http(event: TapEvent, data: bytes) -> None:
    for number, _wire, value in fields(data):
        if number not in (1, 2, 3):
            continue
        event.kind = ("request_init", "response_init", "response_end")[number - 1]
        for n, w, item in fields(_message(value)):
            if n == 1 and w == LEN:
                base, stream = _pair(_message(item))
                event.id = f"{base}:{stream}"
            elif number == 1:
                _request_field(event, n, item)
            elif number == 2:
                _response_field(event, n, item)
            else:
                _end_field(event, n, item)


def _registered(data: bytes, names: dict[int, str]) -> str:
    for number, _wire, value in fields(data):
        if number == 1 and isinstance(value, int):
            return names.get(value, str(value))
        if number == 2:
            return _text(value)
    return ""


def _headers(data: bytes) -> list[tuple[str, str]]:
    out = []
    for number, _wire, header in fields(data):
        if number == 1:
            name = value = ""
            for n, _w, part in fields(_message(header)):
                if n == 1:
                    name = _text(part)
                elif n == 2:
                    value = _text(part)
            out.append((name, value))
    return out


def _request_field(event: TapEvent, number: int, value: int | bytes) -> None:
    if number == 2:
        event.method = _registered(_message(value), METHODS)
    elif number == 3:
        event.scheme = _registered(_message(value), SCHEMES)
    elif number == 4:
        event.authority = _text(value)
    elif number == 5:
        event.path = _text(value)
    elif number == 6:
        event.headers = _headers(_message(value))


def _response_field(event: TapEvent, number: int, value: int | bytes) -> None:
    if number == 2:
        event.since_request_us = _duration_us(_message(value))
    elif number == 3 and isinstance(value, int):
        event.status = value
    elif number == 4:
        event.headers = _headers(_message(value))


def _end_field(event: TapEvent, number: int, value: int | bytes) -> None:
    if number == 2:
        event.since_request_us = _duration_us(_message(value))
    elif number == 3:
        event.since_response_us = _duration_us(_message(value))
    elif number == 4 and isinstance(value, int):
        event.response_bytes = value
    elif number == 5:
        for n, _w, code in fields(_message(value)):
            if n == 1 and isinstance(code, int):
                event.grpc_status = code
            elif n == 2 and isinstance(code, int):
                event.reset_code = code
    elif number == 6:
        event.headers = _headers(_message(value))

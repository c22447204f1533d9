"""Tests for proxy.http.convert: response heads between HTTP/1 and HTTP/2 fields (the meshed hop's bridge)."""

from __future__ import annotations

import proxy.http.convert as convert
from proxy.protocol.http1 import parse_response_head

assert convert.__file__.endswith(".so"), f"compiled convert not in use: {convert.__file__}"


def _head(status: int, reason: bytes = b"X") -> object:
    raw = b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nX-Id: 7\r\n\r\n" % (status, reason)
    return parse_response_head(raw, 65536)


def test_fields_from_h1_response_status_and_fields():
    fields = convert.fields_from_h1_response(_head(204), None)
    assert fields == [(b":status", b"204"), (b"content-type", b"text/plain"), (b"x-id", b"7")]
    # The :status field is one object per status, so the HPACK encoder meets the same tuple each response.
    assert convert.fields_from_h1_response(_head(204), None)[0] is fields[0]
    for status in (200, 404, 599):
        assert convert.fields_from_h1_response(_head(status), None)[0] == (b":status", b"%d" % status)


def test_h1_response_from_fields_reads_every_status():
    for status in range(100, 1000):
        fields = [(b":status", b"%d" % status), (b"content-length", b"0")]
        head = convert.h1_response_from_fields(fields, False, False, None)
        assert head.startswith(b"HTTP/1.1 %d " % status), head
        assert head.endswith(b"\r\ncontent-length: 0\r\n\r\n")


def test_h1_response_from_fields_round_trip_through_http1():
    fields = convert.fields_from_h1_response(_head(503, b"Service Unavailable"), None)
    head = convert.h1_response_from_fields(fields, True, True, None)
    parsed = parse_response_head(head, 65536)
    assert parsed.status == 503
    assert head == (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nx-id: 7\r\n"
                    b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n")

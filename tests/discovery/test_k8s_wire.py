"""The Kubernetes client's HTTP/1.1 framing, fed adversarially: whole, byte by byte, split anywhere."""

from __future__ import annotations

import json

import pytest

from proxy.discovery.k8s_wire import (
    MAX_CHUNK_LINE,
    MAX_HEAD,
    ChunkedDecoder,
    LineSplitter,
    LineTooLong,
    WireError,
    parse_head,
)

EVENTS = [{"type": "ADDED", "object": {"metadata": {"name": "café-名前", "resourceVersion": "7"}}},
          {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "8"}}}]
STREAM = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in EVENTS)


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        piece = body[at:at + size]
        at += size
        if piece:
            out += b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n"
    assert at >= len(body)
    return out + b"0\r\nX-Trailer: 1\r\n\r\n"


def decode(wire: bytes, step: int) -> tuple[bytes, ChunkedDecoder]:
    decoder, body = ChunkedDecoder(), b""
    for at in range(0, len(wire), step):
        body += b"".join(decoder.feed(wire[at:at + step]))
    if decoder.error is not None:
        raise decoder.error
    return body, decoder


@pytest.mark.parametrize("step", [1, 2, 7, 64, 100_000])
@pytest.mark.parametrize("sizes", [[100_000], [1] * 400, [3, 5, 7, 11, 13, 17, 19, 23, 400]])
def test_chunked_body_and_lines_whatever_the_boundaries(step, sizes):
    # Chunk boundaries and read boundaries fall inside lines and inside multi-byte characters.
    body, decoder = decode(chunked(STREAM, sizes), step)
    assert body == STREAM and decoder.done and decoder.trailing == b""
    splitter, lines = LineSplitter(1024), []
    for at in range(0, len(body), step):
        lines += splitter.feed(body[at:at + step])
    assert [json.loads(line) for line in lines] == EVENTS and splitter.finish() == b""


def test_chunked_keeps_bytes_after_the_end():
    _, decoder = decode(chunked(b"abc", [3]) + b"HTTP/1.1 200", 5)
    assert decoder.done and decoder.trailing == b"HTTP/1.1 200"


@pytest.mark.parametrize("wire, why", [
    (b"zz\r\nab\r\n", "bad chunk size"),
    (b"0x3\r\nabc\r\n", "bad chunk size"),
    (b"-3\r\nabc\r\n", "bad chunk size"),
    (b"\r\nabc\r\n", "bad chunk size"),
    (b"1" * 17 + b"\r\n", "bad chunk size"),
    (b"3\r\nabcXY", "not followed by CRLF"),
    (b"3" + b";" * (MAX_CHUNK_LINE + 10), "chunk size line over"),
    (b"3" + b";" * (MAX_CHUNK_LINE + 10) + b"\r\n", "chunk size line over"),
])
def test_malformed_chunked_encoding_is_a_wire_error(wire, why):
    for step in (1, len(wire)):
        with pytest.raises(WireError, match=why):
            decode(wire, step)


def test_pieces_before_a_framing_error_come_first():
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\nzz\r\n") == [b"abc"]
    with pytest.raises(WireError, match="bad chunk size"):
        decoder.feed(b"")
    assert decoder.error is not None


def test_a_cut_stream_is_not_done():
    body, decoder = decode(chunked(STREAM, [50, 50, 100])[:70], 9)
    assert not decoder.done and STREAM.startswith(body)


def test_line_limit():
    splitter = LineSplitter(10)
    assert splitter.feed(b"0123456789\n012") == [b"0123456789"]
    with pytest.raises(LineTooLong, match="over 10"):
        splitter.feed(b"34567890")  # no newline yet: the buffer alone is over the limit
    with pytest.raises(LineTooLong):
        LineSplitter(10).feed(b"x" * 11 + b"\n")
    tail = LineSplitter(10)
    assert tail.feed(b"\n\n  \n{}") == [] and tail.finish() == b"{}"


def test_response_heads():
    head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert (head.status, head.chunked, head.length, head.keep_alive) == (200, True, None, True)
    head = parse_head(b"HTTP/1.1 410 Gone\r\nContent-Length: 12\r\nConnection: close\r\n\r\n")
    assert (head.status, head.length, head.keep_alive) == (410, 12, False)
    head = parse_head(b"HTTP/1.0 200\r\ncontent-length: 5, 5\r\n\r\n")
    assert (head.length, head.keep_alive) == (5, False)


@pytest.mark.parametrize("raw, why", [
    (b"HTTP/2 200\r\n\r\n", "status line"),
    (b"HTTP/1.1 20 OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 200OK\r\n\r\n", "status line"),
    (b"\r\n\r\n", "empty response head"),
    (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "header line"),
    (b"HTTP/1.1 200 OK\r\nbad name: 1\r\n\r\n", "header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", "head over"),
])
def test_malformed_heads(raw, why):
    with pytest.raises(WireError, match=why):
        parse_head(raw)

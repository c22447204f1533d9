"""Hostile HPACK header blocks and CONTINUATION sequences, as the exact frames a client sends on stream 1.

Each vector is the frames of one request on a fresh h2c connection, built for
the tap's ``host:port``. ``expect``: "compression-error" (a GOAWAY with
COMPRESSION_ERROR, nothing reaches the backend), "goaway" (a GOAWAY with the
given code, nothing reaches the backend), "forwarded" (legal: the request
arrives and ``x-hpack-mark`` with it, as the value given).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from helpers import h2 as H
from helpers.h2 import hpack_int, hpack_str

SID = 1
MARK = b"x-hpack-mark"


@dataclass(frozen=True)
class HpackVector:
    id: str
    frames: Callable[[bytes], bytes]  # the tap's host:port -> the frames of stream 1
    expect: str
    code: int = H.COMPRESSION_ERROR
    mark: bytes = b""  # the x-hpack-mark value a forwarded request carries


def lit(name: bytes, value: bytes, kind: int = 0x00) -> bytes:
    """A literal with a new name: kind 0x40 incremental indexing, 0x00 without, 0x10 never indexed."""
    return bytes([kind]) + hpack_str(name) + hpack_str(value)


def req(authority: bytes, mark: bytes = b"m") -> bytes:
    """A GET as literals without indexing, ending with the mark field."""
    return b"".join(lit(n, v) for n, v in ((b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority),
                                           (b":path", b"/hpack"), (MARK, mark)))


def update(size: int) -> bytes:
    return hpack_int(size, 5, 0x20)


def idx(index: int) -> bytes:
    return hpack_int(index, 7, 0x80)


def one(block: bytes) -> bytes:
    return H.headers(SID, block)


def split_every_octet(block: bytes) -> bytes:
    out = H.headers(SID, block[:1], end_headers=False)
    for i in range(1, len(block)):
        out += H.continuation(SID, block[i:i + 1], end_headers=i == len(block) - 1)
    return out


HPACK_VECTORS: list[HpackVector] = []


def add(vid: str, frames: Callable[[bytes], bytes], expect: str = "compression-error", code: int = H.COMPRESSION_ERROR,
        mark: bytes = b"") -> None:
    HPACK_VECTORS.append(HpackVector(vid, frames, expect, code, mark))


# Five 1000-octet entries in a 4096-octet table: the first is evicted, 62..65 stay.
_FILL = b"".join(lit(b"x-fill-%d" % i, b"v" * (1000 - 32 - 8), 0x40) for i in range(5))

# ---------------------------------------------------------------------------
# dynamic table size updates (RFC 7541 4.2, 6.3)

add("hpack-update.several-at-start", lambda a: one(update(0) + update(100) + update(4096) + req(a, b"u1")),
    "forwarded", mark=b"u1")
add("hpack-update.zero-then-back", lambda a: one(update(0) + update(4096) + req(a, b"u2") + _FILL + idx(62)),
    "forwarded", mark=b"u2")
add("hpack-update.above-our-setting", lambda a: one(update(4097) + req(a)))
add("hpack-update.huge", lambda a: one(update(0xFFFFFFFF) + req(a)))
add("hpack-update.after-the-fields", lambda a: one(req(a) + update(0)))
add("hpack-update.between-fields", lambda a: one(req(a)[:13] + update(0) + req(a)[13:]))
add("hpack-update.at-the-start-of-a-continuation",
    lambda a: H.headers(SID, req(a), end_headers=False) + H.continuation(SID, update(0), end_headers=True))

# ---------------------------------------------------------------------------
# indexes

add("hpack-index.zero", lambda a: one(b"\x80" + req(a)))
add("hpack-index.empty-dynamic-table", lambda a: one(req(a) + idx(62)))
add("hpack-index.past-the-last-after-eviction", lambda a: one(req(a) + _FILL + idx(66)))
add("hpack-index.last-after-eviction", lambda a: one(req(a, b"e1") + _FILL + idx(65)), "forwarded", mark=b"e1")
add("hpack-index.name-past-the-table", lambda a: one(req(a) + hpack_int(62, 4) + hpack_str(b"v")))
add("hpack-index.near-2-63", lambda a: one(req(a) + b"\xff" + b"\xff" * 8 + b"\x01"))

# ---------------------------------------------------------------------------
# integers and string lengths

add("hpack-int.name-length-2-35", lambda a: one(req(a) + b"\x00\x7f\xff\xff\xff\xff\x0f"))
add("hpack-int.continuation-run", lambda a: one(req(a) + b"\x00\x7f" + b"\x80" * 64 + b"\x00"))
add("hpack-int.value-length-past-the-block", lambda a: one(req(a) + b"\x00\x01x\x7f\xff\xff\xff\x7f" + b"v" * 64))
add("hpack-int.truncated", lambda a: one(req(a) + b"\x00\x7f\xff"))

# ---------------------------------------------------------------------------
# Huffman strings (RFC 7541 5.2)

add("hpack-huffman.eos-in-value", lambda a: one(req(a) + b"\x00\x01x\x84\xff\xff\xff\xff"))
add("hpack-huffman.eos-in-name", lambda a: one(req(a) + b"\x00\x85\x1f\xff\xff\xff\xff\x01v"))
add("hpack-huffman.zero-padding", lambda a: one(req(a) + b"\x00\x01x\x81\x18"))
add("hpack-huffman.eight-bits-of-padding", lambda a: one(req(a) + b"\x00\x01x\x81\xff"))

# ---------------------------------------------------------------------------
# blocks across CONTINUATION frames (RFC 9113 6.10)

add("hpack-continuation.every-octet", lambda a: split_every_octet(req(a, b"c1")), "forwarded", mark=b"c1")
add("hpack-continuation.empty-frames", lambda a: H.headers(SID, req(a, b"c2"), end_headers=False)
    + H.continuation(SID, b"") * 50 + H.continuation(SID, b"", end_headers=True), "forwarded", mark=b"c2")
add("hpack-continuation.flood", lambda a: H.headers(SID, req(a), end_headers=False) + H.continuation(SID, b"") * 20000,
    "goaway", code=H.ENHANCE_YOUR_CALM)
add("hpack-continuation.interleaved-ping", lambda a: H.headers(SID, req(a), end_headers=False) + H.ping()
    + H.continuation(SID, b"", end_headers=True), "goaway", code=H.PROTOCOL_ERROR)
add("hpack-continuation.other-stream", lambda a: H.headers(SID, req(a), end_headers=False)
    + H.continuation(SID + 2, b"", end_headers=True), "goaway", code=H.PROTOCOL_ERROR)

# ---------------------------------------------------------------------------
# a small table churned by a thousand tiny entries, then read back

_TINY = b"".join(lit(bytes([97 + i % 26]), b"%d" % (i % 10), 0x40) for i in range(1000))
# The newest entry is i = 999: ("l", "9"); the 120th newest, i = 880: ("w", "0").
add("hpack-table.thousand-tiny-entries", lambda a: one(req(a, b"t1") + _TINY + idx(62) + idx(62 + 119)),
    "forwarded", mark=b"t1")

_ids = [v.id for v in HPACK_VECTORS]
assert len(_ids) == len(set(_ids)), "vector ids must be unique"

"""Protocol Buffers wire format, sans-IO: the field encoders and the one decoder the proxy's own gRPC messages need.

The proxy sends and reads a handful of messages (OTLP spans out, Linkerd's
tap requests in and tap events out) and carries no protobuf runtime: messages
are built from these field encoders, and ``fields`` reads one message into raw
``(number, wire type, value)`` triples, raising ``DecodeError`` on anything
malformed (a hostile peer's bytes never raise anything else). The tests check
both directions against the official generated classes. Compiled.
"""

import struct

VARINT = 0
FIXED64 = 1
LEN = 2
FIXED32 = 5

# Varints below 128 are one byte: most tags and lengths.
SMALL = [bytes((n,)) for n in range(128)]

_PACK_I = struct.Struct("<I").pack
_PACK_Q = struct.Struct("<Q").pack
_PACK_BE_I = struct.Struct(">I").pack
_UNPACK_I = struct.Struct("<I").unpack_from
_UNPACK_Q = struct.Struct("<Q").unpack_from


class DecodeError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def varint(n):
    """``n`` (0 <= n < 2**64) as a base-128 varint."""
    if n < 128:
        return SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def len_field(number, payload):
    """A length-delimited field (a message, bytes or a string already encoded)."""
    return varint(number << 3 | LEN) + varint(len(payload)) + payload


def str_field(number, text):
    return len_field(number, text.encode("utf-8") if isinstance(text, str) else text)


def uint_field(number, n):
    """A varint field, written even when 0 (a member of a oneof must be, to be present)."""
    return varint(number << 3 | VARINT) + varint(n)


def fixed32_field(number, n):
    return varint(number << 3 | FIXED32) + _PACK_I(n)


def fixed64_field(number, n):
    return varint(number << 3 | FIXED64) + _PACK_Q(n)


def fields(data):
    """Every field of one message, in order: ``(number, wire type, value)``, the value an int (varint and
    fixed) or bytes (length-delimited). Groups (deprecated since proto2) are refused."""
    out = []
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _read_varint(data, pos, end)
        number = key >> 3
        wire = key & 7
        if number == 0 or number > 0x1FFFFFFF:
            raise DecodeError(f"invalid field number {number}")
        if wire == VARINT:
            value, pos = _read_varint(data, pos, end)
        elif wire == LEN:
            size, pos = _read_varint(data, pos, end)
            if size > end - pos:
                raise DecodeError(f"field {number}: length {size} runs past the message")
            value = bytes(data[pos:pos + size])
            pos += size
        elif wire == FIXED64:
            if end - pos < 8:
                raise DecodeError(f"field {number}: truncated fixed64")
            value = _UNPACK_Q(data, pos)[0]
            pos += 8
        elif wire == FIXED32:
            if end - pos < 4:
                raise DecodeError(f"field {number}: truncated fixed32")
            value = _UNPACK_I(data, pos)[0]
            pos += 4
        else:
            raise DecodeError(f"field {number}: unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _read_varint(data, pos, end):
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise DecodeError("varint longer than 64 bits")
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint longer than 10 bytes")


def grpc_frame(message):
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + _PACK_BE_I(len(message)) + message


def grpc_status(fields):
    """``(grpc-status, grpc-message)`` of trailers (or a trailers-only head); (-1, "") when absent."""
    status = -1
    message = ""
    for name, value in fields:
        if name == b"grpc-status":
            try:
                status = int(value)
            except ValueError:
                status = -1
        elif name == b"grpc-message":
            message = value.decode("utf-8", "replace")
    return status, message

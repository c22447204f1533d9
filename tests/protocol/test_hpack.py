"""Tests for proxy.protocol.hpack: RFC 7541 examples, the reference ``hpack`` package both ways, hostile blocks.

The compiled module is the one under test; the table-driven cases also run
against the same source loaded uncompiled, to keep the two builds in step.
The pure-Python ``hpack`` package is the reference (imported as ref_hpack).
"""

from __future__ import annotations

import importlib.util
import time
import tracemalloc
from pathlib import Path

import hpack as ref_hpack
import pytest
from hpack.huffman import HuffmanEncoder as RefHuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as ref_decode_huffman
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import proxy.protocol.hpack as hpack

assert hpack.__file__.endswith(".so"), f"compiled hpack not in use: {hpack.__file__}"
assert ref_hpack.__name__ == "hpack" and not ref_hpack.__file__.startswith(str(Path(hpack.__file__).parent))


def _load_pure():
    source = Path(hpack.__file__).with_name("hpack.py")
    spec = importlib.util.spec_from_file_location("meshproxy_hpack_pure", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pure = _load_pure()
assert not pure.__file__.endswith(".so")


@pytest.fixture(params=["compiled", "pure"])
def hp(request):
    return hpack if request.param == "compiled" else pure


def h(text):
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


def entry_sizes(table):
    return [len(n) + len(v) + 32 for n, v in table]


def assert_hpack_error(hp, reason, call):
    with pytest.raises(hp.HpackError) as info:
        call()
    assert info.value.reason == reason
    assert info.value.error_code == 0x9
    return info.value


# ---------------------------------------------------------------- Huffman


def test_huffman_code_matches_reference_and_rfc_spot_checks():
    codes = hpack.huffman_codes()
    assert codes == [(REQUEST_CODES[i], REQUEST_CODES_LENGTH[i]) for i in range(257)]
    # A few rows of RFC 7541 Appendix B, read off the RFC directly.
    assert codes[0] == (0x1FF8, 13)
    assert codes[ord("0")] == (0x0, 5)
    assert codes[ord("a")] == (0x3, 5)
    assert codes[ord(" ")] == (0x14, 6)
    assert codes[ord("&")] == (0xF8, 8)
    assert codes[ord("\\")] == (0x7FFF0, 19)
    assert codes[255] == (0x3FFFFEE, 26)
    assert codes[256] == (0x3FFFFFFF, 30)


HUFFMAN_VECTORS = [  # RFC 7541 C.4 and C.6
    ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", b"www.example.com"),
    ("a8eb 1064 9cbf", b"no-cache"),
    ("25a8 49e9 5ba9 7d7f", b"custom-key"),
    ("25a8 49e9 5bb8 e8b4 bf", b"custom-value"),
    ("6402", b"302"),
    ("640e ff", b"307"),
    ("aec3 771a 4b", b"private"),
    ("d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff", b"Mon, 21 Oct 2013 20:13:21 GMT"),
    ("9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3", b"https://www.example.com"),
    ("9bd9 ab", b"gzip"),
    (
        "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 "
        "b106 3d50 07",
        b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    ),
]


@pytest.mark.parametrize(("encoded", "plain"), HUFFMAN_VECTORS)
def test_huffman_rfc_vectors(hp, encoded, plain):
    assert hp.huffman_encode(plain) == h(encoded)
    assert hp.huffman_encoded_length(plain) == len(h(encoded))
    assert hp.huffman_decode(h(encoded)) == plain


def test_huffman_every_byte_value(hp):
    data = bytes(range(256)) * 2
    encoded = hp.huffman_encode(data)
    assert encoded == RefHuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)
    assert hp.huffman_decode(encoded) == data
    assert hp.huffman_decode(b"") == b"" and hp.huffman_encode(b"") == b""


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_huffman_round_trip_against_reference(data):
    encoded = hpack.huffman_encode(data)
    assert encoded == RefHuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)
    assert hpack.huffman_decode(encoded) == data
    assert ref_decode_huffman(encoded) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_huffman_decode_arbitrary_bytes_agrees_with_reference(data):
    # Either both accept with the same result, or both refuse.
    try:
        expected = ref_decode_huffman(data)
    except ref_hpack.HPACKDecodingError:
        expected = None
    try:
        got = hpack.huffman_decode(data)
    except hpack.HpackError:
        got = None
    assert got == expected


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        # "a" is 00011: three one bits of padding are fine (0x1f), zeros are not.
        (b"\x18", "invalid huffman padding"),
        (b"\x1d", "invalid huffman padding"),
        # Eight or more bits of padding: the code for "a" then a whole 0xff octet.
        (b"\x1f\xff", "invalid huffman padding"),
        (h("f1e3 c2e5 f23a 6ba0 ab90 f4ff ff"), "invalid huffman padding"),
        # A lone 0xff: 8 one bits, a prefix of EOS but longer than 7 bits.
        (b"\xff", "invalid huffman padding"),
        # EOS (30 one bits) inside the string.
        (b"\xff\xff\xff\xfc", "eos in huffman string"),
        (b"\x1f\xff\xff\xff\xff", "eos in huffman string"),
    ],
)
def test_huffman_padding_and_eos_errors(hp, encoded, reason):
    assert_hpack_error(hp, reason, lambda: hp.huffman_decode(encoded))
    # The same string inside a header block is a decoding error too.
    block = b"\x00\x01a" + bytes([0x80 | len(encoded)]) + encoded
    assert_hpack_error(hp, reason, lambda: hp.Decoder().decode(block))


def _bits_to_bytes(bits):
    assert len(bits) % 8 == 0
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def test_huffman_every_run_of_trailing_ones(hp):
    # After any prefix of whole codes, 1..7 one bits are padding, 8..29 are
    # too much padding, and 30 or more contain EOS.
    codes = hpack.huffman_codes()
    prefixes = {}
    for text in (b"", b"a", b" ", b":", b"&", b"aa", b"a ", b"  ", b"a:", b": ", b"::", b"aaa", b"a&", b"&&", b"aa:"):
        bits = "".join(format(codes[c][0], f"0{codes[c][1]}b") for c in text)
        prefixes.setdefault(len(bits) % 8, (text, bits))
    assert sorted(prefixes) == list(range(8))
    # A string may stop inside a code only when that partial code is 1-7 one
    # bits: try ending at every one of the 255 internal nodes of the code tree.
    partial = {format(code >> (length - d), f"0{d}b") for code, length in codes for d in range(1, length)}
    assert len(partial) == 255
    for path in partial:
        text, bits = prefixes[-len(path) % 8]
        encoded = _bits_to_bytes(bits + path)
        if set(path) == {"1"} and len(path) <= 7:
            assert hp.huffman_decode(encoded) == text
        else:
            assert_hpack_error(hp, "invalid huffman padding", lambda encoded=encoded: hp.huffman_decode(encoded))
    for text, bits in prefixes.values():
        for ones in range(1, 40):
            if (len(bits) + ones) % 8:
                continue
            encoded = _bits_to_bytes(bits + "1" * ones)
            if ones <= 7:
                assert hp.huffman_decode(encoded) == text
            elif ones < 30:
                assert_hpack_error(hp, "invalid huffman padding", lambda encoded=encoded: hp.huffman_decode(encoded))
            else:
                assert_hpack_error(hp, "eos in huffman string", lambda encoded=encoded: hp.huffman_decode(encoded))


def test_huffman_padding_up_to_seven_bits_is_fine(hp):
    # ":" is 1011100 (7 bits): one bit of padding.
    assert hp.huffman_decode(bytes([0b10111001])) == b":"
    # "a" (5 bits) + "0" (5 bits): six bits of padding.
    assert hp.huffman_encode(b"a0") == bytes([0b00011000, 0b00111111])
    assert hp.huffman_decode(bytes([0b00011000, 0b00111111])) == b"a0"
    # "a" (5 bits) + "#" (12 bits): seven bits of padding.
    assert len(hp.huffman_encode(b"a#")) == 3
    assert hp.huffman_decode(hp.huffman_encode(b"a#")) == b"a#"


# ---------------------------------------------------------------- integers


def test_integer_representation_rfc_c1(hp):
    assert hp.encode_integer(10, 5) == b"\x0a"
    assert hp.encode_integer(1337, 5) == b"\x1f\x9a\x0a"
    assert hp.encode_integer(42, 8) == b"\x2a"
    assert hp.encode_integer(31, 5) == b"\x1f\x00"
    assert hp.encode_integer(30, 5) == b"\x1e"
    with pytest.raises(ValueError):
        hp.encode_integer(-1, 5)


def test_integer_decoding_bounds(hp):
    # Index 61 + 127 + ... up to four continuation octets decode (then the index is simply unknown).
    assert_hpack_error(hp, "index out of range", lambda: hp.Decoder().decode(b"\xff\xff\xff\xff\x7f"))
    assert_hpack_error(hp, "index out of range", lambda: hp.Decoder().decode(b"\xff\x9a\x0a"))
    # A fifth continuation octet is refused, whatever its value, even overlong zeros.
    assert_hpack_error(hp, "integer too large", lambda: hp.Decoder().decode(b"\xff\x80\x80\x80\x80\x00"))
    assert_hpack_error(hp, "integer too large", lambda: hp.Decoder().decode(b"\xff" + b"\xff" * 10_000))
    assert_hpack_error(hp, "integer too large", lambda: hp.Decoder().decode(b"\x3f\xff\xff\xff\xff\x0f"))
    # A string length that overflows.
    assert_hpack_error(hp, "integer too large", lambda: hp.Decoder().decode(b"\x40\x7f\xff\xff\xff\xff\x0f"))
    # Running out of octets in the middle of an integer.
    assert_hpack_error(hp, "truncated integer", lambda: hp.Decoder().decode(b"\xff"))
    assert_hpack_error(hp, "truncated integer", lambda: hp.Decoder().decode(b"\xff\x80"))


# ---------------------------------------------------------------- RFC 7541 C.2


def test_c2_1_literal_with_indexing(hp):
    block = h("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")
    dec = hp.Decoder()
    assert dec.decode(block) == [(b"custom-key", b"custom-header")]
    assert dec.dynamic_table() == [(b"custom-key", b"custom-header")]
    assert dec.table_size == 55
    enc = hp.Encoder()
    assert enc.encode([(b"custom-key", b"custom-header")], huffman=False) == block
    assert enc.table_size == 55


def test_c2_2_literal_without_indexing(hp):
    block = h("040c 2f73 616d 706c 652f 7061 7468")
    dec = hp.Decoder()
    assert dec.decode(block) == [(b":path", b"/sample/path")]
    assert dec.dynamic_table() == []
    enc = hp.Encoder(unindexed_names={b":path"})
    assert enc.encode([(b":path", b"/sample/path")], huffman=False) == block
    assert enc.dynamic_table() == []


def test_c2_3_literal_never_indexed(hp):
    block = h("1008 7061 7373 776f 7264 0673 6563 7265 74")
    dec = hp.Decoder()
    fields = dec.decode(block)
    assert fields == [(b"password", b"secret")]
    assert type(fields[0]) is hp.NeverIndexed
    name, value = fields[0]
    assert (name, value) == (b"password", b"secret")
    assert dec.dynamic_table() == []
    assert hp.Encoder().encode([(b"password", b"secret", True)], huffman=False) == block
    # What the decoder produced is sent never-indexed again (RFC 7541 7.1.3).
    assert hp.Encoder().encode(fields, huffman=False) == block


def test_c2_4_indexed_field(hp):
    assert hp.Decoder().decode(b"\x82") == [(b":method", b"GET")]
    assert hp.Encoder().encode([(b":method", b"GET")]) == b"\x82"


# ---------------------------------------------------------------- RFC 7541 C.3 - C.6

REQUESTS = [
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com")],
    [
        (b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com"),
        (b"cache-control", b"no-cache"),
    ],
    [
        (b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"),
        (b":authority", b"www.example.com"), (b"custom-key", b"custom-value"),
    ],
]
REQUEST_TABLES = [
    [(b":authority", b"www.example.com")],
    [(b"cache-control", b"no-cache"), (b":authority", b"www.example.com")],
    [(b"custom-key", b"custom-value"), (b"cache-control", b"no-cache"), (b":authority", b"www.example.com")],
]
REQUEST_TABLE_SIZES = [57, 110, 164]
C3_BLOCKS = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
C4_BLOCKS = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]

COOKIE = b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
RESPONSES = [
    [
        (b":status", b"302"), (b"cache-control", b"private"), (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT"),
        (b"location", b"https://www.example.com"),
    ],
    [
        (b":status", b"307"), (b"cache-control", b"private"), (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT"),
        (b"location", b"https://www.example.com"),
    ],
    [
        (b":status", b"200"), (b"cache-control", b"private"), (b"date", b"Mon, 21 Oct 2013 20:13:22 GMT"),
        (b"location", b"https://www.example.com"), (b"content-encoding", b"gzip"), (b"set-cookie", COOKIE),
    ],
]
RESPONSE_TABLES = [
    [
        (b"location", b"https://www.example.com"), (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT"),
        (b"cache-control", b"private"), (b":status", b"302"),
    ],
    [
        (b":status", b"307"), (b"location", b"https://www.example.com"),
        (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT"), (b"cache-control", b"private"),
    ],
    [(b"set-cookie", COOKIE), (b"content-encoding", b"gzip"), (b"date", b"Mon, 21 Oct 2013 20:13:22 GMT")],
]
RESPONSE_TABLE_SIZES = [222, 222, 215]
C5_BLOCKS = [
    """4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
       2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
       6c65 2e63 6f6d""",
    "4803 3330 37c1 c0bf",
    """88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
       54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
       5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
       3d31""",
]
C6_BLOCKS = [
    """4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
       2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3""",
    "4883 640e ffc1 c0bf",
    """88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
       77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
       9587 3160 65c0 03ed 4ee5 b106 3d50 07""",
]

SEQUENCES = {
    "C.3": (C3_BLOCKS, False, REQUESTS, REQUEST_TABLES, REQUEST_TABLE_SIZES, 4096),
    "C.4": (C4_BLOCKS, True, REQUESTS, REQUEST_TABLES, REQUEST_TABLE_SIZES, 4096),
    "C.5": (C5_BLOCKS, False, RESPONSES, RESPONSE_TABLES, RESPONSE_TABLE_SIZES, 256),
    "C.6": (C6_BLOCKS, True, RESPONSES, RESPONSE_TABLES, RESPONSE_TABLE_SIZES, 256),
}


@pytest.mark.parametrize("section", sorted(SEQUENCES))
def test_rfc_sequence_decode(hp, section):
    blocks, _, lists, tables, sizes, table_size = SEQUENCES[section]
    dec = hp.Decoder(max_table_size=table_size)
    for block, expected, table, size in zip(blocks, lists, tables, sizes):
        assert dec.decode(h(block)) == expected
        assert dec.dynamic_table() == table
        assert dec.table_size == size == sum(entry_sizes(table))


@pytest.mark.parametrize("section", sorted(SEQUENCES))
def test_rfc_sequence_encode(hp, section):
    # The RFC's encoder indexes every field, so the default "do not index
    # date/location/set-cookie" policy is switched off here.
    blocks, huffman, lists, tables, sizes, table_size = SEQUENCES[section]
    enc = hp.Encoder(max_table_size=table_size, unindexed_names=())
    for block, headers, table, size in zip(blocks, lists, tables, sizes):
        assert enc.encode(headers, huffman=huffman) == h(block)
        assert enc.dynamic_table() == table
        assert enc.table_size == size


# ---------------------------------------------------------------- against the reference package

NAMES = st.one_of(
    st.sampled_from(sorted({name for name, _ in hpack.STATIC_TABLE})),
    st.sampled_from([b"x-request-id", b"l5d-dst-canonical", b"grpc-timeout", b"authorization", b"cookie"]),
    st.binary(min_size=1, max_size=12),
)
VALUES = st.one_of(
    st.sampled_from([b"", b"GET", b"/", b"application/grpc", b"trailers", b"gzip, deflate"]),
    st.binary(max_size=60),
    st.binary(max_size=300),
)
FIELDS = st.tuples(NAMES, VALUES)
HEADER_LISTS = st.lists(st.lists(FIELDS, max_size=12), min_size=1, max_size=6)
ROUND_TRIP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ROUND_TRIP
@given(HEADER_LISTS, st.booleans(), st.sampled_from([0, 64, 256, 4096]))
def test_our_encoder_their_decoder(lists, huffman, table_size):
    enc = hpack.Encoder(max_table_size=4096)
    ours = hpack.Decoder(max_table_size=4096, max_header_list_size=1 << 30)
    theirs = ref_hpack.Decoder(max_header_list_size=1 << 30)
    enc.set_max_table_size(table_size)
    ours.set_max_table_size(table_size)
    theirs.max_allowed_table_size = table_size
    for headers in lists:
        block = enc.encode(headers, huffman=huffman)
        assert theirs.decode(block, raw=True) == headers
        assert ours.decode(block) == headers
        assert ours.dynamic_table() == enc.dynamic_table()
        assert ours.table_size == enc.table_size <= table_size
        assert [tuple(e) for e in theirs.header_table.dynamic_entries] == enc.dynamic_table()


@ROUND_TRIP
@given(HEADER_LISTS, st.booleans(), st.sampled_from([0, 64, 256, 4096]), st.lists(st.booleans(), max_size=12))
def test_their_encoder_our_decoder(lists, huffman, table_size, sensitive):
    theirs = ref_hpack.Encoder()
    ours = hpack.Decoder(max_header_list_size=1 << 30)
    ours.set_max_table_size(table_size)
    theirs.header_table_size = table_size
    for headers in lists:
        marked = [
            (name, value, True) if i < len(sensitive) and sensitive[i] else (name, value)
            for i, (name, value) in enumerate(headers)
        ]
        fields = ours.decode(theirs.encode(marked, huffman=huffman))
        assert fields == headers
        # Never-indexed only where asked for (the reference still sends a
        # sensitive field that matches a table entry as that index).
        assert all(len(m) == 3 for f, m in zip(fields, marked) if type(f) is hpack.NeverIndexed)
        assert ours.dynamic_table() == [tuple(e) for e in theirs.header_table.dynamic_entries]


@ROUND_TRIP
@given(HEADER_LISTS, st.lists(st.integers(0, 5000), min_size=1, max_size=4), st.data())
def test_table_size_changes_between_blocks(lists, sizes, data):
    # Several SETTINGS changes between blocks: the encoder signals the
    # smallest then the final size, and both decoders follow.
    enc = hpack.Encoder()
    ours = hpack.Decoder(max_header_list_size=1 << 30)
    ours.set_max_table_size(5000)
    theirs = ref_hpack.Decoder(max_header_list_size=1 << 30)
    theirs.max_allowed_table_size = 5000
    for headers in lists:
        for size in data.draw(st.lists(st.sampled_from(sizes), max_size=3)):
            enc.set_max_table_size(size)
        block = enc.encode(headers)
        assert ours.decode(block) == headers
        assert theirs.decode(block, raw=True) == headers
        assert ours.max_table_size == enc.max_table_size
        assert ours.dynamic_table() == enc.dynamic_table()


# The same source with the per-position memo off: what the encoder sent before it remembered fields.
no_memo = _load_pure()
no_memo._MEMO_FIELDS = 0

# A few heads sent again and again in varying order, as a connection does: the same field comes back at the
# same position (the memo's hit), after the table evicted it (a stale memo must not name a dead entry), in a
# never-indexed form, or as a sensitive or unindexed field.
REPEATED_HEADS = [
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"web:80"),
     (b"user-agent", b"curl/8"), (b"accept", b"*/*")],
    [(b":status", b"200"), (b"server", b"nginx"), (b"date", b"Tue, 08 Dec 2026 00:40:00 GMT"),
     (b"content-type", b"text/plain"), (b"content-length", b"2")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/a?q=1"), (b":authority", b"web:80"),
     (b"user-agent", b"curl/8"), (b"x-big", b"v" * 200)],
    [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"other:80"),
     (b"authorization", b"secret"), (b"cookie", b"short")],
    [(b":status", b"200"), (b"server", b"nginx"), (b"date", b"Tue, 08 Dec 2026 00:40:01 GMT"),
     (b"content-type", b"text/html"), (b"content-length", b"2"), (b"x-trace", b"abcdef0123456789")],
    [(b":status", b"200"), (b"server", b"nginx"), (b"x-trace", b"t" * 50)],  # a name the table may hold
]


@ROUND_TRIP
@given(st.lists(st.tuples(st.integers(0, len(REPEATED_HEADS) - 1), st.integers(-1, 7)), min_size=1, max_size=30),
       st.sampled_from([0, 100, 200, 400, 4096]), st.booleans())
def test_field_memo_changes_no_block(picks, table_size, huffman):
    encoders = [hpack.Encoder(), pure.Encoder()]
    reference = no_memo.Encoder()
    theirs = ref_hpack.Decoder(max_header_list_size=1 << 30)
    decoders = [hpack.Decoder(), pure.Decoder(), no_memo.Decoder()]
    for enc in (*encoders, reference):
        enc.set_max_table_size(table_size)
    theirs.max_allowed_table_size = table_size
    for dec in decoders:
        dec.set_max_table_size(table_size)
    for head, marked in picks:
        headers = list(REPEATED_HEADS[head])
        if 0 <= marked < len(headers):  # this time the field at that position must not be indexed
            headers[marked] = (*headers[marked], True)  # the 3-tuple form: one meaning in every build
        expected = reference.encode(headers, huffman=huffman)
        for enc in encoders:
            assert enc.encode(headers, huffman=huffman) == expected
        plain = [f[:2] for f in headers]
        assert theirs.decode(expected, raw=True) == plain
        # The decoders' memo changes no field either (nor its kind: never-indexed or not), nor their tables.
        decoded = [dec.decode(expected) for dec in decoders]
        kinds = [[type(f).__name__ for f in fields] for fields in decoded]
        assert decoded[0] == decoded[1] == decoded[2] == plain and kinds[0] == kinds[1] == kinds[2]
        assert all(kind == "NeverIndexed" for kind, f in zip(kinds[0], headers) if len(f) == 3)
        assert decoders[0].dynamic_table() == decoders[1].dynamic_table() == decoders[2].dynamic_table()


def test_field_memo_never_names_an_evicted_entry(hp):
    enc = hp.Encoder(max_table_size=100)  # room for one small entry at a time
    dec = hp.Decoder(max_table_size=100)
    first = [(b"x-a", b"1")]
    assert dec.decode(enc.encode(first)) == first
    assert enc.encode(first) == b"\xbe"  # index 62: the entry it just made
    assert dec.decode(enc.encode([(b"x-b", b"2" * 40)])) == [(b"x-b", b"2" * 40)]  # evicts x-a
    block = enc.encode(first)
    assert block != b"\xbe" and dec.decode(block) == first  # a literal again, not the index it had


def test_decoder_memo_gives_the_same_field_object(hp):
    dec = hp.Decoder()
    block = hp.Encoder().encode([(b"content-length", b"2"), (b"date", b"Tue, 08 Dec 2026 00:40:00 GMT")])
    first = dec.decode(block)
    again = dec.decode(block)
    assert again == first == [(b"content-length", b"2"), (b"date", b"Tue, 08 Dec 2026 00:40:00 GMT")]
    assert again[0] is first[0] and again[1] is first[1]  # no Huffman decode, no new bytes


def test_decoder_memo_never_reuses_a_dynamic_name(hp):
    # A literal naming a dynamic entry by index means another name once the table moved on: the same
    # octets at the same position must be read again.
    dec = hp.Decoder()
    assert dec.decode(b"\x40\x03x-a\x011") == [(b"x-a", b"1")]  # entry 62: x-a
    by_index = b"\x0f\x2f\x01v"  # without indexing, name = entry 62, value v
    assert dec.decode(by_index) == [(b"x-a", b"v")]
    assert dec.decode(b"\x82\x40\x03x-b\x012") == [(b":method", b"GET"), (b"x-b", b"2")]  # 62 is x-b now
    assert dec.decode(by_index) == [(b"x-b", b"v")]


# ---------------------------------------------------------------- size updates


def test_encoder_size_update_smallest_then_final(hp):
    enc = hp.Encoder()
    enc.encode([(b"x-a", b"1"), (b"x-b", b"2")])
    assert len(enc.dynamic_table()) == 2
    enc.set_max_table_size(100)
    enc.set_max_table_size(0)
    enc.set_max_table_size(4096)
    block = enc.encode([(b":method", b"GET")])
    assert block == b"\x20" + b"\x3f\xe1\x1f" + b"\x82"
    assert enc.dynamic_table() == []
    # No change, no update.
    enc.set_max_table_size(4096)
    assert enc.encode([(b":method", b"GET")]) == b"\x82"
    # A single change is a single update.
    enc.set_max_table_size(100)
    assert enc.encode([]) == b"\x3f\x45"
    assert enc.max_table_size == 100


def test_encoder_caps_its_table(hp):
    enc = hp.Encoder()
    enc.set_max_table_size(1 << 30)
    assert enc.max_table_size == hp.MAX_ENCODER_TABLE_SIZE
    dec = hp.Decoder(max_table_size=1 << 30)
    assert dec.decode(enc.encode([(b"x-a", b"1")])) == [(b"x-a", b"1")]
    assert dec.max_table_size == hp.MAX_ENCODER_TABLE_SIZE


def test_encoder_buffer_kept_follows_the_table_size(hp):
    # The output buffer is kept between blocks up to four tables' worth of the size in force, so a peer
    # that allows a larger table (and is sent larger header lists) reuses one buffer for them.
    enc = hp.Encoder()
    assert enc.buffer_limit == 4 * 4096
    dec = hp.Decoder()
    big = [(b"x-big", b"v" * 12000)]  # over 3/4 of the table: a literal, not indexed
    assert dec.decode(enc.encode(big, huffman=False)) == big
    assert 12000 < enc.buffer_size <= enc.buffer_limit  # kept for the next block
    huge = [(b"x-huge", b"v" * 20000)]
    assert dec.decode(enc.encode(huge, huffman=False)) == huge
    assert enc.buffer_size < 1024  # a one-off block over the limit does not pin its buffer
    enc.set_max_table_size(16384)
    assert enc.buffer_limit == 4 * 16384
    dec.set_max_table_size(16384)
    assert dec.decode(enc.encode(huge, huffman=False)) == huge
    assert enc.buffer_size > 20000
    enc.set_max_table_size(0)  # a peer with no table: the floor still holds a usual block
    assert enc.buffer_limit == 4096
    dec.set_max_table_size(0)
    assert dec.decode(enc.encode(huge, huffman=False)) == huge
    assert enc.buffer_size < 1024
    enc.set_max_table_size(hp.MAX_ENCODER_TABLE_SIZE + 1)
    assert enc.buffer_limit == 4 * hp.MAX_ENCODER_TABLE_SIZE  # bounded with the table it follows


def test_size_update_rules(hp):
    dec = hp.Decoder()
    assert_hpack_error(hp, "table size update after a field", lambda: dec.decode(b"\x82\x3f\x45"))
    assert_hpack_error(hp, "table size update above the settings limit", lambda: hp.Decoder().decode(b"\x3f\xe2\x1f"))
    # Up to the limit is fine, and several updates at the start are fine.
    dec = hp.Decoder()
    assert dec.decode(b"\x3f\xe1\x1f") == []
    assert dec.decode(b"\x20\x3f\xe1\x1f\x82") == [(b":method", b"GET")]
    assert dec.max_table_size == 4096


def test_decoder_requires_update_after_smaller_setting(hp):
    dec = hp.Decoder()
    dec.decode(h("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"))
    dec.set_max_table_size(50)
    assert_hpack_error(hp, "missing table size update", lambda: dec.decode(b"\x82"))
    assert_hpack_error(hp, "missing table size update", lambda: dec.decode(b""))
    assert_hpack_error(hp, "table size update above the settings limit", lambda: dec.decode(b"\x3f\x45"))
    assert dec.decode(b"\x3f\x13\x82") == [(b":method", b"GET")]  # 50: the entry (55) is evicted
    assert dec.dynamic_table() == [] and dec.max_table_size == 50
    assert dec.decode(b"\x82") == [(b":method", b"GET")]
    # A larger setting does not require an update.
    dec.set_max_table_size(4096)
    assert dec.decode(b"\x82") == [(b":method", b"GET")]


def test_long_huffman_strings(hp):
    # Past the decoder's reusable buffer (4096 octets of output) and back.
    enc = hp.Encoder()
    dec = hp.Decoder(max_header_list_size=1 << 20)
    for size in (300, 2000, 20_000, 100):
        fields = [(b"x-long", b"abcdefghij" * (size // 10))]
        block = enc.encode(fields)
        assert len(block) < size  # Huffman was used
        assert dec.decode(block) == fields


def test_entry_larger_than_table_empties_it(hp):
    dec = hp.Decoder(max_table_size=100)
    dec.decode(b"\x40\x03x-a\x011")
    assert dec.table_size == 36
    big = b"v" * 80
    assert dec.decode(b"\x40\x03x-b" + bytes([len(big)]) + big) == [(b"x-b", big)]
    assert dec.dynamic_table() == [] and dec.table_size == 0


# ---------------------------------------------------------------- decoding errors


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        (b"\x80", "index 0"),
        (b"\xbe", "index out of range"),
        (b"\x40\x01a", "truncated field"),
        (b"\x41", "truncated field"),
        (b"\x40\x05abc", "truncated string"),
        (b"\x00\x03abc\x05ab", "truncated string"),
        (b"\x7f\x20", "index out of range"),
        (b"\x0f\x33\x01a", "index out of range"),
        (b"\x10\x00", "truncated field"),
    ],
)
def test_decode_errors(hp, block, reason):
    assert_hpack_error(hp, reason, lambda: hp.Decoder().decode(block))


def test_decode_rejects_non_bytes(hp):
    with pytest.raises(TypeError):
        hp.Decoder().decode(None)
    with pytest.raises(TypeError):
        hp.Decoder().decode("\x82")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=4))
def test_arbitrary_blocks_decode_or_raise_hpack_errors(blocks):
    dec = hpack.Decoder(max_header_list_size=4096)
    for block in blocks:
        try:
            fields = dec.decode(block)
        except hpack.HpackError:
            return
        except hpack.HeaderListTooLarge:
            continue
        assert all(type(name) is bytes and type(value) is bytes for name, value in fields)
        assert dec.table_size <= dec.max_table_size


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=4))
def test_arbitrary_blocks_compiled_and_pure_agree(blocks):
    outcomes = []
    for module in (hpack, pure):
        dec = module.Decoder(max_header_list_size=4096)
        seen = []
        for block in blocks:
            try:
                seen.append(("ok", [tuple(f) for f in dec.decode(block)], dec.dynamic_table()))
            except module.HpackError as err:
                seen.append(("error", err.reason))
                break
            except module.HeaderListTooLarge as err:
                seen.append(("too large", err.size, dec.dynamic_table()))
        outcomes.append(seen)
    assert outcomes[0] == outcomes[1]


# ---------------------------------------------------------------- header list size, bombs


def test_header_list_size_limit_is_exact(hp):
    fields = [(b"x-a", b"v" * 100), (b"x-b", b"w" * 50)]
    size = sum(entry_sizes(fields))
    block = hp.Encoder().encode(fields)
    assert hp.Decoder(max_header_list_size=size).decode(block) == fields
    with pytest.raises(hp.HeaderListTooLarge) as info:
        hp.Decoder(max_header_list_size=size - 1).decode(block)
    assert (info.value.size, info.value.limit) == (size, size - 1)
    assert info.value.reason == "header list too large"


def test_hpack_bomb_refused_without_building_the_list(hp):
    # One 4 KB entry, then 100 000 one-octet references to it: 100 KB of block
    # that would expand to 400 MB of header list.
    value = b"A" * 4000
    block = b"\x40\x06x-bomb" + hp.encode_integer(len(value), 7) + value + b"\xbe" * 100_000
    dec = hp.Decoder(max_table_size=4096, max_header_list_size=65536)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(hp.HeaderListTooLarge) as info:
            dec.decode(block)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.size == 100_001 * (6 + 4000 + 32)
    assert peak < 200_000  # a built list alone would take 800 KB of pointers
    # Not a speed target: only that nothing quadratic runs (uncompiled under tracemalloc on a busy shared
    # machine this takes a second or two; a per-reference copy of the list would take minutes).
    assert elapsed < 15.0
    # The block was processed to its end: the table is in step, the connection can go on.
    assert dec.dynamic_table() == [(b"x-bomb", value)]
    assert dec.decode(b"\xbe") == [(b"x-bomb", value)]


def test_too_large_list_still_updates_the_table(hp):
    enc = hp.Encoder()
    dec = hp.Decoder(max_header_list_size=100)
    fields = [(b"x-a", b"1" * 60), (b"x-b", b"2" * 60)]
    with pytest.raises(hp.HeaderListTooLarge):
        dec.decode(enc.encode(fields))
    assert dec.dynamic_table() == enc.dynamic_table()
    dec.max_header_list_size = 1000
    assert dec.decode(enc.encode(fields)) == fields


# ---------------------------------------------------------------- encoder policy


def table_names(enc):
    return [name for name, _ in enc.dynamic_table()]


def test_sensitive_fields_are_never_indexed(hp):
    enc = hp.Encoder()
    dec = hp.Decoder()
    fields = [
        (b"authorization", b"Bearer abc"),
        (b"proxy-authorization", b"Basic xyz"),
        (b"cookie", b"short=1"),
        (b"x-token", b"t", True),
        hp.NeverIndexed(b"x-secret", b"s"),
        (b"cookie", b"a-long-cookie-value=0123456789"),
        (b"x-plain", b"p", False),
    ]
    block = enc.encode(fields)
    decoded = dec.decode(block)
    assert decoded == [(f[0], f[1]) for f in fields]
    assert [type(f) is hp.NeverIndexed for f in decoded] == [True, True, True, True, True, False, False]
    assert table_names(enc) == [b"x-plain", b"cookie"]
    # Never-indexed fields keep indexed names where one exists (authorization is static 23).
    assert block[0] == 0x10 | 0x0F and block[1] == 23 - 15
    ref_fields = ref_hpack.Decoder().decode(block, raw=True)
    assert [isinstance(f, ref_hpack.NeverIndexedHeaderTuple) for f in ref_fields] == [
        True, True, True, True, True, False, False,
    ]


def test_reference_never_indexed_fields_decode_as_never_indexed(hp):
    block = ref_hpack.Encoder().encode([(b"x-token", b"abc", True), (b"x-plain", b"abc")])
    fields = hp.Decoder().decode(block)
    assert fields == [(b"x-token", b"abc"), (b"x-plain", b"abc")]
    assert [type(f) is hp.NeverIndexed for f in fields] == [True, False]


def test_custom_sensitive_names(hp):
    enc = hp.Encoder(sensitive_names={b"l5d-client-id"})
    decoded = hp.Decoder().decode(enc.encode([(b"l5d-client-id", b"web.ns"), (b"authorization", b"x")]))
    assert [type(f) is hp.NeverIndexed for f in decoded] == [True, False]


def test_unindexed_fields(hp):
    enc = hp.Encoder()
    enc.encode(
        [
            (b"content-length", b"12"),
            (b"etag", b'"5f2a"'),
            (b":path", b"/search?q=1"),
            (b":path", b"/pkg.Service/Method"),
            (b"x-big", b"b" * 3100),
            (b"x-ok", b"b" * 3000),
        ]
    )
    assert table_names(enc) == [b"x-ok", b":path"]


def test_date_is_indexed_for_the_responses_of_its_second(hp):
    # One entry a second: every later response of that second names it in one octet, which its peer reads
    # without decoding a Huffman literal; the next second's value is a new entry.
    enc, dec = hp.Encoder(), hp.Decoder()
    head = [(b":status", b"200"), (b"date", b"Tue, 08 Dec 2026 03:40:00 GMT"), (b"content-length", b"2")]
    first = enc.encode(head)
    again = enc.encode(head)
    assert dec.decode(first) == head and dec.decode(again) == head
    assert again[:2] == b"\x88\xbe" and len(again) < len(first) - 15
    later = [head[0], (b"date", b"Tue, 08 Dec 2026 03:40:01 GMT"), head[2]]
    assert dec.decode(enc.encode(later)) == later
    assert table_names(enc) == [b"date", b"date"]


def test_warm_table_is_one_octet_per_field(hp):
    enc = hp.Encoder()
    request = [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/pkg.Service/Method"),
        (b":authority", b"svc.ns.svc.cluster.local:8080"), (b"content-type", b"application/grpc"),
        (b"te", b"trailers"), (b"grpc-accept-encoding", b"identity,deflate,gzip"),
        (b"user-agent", b"grpc-python/1.60.0"),
    ]
    enc.encode(request)
    assert len(enc.encode(request)) == len(request)


def test_encoder_rejects_bad_fields(hp):
    enc = hp.Encoder()
    for bad in ([(b"a",)], [(None, b"x")], [(b"x", None)], [("x", b"y")], [(b"x", "y")]):
        with pytest.raises(TypeError):
            enc.encode(bad)
    with pytest.raises(ValueError):
        hp.Encoder(max_table_size=-1)
    with pytest.raises(ValueError):
        hp.Decoder(max_table_size=-1)


# ---------------------------------------------------------------- validate_headers

REQ = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"example.com")]
GRPC = [
    (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/pkg.Service/Method"),
    (b":authority", b"svc:8080"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
]
RESP = [(b":status", b"200"), (b"content-type", b"text/plain")]

VALID = [
    (REQ, True, False),
    (GRPC, True, False),
    (REQ[:3], True, False),  # :authority is optional
    ([(b":method", b"CONNECT"), (b":authority", b"example.com:443")], True, False),
    ([(b":method", b"OPTIONS"), (b":scheme", b"https"), (b":path", b"*"), (b":authority", b"a")], True, False),
    (REQ + [(b"host", b"example.com"), (b"cookie", b"a=1"), (b"cookie", b"b=2")], True, False),
    (REQ + [(b"x-empty", b""), (b"x-inner", b"a b\tc")], True, False),
    ([(b":method", b"GET"), (b":scheme", b"foo+bar"), (b":path", b"relative")], True, False),
    (RESP, False, False),
    ([(b":status", b"101")], False, False),
    ([], True, True),
    ([(b"grpc-status", b"0"), (b"grpc-message", b"")], False, True),
    ([(b"x-checksum", b"abc")], True, True),
    (REQ + [(b"x-v", b"\x80\xff")], True, False),
]


@pytest.mark.parametrize(("headers", "is_request", "is_trailer"), VALID)
def test_valid_field_sections(hp, headers, is_request, is_trailer):
    assert hp.validate_headers(headers, is_request, is_trailer) is None


def test_extended_connect(hp):
    ws = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"), (b":path", b"/chat"),
          (b":authority", b"a")]
    assert hp.validate_headers(ws, True, False, True) is None
    with pytest.raises(hp.ProtocolError, match="unknown pseudo-header field"):
        hp.validate_headers(ws, True, False)
    bad = [(b":method", b"GET")] + ws[1:]
    with pytest.raises(hp.ProtocolError, match=":protocol without CONNECT"):
        hp.validate_headers(bad, True, False, True)
    with pytest.raises(hp.ProtocolError, match="missing :path"):
        hp.validate_headers(ws[:3] + ws[4:], True, False, True)


INVALID = [
    # names
    (REQ + [(b"X-Upper", b"v")], True, False, "uppercase field name"),
    (REQ + [(b"x-sp ace", b"v")], True, False, "invalid field name"),
    (REQ + [(b"x-colon:", b"v")], True, False, "invalid field name"),
    (REQ + [(b"x-ctl\x01", b"v")], True, False, "invalid field name"),
    (REQ + [(b"x-del\x7f", b"v")], True, False, "invalid field name"),
    (REQ + [(b"x-\xe9", b"v")], True, False, "invalid field name"),
    (REQ + [(b"", b"v")], True, False, "empty field name"),
    # values
    (REQ + [(b"x-a", b"a\r\nb")], True, False, "invalid field value"),
    (REQ + [(b"x-a", b"a\x00b")], True, False, "invalid field value"),
    (REQ + [(b"x-a", b"a\nb")], True, False, "invalid field value"),
    (REQ + [(b"x-a", b" lead")], True, False, "whitespace around field value"),
    (REQ + [(b"x-a", b"trail\t")], True, False, "whitespace around field value"),
    ([(b":method", b"GET "), (b":scheme", b"https"), (b":path", b"/")], True, False, "whitespace around field value"),
    # pseudo-header fields
    ([(b"x-a", b"1")] + REQ, True, False, "pseudo-header field after regular field"),
    (REQ + [(b":method", b"GET")], True, False, "duplicate pseudo-header field"),
    (REQ + [(b":path", b"/x")], True, False, "duplicate pseudo-header field"),
    (REQ + [(b":status", b"200")], True, False, "unknown pseudo-header field"),
    (REQ + [(b":foo", b"bar")], True, False, "unknown pseudo-header field"),
    (RESP + [(b":path", b"/")], False, False, "pseudo-header field after regular field"),
    ([(b":status", b"200"), (b":method", b"GET")], False, False, "unknown pseudo-header field"),
    ([(b":status", b"200"), (b":status", b"204")], False, False, "duplicate pseudo-header field"),
    ([(b":", b"x")] + REQ, True, False, "unknown pseudo-header field"),
    ([(b":path", b"/")], True, True, "pseudo-header field in trailers"),
    ([(b":status", b"200")], False, True, "pseudo-header field in trailers"),
    # required pseudo-header fields
    (REQ[1:], True, False, "missing :method"),
    ([REQ[0], REQ[2], REQ[3]], True, False, "missing :scheme"),
    ([REQ[0], REQ[1], REQ[3]], True, False, "missing :path"),
    ([REQ[0], REQ[1], (b":path", b""), REQ[3]], True, False, "missing :path"),
    ([(b"content-type", b"text/plain")], False, False, "missing :status"),
    ([], True, False, "missing :method"),
    ([], False, False, "missing :status"),
    ([(b":method", b"CONNECT")], True, False, "missing :authority in CONNECT"),
    ([(b":method", b"CONNECT"), (b":authority", b"a:1"), (b":path", b"/")], True, False, ":scheme or :path in CONNECT"),
    ([(b":method", b"CONNECT"), (b":authority", b"a:1"), (b":scheme", b"https")], True, False,
     ":scheme or :path in CONNECT"),
    # pseudo-header values
    ([(b":status", b"20")], False, False, "invalid :status"),
    ([(b":status", b"2000")], False, False, "invalid :status"),
    ([(b":status", b"abc")], False, False, "invalid :status"),
    ([(b":status", b"099")], False, False, "invalid :status"),
    ([(b":method", b""), REQ[1], REQ[2]], True, False, "invalid :method"),
    ([(b":method", b"G(T"), REQ[1], REQ[2]], True, False, "invalid :method"),
    ([REQ[0], (b":scheme", b"ht tp"), REQ[2]], True, False, "invalid :scheme"),
    ([REQ[0], REQ[1], (b":path", b"/a b")], True, False, "invalid :path"),
    ([REQ[0], REQ[1], (b":path", b"noslash")], True, False, "invalid :path"),
    ([REQ[0], REQ[1], (b":path", b"*")], True, False, "invalid :path"),
    (REQ[:3] + [(b":authority", b"user@example.com")], True, False, "userinfo in :authority"),
    (REQ[:3] + [(b":authority", b"exa mple.com")], True, False, "invalid :authority"),
    # connection-specific fields
    (REQ + [(b"connection", b"keep-alive")], True, False, "connection-specific field"),
    (REQ + [(b"keep-alive", b"timeout=5")], True, False, "connection-specific field"),
    (REQ + [(b"proxy-connection", b"close")], True, False, "connection-specific field"),
    (REQ + [(b"transfer-encoding", b"chunked")], True, False, "connection-specific field"),
    (REQ + [(b"upgrade", b"h2c")], True, False, "connection-specific field"),
    (RESP + [(b"connection", b"close")], False, False, "connection-specific field"),
    ([(b"transfer-encoding", b"chunked")], False, True, "connection-specific field"),
    (REQ + [(b"te", b"gzip")], True, False, "te other than trailers"),
    (REQ + [(b"te", b"trailers, gzip")], True, False, "te other than trailers"),
    # host
    (REQ + [(b"host", b"other.com")], True, False, "host differs from :authority"),
    (REQ + [(b"host", b"example.com"), (b"host", b"example.com")], True, False, "duplicate host"),
]


@pytest.mark.parametrize(("headers", "is_request", "is_trailer", "reason"), INVALID)
def test_invalid_field_sections(hp, headers, is_request, is_trailer, reason):
    with pytest.raises(hp.ProtocolError) as info:
        hp.validate_headers(headers, is_request, is_trailer)
    assert info.value.reason == reason
    assert info.value.error_code == 0x1


def test_validate_decoded_never_indexed_and_rejects_non_bytes(hp):
    fields = hp.Decoder().decode(hp.Encoder().encode(REQ + [(b"authorization", b"x")]))
    assert type(fields[-1]) is hp.NeverIndexed
    assert hp.validate_headers(fields, True, False) is None
    for bad in ([(b":method",)], [(None, b"x")], [(b"x", None)], [("x", b"y")]):
        with pytest.raises(TypeError):
            hp.validate_headers(bad, True, False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(NAMES, st.binary(max_size=20)), max_size=8), st.booleans(), st.booleans())
def test_validate_agrees_between_builds(headers, is_request, is_trailer):
    outcomes = []
    for module in (hpack, pure):
        try:
            outcomes.append(module.validate_headers(headers, is_request, is_trailer))
        except module.ProtocolError as err:
            outcomes.append(err.reason)
    assert outcomes[0] == outcomes[1]

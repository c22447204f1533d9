"""Adversarial and differential tests for proxy.protocol.hpack: hostile blocks, and both coders against ``hpack``.

The in-place encoder buffer, the lazily evicting tables (``_first`` and
``_compact``) and the decoder's bounds are fed what an attacker would send:
size updates where they are not allowed, indexes just past an eviction,
integers that overflow, Huffman strings that end wrong, tables of thousands
of tiny entries, blocks split at every octet. The differential loops use
fixed seeds and fixed counts, so a failure replays; every case runs against
the compiled module and the same source loaded uncompiled.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import hpack as ref_hpack
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

import proxy.protocol.h2conn as C
import proxy.protocol.h2frame as F
import proxy.protocol.hpack as hpack

assert hpack.__file__.endswith(".so"), f"compiled hpack not in use: {hpack.__file__}"

pytestmark = pytest.mark.timeout(120)


def _load_pure():
    source = Path(hpack.__file__).with_name("hpack.py")
    spec = importlib.util.spec_from_file_location("meshproxy_hpack_pure_adversarial", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pure = _load_pure()


@pytest.fixture(params=["compiled", "pure"])
def hp(request):
    return hpack if request.param == "compiled" else pure


def lit(name: bytes, value: bytes, kind: int = 0x00) -> bytes:
    """A literal with a new name, raw strings: kind 0x40 indexed, 0x00 without, 0x10 never."""
    return bytes([kind]) + ref_int(len(name), 7) + name + ref_int(len(value), 7) + value


def ref_int(value: int, prefix: int, flags: int = 0) -> bytes:
    # Written out here rather than taken from the module under test.
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes([flags | value])
    out = [flags | mask]
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def size_update(size: int) -> bytes:
    return ref_int(size, 5, 0x20)


def indexed(index: int) -> bytes:
    return ref_int(index, 7, 0x80)


def reason_of(hp, call) -> str:
    with pytest.raises(hp.HpackError) as info:
        call()
    assert info.value.error_code == 0x9
    return info.value.reason


# ---------------------------------------------------------------- dynamic table size updates


def test_several_size_updates_at_the_start_are_fine(hp):
    dec = hp.Decoder(max_table_size=4096)
    block = size_update(0) + size_update(100) + size_update(4096) + lit(b"a", b"b", 0x40)
    assert dec.decode(block) == [(b"a", b"b")]
    assert dec.max_table_size == 4096 and dec.dynamic_table() == [(b"a", b"b")]


def test_size_update_larger_than_our_setting(hp):
    dec = hp.Decoder(max_table_size=4096)
    assert reason_of(hp, lambda: dec.decode(size_update(4097))) == "table size update above the settings limit"
    # Our SETTINGS_HEADER_TABLE_SIZE lowered (acknowledged): the old size is now too large too.
    dec = hp.Decoder(max_table_size=4096)
    dec.set_max_table_size(1000)
    assert reason_of(hp, lambda: dec.decode(size_update(4096) + indexed(2))) == \
        "table size update above the settings limit"
    # Raised: the peer may go up to it, and not beyond.
    dec = hp.Decoder(max_table_size=4096)
    dec.set_max_table_size(8192)
    assert dec.decode(size_update(8192) + indexed(2)) == [(b":method", b"GET")]
    assert reason_of(hp, lambda: dec.decode(size_update(8193))) == "table size update above the settings limit"


@pytest.mark.parametrize("huge", [1 << 28, (1 << 28) + 30, 0xFFFFFFFF])
def test_size_update_with_a_huge_value(hp, huge):
    dec = hp.Decoder(max_table_size=4096)
    got = reason_of(hp, lambda: dec.decode(size_update(huge) + indexed(2)))
    assert got in ("integer too large", "table size update above the settings limit")


@pytest.mark.parametrize("before", [
    indexed(2),
    lit(b"x", b"y"),
    lit(b"x", b"y", 0x40),
    lit(b"x", b"y", 0x10),
    indexed(2) + size_update(0) + indexed(2),  # between two fields
])
def test_size_update_after_a_field(hp, before):
    dec = hp.Decoder(max_table_size=4096)
    assert reason_of(hp, lambda: dec.decode(before + size_update(0))) == "table size update after a field"


def test_size_update_at_the_start_of_the_next_block_is_fine(hp):
    dec = hp.Decoder()
    assert dec.decode(lit(b"a", b"1", 0x40)) == [(b"a", b"1")]
    assert dec.decode(size_update(0) + indexed(2)) == [(b":method", b"GET")]
    assert dec.table_size == 0 and dec.dynamic_table() == []
    assert reason_of(hp, lambda: dec.decode(indexed(62))) == "index out of range"


def test_required_update_must_be_the_smallest_ceiling(hp):
    # Our setting went down to 0 and back up before the peer's next block: the
    # block must still begin with an update (RFC 7541 4.2), any size up to 4096.
    dec = hp.Decoder()
    dec.decode(lit(b"a", b"1", 0x40))
    dec.set_max_table_size(0)
    dec.set_max_table_size(4096)
    assert reason_of(hp, lambda: dec.decode(indexed(62))) == "missing table size update"
    dec = hp.Decoder()
    dec.decode(lit(b"a", b"1", 0x40))
    dec.set_max_table_size(0)
    dec.set_max_table_size(4096)
    assert dec.decode(size_update(0) + size_update(4096) + indexed(2)) == [(b":method", b"GET")]


def test_a_block_of_nothing_but_size_updates(hp):
    # 10,000 updates alternating between 0 and the limit, on a full table: one block, no fields.
    dec = hp.Decoder()
    dec.decode(b"".join(lit(b"k%d" % i, b"v" * 40, 0x40) for i in range(60)))
    assert dec.table_size > 3000
    assert dec.decode((size_update(0) + size_update(4096)) * 5000) == []
    assert dec.table_size == 0 and dec.dynamic_table() == []


# ---------------------------------------------------------------- indexes around eviction


def test_index_past_the_table_after_eviction(hp):
    # Four 1000-octet entries fill 4000 of 4096; the fifth evicts the oldest: 62..65 live, 66 gone.
    dec = hp.Decoder()
    value = b"v" * (1000 - 32 - 2)
    dec.decode(b"".join(lit(b"k%d" % i, value, 0x40) for i in range(5)))
    assert [n for n, _ in dec.dynamic_table()] == [b"k4", b"k3", b"k2", b"k1"]
    assert dec.decode(indexed(65)) == [(b"k1", value)]
    assert reason_of(hp, lambda: dec.decode(indexed(66))) == "index out of range"
    assert dec.decode(indexed(62)) == [(b"k4", value)]  # a refused block changed nothing


@pytest.mark.parametrize("index", [62, 63, 100, 1 << 20, (1 << 28) + 126])
def test_index_into_an_empty_table(hp, index):
    assert reason_of(hp, lambda: hp.Decoder().decode(indexed(index))) == "index out of range"


def test_literal_naming_an_evicted_entry(hp):
    dec = hp.Decoder()
    dec.decode(lit(b"old", b"x", 0x40))
    dec.decode(size_update(0) + size_update(4096))
    block = ref_int(62, 6, 0x40) + ref_int(1, 7) + b"y"  # indexed name 62: gone
    assert reason_of(hp, lambda: dec.decode(block)) == "index out of range"


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_eviction_exactly_at_the_boundary(hp, extra):
    # Entries whose sizes sum to the table size plus ``extra``: at 0 nothing is
    # evicted, at +1 the oldest goes; both decoders agree on every step.
    dec = hp.Decoder(max_table_size=256)
    ref = ref_hpack.Decoder()
    ref.header_table.maxsize = 256
    blocks = [size_update(256), lit(b"a", b"x" * (100 - 33), 0x40), lit(b"b", b"y" * (156 - 33 + extra), 0x40)]
    for block in blocks:
        assert dec.decode(block) == [tuple(f) for f in ref.decode(block, raw=True)]
        assert dec.dynamic_table() == [tuple(e) for e in ref.header_table.dynamic_entries]
    assert dec.table_size == (256 + extra if extra <= 0 else 156 + extra)
    assert len(dec.dynamic_table()) == (2 if extra <= 0 else 1)


def test_entry_of_exactly_the_table_size_and_one_more(hp):
    dec = hp.Decoder(max_table_size=100)
    dec.decode(lit(b"a", b"b", 0x40))
    dec.decode(lit(b"n", b"v" * (100 - 33), 0x40))  # exactly 100: fits alone
    assert dec.table_size == 100 and len(dec.dynamic_table()) == 1
    dec.decode(lit(b"n", b"v" * (101 - 33), 0x40))  # 101: empties the table, not added
    assert dec.table_size == 0 and dec.dynamic_table() == []


# ---------------------------------------------------------------- integers and lengths


@pytest.mark.parametrize("block, reason", [
    (b"\x00\x7f\xff\xff\xff\xff\x0f", "integer too large"),  # name length 2^35-ish
    (b"\x00\x7f\x80\x80\x80\x80\x80\x00", "integer too large"),  # 0x80 continuation run
    (b"\x00\x7f" + b"\xff" * 100, "integer too large"),
    (b"\x00\x7f\xff\xff\xff\x7f", "truncated string"),  # 2^28 + 126: fits the bound, not the block
    (b"\x00\x01a\x7f\x80\x80\x80\x7f", "truncated string"),  # value length 127 + 127 * 2^21
    (b"\x00\x01a\x7f\x81\x80\x80\x80\x08", "integer too large"),  # 2^31 + 128 with five continuations
    (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "integer too large"),  # index near 2^63
    (b"\x00\x7f", "truncated integer"),
    (b"\x00\x01a", "truncated field"),
    (b"\x40\x7f\xff\xff", "truncated integer"),
])
def test_overflowing_and_truncated_integers(hp, block, reason):
    assert reason_of(hp, lambda: hp.Decoder().decode(block)) == reason


def test_longest_integer_allowed_is_exact(hp):
    # Four continuation octets are accepted, a fifth is refused, whatever they hold.
    dec = hp.Decoder()
    assert reason_of(hp, lambda: dec.decode(b"\xff\x80\x80\x80\x00")) == "index out of range"
    assert reason_of(hp, lambda: hp.Decoder().decode(b"\xff\x80\x80\x80\x80\x00")) == "integer too large"


def test_redundant_zero_continuations_decode(hp):
    # 0x7F then 0x80 0x00: the value 127 with a padded encoding (RFC 7541 allows it).
    assert hp.Decoder().decode(b"\x00\x01a\x7f\x80\x00" + b"z" * 127) == [(b"a", b"z" * 127)]


# ---------------------------------------------------------------- Huffman


def _huff(data: bytes) -> bytes:
    return HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)


@pytest.mark.parametrize("value, reason", [
    (b"\x00", "invalid huffman padding"),  # 8 zero bits: not a code prefix of EOS
    (b"\xff", "invalid huffman padding"),  # 8 one bits of padding
    (b"\xff\xff\xff\xff", "eos in huffman string"),  # EOS itself
    (b"\x1f\xff\xff\xff\xff", "eos in huffman string"),  # 'a' then EOS
    (b"\x18", "invalid huffman padding"),  # 'a' (00011) then three zero padding bits
    (_huff(b"abc") + b"\xff", "invalid huffman padding"),  # a whole octet of padding after a full one
])
def test_bad_huffman_in_name_and_value(hp, value, reason):
    n = len(value)
    as_value = b"\x00\x01a" + bytes([0x80 | n]) + value
    as_name = b"\x40" + bytes([0x80 | n]) + value + b"\x01b"
    for block in (as_value, as_name):
        assert reason_of(hp, lambda b=block: hp.Decoder().decode(b)) == reason


def test_huge_huffman_string_uses_a_buffer_it_does_not_keep(hp):
    # A 20,000-octet Huffman value, then small ones: both decode, with the scratch buffer bound honoured.
    value = bytes(random.Random(5).randrange(256) for _ in range(20000))
    enc = _huff(value)
    dec = hp.Decoder(max_header_list_size=1 << 20)
    block = b"\x00\x01a" + ref_int(len(enc), 7, 0x80) + enc
    assert dec.decode(block) == [(b"a", value)]
    assert dec.decode(b"\x00\x01b" + ref_int(len(_huff(b"small")), 7, 0x80) + _huff(b"small")) == [(b"b", b"small")]


# ---------------------------------------------------------------- header list size


def test_header_list_limit_at_exactly_the_boundary(hp):
    fields = [(b"name%d" % i, b"v" * i) for i in range(20)]
    size = sum(len(n) + len(v) + 32 for n, v in fields)
    block = b"".join(lit(n, v, 0x40) for n, v in fields)
    assert hp.Decoder(max_header_list_size=size).decode(block) == fields
    dec = hp.Decoder(max_header_list_size=size - 1)
    with pytest.raises(hp.HeaderListTooLarge) as info:
        dec.decode(block)
    assert (info.value.size, info.value.limit) == (size, size - 1)
    # The whole block was processed: the table holds what the peer's encoder inserted.
    assert dec.dynamic_table()[0] == fields[-1]


def test_header_list_of_one_indexed_field_repeated(hp):
    # A 4,000-octet entry referenced 100,000 times (one octet each): refused
    # once the whole block is read, the list never built past the limit.
    dec = hp.Decoder(max_header_list_size=65536)
    block = lit(b"a", b"b" * 3900, 0x40) + indexed(62) * 100000
    with pytest.raises(hp.HeaderListTooLarge) as info:
        dec.decode(block)
    assert info.value.size == 100001 * (1 + 3900 + 32)
    assert dec.decode(indexed(62)) == [(b"a", b"b" * 3900)]


# ---------------------------------------------------------------- tables of thousands of tiny entries


def test_decoder_table_of_thousands_of_tiny_entries(hp):
    # A 65536-octet table filled with 34-octet entries (about 1,900 live), churned
    # through 40,000 insertions so the lazy eviction compacts many times; every
    # 97th block reads back live entries by index, checked against the reference.
    rng = random.Random(7)
    dec = hp.Decoder(max_table_size=4096, max_header_list_size=1 << 24)
    dec.set_max_table_size(65536)
    ref = ref_hpack.Decoder(max_header_list_size=1 << 24)
    ref.max_allowed_table_size = 65536
    first = size_update(65536)
    for b in range(400):
        block = first + b"".join(lit(bytes([97 + rng.randrange(26)]), bytes([48 + rng.randrange(10)]), 0x40)
                                 for _ in range(100))
        first = b""
        if b % 97 == 96:
            live = len(ref.header_table.dynamic_entries)
            block += b"".join(indexed(62 + rng.randrange(live)) for _ in range(50))
            block += indexed(62 + live - 1)  # the oldest live entry
        got = dec.decode(block)
        assert got == [tuple(f) for f in ref.decode(block, raw=True)]
        if b % 97 == 96:
            assert dec.dynamic_table() == [tuple(e) for e in ref.header_table.dynamic_entries]
            assert dec.table_size == ref.header_table._current_size
            past = indexed(62 + len(ref.header_table.dynamic_entries))
            assert reason_of(hp, lambda p=past: dec.decode(p)) == "index out of range"  # changes nothing


def test_encoder_table_of_thousands_of_tiny_entries(hp):
    # The encoder's table at its 65536-octet cap with ~1,900 tiny entries,
    # churned: its look-up dicts must follow every eviction, or an index
    # would name an entry the peer no longer has.
    rng = random.Random(11)
    enc = hp.Encoder(max_table_size=65536, unindexed_names=())
    ref = ref_hpack.Decoder(max_header_list_size=1 << 24)
    ref.max_allowed_table_size = 65536
    ref.header_table.maxsize = 65536
    for _ in range(300):
        headers = [(b"n%d" % rng.randrange(60), b"%d" % rng.randrange(80)) for _ in range(100)]
        assert ref.decode(enc.encode(headers, huffman=rng.random() < 0.5), raw=True) == headers
        assert enc.dynamic_table() == [tuple(e) for e in ref.header_table.dynamic_entries]
    assert len(enc.dynamic_table()) > 1500


# ---------------------------------------------------------------- differential: our encoder, their decoder


def _random_list(rng: random.Random, hp, big: bool) -> list:
    names = [b":method", b":path", b":authority", b"content-type", b"cookie", b"authorization", b"x-trace",
             b"set-cookie", b"user-agent", b"x-long", b"grpc-timeout"]
    out: list = []
    for _ in range(rng.choice((0, 1, 3, 10, 40) if not big else (200, 2000))):
        r = rng.random()
        if r < 0.5:
            name = rng.choice(names)
        else:
            name = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
        r = rng.random()
        if r < (0.002 if big else 0.02):
            value = bytes(rng.randrange(256) for _ in range(rng.choice((16383, 16384, 16385, 40000))))
        elif r < 0.4:
            value = b"%d" % rng.randrange(30)
        else:
            value = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
        r = rng.random()
        if r < 0.1:
            out.append(hp.NeverIndexed(name, value))
        elif r < 0.15:
            out.append((name, value, True))
        elif r < 0.2:
            out.append((name, value, False))
        else:
            out.append((name, value))
    return out


def _expect_never(hp, field) -> bool:
    if type(field) is hp.NeverIndexed or (len(field) > 2 and field[2]):
        return True
    name, value = field[0], field[1]
    return name in hp.SENSITIVE_NAMES or (name == b"cookie" and len(value) < 20)


@pytest.mark.parametrize("seed", range(6))
def test_our_encoder_their_decoder_and_ours(hp, seed):
    # Random lists (never-indexed fields, values around and above 16 KiB, now
    # and then thousands of fields) with the peer changing its table size
    # between blocks, sometimes several times, sometimes to 0: the reference
    # decoder and ours read back the same list, flags and tables included.
    rng = random.Random(1000 + seed)
    enc = hp.Encoder()
    ours = hp.Decoder(max_table_size=4096, max_header_list_size=1 << 30)
    ours.set_max_table_size(70000)
    theirs = ref_hpack.Decoder(max_header_list_size=1 << 30)
    theirs.max_allowed_table_size = 70000
    sizes = (0, 1, 31, 32, 33, 100, 4096, 4097, 16384, 65536, 70000)
    for i in range(60):
        for _ in range(rng.choice((0, 0, 1, 2, 3))):
            enc.set_max_table_size(rng.choice(sizes))
        headers = _random_list(rng, hp, big=i % 20 == 19)
        block = enc.encode(headers, huffman=rng.random() < 0.7)
        got = theirs.decode(block, raw=True)
        assert [(f[0], f[1]) for f in got] == [(f[0], f[1]) for f in headers]
        assert [isinstance(f, ref_hpack.NeverIndexedHeaderTuple) for f in got] == \
            [_expect_never(hp, f) for f in headers]
        mine = ours.decode(block)
        assert [(f[0], f[1]) for f in mine] == [(f[0], f[1]) for f in headers]
        assert [type(f) is hp.NeverIndexed for f in mine] == [_expect_never(hp, f) for f in headers]
        assert enc.dynamic_table() == ours.dynamic_table() == [tuple(e) for e in theirs.header_table.dynamic_entries]
        assert enc.table_size == ours.table_size <= enc.max_table_size <= hpack.MAX_ENCODER_TABLE_SIZE


@pytest.mark.parametrize("seed", range(4))
def test_their_encoder_our_decoder(hp, seed):
    rng = random.Random(2000 + seed)
    theirs = ref_hpack.Encoder()
    ours = hp.Decoder(max_table_size=4096, max_header_list_size=1 << 30)
    ours.set_max_table_size(65536)
    for i in range(40):
        if rng.random() < 0.3:
            theirs.header_table_size = rng.choice((0, 32, 33, 4096, 65536))
        headers = [(f[0], f[1]) for f in _random_list(rng, hp, big=i % 20 == 19)]
        never = [rng.random() < 0.1 for _ in headers]
        marked = [(n, v, True) if s else (n, v) for (n, v), s in zip(headers, never)]
        got = ours.decode(theirs.encode(marked, huffman=rng.random() < 0.7))
        assert [(f[0], f[1]) for f in got] == headers
        assert ours.dynamic_table() == [tuple(e) for e in theirs.header_table.dynamic_entries]


def test_encoder_output_buffer_across_huge_and_small_blocks(hp):
    # A 100 KiB block (the kept buffer is dropped after it), then small ones,
    # then a huge one again: no byte of an older block leaks into a newer one.
    enc = hp.Encoder()
    ref = ref_hpack.Decoder(max_header_list_size=1 << 30)
    rng = random.Random(3)
    for size in (100000, 10, 0, 16384, 16385, 30, 200000, 5):
        headers = [(b"x-big", bytes(rng.randrange(256) for _ in range(size))), (b"x-n", b"%d" % size)]
        for huffman in (True, False):
            block = enc.encode(headers, huffman=huffman)
            assert ref.decode(block, raw=True) == headers


# ---------------------------------------------------------------- a failing encode keeps both ends in step


@pytest.mark.parametrize("bad", [(b"x", None), (None, b"x"), (b"x",), ("x", b"y"), (b"x", "y"), 5])
def test_encode_that_raises_midway_leaves_the_peer_in_step(hp, bad):
    # A header list whose third field is not bytes: the first two were
    # already written (and indexed) when the encoder notices. That block is
    # never sent, so the next one must not name what only it inserted, and a
    # table size change it carried must still reach the peer.
    enc = hp.Encoder()
    ref = ref_hpack.Decoder()
    assert ref.decode(enc.encode([(b"x-warm", b"1")]), raw=True) == [(b"x-warm", b"1")]
    enc.set_max_table_size(100)
    with pytest.raises((TypeError, ValueError)):
        enc.encode([(b"x-a", b"1"), (b"x-b", b"2"), bad])
    ref.max_allowed_table_size = 4096
    for headers in ([(b"x-a", b"1"), (b"x-b", b"2")], [(b"x-warm", b"1"), (b"x-a", b"1")]):
        assert ref.decode(enc.encode(headers), raw=True) == headers
        assert enc.dynamic_table() == [tuple(e) for e in ref.header_table.dynamic_entries]
    assert ref.header_table.maxsize <= 100


# ---------------------------------------------------------------- header blocks across CONTINUATION frames


def _server():
    conn = C.H2Connection(False, C.H2Settings())
    conn.initiate()
    conn.receive_data(F.PREFACE + F.settings_frame(()) + F.settings_frame(ack=True), 0)
    conn.data_to_send()
    return conn


def test_block_split_across_continuation_at_every_octet():
    # One connection, one stream per split point: HEADERS carries the first k
    # octets, CONTINUATION frames the rest (1 octet each for odd k, one frame
    # for even k); every request decodes the same, in a shared HPACK context.
    enc = ref_hpack.Encoder()
    conn = _server()
    request = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/split?q=1"),
               (b":authority", b"example.com"), (b"x-indexed", b"same-each-time"),
               (b"authorization", b"Bearer abc"), (b"x-per-stream", b"")]
    sid = 1
    for k in range(0, 80):
        fields = request[:-1] + [(b"x-per-stream", b"%d" % k)]
        # Literals that stay literals keep the block long; x-indexed is sent by index after the first time.
        block = enc.encode([f if f[0] == b"x-indexed" else (f[0], f[1], True) for f in fields])
        if k > len(block):
            break
        frames = F.raw_frame(F.HEADERS, F.FLAG_END_STREAM, sid, block[:k])
        rest = block[k:]
        pieces = [rest[i:i + 1] for i in range(len(rest))] if k % 2 else [rest]
        for i, piece in enumerate(pieces):
            frames += F.raw_frame(F.CONTINUATION, F.FLAG_END_HEADERS if i == len(pieces) - 1 else 0, sid, piece)
        if not rest:
            frames = F.raw_frame(F.HEADERS, F.FLAG_END_STREAM | F.FLAG_END_HEADERS, sid, block)
        events = []
        for i in range(0, len(frames), 7):  # and the bytes themselves arrive 7 at a time
            events += conn.receive_data(frames[i:i + 7], 0)
        got = [e for e in events if type(e) is C.RequestReceived]
        assert len(got) == 1 and [(f[0], f[1]) for f in got[0].headers] == fields, (k, events)
        conn.send_headers(sid, [(b":status", b"204")], True)
        conn.data_to_send()
        sid += 2
    assert sid > 40 and not conn.dead


def test_size_update_inside_a_continuation_is_after_a_field():
    # The block is one unit: an update at the start of a CONTINUATION frame's
    # fragment is in the middle of the block, a COMPRESSION_ERROR.
    conn = _server()
    first = b"\x82\x86\x84" + lit(b":authority", b"a")
    frames = F.raw_frame(F.HEADERS, F.FLAG_END_STREAM, 1, first)
    frames += F.raw_frame(F.CONTINUATION, F.FLAG_END_HEADERS, 1, size_update(0))
    events = conn.receive_data(frames, 0)
    ended = [e for e in events if type(e) is C.ConnectionTerminated]
    assert len(ended) == 1 and ended[0].error_code == F.COMPRESSION_ERROR, events
    assert conn.dead


def test_headers_on_a_forgotten_stream_still_feed_the_hpack_context():
    # HEADERS on a stream closed so long ago the closed-stream ring forgot it:
    # a stream error, but its block (which inserts an entry) is decoded, so the
    # next stream's reference to that entry reads right.
    enc = ref_hpack.Encoder()
    conn = _server()
    req = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]
    for sid in range(1, 1100, 2):  # 550 closed streams: past the ring's 256
        events = conn.receive_data(F.headers_frames(sid, enc.encode(req), True), 0)
        assert [type(e) for e in events] == [C.RequestReceived]
        conn.send_headers(sid, [(b":status", b"204")], True)
    conn.data_to_send()
    late = enc.encode([(b"x-late-entry", b"kept-in-step")])
    events = conn.receive_data(F.headers_frames(1, late, True), 0)
    assert [(type(e), e.error_code) for e in events] == [(C.StreamReset, F.STREAM_CLOSED)]
    fields = req + [(b"x-late-entry", b"kept-in-step")]
    events = conn.receive_data(F.headers_frames(1101, enc.encode(fields), True), 0)
    assert [type(e) for e in events] == [C.RequestReceived] and events[0].headers == fields
    assert not conn.dead


# ---------------------------------------------------------------- mutated blocks, compiled against uncompiled


@pytest.mark.parametrize("seed", range(4))
def test_mutated_block_streams_compiled_and_pure_agree(seed):
    # Valid block sequences from the reference encoder (shared context, size
    # changes), with octets flipped, dropped or duplicated now and then: both
    # builds give the same list or the same error, and keep the same table.
    # After an error a connection would end, so the pair starts afresh.
    rng = random.Random(3000 + seed)
    theirs = ref_hpack.Encoder()
    decoders = (hpack.Decoder(max_header_list_size=4000), pure.Decoder(max_header_list_size=4000))
    for _ in range(400):
        if rng.random() < 0.1:
            theirs.header_table_size = rng.choice((0, 64, 256, 4096))
        headers = [(f[0], f[1][:300]) for f in _random_list(rng, pure, big=False)]
        block = bytearray(theirs.encode(headers, huffman=rng.random() < 0.7))
        for _ in range(rng.choice((0, 0, 1, 2))):
            if not block:
                break
            at = rng.randrange(len(block))
            op = rng.randrange(3)
            if op == 0:
                block[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                del block[at]
            else:
                block.insert(at, block[at])
        outcomes = []
        for dec in decoders:
            try:
                outcomes.append(("ok", [(f[0], f[1], type(f).__name__) for f in dec.decode(bytes(block))]))
            except (hpack.HpackError, pure.HpackError) as err:
                outcomes.append(("hpack", err.reason))
            except (hpack.HeaderListTooLarge, pure.HeaderListTooLarge) as err:
                outcomes.append(("too-large", err.size))
        assert outcomes[0] == outcomes[1], bytes(block).hex()
        assert decoders[0].dynamic_table() == decoders[1].dynamic_table()
        assert decoders[0].table_size == decoders[1].table_size
        if outcomes[0][0] == "hpack":
            theirs = ref_hpack.Encoder()
            decoders = (hpack.Decoder(max_header_list_size=4000), pure.Decoder(max_header_list_size=4000))

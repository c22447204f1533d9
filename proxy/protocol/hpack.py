"""HPACK (RFC 7541) for the HTTP/2 codec: Huffman coding, the encoder and decoder contexts, field validation.

Sans-IO and per connection: one Encoder for what we send, one Decoder for
what the peer sends. The decoder is built for hostile input: integers are
bounded, Huffman padding is checked, and the header list size is counted as
the list grows, so an HPACK bomb never materialises. ``validate_headers``
applies the RFC 9113 8.2/8.3 field rules that HPACK itself does not know
about. The same source runs uncompiled and compiled with ``hpack.pxd``.
"""

import cython

# ---------------------------------------------------------------- static table

# RFC 7541 Appendix A; index i is STATIC_TABLE[i - 1].
STATIC_TABLE = (
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)
_STATIC = STATIC_TABLE
_STATIC_COUNT = 61
_FIRST_DYNAMIC = 62
_ENTRY_OVERHEAD = 32  # RFC 7541 4.1, also RFC 9113's per-field overhead in the header list size
_INT_ROOM = 11  # octets an encoded integer can take: a prefix octet and 10 of 7 bits (any Py_ssize_t)
# An encoder's output buffer is kept between blocks, up to this many times
# the dynamic table size in force (never below _KEEP_FLOOR); one grown past
# that by a rare huge block is dropped rather than kept for the connection's
# lifetime. A peer allowing a larger table (SETTINGS_HEADER_TABLE_SIZE) is
# sent larger repeated header lists, whose blocks then reuse one buffer: at
# the default 4096 this keeps 16 KiB, as a fixed limit did before.
_KEEP_TABLES = 4
_KEEP_FLOOR = 4096
# Each encoder remembers, per position of the last header lists (up to this
# many fields), what the field there encoded to: one that comes again at the
# same place (most do: one client, one app, the same head each time) is
# recognised by comparing its name and value, with no hash of a new tuple and
# no dict look-up. Each decoder remembers the octets of the literals it read
# per position and the field they gave: the same octets again give the same
# field object without a Huffman decode. Fields over _MEMO_OCTETS are not
# remembered, so what a connection keeps is bounded (a few KiB) whatever
# the peer sends.
_MEMO_FIELDS = 32
_MEMO_OCTETS = 256

# Encoder look-ups: full match and name match, lowest index first, stored
# negated. Each encoder starts its own look-up dicts from copies of these and
# adds its dynamic entries as sequence numbers (>= 0), so one dict look-up
# answers for both tables.
_STATIC_FULL: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAME: dict[bytes, int] = {}
for _i, _entry in enumerate(STATIC_TABLE):
    _STATIC_FULL.setdefault(_entry, -(_i + 1))
    _STATIC_NAME.setdefault(_entry[0], -(_i + 1))
del _i, _entry

# ---------------------------------------------------------------- Huffman code

# Code lengths in bits for symbols 0..255 and EOS (256), RFC 7541 Appendix B.
# The Appendix B code is canonical: within one length, codes are consecutive
# in symbol order, and each length starts where the previous one ended
# (shifted left). So the lengths alone determine every code; the tests check
# the derived codes against the reference implementation and the RFC vectors.
_HUFFMAN_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,  # 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,  # 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,  # ' ' .. '/'
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,  # '0' .. '?'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,  # '@' .. 'O'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,  # 'P' .. '_'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,  # '`' .. 'o'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,  # 'p' .. 0x7f
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,  # 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,  # 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,  # 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,  # 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,  # 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,  # 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,  # 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,  # 0xf0
    30,  # EOS
)
_EOS = 256

# Decoder transition entries (4 bits of input per step): bits 0-7 the symbol
# emitted, 8-15 the next state, plus these flags.
_HF_EMIT = 0x10000
_HF_FAIL = 0x20000  # the step decodes EOS, which must never appear in a string


def _canonical_codes(lengths):
    order = sorted(range(len(lengths)), key=lambda sym: (lengths[sym], sym))
    codes = [0] * len(lengths)
    code = 0
    prev_len = lengths[order[0]]
    for sym in order:
        code <<= lengths[sym] - prev_len
        prev_len = lengths[sym]
        codes[sym] = code
        code += 1
    if code != 1 << prev_len:  # Kraft equality: the code is complete
        raise AssertionError("Huffman code lengths do not form a complete code")
    return codes


def _huffman_tree(codes, lengths):
    # Internal nodes numbered from the root (0); a child is a node number, or
    # -(symbol + 1) for a leaf. 257 leaves make exactly 256 internal nodes, so
    # a decoder state fits in one byte.
    children = [[0, 0]]
    for sym in range(len(codes)):
        node = 0
        for k in range(lengths[sym] - 1, -1, -1):
            bit = (codes[sym] >> k) & 1
            if k == 0:
                children[node][bit] = -(sym + 1)
            else:
                if children[node][bit] == 0:
                    children.append([0, 0])
                    children[node][bit] = len(children) - 1
                node = children[node][bit]
    if len(children) != 256:
        raise AssertionError("unexpected Huffman tree shape")
    return children


def _decode_table(children):
    # For every (state, nibble) pair, where 4 more input bits lead.
    table = []
    for state in range(256):
        for nibble in range(16):
            node = state
            entry = 0
            for k in (3, 2, 1, 0):
                nxt = children[node][(nibble >> k) & 1]
                if nxt < 0:
                    if -nxt - 1 == _EOS:
                        entry |= _HF_FAIL
                        break
                    # Codes are at least 5 bits long, so one nibble completes at most one symbol.
                    entry |= _HF_EMIT | (-nxt - 1)
                    node = 0
                else:
                    node = nxt
            table.append(entry | (node << 8))
    return table


def _accepting_states(children):
    # A string may end at the root, or after at most 7 padding bits that are
    # the leading (all-ones) bits of EOS.
    accept = [0] * 256
    accept[0] = 1
    node = 0
    for _ in range(7):
        node = children[node][1]
        accept[node] = 1
    return accept


def huffman_codes():
    """The Huffman code as ``[(code, bit length)]`` for symbols 0..256 (256 is EOS)."""
    return list(zip(_canonical_codes(_HUFFMAN_LENGTHS), _HUFFMAN_LENGTHS))


_HUFFMAN_TREE = _huffman_tree(_canonical_codes(_HUFFMAN_LENGTHS), _HUFFMAN_LENGTHS)
# Compiled, these four are C arrays (see hpack.pxd); uncompiled, lists.
_HUFFMAN_CODE = _canonical_codes(_HUFFMAN_LENGTHS)
_HUFFMAN_LEN = list(_HUFFMAN_LENGTHS)
_HUFFMAN_DECODE = _decode_table(_HUFFMAN_TREE)
_HUFFMAN_ACCEPT = _accepting_states(_HUFFMAN_TREE)
del _HUFFMAN_TREE

# Integers take at most this many continuation bytes (28 bits beyond the
# prefix, over 268 million): nothing legitimate in a header block is larger,
# and it keeps a run of 0x80 bytes from spinning or overflowing.
_MAX_INT_CONTINUATION = 4
# Huffman output buffer a decoder keeps between strings (starts at 256).
_MAX_SCRATCH = 4096

# ---------------------------------------------------------------- errors


class HpackError(Exception):
    """The peer's header block cannot be decoded: a connection error of type COMPRESSION_ERROR."""

    error_code = 0x9  # COMPRESSION_ERROR

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class HeaderListTooLarge(Exception):
    """The decoded header list exceeds ``max_header_list_size`` (name + value + 32 per field).

    Raised only after the whole block was processed, so the dynamic table is
    still in step with the peer's encoder and the connection can go on: the
    stream gets a 431 or RST_STREAM, not the connection a GOAWAY.
    """

    def __init__(self, size, limit):
        super().__init__(size, limit)
        self.size = size
        self.limit = limit
        self.reason = "header list too large"

    def __str__(self):
        return f"header list too large: {self.size} > {self.limit}"


class ProtocolError(Exception):
    """A decoded field section breaks RFC 9113 8.2/8.3: a malformed message, stream error PROTOCOL_ERROR."""

    error_code = 0x1  # PROTOCOL_ERROR

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class NeverIndexed(tuple):
    """A (name, value) field that must stay out of every compression context (RFC 7541 7.1.3).

    The decoder returns never-indexed literals as this tuple subclass, and the
    encoder sends it as never-indexed again, so a proxy keeps the peer's
    choice when it forwards the field. It unpacks and compares like a plain
    2-tuple.
    """

    __slots__ = ()

    def __new__(cls, name, value):
        return tuple.__new__(cls, (name, value))

    def __repr__(self):
        return f"NeverIndexed({self[0]!r}, {self[1]!r})"

    def __reduce__(self):
        return (NeverIndexed, (self[0], self[1]))


# ---------------------------------------------------------------- Huffman


def huffman_encoded_length(data):
    """Octets the Huffman encoding of ``data`` takes, EOS padding included."""
    p = data
    bits = 0
    for i in range(len(data)):
        bits += _HUFFMAN_LEN[p[i]]
    return (bits + 7) >> 3


def _huffman_encode_at(buf, pos, data):
    # Writes at buf[pos:], which the caller has sized (a Huffman string is
    # never written when it would be longer than ``data``); returns the end.
    q = buf
    p = data
    acc = 0
    bits = 0
    for i in range(len(data)):
        c = p[i]
        acc = (acc << _HUFFMAN_LEN[c]) | _HUFFMAN_CODE[c]
        bits += _HUFFMAN_LEN[c]
        while bits >= 8:
            bits -= 8
            q[pos] = (acc >> bits) & 0xFF
            pos += 1
        acc &= (1 << bits) - 1  # at most 7 bits carried over; keeps a Python int small too
    if bits > 0:
        q[pos] = ((acc << (8 - bits)) | (0xFF >> bits)) & 0xFF
        pos += 1
    return pos


def huffman_encode(data):
    """Huffman-encode ``data`` with the RFC 7541 code, padding the last octet with EOS bits."""
    out = bytearray(huffman_encoded_length(data))
    _huffman_encode_at(out, 0, data)
    return bytes(out)


def _huffman_decode(p, start, end, scratch):
    # Two table steps per input octet; the symbols go into scratch, which the
    # caller sized for the worst case (every code at least 5 bits long).
    q = scratch
    k = 0
    state = 0
    for i in range(start, end):
        c = p[i]
        e = _HUFFMAN_DECODE[(state << 4) | (c >> 4)]
        if e & _HF_FAIL:
            raise HpackError("eos in huffman string")
        if e & _HF_EMIT:
            q[k] = e & 0xFF
            k += 1
        state = (e >> 8) & 0xFF
        e = _HUFFMAN_DECODE[(state << 4) | (c & 0x0F)]
        if e & _HF_FAIL:
            raise HpackError("eos in huffman string")
        if e & _HF_EMIT:
            q[k] = e & 0xFF
            k += 1
        state = (e >> 8) & 0xFF
    if not _HUFFMAN_ACCEPT[state]:
        raise HpackError("invalid huffman padding")
    if not cython.compiled:
        return bytes(scratch[:k])
    return q[:k]


def huffman_decode(data):
    """Decode a Huffman string; HpackError when it holds EOS or its padding is not 0-7 one bits."""
    return _huffman_decode(data, 0, len(data), bytearray(len(data) * 8 // 5 + 1))


# ---------------------------------------------------------------- integers


def encode_integer(value, prefix_bits):
    """The RFC 7541 5.1 integer representation of ``value`` with an N-bit prefix (first octet's flags zero)."""
    if value < 0 or not 1 <= prefix_bits <= 8:
        raise ValueError("invalid integer or prefix")
    out = bytearray(_INT_ROOM)
    return bytes(out[:_put_int(out, 0, 0, (1 << prefix_bits) - 1, value)])


def _put_int(buf, pos, flags, mask, value):
    # Writes at buf[pos:] (the caller reserved _INT_ROOM octets); returns the end.
    q = buf
    if value < mask:
        q[pos] = flags | value
        return pos + 1
    q[pos] = flags | mask
    pos += 1
    value -= mask
    while value >= 0x80:
        q[pos] = (value & 0x7F) | 0x80
        pos += 1
        value >>= 7
    q[pos] = value
    return pos + 1


def _put_string(buf, pos, data, huffman):
    # Huffman only when it does not make the string longer; ties go to Huffman,
    # as in the RFC 7541 Appendix C examples. The caller reserved _INT_ROOM +
    # len(data) octets at pos.
    n = len(data)
    if huffman and n > 0:
        hlen = huffman_encoded_length(data)
        if hlen <= n:
            return _huffman_encode_at(buf, _put_int(buf, pos, 0x80, 0x7F, hlen), data)
    pos = _put_int(buf, pos, 0, 0x7F, n)
    q = buf
    p = data
    for i in range(n):
        q[pos + i] = p[i]
    return pos + n


# ---------------------------------------------------------------- encoder

# Sent as never-indexed literals unless the caller says otherwise: credentials
# whose value must not leak through a shared compression context. Cookies
# shorter than _SHORT_COOKIE are never indexed too: they are guessable.
SENSITIVE_NAMES = frozenset((b"authorization", b"proxy-authorization"))
_SHORT_COOKIE = 20
# Sent without indexing: values that change on nearly every message, so an
# entry would only push useful ones out of the table. Not ``date``: it changes
# once a second, so on a busy connection one entry a second saves each response
# its ~24-octet Huffman literal and the peer's decoding of it (nghttp2 and
# hyper's h2 index it too).
UNINDEXED_NAMES = frozenset(
    (
        b"content-length", b"age", b"etag", b"last-modified", b"if-modified-since",
        b"if-none-match", b"location", b"set-cookie",
    )
)
# The encoder never keeps a larger table than this, whatever the peer allows.
MAX_ENCODER_TABLE_SIZE = 65536


class Encoder:
    """One connection's HPACK encoding context: header lists in, header blocks out.

    ``max_table_size`` is the dynamic table size both ends start from (the
    peer's SETTINGS_HEADER_TABLE_SIZE, 4096 unless it said otherwise);
    ``set_max_table_size`` follows later changes. A field is sent as a
    never-indexed literal when it is a ``NeverIndexed``, a 3-tuple whose third
    item is true, its name is in ``sensitive_names``, or it is a cookie shorter
    than 20 octets. Names in ``unindexed_names``, ``:path`` values with a query,
    and entries over 3/4 of the table are sent without indexing; everything
    else is indexed.
    """

    def __init__(self, max_table_size=4096, sensitive_names=SENSITIVE_NAMES, unindexed_names=UNINDEXED_NAMES):
        if max_table_size < 0:
            raise ValueError("max_table_size must not be negative")
        self._capacity = max_table_size if max_table_size < MAX_ENCODER_TABLE_SIZE else MAX_ENCODER_TABLE_SIZE
        self._table = []
        self._first = 0
        self._table_size = 0
        self._inserted = 0
        self._buf = bytearray(256)
        self._keep = _keep_limit(self._capacity)
        self._memo = []
        self._full = dict(_STATIC_FULL)
        self._names = dict(_STATIC_NAME)
        self._pending = False
        self._pending_min = 0
        self._sensitive = frozenset(sensitive_names)
        # Static entries that are sent never-indexed (a sensitive name, the empty
        # cookie) are left out of the full-match look-up, so a hit needs no check.
        for entry in STATIC_TABLE:
            if entry[0] in self._sensitive or (entry[0] == b"cookie" and len(entry[1]) < _SHORT_COOKIE):
                self._full.pop(entry, None)
        self._unindexed = frozenset(unindexed_names)

    @property
    def max_table_size(self):
        """The dynamic table size in use (what the last size update announced)."""
        return self._capacity

    @property
    def table_size(self):
        """Octets the dynamic table holds now (name + value + 32 per entry)."""
        return self._table_size

    @property
    def buffer_size(self):
        """Octets of the output buffer kept for the next block."""
        return len(self._buf)

    @property
    def buffer_limit(self):
        """The largest output buffer kept between blocks (derived from the table size in use)."""
        return self._keep

    def dynamic_table(self):
        """The dynamic table, newest entry (index 62) first."""
        return self._table[self._first:][::-1]

    def set_max_table_size(self, size):
        """Follow the peer's new SETTINGS_HEADER_TABLE_SIZE; the next block starts with the size update(s)."""
        if size < 0:
            raise ValueError("size must not be negative")
        if size > MAX_ENCODER_TABLE_SIZE:
            size = MAX_ENCODER_TABLE_SIZE
        if size == self._capacity and not self._pending:
            return
        # RFC 7541 4.2: several changes between two blocks are signalled as
        # the smallest size seen, then the final one.
        if not self._pending or size < self._pending_min:
            self._pending_min = size
        self._pending = True
        self._capacity = size
        self._keep = _keep_limit(size)
        _encoder_evict(self, size)

    def encode(self, headers, huffman=True):
        """Encode one header list (``(name, value)`` pairs of lower-case bytes) into one header block."""
        # Written in place into one buffer kept for the connection: no
        # bytearray grown octet by octet, no new buffer per block.
        pos = 0
        try:
            if self._pending:
                pos = _reserve(self, 0, 2 * _INT_ROOM)
                if self._pending_min < self._capacity:
                    pos = _put_int(self._buf, pos, 0x20, 0x1F, self._pending_min)
                pos = _put_int(self._buf, pos, 0x20, 0x1F, self._capacity)
                self._pending = False
            i = 0
            for field in headers:
                pos = _encode_field(self, pos, field, huffman, i)
                i += 1
        except BaseException:
            # This block is never sent, but the fields before the bad one are
            # in our table and a pending size update was spent on it: without
            # a restart the next block would name entries the peer never got.
            _encoder_restart(self)
            raise
        q = self._buf
        if not cython.compiled:
            block = bytes(q[:pos])
        else:
            block = q[:pos]
        if len(self._buf) > self._keep:
            self._buf = bytearray(256)
        return block


def _keep_limit(capacity):
    keep = _KEEP_TABLES * capacity
    return keep if keep > _KEEP_FLOOR else _KEEP_FLOOR


class _FieldMemo:
    """What the field at one position of the last header list encoded to (see _MEMO_FIELDS)."""

    def __init__(self):
        self.name = None  # None: nothing remembered here
        self.value = None
        self.found = 0  # sent indexed: the look-up's answer (a negated static index or an entry's seq)
        self.literal = None  # or sent as these octets (a literal the table never changes the encoding of)
        self.huffman = False


def _encoder_restart(enc):
    # Empty our table and owe the peer a size update to 0 then to ours, which
    # empties its table too: both ends start again from the same state.
    enc._memo = []
    _encoder_evict(enc, 0)
    enc._pending = True
    enc._pending_min = 0
    return 0


def _reserve(enc, pos, need):
    # Room for ``need`` more octets after pos (at least doubling, so a block
    # of many fields grows the buffer a few times, not once per field).
    size = len(enc._buf)
    if pos + need > size:
        enc._buf.extend(bytes(size if pos + need <= 2 * size else pos + need - size))
    return pos


@cython.boundscheck(False)  # every index is after a length check
@cython.wraparound(False)
def _encode_field(enc, pos, field, huffman, i):
    if isinstance(field, tuple):
        # Read in place (a generic item look-up costs a few dozen instructions); the length is checked first.
        n = len(cython.cast(tuple, field))
        if n < 2:
            raise TypeError("a header field is a (name, value) tuple")
        name = cython.cast(tuple, field)[0]
        value = cython.cast(tuple, field)[1]
    else:
        n = len(field)
        if n < 2:
            raise TypeError("a header field is a (name, value) tuple")
        name = field[0]
        value = field[1]
    if name is None or value is None:
        raise TypeError("header names and values are bytes")
    # The most a field can take: a flags octet, three integers, both strings raw.
    _reserve(enc, pos, 1 + 3 * _INT_ROOM + len(name) + len(value))
    if type(field) is NeverIndexed or (n > 2 and field[2]):
        return _put_literal(enc, pos, 0x10, 0x0F, name, value, huffman)
    memo = None
    if i < _MEMO_FIELDS:
        if i < len(enc._memo):
            memo = enc._memo[i]
            if memo.name == name and memo.value == value:
                literal = memo.literal
                if literal is None:
                    # Indexed last time: still so while its entry is live (static ones always are).
                    found_at = memo.found
                    if found_at < 0 or found_at >= enc._inserted - (len(enc._table) - enc._first):
                        return _put_int(enc._buf, pos, 0x80, 0x7F, _table_index(enc, found_at))
                elif memo.huffman == huffman:
                    return _put_octets(enc._buf, pos, literal)
        else:
            memo = _FieldMemo()
            enc._memo.append(memo)
        if len(name) + len(value) <= _MEMO_OCTETS:
            memo.name = name
            memo.value = value
            memo.literal = None
        else:
            memo.name = None
            memo = None
    # The look-up first: it never answers for a field that must go never-indexed
    # (see Encoder.__init__), so a repeated field costs one dict look-up. A
    # field decoded from a table entry is the entry's own tuple, stored as the
    # key when it was indexed here: the look-up then compares by identity.
    key = field if n == 2 and type(field) is tuple else (name, value)
    found = enc._full.get(key)
    if found is not None:
        if memo is not None:
            memo.found = found
        return _put_int(enc._buf, pos, 0x80, 0x7F, _table_index(enc, found))
    if name in enc._sensitive or (len(value) < _SHORT_COOKIE and name == b"cookie"):
        if memo is not None:
            memo.name = None
        return _put_literal(enc, pos, 0x10, 0x0F, name, value, huffman)
    if name in enc._unindexed:
        # Never entered in the table, so its name's index is static or none: the same octets every time.
        end = _put_literal(enc, pos, 0x00, 0x0F, name, value, huffman)
        if memo is not None:
            memo.literal = bytes(enc._buf[pos:end])
            memo.huffman = huffman
        return end
    size = len(name) + len(value) + _ENTRY_OVERHEAD
    if size * 4 > enc._capacity * 3 or (len(name) == 5 and name == b":path" and b"?" in value):
        if memo is not None:
            memo.name = None
        return _put_literal(enc, pos, 0x00, 0x0F, name, value, huffman)
    pos = _put_literal(enc, pos, 0x40, 0x3F, name, value, huffman)
    _encoder_insert(enc, key, size)
    if memo is not None:
        memo.found = enc._inserted - 1
    return pos


def _put_octets(buf, pos, data):
    # An encoding remembered whole; the caller reserved room for the field raw, which is at least as long.
    q = buf
    p = data
    for k in range(len(data)):
        q[pos + k] = p[k]
    return pos + len(data)


def _table_index(enc, found):
    # A look-up result: a negated static index, or a dynamic entry's sequence number.
    if found < 0:
        return -found
    return _FIRST_DYNAMIC + enc._inserted - 1 - found


def _put_literal(enc, pos, flags, mask, name, value, huffman):
    buf = enc._buf
    found = enc._names.get(name)
    if found is None:
        pos = _put_string(buf, _put_int(buf, pos, flags, mask, 0), name, huffman)  # index 0: a new name
    else:
        pos = _put_int(buf, pos, flags, mask, _table_index(enc, found))
    return _put_string(buf, pos, value, huffman)


def _encoder_insert(enc, entry, size):
    # ``entry``: the (name, value) tuple the field came as, kept as the look-up's key (see _encode_field).
    _encoder_evict(enc, enc._capacity - size)
    name = entry[0]
    seq = enc._inserted
    enc._inserted = seq + 1
    enc._table.append(entry)
    enc._table_size += size
    enc._full[entry] = seq
    if enc._names.get(name, 0) >= 0:  # a static name keeps its (shorter, stable) index
        enc._names[name] = seq
    return 0


def _encoder_evict(enc, room):
    # Drop the oldest entries until the table holds at most ``room`` octets.
    # They leave by moving _first; the list is compacted in bulk (see _compact).
    table = enc._table
    n = len(table)
    first = enc._first
    while enc._table_size > room and first < n:
        entry = table[first]
        table[first] = None
        name = entry[0]
        enc._table_size -= len(name) + len(entry[1]) + _ENTRY_OVERHEAD
        seq = enc._inserted - n + first
        if enc._full.get(entry) == seq:
            del enc._full[entry]
        if enc._names.get(name) == seq:
            del enc._names[name]
        first += 1
    enc._first = _compact(table, first)
    return 0


def _compact(table, first):
    # A table whose oldest ``first`` slots are dead: removing them from the
    # front of the list moves every live entry, so that waits until they are
    # as many as the live ones (each eviction costs O(1) amortized, not O(table)).
    if first >= 16 and 2 * first >= len(table):
        del table[:first]
        return 0
    return first


# ---------------------------------------------------------------- decoder


class Decoder:
    """One connection's HPACK decoding context: header blocks in, header lists out.

    ``max_table_size`` is our SETTINGS_HEADER_TABLE_SIZE (the table both ends
    start with, and the ceiling for size updates); ``set_max_table_size``
    changes it once the peer acknowledged new settings. ``max_header_list_size``
    bounds the decoded list as RFC 9113 counts it (name + value + 32 per field).
    """

    def __init__(self, max_table_size=4096, max_header_list_size=65536):
        if max_table_size < 0 or max_header_list_size < 0:
            raise ValueError("sizes must not be negative")
        self._table = []
        self._first = 0
        self._table_size = 0
        self._capacity = max_table_size
        self._limit = max_table_size
        self._update_required = False
        self._pos = 0
        self._scratch = bytearray(256)
        self._memo = []  # _LiteralMemo per position of the last header lists
        self.max_header_list_size = max_header_list_size

    @property
    def max_table_size(self):
        """The dynamic table size in force (the peer's last size update, or the starting size)."""
        return self._capacity

    @property
    def table_size(self):
        """Octets the dynamic table holds now (name + value + 32 per entry)."""
        return self._table_size

    def dynamic_table(self):
        """The dynamic table, newest entry (index 62) first."""
        return self._table[self._first:][::-1]

    def set_max_table_size(self, size):
        """Apply our acknowledged SETTINGS_HEADER_TABLE_SIZE; a smaller one must be confirmed by the next block."""
        if size < 0:
            raise ValueError("size must not be negative")
        self._limit = size
        if size < self._capacity:
            self._update_required = True

    def decode(self, block):
        """Decode one complete header block into a list of ``(name, value)`` tuples.

        Raises HpackError (connection error COMPRESSION_ERROR) for a block that
        cannot be decoded, HeaderListTooLarge once the block is fully
        processed if the list outgrew ``max_header_list_size``.
        """
        if block is None:
            raise TypeError("block must be bytes, not None")
        p = block
        end = len(block)
        headers = []
        list_size = 0
        list_limit = self.max_header_list_size
        fields_started = False
        k = 0  # the field's position in the list
        self._pos = 0
        while self._pos < end:
            c = p[self._pos]
            if c & 0x80:
                # Indexed field (RFC 7541 6.1).
                entry = _decoder_entry(self, _read_int(self, p, end, 0x7F))
            elif c & 0x40:
                # Literal with incremental indexing (6.2.1).
                entry = _literal(self, block, p, end, 0x3F, False, k)
                _decoder_insert(self, entry)
            elif c & 0x20:
                # Dynamic table size update (6.3): only before the first field.
                if fields_started:
                    raise HpackError("table size update after a field")
                size = _read_int(self, p, end, 0x1F)
                if size > self._limit:
                    raise HpackError("table size update above the settings limit")
                self._capacity = size
                _decoder_evict(self, size)
                self._update_required = False
                continue
            else:
                # Literal without indexing (6.2.2) or never indexed (6.2.3).
                entry = _literal(self, block, p, end, 0x0F, (c & 0x10) != 0, k)
            k += 1
            if not fields_started:
                fields_started = True
                if self._update_required:
                    raise HpackError("missing table size update")
            # RFC 9113 6.5.2: the size is counted as the list grows. Past the
            # limit nothing more is kept, but decoding goes on to the end of
            # the block so the dynamic table stays in step with the peer.
            list_size += _entry_size(entry)
            if list_size <= list_limit:
                headers.append(entry)
        if self._update_required:
            raise HpackError("missing table size update")
        if list_size > list_limit:
            raise HeaderListTooLarge(list_size, list_limit)
        return headers


def _read_int(dec, p, end, mask):
    # The integer at dec._pos with the given prefix mask (RFC 7541 5.1); the
    # caller made sure dec._pos < end.
    pos = dec._pos
    value = p[pos] & mask
    pos += 1
    if value == mask:
        shift = 0
        while True:
            if pos >= end:
                raise HpackError("truncated integer")
            c = p[pos]
            pos += 1
            value += (c & 0x7F) << shift
            if not c & 0x80:
                break
            shift += 7
            if shift >= 7 * _MAX_INT_CONTINUATION:
                raise HpackError("integer too large")
    dec._pos = pos
    return value


def _read_string(dec, block, p, end):
    if dec._pos >= end:
        raise HpackError("truncated field")
    huffman = p[dec._pos] & 0x80
    length = _read_int(dec, p, end, 0x7F)
    start = dec._pos
    if length > end - start:
        raise HpackError("truncated string")
    dec._pos = start + length
    if not huffman:
        return block[start : start + length]
    # Every code is at least 5 bits long. Buffers for unusually long strings
    # are not kept, so one huge field does not pin memory for the connection.
    need = length * 8 // 5 + 1
    if need > len(dec._scratch):
        if need > _MAX_SCRATCH:
            return _huffman_decode(p, start, start + length, bytearray(need))
        dec._scratch = bytearray(_MAX_SCRATCH)
    return _huffman_decode(p, start, start + length, dec._scratch)


class _LiteralMemo:
    """The octets of the literal last read at one position of a header list, and the field they gave."""

    def __init__(self):
        self.octets = None
        self.entry = None


def _literal(dec, block, p, end, mask, never, k):
    # A literal representation is self-delimiting and, when its name is no
    # dynamic table entry, means the same whatever the table holds: octets
    # equal to the ones last read at this position are the same field.
    start = dec._pos
    memo = None
    if k < _MEMO_FIELDS:
        if k < len(dec._memo):
            memo = dec._memo[k]
            octets = memo.octets
            if octets is not None:
                n = len(octets)
                if n <= end - start:
                    q = octets
                    j = 0
                    while j < n and p[start + j] == q[j]:
                        j += 1
                    if j == n:
                        dec._pos = start + n
                        return memo.entry
        else:
            memo = _LiteralMemo()
            dec._memo.append(memo)
    entry = _read_literal(dec, block, p, end, mask, never)
    if memo is not None:
        stop = dec._pos
        dec._pos = start
        index = _read_int(dec, p, end, mask)
        dec._pos = stop
        if index <= _STATIC_COUNT and stop - start <= _MEMO_OCTETS:
            memo.octets = block[start:stop]
            memo.entry = entry
        else:
            memo.octets = None
            memo.entry = None
    return entry


def _read_literal(dec, block, p, end, mask, never):
    index = _read_int(dec, p, end, mask)
    if index:
        name = _decoder_entry(dec, index)[0]
    else:
        name = _read_string(dec, block, p, end)
    value = _read_string(dec, block, p, end)
    if never:
        return NeverIndexed(name, value)
    return (name, value)


def _decoder_entry(dec, index):
    if index <= _STATIC_COUNT:
        if index == 0:
            raise HpackError("index 0")
        return _STATIC[index - 1]
    n = len(dec._table)
    k = index - _FIRST_DYNAMIC
    if k >= n - dec._first:
        raise HpackError("index out of range")
    return dec._table[n - 1 - k]


def _decoder_insert(dec, entry):
    # An entry larger than the whole table empties it and is not added (RFC 7541 4.4).
    size = len(entry[0]) + len(entry[1]) + _ENTRY_OVERHEAD
    _decoder_evict(dec, dec._capacity - size)
    if size <= dec._capacity:
        dec._table.append(entry)
        dec._table_size += size
    return 0


def _decoder_evict(dec, room):
    table = dec._table
    n = len(table)
    first = dec._first
    while dec._table_size > room and first < n:
        entry = table[first]
        table[first] = None
        dec._table_size -= len(entry[0]) + len(entry[1]) + _ENTRY_OVERHEAD
        first += 1
    dec._first = _compact(table, first)
    return 0


# ---------------------------------------------------------------- field validation


def _byte_table(members):
    table = [0] * 256
    for c in members:
        table[c] = 1
    return table


# Lower-case tchar (RFC 9110 5.6.2): what RFC 9113 8.2.1 leaves of a field
# name once upper case is gone. Stricter than the 9113 minimum on purpose:
# the name may be written into an HTTP/1 head next.
_NAME_CHAR = _byte_table(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_TOKEN_CHAR = _byte_table(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SCHEME_CHAR = _byte_table(b"+-.0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Pseudo-header values that become parts of a request line or a URI: no
# whitespace, controls or DEL, so they cannot split anything downstream.
_URI_CHAR = _byte_table(range(0x21, 0x7F))

_K_OTHER = 0
_K_TE = 1
_K_HOST = 2
_K_CONNECTION_SPECIFIC = 3

_P_METHOD = 1
_P_SCHEME = 2
_P_AUTHORITY = 4
_P_PATH = 8
_P_PROTOCOL = 16
_P_STATUS = 32


def _field_kind(name, n):
    if n == 2:
        return _K_TE if name == b"te" else _K_OTHER
    if n == 4:
        return _K_HOST if name == b"host" else _K_OTHER
    if n == 7:
        return _K_CONNECTION_SPECIFIC if name == b"upgrade" else _K_OTHER
    if n == 10:
        return _K_CONNECTION_SPECIFIC if name == b"connection" or name == b"keep-alive" else _K_OTHER
    if n == 16:
        return _K_CONNECTION_SPECIFIC if name == b"proxy-connection" else _K_OTHER
    if n == 17:
        return _K_CONNECTION_SPECIFIC if name == b"transfer-encoding" else _K_OTHER
    return _K_OTHER


def _pseudo_bit(name, n, is_request, extended_connect):
    if is_request:
        if n == 7 and name == b":method":
            return _P_METHOD
        if n == 7 and name == b":scheme":
            return _P_SCHEME
        if n == 10 and name == b":authority":
            return _P_AUTHORITY
        if n == 5 and name == b":path":
            return _P_PATH
        if n == 9 and extended_connect and name == b":protocol":
            return _P_PROTOCOL
    elif n == 7 and name == b":status":
        return _P_STATUS
    raise ProtocolError("unknown pseudo-header field")


def _check_name(name, n):
    p = name
    for i in range(n):
        if not _NAME_CHAR[p[i]]:
            if 0x41 <= p[i] <= 0x5A:
                raise ProtocolError("uppercase field name")
            raise ProtocolError("invalid field name")
    return 0


def _check_value(value, n):
    # RFC 9113 8.2.1: no NUL, CR or LF anywhere, no SP or HTAB at either end.
    p = value
    if n > 0 and (p[0] == 0x20 or p[0] == 0x09 or p[n - 1] == 0x20 or p[n - 1] == 0x09):
        raise ProtocolError("whitespace around field value")
    if cython.compiled:
        # libc's vectorised scan, once per octet sought: about a third of a byte-by-byte loop's instructions
        # for the 10 to 40 octet values of a typical head.
        if memchr(p, 0x00, n) or memchr(p, 0x0A, n) or memchr(p, 0x0D, n):  # noqa: F821 (cimported in hpack.pxd)
            raise ProtocolError("invalid field value")
        return 0
    for i in range(n):
        if p[i] == 0x00 or p[i] == 0x0A or p[i] == 0x0D:
            raise ProtocolError("invalid field value")
    return 0


@cython.boundscheck(False)  # every index is after a length check
@cython.wraparound(False)
def _entry_size(entry):
    # A decoded field is always a (bytes, bytes) tuple (or NeverIndexed), made by this decoder.
    return (len(cython.cast(bytes, cython.cast(tuple, entry)[0]))
            + len(cython.cast(bytes, cython.cast(tuple, entry)[1])) + _ENTRY_OVERHEAD)


def _all_in(value, table):
    p = value
    for i in range(len(value)):
        if not table[p[i]]:
            return False
    return True


@cython.boundscheck(False)  # every index is after a length check
@cython.wraparound(False)
def validate_headers(headers, is_request, is_trailer, extended_connect=False):
    """Check a decoded field section against RFC 9113 8.2 and 8.3; ProtocolError when malformed.

    Names must be lower-case tokens, values free of NUL/CR/LF and of
    surrounding whitespace. Pseudo-header fields come first, once each, only
    the ones defined for the message kind (``:protocol`` only with
    ``extended_connect``, RFC 8441), and none in trailers. Requests need
    :method, and :scheme and :path unless it is a plain CONNECT (which needs
    :authority instead); responses need a three-digit :status.
    Connection-specific fields are refused, and TE may only say "trailers".
    """
    seen = 0
    regular = False
    method = None
    scheme = None
    authority = None
    path = None
    status = None
    host = None
    for field in headers:
        if isinstance(field, tuple) and len(cython.cast(tuple, field)) >= 2:
            name = cython.cast(tuple, field)[0]
            value = cython.cast(tuple, field)[1]
        else:
            if len(field) < 2:
                raise TypeError("a header field is a (name, value) tuple")
            name = field[0]
            value = field[1]
        n = len(name)
        if n == 0:
            raise ProtocolError("empty field name")
        vlen = len(value)
        if name[0] == 0x3A:  # ':'
            if is_trailer:
                raise ProtocolError("pseudo-header field in trailers")
            if regular:
                raise ProtocolError("pseudo-header field after regular field")
            bit = _pseudo_bit(name, n, is_request, extended_connect)
            if seen & bit:
                raise ProtocolError("duplicate pseudo-header field")
            seen |= bit
            _check_value(value, vlen)
            if bit == _P_METHOD:
                if vlen == 0 or not _all_in(value, _TOKEN_CHAR):
                    raise ProtocolError("invalid :method")
                method = value
            elif bit == _P_SCHEME:
                if vlen == 0 or not _all_in(value, _SCHEME_CHAR):
                    raise ProtocolError("invalid :scheme")
                scheme = value
            elif bit == _P_AUTHORITY:
                if not _all_in(value, _URI_CHAR):
                    raise ProtocolError("invalid :authority")
                authority = value
            elif bit == _P_PATH:
                if not _all_in(value, _URI_CHAR):
                    raise ProtocolError("invalid :path")
                path = value
            elif bit == _P_STATUS:
                if vlen != 3 or not (0x31 <= value[0] <= 0x39 and 0x30 <= value[1] <= 0x39
                                     and 0x30 <= value[2] <= 0x39):
                    raise ProtocolError("invalid :status")
                status = value
            elif bit == _P_PROTOCOL:
                if vlen == 0 or not _all_in(value, _TOKEN_CHAR):
                    raise ProtocolError("invalid :protocol")
            continue
        regular = True
        _check_name(name, n)
        _check_value(value, vlen)
        kind = _field_kind(name, n)
        if kind == _K_OTHER:
            continue
        if kind == _K_CONNECTION_SPECIFIC:
            raise ProtocolError("connection-specific field")
        if kind == _K_TE:
            if value != b"trailers":
                raise ProtocolError("te other than trailers")
        elif kind == _K_HOST:
            if host is not None:
                raise ProtocolError("duplicate host")
            host = value
    if is_trailer:
        return None
    if not is_request:
        if status is None:
            raise ProtocolError("missing :status")
        return None
    if method is None:
        raise ProtocolError("missing :method")
    if method == b"CONNECT" and not seen & _P_PROTOCOL:
        # RFC 9113 8.5: authority only.
        if scheme is not None or path is not None:
            raise ProtocolError(":scheme or :path in CONNECT")
        if authority is None or len(authority) == 0:
            raise ProtocolError("missing :authority in CONNECT")
    else:
        if seen & _P_PROTOCOL and method != b"CONNECT":
            raise ProtocolError(":protocol without CONNECT")
        if scheme is None:
            raise ProtocolError("missing :scheme")
        if path is None or len(path) == 0:
            raise ProtocolError("missing :path")
        if scheme == b"http" or scheme == b"https":
            # RFC 9113 8.3.1: origin-form, or "*" for OPTIONS; no userinfo.
            if path[0] != 0x2F and not (path == b"*" and method == b"OPTIONS"):
                raise ProtocolError("invalid :path")
            if authority is not None and b"@" in authority:
                raise ProtocolError("userinfo in :authority")
    if host is not None and authority is not None and host != authority:
        raise ProtocolError("host differs from :authority")
    return None

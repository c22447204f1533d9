# Typed declarations for hpack.py (Cython pure-Python mode).
# Public names the Python side reads (STATIC_TABLE, SENSITIVE_NAMES, ...) are
# deliberately not declared here: a declared module global is C-only.

# HpackError, HeaderListTooLarge, ProtocolError and NeverIndexed stay plain
# Python classes (exceptions and a tuple subclass).

cimport cython
from libc.string cimport memchr

cdef class Encoder:
    cdef Py_ssize_t _capacity             # table size in use (last announced)
    cdef list _table                      # (name, value) entries, oldest first (from _first: older slots dead)
    cdef Py_ssize_t _first
    cdef Py_ssize_t _table_size
    cdef Py_ssize_t _inserted             # insertions so far: entry seq numbers
    cdef dict _full                       # (name, value) -> -static index, or seq of newest dynamic entry
    cdef dict _names                      # name -> -static index, or seq of newest dynamic entry
    cdef bint _pending                    # size update(s) owed at the next block
    cdef Py_ssize_t _pending_min
    cdef frozenset _sensitive
    cdef frozenset _unindexed
    cdef bytearray _buf                   # the block being written; kept for the next one
    cdef Py_ssize_t _keep                 # ... unless it grew past this (_keep_limit of the table size)
    cdef list _memo                       # _FieldMemo per position of the last header lists
    @cython.locals(pos=Py_ssize_t, field=object, q="unsigned char*", block=bytes, i=Py_ssize_t)
    cpdef bytes encode(self, object headers, bint huffman=*)

@cython.final
cdef class _FieldMemo:
    cdef bytes name
    cdef bytes value
    cdef Py_ssize_t found
    cdef bytes literal
    cdef bint huffman

cdef class Decoder:
    cdef list _table                      # entries, oldest first (from _first); index 62 is the last
    cdef Py_ssize_t _first
    cdef Py_ssize_t _table_size
    cdef Py_ssize_t _capacity             # size in force (last size update)
    cdef Py_ssize_t _limit                # our SETTINGS_HEADER_TABLE_SIZE: ceiling for updates
    cdef bint _update_required            # the limit dropped below _capacity: next block must update
    cdef Py_ssize_t _pos                  # read offset in the block being decoded
    cdef bytearray _scratch               # Huffman output buffer, reused
    cdef list _memo                       # _LiteralMemo per position of the last header lists
    cdef public Py_ssize_t max_header_list_size
    @cython.locals(p="const unsigned char*", end=Py_ssize_t, headers=list, list_size=Py_ssize_t,
                   list_limit=Py_ssize_t, fields_started=bint, c=cython.uchar, entry=object,
                   size=Py_ssize_t, k=Py_ssize_t)
    cpdef list decode(self, bytes block)

@cython.final
cdef class _LiteralMemo:
    cdef bytes octets
    cdef object entry

# ---- private to hpack.py: C-level constants, tables and helpers

cdef tuple _STATIC
cdef dict _STATIC_FULL, _STATIC_NAME
cdef Py_ssize_t _STATIC_COUNT, _FIRST_DYNAMIC, _ENTRY_OVERHEAD, _MAX_INT_CONTINUATION, _SHORT_COOKIE
cdef Py_ssize_t _INT_ROOM, _KEEP_TABLES, _KEEP_FLOOR, _MEMO_FIELDS, _MEMO_OCTETS
cdef Py_ssize_t _MAX_SCRATCH
cdef unsigned int _HF_EMIT, _HF_FAIL
cdef int _EOS
cdef unsigned int _HUFFMAN_CODE[257]
cdef unsigned char _HUFFMAN_LEN[257]
cdef unsigned int _HUFFMAN_DECODE[4096]
cdef unsigned char _HUFFMAN_ACCEPT[256]
cdef unsigned char _NAME_CHAR[256]
cdef unsigned char _TOKEN_CHAR[256]
cdef unsigned char _SCHEME_CHAR[256]
cdef unsigned char _URI_CHAR[256]
cdef int _K_OTHER, _K_TE, _K_HOST, _K_CONNECTION_SPECIFIC
cdef int _P_METHOD, _P_SCHEME, _P_AUTHORITY, _P_PATH, _P_PROTOCOL, _P_STATUS

@cython.locals(p="const unsigned char*", bits=Py_ssize_t, i=Py_ssize_t)
cpdef Py_ssize_t huffman_encoded_length(bytes data) except -1
@cython.locals(q="unsigned char*", p="const unsigned char*", acc=cython.ulonglong, bits=int, i=Py_ssize_t,
               c=cython.uchar)
cdef Py_ssize_t _huffman_encode_at(bytearray buf, Py_ssize_t pos, bytes data) except -1
@cython.locals(out=bytearray)
cpdef bytes huffman_encode(bytes data)
@cython.locals(q="unsigned char*", k=Py_ssize_t, state=cython.uint, i=Py_ssize_t, c=cython.uchar,
               e=cython.uint)
cdef bytes _huffman_decode(const unsigned char* p, Py_ssize_t start, Py_ssize_t end, bytearray scratch)
cpdef bytes huffman_decode(bytes data)
@cython.locals(out=bytearray)
cpdef bytes encode_integer(Py_ssize_t value, int prefix_bits)
@cython.locals(q="unsigned char*")
cdef Py_ssize_t _put_int(bytearray buf, Py_ssize_t pos, int flags, Py_ssize_t mask, Py_ssize_t value) except -1
@cython.locals(n=Py_ssize_t, hlen=Py_ssize_t, q="unsigned char*", p="const unsigned char*", i=Py_ssize_t)
cdef Py_ssize_t _put_string(bytearray buf, Py_ssize_t pos, bytes data, bint huffman) except -1
cdef Py_ssize_t _keep_limit(Py_ssize_t capacity) noexcept
cdef int _encoder_restart(Encoder enc) except -1
@cython.locals(size=Py_ssize_t)
cdef Py_ssize_t _reserve(Encoder enc, Py_ssize_t pos, Py_ssize_t need) except -1
@cython.locals(name=bytes, value=bytes, n=Py_ssize_t, key=object, found=object, size=Py_ssize_t,
               memo=_FieldMemo, literal=bytes, found_at=Py_ssize_t, end=Py_ssize_t)
cdef Py_ssize_t _encode_field(Encoder enc, Py_ssize_t pos, object field, bint huffman, Py_ssize_t i) except -1
@cython.locals(q="unsigned char*", p="const unsigned char*", k=Py_ssize_t)
cdef Py_ssize_t _put_octets(bytearray buf, Py_ssize_t pos, bytes data) except -1
cdef Py_ssize_t _table_index(Encoder enc, Py_ssize_t found) noexcept
@cython.locals(found=object, buf=bytearray)
cdef Py_ssize_t _put_literal(Encoder enc, Py_ssize_t pos, int flags, Py_ssize_t mask, bytes name, bytes value,
                               bint huffman) except -1
@cython.locals(name=bytes, seq=Py_ssize_t)
cdef int _encoder_insert(Encoder enc, tuple entry, Py_ssize_t size) except -1
@cython.locals(table=list, first=Py_ssize_t, n=Py_ssize_t, entry=tuple, name=bytes, seq=Py_ssize_t)
cdef int _encoder_evict(Encoder enc, Py_ssize_t room) except -1
cdef Py_ssize_t _compact(list table, Py_ssize_t first) except -1

@cython.locals(pos=Py_ssize_t, value=Py_ssize_t, shift=int, c=cython.uchar)
cdef Py_ssize_t _read_int(Decoder dec, const unsigned char* p, Py_ssize_t end, Py_ssize_t mask) except -1
@cython.locals(huffman=bint, length=Py_ssize_t, start=Py_ssize_t, need=Py_ssize_t)
cdef bytes _read_string(Decoder dec, bytes block, const unsigned char* p, Py_ssize_t end)
@cython.locals(start=Py_ssize_t, memo=_LiteralMemo, octets=bytes, n=Py_ssize_t, q="const unsigned char*",
               j=Py_ssize_t, stop=Py_ssize_t, index=Py_ssize_t)
cdef object _literal(Decoder dec, bytes block, const unsigned char* p, Py_ssize_t end, Py_ssize_t mask, bint never,
                     Py_ssize_t k)
@cython.locals(index=Py_ssize_t, name=bytes, value=bytes)
cdef object _read_literal(Decoder dec, bytes block, const unsigned char* p, Py_ssize_t end,
                          Py_ssize_t mask, bint never)
@cython.locals(n=Py_ssize_t, k=Py_ssize_t)
cdef tuple _decoder_entry(Decoder dec, Py_ssize_t index)
@cython.locals(size=Py_ssize_t)
cdef int _decoder_insert(Decoder dec, object entry) except -1
@cython.locals(table=list, first=Py_ssize_t, n=Py_ssize_t, entry=tuple)
cdef int _decoder_evict(Decoder dec, Py_ssize_t room) except -1

cdef int _field_kind(bytes name, Py_ssize_t n) noexcept
cdef int _pseudo_bit(bytes name, Py_ssize_t n, bint is_request, bint extended_connect) except -1
@cython.locals(p="const unsigned char*", i=Py_ssize_t)
cdef int _check_name(bytes name, Py_ssize_t n) except -1
@cython.locals(p="const unsigned char*", i=Py_ssize_t)
cdef int _check_value(bytes value, Py_ssize_t n) except -1
cdef Py_ssize_t _entry_size(object entry) noexcept
@cython.locals(p="const unsigned char*", i=Py_ssize_t)
cdef bint _all_in(bytes value, const unsigned char* table) noexcept
@cython.locals(seen=int, regular=bint, method=bytes, scheme=bytes, authority=bytes, path=bytes,
               status=bytes, host=bytes, field=object, name=bytes, value=bytes, n=Py_ssize_t,
               vlen=Py_ssize_t, bit=int, kind=int)
cpdef object validate_headers(object headers, bint is_request, bint is_trailer, bint extended_connect=*)

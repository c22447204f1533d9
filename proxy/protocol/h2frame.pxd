# Typed declarations for h2frame.py (Cython pure-Python mode).
# The public constants (DATA, FLAG_END_STREAM, PROTOCOL_ERROR, ...) are not
# declared here, so they stay importable Python ints; the compiled code uses
# the C-typed private copies below.

# H2Error and NEED_MORE stay plain Python objects.

cimport cython
from libc.string cimport memcpy

cdef class Frame:
    cdef readonly int type
    cdef readonly int flags
    cdef readonly Py_ssize_t stream_id
    cdef readonly Py_ssize_t length          # wire payload length, padding included
    cdef readonly bytes data                 # DATA payload / whole header block / opaque / debug data
    cdef readonly unsigned int error_code    # RST_STREAM, GOAWAY
    cdef readonly Py_ssize_t last_stream_id  # GOAWAY
    cdef readonly Py_ssize_t promised_stream_id  # PUSH_PROMISE
    cdef readonly Py_ssize_t increment       # WINDOW_UPDATE
    cdef readonly Py_ssize_t depends_on      # PRIORITY, HEADERS with FLAG_PRIORITY
    cdef readonly int weight                 # 1..256 (16 when HEADERS has no priority)
    cdef readonly bint exclusive
    cdef readonly list settings              # SETTINGS: [(identifier, value)], known identifiers only

cdef class FrameReader:
    cdef bytes _buf
    cdef Py_ssize_t _pos
    cdef list _chunks                        # fed after _buf, not yet joined
    cdef Py_ssize_t _chunk_len
    cdef public Py_ssize_t max_frame_size
    cdef public Py_ssize_t max_header_block_size
    cdef bint _expect_preface
    cdef bint _expect_settings
    cdef object _error                       # the sticky connection error, or None
    cdef Frame _block_frame                  # HEADERS/PUSH_PROMISE awaiting CONTINUATION
    cdef list _block_parts
    cdef Py_ssize_t _block_size              # wire octets of the unfinished block
    @cython.locals(p="const unsigned char*", i=Py_ssize_t, length=Py_ssize_t, ftype=int, flags=int,
                   stream_id=Py_ssize_t, start=Py_ssize_t, frame=Frame)
    cpdef object next_frame(self)

# ---- private to h2frame.py: C-level constants and helpers

cdef int _DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY
cdef int _WINDOW_UPDATE, _CONTINUATION
cdef int _END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY_FLAG
cdef int _PROTOCOL_ERROR, _FLOW_CONTROL_ERROR, _FRAME_SIZE_ERROR, _ENHANCE_YOUR_CALM
cdef Py_ssize_t _MIN_FRAME_SIZE, _MAX_FRAME_SIZE, _MAX_WINDOW, _MAX_STREAM_ID, _PREFACE_LEN
cdef bytes _PREFACE

@cython.locals(frame=Frame)
cdef Frame _new_frame(int ftype, int flags, Py_ssize_t stream_id, Py_ssize_t length)
cdef unsigned int _u32(const unsigned char* p, Py_ssize_t i) noexcept
cdef Py_ssize_t _u31(const unsigned char* p, Py_ssize_t i) noexcept

@cython.locals(n=Py_ssize_t)
cpdef object check_preface(bytes data)

cdef object _conn_error(FrameReader reader, int code, str reason)
@cython.locals(parts=list)
cdef int _merge(FrameReader reader) except -1
@cython.locals(avail=Py_ssize_t)
cdef bint _ensure(FrameReader reader, Py_ssize_t need) except -1
@cython.locals(avail=Py_ssize_t, n=Py_ssize_t)
cdef int _read_preface(FrameReader reader) except -1
cdef int _check_header(FrameReader reader, int ftype, int flags, Py_ssize_t stream_id, Py_ssize_t length) except -1
cdef Py_ssize_t _headers_fixed(int flags) noexcept
@cython.locals(pad=Py_ssize_t)
cdef Py_ssize_t _padding(FrameReader reader, const unsigned char* p, Py_ssize_t start, Py_ssize_t length,
                         int flags, Py_ssize_t fixed) except -1
@cython.locals(end=Py_ssize_t, frame=Frame, fixed=Py_ssize_t)
cdef Frame _parse_payload(FrameReader reader, const unsigned char* p, Py_ssize_t start, int ftype, int flags,
                          Py_ssize_t stream_id, Py_ssize_t length)
cdef Frame _start_block(FrameReader reader, Frame frame)
@cython.locals(frame=Frame)
cdef Frame _continue_block(FrameReader reader, const unsigned char* p, Py_ssize_t start, Py_ssize_t end,
                           int flags, Py_ssize_t length)
@cython.locals(pairs=list, i=Py_ssize_t, ident=cython.uint, value=cython.uint)
cdef list _parse_settings(FrameReader reader, const unsigned char* p, Py_ssize_t start, Py_ssize_t end)

cdef int _check_stream_id(Py_ssize_t stream_id, bint nonzero) except -1
cdef int _put_u32(unsigned char* q, Py_ssize_t i, unsigned long long value) except -1
cdef int _put_header(unsigned char* q, Py_ssize_t i, Py_ssize_t length, int ftype, int flags,
                     Py_ssize_t stream_id) except -1
cdef Py_ssize_t _SCRATCH_SIZE
cdef bytearray _SCRATCH
cdef Py_ssize_t _BLOCK_SCRATCH_SIZE
cdef bytearray _BLOCK_SCRATCH
cdef bytearray _frame_buf(Py_ssize_t n)
cdef bytes _finish(bytearray buf, unsigned char* q, Py_ssize_t n)
@cython.locals(buf=bytearray, q="unsigned char*")
cpdef bytes frame_header(Py_ssize_t length, int ftype, int flags, Py_ssize_t stream_id)
cpdef bytes raw_frame(int ftype, int flags, Py_ssize_t stream_id, bytes payload)
cpdef bytes data_frame(Py_ssize_t stream_id, bytes data, bint end_stream=*)
@cython.locals(n=Py_ssize_t, room=Py_ssize_t, parts=list, i=Py_ssize_t, take=Py_ssize_t, m=Py_ssize_t,
               total=Py_ssize_t, buf=bytearray, q="unsigned char*")
cdef bytes _block_frames(int ftype, int flags, Py_ssize_t stream_id, bytes first, bytes block,
                         Py_ssize_t max_frame_size)
cpdef bytes headers_frames(Py_ssize_t stream_id, bytes block, bint end_stream=*, Py_ssize_t max_frame_size=*)
@cython.locals(buf=bytearray, q="unsigned char*")
cpdef bytes push_promise_frames(Py_ssize_t stream_id, Py_ssize_t promised_stream_id, bytes block,
                                Py_ssize_t max_frame_size=*)
@cython.locals(n=Py_ssize_t, buf=bytearray, q="unsigned char*", i=Py_ssize_t, pair=object,
               ident=cython.longlong, value=cython.longlong)
cpdef bytes settings_frame(object pairs=*, bint ack=*)
@cython.locals(buf=bytearray, q="unsigned char*")
cpdef bytes window_update(Py_ssize_t stream_id, Py_ssize_t increment)
@cython.locals(buf=bytearray, q="unsigned char*")
cpdef bytes rst_stream(Py_ssize_t stream_id, long long error_code)
cpdef bytes ping(bytes opaque, bint ack=*)
@cython.locals(buf=bytearray, q="unsigned char*")
cpdef bytes goaway(Py_ssize_t last_stream_id, long long error_code, bytes debug=*)
@cython.locals(buf=bytearray, q="unsigned char*")
cpdef bytes priority(Py_ssize_t stream_id, Py_ssize_t depends_on, int weight=*, bint exclusive=*)

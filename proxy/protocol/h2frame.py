"""HTTP/2 framing (RFC 9113 sections 3.4, 4 and 6): a validating sans-IO frame reader and the frame writers.

The reader checks everything a frame can get wrong on its own (sizes,
stream-id rules, padding, settings values, CONTINUATION sequencing) and
hands the connection layer parsed frames; connection state (stream states,
flow-control windows) is not its business. A header block split over
CONTINUATION frames comes out as one HEADERS or PUSH_PROMISE frame holding
the whole block, bounded by ``max_header_block_size``. The same source runs
uncompiled and compiled with ``h2frame.pxd``.
"""

import cython

from proxy.protocol.sentinel import NEED_MORE

# ---------------------------------------------------------------- constants

# Frame types (RFC 9113 6). Any other type is passed through for the caller to ignore.
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

FRAME_TYPE_NAMES = {
    DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY", RST_STREAM: "RST_STREAM",
    SETTINGS: "SETTINGS", PUSH_PROMISE: "PUSH_PROMISE", PING: "PING", GOAWAY: "GOAWAY",
    WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION",
}

# Flags.
FLAG_END_STREAM = 0x1  # DATA, HEADERS
FLAG_ACK = 0x1  # SETTINGS, PING
FLAG_END_HEADERS = 0x4  # HEADERS, PUSH_PROMISE, CONTINUATION
FLAG_PADDED = 0x8  # DATA, HEADERS, PUSH_PROMISE
FLAG_PRIORITY = 0x20  # HEADERS

# Error codes (RFC 9113 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB
INADEQUATE_SECURITY = 0xC
HTTP_1_1_REQUIRED = 0xD

ERROR_CODE_NAMES = {
    NO_ERROR: "NO_ERROR", PROTOCOL_ERROR: "PROTOCOL_ERROR", INTERNAL_ERROR: "INTERNAL_ERROR",
    FLOW_CONTROL_ERROR: "FLOW_CONTROL_ERROR", SETTINGS_TIMEOUT: "SETTINGS_TIMEOUT",
    STREAM_CLOSED: "STREAM_CLOSED", FRAME_SIZE_ERROR: "FRAME_SIZE_ERROR",
    REFUSED_STREAM: "REFUSED_STREAM", CANCEL: "CANCEL", COMPRESSION_ERROR: "COMPRESSION_ERROR",
    CONNECT_ERROR: "CONNECT_ERROR", ENHANCE_YOUR_CALM: "ENHANCE_YOUR_CALM",
    INADEQUATE_SECURITY: "INADEQUATE_SECURITY", HTTP_1_1_REQUIRED: "HTTP_1_1_REQUIRED",
}

# Settings identifiers (RFC 9113 6.5.2, RFC 8441, RFC 9218). Others are ignored.
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6
SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x8
SETTINGS_NO_RFC7540_PRIORITIES = 0x9

DEFAULT_MAX_FRAME_SIZE = 16384
MAX_MAX_FRAME_SIZE = (1 << 24) - 1
DEFAULT_INITIAL_WINDOW_SIZE = 65535
MAX_WINDOW_SIZE = (1 << 31) - 1
MAX_STREAM_ID = (1 << 31) - 1
DEFAULT_MAX_HEADER_BLOCK_SIZE = 131072
FRAME_HEADER_SIZE = 9

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# C-typed copies for the compiled code (see h2frame.pxd); the public names
# above stay Python objects so callers can import them.
_DATA = DATA
_HEADERS = HEADERS
_PRIORITY = PRIORITY
_RST_STREAM = RST_STREAM
_SETTINGS = SETTINGS
_PUSH_PROMISE = PUSH_PROMISE
_PING = PING
_GOAWAY = GOAWAY
_WINDOW_UPDATE = WINDOW_UPDATE
_CONTINUATION = CONTINUATION
_END_STREAM = FLAG_END_STREAM
_ACK = FLAG_ACK
_END_HEADERS = FLAG_END_HEADERS
_PADDED = FLAG_PADDED
_PRIORITY_FLAG = FLAG_PRIORITY
_PROTOCOL_ERROR = PROTOCOL_ERROR
_FLOW_CONTROL_ERROR = FLOW_CONTROL_ERROR
_FRAME_SIZE_ERROR = FRAME_SIZE_ERROR
_ENHANCE_YOUR_CALM = ENHANCE_YOUR_CALM
_MIN_FRAME_SIZE = DEFAULT_MAX_FRAME_SIZE
_MAX_FRAME_SIZE = MAX_MAX_FRAME_SIZE
_SCRATCH_SIZE = 32  # the largest fixed-size frame, GOAWAY's 17 octets, fits
_SCRATCH = bytearray(_SCRATCH_SIZE)
# A HEADERS frame whose block fits here is written whole into this buffer and
# copied out once (a header plus two concatenations made three objects).
_BLOCK_SCRATCH_SIZE = 4096
_BLOCK_SCRATCH = bytearray(_BLOCK_SCRATCH_SIZE)
_MAX_WINDOW = MAX_WINDOW_SIZE
_MAX_STREAM_ID = MAX_STREAM_ID
_PREFACE = PREFACE
_PREFACE_LEN = len(PREFACE)


# NEED_MORE (proxy.protocol.sentinel) is re-exported: callers compare with ``is``.


class H2Error(Exception):
    """The peer broke RFC 9113 framing: ``code`` is the HTTP/2 error code to send.

    ``stream_id`` 0 means a connection error (send GOAWAY and close); any
    other value is a stream error (send RST_STREAM on that stream, go on).
    """

    def __init__(self, code, reason, stream_id=0):
        super().__init__(code, reason, stream_id)
        self.code = code
        self.reason = reason
        self.stream_id = stream_id

    @property
    def is_connection_error(self):
        return self.stream_id == 0

    def __str__(self):
        name = ERROR_CODE_NAMES.get(self.code, hex(self.code))
        where = "connection" if self.stream_id == 0 else f"stream {self.stream_id}"
        return f"{name} ({where}): {self.reason}"


class Frame:
    """One received frame, payload already taken apart.

    ``length`` is the payload length on the wire (padding included: what DATA
    costs in flow control; summed over the CONTINUATION frames of a header
    block). ``data`` is the DATA payload without padding, the
    complete header block of HEADERS/PUSH_PROMISE, the PING opaque octets,
    GOAWAY debug data, or an unknown frame's payload. The other fields are set
    for the frame types that carry them and zero (or None) otherwise.
    """

    @property
    def end_stream(self):
        return (self.type == _DATA or self.type == _HEADERS) and (self.flags & _END_STREAM) != 0

    @property
    def end_headers(self):
        return (self.type == _HEADERS or self.type == _PUSH_PROMISE) and (self.flags & _END_HEADERS) != 0

    @property
    def ack(self):
        return (self.type == _SETTINGS or self.type == _PING) and (self.flags & _ACK) != 0

    def __repr__(self):
        name = FRAME_TYPE_NAMES.get(self.type, f"UNKNOWN({self.type:#x})")
        return f"<Frame {name} flags={self.flags:#x} stream={self.stream_id} length={self.length}>"


def _new_frame(ftype, flags, stream_id, length):
    frame = Frame.__new__(Frame)
    frame.type = ftype
    frame.flags = flags
    frame.stream_id = stream_id
    frame.length = length
    frame.data = b""
    frame.error_code = 0
    frame.last_stream_id = 0
    frame.promised_stream_id = 0
    frame.increment = 0
    frame.depends_on = 0
    frame.weight = 0
    frame.exclusive = False
    frame.settings = None
    return frame


def _u32(p, i):
    return (p[i] << 24) | (p[i + 1] << 16) | (p[i + 2] << 8) | p[i + 3]


def _u31(p, i):
    return ((p[i] & 0x7F) << 24) | (p[i + 1] << 16) | (p[i + 2] << 8) | p[i + 3]


# ---------------------------------------------------------------- preface


def check_preface(data):
    """``len(PREFACE)`` when ``data`` starts with the client preface, NEED_MORE for a prefix of it, else H2Error."""
    if data is None:
        raise TypeError("data must be bytes, not None")
    n = len(data)
    if n >= _PREFACE_LEN:
        if data[:_PREFACE_LEN] == _PREFACE:
            return _PREFACE_LEN
    elif data == _PREFACE[:n]:
        return NEED_MORE
    raise H2Error(_PROTOCOL_ERROR, "invalid connection preface")


# ---------------------------------------------------------------- reader


class FrameReader:
    """Incremental frame parser: ``feed`` bytes as they arrive, then call ``next_frame`` until NEED_MORE.

    ``next_frame`` returns a Frame, NEED_MORE, or raises H2Error. After a
    stream error the offending frame is consumed and reading can go on;
    after a connection error every later call raises it again.
    ``max_frame_size`` is our SETTINGS_MAX_FRAME_SIZE (raise it once the peer
    acknowledged it). ``max_header_block_size`` bounds a header block's wire
    size, 9-octet frame headers included, so neither huge blocks nor floods of
    empty CONTINUATION frames go unbounded. With ``expect_preface`` (server
    side) the client preface is checked first; with ``expect_settings`` the
    first frame must be a SETTINGS frame without ACK (RFC 9113 3.4).
    """

    def __init__(
        self,
        max_frame_size=DEFAULT_MAX_FRAME_SIZE,
        max_header_block_size=DEFAULT_MAX_HEADER_BLOCK_SIZE,
        expect_preface=False,
        expect_settings=False,
    ):
        if not _MIN_FRAME_SIZE <= max_frame_size <= _MAX_FRAME_SIZE:
            raise ValueError("max_frame_size must be in [16384, 2**24-1]")
        if max_header_block_size < 0:
            raise ValueError("max_header_block_size must not be negative")
        self._buf = b""
        self._pos = 0
        self._chunks = []
        self._chunk_len = 0
        self.max_frame_size = max_frame_size
        self.max_header_block_size = max_header_block_size
        self._expect_preface = expect_preface
        self._expect_settings = expect_settings
        self._error = None
        self._block_frame = None
        self._block_parts = None
        self._block_size = 0

    @property
    def buffered(self):
        """Octets received but not yet returned as frames (a partial header block included)."""
        return len(self._buf) - self._pos + self._chunk_len + self._block_size

    def feed(self, data):
        """Append received bytes; nothing is parsed until ``next_frame``."""
        if data is None:
            raise TypeError("data must be bytes, not None")
        if type(data) is not bytes:
            data = bytes(data)
        if len(data) == 0:
            return
        if self._chunk_len == 0 and self._pos >= len(self._buf):
            self._buf = data
            self._pos = 0
        else:
            # Joined only once a whole frame is there, so a large frame
            # arriving in many pieces is copied a bounded number of times.
            self._chunks.append(data)
            self._chunk_len += len(data)

    def next_frame(self):
        """The next complete frame, or NEED_MORE; H2Error for a frame the peer got wrong."""
        if self._error is not None:
            raise self._error.with_traceback(None)
        if self._expect_preface:
            _read_preface(self)
            if self._expect_preface:
                return NEED_MORE
        while True:
            if not _ensure(self, 9):
                return NEED_MORE
            p = self._buf
            i = self._pos
            length = (p[i] << 16) | (p[i + 1] << 8) | p[i + 2]
            ftype = p[i + 3]
            flags = p[i + 4]
            stream_id = _u31(p, i + 5)
            _check_header(self, ftype, flags, stream_id, length)
            if not _ensure(self, 9 + length):
                return NEED_MORE
            p = self._buf
            start = self._pos + 9
            self._pos = start + length
            frame = _parse_payload(self, p, start, ftype, flags, stream_id, length)
            if frame is not None:
                return frame


def _conn_error(reader, code, reason):
    # Connection errors are sticky: the reader is unusable afterwards.
    err = H2Error(code, reason, 0)
    reader._error = err
    return err


def _merge(reader):
    parts = reader._chunks
    if reader._pos < len(reader._buf):
        parts.insert(0, reader._buf[reader._pos :])
    reader._buf = b"".join(parts)
    reader._pos = 0
    reader._chunks = []
    reader._chunk_len = 0
    return 0


def _ensure(reader, need):
    # True when ``need`` octets are buffered from _pos on, joining the pending
    # chunks only when they complete what is needed.
    avail = len(reader._buf) - reader._pos
    if avail >= need:
        return True
    if avail + reader._chunk_len < need:
        if avail == 0 and reader._chunk_len == 0:
            reader._buf = b""
            reader._pos = 0
        return False
    _merge(reader)
    return True


def _read_preface(reader):
    if reader._chunk_len:
        _merge(reader)
    avail = len(reader._buf) - reader._pos
    n = avail if avail < _PREFACE_LEN else _PREFACE_LEN
    if reader._buf[reader._pos : reader._pos + n] != _PREFACE[:n]:
        raise _conn_error(reader, _PROTOCOL_ERROR, "invalid connection preface")
    if n == _PREFACE_LEN:
        reader._pos += _PREFACE_LEN
        reader._expect_preface = False
    return 0


def _check_header(reader, ftype, flags, stream_id, length):
    # Everything the 9-octet header alone can prove wrong, checked before the
    # payload is waited for. All of these are connection errors.
    if length > reader.max_frame_size:
        raise _conn_error(reader, _FRAME_SIZE_ERROR, "frame larger than max frame size")
    if reader._block_frame is not None:
        if ftype != _CONTINUATION or stream_id != reader._block_frame.stream_id:
            raise _conn_error(reader, _PROTOCOL_ERROR, "expected continuation")
        if reader._block_size + 9 + length > reader.max_header_block_size:
            raise _conn_error(reader, _ENHANCE_YOUR_CALM, "header block too large")
        return 0
    if reader._expect_settings and (ftype != _SETTINGS or flags & _ACK):
        raise _conn_error(reader, _PROTOCOL_ERROR, "first frame is not settings")
    if ftype == _DATA:
        if stream_id == 0:
            raise _conn_error(reader, _PROTOCOL_ERROR, "data on stream 0")
        if flags & _PADDED and length < 1:
            raise _conn_error(reader, _FRAME_SIZE_ERROR, "data frame too short")
    elif ftype == _HEADERS:
        if stream_id == 0:
            raise _conn_error(reader, _PROTOCOL_ERROR, "headers on stream 0")
        if length < _headers_fixed(flags):
            raise _conn_error(reader, _FRAME_SIZE_ERROR, "headers frame too short")
        if 9 + length > reader.max_header_block_size:
            raise _conn_error(reader, _ENHANCE_YOUR_CALM, "header block too large")
    elif ftype == _PRIORITY:
        # A wrong length is a stream error (RFC 9113 6.3), judged after the payload is consumed.
        if stream_id == 0:
            raise _conn_error(reader, _PROTOCOL_ERROR, "priority on stream 0")
    elif ftype == _RST_STREAM:
        if stream_id == 0:
            raise _conn_error(reader, _PROTOCOL_ERROR, "rst_stream on stream 0")
        if length != 4:
            raise _conn_error(reader, _FRAME_SIZE_ERROR, "rst_stream length not 4")
    elif ftype == _SETTINGS:
        if stream_id != 0:
            raise _conn_error(reader, _PROTOCOL_ERROR, "settings on a stream")
        if flags & _ACK:
            if length != 0:
                raise _conn_error(reader, _FRAME_SIZE_ERROR, "settings ack with payload")
        elif length % 6 != 0:
            raise _conn_error(reader, _FRAME_SIZE_ERROR, "settings length not a multiple of 6")
    elif ftype == _PUSH_PROMISE:
        if stream_id == 0:
            raise _conn_error(reader, _PROTOCOL_ERROR, "push_promise on stream 0")
        if length < (5 if flags & _PADDED else 4):
            raise _conn_error(reader, _FRAME_SIZE_ERROR, "push_promise frame too short")
        if 9 + length > reader.max_header_block_size:
            raise _conn_error(reader, _ENHANCE_YOUR_CALM, "header block too large")
    elif ftype == _PING:
        if stream_id != 0:
            raise _conn_error(reader, _PROTOCOL_ERROR, "ping on a stream")
        if length != 8:
            raise _conn_error(reader, _FRAME_SIZE_ERROR, "ping length not 8")
    elif ftype == _GOAWAY:
        if stream_id != 0:
            raise _conn_error(reader, _PROTOCOL_ERROR, "goaway on a stream")
        if length < 8:
            raise _conn_error(reader, _FRAME_SIZE_ERROR, "goaway frame too short")
    elif ftype == _WINDOW_UPDATE:
        if length != 4:
            raise _conn_error(reader, _FRAME_SIZE_ERROR, "window_update length not 4")
    elif ftype == _CONTINUATION:
        raise _conn_error(reader, _PROTOCOL_ERROR, "unexpected continuation")
    return 0


def _headers_fixed(flags):
    # Octets of HEADERS payload before the field block: pad length, priority.
    return (1 if flags & _PADDED else 0) + (5 if flags & _PRIORITY_FLAG else 0)


def _padding(reader, p, start, length, flags, fixed):
    # Pad Length sits first when PADDED; the padding must leave room for the
    # fixed fields (RFC 9113 6.1, 6.2, 6.6: connection error PROTOCOL_ERROR).
    if not flags & _PADDED:
        return 0
    pad = p[start]
    if pad > length - fixed:
        raise _conn_error(reader, _PROTOCOL_ERROR, "padding exceeds payload")
    return pad


def _parse_payload(reader, p, start, ftype, flags, stream_id, length):
    # The frame, or None when a HEADERS/PUSH_PROMISE/CONTINUATION fragment was
    # taken into a header block that is not finished yet.
    end = start + length
    if ftype == _DATA:
        frame = _new_frame(ftype, flags, stream_id, length)
        if flags & _PADDED:
            end -= _padding(reader, p, start, length, flags, 1)
            start += 1
        frame.data = p[start:end]
        return frame
    if ftype == _HEADERS:
        frame = _new_frame(ftype, flags, stream_id, length)
        fixed = _headers_fixed(flags)
        end -= _padding(reader, p, start, length, flags, fixed)
        if flags & _PADDED:
            start += 1
        frame.weight = 16
        if flags & _PRIORITY_FLAG:
            frame.exclusive = (p[start] & 0x80) != 0
            frame.depends_on = _u31(p, start)
            frame.weight = p[start + 4] + 1
            start += 5
            if frame.depends_on == stream_id:
                # A stream error by RFC 9113 5.3.1, raised as a connection
                # error: the field block could not be decoded any more, and
                # HPACK state must not be skipped (RFC 9113 4.3).
                raise _conn_error(reader, _PROTOCOL_ERROR, "stream depends on itself")
        frame.data = p[start:end]
        return _start_block(reader, frame)
    if ftype == _CONTINUATION:
        return _continue_block(reader, p, start, end, flags, length)
    if ftype == _WINDOW_UPDATE:
        frame = _new_frame(ftype, flags, stream_id, length)
        frame.increment = _u31(p, start)
        if frame.increment == 0:
            if stream_id == 0:
                raise _conn_error(reader, _PROTOCOL_ERROR, "window_update increment 0")
            raise H2Error(_PROTOCOL_ERROR, "window_update increment 0", stream_id)
        return frame
    if ftype == _SETTINGS:
        frame = _new_frame(ftype, flags, stream_id, length)
        frame.settings = _parse_settings(reader, p, start, end)
        reader._expect_settings = False
        return frame
    if ftype == _RST_STREAM:
        frame = _new_frame(ftype, flags, stream_id, length)
        frame.error_code = _u32(p, start)
        return frame
    if ftype == _PING:
        frame = _new_frame(ftype, flags, stream_id, length)
        frame.data = p[start:end]
        return frame
    if ftype == _GOAWAY:
        frame = _new_frame(ftype, flags, stream_id, length)
        frame.last_stream_id = _u31(p, start)
        frame.error_code = _u32(p, start + 4)
        frame.data = p[start + 8 : end]
        return frame
    if ftype == _PRIORITY:
        if length != 5:
            raise H2Error(_FRAME_SIZE_ERROR, "priority length not 5", stream_id)
        frame = _new_frame(ftype, flags, stream_id, length)
        frame.exclusive = (p[start] & 0x80) != 0
        frame.depends_on = _u31(p, start)
        frame.weight = p[start + 4] + 1
        if frame.depends_on == stream_id:
            raise H2Error(_PROTOCOL_ERROR, "stream depends on itself", stream_id)
        return frame
    if ftype == _PUSH_PROMISE:
        frame = _new_frame(ftype, flags, stream_id, length)
        fixed = 5 if flags & _PADDED else 4
        end -= _padding(reader, p, start, length, flags, fixed)
        if flags & _PADDED:
            start += 1
        frame.promised_stream_id = _u31(p, start)
        frame.data = p[start + 4 : end]
        return _start_block(reader, frame)
    # Unknown type: handed over as is; RFC 9113 4.1 says to ignore it.
    frame = _new_frame(ftype, flags, stream_id, length)
    frame.data = p[start:end]
    return frame


def _start_block(reader, frame):
    if frame.flags & _END_HEADERS:
        return frame
    reader._block_frame = frame
    reader._block_parts = [frame.data]
    reader._block_size = 9 + frame.length
    return None


def _continue_block(reader, p, start, end, flags, length):
    frame = reader._block_frame
    reader._block_parts.append(p[start:end])
    reader._block_size += 9 + length
    frame.length += length
    if not flags & _END_HEADERS:
        return None
    frame.data = b"".join(reader._block_parts)
    frame.flags |= _END_HEADERS
    reader._block_frame = None
    reader._block_parts = None
    reader._block_size = 0
    return frame


def _parse_settings(reader, p, start, end):
    # Known settings in order of appearance; unknown identifiers are dropped
    # (RFC 9113 6.5.2: an endpoint MUST ignore them).
    pairs = []
    i = start
    while i < end:
        ident = (p[i] << 8) | p[i + 1]
        value = _u32(p, i + 2)
        i += 6
        if ident == 0x2 or ident == 0x8 or ident == 0x9:
            if value > 1:
                raise _conn_error(reader, _PROTOCOL_ERROR, "invalid boolean setting")
        elif ident == 0x4:
            if value > _MAX_WINDOW:
                raise _conn_error(reader, _FLOW_CONTROL_ERROR, "initial window size too large")
        elif ident == 0x5:
            if value < _MIN_FRAME_SIZE or value > _MAX_FRAME_SIZE:
                raise _conn_error(reader, _PROTOCOL_ERROR, "invalid max frame size")
        elif ident != 0x1 and ident != 0x3 and ident != 0x6:
            continue
        pairs.append((ident, value))
    return pairs


# ---------------------------------------------------------------- writers


def _check_stream_id(stream_id, nonzero):
    if stream_id < 0 or stream_id > _MAX_STREAM_ID:
        raise ValueError("stream id out of range")
    if nonzero and stream_id == 0:
        raise ValueError("this frame needs a stream id other than 0")
    return 0


def _put_u32(q, i, value):
    q[i] = (value >> 24) & 0xFF
    q[i + 1] = (value >> 16) & 0xFF
    q[i + 2] = (value >> 8) & 0xFF
    q[i + 3] = value & 0xFF
    return 0


def _put_header(q, i, length, ftype, flags, stream_id):
    q[i] = (length >> 16) & 0xFF
    q[i + 1] = (length >> 8) & 0xFF
    q[i + 2] = length & 0xFF
    q[i + 3] = ftype
    q[i + 4] = flags
    _put_u32(q, i + 5, stream_id)
    return 0


def _frame_buf(n):
    # Where a fixed-size frame (at most _SCRATCH_SIZE octets) is written before
    # _finish copies it out. Compiled, one buffer serves every frame: making a
    # bytearray per frame cost more than all the rest of the frame's work, and
    # nothing runs between the writes and the copy. Uncompiled (where threads
    # could interleave), a new one each time.
    if not cython.compiled:
        return bytearray(n)
    return _SCRATCH


def _finish(buf, q, n):
    # The frame's ``n`` octets written into ``buf`` (through ``q``) as an immutable bytes object.
    if not cython.compiled:
        return bytes(buf[:n])
    return q[:n]


def frame_header(length, ftype, flags, stream_id):
    """The 9-octet frame header; with writelines() it frames a large payload without copying it."""
    if length < 0 or length > _MAX_FRAME_SIZE:
        raise ValueError("frame length out of range")
    if not 0 <= ftype <= 0xFF or not 0 <= flags <= 0xFF:
        raise ValueError("frame type and flags are octets")
    _check_stream_id(stream_id, False)
    buf = _frame_buf(9)
    q = buf
    _put_header(q, 0, length, ftype, flags, stream_id)
    return _finish(buf, q, 9)


def raw_frame(ftype, flags, stream_id, payload):
    """Any frame, unchecked beyond the header fields' ranges (for tests and extension frames)."""
    return frame_header(len(payload), ftype, flags, stream_id) + payload


def data_frame(stream_id, data, end_stream=False):
    """A DATA frame carrying ``data`` (at most the peer's max frame size; not checked here)."""
    _check_stream_id(stream_id, True)
    return frame_header(len(data), _DATA, _END_STREAM if end_stream else 0, stream_id) + data


def _block_frames(ftype, flags, stream_id, first, block, max_frame_size):
    # HEADERS/PUSH_PROMISE carrying ``first`` then as much of the block as
    # fits, CONTINUATION frames for the rest; END_HEADERS on the last one.
    if not _MIN_FRAME_SIZE <= max_frame_size <= _MAX_FRAME_SIZE:
        raise ValueError("max_frame_size must be in [16384, 2**24-1]")
    n = len(block)
    room = max_frame_size - len(first)
    if n <= room:
        m = len(first)
        total = 9 + m + n
        if total > _BLOCK_SCRATCH_SIZE:
            return frame_header(m + n, ftype, flags | _END_HEADERS, stream_id) + first + block
        # One frame: written whole (stream id checked by the caller, flags and type are ours).
        if not cython.compiled:
            buf = bytearray(total)
            buf[9:9 + m] = first
            buf[9 + m:total] = block
        else:
            buf = _BLOCK_SCRATCH
        q = buf
        _put_header(q, 0, m + n, ftype, flags | _END_HEADERS, stream_id)
        if cython.compiled:
            memcpy(q + 9, cython.cast(cython.p_char, first), m)  # noqa: F821 (cimported in h2frame.pxd)
            memcpy(q + 9 + m, cython.cast(cython.p_char, block), n)  # noqa: F821 (cimported in h2frame.pxd)
        return _finish(buf, q, total)
    parts = [frame_header(max_frame_size, ftype, flags, stream_id), first, block[:room]]
    i = room
    while i < n:
        take = n - i if n - i <= max_frame_size else max_frame_size
        parts.append(frame_header(take, _CONTINUATION, _END_HEADERS if i + take == n else 0, stream_id))
        parts.append(block[i : i + take])
        i += take
    return b"".join(parts)


def headers_frames(stream_id, block, end_stream=False, max_frame_size=DEFAULT_MAX_FRAME_SIZE):
    """A header block as one HEADERS frame, or HEADERS + CONTINUATION frames when it exceeds ``max_frame_size``."""
    _check_stream_id(stream_id, True)
    return _block_frames(_HEADERS, _END_STREAM if end_stream else 0, stream_id, b"", block, max_frame_size)


def push_promise_frames(stream_id, promised_stream_id, block, max_frame_size=DEFAULT_MAX_FRAME_SIZE):
    """A PUSH_PROMISE frame (+ CONTINUATION frames) promising ``promised_stream_id`` on ``stream_id``."""
    _check_stream_id(stream_id, True)
    _check_stream_id(promised_stream_id, True)
    buf = _frame_buf(4)
    q = buf
    _put_u32(q, 0, promised_stream_id)
    return _block_frames(_PUSH_PROMISE, 0, stream_id, _finish(buf, q, 4), block, max_frame_size)


def settings_frame(pairs=(), ack=False):
    """A SETTINGS frame from ``(identifier, value)`` pairs, or an empty ACK."""
    if ack:
        if len(pairs):
            raise ValueError("a settings ack carries no settings")
        return frame_header(0, _SETTINGS, _ACK, 0)
    n = len(pairs)
    buf = bytearray(9 + 6 * n)
    q = buf
    _put_header(q, 0, 6 * n, _SETTINGS, 0, 0)
    i = 9
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError("a setting is an (identifier, value) pair")
        ident = pair[0]
        value = pair[1]
        if not 0 <= ident <= 0xFFFF or not 0 <= value <= 0xFFFFFFFF:
            raise ValueError("setting out of range")
        q[i] = (ident >> 8) & 0xFF
        q[i + 1] = ident & 0xFF
        _put_u32(q, i + 2, value)
        i += 6
    return _finish(buf, q, 9 + 6 * n)


def window_update(stream_id, increment):
    """A WINDOW_UPDATE frame (stream 0: the connection window)."""
    _check_stream_id(stream_id, False)
    if increment < 1 or increment > _MAX_WINDOW:
        raise ValueError("window increment must be in [1, 2**31-1]")
    buf = _frame_buf(13)
    q = buf
    _put_header(q, 0, 4, _WINDOW_UPDATE, 0, stream_id)
    _put_u32(q, 9, increment)
    return _finish(buf, q, 13)


def rst_stream(stream_id, error_code):
    """An RST_STREAM frame."""
    _check_stream_id(stream_id, True)
    if error_code < 0 or error_code > 0xFFFFFFFF:
        raise ValueError("error code out of range")
    buf = _frame_buf(13)
    q = buf
    _put_header(q, 0, 4, _RST_STREAM, 0, stream_id)
    _put_u32(q, 9, error_code)
    return _finish(buf, q, 13)


def ping(opaque, ack=False):
    """A PING frame with 8 opaque octets (the ACK echoes the ones received)."""
    if len(opaque) != 8:
        raise ValueError("ping carries exactly 8 octets")
    return frame_header(8, _PING, _ACK if ack else 0, 0) + opaque


def goaway(last_stream_id, error_code, debug=b""):
    """A GOAWAY frame."""
    _check_stream_id(last_stream_id, False)
    if error_code < 0 or error_code > 0xFFFFFFFF:
        raise ValueError("error code out of range")
    if 8 + len(debug) > _MAX_FRAME_SIZE:
        raise ValueError("debug data too long")
    buf = _frame_buf(17)
    q = buf
    _put_header(q, 0, 8 + len(debug), _GOAWAY, 0, 0)
    _put_u32(q, 9, last_stream_id)
    _put_u32(q, 13, error_code)
    return _finish(buf, q, 17) + debug


def priority(stream_id, depends_on, weight=16, exclusive=False):
    """A PRIORITY frame (weight 1..256, as in the RFC's text; the wire carries weight - 1)."""
    _check_stream_id(stream_id, True)
    _check_stream_id(depends_on, False)
    if weight < 1 or weight > 256:
        raise ValueError("weight must be in [1, 256]")
    buf = _frame_buf(14)
    q = buf
    _put_header(q, 0, 5, _PRIORITY, 0, stream_id)
    _put_u32(q, 9, depends_on | (0x80000000 if exclusive else 0))
    q[13] = weight - 1
    return _finish(buf, q, 14)

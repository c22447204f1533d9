"""The sans-IO HTTP/2 connection (RFC 9113), server and client roles: bytes in -> events out, calls in -> bytes out.

Framing is h2frame's, header compression hpack's, the stream states
h2state's table; this module owns what spans frames: stream ids, both
flow-control windows each way, SETTINGS, PING, GOAWAY, the message rules
(1xx, trailers, content-length) and the abuse limits. Peer misbehaviour
never raises: it becomes events plus a queued RST_STREAM or GOAWAY, and
after a connection error the connection is dead (``receive_data`` returns
[]). No clock: the caller passes the time in. The same source runs
uncompiled and compiled with ``h2conn.pxd``.

Event conventions: events are small final classes with read-only fields;
dispatch on ``type(event)``. The end of the peer's side of a stream is
signalled only by the ``end_stream`` flag of RequestReceived,
ResponseReceived and DataReceived, and by TrailersReceived (which always
ends the stream); StreamEnded exists for completeness and is never emitted.
"""

import cython

from proxy.protocol import h2frame, h2state
from proxy.protocol.h2frame import (
    NEED_MORE,
    Frame,
    FrameReader,
    H2Error,
    frame_header,
    goaway,
    headers_frames,
    rst_stream,
    settings_frame,
    window_update,
)
from proxy.protocol.h2state import lookup
from proxy.protocol.hpack import Decoder, Encoder, HpackError, ProtocolError, validate_headers
from proxy.protocol.hpack import HeaderListTooLarge as _ListTooLarge

# ---------------------------------------------------------------- C-typed constants

_DATA = h2frame.DATA
_HEADERS = h2frame.HEADERS
_PRIORITY = h2frame.PRIORITY
_RST_STREAM = h2frame.RST_STREAM
_SETTINGS = h2frame.SETTINGS
_PUSH_PROMISE = h2frame.PUSH_PROMISE
_PING = h2frame.PING
_GOAWAY = h2frame.GOAWAY
_WINDOW_UPDATE = h2frame.WINDOW_UPDATE
_END_STREAM = h2frame.FLAG_END_STREAM
_ACK = h2frame.FLAG_ACK

_NO_ERROR = h2frame.NO_ERROR
_PROTOCOL_ERROR = h2frame.PROTOCOL_ERROR
_INTERNAL_ERROR = h2frame.INTERNAL_ERROR
_FLOW_CONTROL_ERROR = h2frame.FLOW_CONTROL_ERROR
_REFUSED_STREAM = h2frame.REFUSED_STREAM
_STREAM_CLOSED = h2frame.STREAM_CLOSED
_CANCEL = h2frame.CANCEL
_COMPRESSION_ERROR = h2frame.COMPRESSION_ERROR
_ENHANCE_YOUR_CALM = h2frame.ENHANCE_YOUR_CALM

_S_HEADER_TABLE_SIZE = h2frame.SETTINGS_HEADER_TABLE_SIZE
_S_ENABLE_PUSH = h2frame.SETTINGS_ENABLE_PUSH
_S_MAX_CONCURRENT_STREAMS = h2frame.SETTINGS_MAX_CONCURRENT_STREAMS
_S_INITIAL_WINDOW_SIZE = h2frame.SETTINGS_INITIAL_WINDOW_SIZE
_S_MAX_FRAME_SIZE = h2frame.SETTINGS_MAX_FRAME_SIZE
_S_MAX_HEADER_LIST_SIZE = h2frame.SETTINGS_MAX_HEADER_LIST_SIZE

_MAX_WINDOW = h2frame.MAX_WINDOW_SIZE
_MAX_STREAM_ID = h2frame.MAX_STREAM_ID
_DEFAULT_WINDOW = h2frame.DEFAULT_INITIAL_WINDOW_SIZE
_PREFACE = h2frame.PREFACE

_IDLE = h2state.IDLE
_OPEN = h2state.OPEN
_HALF_CLOSED_LOCAL = h2state.HALF_CLOSED_LOCAL
_HALF_CLOSED_REMOTE = h2state.HALF_CLOSED_REMOTE
_CLOSED = h2state.CLOSED
_CLOSED_RESET = h2state.CLOSED_RESET
_SKIPPED = -1  # a lower peer stream id that was never opened (implicitly closed, RFC 9113 5.1.1)
_MAX_SKIPPED_RANGES = 64
_SCOPE_STREAM = h2state.STREAM
_SCOPE_CONNECTION = h2state.CONNECTION

_E_RECV_HEADERS = h2state.RECV_HEADERS
_E_RECV_HEADERS_END = h2state.RECV_HEADERS_END
_E_RECV_DATA = h2state.RECV_DATA
_E_RECV_DATA_END = h2state.RECV_DATA_END
_E_RECV_RST_STREAM = h2state.RECV_RST_STREAM
_E_RECV_WINDOW_UPDATE = h2state.RECV_WINDOW_UPDATE
_E_SEND_HEADERS = h2state.SEND_HEADERS
_E_SEND_HEADERS_END = h2state.SEND_HEADERS_END
_E_SEND_DATA = h2state.SEND_DATA
_E_SEND_DATA_END = h2state.SEND_DATA_END
_E_SEND_RST_STREAM = h2state.SEND_RST_STREAM

# Message phases of one direction of a stream (h2state tracks frames; these
# track what the frames mean): the head is still to come (a client may get
# 1xx first), or the final head went and DATA/trailers may follow.
_HEAD = 0
_BODY = 1

# What a request's method means for its response body.
_M_OTHER = 0
_M_HEAD = 1
_M_CONNECT = 2

_WU_CREDIT_CAP = 1 << 20
_MAX_PINGS_OUTSTANDING = 64
_DRAIN_PING = b"\x00meshgs\x00"  # the PING of graceful_shutdown's round trip

# ---------------------------------------------------------------- caller errors


class H2UsageError(Exception):
    """The local caller asked for something the protocol or the connection's state forbids (nothing was sent)."""


class StreamLimitReached(H2UsageError):
    """The peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached: queue the request or open another connection."""


class ConnectionClosing(H2UsageError):
    """No new streams: a GOAWAY was sent or received, the connection failed, or stream ids ran out."""


class StreamClosed(H2UsageError):
    """The stream is unknown, reset, or its sending side is already closed."""


# ---------------------------------------------------------------- settings


class H2Settings:
    """Local HTTP/2 settings (advertised to the peer) and the abuse limits of one connection; all ints, read-only.

    Every ``max_*_per_window`` counts within ``window_ms``. WINDOW_UPDATE
    frames are counted per connection, but each DATA frame we send earns
    two free ones (its stream's and the connection's), so only updates that
    answer no data of ours count against ``max_window_updates_per_window``.
    ``connection_buffer`` is how much delivered, unacknowledged DATA (summed
    over streams) may sit with the caller before the connection window stops
    being given back on arrival: below it, one stream that the caller cannot
    drain (a client that stopped reading) holds only its own stream window and
    the connection keeps flowing for the others (see ``_buffer``).
    ``max_pending_outbound`` bounds the octets of frames the peer makes us
    queue (PING and SETTINGS ACKs, RST_STREAM) between two ``data_to_send``
    calls.
    """

    def __init__(
        self,
        max_concurrent_streams=100,
        initial_window_size=65535 * 16,
        max_frame_size=16384,
        max_header_list_size=65536,
        header_table_size=4096,
        max_resets_per_window=200,
        max_pings_per_window=100,
        max_settings_per_window=100,
        max_empty_data_per_window=100,
        max_window_updates_per_window=2000,
        window_ms=1000,
        max_header_block_size=131072,
        max_pending_outbound=1 << 20,
        connection_buffer=8 << 20,
    ):
        if not 0 <= max_concurrent_streams <= 0xFFFFFFFF:
            raise ValueError("max_concurrent_streams out of range")
        if not 0 <= initial_window_size <= _MAX_WINDOW:
            raise ValueError("initial_window_size must be in [0, 2**31-1]")
        if not 16384 <= max_frame_size <= (1 << 24) - 1:
            raise ValueError("max_frame_size must be in [16384, 2**24-1]")
        if not 0 <= max_header_list_size <= 0xFFFFFFFF or not 0 <= header_table_size <= 0xFFFFFFFF:
            raise ValueError("header sizes out of range")
        for value in (max_resets_per_window, max_pings_per_window, max_settings_per_window,
                      max_empty_data_per_window, max_window_updates_per_window, max_header_block_size,
                      max_pending_outbound, connection_buffer):
            if value < 0:
                raise ValueError("limits must not be negative")
        if window_ms < 1:
            raise ValueError("window_ms must be positive")
        self.max_concurrent_streams = max_concurrent_streams
        self.initial_window_size = initial_window_size
        self.max_frame_size = max_frame_size
        self.max_header_list_size = max_header_list_size
        self.header_table_size = header_table_size
        self.max_resets_per_window = max_resets_per_window
        self.max_pings_per_window = max_pings_per_window
        self.max_settings_per_window = max_settings_per_window
        self.max_empty_data_per_window = max_empty_data_per_window
        self.max_window_updates_per_window = max_window_updates_per_window
        self.window_ms = window_ms
        self.max_header_block_size = max_header_block_size
        self.max_pending_outbound = max_pending_outbound
        self.connection_buffer = connection_buffer

    def __repr__(self):
        fields = ", ".join(f"{name}={getattr(self, name)}" for name in _SETTINGS_FIELDS)
        return f"H2Settings({fields})"


_SETTINGS_FIELDS = (
    "max_concurrent_streams", "initial_window_size", "max_frame_size", "max_header_list_size",
    "header_table_size", "max_resets_per_window", "max_pings_per_window", "max_settings_per_window",
    "max_empty_data_per_window", "max_window_updates_per_window", "window_ms", "max_header_block_size",
    "max_pending_outbound", "connection_buffer",
)

# ---------------------------------------------------------------- events


class Event:
    """Base of the events ``receive_data`` returns; each subclass has read-only fields."""

    def __repr__(self):
        names = _EVENT_FIELDS.get(type(self), ())
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({fields})"


class RequestReceived(Event):
    """Server: a request head opened stream ``stream_id``; ``end_stream`` when it has no body."""

    def __init__(self, stream_id, headers, end_stream):
        self.stream_id = stream_id
        self.headers = headers
        self.end_stream = end_stream


class ResponseReceived(Event):
    """Client: the final response head; ``end_stream`` when it has no body."""

    def __init__(self, stream_id, headers, end_stream):
        self.stream_id = stream_id
        self.headers = headers
        self.end_stream = end_stream


class InformationalResponseReceived(Event):
    """Client: a 1xx response head (more heads follow)."""

    def __init__(self, stream_id, headers):
        self.stream_id = stream_id
        self.headers = headers


class DataReceived(Event):
    """Body octets; acknowledge ``flow_controlled_length`` (padding included) once they are consumed."""

    def __init__(self, stream_id, data, flow_controlled_length, end_stream):
        self.stream_id = stream_id
        self.data = data
        self.flow_controlled_length = flow_controlled_length
        self.end_stream = end_stream


class TrailersReceived(Event):
    """Trailers; they always end the peer's side of the stream."""

    def __init__(self, stream_id, headers):
        self.stream_id = stream_id
        self.headers = headers


class StreamEnded(Event):
    """Never emitted: the end_stream flags and TrailersReceived say when a peer's side ends."""

    def __init__(self, stream_id):
        self.stream_id = stream_id


class StreamReset(Event):
    """The stream is gone: the peer reset it (``remote``), or we did because the peer broke a stream rule.

    ``error_code`` REFUSED_STREAM with ``remote`` means the peer never
    processed the request (also reported for our streams above a GOAWAY's
    last stream id): safe to retry.
    """

    def __init__(self, stream_id, error_code, remote):
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote = remote


class WindowUpdated(Event):
    """A send window grew after a send_data call came up short; stream 0: retry every waiting stream."""

    def __init__(self, stream_id):
        self.stream_id = stream_id


class SettingsChanged(Event):
    """The peer's SETTINGS were applied (and acknowledged): ``changed`` maps identifier -> value."""

    def __init__(self, changed):
        self.changed = changed


class PingAcked(Event):
    """The peer answered our ``ping(opaque)``."""

    def __init__(self, opaque):
        self.opaque = opaque


class ConnectionTerminated(Event):
    """GOAWAY received (``remote``), or a connection error we found (a GOAWAY is queued; the connection is dead)."""

    def __init__(self, error_code, last_stream_id, debug, remote):
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.debug = debug
        self.remote = remote


class HeaderListTooLarge(Event):
    """A header list exceeded our max_header_list_size (HPACK state stays in sync).

    Server, request head: already answered with 431 (and RST_STREAM NO_ERROR
    if the request was still open); the request is never delivered. Any other
    head or trailers: the stream was reset with CANCEL and a StreamReset
    event follows.
    """

    def __init__(self, stream_id):
        self.stream_id = stream_id


_EVENT_FIELDS = {
    RequestReceived: ("stream_id", "headers", "end_stream"),
    ResponseReceived: ("stream_id", "headers", "end_stream"),
    InformationalResponseReceived: ("stream_id", "headers"),
    DataReceived: ("stream_id", "data", "flow_controlled_length", "end_stream"),
    TrailersReceived: ("stream_id", "headers"),
    StreamEnded: ("stream_id",),
    StreamReset: ("stream_id", "error_code", "remote"),
    WindowUpdated: ("stream_id",),
    SettingsChanged: ("changed",),
    PingAcked: ("opaque",),
    ConnectionTerminated: ("error_code", "last_stream_id", "debug", "remote"),
    HeaderListTooLarge: ("stream_id",),
}


def _ev_headers(kind, stream_id, headers, end_stream):
    # RequestReceived or ResponseReceived, built without the Python call protocol.
    if kind == 0:
        req = RequestReceived.__new__(RequestReceived)
        req.stream_id = stream_id
        req.headers = headers
        req.end_stream = end_stream
        return req
    resp = ResponseReceived.__new__(ResponseReceived)
    resp.stream_id = stream_id
    resp.headers = headers
    resp.end_stream = end_stream
    return resp


def _ev_data(stream_id, data, length, end_stream):
    ev = DataReceived.__new__(DataReceived)
    ev.stream_id = stream_id
    ev.data = data
    ev.flow_controlled_length = length
    ev.end_stream = end_stream
    return ev


def _ev_reset(stream_id, code, remote):
    ev = StreamReset.__new__(StreamReset)
    ev.stream_id = stream_id
    ev.error_code = code
    ev.remote = remote
    return ev


def _ev_window(stream_id):
    ev = WindowUpdated.__new__(WindowUpdated)
    ev.stream_id = stream_id
    return ev


# ---------------------------------------------------------------- streams


class _Stream:
    """Per-stream bookkeeping; lives while the stream is open or half-closed."""

    def __init__(self):
        raise TypeError("internal")


def _new_stream(conn, sid, local, state):
    stream = _Stream.__new__(_Stream)
    stream.id = sid
    stream.state = state
    stream.local = local
    stream.send_window = conn._peer_initial_window
    stream.recv_window = conn._stream_recv_initial
    stream.owed = 0
    stream.unacked = 0
    stream.content_length = -1
    stream.body_received = 0
    stream.rx = _HEAD
    stream.tx = _HEAD
    stream.method = _M_OTHER
    stream.blocked = False
    conn._streams[sid] = stream
    if local:
        conn._local_open += 1
    else:
        conn._peer_open += 1
    return stream


def _set_state(conn, stream, nxt):
    # Apply a table transition; a closed stream leaves the table of live
    # streams for the bounded memory of recently closed ones.
    stream.state = nxt
    if nxt == _CLOSED or nxt == _CLOSED_RESET:
        key = stream.id  # one int object for the three dicts (compiled, each use would make its own)
        del conn._streams[key]
        if stream.local:
            conn._local_open -= 1
        else:
            conn._peer_open -= 1
        _remember(conn, key, nxt)
        if stream.unacked > 0:
            if nxt == _CLOSED_RESET:
                _release_stream(conn, stream)
            else:
                # Ended normally: the caller still acknowledges what it was given.
                conn._unacked_closed[key] = stream.unacked
    return 0


def _release_stream(conn, stream):
    # A reset stream's data the caller was given but has not acknowledged:
    # the connection window gets it back now, and later acknowledgements
    # for the stream are ignored (the caller need not send them).
    n = stream.unacked
    stream.unacked = 0
    _unbuffer(conn, n)
    return 0


def _remember(conn, key, state):
    # The oldest id leaves through a ring rather than next(iter(dict)): a dict
    # whose front is deleted over and over walks its dead slots on every
    # iteration, about 1,300 instructions per closed stream at 256 slots.
    # key: the stream id as an int object, used three times below.
    closed = conn._closed
    if key not in closed:
        ring = conn._closed_ring
        at = conn._closed_next
        if at < len(ring):
            del closed[ring[at]]
            ring[at] = key
        else:
            ring.append(key)
        conn._closed_next = at + 1 if at + 1 < conn._closed_cap else 0
    closed[key] = state
    return 0


def _unknown_state(conn, sid):
    # The state of a stream id with no live record: idle above the highest
    # id used, else closed (recently closed ones are remembered with how
    # they closed), or _SKIPPED for a peer id that was passed over.
    found = conn._closed.get(sid)
    if found is not None:
        return found
    if (sid & 1) == (0 if conn.client_side else 1):
        if sid > conn._last_peer_sid:
            return _IDLE
        for pair in conn._skipped:
            if pair[0] <= sid <= pair[1]:
                return _SKIPPED
        return _CLOSED
    return _IDLE if sid >= conn._next_sid else _CLOSED


def _note_new_peer_stream(conn, sid):
    # Clients rarely skip ids; the few ranges they do skip are kept (bounded)
    # so a later HEADERS on one is known for the protocol error it is.
    expected = conn._last_peer_sid + 2 if conn._last_peer_sid else (1 if not conn.client_side else 2)
    if sid > expected:
        if len(conn._skipped) >= _MAX_SKIPPED_RANGES:
            del conn._skipped[0]
        conn._skipped.append((expected, sid - 2))
    conn._last_peer_sid = sid
    return 0


# ---------------------------------------------------------------- header helpers


def _content_length(headers):
    # -1: no content-length; -2: malformed (not digits, or differing copies).
    result = -1
    for field in headers:
        name = field[0]
        if len(name) != 14 or name != b"content-length":
            continue
        value = field[1]
        n = len(value)
        if n == 0 or n > 18:
            return -2
        parsed = 0
        for i in range(n):
            c = value[i]
            if c < 0x30 or c > 0x39:
                return -2
            parsed = parsed * 10 + (c - 0x30)
        if result != -1 and result != parsed:
            return -2
        result = parsed
    return result


def _status(headers):
    # The :status of a validated response head (pseudo-header fields come first).
    for field in headers:
        name = field[0]
        if len(name) == 0 or name[0] != 0x3A:
            break
        if name == b":status":
            value = field[1]
            if len(value) != 3:
                return 0
            return (value[0] - 0x30) * 100 + (value[1] - 0x30) * 10 + (value[2] - 0x30)
    return 0


def _method_kind(headers):
    for field in headers:
        name = field[0]
        if len(name) == 0 or name[0] != 0x3A:
            break
        if name == b":method":
            value = field[1]
            if value == b"HEAD":
                return _M_HEAD
            if value == b"CONNECT":
                return _M_CONNECT
            return _M_OTHER
    return _M_OTHER


# ---------------------------------------------------------------- the connection


class H2Connection:
    """One HTTP/2 connection, client or server side, sans-IO.

    Call ``initiate`` first, feed received bytes to ``receive_data``, and
    after every call (receive or send) write out ``data_to_send()``.
    """

    def __init__(self, client_side, settings=None):
        if settings is None:
            settings = H2Settings()
        self.client_side = client_side
        self.settings = settings
        self._reader = FrameReader(
            max_frame_size=settings.max_frame_size,
            max_header_block_size=settings.max_header_block_size,
            expect_preface=not client_side,
            expect_settings=True,
        )
        self._encoder = Encoder(4096)
        self._decoder = Decoder(4096, settings.max_header_list_size)
        self._streams = {}
        self._closed = {}
        self._skipped = []
        cap = 2 * settings.max_concurrent_streams
        self._closed_cap = 256 if cap < 256 else (8192 if cap > 8192 else cap)
        self._closed_ring = []
        self._closed_next = 0
        self._out = []
        self._out_len = 0
        self._ctl_len = 0
        self._tail_head = None  # the header of the last DATA frame queued without END_STREAM (see _fold_end)
        self._tail_sid = 0
        self._tail_len = 0
        self._initiated = False
        self._dead = False
        self._goaway_sent = False
        self._goaway_received = False
        self._drain = 0
        self._next_sid = 1 if client_side else 2
        self._last_peer_sid = 0
        self._last_processed = 0
        self._goaway_last = _MAX_STREAM_ID
        self._peer_goaway_last = _MAX_STREAM_ID
        self._local_open = 0
        self._peer_open = 0
        self._peer_max_concurrent = 0xFFFFFFFF  # no limit until the peer says (RFC 9113 6.5.2)
        self._peer_initial_window = _DEFAULT_WINDOW
        self._peer_max_frame_size = 16384
        self._peer_settings = {
            _S_HEADER_TABLE_SIZE: 4096, _S_ENABLE_PUSH: 1, _S_MAX_CONCURRENT_STREAMS: 0xFFFFFFFF,
            _S_INITIAL_WINDOW_SIZE: _DEFAULT_WINDOW, _S_MAX_FRAME_SIZE: 16384, _S_MAX_HEADER_LIST_SIZE: 0xFFFFFFFF,
        }
        self._send_window = _DEFAULT_WINDOW
        self._recv_window = _DEFAULT_WINDOW
        self._recv_owed = 0
        self._unacked_closed = {}
        self._buffered = 0  # delivered DATA not acknowledged yet, all streams together
        self._held = 0  # connection window kept back because _buffered is over connection_buffer
        self._conn_target = settings.initial_window_size if settings.initial_window_size > _DEFAULT_WINDOW \
            else _DEFAULT_WINDOW
        self._stream_target = settings.initial_window_size
        # Until the peer acknowledges our SETTINGS it may assume the default
        # window; a smaller advertised window takes effect at the ACK.
        self._stream_recv_initial = settings.initial_window_size \
            if settings.initial_window_size >= _DEFAULT_WINDOW else _DEFAULT_WINDOW
        self._conn_blocked = False
        self._settings_unacked = 0
        self._local_applied = False
        self._pings = []
        self._window_start = 0
        self._window_open = False
        self._resets = 0
        self._ping_count = 0
        self._settings_count = 0
        self._empty_data = 0
        self._window_updates = 0
        self._wu_credit = 0

    # ------------------------------------------------------------ properties

    @property
    def open_streams(self):
        """Streams open or half-closed, both directions (what MAX_CONCURRENT_STREAMS counts)."""
        return self._local_open + self._peer_open

    @property
    def closing(self):
        """No new streams: a GOAWAY was sent or received (graceful shutdown included), or the connection failed."""
        return self._dead or self._goaway_sent or self._goaway_received or self._drain != 0

    @property
    def dead(self):
        """A connection error happened (ours or the caller's close with an error code): nothing more is processed."""
        return self._dead

    @property
    def drained(self):
        """The final GOAWAY went out or came in and no stream is left: the transport can be closed."""
        return (self._dead or self._goaway_sent or self._goaway_received) and \
            self._local_open + self._peer_open == 0

    @property
    def last_stream_id_processed(self):
        """The highest peer-initiated stream handed to the caller (what our GOAWAY reports)."""
        return self._last_processed

    @property
    def peer_settings(self):
        """The peer's settings in force, {identifier: value}, defaults included (a copy)."""
        return dict(self._peer_settings)

    @property
    def outbound_pending(self):
        """Octets queued for ``data_to_send``."""
        return self._out_len

    @property
    def saturated(self):
        """Delivered data nobody acknowledged fills the connection buffer: the connection window is held back."""
        return self._held > 0

    @property
    def send_window(self):
        """The connection-level send window: what the peer lets us send on all streams together."""
        return self._send_window

    def stream_state(self, stream_id):
        """The RFC 9113 5.1 state of a stream (an h2state constant); closed streams long gone read CLOSED."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return cython.cast(_Stream, stream).state
        state = _unknown_state(self, stream_id)
        if state == _CLOSED_RESET or state == _SKIPPED:
            return _CLOSED
        return state

    # ------------------------------------------------------------ setup and output

    def initiate(self):
        """Queue our preface: (client) the magic, our SETTINGS, a WINDOW_UPDATE raising the connection window."""
        if self._initiated:
            return
        self._initiated = True
        s = self.settings
        if self.client_side:
            _queue(self, _PREFACE)
        pairs = [
            (_S_ENABLE_PUSH, 0),
            (_S_MAX_CONCURRENT_STREAMS, s.max_concurrent_streams),
            (_S_INITIAL_WINDOW_SIZE, s.initial_window_size),
            (_S_MAX_FRAME_SIZE, s.max_frame_size),
            (_S_MAX_HEADER_LIST_SIZE, s.max_header_list_size),
        ]
        if s.header_table_size != 4096:
            pairs.insert(0, (_S_HEADER_TABLE_SIZE, s.header_table_size))
        _queue(self, settings_frame(pairs))
        self._settings_unacked += 1
        if self._conn_target > _DEFAULT_WINDOW:
            _queue(self, window_update(0, self._conn_target - _DEFAULT_WINDOW))
            self._recv_window = self._conn_target

    def data_to_send(self):
        """Everything queued, as one bytes object (b"" when nothing); the queue is emptied."""
        out = self._out
        n = len(out)
        self._ctl_len = 0
        if n == 0:
            return b""
        self._out = []
        self._out_len = 0
        if n == 1:
            return out[0]
        return b"".join(out)

    # ------------------------------------------------------------ receiving

    def receive_data(self, data, now_ms):
        """Process received bytes; returns the events. Never raises for anything the peer sends."""
        if self._dead:
            return []
        if not self._initiated:
            self.initiate()
        events = []
        if not self._window_open or now_ms - self._window_start >= self.settings.window_ms or \
                now_ms < self._window_start:
            self._window_open = True
            self._window_start = now_ms
            self._resets = 0
            self._ping_count = 0
            self._settings_count = 0
            self._empty_data = 0
            self._window_updates = 0
        reader = self._reader
        reader.feed(data)
        while not self._dead:
            try:
                obj = reader.next_frame()
            except H2Error as err:
                if err.stream_id == 0:
                    _conn_error(self, events, err.code, err.reason)
                else:
                    _reader_stream_error(self, events, err.stream_id, err.code, err.reason)
                continue
            if obj is NEED_MORE:
                break
            try:
                _dispatch(self, events, cython.cast(Frame, obj))
            except HpackError as err:
                _conn_error(self, events, _COMPRESSION_ERROR, err.reason)
            except Exception as err:  # a bug of ours must not take the caller down with it
                _conn_error(self, events, _INTERNAL_ERROR, f"internal error: {type(err).__name__}")
        if self._dead:
            # Drop whatever the peer sent after the error (it may be large).
            self._reader = FrameReader()
        return events

    # ------------------------------------------------------------ sending

    def send_request(self, headers, end_stream):
        """Client: open a stream with a request head; returns its id."""
        if not self.client_side:
            raise H2UsageError("only the client side sends requests")
        if self._dead or self._goaway_sent or self._goaway_received or self._drain != 0:
            raise ConnectionClosing("the connection is closing")
        if self._local_open >= self._peer_max_concurrent:
            raise StreamLimitReached("the peer's max concurrent streams is reached")
        sid = self._next_sid
        if sid > _MAX_STREAM_ID:
            raise ConnectionClosing("stream ids exhausted")
        if not self._initiated:
            self.initiate()
        block = self._encoder.encode(headers)
        self._next_sid = sid + 2
        stream = _new_stream(self, sid, True, _IDLE)
        stream.tx = _BODY
        stream.method = _method_kind(headers)
        _queue(self, headers_frames(sid, block, end_stream, self._peer_max_frame_size))
        _set_state(self, stream, lookup(_IDLE, _E_SEND_HEADERS_END if end_stream else _E_SEND_HEADERS))
        return sid

    def send_headers(self, stream_id, headers, end_stream):
        """A response head or 1xx (server), or trailers (``end_stream`` True, either side)."""
        stream = _sending_stream(self, stream_id)
        nxt = lookup(stream.state, _E_SEND_HEADERS_END if end_stream else _E_SEND_HEADERS)
        if nxt < 0:
            _raise_send_error(stream, nxt)
        final = False
        if stream.tx == _HEAD:
            status = _status(headers)
            if status < 100 or status > 999:
                raise H2UsageError("a response head needs a :status")
            if status < 200:
                if end_stream:
                    raise H2UsageError("an informational response cannot end the stream")
            else:
                final = True
        elif not end_stream:
            raise H2UsageError("trailers must end the stream")
        block = self._encoder.encode(headers)
        _queue(self, headers_frames(stream_id, block, end_stream, self._peer_max_frame_size))
        if final:
            stream.tx = _BODY
        if nxt != stream.state:
            _set_state(self, stream, nxt)

    def send_data(self, stream_id, data, end_stream):
        """Queue as much of ``data`` as the windows allow; returns the octets taken (the caller keeps the rest)."""
        stream = _sending_stream(self, stream_id)
        nxt = lookup(stream.state, _E_SEND_DATA_END if end_stream else _E_SEND_DATA)
        if nxt < 0:
            _raise_send_error(stream, nxt)
        if stream.tx != _BODY:
            raise H2UsageError("send the response head first")
        if type(data) is not bytes:
            data = bytes(data)
        n = len(data)
        avail = stream.send_window if stream.send_window < self._send_window else self._send_window
        if avail < 0:
            avail = 0
        take = n if n <= avail else avail
        if take < n:
            stream.blocked = True
            if self._send_window <= stream.send_window:
                self._conn_blocked = True
        if take == 0 and not (n == 0 and end_stream):
            return 0
        last = end_stream and take == n
        mfs = self._peer_max_frame_size
        if n == 0 and last and _fold_end(self, stream_id):
            frames = 0
        elif take <= mfs:
            head = frame_header(take, _DATA, _END_STREAM if last else 0, stream_id)
            _queue(self, head)
            _queue(self, data if take == n else data[:take])
            if not last:
                self._tail_head = head
                self._tail_sid = stream_id
                self._tail_len = take
            frames = 1
        else:
            frames = 0
            pos = 0
            while pos < take:
                chunk = take - pos if take - pos <= mfs else mfs
                flags = _END_STREAM if last and pos + chunk == take else 0
                head = frame_header(chunk, _DATA, flags, stream_id)
                _queue(self, head)
                _queue(self, data[pos:pos + chunk])
                pos += chunk
                frames += 1
            if not last:
                self._tail_head = head
                self._tail_sid = stream_id
                self._tail_len = chunk
        stream.send_window -= take
        self._send_window -= take
        if self._wu_credit < _WU_CREDIT_CAP:
            self._wu_credit += 2 * frames
        if last:
            _set_state(self, stream, nxt)
        return take

    def end_stream(self, stream_id):
        """End our side of the stream with an empty DATA frame carrying END_STREAM."""
        self.send_data(stream_id, b"", True)

    def window_available(self, stream_id):
        """Octets send_data would take now: min(stream window, connection window), never negative."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        avail = cython.cast(_Stream, stream).send_window
        if self._send_window < avail:
            avail = self._send_window
        return avail if avail > 0 else 0

    def acknowledge_received(self, stream_id, n):
        """The caller consumed ``n`` flow-controlled octets of the stream: give the peer its window back, batched.

        Clamped to what the stream delivered and was not yet acknowledged.
        Data of a stream that was reset (either side) is given back by the
        reset itself, so acknowledging it afterwards is allowed and ignored.
        """
        if n <= 0 or self._dead:
            return
        key = stream_id  # one int object for the look-ups (compiled, each would make its own)
        obj = self._streams.get(key)
        if obj is not None:
            stream = cython.cast(_Stream, obj)
            if n > stream.unacked:
                n = stream.unacked
            stream.unacked -= n
            _stream_owed(self, stream, n)
        else:
            found = self._unacked_closed.get(key)
            if found is None:
                return  # never delivered, or released when the stream was reset
            left = found
            if n >= left:
                n = left
                del self._unacked_closed[key]
            else:
                self._unacked_closed[key] = left - n
        _unbuffer(self, n)

    def reset_stream(self, stream_id, error_code):
        """Reset a live stream (RST_STREAM).

        For a stream already closed nothing is sent, but data it delivered
        and the caller has not acknowledged is given back to the peer (so a
        caller dropping buffered data need not acknowledge it first).
        """
        if error_code < 0 or error_code > 0xFFFFFFFF:
            raise ValueError("error code out of range")
        if self._dead:
            return
        key = stream_id
        stream = self._streams.get(key)
        if stream is None:
            found = self._unacked_closed.pop(key, None)
            if found is not None:
                _unbuffer(self, found)
            return
        _queue(self, rst_stream(stream_id, error_code))
        _set_state(self, cython.cast(_Stream, stream), _CLOSED_RESET)

    def ping(self, opaque):
        """Send a PING; its ACK arrives as PingAcked(opaque)."""
        if len(opaque) != 8:
            raise ValueError("ping carries exactly 8 octets")
        if self._dead:
            raise ConnectionClosing("the connection failed")
        if len(self._pings) >= _MAX_PINGS_OUTSTANDING:
            del self._pings[0]
        self._pings.append(bytes(opaque))
        _queue(self, h2frame.ping(bytes(opaque), False))

    def close(self, error_code=0, debug=b""):
        """Send GOAWAY with the last processed stream id: no new streams either way.

        With NO_ERROR the streams at or below that id may still finish; with
        an error code the connection is dead at once.
        """
        if self._dead:
            return
        if not self._initiated:
            self.initiate()
        last = self._last_processed if not self.client_side else 0
        _queue(self, goaway(last, error_code, debug))
        self._goaway_sent = True
        self._goaway_last = last
        if self._drain == 1:
            self._drain = 2  # this GOAWAY is the final one
        if error_code != _NO_ERROR:
            self._dead = True

    def graceful_shutdown(self):
        """Drain. Server: GOAWAY(2**31-1) + PING, then GOAWAY(last processed) on the PING's ACK or the next call.

        Client: GOAWAY(0), and no new streams.
        """
        if self._dead or self._goaway_sent:
            return
        if not self._initiated:
            self.initiate()
        if self.client_side:
            _queue(self, goaway(0, _NO_ERROR, b""))
            self._goaway_sent = True
            self._goaway_last = 0
            return
        if self._drain == 0:
            # RFC 9113 6.8: announce the shutdown without a limit first, so
            # requests already in flight are not refused; the PING round trip
            # proves the client has seen it.
            self._drain = 1
            _queue(self, goaway(_MAX_STREAM_ID, _NO_ERROR, b""))
            _queue(self, h2frame.ping(_DRAIN_PING, False))
        else:
            _finish_drain(self)


# ---------------------------------------------------------------- output helpers


def _queue(conn, data):
    conn._out.append(data)
    conn._out_len += len(data)
    return 0


def _fold_end(conn, sid):
    # The end of a stream whose last DATA frame is still the newest thing queued: END_STREAM goes on that frame
    # instead of an empty DATA frame after it (a response's body and its end usually come in one read: the peer
    # then parses two frames for it, not three). The frame's header is matched by identity, so a drained queue
    # or any frame queued since never matches.
    out = conn._out
    n = len(out)
    if n < 2 or out[n - 2] is not conn._tail_head or conn._tail_sid != sid:
        return False
    out[n - 2] = frame_header(conn._tail_len, _DATA, _END_STREAM, sid)
    conn._tail_head = None
    return True


def _queue_ctl(conn, events, data):
    # A frame the peer made us send; too many between two drains is abuse.
    conn._out.append(data)
    conn._out_len += len(data)
    conn._ctl_len += len(data)
    if conn._ctl_len > conn.settings.max_pending_outbound:
        _conn_error(conn, events, _ENHANCE_YOUR_CALM, "too many queued control frames")
    return 0


def _finish_drain(conn):
    conn._drain = 2
    conn._goaway_sent = True
    conn._goaway_last = conn._last_processed
    _queue(conn, goaway(conn._last_processed, _NO_ERROR, b""))
    return 0


def _sending_stream(conn, sid):
    if conn._dead:
        raise ConnectionClosing("the connection failed")
    stream = conn._streams.get(sid)
    if stream is None:
        raise StreamClosed(f"stream {sid} is not open")
    return stream


def _raise_send_error(stream, value):
    if h2state.error_code(value) == _STREAM_CLOSED:
        raise StreamClosed(f"stream {stream.id}: our side is closed")
    raise H2UsageError(f"stream {stream.id}: not allowed in state {h2state.STATE_NAMES[stream.state]}")


def _stream_owed(conn, stream, n):
    # Only a stream the peer may still send on needs its window back.
    if stream.state != _OPEN and stream.state != _HALF_CLOSED_LOCAL:
        return 0
    room = conn._stream_target - stream.recv_window - stream.owed
    if n > room:
        n = room
    if n <= 0:
        return 0
    stream.owed += n
    if stream.owed * 2 >= conn._stream_target:
        _queue(conn, window_update(stream.id, stream.owed))
        stream.recv_window += stream.owed
        stream.owed = 0
    return 0


def _connection_owed(conn):
    if conn._recv_owed > 0 and conn._recv_owed * 2 >= conn._conn_target:
        _queue(conn, window_update(0, conn._recv_owed))
        conn._recv_window += conn._recv_owed
        conn._recv_owed = 0
    return 0


def _buffer(conn, n):
    # DATA handed to the caller. Connection flow control is only a bound on
    # memory here: per-stream windows are the backpressure. So the connection
    # window comes back on arrival while everything delivered and not yet
    # acknowledged stays under connection_buffer (one stalled stream cannot
    # starve the others), and only the excess waits for acknowledgements.
    # Invariant: _held == max(0, _buffered - connection_buffer).
    conn._buffered += n
    excess = conn._buffered - conn.settings.connection_buffer
    held = excess if excess > 0 else 0
    early = n - (held - conn._held)
    conn._held = held
    _release(conn, early)
    return 0


def _unbuffer(conn, n):
    # Delivered DATA acknowledged (or dropped with its stream): what was held
    # back beyond connection_buffer goes to the peer now.
    if n <= 0:
        return 0
    conn._buffered -= n
    excess = conn._buffered - conn.settings.connection_buffer
    held = excess if excess > 0 else 0
    if held < conn._held:
        back = conn._held - held
        conn._held = held
        _release(conn, back)
    return 0


def _release(conn, n):
    # DATA the caller will never see (error, ignored stream, padding only):
    # its connection window comes back without an acknowledgement.
    if n > 0:
        conn._recv_owed += n
        _connection_owed(conn)
    return 0


# ---------------------------------------------------------------- errors


def _conn_error(conn, events, code, reason):
    if conn._dead:
        return 0
    conn._dead = True
    conn._goaway_sent = True
    debug = reason.encode("ascii", "replace")
    _queue(conn, goaway(conn._last_processed, code, debug))
    ev = ConnectionTerminated.__new__(ConnectionTerminated)
    ev.error_code = code
    ev.last_stream_id = conn._last_processed
    ev.debug = debug
    ev.remote = False
    events.append(ev)
    return 0


def _count_reset(conn, events):
    conn._resets += 1
    if conn._resets > conn.settings.max_resets_per_window:
        _conn_error(conn, events, _ENHANCE_YOUR_CALM, "too many stream resets")
    return 0


def _stream_error(conn, events, sid, code):
    # RST_STREAM because the peer broke a stream rule; later frames on the
    # stream are ignored (CLOSED_RESET), so each stream costs one RST at most.
    _queue_ctl(conn, events, rst_stream(sid, code))
    stream = conn._streams.get(sid)
    if stream is not None:
        _set_state(conn, cython.cast(_Stream, stream), _CLOSED_RESET)
    else:
        _remember(conn, sid, _CLOSED_RESET)
    events.append(_ev_reset(sid, code, False))
    _count_reset(conn, events)
    return 0


def _state_error(conn, events, sid, value, reason):
    # A (state, event) pair outside h2state's table, as the table says.
    if h2state.error_scope(value) == _SCOPE_CONNECTION:
        _conn_error(conn, events, h2state.error_code(value), reason)
    else:
        _stream_error(conn, events, sid, h2state.error_code(value))
    return 0


def _reader_stream_error(conn, events, sid, code, reason):
    # The reader's stream errors (a bad PRIORITY length, a zero WINDOW_UPDATE
    # increment). An idle stream cannot be reset (RFC 9113 6.4): the
    # connection takes the error instead.
    state = _stream_state_of(conn, sid)
    if state == _IDLE:
        _conn_error(conn, events, code, reason)
    elif state != _CLOSED_RESET:
        _stream_error(conn, events, sid, code)
    return 0


def _stream_state_of(conn, sid):
    stream = conn._streams.get(sid)
    if stream is not None:
        return cython.cast(_Stream, stream).state
    state = _unknown_state(conn, sid)
    return _CLOSED if state == _SKIPPED else state


# ---------------------------------------------------------------- frame handlers


def _dispatch(conn, events, frame):
    ftype = frame.type
    if ftype == _DATA:
        return _on_data(conn, events, frame)
    if ftype == _HEADERS:
        return _on_headers(conn, events, frame)
    if ftype == _WINDOW_UPDATE:
        return _on_window_update(conn, events, frame)
    if ftype == _RST_STREAM:
        return _on_rst_stream(conn, events, frame)
    if ftype == _SETTINGS:
        return _on_settings(conn, events, frame)
    if ftype == _PING:
        return _on_ping(conn, events, frame)
    if ftype == _GOAWAY:
        return _on_goaway(conn, events, frame)
    if ftype == _PUSH_PROMISE:
        # We advertise SETTINGS_ENABLE_PUSH 0, and a client never pushes.
        return _conn_error(conn, events, _PROTOCOL_ERROR, "push_promise received")
    # PRIORITY (deprecated, RFC 9113 5.3.2) and unknown types (4.1): ignored.
    return 0


def _on_data(conn, events, frame):
    sid = frame.stream_id
    n = frame.length
    end = (frame.flags & _END_STREAM) != 0
    if n > conn._recv_window:
        return _conn_error(conn, events, _FLOW_CONTROL_ERROR, "data beyond the connection window")
    conn._recv_window -= n
    if n == 0 and not end:
        conn._empty_data += 1
        if conn._empty_data > conn.settings.max_empty_data_per_window:
            return _conn_error(conn, events, _ENHANCE_YOUR_CALM, "too many empty data frames")
    event = _E_RECV_DATA_END if end else _E_RECV_DATA
    obj = conn._streams.get(sid)
    if obj is None:
        _release(conn, n)
        state = _unknown_state(conn, sid)
        if state == _SKIPPED:
            state = _CLOSED
        nxt = lookup(state, event)
        if nxt < 0:
            _state_error(conn, events, sid, nxt, "data on a stream not open")
        return 0
    stream = cython.cast(_Stream, obj)
    nxt = lookup(stream.state, event)
    if nxt < 0:
        _release(conn, n)
        return _state_error(conn, events, sid, nxt, "data on a stream not open")
    if n > stream.recv_window:
        _release(conn, n)
        return _stream_error(conn, events, sid, _FLOW_CONTROL_ERROR)
    stream.recv_window -= n
    if stream.rx != _BODY:
        # Client: DATA before the final response head.
        _release(conn, n)
        return _stream_error(conn, events, sid, _PROTOCOL_ERROR)
    data = frame.data
    if stream.content_length >= 0:
        stream.body_received += len(data)
        if stream.body_received > stream.content_length or (end and stream.body_received != stream.content_length):
            _release(conn, n)
            return _stream_error(conn, events, sid, _PROTOCOL_ERROR)
    if len(data) == 0 and not end:
        _release(conn, n)  # padding only: nothing to deliver
        return 0
    stream.unacked += n
    _buffer(conn, n)
    events.append(_ev_data(sid, data, n, end))
    if nxt != stream.state:
        _set_state(conn, stream, nxt)
    return 0


def _on_headers(conn, events, frame):
    sid = frame.stream_id
    end = (frame.flags & _END_STREAM) != 0
    # Decode first, whatever becomes of the stream: the HPACK context is the
    # connection's and must see every block (RFC 9113 4.3).
    too_large = False
    try:
        headers = conn._decoder.decode(frame.data)
    except _ListTooLarge:
        headers = None
        too_large = True
    event = _E_RECV_HEADERS_END if end else _E_RECV_HEADERS
    obj = conn._streams.get(sid)
    if obj is None:
        return _on_new_stream(conn, events, sid, headers, too_large, end, event)
    stream = cython.cast(_Stream, obj)
    nxt = lookup(stream.state, event)
    if nxt < 0:
        return _state_error(conn, events, sid, nxt, "headers on a stream not open")
    if too_large:
        events.append(_ev_too_large(sid))
        return _stream_error(conn, events, sid, _CANCEL)
    if stream.rx == _HEAD:
        # Client: a response head, informational or final.
        try:
            validate_headers(headers, False, False)
        except ProtocolError:
            return _stream_error(conn, events, sid, _PROTOCOL_ERROR)
        status = _status(headers)
        if status < 200:
            if end or status == 101:
                return _stream_error(conn, events, sid, _PROTOCOL_ERROR)
            info = InformationalResponseReceived.__new__(InformationalResponseReceived)
            info.stream_id = sid
            info.headers = headers
            events.append(info)
            return 0
        if stream.method == _M_OTHER and status != 204 and status != 304:
            length = _content_length(headers)
            if length == -2 or (end and length > 0):
                return _stream_error(conn, events, sid, _PROTOCOL_ERROR)
            stream.content_length = length
        elif stream.method == _M_CONNECT and status >= 300:
            # A refused tunnel's response is an ordinary one.
            length = _content_length(headers)
            if length == -2:
                return _stream_error(conn, events, sid, _PROTOCOL_ERROR)
            stream.content_length = length
        stream.rx = _BODY
        events.append(_ev_headers(1, sid, headers, end))
    else:
        # Trailers: they must end the stream (RFC 9113 8.1).
        if not end:
            return _stream_error(conn, events, sid, _PROTOCOL_ERROR)
        try:
            validate_headers(headers, not conn.client_side, True)
        except ProtocolError:
            return _stream_error(conn, events, sid, _PROTOCOL_ERROR)
        if stream.content_length >= 0 and stream.body_received != stream.content_length:
            return _stream_error(conn, events, sid, _PROTOCOL_ERROR)
        trailers = TrailersReceived.__new__(TrailersReceived)
        trailers.stream_id = sid
        trailers.headers = headers
        events.append(trailers)
    if nxt != stream.state:
        _set_state(conn, stream, nxt)
    return 0


def _ev_too_large(sid):
    ev = HeaderListTooLarge.__new__(HeaderListTooLarge)
    ev.stream_id = sid
    return ev


def _on_new_stream(conn, events, sid, headers, too_large, end, event):
    # HEADERS on a stream with no live record: a new request (server), or a
    # frame for a stream that is closed, or one the rules forbid.
    state = _unknown_state(conn, sid)
    if state == _SKIPPED:
        # RFC 9113 5.1.1: a new stream's id must exceed every id the peer used.
        return _conn_error(conn, events, _PROTOCOL_ERROR, "new stream id lower than one already used")
    if state != _IDLE:
        nxt = lookup(state, event)
        if nxt < 0:
            return _state_error(conn, events, sid, nxt, "headers on a closed stream")
        return 0
    if conn.client_side or (sid & 1) == 0:
        # Push is off, so a server never opens streams; and a client's are odd.
        return _conn_error(conn, events, _PROTOCOL_ERROR, "stream opened with a wrong id")
    _note_new_peer_stream(conn, sid)
    if conn._goaway_sent and sid > conn._goaway_last:
        # After our GOAWAY, streams above its last id are ignored (RFC 9113 6.8).
        _remember(conn, sid, _CLOSED_RESET)
        return 0
    if conn._peer_open >= conn.settings.max_concurrent_streams:
        # REFUSED_STREAM: the client knows the request was not processed and may retry it.
        return _stream_error(conn, events, sid, _REFUSED_STREAM)
    nxt = lookup(_IDLE, event)
    if too_large:
        return _answer_431(conn, events, sid, nxt)
    try:
        validate_headers(headers, True, False)
    except ProtocolError:
        return _stream_error(conn, events, sid, _PROTOCOL_ERROR)
    method = _method_kind(headers)
    length = -1
    if method != _M_CONNECT:
        length = _content_length(headers)
        if length == -2 or (end and length > 0):
            return _stream_error(conn, events, sid, _PROTOCOL_ERROR)
    stream = _new_stream(conn, sid, False, nxt)
    stream.rx = _BODY
    stream.method = method
    stream.content_length = length
    conn._last_processed = sid
    events.append(_ev_headers(0, sid, headers, end))
    return 0


def _answer_431(conn, events, sid, nxt):
    # RFC 9113 10.5.1: a request head over our limit gets 431; if the client
    # is still sending, RST_STREAM NO_ERROR asks it to stop (8.1).
    conn._last_processed = sid
    block = conn._encoder.encode([(b":status", b"431"), (b"content-length", b"0")])
    _queue_ctl(conn, events, headers_frames(sid, block, True, conn._peer_max_frame_size))
    if nxt == _HALF_CLOSED_REMOTE:
        _remember(conn, sid, _CLOSED)
    else:
        _queue_ctl(conn, events, rst_stream(sid, _NO_ERROR))
        _remember(conn, sid, _CLOSED_RESET)
    events.append(_ev_too_large(sid))
    return _count_reset(conn, events)


def _on_window_update(conn, events, frame):
    sid = frame.stream_id
    if conn._wu_credit > 0:
        conn._wu_credit -= 1
    else:
        conn._window_updates += 1
        if conn._window_updates > conn.settings.max_window_updates_per_window:
            return _conn_error(conn, events, _ENHANCE_YOUR_CALM, "too many window updates")
    if sid == 0:
        conn._send_window += frame.increment
        if conn._send_window > _MAX_WINDOW:
            return _conn_error(conn, events, _FLOW_CONTROL_ERROR, "connection window above 2**31-1")
        if conn._conn_blocked and conn._send_window > 0:
            conn._conn_blocked = False
            events.append(_ev_window(0))
        return 0
    obj = conn._streams.get(sid)
    if obj is None:
        state = _unknown_state(conn, sid)
        if state == _SKIPPED:
            state = _CLOSED
        nxt = lookup(state, _E_RECV_WINDOW_UPDATE)
        if nxt < 0:
            _state_error(conn, events, sid, nxt, "window_update on an idle stream")
        return 0
    stream = cython.cast(_Stream, obj)
    nxt = lookup(stream.state, _E_RECV_WINDOW_UPDATE)
    if nxt < 0:
        return _state_error(conn, events, sid, nxt, "window_update not allowed")
    stream.send_window += frame.increment
    if stream.send_window > _MAX_WINDOW:
        return _stream_error(conn, events, sid, _FLOW_CONTROL_ERROR)
    if stream.blocked and stream.send_window > 0:
        stream.blocked = False
        events.append(_ev_window(sid))
    return 0


def _on_rst_stream(conn, events, frame):
    sid = frame.stream_id
    if not conn.client_side:
        # Rapid reset is a client's attack (CVE-2023-44487). A server resets
        # only streams we opened, and answering early then resetting with
        # NO_ERROR is its right (RFC 9113 8.1): not counted on our side.
        _count_reset(conn, events)
    if conn._dead:
        return 0
    obj = conn._streams.get(sid)
    if obj is None:
        state = _unknown_state(conn, sid)
        if state == _SKIPPED:
            state = _CLOSED
        nxt = lookup(state, _E_RECV_RST_STREAM)
        if nxt < 0:
            _state_error(conn, events, sid, nxt, "rst_stream on an idle stream")
        return 0
    stream = cython.cast(_Stream, obj)
    nxt = lookup(stream.state, _E_RECV_RST_STREAM)
    if nxt < 0:
        return _state_error(conn, events, sid, nxt, "rst_stream not allowed")
    _release_stream(conn, stream)
    _set_state(conn, stream, nxt)
    events.append(_ev_reset(sid, frame.error_code, True))
    return 0


def _on_settings(conn, events, frame):
    if frame.flags & _ACK:
        if conn._settings_unacked > 0:
            conn._settings_unacked -= 1
            if not conn._local_applied:
                _apply_local_settings(conn)
            return 0
        # An ACK for nothing: harmless, but it is counted like a SETTINGS frame.
        return _count_settings(conn, events)
    _count_settings(conn, events)
    if conn._dead:
        return 0
    changed = {}
    delta = 0
    for pair in frame.settings:
        ident = pair[0]
        value = pair[1]
        if ident == _S_HEADER_TABLE_SIZE:
            conn._encoder.set_max_table_size(value)
        elif ident == _S_ENABLE_PUSH:
            if value != 0 and conn.client_side:
                return _conn_error(conn, events, _PROTOCOL_ERROR, "server enabled push")
        elif ident == _S_MAX_CONCURRENT_STREAMS:
            conn._peer_max_concurrent = value
        elif ident == _S_INITIAL_WINDOW_SIZE:
            # RFC 9113 6.9.2: every stream window moves by the difference, and may go negative.
            delta = value - conn._peer_initial_window
            conn._peer_initial_window = value
            if delta != 0:
                for obj in conn._streams.values():
                    stream = cython.cast(_Stream, obj)
                    stream.send_window += delta
                    if stream.send_window > _MAX_WINDOW:
                        return _conn_error(conn, events, _FLOW_CONTROL_ERROR, "stream window above 2**31-1")
        elif ident == _S_MAX_FRAME_SIZE:
            conn._peer_max_frame_size = value
        conn._peer_settings[ident] = value
        changed[ident] = value
    _queue_ctl(conn, events, settings_frame((), True))
    ev = SettingsChanged.__new__(SettingsChanged)
    ev.changed = changed
    events.append(ev)
    if delta > 0 and conn._streams:
        events.append(_ev_window(0))
    return 0


def _count_settings(conn, events):
    conn._settings_count += 1
    if conn._settings_count > conn.settings.max_settings_per_window:
        _conn_error(conn, events, _ENHANCE_YOUR_CALM, "too many settings frames")
    return 0


def _apply_local_settings(conn):
    # Our first SETTINGS is acknowledged: what waited for the ACK applies now.
    conn._local_applied = True
    conn._decoder.set_max_table_size(conn.settings.header_table_size)
    target = conn.settings.initial_window_size
    delta = target - conn._stream_recv_initial
    if delta != 0:
        conn._stream_recv_initial = target
        for obj in conn._streams.values():
            cython.cast(_Stream, obj).recv_window += delta
    return 0


def _on_ping(conn, events, frame):
    opaque = frame.data
    if frame.flags & _ACK:
        if conn._drain == 1 and opaque == _DRAIN_PING:
            return _finish_drain(conn)
        pings = conn._pings
        for i in range(len(pings)):
            if pings[i] == opaque:
                del pings[i]
                ev = PingAcked.__new__(PingAcked)
                ev.opaque = opaque
                events.append(ev)
                return 0
    conn._ping_count += 1
    if conn._ping_count > conn.settings.max_pings_per_window:
        return _conn_error(conn, events, _ENHANCE_YOUR_CALM, "too many pings")
    if not frame.flags & _ACK:
        _queue_ctl(conn, events, h2frame.ping(opaque, True))
    return 0


def _on_goaway(conn, events, frame):
    last = frame.last_stream_id
    _count_settings(conn, events)
    if conn._dead:
        return 0
    first = not conn._goaway_received
    conn._goaway_received = True
    if not first and last >= conn._peer_goaway_last:
        return 0
    conn._peer_goaway_last = last
    ev = ConnectionTerminated.__new__(ConnectionTerminated)
    ev.error_code = frame.error_code
    ev.last_stream_id = last
    ev.debug = frame.data
    ev.remote = True
    events.append(ev)
    # Our streams above the last id were never processed: retry-safe.
    refused = [obj for obj in conn._streams.values() if cython.cast(_Stream, obj).local and
               cython.cast(_Stream, obj).id > last]
    for obj in refused:
        stream = cython.cast(_Stream, obj)
        _release_stream(conn, stream)
        _set_state(conn, stream, _CLOSED)
        events.append(_ev_reset(stream.id, _REFUSED_STREAM, True))
    return 0

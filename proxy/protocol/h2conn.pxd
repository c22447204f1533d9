# Typed declarations for h2conn.py (Cython pure-Python mode).
# Frames, the reader, the HPACK contexts and the state lookup are cimported,
# so a frame's fields, a decode and a transition are C-level calls. The
# exceptions (H2UsageError and subclasses) stay plain Python classes.

cimport cython
from proxy.protocol.h2frame cimport (
    Frame, FrameReader, frame_header, goaway, headers_frames, rst_stream, settings_frame, window_update,
)
from proxy.protocol.hpack cimport Encoder, Decoder, validate_headers
from proxy.protocol.h2state cimport lookup

cdef int _DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE
cdef int _END_STREAM, _ACK
cdef unsigned int _NO_ERROR, _PROTOCOL_ERROR, _INTERNAL_ERROR, _FLOW_CONTROL_ERROR, _REFUSED_STREAM, _CANCEL
cdef unsigned int _STREAM_CLOSED
cdef unsigned int _COMPRESSION_ERROR, _ENHANCE_YOUR_CALM
cdef int _S_HEADER_TABLE_SIZE, _S_ENABLE_PUSH, _S_MAX_CONCURRENT_STREAMS, _S_INITIAL_WINDOW_SIZE
cdef int _S_MAX_FRAME_SIZE, _S_MAX_HEADER_LIST_SIZE
cdef long long _MAX_WINDOW, _MAX_STREAM_ID, _DEFAULT_WINDOW, _WU_CREDIT_CAP
cdef bytes _PREFACE, _DRAIN_PING
cdef int _IDLE, _OPEN, _HALF_CLOSED_LOCAL, _HALF_CLOSED_REMOTE, _CLOSED, _CLOSED_RESET, _SKIPPED
cdef int _SCOPE_STREAM, _SCOPE_CONNECTION
cdef int _E_RECV_HEADERS, _E_RECV_HEADERS_END, _E_RECV_DATA, _E_RECV_DATA_END, _E_RECV_RST_STREAM
cdef int _E_RECV_WINDOW_UPDATE, _E_SEND_HEADERS, _E_SEND_HEADERS_END, _E_SEND_DATA, _E_SEND_DATA_END
cdef int _E_SEND_RST_STREAM
cdef int _HEAD, _BODY, _M_OTHER, _M_HEAD, _M_CONNECT
cdef Py_ssize_t _MAX_PINGS_OUTSTANDING, _MAX_SKIPPED_RANGES


@cython.final
cdef class H2Settings:
    cdef readonly long long max_concurrent_streams
    cdef readonly long long initial_window_size
    cdef readonly long long max_frame_size
    cdef readonly long long max_header_list_size
    cdef readonly long long header_table_size
    cdef readonly long long max_resets_per_window
    cdef readonly long long max_pings_per_window
    cdef readonly long long max_settings_per_window
    cdef readonly long long max_empty_data_per_window
    cdef readonly long long max_window_updates_per_window
    cdef readonly long long window_ms
    cdef readonly long long max_header_block_size
    cdef readonly long long max_pending_outbound
    cdef readonly long long connection_buffer


cdef class Event:
    pass

@cython.final
cdef class RequestReceived(Event):
    cdef readonly Py_ssize_t stream_id
    cdef readonly list headers
    cdef readonly bint end_stream

@cython.final
cdef class ResponseReceived(Event):
    cdef readonly Py_ssize_t stream_id
    cdef readonly list headers
    cdef readonly bint end_stream

@cython.final
cdef class InformationalResponseReceived(Event):
    cdef readonly Py_ssize_t stream_id
    cdef readonly list headers

@cython.final
cdef class DataReceived(Event):
    cdef readonly Py_ssize_t stream_id
    cdef readonly bytes data
    cdef readonly Py_ssize_t flow_controlled_length
    cdef readonly bint end_stream

@cython.final
cdef class TrailersReceived(Event):
    cdef readonly Py_ssize_t stream_id
    cdef readonly list headers

@cython.final
cdef class StreamEnded(Event):
    cdef readonly Py_ssize_t stream_id

@cython.final
cdef class StreamReset(Event):
    cdef readonly Py_ssize_t stream_id
    cdef readonly unsigned int error_code
    cdef readonly bint remote

@cython.final
cdef class WindowUpdated(Event):
    cdef readonly Py_ssize_t stream_id

@cython.final
cdef class SettingsChanged(Event):
    cdef readonly dict changed

@cython.final
cdef class PingAcked(Event):
    cdef readonly bytes opaque

@cython.final
cdef class ConnectionTerminated(Event):
    cdef readonly unsigned int error_code
    cdef readonly Py_ssize_t last_stream_id
    cdef readonly bytes debug
    cdef readonly bint remote

@cython.final
cdef class HeaderListTooLarge(Event):
    cdef readonly Py_ssize_t stream_id


@cython.final
cdef class _Stream:
    cdef Py_ssize_t id
    cdef int state                    # an h2state state
    cdef bint local                   # we opened it
    cdef long long send_window        # ours to spend (may go negative after a SETTINGS shrink)
    cdef long long recv_window        # the peer's to spend
    cdef long long owed               # consumed by the caller, not yet given back by WINDOW_UPDATE
    cdef long long unacked            # delivered to the caller, not yet acknowledged
    cdef long long content_length     # of the peer's message; -1: unknown or not checked
    cdef long long body_received
    cdef int rx                       # _HEAD / _BODY of the peer's message
    cdef int tx                       # _HEAD / _BODY of ours
    cdef int method                   # _M_* of the request
    cdef bint blocked                 # a send_data came up short: WindowUpdated is owed


@cython.final
cdef class H2Connection:
    cdef readonly bint client_side
    cdef readonly H2Settings settings
    cdef FrameReader _reader
    cdef Encoder _encoder
    cdef Decoder _decoder
    cdef dict _streams                # live (open / half-closed) streams
    cdef dict _closed                 # recently closed ids -> CLOSED / CLOSED_RESET
    cdef list _closed_ring            # the same ids in the order they closed: _closed_cap slots, reused
    cdef Py_ssize_t _closed_cap
    cdef Py_ssize_t _closed_next      # the ring's slot the next closed id takes (its oldest)
    cdef list _skipped                # (first, last) ranges of peer ids passed over, oldest first
    cdef list _out
    cdef Py_ssize_t _out_len
    cdef Py_ssize_t _ctl_len          # peer-induced octets queued since the last data_to_send
    cdef bytes _tail_head             # the last DATA frame's header queued without END_STREAM, or None
    cdef Py_ssize_t _tail_sid
    cdef Py_ssize_t _tail_len
    cdef bint _initiated
    cdef bint _dead
    cdef bint _goaway_sent            # a GOAWAY with a real last id went out
    cdef bint _goaway_received
    cdef int _drain                   # graceful shutdown: 0 no, 1 first GOAWAY + PING out, 2 final GOAWAY out
    cdef Py_ssize_t _next_sid
    cdef Py_ssize_t _last_peer_sid
    cdef Py_ssize_t _last_processed
    cdef Py_ssize_t _goaway_last
    cdef Py_ssize_t _peer_goaway_last
    cdef Py_ssize_t _local_open
    cdef Py_ssize_t _peer_open
    cdef long long _peer_max_concurrent
    cdef long long _peer_initial_window
    cdef Py_ssize_t _peer_max_frame_size
    cdef dict _peer_settings
    cdef long long _send_window
    cdef long long _recv_window
    cdef long long _recv_owed
    cdef dict _unacked_closed         # ended streams' ids -> octets delivered, not yet acknowledged
    cdef long long _buffered          # delivered DATA not acknowledged, all streams
    cdef long long _held              # connection window kept back: max(0, _buffered - connection_buffer)
    cdef long long _conn_target
    cdef long long _stream_target
    cdef long long _stream_recv_initial
    cdef bint _conn_blocked
    cdef int _settings_unacked
    cdef bint _local_applied
    cdef list _pings
    cdef long long _window_start
    cdef bint _window_open
    cdef long long _resets
    cdef long long _ping_count
    cdef long long _settings_count
    cdef long long _empty_data
    cdef long long _window_updates
    cdef long long _wu_credit

    @cython.locals(events=list, reader=FrameReader, obj=object)
    cpdef list receive_data(self, object data, long long now_ms)
    @cython.locals(out=list, n=Py_ssize_t)
    cpdef bytes data_to_send(self)
    @cython.locals(sid=Py_ssize_t, block=bytes, stream=_Stream)
    cpdef Py_ssize_t send_request(self, object headers, bint end_stream) except -1
    @cython.locals(stream=_Stream, nxt=int, status=int, block=bytes, final=bint)
    cpdef send_headers(self, Py_ssize_t stream_id, object headers, bint end_stream)
    @cython.locals(stream=_Stream, nxt=int, n=Py_ssize_t, avail=cython.longlong, take=Py_ssize_t, last=bint,
                   mfs=Py_ssize_t, frames=Py_ssize_t, pos=Py_ssize_t, chunk=Py_ssize_t, flags=int, head=bytes)
    cpdef Py_ssize_t send_data(self, Py_ssize_t stream_id, object data, bint end_stream) except -1
    cpdef end_stream(self, Py_ssize_t stream_id)
    @cython.locals(avail=cython.longlong)
    cpdef Py_ssize_t window_available(self, Py_ssize_t stream_id) except -1
    @cython.locals(key=object, obj=object, stream=_Stream, found=object, left=Py_ssize_t)
    cpdef acknowledge_received(self, Py_ssize_t stream_id, Py_ssize_t n)
    @cython.locals(key=object, stream=object, found=object)
    cpdef reset_stream(self, Py_ssize_t stream_id, long long error_code)


@cython.locals(req=RequestReceived, resp=ResponseReceived)
cdef Event _ev_headers(int kind, Py_ssize_t stream_id, list headers, bint end_stream)
@cython.locals(ev=DataReceived)
cdef DataReceived _ev_data(Py_ssize_t stream_id, bytes data, Py_ssize_t length, bint end_stream)
@cython.locals(ev=StreamReset)
cdef StreamReset _ev_reset(Py_ssize_t stream_id, unsigned int code, bint remote)
@cython.locals(ev=WindowUpdated)
cdef WindowUpdated _ev_window(Py_ssize_t stream_id)
@cython.locals(ev=HeaderListTooLarge)
cdef HeaderListTooLarge _ev_too_large(Py_ssize_t sid)

@cython.locals(stream=_Stream)
cdef _Stream _new_stream(H2Connection conn, Py_ssize_t sid, bint local, int state)
@cython.locals(key=object)
cdef int _set_state(H2Connection conn, _Stream stream, int nxt) except -1
@cython.locals(n=cython.longlong)
cdef int _release_stream(H2Connection conn, _Stream stream) except -1
@cython.locals(closed=dict, ring=list, at=Py_ssize_t)
cdef int _remember(H2Connection conn, object key, int state) except -1
@cython.locals(found=object, pair=tuple)
cdef int _unknown_state(H2Connection conn, Py_ssize_t sid) except? -2
@cython.locals(expected=Py_ssize_t)
cdef int _note_new_peer_stream(H2Connection conn, Py_ssize_t sid) except -1

@cython.locals(result=cython.longlong, field=object, name=bytes, value=bytes, n=Py_ssize_t, parsed=cython.longlong,
               i=Py_ssize_t, c=cython.uchar)
cdef long long _content_length(list headers) except? -3
@cython.locals(field=object, name=bytes, value=bytes)
cdef int _status(object headers) except? -1
@cython.locals(field=object, name=bytes, value=bytes)
cdef int _method_kind(object headers) except? -1

cdef int _queue(H2Connection conn, bytes data) except -1
cdef int _queue_ctl(H2Connection conn, list events, bytes data) except -1
@cython.locals(out=list, n=Py_ssize_t)
cdef bint _fold_end(H2Connection conn, Py_ssize_t sid) except -1
cdef int _finish_drain(H2Connection conn) except -1
cdef _Stream _sending_stream(H2Connection conn, Py_ssize_t sid)
cdef int _raise_send_error(_Stream stream, int value) except -1
@cython.locals(room=cython.longlong)
cdef int _stream_owed(H2Connection conn, _Stream stream, long long n) except -1
cdef int _connection_owed(H2Connection conn) except -1
cdef int _release(H2Connection conn, long long n) except -1
@cython.locals(excess=cython.longlong, held=cython.longlong, early=cython.longlong)
cdef int _buffer(H2Connection conn, long long n) except -1
@cython.locals(excess=cython.longlong, held=cython.longlong, back=cython.longlong)
cdef int _unbuffer(H2Connection conn, long long n) except -1

@cython.locals(debug=bytes, ev=ConnectionTerminated)
cdef int _conn_error(H2Connection conn, list events, unsigned int code, str reason) except -1
cdef int _count_reset(H2Connection conn, list events) except -1
cdef int _stream_error(H2Connection conn, list events, Py_ssize_t sid, unsigned int code) except -1
cdef int _state_error(H2Connection conn, list events, Py_ssize_t sid, int value, str reason) except -1
@cython.locals(state=int)
cdef int _reader_stream_error(H2Connection conn, list events, Py_ssize_t sid, unsigned int code, str reason) except -1
@cython.locals(state=int)
cdef int _stream_state_of(H2Connection conn, Py_ssize_t sid) except? -2

@cython.locals(ftype=int)
cdef int _dispatch(H2Connection conn, list events, Frame frame) except -1
@cython.locals(sid=Py_ssize_t, n=Py_ssize_t, end=bint, event=int, obj=object, stream=_Stream, state=int, nxt=int,
               data=bytes)
cdef int _on_data(H2Connection conn, list events, Frame frame) except -1
@cython.locals(sid=Py_ssize_t, end=bint, too_large=bint, headers=list, event=int, obj=object, stream=_Stream,
               nxt=int, status=int, length=cython.longlong, info=InformationalResponseReceived,
               trailers=TrailersReceived)
cdef int _on_headers(H2Connection conn, list events, Frame frame) except -1
@cython.locals(state=int, nxt=int, method=int, length=cython.longlong, stream=_Stream)
cdef int _on_new_stream(H2Connection conn, list events, Py_ssize_t sid, list headers, bint too_large, bint end,
                        int event) except -1
@cython.locals(block=bytes)
cdef int _answer_431(H2Connection conn, list events, Py_ssize_t sid, int nxt) except -1
@cython.locals(sid=Py_ssize_t, obj=object, stream=_Stream, state=int, nxt=int)
cdef int _on_window_update(H2Connection conn, list events, Frame frame) except -1
@cython.locals(sid=Py_ssize_t, obj=object, stream=_Stream, state=int, nxt=int)
cdef int _on_rst_stream(H2Connection conn, list events, Frame frame) except -1
@cython.locals(changed=dict, delta=cython.longlong, pair=object, ident=cython.longlong, value=cython.longlong,
               obj=object, stream=_Stream, ev=SettingsChanged)
cdef int _on_settings(H2Connection conn, list events, Frame frame) except -1
cdef int _count_settings(H2Connection conn, list events) except -1
@cython.locals(target=cython.longlong, delta=cython.longlong, obj=object)
cdef int _apply_local_settings(H2Connection conn) except -1
@cython.locals(opaque=bytes, pings=list, i=Py_ssize_t, ev=PingAcked)
cdef int _on_ping(H2Connection conn, list events, Frame frame) except -1
@cython.locals(last=Py_ssize_t, first=bint, ev=ConnectionTerminated, refused=list, obj=object, stream=_Stream)
cdef int _on_goaway(H2Connection conn, list events, Frame frame) except -1

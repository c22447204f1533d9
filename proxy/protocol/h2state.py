"""HTTP/2 stream states (RFC 9113 5.1) as one table: (state, event) -> next state.

``TRANSITIONS`` is the whole state machine. A pair not in it is a protocol
error, and ``_error_for`` says which one, by the RFC's rules: the scope (a
stream error answered with RST_STREAM, a connection error answered with
GOAWAY, or a LOCAL error: our own caller tried to send what the state
forbids) and the error code. The connection looks a pair up in a flat C
array built from both, so the table costs one index per frame. Message
rules that span frames (a response before DATA, trailers ending the stream,
content-length) are the connection's, not this table's.
"""

import cython

# ---------------------------------------------------------------- states

IDLE = 0
RESERVED_LOCAL = 1
RESERVED_REMOTE = 2
OPEN = 3
HALF_CLOSED_LOCAL = 4
HALF_CLOSED_REMOTE = 5
CLOSED = 6
# RFC 9113 5.1 "closed", reached by *sending* RST_STREAM: the peer may have
# frames in flight that it cannot take back, so every frame received on the
# stream is ignored (DATA still counts against the connection window).
CLOSED_RESET = 7
NUM_STATES = 8

STATE_NAMES = (
    "IDLE", "RESERVED_LOCAL", "RESERVED_REMOTE", "OPEN", "HALF_CLOSED_LOCAL", "HALF_CLOSED_REMOTE",
    "CLOSED", "CLOSED_RESET",
)

# ---------------------------------------------------------------- events

# Frames received from the peer on the stream. *_END carry END_STREAM.
# RECV_PUSH_PROMISE is the promise reserving *this* (the promised) stream.
RECV_HEADERS = 0
RECV_HEADERS_END = 1
RECV_DATA = 2
RECV_DATA_END = 3
RECV_RST_STREAM = 4
RECV_PRIORITY = 5
RECV_WINDOW_UPDATE = 6
RECV_PUSH_PROMISE = 7
# Frames we send on the stream.
SEND_HEADERS = 8
SEND_HEADERS_END = 9
SEND_DATA = 10
SEND_DATA_END = 11
SEND_RST_STREAM = 12
SEND_PRIORITY = 13
SEND_WINDOW_UPDATE = 14
SEND_PUSH_PROMISE = 15
NUM_EVENTS = 16

EVENT_NAMES = (
    "RECV_HEADERS", "RECV_HEADERS_END", "RECV_DATA", "RECV_DATA_END", "RECV_RST_STREAM", "RECV_PRIORITY",
    "RECV_WINDOW_UPDATE", "RECV_PUSH_PROMISE",
    "SEND_HEADERS", "SEND_HEADERS_END", "SEND_DATA", "SEND_DATA_END", "SEND_RST_STREAM", "SEND_PRIORITY",
    "SEND_WINDOW_UPDATE", "SEND_PUSH_PROMISE",
)

# Error scopes.
STREAM = 0  # stream error: RST_STREAM, the connection goes on (RFC 9113 5.4.2)
CONNECTION = 1  # connection error: GOAWAY, the connection is over (5.4.1)
LOCAL = 2  # our caller's mistake: the send is refused, nothing goes on the wire

# Error codes used here (RFC 9113 7).
_PROTOCOL_ERROR_CODE = 0x1
_STREAM_CLOSED_CODE = 0x5

# ---------------------------------------------------------------- the table

TRANSITIONS = {
    # idle: HEADERS opens (END_STREAM: straight to half-closed); PRIORITY
    # leaves it idle; a PUSH_PROMISE naming it reserves it.
    (IDLE, RECV_HEADERS): OPEN,
    (IDLE, RECV_HEADERS_END): HALF_CLOSED_REMOTE,
    (IDLE, RECV_PRIORITY): IDLE,
    (IDLE, RECV_PUSH_PROMISE): RESERVED_REMOTE,
    (IDLE, SEND_HEADERS): OPEN,
    (IDLE, SEND_HEADERS_END): HALF_CLOSED_LOCAL,
    (IDLE, SEND_PRIORITY): IDLE,
    (IDLE, SEND_PUSH_PROMISE): RESERVED_LOCAL,
    # reserved (local): we promised it; our HEADERS start the response.
    (RESERVED_LOCAL, RECV_RST_STREAM): CLOSED,
    (RESERVED_LOCAL, RECV_PRIORITY): RESERVED_LOCAL,
    (RESERVED_LOCAL, RECV_WINDOW_UPDATE): RESERVED_LOCAL,
    (RESERVED_LOCAL, SEND_HEADERS): HALF_CLOSED_REMOTE,
    (RESERVED_LOCAL, SEND_HEADERS_END): CLOSED,
    (RESERVED_LOCAL, SEND_RST_STREAM): CLOSED_RESET,
    (RESERVED_LOCAL, SEND_PRIORITY): RESERVED_LOCAL,
    # reserved (remote): the peer promised it; its HEADERS start the response.
    (RESERVED_REMOTE, RECV_HEADERS): HALF_CLOSED_LOCAL,
    (RESERVED_REMOTE, RECV_HEADERS_END): CLOSED,
    (RESERVED_REMOTE, RECV_RST_STREAM): CLOSED,
    (RESERVED_REMOTE, RECV_PRIORITY): RESERVED_REMOTE,
    (RESERVED_REMOTE, SEND_RST_STREAM): CLOSED_RESET,
    (RESERVED_REMOTE, SEND_PRIORITY): RESERVED_REMOTE,
    (RESERVED_REMOTE, SEND_WINDOW_UPDATE): RESERVED_REMOTE,
    # open: anything goes; END_STREAM half-closes the side that sent it.
    (OPEN, RECV_HEADERS): OPEN,
    (OPEN, RECV_HEADERS_END): HALF_CLOSED_REMOTE,
    (OPEN, RECV_DATA): OPEN,
    (OPEN, RECV_DATA_END): HALF_CLOSED_REMOTE,
    (OPEN, RECV_RST_STREAM): CLOSED,
    (OPEN, RECV_PRIORITY): OPEN,
    (OPEN, RECV_WINDOW_UPDATE): OPEN,
    (OPEN, SEND_HEADERS): OPEN,
    (OPEN, SEND_HEADERS_END): HALF_CLOSED_LOCAL,
    (OPEN, SEND_DATA): OPEN,
    (OPEN, SEND_DATA_END): HALF_CLOSED_LOCAL,
    (OPEN, SEND_RST_STREAM): CLOSED_RESET,
    (OPEN, SEND_PRIORITY): OPEN,
    (OPEN, SEND_WINDOW_UPDATE): OPEN,
    # half-closed (local): we are done sending; the peer is not.
    (HALF_CLOSED_LOCAL, RECV_HEADERS): HALF_CLOSED_LOCAL,
    (HALF_CLOSED_LOCAL, RECV_HEADERS_END): CLOSED,
    (HALF_CLOSED_LOCAL, RECV_DATA): HALF_CLOSED_LOCAL,
    (HALF_CLOSED_LOCAL, RECV_DATA_END): CLOSED,
    (HALF_CLOSED_LOCAL, RECV_RST_STREAM): CLOSED,
    (HALF_CLOSED_LOCAL, RECV_PRIORITY): HALF_CLOSED_LOCAL,
    (HALF_CLOSED_LOCAL, RECV_WINDOW_UPDATE): HALF_CLOSED_LOCAL,
    (HALF_CLOSED_LOCAL, SEND_RST_STREAM): CLOSED_RESET,
    (HALF_CLOSED_LOCAL, SEND_PRIORITY): HALF_CLOSED_LOCAL,
    (HALF_CLOSED_LOCAL, SEND_WINDOW_UPDATE): HALF_CLOSED_LOCAL,
    # half-closed (remote): the peer is done sending; it may still manage the stream.
    (HALF_CLOSED_REMOTE, RECV_RST_STREAM): CLOSED,
    (HALF_CLOSED_REMOTE, RECV_PRIORITY): HALF_CLOSED_REMOTE,
    (HALF_CLOSED_REMOTE, RECV_WINDOW_UPDATE): HALF_CLOSED_REMOTE,
    (HALF_CLOSED_REMOTE, SEND_HEADERS): HALF_CLOSED_REMOTE,
    (HALF_CLOSED_REMOTE, SEND_HEADERS_END): CLOSED,
    (HALF_CLOSED_REMOTE, SEND_DATA): HALF_CLOSED_REMOTE,
    (HALF_CLOSED_REMOTE, SEND_DATA_END): CLOSED,
    (HALF_CLOSED_REMOTE, SEND_RST_STREAM): CLOSED_RESET,
    (HALF_CLOSED_REMOTE, SEND_PRIORITY): HALF_CLOSED_REMOTE,
    (HALF_CLOSED_REMOTE, SEND_WINDOW_UPDATE): HALF_CLOSED_REMOTE,
    # closed: WINDOW_UPDATE and RST_STREAM may still be in flight after our
    # END_STREAM; PRIORITY is always allowed. All are ignored.
    (CLOSED, RECV_RST_STREAM): CLOSED,
    (CLOSED, RECV_PRIORITY): CLOSED,
    (CLOSED, RECV_WINDOW_UPDATE): CLOSED,
    (CLOSED, SEND_PRIORITY): CLOSED,
    # closed by our RST_STREAM: whatever was in flight is ignored.
    (CLOSED_RESET, RECV_HEADERS): CLOSED_RESET,
    (CLOSED_RESET, RECV_HEADERS_END): CLOSED_RESET,
    (CLOSED_RESET, RECV_DATA): CLOSED_RESET,
    (CLOSED_RESET, RECV_DATA_END): CLOSED_RESET,
    (CLOSED_RESET, RECV_RST_STREAM): CLOSED_RESET,
    (CLOSED_RESET, RECV_PRIORITY): CLOSED_RESET,
    (CLOSED_RESET, RECV_WINDOW_UPDATE): CLOSED_RESET,
    (CLOSED_RESET, SEND_PRIORITY): CLOSED_RESET,
}


def _error_for(state, event):
    """(scope, code) for a pair that is not in TRANSITIONS, by RFC 9113 5.1 and 6.x."""
    if event >= SEND_HEADERS:
        # Our caller's mistake. Sending on a stream whose sending side is
        # over is "stream closed"; anything else breaks the protocol.
        if state == HALF_CLOSED_LOCAL or state == CLOSED or state == CLOSED_RESET:
            return (LOCAL, _STREAM_CLOSED_CODE)
        return (LOCAL, _PROTOCOL_ERROR_CODE)
    if event == RECV_PUSH_PROMISE:
        # 6.6: the promised stream must be idle.
        return (CONNECTION, _PROTOCOL_ERROR_CODE)
    if state == IDLE or state == RESERVED_LOCAL or state == RESERVED_REMOTE:
        # 5.1: frames other than the listed ones on an idle or reserved stream.
        return (CONNECTION, _PROTOCOL_ERROR_CODE)
    # 5.1 half-closed (remote) and closed, 6.1, 6.2: more DATA or HEADERS
    # from a peer that already ended (or reset) the stream.
    return (STREAM, _STREAM_CLOSED_CODE)


# ---------------------------------------------------------------- the flat lookup

# One int per (state, event): the next state (>= 0), or an error encoded as
# -1 - (code << 2 | scope).


def _build():
    flat = [0] * (NUM_STATES * NUM_EVENTS)
    for state in range(NUM_STATES):
        for event in range(NUM_EVENTS):
            nxt = TRANSITIONS.get((state, event))
            if nxt is None:
                scope, code = _error_for(state, event)
                nxt = -1 - ((code << 2) | scope)
            flat[state * NUM_EVENTS + event] = nxt
    return flat


_FLAT = _build()
_NUM_STATES = NUM_STATES
_NUM_EVENTS = NUM_EVENTS
_OUT_OF_RANGE = -1 - ((_PROTOCOL_ERROR_CODE << 2) | LOCAL)


def lookup(state, event):
    """The next state (>= 0) for ``event`` in ``state``, or a negative error value (see error_scope, error_code)."""
    if state < 0 or state >= _NUM_STATES or event < 0 or event >= _NUM_EVENTS:
        return _OUT_OF_RANGE
    return _FLAT[state * _NUM_EVENTS + event]


def error_scope(value):
    """STREAM, CONNECTION or LOCAL for a negative ``lookup`` result."""
    return (-1 - value) & 3


def error_code(value):
    """The RFC 9113 error code of a negative ``lookup`` result."""
    return (-1 - value) >> 2


class StreamStateError(Exception):
    """A (state, event) pair outside the table: ``scope`` and ``code`` say which error it is."""

    def __init__(self, state, event, scope, code):
        super().__init__(state, event, scope, code)
        self.state = state
        self.event = event
        self.scope = scope
        self.code = code

    def __str__(self):
        where = ("stream", "connection", "local")[self.scope]
        return f"{EVENT_NAMES[self.event]} in {STATE_NAMES[self.state]}: {where} error {self.code:#x}"


def transition(state, event):
    """The next state, or StreamStateError: the checked Python face of ``lookup``."""
    value = lookup(state, event)
    if value < 0:
        raise StreamStateError(state, event, error_scope(value), error_code(value))
    return value

"""Tests for proxy.protocol.h2state: the RFC 9113 5.1 stream state table and its errors.

The expected errors are written out here a second time, straight from the
RFC's text, so the table and its error rule are checked against an
independent reading rather than against themselves. Every (state, event)
pair is covered.
"""

from __future__ import annotations

import itertools

import pytest

import proxy.protocol.h2state as S

assert S.__file__.endswith(".so"), f"compiled h2state not in use: {S.__file__}"

PROTOCOL_ERROR = 0x1
STREAM_CLOSED = 0x5

RECV = (S.RECV_HEADERS, S.RECV_HEADERS_END, S.RECV_DATA, S.RECV_DATA_END, S.RECV_RST_STREAM, S.RECV_PRIORITY,
        S.RECV_WINDOW_UPDATE, S.RECV_PUSH_PROMISE)
SEND = (S.SEND_HEADERS, S.SEND_HEADERS_END, S.SEND_DATA, S.SEND_DATA_END, S.SEND_RST_STREAM, S.SEND_PRIORITY,
        S.SEND_WINDOW_UPDATE, S.SEND_PUSH_PROMISE)
STATES = range(S.NUM_STATES)

# What RFC 9113 5.1 allows a peer to send in each state (receive side):
# the frames listed per state; everything else is the error that follows.
RECV_ALLOWED = {
    S.IDLE: {S.RECV_HEADERS, S.RECV_HEADERS_END, S.RECV_PRIORITY, S.RECV_PUSH_PROMISE},
    S.RESERVED_LOCAL: {S.RECV_RST_STREAM, S.RECV_PRIORITY, S.RECV_WINDOW_UPDATE},
    S.RESERVED_REMOTE: {S.RECV_HEADERS, S.RECV_HEADERS_END, S.RECV_RST_STREAM, S.RECV_PRIORITY},
    S.OPEN: set(RECV) - {S.RECV_PUSH_PROMISE},
    S.HALF_CLOSED_LOCAL: set(RECV) - {S.RECV_PUSH_PROMISE},
    S.HALF_CLOSED_REMOTE: {S.RECV_RST_STREAM, S.RECV_PRIORITY, S.RECV_WINDOW_UPDATE},
    S.CLOSED: {S.RECV_RST_STREAM, S.RECV_PRIORITY, S.RECV_WINDOW_UPDATE},
    S.CLOSED_RESET: set(RECV) - {S.RECV_PUSH_PROMISE},
}
SEND_ALLOWED = {
    S.IDLE: {S.SEND_HEADERS, S.SEND_HEADERS_END, S.SEND_PRIORITY, S.SEND_PUSH_PROMISE},
    S.RESERVED_LOCAL: {S.SEND_HEADERS, S.SEND_HEADERS_END, S.SEND_RST_STREAM, S.SEND_PRIORITY},
    S.RESERVED_REMOTE: {S.SEND_RST_STREAM, S.SEND_PRIORITY, S.SEND_WINDOW_UPDATE},
    S.OPEN: set(SEND) - {S.SEND_PUSH_PROMISE},
    S.HALF_CLOSED_LOCAL: {S.SEND_RST_STREAM, S.SEND_PRIORITY, S.SEND_WINDOW_UPDATE},
    S.HALF_CLOSED_REMOTE: set(SEND) - {S.SEND_PUSH_PROMISE},
    S.CLOSED: {S.SEND_PRIORITY},
    S.CLOSED_RESET: {S.SEND_PRIORITY},
}


def expected_error(state, event):
    """(scope, code) by the RFC text, for a pair the state does not allow."""
    if event in SEND:
        closed_for_us = state in (S.HALF_CLOSED_LOCAL, S.CLOSED, S.CLOSED_RESET)
        return (S.LOCAL, STREAM_CLOSED if closed_for_us else PROTOCOL_ERROR)
    if event == S.RECV_PUSH_PROMISE:
        return (S.CONNECTION, PROTOCOL_ERROR)  # 6.6: the promised id must be idle
    if state == S.IDLE:
        return (S.CONNECTION, PROTOCOL_ERROR)  # 5.1 idle: anything but HEADERS/PRIORITY
    if state in (S.RESERVED_LOCAL, S.RESERVED_REMOTE):
        return (S.CONNECTION, PROTOCOL_ERROR)  # 5.1 reserved
    if state == S.HALF_CLOSED_REMOTE:
        return (S.STREAM, STREAM_CLOSED)  # 5.1 half-closed (remote)
    if state == S.CLOSED:
        return (S.STREAM, STREAM_CLOSED)  # 5.1 closed, 6.1 DATA, 6.2 HEADERS
    raise AssertionError(f"no error expected for {S.STATE_NAMES[state]} {S.EVENT_NAMES[event]}")


def test_every_pair_is_either_a_transition_or_the_specified_error():
    for state, event in itertools.product(STATES, range(S.NUM_EVENTS)):
        allowed = RECV_ALLOWED[state] if event in RECV else SEND_ALLOWED[state]
        value = S.lookup(state, event)
        if event in allowed:
            assert (state, event) in S.TRANSITIONS, (S.STATE_NAMES[state], S.EVENT_NAMES[event])
            assert value == S.TRANSITIONS[(state, event)] >= 0
            assert S.transition(state, event) == value
        else:
            assert (state, event) not in S.TRANSITIONS, (S.STATE_NAMES[state], S.EVENT_NAMES[event])
            assert value < 0
            scope, code = expected_error(state, event)
            assert (S.error_scope(value), S.error_code(value)) == (scope, code), (
                S.STATE_NAMES[state], S.EVENT_NAMES[event])
            with pytest.raises(S.StreamStateError) as info:
                S.transition(state, event)
            assert (info.value.scope, info.value.code, info.value.state, info.value.event) == (
                scope, code, state, event)


# The transitions themselves, by the RFC 5.1 diagram.
DIAGRAM = [
    (S.IDLE, S.RECV_HEADERS, S.OPEN),
    (S.IDLE, S.RECV_HEADERS_END, S.HALF_CLOSED_REMOTE),
    (S.IDLE, S.SEND_HEADERS, S.OPEN),
    (S.IDLE, S.SEND_HEADERS_END, S.HALF_CLOSED_LOCAL),
    (S.IDLE, S.SEND_PUSH_PROMISE, S.RESERVED_LOCAL),
    (S.IDLE, S.RECV_PUSH_PROMISE, S.RESERVED_REMOTE),
    (S.RESERVED_LOCAL, S.SEND_HEADERS, S.HALF_CLOSED_REMOTE),
    (S.RESERVED_REMOTE, S.RECV_HEADERS, S.HALF_CLOSED_LOCAL),
    (S.OPEN, S.RECV_DATA_END, S.HALF_CLOSED_REMOTE),
    (S.OPEN, S.SEND_DATA_END, S.HALF_CLOSED_LOCAL),
    (S.HALF_CLOSED_LOCAL, S.RECV_DATA_END, S.CLOSED),
    (S.HALF_CLOSED_LOCAL, S.RECV_HEADERS_END, S.CLOSED),
    (S.HALF_CLOSED_REMOTE, S.SEND_DATA_END, S.CLOSED),
    (S.HALF_CLOSED_REMOTE, S.SEND_HEADERS_END, S.CLOSED),
    (S.OPEN, S.RECV_RST_STREAM, S.CLOSED),
    (S.HALF_CLOSED_LOCAL, S.RECV_RST_STREAM, S.CLOSED),
    (S.HALF_CLOSED_REMOTE, S.RECV_RST_STREAM, S.CLOSED),
    (S.RESERVED_LOCAL, S.RECV_RST_STREAM, S.CLOSED),
    (S.RESERVED_REMOTE, S.RECV_RST_STREAM, S.CLOSED),
    (S.OPEN, S.SEND_RST_STREAM, S.CLOSED_RESET),
    (S.HALF_CLOSED_LOCAL, S.SEND_RST_STREAM, S.CLOSED_RESET),
    (S.HALF_CLOSED_REMOTE, S.SEND_RST_STREAM, S.CLOSED_RESET),
    (S.RESERVED_LOCAL, S.SEND_RST_STREAM, S.CLOSED_RESET),
    (S.RESERVED_REMOTE, S.SEND_RST_STREAM, S.CLOSED_RESET),
]


@pytest.mark.parametrize("state,event,nxt", DIAGRAM)
def test_diagram_edges(state, event, nxt):
    assert S.transition(state, event) == nxt


def test_frames_that_do_not_change_state_keep_it():
    for (state, event), nxt in S.TRANSITIONS.items():
        if event in (S.RECV_PRIORITY, S.SEND_PRIORITY, S.RECV_WINDOW_UPDATE, S.SEND_WINDOW_UPDATE):
            assert nxt == state
        if event in (S.RECV_DATA, S.SEND_DATA) and state != S.CLOSED_RESET:
            assert nxt == state


def test_closed_reset_ignores_everything_in_flight():
    for event in RECV:
        if event != S.RECV_PUSH_PROMISE:
            assert S.lookup(S.CLOSED_RESET, event) == S.CLOSED_RESET


def test_closed_states_are_terminal():
    for (state, _event), nxt in S.TRANSITIONS.items():
        if state in (S.CLOSED, S.CLOSED_RESET):
            assert nxt == state


def test_out_of_range_is_a_local_protocol_error():
    for state, event in ((-1, 0), (S.NUM_STATES, 0), (0, -1), (0, S.NUM_EVENTS), (1 << 20, 1 << 20)):
        value = S.lookup(state, event)
        assert value < 0
        assert S.error_scope(value) == S.LOCAL
        assert S.error_code(value) == PROTOCOL_ERROR


def test_names_cover_everything():
    assert len(S.STATE_NAMES) == S.NUM_STATES
    assert len(S.EVENT_NAMES) == S.NUM_EVENTS
    assert sorted(RECV + SEND) == list(range(S.NUM_EVENTS))
    assert "RECV_DATA" in str(S.StreamStateError(S.CLOSED, S.RECV_DATA, S.STREAM, STREAM_CLOSED))

"""Exchange core: the credit books. Every credit an end hands on comes back to it exactly once, through ``release``."""

from __future__ import annotations

import pytest

from proxy import errors

from .fakes import FakeDown, FakePolicy, FakeService


def _answer(down):
    """The down end's calls without the sends (a client not reading is offered the bytes again and again)."""
    return [kind for kind in down.kinds() if kind != "send"]


# ---------------------------------------------------------------- request credit (DownEnd.release)


def test_request_credit_comes_back_as_the_upstream_takes_the_bytes(make_rig):
    rig = make_rig(auto="h1")
    ex, down = rig.start_h1(method=b"POST", length=6)
    down.feed(ex, b"abc")
    down.feed(ex, b"def", end=True)
    assert down.releases() == [3, 3]
    assert bytes(rig.disp.last.sent) == b"abcdef"


def test_request_credit_comes_back_with_partial_sends(make_rig):
    rig = make_rig(auto="h1", up_window=2)
    ex, down = rig.start_h1(method=b"POST", length=5)
    up = rig.disp.last
    down.feed(ex, b"abcde", end=True)
    assert down.releases() == [2] and up.ended == 0
    up.open(1)
    assert down.releases() == [2, 1]
    up.open(0)
    assert down.releases() == [2, 1]
    up.open(None)
    assert down.releases() == [2, 1, 2] and up.ended == 1
    assert bytes(up.sent) == b"abcde"


def test_request_credit_larger_than_the_bytes_comes_back_whole(make_rig):
    """De-chunked bytes carry the chunk framing's credit too."""
    rig = make_rig(auto="h1", up_window=2)
    ex, down = rig.start_h1(method=b"POST", chunked=True)
    up = rig.disp.last
    down.feed(ex, b"abcd", credit=9)
    assert down.releases() == [2]
    up.open(None)
    assert sum(down.releases()) == 9
    down.feed(ex, b"", credit=5, end=True)  # the last chunk: framing only
    assert sum(down.releases()) == 14 and up.ended == 1


def test_request_credit_waits_while_there_is_no_attempt(make_rig):
    rig = make_rig()
    ex, down = rig.start_h2(method=b"POST", length=4)
    down.feed(ex, b"ab")
    down.feed(ex, b"cd", end=True)
    assert down.releases() == []
    rig.disp.last.attach()
    assert down.releases() == [2, 2]


def test_request_credit_after_the_end_comes_back_at_once(make_rig):
    rig = make_rig(auto="h2")
    ex, down = rig.start_h2(method=b"POST", length=4)
    rig.disp.last.head(400, end=True)
    down.feed(ex, b"abcd", end=True)
    assert down.releases() == [4]
    assert rig.check_books() == []


def test_request_credit_queued_at_a_failure_comes_back(make_rig):
    rig = make_rig(auto="h1", up_window=0)
    ex, down = rig.start_h1(method=b"POST", length=4)
    down.feed(ex, b"abcd", end=True)
    rig.disp.last.reset(errors.UpstreamReset(), safe=False)
    assert down.error().status == 502
    assert down.releases() == [4]
    assert rig.check_books() == []


def test_request_credit_survives_a_repick(make_rig):
    rig = make_rig(service=FakeService())
    ex, down = rig.start_h1(method=b"POST", length=4)
    down.feed(ex, b"abcd", end=True)
    rig.disp.last.connect_fail()
    assert down.releases() == []
    rig.disp.last.attach()
    assert down.releases() == [4] and bytes(rig.disp.last.sent) == b"abcd"


def test_kept_body_replayed_to_a_retry_is_not_released_twice(make_rig):
    rig = make_rig(policy=FakePolicy(limit=2), auto="h2")
    ex, down = rig.start_h2(method=b"POST", length=3)
    down.feed(ex, b"abc", end=True)
    rig.disp.last.head(503, end=True)
    rig.disp.last.head(503, end=True)
    rig.disp.last.head(200, end=True)
    assert [bytes(up.sent) for up in rig.ups()] == [b"abc"] * 3
    assert down.releases() == [3]
    assert rig.check_books() == []


def test_client_reset_gives_back_request_credit_still_queued(make_rig):
    """The client reset its stream while its body waited for an upstream that was not reading.
    ``client_gone`` -> ``finish`` -> ``_release_up_queue`` skips the release when
    ``down_gone``: the credit never comes back."""
    rig = make_rig(auto="h2", up_window=0)
    ex, down = rig.start_h2(method=b"POST", length=8)
    down.feed(ex, b"abcd")
    ex.client_gone()
    assert down.kinds() == ["done"]
    assert down.released == down.issued == 4


# ---------------------------------------------------------------- response credit (UpEnd.release)


def test_response_credit_comes_back_as_the_client_takes_the_bytes(make_rig):
    rig = make_rig(auto="h2")
    _ex, _down = rig.start_h2()
    up = rig.disp.last
    up.head(200)
    up.data(b"abc", credit=3)
    assert up.released == 3
    up.data(b"def", credit=10, end=True)  # padding is credit too
    assert up.released == 13
    assert rig.check_books() == []


def test_response_credit_waits_for_a_client_that_is_not_reading(make_rig):
    rig = make_rig(auto="h2")
    ex, down = rig.start_h2()
    down.window = 0
    up = rig.disp.last
    up.head(200)
    up.data(b"abcdef")
    up.data(b"gh", end=True)
    assert up.released == 0 and _answer(down) == ["head"]
    down.open(ex, 4)
    assert up.released == 4 and bytes(down.body) == b"abcd"
    down.open(ex, 0)
    assert up.released == 4
    down.open(ex, None)
    assert up.released == 8 and bytes(down.body) == b"abcdefgh"
    assert _answer(down) == ["head", "end", "done"]
    assert rig.check_books() == []


def test_response_credit_of_a_partial_send_is_proportional(make_rig):
    rig = make_rig(auto="h2")
    ex, down = rig.start_h2()
    down.window = 2
    up = rig.disp.last
    up.head(200)
    up.data(b"abcd", credit=9)
    assert up.released == 2
    down.open(ex, None)
    assert up.released == 9


def test_empty_response_data_gives_its_credit_back_at_once(make_rig):
    rig = make_rig(auto="h2")
    _ex, down = rig.start_h2()
    down.window = 0
    up = rig.disp.last
    up.head(200)
    up.data(b"abc")
    up.data(b"", credit=7)  # padding only
    assert up.released == 7


def test_response_credit_comes_back_when_the_route_timeout_cuts(make_rig):
    rig = make_rig(policy=FakePolicy(timeout=5.0), auto="h2")
    _ex, down = rig.start_h2()
    down.window = 0
    up = rig.disp.last
    up.head(200)
    up.data(b"abcdef")
    rig.loop.advance(5.0)
    assert _answer(down) == ["head", "cut", "done"]
    assert up.released == 6 and up.cancels == 1
    assert rig.check_books() == []


def test_response_credit_comes_back_when_the_client_goes(make_rig):
    rig = make_rig(auto="h2")
    ex, down = rig.start_h2()
    down.window = 0
    up = rig.disp.last
    up.head(200)
    up.data(b"abcdef")
    ex.client_gone()
    assert up.released == 6
    # Released before the up end is told to stop.
    assert [c[0] for c in up.calls][-2:] == ["release", "cancel"]
    assert rig.check_books() == []


def test_response_credit_reaches_an_up_end_that_detached_itself(make_rig):
    """An HTTP/1 connection leaves the exchange when the response ended (back to its pool);
    the bytes still waiting for the client give their credit back to it all the same."""
    rig = make_rig(auto="h1")
    ex, down = rig.start_h1()
    down.window = 0
    up = rig.disp.last
    up.head(200, length=4)
    up.data(b"abcd", end=True)
    assert up.released == 0
    down.open(ex, None)
    assert up.released == 4
    assert _answer(down) == ["head", "end", "done"]


def test_response_credit_queued_when_the_upstream_resets_comes_back(make_rig):
    """The upstream reset the stream after the head while the client was not reading.
    ``upstream_reset`` sets ``self.up = None`` before ``_cut``, so ``_release_down_queue``
    -> ``release_response`` finds no up end and the queued credit is dropped."""
    rig = make_rig(auto="h2")
    _ex, down = rig.start_h2()
    down.window = 0
    up = rig.disp.last
    up.head(200)
    up.data(b"abcdef")
    up.reset(errors.UpstreamReset("upstream reset the stream (error code 2)"), safe=False)
    assert _answer(down) == ["head", "cut", "done"]
    assert up.released == up.issued == 6


@pytest.mark.parametrize("code", [0, 8])
def test_a_reset_after_the_whole_response_still_delivers_it(make_rig, code):
    """RFC 9113 8.1: a server that answered before the upload ended resets with NO_ERROR (or an
    upstream goes away after a complete answer): the client still gets the response whole,
    the upstream gets its credit back at once, the unsent upload is dropped with its credit."""
    rig = make_rig(auto="h2")
    ex, down = rig.start_h2(method=b"POST", length=-1)
    down.window = 0
    up = rig.disp.last
    up.window = 0  # the upstream takes none of the upload
    down.feed(ex, b"upload")
    up.head(200)
    up.data(b"abcdef", end=True)
    assert up.released == 0
    up.reset(errors.UpstreamReset(f"upstream reset the stream (error code {code})"), safe=False)
    assert up.released == up.issued == 6  # the upstream's window is not held by the slow client
    assert _answer(down) == ["head"]
    down.feed(ex, b"more")  # the client still sends while it reads
    down.open(ex, None)
    assert bytes(down.body) == b"abcdef"
    assert _answer(down) == ["head", "end", "done"]
    assert down.released == down.issued
    assert rig.check_books() == []


def test_client_leaving_inside_a_send_ends_the_exchange_cleanly(make_rig):
    """A down end whose ``send`` ends the exchange (the client's reset noticed while writing).
    ``pump_down`` checks ``done`` after ``down.send``; ``response_data``'s fast path does not:
    it releases through an up end already dropped (the credit is lost), queues the rest on
    the finished exchange and calls ``pump_down``, which sends again after ``exchange_done``."""
    rig = make_rig(auto="h2")
    down = FakeDown(window=2)
    ex, _ = rig.exchange(down=down, sid=1)
    rig.start_h2(ex=ex)
    up = rig.disp.last
    up.head(200)

    def gone(ex, data):
        down.on_send = None
        ex.client_gone()

    down.on_send = gone
    up.data(b"abcdef")
    assert down.after_done == []
    assert up.released == up.issued == 6

"""Exchange core under a route policy: retries, budgets, the replay buffer, route timeouts, route metrics.

Retries are tried on status, on timeout and on a gRPC status peeked from the response.
"""

from __future__ import annotations

import pytest

from proxy import errors
from proxy.exchange.core import QUEUED

from .fakes import GRPC, FakePolicy, FakeService, responses


def _grpc_head(status=200, extra=()):
    return [(b":status", b"%d" % status), GRPC, *extra]


def _route(policy):
    s = policy.stats
    return {"requests": s.requests, "retries": s.retries, "successes": s.successes, "failures": s.failures}


def _post(rig, body=b"abc", proto="h2"):
    if proto == "h2":
        ex, down = rig.start_h2(method=b"POST", length=len(body))
    else:
        ex, down = rig.start_h1(method=b"POST", length=len(body))
    down.feed(ex, body, end=True)
    return ex, down


# ---------------------------------------------------------------- status retries


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_retried_status_never_reaches_the_client(make_rig, proto):
    svc = FakeService()
    policy = FakePolicy(limit=1)
    rig = make_rig(service=svc, policy=policy)
    _ex, down = _post(rig, b"abc", proto)
    first = rig.disp.last
    first.attach()
    assert bytes(first.sent) == b"abc"
    first.head(503, length=0, end=True)
    second = rig.disp.last
    assert second is not first and first.cancels == 1
    assert [(f.host, resplit) for f, resplit in rig.router.reroutes] == [(first.target.host, True)]
    second.attach()
    assert bytes(second.sent) == b"abc" and second.ended == 1
    second.head(200, length=2)
    second.data(b"ok", end=True)
    assert down.kinds() == ["head", "send", "end", "done"]
    assert down.heads()[0][1] == 200
    assert _route(policy) == {"requests": 1, "retries": 1, "successes": 1, "failures": 0}
    assert policy.withdrawals == 1
    assert svc.outcomes() == ["failed", "ok"]
    # Each attempt counts as its endpoint's request and response (Linkerd's endpoint metrics);
    # the route's own counts above are the request the client made.
    assert rig.stats.requests == 2 and responses(rig.stats) == {200: 1}
    assert responses(rig.stats, failures=True) == {503: 1}
    assert rig.check_books() == []


def test_retries_stop_at_the_limit_and_the_last_answer_goes_through(make_rig):
    svc = FakeService()
    policy = FakePolicy(limit=2)
    rig = make_rig(service=svc, policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    for _ in range(3):
        rig.disp.last.head(503, end=True)
    assert len(rig.ups()) == 3
    assert down.kinds() == ["head", "end", "done"] and down.heads()[0][1] == 503
    assert _route(policy) == {"requests": 1, "retries": 2, "successes": 0, "failures": 1}
    assert svc.outcomes() == ["failed"] * 3
    assert rig.stats.requests == 3 and responses(rig.stats, failures=True) == {503: 3}
    assert rig.check_books() == []


def test_spent_budget_lets_the_failure_through(make_rig):
    policy = FakePolicy(limit=3, budget=0)
    rig = make_rig(policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    rig.disp.last.head(503, end=True)
    assert len(rig.ups()) == 1
    assert down.heads()[0][1] == 503
    assert _route(policy) == {"requests": 1, "retries": 0, "successes": 0, "failures": 1}


def test_status_the_route_does_not_retry_goes_through(make_rig):
    policy = FakePolicy(limit=3, retry_status=(503,))
    rig = make_rig(policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    rig.disp.last.head(500, end=True)
    assert len(rig.ups()) == 1 and policy.withdrawals == 0
    assert down.heads()[0][1] == 500


def test_no_retry_before_the_request_ended(make_rig):
    policy = FakePolicy(limit=1)
    rig = make_rig(policy=policy, auto="h1")
    ex, down = rig.start_h1(method=b"POST", length=4)
    down.feed(ex, b"ab")
    rig.disp.last.head(503, end=True)  # answered early
    assert len(rig.ups()) == 1
    assert down.kinds() == ["head", "end", "done"]
    down.feed(ex, b"cd", end=True)  # the rest arrives after the end
    assert down.releases() == [2, 2]
    assert rig.check_books() == []


# ---------------------------------------------------------------- the replay buffer


def test_declared_length_over_the_replay_limit_is_not_retried(make_rig):
    policy = FakePolicy(limit=1, replay_limit=4)
    rig = make_rig(policy=policy, auto="h2")
    _ex, down = _post(rig, b"12345")
    rig.disp.last.head(503, end=True)
    assert len(rig.ups()) == 1 and down.heads()[0][1] == 503


def test_declared_length_at_the_replay_limit_is_retried(make_rig):
    policy = FakePolicy(limit=1, replay_limit=4)
    rig = make_rig(policy=policy, auto="h2")
    _ex, _down = _post(rig, b"1234")
    rig.disp.last.head(503, end=True)
    assert len(rig.ups()) == 2 and bytes(rig.disp.last.sent) == b"1234"


@pytest.mark.parametrize("proto", ["h1-chunked", "h2-unknown-length"])
def test_unknown_length_body_is_kept_while_under_the_limit(make_rig, proto):
    policy = FakePolicy(limit=1, replay_limit=6)
    rig = make_rig(policy=policy, auto="h1" if proto.startswith("h1") else None)
    if proto.startswith("h1"):
        ex, down = rig.start_h1(method=b"POST", chunked=True)
    else:
        ex, down = rig.start_h2(method=b"POST", length=-1)
        rig.disp.last.attach()
    down.feed(ex, b"abc", credit=3 + 5)  # chunk framing is credit too
    down.feed(ex, b"def", credit=3 + 5)
    down.feed(ex, b"", credit=5, end=True)
    rig.disp.last.head(503, end=True)
    second = rig.disp.last
    assert len(rig.ups()) == 2
    if proto.startswith("h2"):
        second.attach()
    assert bytes(second.sent) == b"abcdef" and second.ended == 1
    second.head(200, end=True)
    assert down.heads()[0][1] == 200
    assert rig.check_books() == []


def test_unknown_length_body_over_the_limit_is_not_retried(make_rig):
    policy = FakePolicy(limit=1, replay_limit=5)
    rig = make_rig(policy=policy, auto="h1")
    ex, down = rig.start_h1(method=b"POST", chunked=True)
    down.feed(ex, b"abc")
    down.feed(ex, b"def", end=True)
    rig.disp.last.head(503, end=True)
    assert len(rig.ups()) == 1 and down.heads()[0][1] == 503
    assert rig.check_books() == []


def test_retry_rewinds_a_body_the_failed_attempt_had_not_taken(make_rig):
    policy = FakePolicy(limit=1)
    rig = make_rig(policy=policy, up_window=2)
    ex, down = rig.start_h2(method=b"POST", length=6)
    first = rig.disp.last
    first.attach()
    down.feed(ex, b"abcd")
    down.feed(ex, b"ef", end=True)
    assert bytes(first.sent) == b"ab" and down.releases() == [2]
    first.head(503, end=True)  # answered before it read the rest
    assert sorted(down.releases()) == [2, 2, 2]  # what waited for it goes back to the client
    second = rig.disp.last
    second.open(None)
    second.attach()
    assert bytes(second.sent) == b"abcdef"
    second.head(200, end=True)
    assert rig.check_books() == []


# ---------------------------------------------------------------- timeout retries


def test_attempt_timeout_is_retried(make_rig):
    svc = FakeService()
    policy = FakePolicy(limit=1, attempt_timeout=1.0)
    rig = make_rig(service=svc, policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    first = rig.disp.last
    rig.loop.advance(1.0)
    assert first.cancels == 1 and len(rig.ups()) == 2
    rig.loop.advance(0.5)
    rig.disp.last.head(200, end=True)
    assert down.heads()[0][1] == 200
    assert svc.outcomes() == ["failed", "ok"]
    assert _route(policy) == {"requests": 1, "retries": 1, "successes": 1, "failures": 0}
    assert rig.check_books() == []


def test_attempt_timeouts_past_the_limit_answer_504(make_rig):
    policy = FakePolicy(limit=1, attempt_timeout=1.0)
    rig = make_rig(policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    rig.loop.advance(2.0)
    err = down.error()
    assert err.status == 504 and err.reason == "response timed out (backend timeout 1s)"
    assert len(rig.ups()) == 2
    assert _route(policy) == {"requests": 1, "retries": 1, "successes": 0, "failures": 1}
    # the timed-out attempt that was retried counts too (its endpoint never answered: a 504 of its own)
    assert rig.stats.requests == 2 and responses(rig.stats, failures=True) == {504: 2}
    assert rig.loop.pending() == []


# ---------------------------------------------------------------- gRPC: the trailers-only peek


def test_grpc_trailers_only_failure_is_retried_with_the_head_held(make_rig):
    svc = FakeService()
    policy = FakePolicy(limit=1)
    rig = make_rig(service=svc, policy=policy, auto="h2")
    _ex, down = rig.start_h2(extra=[(b"content-type", b"application/grpc")])
    first = rig.disp.last
    first.head(200, _grpc_head())
    assert down.kinds() == []  # held: its status is in the trailers
    first.finish([(b"grpc-status", b"14")])
    assert first.cancels == 1 and len(rig.ups()) == 2 and down.kinds() == []
    second = rig.disp.last
    second.head(200, _grpc_head())  # the last attempt: nothing to peek for
    assert down.kinds() == ["head"]
    second.data(b"msg")
    second.finish([(b"grpc-status", b"0")])
    assert down.kinds() == ["head", "send", "end", "done"]
    assert down.calls[-2] == ("end", [(b"grpc-status", b"0")])
    assert svc.outcomes() == ["failed", "ok"]
    assert _route(policy) == {"requests": 1, "retries": 1, "successes": 1, "failures": 0}
    assert rig.check_books() == []


def test_grpc_held_head_goes_out_with_the_first_message(make_rig):
    rig = make_rig(policy=FakePolicy(limit=1), auto="h2")
    _ex, down = rig.start_h2()
    up = rig.disp.last
    up.head(200, _grpc_head())
    up.data(b"message")
    assert down.kinds() == ["head", "send"]
    up.finish([(b"grpc-status", b"0")])
    assert down.kinds() == ["head", "send", "end", "done"]
    assert len(rig.ups()) == 1


def test_grpc_held_head_keeps_its_declared_length(make_rig):
    """A held head goes out as the upstream sent it. An HTTP/1.1 client's relay frames the
    body by ``length``: -1 makes it add ``transfer-encoding: chunked`` next to the upstream's
    ``content-length`` (``H1Server.send_head`` / ``h1_response_from_fields``)."""
    rig = make_rig(policy=FakePolicy(limit=1), auto="h1")
    _ex, down = rig.start_h1(headers=[(b"Content-Type", b"application/grpc-web")])
    up = rig.disp.last
    fields = _grpc_head(extra=[(b"content-length", b"5")])
    up.head(200, fields, length=5)
    up.data(b"hello")
    head = down.heads()[0]
    assert head[3] is fields and head[5] is False
    assert head[4] == 5


def test_grpc_held_head_then_ok_trailers(make_rig):
    svc = FakeService()
    policy = FakePolicy(limit=1)
    rig = make_rig(service=svc, policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    up = rig.disp.last
    up.head(200, _grpc_head())
    up.finish([(b"grpc-status", b"0")])
    assert down.kinds() == ["head", "end", "done"]
    assert svc.outcomes() == ["ok"]
    assert _route(policy)["successes"] == 1


def test_grpc_peek_with_the_budget_spent_lets_the_failure_through(make_rig):
    policy = FakePolicy(limit=1, budget=0)
    rig = make_rig(policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    up = rig.disp.last
    up.head(200, _grpc_head())
    up.finish([(b"grpc-status", b"14")])
    assert len(rig.ups()) == 1
    assert down.kinds() == ["head", "end", "done"]
    assert _route(policy) == {"requests": 1, "retries": 0, "successes": 0, "failures": 1}


def test_grpc_status_in_the_head_is_retried(make_rig):
    policy = FakePolicy(limit=1)
    rig = make_rig(policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    rig.disp.last.head(200, _grpc_head(extra=[(b"grpc-status", b"14")]), length=0, end=True)
    assert len(rig.ups()) == 2
    rig.disp.last.head(200, _grpc_head(extra=[(b"grpc-status", b"0")]), length=0, end=True)
    assert down.kinds() == ["head", "end", "done"]
    assert _route(policy) == {"requests": 1, "retries": 1, "successes": 1, "failures": 0}


def test_grpc_without_a_retry_policy_is_classified_at_the_trailers(make_rig):
    policy = FakePolicy(limit=0)
    rig = make_rig(policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    up = rig.disp.last
    up.head(200, _grpc_head())
    assert down.kinds() == ["head"]  # nothing to retry: not held
    assert _route(policy)["successes"] + _route(policy)["failures"] == 0
    up.finish([(b"grpc-status", b"13")])
    assert _route(policy) == {"requests": 1, "retries": 0, "successes": 0, "failures": 1}


def test_grpc_cut_by_the_upstream_counts_as_a_route_failure(make_rig):
    """The gRPC status was still to come when the upstream reset the stream: the call failed.
    (``upstream_reset`` after the head goes to ``_cut`` -> ``finish``, which drops ``rp``
    uncounted; ``_route_deadline`` counts the same situation as a 504.)"""
    policy = FakePolicy(limit=0)
    rig = make_rig(policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    up = rig.disp.last
    up.head(200, _grpc_head())
    up.data(b"partial message")
    up.reset(errors.UpstreamReset("upstream reset the stream (error code 2)"), safe=False)
    assert down.kinds() == ["head", "send", "cut", "done"]
    assert _route(policy) == {"requests": 1, "retries": 0, "successes": 0, "failures": 1}


@pytest.mark.parametrize("trailers", [None, [(b"x-other", b"1")]], ids=["no-trailers", "no-grpc-status"])
def test_grpc_response_without_a_grpc_status_is_classified_by_its_http_status(make_rig, trailers):
    """``pump_down`` says "ended without trailers: the HTTP status decides", then classifies
    status 200 whatever the head said (``_route_end(200, ...)``; the trailers path passes 0,
    made 200 too). A 503 is a failure on the route as it is in the proxy's own counters."""
    policy = FakePolicy(limit=0)
    rig = make_rig(policy=policy, auto="h2")
    _ex, _down = rig.start_h2()
    up = rig.disp.last
    up.head(503, _grpc_head(503))
    if trailers is None:
        up.data(b"unavailable", end=True)
    else:
        up.data(b"unavailable")
        up.finish(trailers)
    assert responses(rig.stats, failures=True) == {503: 1}
    assert _route(policy) == {"requests": 1, "retries": 0, "successes": 0, "failures": 1}


# ---------------------------------------------------------------- route timeouts


def test_route_timeout_before_the_head_answers_504(make_rig):
    svc = FakeService()
    policy = FakePolicy(timeout=10.0)
    rig = make_rig(service=svc, policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    up = rig.disp.last
    rig.loop.advance(10.0)
    err = down.error()
    assert isinstance(err, errors.RouteTimeout) and err.reason == "request timed out (route timeout 10s)"
    assert up.cancels == 1
    assert svc.outcomes() == ["failed"]
    assert _route(policy) == {"requests": 1, "retries": 0, "successes": 0, "failures": 1}
    assert responses(rig.stats, failures=True) == {504: 1}
    assert [(lvl, ev) for lvl, ev, _ in rig.log.lines] == [("warning", "proxy responded with error")]
    assert rig.loop.pending() == []
    assert rig.check_books() == []


def test_route_timeout_after_the_head_cuts(make_rig):
    svc = FakeService()
    policy = FakePolicy(timeout=10.0)
    rig = make_rig(service=svc, policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    up = rig.disp.last
    rig.loop.advance(4.0)
    up.head(200)
    up.data(b"slow body")
    rig.loop.advance(6.0)
    assert down.kinds() == ["head", "send", "cut", "done"]
    assert isinstance(down.calls[-2][1], errors.RouteTimeout)
    assert up.cancels == 1
    assert svc.outcomes() == ["ok"]
    assert responses(rig.stats) == {} and responses(rig.stats, failures=True) == {200: 1}  # cut: a failure
    assert _route(policy) == {"requests": 1, "retries": 0, "successes": 1, "failures": 0}
    assert [(lvl, ev) for lvl, ev, _ in rig.log.lines] == [("warning", "response cut short")]
    assert "status" not in rig.log.lines[0][2]
    assert rig.check_books() == []


def test_route_timeout_while_waiting_for_trailers_is_a_route_failure(make_rig):
    policy = FakePolicy(timeout=10.0)
    rig = make_rig(policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    rig.disp.last.head(200, _grpc_head())
    rig.loop.advance(10.0)
    assert down.kinds() == ["head", "cut", "done"]
    assert _route(policy)["failures"] == 1


def test_route_timeout_while_queued_leaves_the_queue(make_rig):
    svc = FakeService()
    policy = FakePolicy(timeout=3.0)
    rig = make_rig(service=svc, policy=policy)
    rig.router.plan = [QUEUED]
    ex, down = rig.start_h1()
    rig.loop.advance(3.0)
    assert rig.router.unqueued == [ex] and rig.router.queued == []
    assert down.error().status == 504
    assert svc.picks == [] and rig.ups() == []


def test_route_timeout_covers_every_attempt(make_rig):
    policy = FakePolicy(limit=2, timeout=10.0)
    rig = make_rig(policy=policy, auto="h2")
    _ex, down = rig.start_h2()
    rig.loop.advance(4.0)
    rig.disp.last.head(503, end=True)
    rig.loop.advance(4.0)
    rig.disp.last.head(503, end=True)
    rig.loop.advance(2.0)
    assert len(rig.ups()) == 3
    assert down.error().status == 504
    assert _route(policy) == {"requests": 1, "retries": 2, "successes": 0, "failures": 1}


def test_idle_timeout_is_moved_by_io(make_rig):
    policy = FakePolicy(idle_timeout=4.0)
    rig = make_rig(policy=policy, auto="h1")
    ex, down = rig.start_h1(method=b"POST", length=4)
    rig.loop.advance(3.0)
    down.feed(ex, b"ab")
    rig.loop.advance(3.0)
    down.feed(ex, b"cd", end=True)
    rig.loop.advance(3.9)
    assert down.kinds() == []
    rig.loop.advance(0.2)
    err = down.error()
    assert err.status == 504 and err.reason == "request timed out (stream idle for 4s)"
    assert rig.loop.pending() == []


def test_route_response_header_edit_is_the_relays_to_apply(make_rig):
    edit = object()
    rig = make_rig(policy=FakePolicy(response_headers=edit), auto="h2")
    ex, _down = rig.start_h2()
    assert ex.resp_edit is edit


def test_reused_h1_exchange_starts_each_request_afresh(make_rig):
    """One exchange serves a connection's requests in turn: attempts, timers and held state do not carry over."""
    policy = FakePolicy(limit=1, timeout=10.0)
    rig = make_rig(policy=policy, auto="h1")
    ex, down = rig.start_h1()
    rig.disp.last.head(503, end=True)
    rig.disp.last.head(200, end=True)
    assert policy.stats.retries == 1 and down.done_count == 1
    rig.loop.advance(1.0)
    rig.start_h1(ex=ex)
    assert [h.when for h in rig.loop.pending()] == [rig.loop.time() + 10.0]  # this request's clock only
    rig.disp.last.head(503, end=True)  # retried again: a new request has its own attempts
    assert policy.stats.retries == 2
    rig.loop.advance(9.5)  # the first request's route timeout would have fired by now
    assert down.done_count == 1
    rig.loop.advance(0.5)
    assert down.error().status == 504
    assert _route(policy) == {"requests": 2, "retries": 2, "successes": 1, "failures": 1}
    assert rig.check_books() == []


# ---------------------------------------------------------------- Linkerd's durations run to the response's end


@pytest.mark.parametrize("ending", ["body", "trailers", "client_gone"])
def test_route_and_backend_durations_end_with_the_response_not_its_head(make_rig, ending):
    from proxy.telemetry.counters import BackendStats

    policy = FakePolicy()
    rig = make_rig(service=FakeService(), policy=policy)
    ex, _down = rig.start_h2(method=b"POST", length=0)
    backend = ex.backend = BackendStats('backend_name="b"')  # what the router hands over with its pick
    rig.loop.advance(0.01)
    up = rig.disp.last
    up.attach(request_sent=True)
    rig.loop.advance(0.02)
    up.head(200, fields=_grpc_head() if ending == "trailers" else None, length=-1)
    if ending != "trailers":  # a gRPC response is classified at its status, in the trailers
        assert policy.stats.latency_count == 1
    # Linkerd counts the statuses at the stream's end, with its durations.
    assert policy.stats.duration_count == 0 and backend.duration_count == 0
    assert backend.outcomes() == [] and policy.stats.outcomes() == []
    up.data(b"x" * 200)
    rig.loop.advance(0.3)
    if ending == "body":
        up.data(b"tail", end=True)
    elif ending == "trailers":
        up.finish([(b"grpc-status", b"0")])
    else:
        ex.client_gone()
    # The head's status, the trailers' gRPC status, and how the stream ended (8: the client left, UNKNOWN).
    outcome = {"body": (200, -1, 0, 1), "trailers": (200, 0, 0, 1), "client_gone": (200, -1, 8, 1)}[ending]
    assert backend.outcomes() == [outcome] and policy.stats.outcomes() == [outcome]
    # Route: 0.33 s from the request head (Linkerd's 0.5 s bucket); backend: 0.32 s from dispatch (its 0.5 s).
    assert list(policy.stats.duration_buckets) == [0, 1, 0, 0, 0]
    assert policy.stats.duration_sum_ms == pytest.approx(330.0)
    assert list(backend.duration_buckets) == [0, 0, 0, 0, 1, 0, 0, 0]
    assert backend.duration_sum_ms == pytest.approx(320.0)
    # The older route_response_latency_ms is the head's: 30 ms.
    assert policy.stats.latency_sum_ms == pytest.approx(30.0)
    frames = [200] if ending != "body" else [200, 4]
    assert backend.frame_count == len(frames) and backend.frame_sum == sum(frames)
    assert list(backend.frame_buckets) == [frames.count(4), frames.count(200), 0, 0]

"""Exchange core: attempts, and how each pick is settled.

Connect-failure repicks, retry-safe resends, the attempt timeout, tunnels.
"""

from __future__ import annotations

import pytest

from proxy import errors
from proxy.core.target import Target
from proxy.exchange.core import QUEUED

from .fakes import MAX_REPICKS, MAX_RESENDS, FakePolicy, FakeService, responses


def _ok(up, body=b"ok"):
    up.head(200, length=len(body))
    up.data(body, end=True)


# ---------------------------------------------------------------- connect failures: picked again


@pytest.mark.parametrize("err_type", [errors.ConnectRefused, errors.ConnectFailed, errors.ConnectTimeout])
def test_connect_failure_repicks_at_most_max_repicks_avoiding_the_failed_endpoint(make_rig, err_type):
    svc = FakeService()
    rig = make_rig(service=svc)
    _ex, down = rig.start_h1()
    for _ in range(MAX_REPICKS + 1):
        rig.disp.last.connect_fail(err_type())
    assert len(rig.ups()) == MAX_REPICKS + 1
    # Each new pick was asked to avoid the endpoint that just failed, and did.
    assert [(failed.host, resplit) for failed, resplit in rig.router.reroutes] == [
        (t.host, False) for t in svc.picks[:-1]]
    assert all(a.host != b.host for a, b in zip(svc.picks, svc.picks[1:]))
    err = down.error()
    assert type(err) is err_type
    assert down.kinds() == ["error", "done"]
    assert svc.outcomes() == ["failed"] * (MAX_REPICKS + 1)
    assert responses(rig.stats, failures=True) == {err.status: 1}
    assert rig.check_books() == []


def test_connect_failure_then_another_endpoint_answers(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    ex, down = rig.start_h2(method=b"POST", length=3)
    down.feed(ex, b"abc", end=True)
    first = rig.disp.last
    first.connecting()
    first.connect_fail()
    second = rig.disp.last
    assert second is not first and second.target.host != first.target.host
    second.attach()
    assert bytes(second.sent) == b"abc" and second.ended == 1
    _ok(second)
    assert down.kinds() == ["head", "send", "end", "done"]
    assert svc.outcomes() == ["failed", "ok"]
    assert first.cancels == 0  # it reported its own failure: nothing to cancel
    assert rig.stats.requests == 1 and responses(rig.stats) == {200: 1}
    assert rig.check_books() == []


def test_connect_failure_repick_may_queue(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    ex, _down = rig.start_h1()
    rig.router.plan = [QUEUED]
    rig.disp.last.connect_fail()
    assert len(rig.ups()) == 1 and rig.router.queued == [ex]
    rig.router.wake()
    rig.disp.last.attach()
    _ok(rig.disp.last)
    assert svc.outcomes() == ["failed", "ok"]
    assert rig.check_books() == []


def test_connect_failure_to_an_unbalanced_target_is_answered_at_once(make_rig):
    rig = make_rig()
    _ex, down = rig.start_h1()
    rig.disp.last.connect_fail(errors.ConnectRefused())
    assert len(rig.ups()) == 1 and rig.router.reroutes == []
    assert down.error().status == 502
    assert rig.check_books() == []


@pytest.mark.parametrize("err", [errors.PeerTlsFailed(), errors.BadResponse()], ids=["tls", "bad-response"])
def test_other_failures_are_not_repicked(make_rig, err):
    svc = FakeService()
    rig = make_rig(service=svc)
    _ex, down = rig.start_h1()
    rig.disp.last.connect_fail(err)
    assert len(rig.ups()) == 1
    assert down.error() is err
    assert svc.outcomes() == ["failed"]


def test_local_refusal_raised_by_open_cancels_the_pick(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    rig.disp.fail_with = [errors.IdentityError()]
    _ex, down = rig.start_h1()
    assert down.error().status == 503
    assert svc.outcomes() == ["cancelled"]


@pytest.mark.parametrize("err", [
    errors.IdentityError(),  # this proxy has no certificate yet
    errors.OwnAddress("destination resolves to this proxy's own admin listener"),
], ids=["identity", "own-address"])
def test_local_refusal_reported_by_the_up_end_is_not_the_endpoints_failure(make_rig, err):
    """The connector reports errors of this proxy's own making through ``upstream_failed``
    (``Connector._connect`` -> ``connect_failed`` -> ``upstream_failed``). They say nothing
    about the endpoint: settled like the same error
    raised by ``open`` (``fail``: CANCELLED for anything but an UpstreamError), not as an
    endpoint failure that accrues towards ejecting it."""
    svc = FakeService()
    rig = make_rig(service=svc)
    _ex, down = rig.start_h1()
    rig.disp.last.connect_fail(err)
    assert down.error() is err
    assert svc.outcomes() == ["cancelled"]


# ---------------------------------------------------------------- resends of attempts the upstream did not process


def test_retry_safe_reset_is_resent_once(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    _ex, down = rig.start_h2()
    first = rig.disp.last
    first.attach(True)
    first.reset(errors.UpstreamReset("refused stream"), safe=True)
    second = rig.disp.last
    assert second is not first
    assert [(f.host, resplit) for f, resplit in rig.router.reroutes] == [(first.target.host, False)]
    second.attach(True)
    second.reset(errors.UpstreamReset("refused again"), safe=True)
    assert len(rig.ups()) == 1 + MAX_RESENDS
    assert down.error().status == 502
    assert svc.outcomes() == ["cancelled", "failed"]
    assert responses(rig.stats, failures=True) == {502: 1}
    assert rig.check_books() == []


def test_retry_safe_reset_of_an_unbalanced_target_goes_to_it_again(make_rig):
    rig = make_rig()
    _ex, down = rig.start_h1()
    rig.disp.last.attach()
    rig.disp.last.reset(safe=True)
    assert [up.target for up in rig.ups()] == [rig.router.target, rig.router.target]
    assert rig.router.reroutes == []
    rig.disp.last.attach()
    _ok(rig.disp.last)
    assert down.kinds() == ["head", "send", "end", "done"]


def test_retry_safe_reset_after_body_sent_and_not_kept_is_answered(make_rig):
    rig = make_rig()
    ex, down = rig.start_h1(method=b"PUT", length=4)
    up = rig.disp.last
    up.attach()
    down.feed(ex, b"ab")
    assert bytes(up.sent) == b"ab"
    up.reset(safe=True)
    assert len(rig.ups()) == 1
    assert down.error().status == 502


def test_retry_safe_reset_before_the_body_went_keeps_it_for_the_next_attempt(make_rig):
    rig = make_rig(up_window=0)  # the first upstream takes nothing
    ex, down = rig.start_h1(method=b"PUT", length=4)
    down.feed(ex, b"ab")
    first = rig.disp.last
    first.attach()
    assert first.sent == b""
    first.reset(safe=True)
    second = rig.disp.last
    second.window = None
    second.attach()
    down.feed(ex, b"cd", end=True)
    assert bytes(second.sent) == b"abcd" and second.ended == 1
    assert down.releases() == [2, 2]
    _ok(second)
    assert rig.check_books() == []


def test_retry_safe_reset_with_a_kept_body_replays_it(make_rig):
    policy = FakePolicy(limit=1)
    rig = make_rig(policy=policy)
    ex, down = rig.start_h2(method=b"POST", length=6)
    first = rig.disp.last
    first.attach()
    down.feed(ex, b"abc")
    down.feed(ex, b"def", end=True)
    assert bytes(first.sent) == b"abcdef"
    first.reset(safe=True)
    second = rig.disp.last
    second.attach()
    assert bytes(second.sent) == b"abcdef" and second.ended == 1
    _ok(second)
    assert policy.stats.retries == 0  # a resend is not a policy retry
    assert (policy.stats.successes, policy.stats.failures) == (1, 0)
    assert rig.check_books() == []


def test_reset_not_retry_safe_is_answered_502(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    _ex, down = rig.start_h2()
    rig.disp.last.attach(True)
    rig.disp.last.reset(safe=False)
    assert len(rig.ups()) == 1
    assert isinstance(down.error(), errors.UpstreamReset)
    assert svc.outcomes() == ["failed"]


def test_reset_after_the_response_head_cuts(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    _ex, down = rig.start_h2()
    up = rig.disp.last
    up.attach(True)
    up.head(200)
    up.data(b"part")
    up.reset(safe=True)  # too late to resend: the client has part of the answer
    assert len(rig.ups()) == 1
    assert down.kinds() == ["head", "send", "cut", "done"]
    assert svc.outcomes() == ["ok"]  # settled once, at the head
    # Classified at the stream's end, as Linkerd does: cut short after its head, a failure.
    assert responses(rig.stats) == {} and responses(rig.stats, failures=True) == {200: 1}
    assert [(lvl, ev) for lvl, ev, _ in rig.log.lines] == [("warning", "response cut short")]
    assert rig.check_books() == []


# ---------------------------------------------------------------- the attempt timeout


def test_attempt_timeout_answers_504_counted_from_attach(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc, response_timeout=5.0)
    _ex, down = rig.start_h1()
    rig.loop.advance(30.0)  # connecting is the connector's business
    assert down.kinds() == []
    up = rig.disp.last
    up.attach()
    rig.loop.advance(4.9)
    assert down.kinds() == []
    rig.loop.advance(0.2)
    err = down.error()
    assert isinstance(err, errors.ResponseTimeout) and err.status == 504
    assert up.cancels == 1
    assert svc.outcomes() == ["failed"]
    assert responses(rig.stats, failures=True) == {504: 1}
    assert rig.log.lines[0][2]["error"] == "response timed out"
    assert rig.loop.pending() == []
    assert rig.check_books() == []


def test_attempt_timeout_stops_at_the_response_head(make_rig):
    rig = make_rig(response_timeout=5.0)
    _ex, down = rig.start_h1()
    up = rig.disp.last
    up.attach()
    rig.loop.advance(4.0)
    up.head(200)
    assert rig.loop.pending() == []
    rig.loop.advance(60.0)
    up.data(b"late but fine", end=True)
    assert down.kinds() == ["head", "send", "end", "done"]


def test_route_backend_timeout_shorter_than_the_proxys_wins(make_rig):
    rig = make_rig(response_timeout=10.0, policy=FakePolicy(attempt_timeout=2.0))
    _ex, down = rig.start_h1()
    rig.disp.last.attach()
    rig.loop.advance(2.0)
    err = down.error()
    assert err.status == 504 and err.reason == "response timed out (backend timeout 2s)"


def test_attempt_timeout_is_rearmed_per_attempt(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc, response_timeout=5.0)
    _ex, down = rig.start_h2()
    rig.disp.last.attach(True)
    rig.loop.advance(3.0)
    rig.disp.last.reset(safe=True)
    rig.loop.advance(3.0)  # the first attempt's timer would have fired here
    assert down.kinds() == []
    rig.disp.last.attach(True)
    rig.loop.advance(4.9)
    assert down.kinds() == []
    rig.loop.advance(0.1)
    assert down.error().status == 504


# ---------------------------------------------------------------- interim responses and tunnels


def test_informational_responses_pass_before_the_head(make_rig):
    rig = make_rig()
    _ex, down = rig.start_h2()
    up = rig.disp.last
    up.attach(True)
    up.informational(103, [(b":status", b"103"), (b"link", b"</a.css>")])
    _ok(up)
    assert down.kinds() == ["informational", "head", "send", "end", "done"]


class _Transport:
    def __init__(self):
        self.aborted = False

    def abort(self):
        self.aborted = True


def test_upgrade_hands_the_connection_to_a_tunnel(make_rig):
    svc = FakeService()
    policy = FakePolicy()
    rig = make_rig(service=svc, policy=policy, response_timeout=5.0)
    ex, down = rig.start_h1(headers=[(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")])
    assert ex.upgrade
    up = rig.disp.last
    up.attach()
    transport = _Transport()
    ex.upgraded(101, None, transport, b"rest")
    assert down.kinds() == ["tunnel", "done"]
    assert down.calls[0] == ("tunnel", 101, transport, b"rest")
    assert up.cancels == 0  # the transport belongs to the tunnel now
    assert svc.outcomes() == ["ok"]
    assert responses(rig.stats) == {101: 1}
    assert (policy.stats.successes, policy.stats.failures) == (1, 0)
    assert rig.loop.pending() == []
    assert rig.check_books() == []


class _TunnelEnd:
    on_close = None


def test_a_tunnel_holds_its_balancer_pick_until_it_closes(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    ex, down = rig.start_h1(headers=[(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")])
    rig.disp.last.attach()
    end = down.tunnel_end = _TunnelEnd()
    rig.loop.advance(0.25)
    ex.upgraded(200, None, _Transport(), b"")
    assert down.kinds() == ["tunnel", "done"]
    assert svc.outcomes() == []  # still open: its load stays on the endpoint
    assert len(svc.unsettled()[0]) == 1  # one pick out
    end.on_close(end)
    end.on_close(end)  # a second close changes nothing
    assert svc.outcomes() == ["ok"]
    assert svc.settles[0][1] == pytest.approx(0.25)
    assert rig.check_books() == []


def test_upgrade_after_the_exchange_ended_aborts_the_transport(make_rig):
    rig = make_rig()
    ex, down = rig.start_h1(headers=[(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")])
    rig.disp.last.attach()
    ex.client_gone()
    transport = _Transport()
    ex.upgraded(101, None, transport, b"")
    assert transport.aborted
    assert down.kinds() == ["done"]


def test_connect_request_is_an_upgrade(make_rig):
    rig = make_rig()
    rig.router.plan = [Target("10.1.1.1", 443, via_connect=True)]
    ex, down = rig.start_h1(method=b"CONNECT", path=b"example.com:443", host=b"example.com:443")
    assert ex.upgrade
    transport = _Transport()
    ex.upgraded(200, None, transport, b"")
    assert down.kinds() == ["tunnel", "done"]


# ---------------------------------------------------------------- what the balancer learns per pick


def test_settled_rtt_runs_from_attach_to_the_response_head(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    _ex, _down = rig.start_h2()
    rig.loop.advance(1.0)  # connecting
    rig.disp.last.attach(True)
    rig.loop.advance(2.5)
    rig.disp.last.head(200, end=True)
    assert [(rtt, outcome) for _, rtt, outcome in svc.settles] == [(2.5, 0)]


def test_connect_failure_settles_no_rtt(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    _ex, _down = rig.start_h2()
    rig.loop.advance(1.0)
    rig.disp.last.connect_fail()
    assert [rtt for _, rtt, _ in svc.settles] == [0.0]


@pytest.mark.parametrize("first_ends", ["retried-503", "resent-reset"])
def test_pick_that_never_attached_settles_no_rtt_after_an_earlier_attempt(make_rig, first_ends):
    """A later pick of the same request whose connect failed never sent anything: it has no
    round trip. ``t_sent`` is set per ``attached`` but never cleared by ``_again``, so ``settle``
    reports the time since the *previous* attempt was sent as this endpoint's rtt (PeakEWMA
    then takes it as a latency peak of an endpoint that was never asked)."""
    svc = FakeService()
    rig = make_rig(service=svc, policy=FakePolicy(limit=1))
    _ex, _down = rig.start_h2()
    rig.disp.last.attach(True)
    rig.loop.advance(3.0)
    if first_ends == "retried-503":
        rig.disp.last.head(503, end=True)
    else:
        rig.disp.last.reset(safe=True)
    rig.loop.advance(1.0)
    rig.disp.last.connect_fail(errors.ConnectFailed())
    second = svc.settles[1]
    assert second[0] is svc.picks[1] and second[2] == 1  # SETTLE_FAILED
    assert second[1] == 0.0


@pytest.mark.parametrize("status, outcome, failure", [(200, "ok", False), (404, "ok", False), (500, "failed", True),
                                                      (503, "failed", True)])
def test_forwarded_response_settles_by_its_status(make_rig, status, outcome, failure):
    svc = FakeService()
    rig = make_rig(service=svc, auto="h2")
    rig.start_h2()
    rig.disp.last.head(status, end=True)
    assert svc.outcomes() == [outcome]
    assert responses(rig.stats, failures=failure) == {status: 1}
    assert rig.check_books() == []

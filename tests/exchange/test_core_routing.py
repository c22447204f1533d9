"""Exchange core: routing, the HTTP/1 route cache, shedding, authorization, rejects and the metrics of each."""

from __future__ import annotations

import pytest

from proxy import errors
from proxy.core.target import Target
from proxy.exchange.core import QUEUED

from .fakes import Authz, FakePolicy, FakeService, responses


def _complete(up, body=b"ok"):
    up.attach()
    up.head(200, length=len(body))
    up.data(body, end=True)


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_direct_route_answers_and_counts_once(make_rig, proto):
    rig = make_rig()
    ex, down = rig.start_h1() if proto == "h1" else rig.start_h2()
    assert len(rig.router.routes) == 1
    assert [up.target for up in rig.ups()] == [rig.router.target]
    rig.loop.advance(0.25)
    _complete(rig.disp.last)
    assert down.kinds() == ["head", "send", "end", "done"]
    assert bytes(down.body) == b"ok"
    assert rig.stats.requests == 1
    assert responses(rig.stats) == {200: 1}
    assert responses(rig.stats, failures=True) == {}
    assert rig.stats.latency_count == 1 and rig.stats.latency_sum_ms == pytest.approx(250.0)
    assert ex.done and rig.ctx.in_flight == 0
    assert rig.check_books() == []


def test_request_body_goes_to_the_attempt_and_ends_it(make_rig):
    rig = make_rig()
    ex, down = rig.start_h1(method=b"POST", length=6)
    down.feed(ex, b"abc")
    up = rig.disp.last
    assert up.calls == []  # not attached yet: the bytes wait
    up.attach()
    assert bytes(up.sent) == b"abc" and up.ended == 0
    down.feed(ex, b"def", end=True)
    assert bytes(up.sent) == b"abcdef" and up.ended == 1
    up.head(204, end=True)
    assert down.kinds() == ["head", "end", "done"]
    assert rig.check_books() == []


def test_queued_then_routed(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    rig.router.plan = [QUEUED]
    _ex, down = rig.start_h2()
    assert rig.ups() == [] and down.kinds() == []
    assert rig.ctx.in_flight == 1
    rig.router.wake()
    assert [up.target for up in rig.ups()] == svc.picks
    _complete(rig.disp.last)
    assert down.kinds() == ["head", "send", "end", "done"]
    assert svc.outcomes() == ["ok"]
    assert rig.check_books() == []


def test_queued_then_failed_answers_503(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    rig.router.plan = [QUEUED]
    _ex, down = rig.start_h1()
    rig.router.give_up()
    err = down.error()
    assert isinstance(err, errors.NoEndpoints) and err.status == 503
    assert down.kinds() == ["error", "done"]
    assert rig.ups() == [] and svc.settles == []
    assert responses(rig.stats, failures=True) == {503: 1}
    assert [(lvl, ev, f["status"], f["error_kind"]) for lvl, ev, f in rig.log.lines] == [
        ("warning", "proxy responded with error", 503, "NoEndpoints")]
    assert rig.check_books() == []


@pytest.mark.parametrize("err, status, failure", [
    (errors.NoDestination(), 400, True),
    (errors.RoutingError("invalid destination authority"), 400, True),
    (errors.OwnAddress("destination is this proxy's own admin listener"), 403, True),
])
def test_route_raising_is_answered_with_its_error(make_rig, err, status, failure):
    rig = make_rig()
    rig.router.plan = [err]
    ex, down = rig.start_h1(method=b"POST", length=3)
    assert down.error() is err
    assert rig.ups() == []
    assert responses(rig.stats, failures=True) == {status: 1}
    # The body that follows the refused request is handed back, never forwarded.
    down.feed(ex, b"abc", end=True)
    assert down.releases() == [3]
    assert rig.check_books() == []


def test_route_redirect_is_an_answer_not_a_failure(make_rig):
    policy = FakePolicy()
    rig = make_rig(policy=policy)
    rig.router.plan = [errors.RouteRedirect("http://elsewhere/", 301)]
    _ex, down = rig.start_h2()
    assert down.error().status == 301
    assert responses(rig.stats) == {301: 1} and responses(rig.stats, failures=True) == {}
    assert (policy.stats.requests, policy.stats.successes, policy.stats.failures) == (1, 1, 0)
    assert [lvl for lvl, _, _ in rig.log.lines] == ["debug"]


def test_open_refusing_the_request_answers_it_and_cancels_the_pick(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    rig.disp.fail_with = [errors.ClientError("CONNECT over HTTP/2 is not supported", status=501)]
    _ex, down = rig.start_h2(method=b"CONNECT")
    assert down.error().status == 501
    assert svc.outcomes() == ["cancelled"]
    assert rig.check_books() == []


# ---------------------------------------------------------------- the connection's route cache


def _next_request(rig, ex, **head):
    rig.start_h1(ex=ex, **head)
    _complete(rig.disp.last)


def test_h1_route_cache_same_host_skips_the_router(make_rig):
    rig = make_rig()
    ex, down = rig.start_h1(host=b"svc.ns")
    _complete(rig.disp.last)
    _next_request(rig, ex, host=b"svc.ns", path=b"/other")
    assert len(rig.router.routes) == 1
    assert [up.target for up in rig.ups()] == [rig.router.target, rig.router.target]
    _next_request(rig, ex, host=b"other.ns")
    assert len(rig.router.routes) == 2
    assert rig.stats.requests == 3 and responses(rig.stats) == {200: 3}
    assert down.done_count == 3
    assert rig.check_books() == []


def test_h1_route_cache_is_dropped_when_the_policy_changes(make_rig):
    rig = make_rig()
    ex, _ = rig.start_h1()
    _complete(rig.disp.last)
    rig.ctx.policy_gen += 1
    _next_request(rig, ex)
    _next_request(rig, ex)
    assert len(rig.router.routes) == 2


@pytest.mark.parametrize("second", [
    {"path": b"http://svc.ns/"},  # absolute-form
    {"headers": [(b"l5d-dst-override", b"other.ns:80")]},
    {"method": b"CONNECT", "path": b"svc.ns:443", "host": b"svc.ns"},
])
def test_h1_route_cache_only_for_plain_origin_form(make_rig, second):
    rig = make_rig()
    ex, _ = rig.start_h1()
    _complete(rig.disp.last)
    rig.start_h1(ex=ex, **second)
    assert len(rig.router.routes) == 2


def test_h1_route_cache_keeps_a_balanced_service_and_picks_per_request(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    ex, down = rig.start_h1()
    _complete(rig.disp.last)
    _next_request(rig, ex)
    _next_request(rig, ex, path=b"/other")
    # The router was asked once; the service picked each request's endpoint, each pick settled once.
    assert len(rig.router.routes) == 1 and len(svc.picks) == 3
    assert [up.target for up in rig.ups()] == svc.picks
    assert [t.host for t in svc.picks] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert svc.outcomes() == ["ok", "ok", "ok"]
    assert down.done_count == 3 and responses(rig.stats) == {200: 3}
    assert rig.check_books() == []


def test_h1_route_cache_asks_the_router_again_once_the_service_closed(make_rig):
    svc = FakeService()
    rig = make_rig(service=svc)
    ex, _ = rig.start_h1()
    _complete(rig.disp.last)
    svc.closed = True  # swept as idle: discovery no longer feeds it
    _next_request(rig, ex)
    assert len(rig.router.routes) == 2 and len(svc.picks) == 2


@pytest.mark.parametrize("change", ["policy", "host"])
def test_h1_route_cache_of_a_service_is_dropped_like_a_passthrough_one(make_rig, change):
    svc = FakeService()
    rig = make_rig(service=svc)
    ex, _ = rig.start_h1(host=b"svc.ns")
    _complete(rig.disp.last)
    if change == "policy":
        rig.ctx.policy_gen += 1
        _next_request(rig, ex, host=b"svc.ns")
    else:
        _next_request(rig, ex, host=b"other.ns")
    assert len(rig.router.routes) == 2 and len(svc.picks) == 2


def test_h1_route_cache_not_for_policy_targets(make_rig):
    rig = make_rig(policy=FakePolicy())
    ex, _ = rig.start_h1()
    _complete(rig.disp.last)
    _next_request(rig, ex)
    assert len(rig.router.routes) == 2


def test_h2_route_cache_is_the_connections(make_rig):
    # Streams of one connection share its cache as HTTP/1's requests do; another connection has its own.
    rig = make_rig()
    _, conn = rig.start_h2(sid=1)
    _complete(rig.disp.last)
    rig.start_h2(sid=3, down=conn, path=b"/other")
    _complete(rig.disp.last)
    assert len(rig.router.routes) == 1
    rig.start_h2(sid=5, down=conn, authority=b"other.ns")
    _complete(rig.disp.last)
    assert len(rig.router.routes) == 2
    rig.start_h2(sid=1)
    _complete(rig.disp.last)
    assert len(rig.router.routes) == 3
    assert [up.target for up in rig.ups()] == [rig.router.target] * 4
    assert rig.stats.requests == 4 and responses(rig.stats) == {200: 4}
    assert rig.check_books() == []


def test_h2_route_cache_not_for_an_override_or_a_policy_change(make_rig):
    rig = make_rig()
    _, conn = rig.start_h2(sid=1)
    _complete(rig.disp.last)
    rig.start_h2(sid=3, down=conn, extra=[(b"l5d-dst-override", b"other.ns:80")])
    _complete(rig.disp.last)
    rig.ctx.policy_gen += 1
    rig.start_h2(sid=5, down=conn)
    _complete(rig.disp.last)
    assert len(rig.router.routes) == 3


def test_h1_route_cache_not_filled_by_a_queued_route(make_rig):
    rig = make_rig()
    rig.router.plan = [QUEUED]
    ex, _ = rig.start_h1()
    ex.routed(Target("10.1.1.1", 80))
    _complete(rig.disp.last)
    _next_request(rig, ex)
    assert len(rig.router.routes) == 2


# ---------------------------------------------------------------- shedding


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_shed_above_max_in_flight(make_rig, proto):
    rig = make_rig(max_in_flight=2)

    def start(sid):
        return rig.start_h1() if proto == "h1" else rig.start_h2(sid=sid)

    _first, _ = start(1)
    _second, _ = start(3)
    _third, down3 = start(5)
    err = down3.error()
    assert isinstance(err, errors.LoadShed) and err.status == 503
    assert down3.kinds() == ["error", "done"]
    assert len(rig.router.routes) == 2  # the shed request was never routed
    assert rig.ctx.in_flight == 2
    assert responses(rig.stats, failures=True) == {503: 1}
    _complete(rig.ups()[0])
    assert rig.ctx.in_flight == 1
    _fourth, down4 = start(7)
    assert down4.kinds() == []  # room again
    assert rig.stats.requests == 4


def test_shed_releases_the_body_that_follows(make_rig):
    rig = make_rig(max_in_flight=1)
    rig.start_h2(sid=1)
    ex, down = rig.start_h2(sid=3, method=b"POST", length=4)
    down.feed(ex, b"ab")
    down.feed(ex, b"cd", end=True)
    assert down.releases() == [2, 2]


# ---------------------------------------------------------------- authorization


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_authz_denial_is_403_before_routing(make_rig, proto):
    authz = Authz(deny=b"/admin")
    rig = make_rig(direction="inbound", authz=authz)
    _ex, down = rig.start_h1(path=b"/admin/x") if proto == "h1" else rig.start_h2(path=b"/admin/x")
    err = down.error()
    assert isinstance(err, errors.Unauthorized) and err.status == 403
    assert rig.router.routes == []
    assert authz.checked == [(proto, b"/admin/x")]
    assert responses(rig.stats, failures=True) == {403: 1}
    assert [(lvl, f["direction"]) for lvl, _, f in rig.log.lines] == [("info", "inbound")]
    _ex2, down2 = rig.start_h1(path=b"/ok") if proto == "h1" else rig.start_h2(sid=3, path=b"/ok")
    _complete(rig.disp.last)
    assert down2.kinds() == ["head", "send", "end", "done"]
    assert rig.check_books() == []


# ---------------------------------------------------------------- rejects


def test_reject_is_counted_and_answered(make_rig):
    rig = make_rig()
    ex, down = rig.exchange()
    down.starts += 1
    ex.reject(errors.HeaderTimeout())
    assert down.error().status == 408
    assert rig.stats.requests == 1 and responses(rig.stats, failures=True) == {408: 1}
    assert rig.ctx.in_flight == 0 and rig.router.routes == []
    # The connection's exchange serves the next request afterwards.
    rig.start_h1(ex=ex)
    _complete(rig.disp.last)
    assert rig.stats.requests == 2 and responses(rig.stats) == {200: 1}
    assert rig.check_books() == []

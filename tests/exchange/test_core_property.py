"""Exchange core, property-based: random sequences of client, upstream, balancer and clock events, and the books.

Each example draws a request (protocol, body, balanced or not, queued or
not, a route policy or none) and up to 40 events, each applied only when a
real relay could report it at that point (an upstream reports a head only
after it was attached, nothing after it failed or was cancelled, a client
sends no body after its end). When the events are spent the client leaves
if the exchange is still going, balancers route what was left in their
queues, and connections that came up late attach. Then, whatever happened:
the exchange ended exactly once and nothing was called after that; every
credit both ends issued came back exactly once; every pick was settled
exactly once; every attempt was abandoned exactly once (reported failed by
its end, or cancelled by the core); no timer is left armed; the request was
answered at most once and counted once; and a route policy counted its
outcome once when the client stayed to the end.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy import errors
from proxy.exchange.core import QUEUED

from .fakes import GRPC, FakeDown, FakePolicy, FakeService, Rig, patched

CONNECT_ERRORS = {
    "refused": errors.ConnectRefused,
    "timeout": errors.ConnectTimeout,
    "tls": errors.PeerTlsFailed,
    "identity": errors.IdentityError,
}

# What the next open or route may raise instead of answering.
REFUSALS = {
    "open-501": lambda: errors.ClientError("CONNECT over HTTP/2 is not supported", status=501),
    "open-identity": errors.IdentityError,
    "route-503": errors.NoEndpoints,
}


class _Transport:
    def abort(self):
        pass

WINDOWS = st.sampled_from([None, 0, 1, 3])

EVENTS = st.one_of(
    st.tuples(st.just("data"), st.integers(0, 5), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("trailers")),
    st.tuples(st.just("gone")),
    st.tuples(st.just("down_window"), WINDOWS),
    st.tuples(st.just("wake")),
    st.tuples(st.just("give_up")),
    st.tuples(st.just("connecting")),
    st.tuples(st.just("attach"), st.booleans()),
    st.tuples(st.just("connect_fail"), st.sampled_from(sorted(CONNECT_ERRORS))),
    st.tuples(st.just("up_window"), WINDOWS),
    st.tuples(st.just("info")),
    st.tuples(st.just("head"), st.sampled_from([200, 204, 500, 503]),
              st.sampled_from(["plain", "grpc", "grpc-14", "grpc-0"]), st.booleans()),
    st.tuples(st.just("rdata"), st.integers(0, 5), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("rtrailers"), st.sampled_from([None, 0, 14])),
    st.tuples(st.just("reset"), st.booleans()),
    st.tuples(st.just("flush")),
    st.tuples(st.just("upgrade")),
    st.tuples(st.just("refuse"), st.sampled_from(sorted(REFUSALS))),
    st.tuples(st.just("requeue")),
    st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 2.5, 6.0])),
)

POLICIES = st.builds(
    dict,
    limit=st.integers(0, 2),
    budget=st.integers(0, 3),
    replay_limit=st.sampled_from([4, 64]),
    timeout=st.sampled_from([0.0, 8.0]),
    idle_timeout=st.sampled_from([0.0, 3.0]),
    attempt_timeout=st.sampled_from([0.0, 2.0]),
)


@st.composite
def scenarios(draw):
    balanced = draw(st.booleans())
    return {
        "proto": draw(st.sampled_from(["h1", "h2"])),
        "body": draw(st.sampled_from(["none", "known", "unknown", "upgrade"])),
        "balanced": balanced,
        "queued": balanced and draw(st.booleans()),
        "policy": draw(st.one_of(st.none(), POLICIES)),
        "response_timeout": draw(st.sampled_from([0.0, 5.0])),
        "auto": draw(st.sampled_from([None, "h1", "h2"])),
        "down_window": draw(WINDOWS),
        "up_window": draw(WINDOWS),
        "events": draw(st.lists(EVENTS, max_size=40)),
    }


class Run:
    """Plays one scenario: the test's view of the relays (who may report what, and when)."""

    def __init__(self, sc):
        self.sc = sc
        policy = FakePolicy(**sc["policy"]) if sc["policy"] is not None else None
        self.service = FakeService() if sc["balanced"] else None
        self.rig = Rig(service=self.service, policy=policy, response_timeout=sc["response_timeout"],
                       auto=sc["auto"], up_window=sc["up_window"])
        self.policy = policy
        self.state = {}  # FakeUp -> opened, connecting, attached, head, ended, dead (reported its own failure)
        self.client_ended = sc["body"] == "none"
        self.client_gone = False
        self.gone_before_end = False

    def start(self):
        rig, sc = self.rig, self.sc
        if sc["queued"]:
            rig.router.plan = [QUEUED]
        down = FakeDown(window=sc["down_window"])
        self.ex, self.down = rig.exchange(down=down, sid=1)
        length = {"none": 0, "known": 6, "unknown": -1, "upgrade": 0}[sc["body"]]
        if sc["body"] == "upgrade":
            self.client_ended = True
        if sc["proto"] == "h1":
            upgrade = [(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")] if sc["body"] == "upgrade" else []
            rig.start_h1(ex=self.ex, method=b"POST" if length else b"GET", length=max(length, 0),
                         chunked=length < 0, headers=upgrade)
        else:
            rig.start_h2(ex=self.ex, method=b"POST" if length else b"GET", length=length,
                         extra=[GRPC])

    def current(self):
        """The attempt the relays are working on: the last one opened, while it can still report."""
        ups = self.rig.disp.opened
        if not ups:
            return None, None
        up = ups[-1]
        if up.cancels:
            return None, None
        state = self.state.get(up)
        if state is None:
            state = "attached" if self.sc["auto"] else "opened"  # auto: attached inside open
            self.state[up] = state
        if state in ("dead", "ended"):
            return None, None
        return up, state

    def apply(self, event):
        kind = event[0]
        ex, down = self.ex, self.down
        up, state = self.current()
        if kind == "data":
            if not self.client_ended and not self.client_gone:
                _, n, extra, end = event
                down.feed(ex, b"x" * n, credit=n + extra, end=end)
                self.client_ended = end
        elif kind == "trailers":
            if not self.client_ended and not self.client_gone:
                self.client_ended = True
                ex.request_trailers([(b"x-checksum", b"1")])
        elif kind == "gone":
            if not self.client_gone:
                self.client_gone = True
                self.gone_before_end = not ex.done
                ex.client_gone()
        elif kind == "down_window":
            if not self.client_gone and not ex.done:
                down.open(ex, event[1])
        elif kind == "wake":
            if self.rig.router.queued:
                self.rig.router.wake()
        elif kind == "give_up":
            if self.rig.router.queued:
                self.rig.router.give_up()
        elif kind == "refuse":
            if event[1].startswith("open"):
                self.rig.disp.fail_with.append(REFUSALS[event[1]]())
            else:
                self.rig.router.plan.append(REFUSALS[event[1]]())
        elif kind == "requeue":
            if self.service is not None:
                self.rig.router.plan.append(QUEUED)
        elif up is None:
            if kind == "advance":
                self.rig.loop.advance(event[1])
        elif kind == "connecting":
            if state == "opened":
                self.state[up] = "connecting"
                up.connecting()
        elif kind == "attach":
            if state in ("opened", "connecting"):
                self.state[up] = "attached"
                whole = ex.req_ended and not ex.up_queue and ex.req_trailers is None
                up.attach(event[1] and whole)
        elif kind == "connect_fail":
            if state in ("opened", "connecting"):
                self.state[up] = "dead"
                up.connect_fail(CONNECT_ERRORS[event[1]]())
        elif kind == "up_window":
            if state in ("attached", "head"):
                up.open(event[1])
        elif kind == "info":
            if state == "attached":
                up.informational(100)
        elif kind == "head":
            if state == "attached":
                _, status, flavour, end = event
                fields = [(b":status", b"%d" % status)]
                if flavour != "plain":
                    fields.append(GRPC)
                if flavour in ("grpc-14", "grpc-0"):
                    fields.append((b"grpc-status", flavour[5:].encode()))
                self.state[up] = "ended" if end else "head"
                up.head(status, fields, 0 if end else -1, end)
        elif kind == "rdata":
            if state == "head":
                _, n, extra, end = event
                if end:
                    self.state[up] = "ended"
                up.data(b"y" * n, credit=n + extra, end=end)
        elif kind == "rtrailers":
            if state == "head":
                self.state[up] = "ended"
                up.finish([] if event[1] is None else [(b"grpc-status", b"%d" % event[1])])
        elif kind == "reset":
            if state in ("attached", "head"):
                self.state[up] = "dead"
                up.reset(errors.UpstreamReset(), event[1])
        elif kind == "upgrade":
            if state == "attached" and ex.upgrade:
                self.state[up] = "dead"  # the connection belongs to the tunnel now
                ex.upgraded(101, None, _Transport(), b"")
        elif kind == "flush":
            if state in ("attached", "head") and not ex.done:
                ex.flush_down()
        elif kind == "advance":
            self.rig.loop.advance(event[1])

    def wind_up(self):
        """The events are spent: the client leaves if it is still there, and the world settles."""
        ex = self.ex
        if not ex.done:
            self.client_gone = True
            self.gone_before_end = True
            ex.client_gone()
        router = self.rig.router
        while router.queued:
            router.wake()
        for up in self.rig.disp.opened:
            if self.state.get(up, "opened") in ("opened", "connecting") and not up.cancels:
                self.state[up] = "attached"
                up.attach(False)  # a connection that came up after all

    def problems(self):
        rig, down = self.rig, self.down
        problems = rig.check_books()
        if rig.loop.pending():
            problems.append(f"timers left armed: {[h.callback for h in rig.loop.pending()]}")
        for up in rig.disp.opened:
            dead = self.state.get(up) == "dead"
            if dead == bool(up.cancels):
                problems.append(f"up end {up.sid}: reported its failure {dead}, cancelled {up.cancels} times")
        kinds = down.kinds()
        answers = kinds.count("head") + kinds.count("error") + kinds.count("tunnel")
        if answers > 1:
            problems.append(f"answered {answers} times: {kinds}")
        if kinds.count("end") > 1 or ("end" in kinds and "head" not in kinds):
            problems.append(f"response ended wrongly: {kinds}")
        if "cut" in kinds and "head" not in kinds:
            problems.append(f"cut without a response: {kinds}")
        recorded = sum(outcome[-1] for outcome in rig.stats.outcomes())
        # Each retry is one more request and response of its endpoint (the retried answer).
        retries = self.policy.stats.retries if self.policy is not None else 0
        if rig.stats.requests != 1 + retries or recorded != answers + retries:
            problems.append(f"counted {rig.stats.requests} requests and {recorded} responses for {answers} answers"
                            f" and {retries} retries")
        policy = self.policy
        if policy is not None and rig.router.routes:
            outcomes = policy.stats.successes + policy.stats.failures
            if outcomes > 1 or (outcomes == 0 and not self.gone_before_end):
                problems.append(f"route counted {outcomes} outcomes (client left first: {self.gone_before_end})")
            if policy.stats.retries != policy.withdrawals or policy.stats.retries > policy.limit:
                problems.append(f"route retries {policy.stats.retries}, budget withdrawals {policy.withdrawals}")
        if self.service is not None and self.service.outcomes().count("ok") > 1:
            problems.append(f"settled ok more than once: {self.service.outcomes()}")
        return problems


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_random_event_sequences_keep_the_books(sc):
    run = Run(sc)
    with patched(run.rig):
        run.start()
        for event in sc["events"]:
            run.apply(event)
        run.wind_up()
        assert run.problems() == []

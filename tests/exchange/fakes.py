"""In-memory stream ends, a fake clock and fake routing that drive ``proxy.exchange.core`` without sockets.

``Rig`` builds one direction's ``ExchangeContext`` around them: a ``FakeLoop``
whose time moves only when a test says so (``advance``), a ``FakeRouter``
answering from a plan or a ``FakeService`` (a balancer that records every
``settle``), and a ``FakeDispatcher`` handing each attempt a ``FakeUp``.
``FakeDown`` and ``FakeUp`` are Python subclasses of the compiled
``DownEnd``/``UpEnd``: they record every call the core makes, take as many
bytes as their ``window`` allows (0: the peer is not reading), and keep the
books of the credit they issued and got back. The test plays the relays:
it reports events to the exchange through the ends' helpers.
"""

from __future__ import annotations

import heapq
from contextlib import contextmanager
from types import SimpleNamespace

from proxy import errors
from proxy.core.addr import ConnMeta
from proxy.core.target import Target
from proxy.exchange import clock
from proxy.exchange import log as exchange_log
from proxy.exchange.context import ExchangeContext
from proxy.exchange.core import (
    QUEUED,
    SETTLE_CANCELLED,
    SETTLE_FAILED,
    SETTLE_OK,
    Exchange,
)
from proxy.exchange.ends import Dispatcher, DownEnd, Picker, UpEnd
from proxy.protocol.http1 import NEED_MORE, parse_request_head
from proxy.protocol.request import h2_request_line
from proxy.telemetry.counters import HttpStats, RouteStats, TcpStats

# The core's compiled constants (cdef ints, not visible from Python).
MAX_REPICKS = 2
MAX_RESENDS = 1

OUTCOME = {SETTLE_OK: "ok", SETTLE_FAILED: "failed", SETTLE_CANCELLED: "cancelled"}

GRPC = (b"content-type", b"application/grpc")


# ---------------------------------------------------------------- the clock


class Handle:
    __slots__ = ("_cancelled", "args", "callback", "seq", "when")

    def __init__(self, when, seq, callback, args):
        self.when = when
        self.seq = seq
        self.callback = callback
        self.args = args
        self._cancelled = False

    def cancel(self):
        self._cancelled = True

    def cancelled(self):
        return self._cancelled

    def __lt__(self, other):
        return (self.when, self.seq) < (other.when, other.seq)


class FakeLoop:
    """The parts of an event loop the core uses: ``time``, ``call_later``, ``call_at``; time moves by ``advance``."""

    def __init__(self, start=1000.0):
        self.now = start
        self.heap = []
        self.seq = 0

    def time(self):
        return self.now

    def call_later(self, delay, callback, *args):
        return self.call_at(self.now + delay, callback, *args)

    def call_at(self, when, callback, *args):
        self.seq += 1
        handle = Handle(when, self.seq, callback, args)
        heapq.heappush(self.heap, handle)
        return handle

    def advance(self, seconds):
        """Move time forward, running every callback that falls due, in order (those they schedule too)."""
        end = self.now + seconds
        while self.heap and self.heap[0].when <= end:
            handle = heapq.heappop(self.heap)
            if handle._cancelled:
                continue
            self.now = max(self.now, handle.when)
            handle.callback(*handle.args)
        self.now = end

    def pending(self):
        return sorted(h for h in self.heap if not h._cancelled)


# ---------------------------------------------------------------- the ends


class FakeDown(DownEnd):
    """The client's end: records the core's calls; ``window`` is how much response body it can still take."""

    def __init__(self, window=None):
        self.window = window  # None: takes everything
        self.calls = []
        self.body = bytearray()
        self.issued = 0
        self.released = 0
        self.starts = 0
        self.done_count = 0
        self.after_done = []  # calls other than release made after exchange_done
        self.on_send = None  # hook(ex, data), run before the bytes are taken
        self.tunnel_end = None  # what tunnel() returns: the relay's client end, or None (no tunnel made)

    def _log(self, *call):
        if self.done_count >= self.starts > 0 and call[0] != "release":
            self.after_done.append(call)
        self.calls.append(call)

    # -- DownEnd
    def send_informational(self, ex, status, h1head, fields):
        self._log("informational", status, fields)

    def send_head(self, ex, status, h1head, fields, length, end):
        self._log("head", status, h1head, fields, length, end)

    def send(self, ex, data):
        self._log("send", data)
        if self.on_send is not None:
            self.on_send(ex, data)
        n = len(data) if self.window is None else min(len(data), self.window)
        if self.window is not None:
            self.window -= n
        self.body += data[:n]
        return n

    def end_response(self, ex, trailers):
        self._log("end", trailers)

    def flush_response(self, ex):
        self._log("flush")

    def send_error(self, ex, err):
        self._log("error", err)

    def cut(self, ex, err):
        self._log("cut", err)

    def tunnel(self, ex, status, h1head, transport, rest):
        self._log("tunnel", status, transport, rest)
        return self.tunnel_end

    def release(self, ex, credit):
        self._log("release", credit)
        self.released += credit

    def exchange_done(self, ex):
        self._log("done")
        self.done_count += 1

    # -- the relay's side
    def feed(self, ex, data=b"", credit=None, end=False):
        """The client sent request body bytes worth ``credit`` (default: their length)."""
        if credit is None:
            credit = len(data)
        self.issued += credit
        ex.request_data(data, credit, end)

    def open(self, ex, window=None):
        """The client reads again (``window``: how much; None: everything)."""
        self.window = window
        ex.pump_down()

    # -- reading the record
    def kinds(self):
        """The calls made, by name, without the bookkeeping ones (release, flush)."""
        return [c[0] for c in self.calls if c[0] not in ("release", "flush")]

    def heads(self):
        return [c for c in self.calls if c[0] == "head"]

    def error(self):
        errs = [c[1] for c in self.calls if c[0] == "error"]
        assert len(errs) == 1, self.calls
        return errs[0]

    def releases(self):
        return [c[1] for c in self.calls if c[0] == "release"]


class FakeUp(UpEnd):
    """One attempt's upstream end; ``window`` is how much request body it can still take."""

    def __init__(self, ex, target, sid, window=None):
        self.ex = ex
        self.target = target
        self.sid = sid
        self.window = window
        self.calls = []
        self.sent = bytearray()
        self.ended = 0
        self.trailers = None
        self.cancels = 0
        self.issued = 0
        self.released = 0
        self.after_cancel = []  # calls other than release made after cancel
        self.on_send = None  # hook(ex, data), run before the bytes are taken

    def _log(self, *call):
        if self.cancels and call[0] != "release":
            self.after_cancel.append(call)
        self.calls.append(call)

    # -- UpEnd
    def send(self, ex, data):
        self._log("send", data)
        if self.on_send is not None:
            self.on_send(ex, data)
        n = len(data) if self.window is None else min(len(data), self.window)
        if self.window is not None:
            self.window -= n
        self.sent += data[:n]
        return n

    def end_request(self, ex, trailers):
        self._log("end", trailers)
        self.ended += 1
        self.trailers = trailers

    def release(self, ex, credit):
        self._log("release", credit)
        self.released += credit

    def cancel(self, ex):
        self._log("cancel")
        self.cancels += 1

    # -- the relay's side: events reported to the exchange
    def connecting(self):
        self.ex.connecting(self)

    def attach(self, request_sent=False):
        self.ex.attached(self, self.sid, request_sent)

    def connect_fail(self, err=None):
        self.ex.upstream_failed(err if err is not None else errors.ConnectRefused())

    def reset(self, err=None, safe=False):
        self.ex.upstream_reset(err if err is not None else errors.UpstreamReset(), safe)

    def informational(self, status=100, fields=None):
        self.ex.response_informational(status, None, fields)

    def head(self, status=200, fields=None, length=-1, end=False):
        if fields is None:
            fields = [(b":status", b"%d" % status)]
        self.ex.response_head(status, None, fields, length, end)

    def data(self, data=b"", credit=None, end=False):
        if credit is None:
            credit = len(data)
        self.issued += credit
        self.ex.response_data(data, credit, end)

    def finish(self, fields):
        self.ex.response_trailers(fields)

    def open(self, window=None):
        self.window = window
        self.ex.pump_up()


class FakeDispatcher(Dispatcher):
    """Gives each attempt a ``FakeUp``; ``fail_with`` errors are raised by the next opens.

    ``auto``: None (the test reports ``attached`` itself), "h1" (attached at
    once, body to follow, like a pooled HTTP/1 connection), "h2" (attached at
    once with the whole request when it is complete, like a connected HTTP/2 pool).
    """

    def __init__(self, auto=None, window=None):
        self.auto = auto
        self.window = window
        self.opened = []
        self.fail_with = []

    def open(self, ex, target):
        if self.fail_with:
            raise self.fail_with.pop(0)
        up = FakeUp(ex, target, 2 * len(self.opened) + 1, self.window)
        self.opened.append(up)
        if self.auto == "h1":
            up.attach(False)
        elif self.auto == "h2":
            up.attach(ex.req_ended and not ex.up_queue and ex.req_trailers is None)

    @property
    def last(self):
        return self.opened[-1]


# ---------------------------------------------------------------- routing and balancing


class FakeService(Picker):
    """A balanced service: endpoints picked in turn (avoiding the one named); every pick and settle recorded.

    ``route`` is what the core calls on a connection that remembered this service (the router is not asked).
    """

    def __init__(self, endpoints=("10.0.0.1", "10.0.0.2", "10.0.0.3"), port=8080):
        self.endpoints = endpoints
        self.port = port
        self.turn = 0
        self.picks = []
        self.settles = []  # (target, rtt, outcome)

    def pick(self, avoid=None):
        for _ in range(len(self.endpoints)):
            ep = self.endpoints[self.turn % len(self.endpoints)]
            self.turn += 1
            if ep != avoid:
                break
        target = Target(ep, self.port, service=self, endpoint=ep)
        self.picks.append(target)
        return target

    def route(self, conn, avoid=None):
        return self.pick(avoid)

    def settle(self, target, rtt, outcome):
        self.settles.append((target, rtt, outcome))

    def endpoint_labels(self, target):
        """Discovery's labels of an endpoint, as the tap reports them."""
        return (("pod", f"pod-{target.host}"),)

    def outcomes(self):
        return [OUTCOME[o] for _, _, o in self.settles]

    def unsettled(self):
        """Picks not settled, and settles of picks never made or settled twice (all empty when the books balance)."""
        counts = {}
        for target, _, _ in self.settles:
            counts[id(target)] = counts.get(id(target), 0) + 1
        picked = {id(t) for t in self.picks}
        missing = [t for t in self.picks if counts.get(id(t), 0) == 0]
        twice = [t for t in self.picks if counts.get(id(t), 0) > 1]
        strangers = [t for t, _, _ in self.settles if id(t) not in picked]
        return missing, twice, strangers


class FakeRouter:
    """``route``/``reroute``/``unqueue`` as the core calls them.

    The answer is the next ``plan`` step when there is one (a Target,
    ``QUEUED``, an exception to raise, or a callable of the exchange), else a
    pick of ``service``, else the passthrough ``target``. ``policy`` set: each
    ``route`` sets it as the exchange's ``rp`` and counts the request on it,
    as the outbound router does for a route with a policy.
    """

    def __init__(self, service=None, target=None):
        self.service = service
        self.target = target if target is not None else Target("10.9.9.9", 80)
        self.plan = []
        self.policy = None
        self.routes = []
        self.reroutes = []  # (failed target, resplit)
        self.unqueued = []
        self.queued = []

    def route(self, head, meta, ex):
        self.routes.append(head)
        if self.policy is not None:
            ex.rp = self.policy
            self.policy.stats.requests += 1
        return self._answer(ex, None)

    def reroute(self, head, meta, failed, ex, resplit=False):
        self.reroutes.append((failed, resplit))
        return self._answer(ex, failed.endpoint)

    def unqueue(self, ex):
        self.unqueued.append(ex)
        if ex in self.queued:
            self.queued.remove(ex)

    def _answer(self, ex, avoid):
        if self.plan:
            step = self.plan.pop(0)
            if isinstance(step, BaseException):
                raise step
            if step is QUEUED:
                self.queued.append(ex)
                return QUEUED
            if callable(step):
                return step(ex)
            return step
        if self.service is not None:
            return self.service.pick(avoid)
        return self.target

    # -- the balancer's side of a queued request
    def wake(self):
        """An endpoint became ready: the first queued exchange is routed to a pick."""
        ex = self.queued.pop(0)
        ex.routed(self.service.pick())

    def give_up(self):
        """The queue timeout passed: the first queued exchange is failed with 503."""
        ex = self.queued.pop(0)
        ex.fail(errors.NoEndpoints())


class FakePolicy:
    """A route policy (``ex.rp``) with the attributes the core reads, classifying like the default routes."""

    def __init__(self, limit=0, retry_status=(503,), retry_grpc=(14,), budget=100, replay_limit=1024,
                 timeout=0.0, idle_timeout=0.0, attempt_timeout=0.0, grpc_retry=None, response_headers=None):
        self.stats = RouteStats("svc.ns.svc.cluster.local:8080", "route")
        self.route = SimpleNamespace(name="route")  # the route's name: spans and taps report it
        self.limit = limit
        self.retry_status = retry_status
        self.retry_grpc = retry_grpc
        self.budget = budget
        self.withdrawals = 0
        self.replay_limit = replay_limit
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.attempt_timeout = attempt_timeout
        self.grpc_retry = bool(limit) if grpc_retry is None else grpc_retry
        self.response_headers = response_headers
        self.mirror = None  # no RequestMirror on this route

    def failed(self, status, grpc_status):
        if status >= 500:
            return True
        return grpc_status is not None and grpc_status != 0

    def retried(self, failed, status, grpc, error, attempts):
        self.retried_outcomes = getattr(self, "retried_outcomes", []) + [(failed, status, attempts)]

    def retry_on(self, status, grpc_status):
        if grpc_status is None or not self.grpc_retry:
            return status in self.retry_status
        return grpc_status in self.retry_grpc

    def withdraw(self):
        if self.budget <= 0:
            return False
        self.budget -= 1
        self.withdrawals += 1
        return True


class Authz:
    """An inbound connection's authorization: denies requests whose path starts with ``deny``."""

    def __init__(self, deny=b"/admin"):
        self.deny = deny
        self.checked = []

    def check_h1(self, head):
        self.checked.append(("h1", head.target))
        return errors.Unauthorized() if head.target.startswith(self.deny) else None

    def check_h2(self, head, headers):
        self.checked.append(("h2", head.target))
        return errors.Unauthorized() if head.target.startswith(self.deny) else None


class LogLines:
    """Stands in for the exchange's logger: (level, event, fields) per line."""

    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        if level.startswith("_"):
            raise AttributeError(level)

        def emit(event, **fields):
            self.lines.append((level, event, fields))

        return emit

    def events(self):
        return [event for _, event, _ in self.lines]


# ---------------------------------------------------------------- heads


def h1_head(method=b"GET", path=b"/", host=b"svc.ns", headers=(), version=b"HTTP/1.1"):
    lines = [method + b" " + path + b" " + version]
    if host is not None:
        lines.append(b"Host: " + host)
    lines.extend(name + b": " + value for name, value in headers)
    head = parse_request_head(b"\r\n".join(lines) + b"\r\n\r\n", 65536)
    assert head is not NEED_MORE
    return head


def h2_fields(method=b"GET", path=b"/", authority=b"svc.ns", extra=()):
    return [(b":method", method), (b":scheme", b"http"), (b":path", path), (b":authority", authority), *extra]


# ---------------------------------------------------------------- the rig


class Rig:
    """One direction's exchange context around the fakes."""

    def __init__(self, service=None, max_in_flight=0, response_timeout=0.0, direction="outbound", authz=None,
                 auto=None, up_window=None, policy=None):
        self.loop = FakeLoop()
        self.service = service
        self.router = FakeRouter(service)
        self.router.policy = policy
        self.policy = policy
        self.disp = FakeDispatcher(auto, up_window)
        self.stats = HttpStats(direction)
        limits = SimpleNamespace(response_timeout=response_timeout, max_header_bytes=65536, header_timeout=10.0,
                                 write_buffer_high=65536, pipeline_buffer_bytes=65536, client_idle_timeout=0.0)
        self.ctx = ExchangeContext(self.loop, direction, self.router, self.disp, self.stats,
                                   TcpStats(direction, "src"), TcpStats(direction, "dst"), limits, max_in_flight)
        self.meta = ConnMeta(direction, ("10.0.0.9", 40000), ("10.0.0.8", 4140), None, authz=authz)
        self.log = LogLines()
        self.downs = []

    def exchange(self, down=None, sid=0):
        down = down if down is not None else FakeDown()
        self.downs.append(down)
        return Exchange(self.ctx, down, self.meta, sid), down

    def start_h1(self, ex=None, down=None, method=b"GET", path=b"/", host=b"svc.ns", headers=(), length=0,
                 chunked=False):
        """An HTTP/1 request (``length`` > 0: a body of that many bytes follows; ``chunked``: of unknown length)."""
        if ex is None:
            ex, _down = self.exchange()
        hdrs = list(headers)
        if chunked:
            hdrs.append((b"Transfer-Encoding", b"chunked"))
            length = -1
        elif length > 0:
            hdrs.append((b"Content-Length", b"%d" % length))
        head = h1_head(method, path, host, hdrs)
        ex.down.starts += 1
        ex.start(head, None, length, length == 0)
        return ex, ex.down

    def start_h2(self, ex=None, sid=1, method=b"GET", path=b"/", authority=b"svc.ns", extra=(), length=0,
                 down=None):
        """An HTTP/2 request (``length`` 0: END_STREAM on HEADERS; > 0: declared; -1: body of unknown length;
        ``down``: a connection an earlier stream came in on)."""
        if ex is None:
            ex, _ = self.exchange(down=down, sid=sid)
        fields = h2_fields(method, path, authority, extra)
        if length > 0:
            fields.append((b"content-length", b"%d" % length))
        ex.down.starts += 1
        ex.start(h2_request_line(fields), fields, length, length == 0)
        return ex, ex.down

    # -- the books
    def ups(self):
        return list(self.disp.opened)

    def check_books(self):
        """Everything is over: every credit back exactly once, every pick settled once, nothing called late."""
        problems = []
        for down in self.downs:
            if down.released != down.issued:
                problems.append(f"down end: released {down.released} of {down.issued} credit")
            if down.done_count != down.starts:
                problems.append(f"down end: exchange_done {down.done_count} times for {down.starts} requests")
            if down.after_done:
                problems.append(f"down end: called after exchange_done: {down.after_done}")
        for up in self.disp.opened:
            if up.released != up.issued:
                problems.append(f"up end {up.sid}: released {up.released} of {up.issued} credit")
            if up.cancels > 1:
                problems.append(f"up end {up.sid}: cancelled {up.cancels} times")
            if up.after_cancel:
                problems.append(f"up end {up.sid}: called after cancel: {up.after_cancel}")
        if self.service is not None:
            missing, twice, strangers = self.service.unsettled()
            if missing or twice or strangers:
                problems.append(f"picks: unsettled {missing}, settled twice {twice}, unknown {strangers}")
        if self.ctx.in_flight != 0:
            problems.append(f"in_flight is {self.ctx.in_flight}")
        return problems


@contextmanager
def patched(rig):
    """The core's clock (``clock.now``) and log lines go through the rig while the block runs."""
    saved_log = exchange_log.log
    clock.set_source(rig.loop.time)
    exchange_log.log = rig.log
    try:
        yield rig
    finally:
        clock.set_source(None)
        exchange_log.log = saved_log


def responses(stats, failures=False):
    """{status: count} of the responses a HttpStats recorded (failures or not)."""
    out: dict[int, int] = {}
    for status, _grpc, _error, failure, n in stats.outcomes():
        if failure == failures:
            out[status] = out.get(status, 0) + n
    return out

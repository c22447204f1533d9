"""One request's life for every protocol: route, authorize, shed, pick, attempt, retry, settle, count, answer errors.

A client-side relay (the *down* end, ``proxy.exchange.ends.DownEnd``)
creates an ``Exchange`` per request, or reuses one per HTTP/1 connection,
and calls ``start``; it then feeds the request body with ``request_data``.
The core routes the request (``ctx.router``), applies the route's policy,
and asks ``ctx.upstreams`` for an *up* end per attempt; the up end reports
``attached``, the response head, body and trailers, or its failure. A
failed attempt is picked again when it provably never reached the server
(a connect error), sent again when the upstream refused it unprocessed or
when the route's retry policy says so and the body was kept, and otherwise
answered with the error through the down end's renderer, or cut when the
response had already started.

Bytes move with credit (see ``ends``). Request data waits in ``up_queue``
while no upstream can take it and response data in ``down_queue`` while
the client cannot; each entry keeps its credit until the data has moved
on or is dropped, and every ending gives back what it still holds, so a
peer's flow-control window is never lost.

The exchange never looks inside a message: heads arrive as the relays'
own objects (an HTTP/1 head or HTTP/2 fields), and the relays convert.
"""

import cython

from proxy import errors
from proxy.exchange import log
from proxy.exchange.clock import RouteClock, now
from proxy.exchange.ends import DownEnd, Picker, UpEnd
from proxy.exchange.taphook import TapEvents, TapHook
from proxy.telemetry.counters import (
    CLIENT_GONE,
    BackendStats,
    HttpStats,
    RouteStats,
    cut_error_code,
    error_code,
    stream_error_code,
)

# How a balancer pick ended (passed to ``target.service.settle``). Plain
# Python ints: the outbound side imports them.
SETTLE_OK = 0  # a response head arrived that is not a failure
SETTLE_FAILED = 1  # 5xx, connect error or timeout: counts for failure accrual
SETTLE_CANCELLED = 2  # the client went away, or the attempt was never processed: nothing learned

# A connect error never reached the server: the request may go to another
# endpoint this many times.
MAX_REPICKS = cython.declare(cython.int, 2)
# A stream the upstream provably did not process (REFUSED_STREAM, GOAWAY
# above its last id, a reused HTTP/1 connection that died before answering
# an idempotent request) is sent again this many times.
MAX_RESENDS = cython.declare(cython.int, 1)

# Methods that may be resent when a reused connection died before answering
# (RFC 9110 9.2.2 idempotent methods).
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))

_CONNECT_ERRORS = (errors.ConnectRefused, errors.ConnectFailed, errors.ConnectTimeout)
_CANCEL = 8  # RST_STREAM CANCEL: how a tap reports a request whose client went away
_CUT = cython.declare(cython.int, -2)  # _count_grpc: the response did not end (cut, or its client left)


class _Queued:
    """``router.route()`` result: no target yet; the router calls ``routed()`` or ``fail()`` later."""

    def __repr__(self):
        return "QUEUED"


QUEUED = _Queued()


def attempt_time_limit(response_timeout, rp):
    """How long one attempt may wait for its response head (0: no limit): the proxy's
    response timeout or the route's backend timeout, whichever is shorter."""
    if rp is not None and rp.attempt_timeout > 0 and (response_timeout <= 0 or rp.attempt_timeout < response_timeout):
        return rp.attempt_timeout
    return response_timeout


def attempt_timeout_error(rp):
    """The 504 for an attempt that ran out of time, naming the route's backend timeout when it set one."""
    if rp is not None and rp.attempt_timeout > 0:
        return errors.ResponseTimeout(f"response timed out (backend timeout {rp.attempt_timeout:g}s)")
    return errors.ResponseTimeout()


def grpc_status_of(fields):
    """``grpc-status`` of a header block, or -1 when absent or malformed."""
    if fields is None:
        return -1
    for name, value in fields:
        if name == b"grpc-status":
            try:
                code = int(value)
            except ValueError:
                return -1
            return code if 0 <= code <= 0x7FFFFFFF else -1  # a C int, whatever a hostile peer sends
    return -1


# An inbound connection keeps this many Hosts' label sets; more are looked up per request.
_HOSTS_CACHED = cython.declare(cython.int, 16)


def _grpc_head(fields):
    """A response head's gRPC status: -2 not gRPC, -1 gRPC with the status still to come, else the status."""
    grpc = False
    for name, value in fields:
        if type(name) is not bytes:
            continue  # equal to neither name below
        # Typed, the comparisons are a length check and a memcmp rather than rich comparisons.
        key = cython.cast(bytes, name)
        if key == b"grpc-status":
            try:
                code = int(value)
            except ValueError:
                return 2  # UNKNOWN
            return code if 0 <= code <= 16 else 2  # any other number is not a status gRPC defines
        if key == b"content-type":
            if type(value) is bytes:
                # Typed, startswith is compiled: no method call (~800 instructions a response).
                if cython.cast(bytes, value).startswith(b"application/grpc"):
                    grpc = True
            elif value.startswith(b"application/grpc"):
                grpc = True
    return -1 if grpc else -2


def _is_grpc(fields):
    if fields is None:
        return False
    for name, value in fields:
        if name == b"content-type":
            return value.startswith(b"application/grpc")
    return False


class _TunnelPick:
    """A balancer pick held by an upgraded connection or CONNECT tunnel; settled when the tunnel closes."""

    def __init__(self, target, rtt):
        self.target = target
        self.rtt = rtt

    def __call__(self, _end):
        target, self.target = self.target, None
        if target is not None:
            target.service.settle(target, self.rtt, SETTLE_OK)


class Exchange:
    """One request, from the client's head to the last byte of the answer."""

    def __init__(self, ctx, down, meta, down_id=0):
        self.ctx = ctx
        self.down = down
        self.meta = meta
        self.down_id = down_id
        self.authz = meta.authz
        self.up_queue = []
        self.down_queue = []
        self.tap_base = None  # per connection, like the route cache: a tap's encoding of its addresses
        self.done = False  # _clear resets everything of an exchange that never finished
        self._clear()

    def _clear(self):
        """A fresh exchange for the connection's next request (HTTP/1 reuses one per connection)."""
        if not self.done:
            # Never finished (a new exchange, or one rejected or started over without an end): what
            # finish() lets go of is reset here; a finished one holds none of it (one store fewer each).
            self.grpc_count = 0
            self.up = None
            self.rp = None
            self.replay = None
            self.timer = None
            self.clock = None
            self.held_fields = None
            self.span = None
            self.tap = None
            self.mirror = None
            self.backend = None
            self.route_open = None
            self.backend_open = None
        self.head = None
        self.hstats = None
        self.headers = None
        self.req_length = -1
        self.up_id = 0
        self.target = None
        self.resp_edit = None
        self.req_ended = False
        self.up_ended = False
        self.req_trailers = None
        self.body_sent = False
        self.replay_size = 0
        self.resp_started = False
        self.down_end_pending = False
        self.down_trailers = None
        self.done = False
        self.down_gone = False
        self.counted = False
        self.settled = True
        self.t0 = 0.0
        self.t_sent = 0.0
        self.repicks = 0
        self.resends = 0
        self.attempts = 0
        self.grpc_pending = False
        self.route_ms = 0.0
        self.route_status = 0
        self.held_status = 0
        self.held_length = -1
        self.held_end = False
        self.status = 0
        self.resp_length = -1
        self.restore_h1 = False
        self.up_h1 = None
        self.up_chunked = False
        self.up_keeps = True
        self.up_fields = None
        self.upgrade = False
        self.tap_asked = False
        self.retried = False
        if self.up_queue:
            self.up_queue = []
        if self.down_queue:
            self.down_queue = []

    # ------------------------------------------------------------ the client's side

    def start(self, head, headers, length, ended):
        """A request arrived: ``head`` has the router's fields (method, target, host,
        dst_override, version, upgrade); ``headers`` the HTTP/2 fields (None for
        HTTP/1); ``length`` the body length if declared (-1 otherwise); ``ended``:
        no body follows. Errors are answered through the down end."""
        ctx = self.ctx
        if self.done or self.head is not None:
            self._clear()
        self.head = head
        self.headers = headers
        self.req_length = length
        self.req_ended = ended
        self.upgrade = head.upgrade is not None or head.method == b"CONNECT"
        self.t0 = now()
        if ctx.tracer is not None and head.trace_context:
            self.span = ctx.tracer.begin(self)  # None unless the context is valid and sampled
        # Judged before it is counted: inbound labels carry the decision's route and authorization.
        authz = self.authz
        denied = None
        if authz is not None:
            denied = authz.check_h1(head) if headers is None else authz.check_h2(head, headers)
        # Inbound requests are labelled by their connection, Host and authorization;
        # outbound ones by their target, when routed.
        if ctx.labels is None:
            self.hstats = ctx.stats
            ctx.stats.requests += 1
        elif ctx.inbound:
            self.hstats = self._inbound_stats(head.host)
            self.hstats.requests += 1
        self.counted = True
        ctx.in_flight += 1
        if ctx.max_in_flight and ctx.in_flight > ctx.max_in_flight:
            self.fail(errors.LoadShed())
            return
        if denied is not None:
            self.fail(denied)
            return
        host = head.host
        origin_form: cython.bint = len(head.target) > 0 and head.target[0] == 47
        down = self.down
        target = None
        if (host is not None and host == down.route_host and down.route_gen == ctx.policy_gen
                and head.dst_override is None and origin_form and head.method != b"CONNECT"):
            # Same Host as this connection's previous request, origin-form, no
            # override: the router would answer the same passthrough target, or
            # ask the same balanced service for an endpoint (a C call here; the
            # router's is a Python call, a Host lookup and its own-address check).
            service = down.route_service
            if service is None:
                target = down.route_target
            elif not service.closed:
                target = service.route(self, None)
        if target is None:
            try:
                target = ctx.router.route(head, self.meta, self)
            except errors.ProxyError as err:
                self.fail(err)
                return
            down.route_host = None
            if (target is not QUEUED and self.rp is None
                    and host is not None and head.dst_override is None and origin_form):
                # Passthrough targets and balanced services without a route
                # policy (policy ones are routed per request); a balanced one
                # still picks its endpoint per request.
                down.route_host = host
                down.route_service = target.service
                down.route_target = target if target.service is None else None
                down.route_gen = ctx.policy_gen
        if self.rp is not None:
            self._policy_begin()
            if self.done:
                return
        if target is not QUEUED:
            self.routed(target)

    def reject(self, err):
        """A request refused before it could be parsed or started: counted, logged and answered like any other."""
        if self.done or self.head is not None:
            self._clear()
        self.t0 = now()
        self._stats()
        self.req_ended = True
        self.fail(err)

    def request_data(self, data, credit, end):
        """Request body bytes (possibly empty) from the client, with their credit; ``end``: the body is complete."""
        if self.done:
            self.down.release(self, credit)
            return
        if self.mirror is not None:
            self.mirror.data(data, end)
        if self.clock is not None:
            self.clock.touch()
        if data and self.replay is not None:
            self.replay_size += len(data)
            if self.replay_size > self.rp.replay_limit:
                self.replay = None  # too big to keep: this request is not retried
            else:
                self.replay.append(data)
        if end:
            self.req_ended = True
        if data:
            self.up_queue.append((data, credit))
        elif credit:
            self.down.release(self, credit)
        self.pump_up()

    def request_trailers(self, fields):
        """Trailers end the request body."""
        self.req_ended = True
        if self.done:
            return
        if self.mirror is not None:
            self.mirror.trailers(fields)
        self.req_trailers = fields
        self.pump_up()

    def client_gone(self):
        """The client reset the stream or closed the connection: stop everything, answer nobody."""
        self.req_ended = True
        self.down_gone = True
        if self.done:
            return
        if self.grpc_pending and self.held_fields is None:  # the head went out; its status never will
            self.grpc_pending = False
            self._route_end(self.route_status, -1, self.route_ms, 0)
        if self.route_open is not None or self.backend_open is not None:
            self.end_error = CLIENT_GONE  # after the head: counted at the end (finish), as Linkerd's cancelled stream
        self.rp = None  # before the head: nothing to count, the client went away first
        self.replay = None
        self.settle(SETTLE_CANCELLED)
        self._drop_up()
        self.finish()

    def release_response(self, credit):
        """The client took response bytes worth ``credit``: the upstream may send more."""
        up: UpEnd = self.up
        if up is not None and credit:
            up.release(self, credit)

    # ------------------------------------------------------------ routing and attempts

    def routed(self, target):
        """The request's target (now, or later from a balancer's queue)."""
        if self.done:
            if target.service is not None:
                target.service.settle(target, 0.0, SETTLE_CANCELLED)
            return
        self.target = target
        ctx = self.ctx
        if self.hstats is None or self.retried:
            # A retry is its endpoint's request (and the retried answer was its response), as
            # Linkerd's endpoint-level metrics count them; a repick after a connection failure
            # is the same request still looking for an endpoint.
            self.retried = False
            stats: HttpStats = target.stats  # the endpoint's label set, found once
            if stats is None:
                stats = ctx.stats if ctx.labels is None else ctx.labels.outbound_http(target)
            self.hstats = stats
            stats.requests += 1
        self.settled = target.service is None
        if not self.tap_asked:
            self._tap_observe()
        try:
            self.ctx.upstreams.open(self, target)
        except errors.ProxyError as err:
            self.fail(err)

    def connecting(self, up):
        """An up end is opening a connection for this attempt: it can be cancelled meanwhile."""
        if self.done:
            up.cancel(self)
            return
        self.up = up

    def attached(self, up, up_id, request_sent):
        """An up end took the request (its head is on its way; ``request_sent``: all of it, no body
        follows): send the body it can take."""
        if self.done:
            up.cancel(self)
            return
        self.up = up
        self.up_id = up_id
        self.t_sent = now()
        self.up_ended = request_sent
        timeout: cython.double = attempt_time_limit(self.ctx.response_timeout, self.rp)
        if timeout > 0 and self.timer is None:
            self.timer = self.ctx.loop.call_later(timeout, self._attempt_timed_out)
        if not request_sent:
            self.pump_up()

    def pump_up(self):
        """Hand queued request bytes to the upstream as it takes them; end the request when all went."""
        up: UpEnd = self.up
        if up is None or self.up_ended:
            return
        queue = self.up_queue
        n: cython.Py_ssize_t
        size: cython.Py_ssize_t
        credit: cython.Py_ssize_t
        while queue:
            data, credit = queue[0]
            size = len(data)
            n = up.send(self, data)
            if n > 0:
                self.body_sent = True
            if self.up is not up:
                return  # the attempt failed while sending
            if n < size:
                if n > 0:
                    rel: cython.Py_ssize_t = n if n < credit else credit
                    queue[0] = (data[n:], credit - rel)
                    self.down.release(self, rel)
                return
            del queue[0]
            if credit:
                self.down.release(self, credit)
        if self.req_ended:
            self.up_ended = True
            up.end_request(self, self.req_trailers)

    def upstream_failed(self, err):
        """The attempt's connection could not be opened (nothing reached the upstream)."""
        self._release_down_queue()
        self.up = None
        if self.done:
            return
        self._cancel_timer()
        target = self.target
        # Only the upstream's own failures count against it (failure accrual):
        # this proxy refusing (no identity yet, its own address, its limits) does not.
        self.settle(SETTLE_FAILED if isinstance(err, errors.UpstreamError) else SETTLE_CANCELLED)
        if (target is not None and target.service is not None and isinstance(err, _CONNECT_ERRORS)
                and self.repicks < MAX_REPICKS and not self.resp_started):
            # The request never reached that endpoint: let the balancer pick again.
            self.repicks += 1
            backend: BackendStats = self.backend
            self._again(False)
            if backend is not None and not self.done and self.backend is not backend:
                # A failover group sent the attempt to another backend: this one's ended in the error.
                backend.end(0.0, 0, -1, error_code(err))
            return
        self.fail(err)

    def upstream_reset(self, err, retry_safe):
        """The attempt ended before its response did; ``retry_safe``: the upstream provably did not process it."""
        if self.down_end_pending and not self.done:
            self._request_refused()
            return
        self._release_down_queue()  # through the up end that sent it, before it is forgotten
        self.up = None
        if self.done:
            return
        self._cancel_timer()
        # Body bytes already sent are gone unless kept: the rest alone would be a truncated request.
        if (retry_safe and not self.resp_started and self.resends < MAX_RESENDS
                and (self.replay is not None or not self.body_sent)):
            self.resends += 1
            self.settle(SETTLE_CANCELLED)
            # The refused attempt ended on its backend (REFUSED, GO_AWAY), as Linkerd's backend families count
            # it; the resend is that backend's next request unless a failover pick counted it on another.
            backend: BackendStats = self.backend
            if backend is not None:
                backend.end((now() - self.t_sent) * 1000.0 if self.t_sent > 0.0 else 0.0, 0, -1, error_code(err))
            self._again(False)
            if backend is not None and self.backend is backend and not self.done:
                backend.requests += 1
            return
        if not self.resp_started:
            self.fail(err)
            return
        self.settle(SETTLE_FAILED)
        self._cut(err)

    def _request_refused(self):
        """The whole response came, then the upstream reset: it wants no more of the request.

        A server that answers before the request ended may say so with
        RST_STREAM(NO_ERROR) (RFC 9113 8.1), and an upstream may go away after
        a complete answer: the response still reaches the client whole. The
        credit of what waits for the client goes back through the up end now,
        before it is forgotten; the bytes stay queued (bounded by the stream
        window they arrived under). The request body the upstream will not
        take is dropped; the client's end stops the rest when the exchange ends.
        """
        queue = self.down_queue
        i: cython.Py_ssize_t
        for i in range(len(queue)):
            data, credit = queue[i]
            if credit:
                queue[i] = (data, 0)
                self.release_response(credit)
        self._release_up_queue()
        self.up_ended = True
        self.up = None
        self._cancel_timer()

    def _again(self, resplit):
        """Send the request once more: a new pick (``resplit``: through the route's traffic split first)."""
        ctx = self.ctx
        failed = self.target
        self.target = None  # until the new pick (a route timeout meanwhile must unqueue it)
        self.t_sent = 0.0  # the next pick's round trip starts when it attaches
        self.held_fields = None  # the last attempt's held head, if any, was that attempt's
        self.grpc_pending = False
        self.up_ended = False
        if self.replay is not None:
            # Rewind to the kept body; what waited for the old attempt goes back to the client's credit.
            self._release_up_queue()
            self.up_queue = [(data, 0) for data in self.replay]
            self.body_sent = False
        try:
            if failed is None:
                target = ctx.router.route(self.head, self.meta, self)
            elif resplit or failed.service is not None:
                target = ctx.router.reroute(self.head, self.meta, failed, self, resplit)
            else:
                target = failed  # not balanced: the only choice
        except errors.ProxyError as err:
            self.fail(err)
            return
        if target is not QUEUED:
            self.routed(target)

    def _attempt_timed_out(self):
        self.timer = None
        if self.done or self.resp_started:
            return
        self.settle(SETTLE_FAILED)
        self._drop_up()
        if self.rp is not None and self.retry_wanted(0, -1):
            self._count_attempt(0, -1)
            self.retry()
            return
        self.fail(attempt_timeout_error(self.rp))

    def _cancel_timer(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # ------------------------------------------------------------ the upstream's answer

    def flush_down(self):
        """The up end finished processing a read: whatever the down end held back for it goes out now."""
        if not self.done:
            self.down.flush_response(self)

    def response_informational(self, status, h1head, fields):
        if not self.done:
            self.down.send_informational(self, status, h1head, fields)

    def response_head(self, status, h1head, fields, length, end):
        """The upstream's final response head (an HTTP/1 head or HTTP/2 fields)."""
        if self.done:
            return
        self._cancel_timer()
        if self.clock is not None:
            self.clock.touch()
        if self.rp is not None and self._policy_response(status, fields, length, end):
            return  # retried, or held until its trailers or first DATA
        self._forward_head(status, h1head, fields, length, end)

    def _forward_head(self, status, h1head, fields, length, end):
        self.settle(SETTLE_FAILED if status >= 500 else SETTLE_OK)
        stats: HttpStats = self._stats()
        stats.observe((now() - self.t0) * 1000.0)
        grpc: cython.int = -2 if fields is None else _grpc_head(fields)
        if end or grpc >= 0:
            stats.count(status, grpc if grpc >= 0 else -1, 0, status >= 500 or grpc > 0)
        elif grpc == -1:
            self.grpc_count = status  # the gRPC status comes in the trailers: counted then
        else:
            # Classified at the end of its stream, as Linkerd does: one cut short after its head is a failure.
            self.grpc_count = -status
        self.resp_started = True
        self.status = status
        self.resp_length = length
        if self.tap is not None:
            self.tap.response_init(status, h1head, fields)
        self.down.send_head(self, status, h1head, fields, length, end)
        if end and not self.done:
            self.down_end_pending = True
            self.pump_down()

    def upgraded(self, status, h1head, transport, rest):
        """101 Switching Protocols, or a CONNECT tunnel opened: the connection leaves HTTP."""
        if self.done:
            transport.abort()
            return
        self._cancel_timer()
        hold = None
        if not self.settled:
            # Balanced like an opaque connection: the pick's load is held for
            # the tunnel's life, so tunnels opened together spread over the
            # endpoints; the balancer learns the time to the answer now.
            self.settled = True
            hold = _TunnelPick(self.target, self._pick_rtt())
        self._stats().record_response(status, (now() - self.t0) * 1000.0, False)
        if self.rp is not None:
            self._route_end(status, -1, (now() - self.t0) * 1000.0, 0)
        self.resp_started = True
        self.status = status
        if self.tap is not None:  # what the tunnel carries is not HTTP: the tapped exchange ends here
            tap: TapEvents = self.tap
            self.tap = None
            tap.response_init(status, h1head, None)
            tap.end(None)
        self.up = None  # the transport now belongs to the tunnel
        client_end = self.down.tunnel(self, status, h1head, transport, rest)
        if hold is not None:
            if client_end is None:
                hold(None)  # no tunnel came of it
            else:
                client_end.on_close = hold
        self.finish()

    def response_data(self, data, credit, end):
        """Response body bytes (possibly empty) with their credit; ``end``: the body is complete."""
        if self.done:
            self.release_response(credit)
            return
        if self.clock is not None:
            self.clock.touch()
        if self.held_fields is not None:  # a message: the status will not come before it, let the head go
            self._release_head()
        if end:
            self.down_end_pending = True
        if data:
            if self.tap is not None:
                self.tap.add_bytes(len(data))
            backend: BackendStats = self.backend if self.backend is not None else self.backend_open
            if backend is not None:
                backend.frame(len(data))
            if not self.down_queue:
                # The common case: the client takes it all at once.
                up: UpEnd = self.up
                n: cython.Py_ssize_t = self.down.send(self, data)
                if self.done:
                    # The send ended the exchange (the client left): this chunk was
                    # never queued, so its credit goes back here.
                    if up is not None and credit:
                        up.release(self, credit)
                    return
                if n == len(data):
                    self.release_response(credit)
                    if self.down_end_pending:
                        self.pump_down()
                    return
                if n > 0:
                    rel: cython.Py_ssize_t = n if n < credit else credit
                    data = data[n:]
                    credit -= rel
                    self.release_response(rel)
            self.down_queue.append((data, credit))
        elif credit:
            self.release_response(credit)
        self.pump_down()

    def response_trailers(self, fields):
        """Trailers end the response."""
        if self.done:
            return
        if self.held_fields is not None:
            # Head then trailers, no message: the gRPC status can still be retried.
            grpc = grpc_status_of(fields)
            if self.retry_wanted(self.held_status, grpc):
                self._count_attempt(self.held_status, grpc)
                self._drop_up()
                self.retry()
                return
            self._release_head()
        if self.grpc_pending:
            self.grpc_pending = False
            self._route_end(self.route_status, grpc_status_of(fields), self.route_ms, 0)
        if self.grpc_count:
            self._count_grpc(grpc_status_of(fields), 0)
        self.down_trailers = fields
        self.down_end_pending = True
        self.pump_down()

    def pump_down(self):
        """Hand queued response bytes to the client as it takes them; end the response when all went."""
        queue = self.down_queue
        down: DownEnd = self.down
        n: cython.Py_ssize_t
        size: cython.Py_ssize_t
        credit: cython.Py_ssize_t
        while queue:
            data, credit = queue[0]
            size = len(data)
            n = down.send(self, data)
            if self.done:
                return
            if n < size:
                if n > 0:
                    rel: cython.Py_ssize_t = n if n < credit else credit
                    queue[0] = (data[n:], credit - rel)
                    self.release_response(rel)
                return
            del queue[0]
            self.release_response(credit)
        if self.down_end_pending and not self.done:
            self.down_end_pending = False
            trailers = self.down_trailers
            self.down_trailers = None
            if self.grpc_pending:  # ended without trailers: the HTTP status decides
                self.grpc_pending = False
                self._route_end(self.route_status, -1, self.route_ms, 0)
            if self.grpc_count:
                self._count_grpc(-1, 0)
            if self.tap is not None:
                tap: TapEvents = self.tap
                self.tap = None
                tap.end(trailers)
            down.end_response(self, trailers)
            self.finish()

    # ------------------------------------------------------------ reliability policy (only when the router set ``rp``)

    def _policy_begin(self):
        """The router matched a route: arm its time limits, and keep the body if the request may be retried."""
        rp = self.rp
        self.resp_edit = rp.response_headers
        self.replay = None
        self.replay_size = 0
        if rp.limit > 0 and not self.upgrade:
            # A declared length over the buffer is known too big before the first byte.
            if self.req_ended or self.req_length < 0 or self.req_length <= rp.replay_limit:
                self.replay = []
        if rp.timeout > 0 or rp.idle_timeout > 0:
            self.clock = RouteClock(self.ctx.loop, rp.timeout, rp.idle_timeout, self._route_deadline)
        if rp.mirror is not None:  # copies of the request, fire-and-forget (outbound/mirror.py)
            self.mirror = rp.mirror.begin(self)

    def _policy_response(self, status, fields, length, end):
        """A response head under a route policy: retry it or hold it (True), or count it and let it through."""
        grpc = grpc_status_of(fields) if fields is not None else -1
        if self.retry_wanted(status, grpc):
            self._count_attempt(status, grpc)
            self._drop_up()
            self.retry()
            return True
        elapsed = (now() - self.t0) * 1000.0
        if grpc < 0 and not end and _is_grpc(fields):
            # The gRPC status comes in the trailers: classify then.
            self.grpc_pending = True
            self.route_ms = elapsed
            self.route_status = status
            rp = self.rp
            if rp.grpc_retry and self.replay is not None and self.req_ended and self.attempts < rp.limit:
                # Peek, as Linkerd does: most failed calls send no message, so
                # the trailers follow the head at once and may still be retried.
                # The head goes out with the first DATA, or after the trailers.
                self.held_status = status
                self.held_fields = fields
                self.held_length = length
                self.held_end = end
                return True
        else:
            self._route_end(status, grpc, elapsed, 0)
        return False

    def _release_head(self):
        fields = self.held_fields
        self.held_fields = None
        self._forward_head(self.held_status, None, fields, self.held_length, self.held_end)

    def retry_wanted(self, status, grpc):
        """Whether the failed attempt (``status`` with ``grpc`` or -1; status 0: timed out) is sent
        again; a True answer has taken the budget."""
        rp = self.rp
        if rp is None or self.replay is None or not self.req_ended or self.done or self.attempts >= rp.limit:
            return False
        if status != 0 and not rp.retry_on(status, None if grpc < 0 else grpc):
            return False
        return rp.withdraw()

    def retry(self):
        """Send the request again through the route's split; the failed attempt's answer never reaches the client."""
        self.retried = True
        self.settle(SETTLE_FAILED)
        self.attempts += 1
        self.rp.stats.retries += 1
        self._cancel_timer()
        # The attempt ended on its backend (_count_attempt); a split picks the next one anew, else it
        # goes to the same backend, which counts it again.
        backend: BackendStats = self.backend
        self.backend = None
        self._again(True)
        if backend is not None and self.backend is None and not self.done:
            self.backend = backend
            backend.requests += 1

    def _route_deadline(self, err):
        """A route's time limit hit: an error response before the response head, a cut after."""
        if self.done:
            return
        if not self.resp_started:
            if self.target is None and self.up is None:
                self.ctx.router.unqueue(self)  # waiting for an endpoint: leave the queue
            self.fail(err)
            return
        self.settle(SETTLE_CANCELLED)
        self._cut(err)  # a gRPC call still waiting for its trailers counts as the timeout's failure

    def _route_end(self, status, grpc, elapsed, error):
        """The request's outcome is known (``error``: a ROUTE_ERRORS index, 0: the app answered): classify it
        once on its route."""
        rp = self.rp
        self.rp = None
        self.replay = None
        failed = rp.failed(status, None if grpc < 0 else grpc)
        rp.stats.record(elapsed, failed)
        # Linkerd counts the statuses, and ends the durations, when the response's stream ends: finish() does
        # (the route's duration from the request head, the backend's from the attempt's dispatch), with this
        # outcome unless the stream fails first (_cut, client_gone); the backend counts body frames until then.
        # The proxy's own answer has no status in Linkerd's labels (a redirect, error 0, keeps its own).
        self.end_status = 0 if error else status
        self.end_grpc = grpc
        self.end_error = error
        self.route_open = rp.stats
        backend: BackendStats = self.backend
        if backend is not None:
            self.backend = None
            self.backend_open = backend
        if self.attempts:
            rp.retried(failed, status, grpc, error, self.attempts)  # the retry counters: rare, in Python

    # ------------------------------------------------------------ metrics

    def _stats(self):
        """The request's label set; the direction's own when none was found (counting the request there)."""
        stats = self.hstats
        if stats is None:
            stats = self.hstats = self.ctx.stats
            stats.requests += 1
        return stats

    def _inbound_stats(self, host):
        """The label set of this inbound connection's requests to ``host`` under the authorization's
        decision, cached on the connection by Host (a request judged otherwise finds it anew)."""
        meta = self.meta
        decision = self.authz.decision if self.authz is not None else None
        cache = meta.stats_cache
        found = cache.get(host)
        if found is not None and found[0] is decision:
            return found[1]
        stats = self.ctx.labels.inbound_http(meta, host, decision)
        if found is not None or len(cache) < _HOSTS_CACHED:
            cache[host] = (decision, stats)
        return stats

    def _count_attempt(self, status, grpc):
        """An attempt that is retried: the client never sees its answer, but its endpoint gave it (a failure);
        ``status`` 0: it timed out, counted as the timeout's 504."""
        stats: HttpStats = self._stats()
        t: cython.double = now()
        stats.observe((t - self.t0) * 1000.0)
        if status == 0:
            err = attempt_timeout_error(self.rp)
            stats.count(err.status, -1, error_code(err), True)
            if self.backend is not None:
                self.backend.end((t - self.t_sent) * 1000.0 if self.t_sent > 0.0 else 0.0, 0, -1, error_code(err))
        else:
            stats.count(status, grpc, 0, True)
            if self.backend is not None:
                self.backend.end((t - self.t_sent) * 1000.0 if self.t_sent > 0.0 else 0.0, status, grpc, 0)

    def _durations_end(self):
        """The response ended (or was cut, or its client left): the route's and backend's durations end now."""
        t: cython.double = now()
        route: RouteStats = self.route_open
        if route is not None:
            self.route_open = None
            route.end((t - self.t0) * 1000.0, self.end_status, self.end_grpc, self.end_error)
        backend: BackendStats = self.backend_open
        if backend is not None:
            self.backend_open = None
            backend.end((t - self.t_sent) * 1000.0 if self.t_sent > 0.0 else 0.0,
                        self.end_status, self.end_grpc, self.end_error)

    def _count_grpc(self, grpc, error):
        """A response counted at its end ended: a gRPC one with its status (-1: none came; _CUT: it was cut,
        both failures), another (``grpc_count`` its negated HTTP status) by its status unless it was cut;
        ``error``: the ERROR_LABELS index of what cut it (0: none)."""
        status: cython.int = self.grpc_count
        self.grpc_count = 0
        if status < 0:
            self._stats().count(-status, -1, error, grpc == _CUT or status <= -500)
        else:
            self._stats().count(status, -1 if grpc == _CUT else grpc, error, status >= 500 or grpc != 0)

    def _tap_observe(self):
        """Once per request, when it has its destination (or is refused before one): which taps want it."""
        self.tap_asked = True
        hub: TapHook = self.ctx.tap
        if hub is not None:
            self.tap = hub.observe(self)

    # ------------------------------------------------------------ endings

    def settle(self, outcome):
        """Tell the balancer how its pick ended, exactly once per pick."""
        if self.settled:
            return
        self.settled = True
        target = self.target
        service: Picker = target.service  # a C call through the balancer's vtable
        service.settle(target, self._pick_rtt(), outcome)

    def _pick_rtt(self):
        """What the balancer learns of its pick: from the request sent to now (0 if it never went)."""
        return now() - self.t_sent if self.t_sent > 0.0 else 0.0

    def fail(self, err):
        """Answer with a synthesized error response, or cut the response if it already started."""
        if self.done:
            return
        self.held_fields = None  # never forwarded: the error response replaces it
        self.grpc_pending = False
        if self.rp is not None:
            self._route_end(err.status, -1, (now() - self.t0) * 1000.0, error_code(err))
        self.settle(SETTLE_FAILED if isinstance(err, errors.UpstreamError) else SETTLE_CANCELLED)
        self._drop_up()
        if self.resp_started:
            self._cut(err)
            return
        ctx = self.ctx
        stats: HttpStats = self._stats()
        stats.observe((now() - self.t0) * 1000.0)
        stats.count(err.status, -1, error_code(err), err.failure)
        if ctx.log_errors:
            log.error_line(ctx.direction, err, self.head, self.meta)
        self.resp_started = True
        self.status = err.status
        self._release_down_queue()
        if not self.tap_asked and self.head is not None:
            self._tap_observe()  # refused before it had a destination: taps see it all the same
        if self.tap is not None:
            tap: TapEvents = self.tap
            self.tap = None
            tap.response_init(err.status, None, None)
            tap.end(None)
        self.down.send_error(self, err)
        self.finish()

    def _cut(self, err):
        if self.grpc_pending:  # its trailers will never come: a failure on its route
            self.grpc_pending = False
            self._route_end(err.status, -1, self.route_ms, error_code(err))
        if self.route_open is not None or self.backend_open is not None:
            # Counted when finish() ends the stream, as Linkerd labels a stream that failed after its head:
            # the head's status, the error by how it ended.
            self.end_status = self.status
            self.end_error = stream_error_code(err)
        if self.grpc_count:  # a failure in the legacy response_total, its error label by what cut it
            self._count_grpc(_CUT, cut_error_code(err))
        if self.tap is not None:
            tap: TapEvents = self.tap
            self.tap = None
            tap.reset(err.reset_code)
        self._drop_up()
        self._release_down_queue()
        if not self.down_gone:
            if self.ctx.log_errors:
                log.cut_line(self.ctx.direction, err, self.head, self.meta)
            self.down.cut(self, err)  # a mirrored copy's end records the failure
        self.finish()

    def _drop_up(self):
        """Abandon the current attempt: response bytes it sent that the client will not get give
        their credit back first, then the up end stops."""
        self._release_down_queue()
        up: UpEnd = self.up
        if up is not None:
            self.up = None
            up.cancel(self)
        self._cancel_timer()

    def _release_up_queue(self):
        queue = self.up_queue
        if queue:
            self.up_queue = []
            # Even to a client that left: its end keeps the books (an HTTP/2
            # connection's window outlives the stream).
            for _data, credit in queue:
                if credit:
                    self.down.release(self, credit)

    def _release_down_queue(self):
        queue = self.down_queue
        if queue:
            self.down_queue = []
            for _data, credit in queue:
                self.release_response(credit)

    def finish(self):
        """The exchange is over: give back every credit still held, then let the down end go on."""
        if self.done:
            return
        self.done = True
        self._cancel_timer()
        if self.clock is not None:
            self.clock.stop()
            self.clock = None
        if self.rp is not None:  # the client went away before an outcome: nothing to count
            self.rp = None
        if self.route_open is not None or self.backend_open is not None:
            self._durations_end()
        self.backend = None
        self.replay = None
        self.held_fields = None
        if self.mirror is not None:  # a request body the copies will not get whole: they stop
            tee, self.mirror = self.mirror, None
            tee.primary_done()
        if self.grpc_count:  # the client left before the response's end: a failure
            self._count_grpc(_CUT, 0)
        if self.counted:
            self.counted = False
            self.ctx.in_flight -= 1
        if self.span is not None:
            span, self.span = self.span, None
            span.end(self)
        if self.tap is not None:  # ended any other way: the client went away
            tap: TapEvents = self.tap
            self.tap = None
            tap.reset(_CANCEL)
        # Credit first (it goes back through the up end), then the up end:
        # it closes or resets whatever of the attempt is unfinished.
        self._release_down_queue()
        self._release_up_queue()
        up: UpEnd = self.up
        if up is not None:
            self.up = None
            up.cancel(self)
        hook = self.ctx.access_log
        if hook is not None:  # the access log; before exchange_done, which may start the next request
            hook(self)
        self.down.exchange_done(self)


# Finished HTTP/1 exchanges kept for the next request of any connection of the context: an idle keep-alive
# connection holds none (about 0.8 KiB each, with its lists), and a request does not pay for a new one
# (~1,100 instructions). Only HTTP/1 requests finish and start one at a time per connection, and more spares
# than that churn at once would only hold memory: a small fixed number suffices.
SPARE_EXCHANGES = cython.declare(cython.Py_ssize_t, 32)

# A spare's down end: it must not keep its last connection alive, and any call on it is a bug, raised (a
# compiled call through None would crash).
_NO_DOWN = DownEnd()


def take_exchange(ctx, down, meta):
    """An exchange for a request of ``down`` (an HTTP/1 connection): a spare of the context, or a new one."""
    spares = ctx.spare_exchanges
    if not spares:
        return Exchange(ctx, down, meta, 0)
    ex: Exchange = spares.pop()
    ex.down = down
    ex.meta = meta
    ex.authz = meta.authz
    return ex


def unbind_exchange(ex):
    """``ex`` finished and holds nothing of its last connection (the tap's encoding of its addresses is per
    connection too): it no longer points back at the connection, which reference counting then frees."""
    ex.down = _NO_DOWN
    ex.meta = None
    ex.authz = None
    ex.tap_base = None


def spare_exchange(ex):
    """Keep finished ``ex`` for another request when there is room (True: the caller lets go of it).

    The caller's is not always the last reference up the stack that finished it (a compiled ``self.ex.fail()``
    borrows the connection's): the list holds it from here on, so letting go never frees it mid-call."""
    spares = ex.ctx.spare_exchanges
    if len(spares) >= SPARE_EXCHANGES:
        return False
    unbind_exchange(ex)
    spares.append(ex)
    return True

"""Per-request HTTP/1.1 proxying: a client connection, pooled upstream connections, and the exchange between them.

``ServerConn`` is the protocol of a connection accepted from a client (we are
its server); ``ClientConn`` is a connection to an upstream (we are its
client), kept in a ``Pool`` per target between requests. One request is in
flight per client connection at a time: pipelined requests wait in the read
buffer (bounded) and are answered in order. Heads are forwarded as received,
byte for byte, unless a hop-by-hop field must go or the target form must
change; bodies stream through with their framing checked as they pass
(a chunked body is validated chunk by chunk, so an invalid size stops the
request before any of the bad chunk is forwarded).

Everything here runs in protocol callbacks: no per-request task or coroutine.
Direction-specific decisions (where a request goes, how an error is answered
and logged, how a connection is opened) come from the ``HttpContext``.
"""

from __future__ import annotations

import cython
from time import perf_counter

from proxy import errors
from proxy.core.responses import log_cut
from proxy.protocol.http1 import (
    NEED_MORE,
    ChunkedScanner,
    ParseError,
    parse_request_head,
    parse_response_head,
    rewrite_head,
)
from proxy.http.tunnel import splice

# How a message body ends.
BODY_NONE = cython.declare(cython.int, 0)
BODY_LENGTH = cython.declare(cython.int, 1)
BODY_CHUNKED = cython.declare(cython.int, 2)
BODY_CLOSE = cython.declare(cython.int, 3)  # responses only: read until the upstream closes

# Why reading from the client is paused (a bit set: reading resumes when none is left).
PAUSE_UPSTREAM_FULL = cython.declare(cython.int, 1)  # upstream write buffer above high water
PAUSE_PIPELINE = cython.declare(cython.int, 2)  # read-ahead full while a request is in flight
PAUSE_CONNECTING = cython.declare(cython.int, 4)  # no upstream connection yet

# ClientConn states.
C_CONNECTING = cython.declare(cython.int, 0)
C_IDLE = cython.declare(cython.int, 1)
C_WAIT_HEAD = cython.declare(cython.int, 2)
C_BODY = cython.declare(cython.int, 3)
C_DONE = cython.declare(cython.int, 4)  # closed or handed to a tunnel

# Methods that may be resent when a reused connection died before answering
# (RFC 9110 9.2.2 idempotent methods), only when the request had no body.
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))

# How a balancer pick ended (passed to ``target.service.settle``). Plain
# Python ints: the outbound side imports them.
SETTLE_OK = 0  # a response head arrived that is not a failure
SETTLE_FAILED = 1  # 5xx, connect error or timeout: counts for failure accrual
SETTLE_CANCELLED = 2  # the client went away: nothing learned

# A connect error never reached the server: the request may go to another
# endpoint this many times.
MAX_REPICKS = cython.declare(cython.int, 2)


def attempt_time_limit(response_timeout, rp):
    """How long one attempt may wait for its response head (0: no limit): the
    proxy's response timeout or the route's backend timeout, whichever is shorter.
    The HTTP/1 relay, the HTTP/2 relay and the meshed hop all arm this one."""
    if rp is not None and rp.attempt_timeout > 0 and (response_timeout <= 0 or rp.attempt_timeout < response_timeout):
        return rp.attempt_timeout
    return response_timeout


def attempt_timeout_error(rp):
    """The 504 for an attempt that ran out of time, naming the route's backend timeout when it set one."""
    if rp is not None and rp.attempt_timeout > 0:
        return errors.ResponseTimeout(f"response timed out (backend timeout {rp.attempt_timeout:g}s)")
    return errors.ResponseTimeout()


class RouteClock:
    """A route's time limits for one exchange, shared by the HTTP/1 and HTTP/2 relays.

    ``timeout`` bounds the whole exchange, ``idle`` the time without I/O
    (``touch``); 0 disables either. ``expired(err)`` is called when one is
    hit; ``stop`` disarms both. The idle timer is not moved on every byte: it
    fires when the limit would be due and re-arms itself if I/O came since.
    """

    def __init__(self, loop, timeout, idle, expired):
        self.loop = loop
        self.expired = expired
        self.timeout = timeout
        self.idle = idle
        self.last_io = loop.time()
        self.timer = loop.call_later(timeout, self._timed_out) if timeout > 0 else None
        self.idle_timer = loop.call_at(self.last_io + idle, self._idle_check) if idle > 0 else None

    def touch(self):
        if self.idle > 0.0:
            self.last_io = self.loop.time()

    def stop(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.idle = 0.0

    def _timed_out(self):
        self.timer = None
        self.expired(errors.RouteTimeout(f"request timed out (route timeout {self.timeout:g}s)"))

    def _idle_check(self):
        self.idle_timer = None
        if self.idle <= 0.0:
            return
        due = self.last_io + self.idle
        if self.loop.time() < due:
            self.idle_timer = self.loop.call_at(due, self._idle_check)
            return
        self.expired(errors.RouteTimeout(f"request timed out (stream idle for {self.idle:g}s)"))


def settle_pick(target, t_sent, outcome):
    """Give a balancer back its pick of ``target``: the round trip since ``t_sent`` (0: not sent) and how it ended."""
    rtt = perf_counter() - t_sent if t_sent > 0.0 else 0.0
    target.service.settle(target, rtt, outcome)


class _Queued:
    """``route()`` result: no target yet; the router calls ``routed()`` or ``fail()`` later."""

    def __repr__(self):
        return "QUEUED"


QUEUED = _Queued()

_CONNECT_ERRORS = (errors.ConnectRefused, errors.ConnectFailed, errors.ConnectTimeout)

_CONNECTION_CLOSE = [(b"Connection", b"close")]
_CONNECTION_KEEP_ALIVE = [(b"Connection", b"keep-alive")]
_NO_EXTRA = []
_DECHUNK_DROP = (b"transfer-encoding",)
_CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


class HttpContext:
    """Everything a relay needs from its direction: routing, errors, pools, limits, stats."""

    def __init__(self, loop, router, rescue, connector, stats, tcp_src, tcp_dst, limits):
        self.loop = loop
        self.router = router
        self.rescue = rescue
        self.connector = connector
        self.stats = stats
        self.tcp_src = tcp_src
        self.tcp_dst = tcp_dst
        self.max_header_bytes = limits.max_header_bytes
        self.pipeline_buffer = limits.pipeline_buffer_bytes
        self.write_high = limits.write_buffer_high
        self.response_timeout = limits.response_timeout
        self.client_idle_timeout = limits.client_idle_timeout
        self.connections = set()
        self.draining = False
        self.bridge = None  # (ServerConn, head, target) -> h1bridge.H1ToH2, for meshed targets
        self.max_in_flight = 0  # 0: no limit (the outbound side sets one)
        self.policy_gen = 0  # bumped when the policy changes: per-connection target caches are stale
        self.in_flight = 0
        self.pool = Pool(self, limits.pool_max_idle_per_target, limits.pool_idle_timeout)

    def sweep(self):
        """Close idle connections past their timeouts (called about once a second)."""
        now = self.loop.time()
        self.pool.sweep(now)
        limit = self.client_idle_timeout
        if limit > 0:
            for conn in list(self.connections):
                if not conn.in_flight and now - conn.idle_since > limit:
                    conn.close()

    def drain(self):
        """Stop keeping connections alive: idle ones close now, busy ones after their response."""
        self.draining = True
        for conn in list(self.connections):
            conn.begin_drain()
        self.pool.close_all()


class Pool:
    """Idle upstream connections per target, bounded in count and idle time."""

    def __init__(self, ctx, max_idle, idle_timeout):
        self.ctx = ctx
        self.idle = {}
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.idle_count = 0

    def acquire(self, target):
        conns = self.idle.get(target)
        while conns:
            conn: ClientConn = conns.pop()
            self.idle_count -= 1
            if conn.state == C_IDLE and not conn.transport.is_closing():
                conn.reused = True
                return conn
        return None

    def release(self, conn: ClientConn):
        if self.ctx.draining or conn.transport is None or conn.transport.is_closing():
            conn.abort()
            return
        conns = self.idle.get(conn.target)
        if conns is None:
            conns = []
            self.idle[conn.target] = conns
        if len(conns) >= self.max_idle:
            conn.abort()
            return
        conn.state = C_IDLE
        conn.set_reading(True)  # an idle connection must notice the upstream closing it
        conn.idle_since = self.ctx.loop.time()
        conns.append(conn)
        self.idle_count += 1

    def connect(self, target, server: ServerConn):
        conn = ClientConn(self, target)
        conn.server = server
        self.ctx.connector(target, conn)
        return conn

    def sweep(self, now):
        for target in list(self.idle):
            conns = self.idle[target]
            keep = []
            for conn in conns:
                if conn.state == C_IDLE and now - conn.idle_since <= self.idle_timeout:
                    keep.append(conn)
                else:
                    conn.abort()
            self.idle_count -= len(conns) - len(keep)
            if keep:
                self.idle[target] = keep
            else:
                del self.idle[target]

    def close_all(self):
        for conns in self.idle.values():
            for conn in conns:
                conn.abort()
        self.idle.clear()
        self.idle_count = 0

    def forget(self, conn: ClientConn):
        """Drop a connection that closed while idle."""
        conns = self.idle.get(conn.target)
        if conns is not None and conn in conns:
            conns.remove(conn)
            self.idle_count -= 1


def _origin_form(target: bytes) -> bytes:
    """``http://host:port/p?q`` -> ``/p?q`` (RFC 9112 3.2.2: origin servers get origin-form)."""
    start: cython.Py_ssize_t = target.find(b"://")
    if start < 0:
        return target
    slash: cython.Py_ssize_t = target.find(b"/", start + 3)
    query: cython.Py_ssize_t = target.find(b"?", start + 3)
    if slash < 0 or (0 <= query < slash):
        return b"/" + target[query:] if query >= 0 else b"/"
    return target[slash:]


class ServerConn:
    """One client connection speaking HTTP/1 to the proxy."""

    def __init__(self, ctx, meta):
        self.ctx = ctx
        self.meta = meta
        self.transport = None
        self.buf = b""
        self.head = None
        self.target = None
        self.upstream = None
        self.upstream_head = b""
        self.in_flight = False
        self.req_kind = BODY_NONE
        self.req_remaining = 0
        self.req_scanner = None
        self.req_done = True
        self.resp_started = False
        self.close_after = False
        self.client_eof = False
        self.retried = False
        self.tunnel_here = False
        self.paused = 0
        self.reading_paused = False
        self.writing_paused = False
        self.t0 = 0.0
        self.idle_since = 0.0
        self.closed = False
        self.closing = False
        self.settled = True
        self.counted = False
        self.repicks = 0
        self.t_sent = 0.0
        self.bridge = None  # carries the request to a peer proxy over HTTP/2 (h1bridge.H1ToH2)
        self.last_host = None  # Host of the last passthrough request, and where it went
        self.last_target = None
        self.last_gen = 0  # ctx.policy_gen when last_target was chosen
        self.rp = None  # the route policy of the request in flight (set by the router), or None
        self.replay = None  # request body kept for a retry; None: not replayable
        self.replay_size = 0
        self.replay_limit = 0
        self.attempts = 0
        self.clock = None
        self.resp_edit = None
        self.authz = meta.authz
        self.inbound = meta.direction == "inbound"
        self.client_id = meta.client_id.encode("ascii") if meta.client_id else None

    # -- asyncio protocol --------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        ctx = self.ctx
        transport.set_write_buffer_limits(ctx.write_high, ctx.write_high // 4)
        ctx.connections.add(self)
        self.idle_since = ctx.loop.time()

    def data_received(self, data):
        self.ctx.tcp_src.read_bytes += len(data)
        if self.clock is not None:
            self.clock.touch()
        if self.buf:
            self.buf += data
        else:
            self.buf = data
        self.advance()

    def eof_received(self):
        self.client_eof = True
        if not self.in_flight:
            self.close()
            return False
        if not self.req_done:
            # The client stopped sending in the middle of its request body: the
            # upstream would wait for the rest forever.
            self.close_after = True
            self.fail(errors.ClientError("client closed the connection before the request body ended"))
            return False
        return True  # half-closed client: still send it the response

    def connection_lost(self, exc):
        if self.closed:
            return
        self.closed = True
        self.ctx.connections.discard(self)
        self.ctx.tcp_src.closed += 1
        self.settle(SETTLE_CANCELLED)
        self.uncount()
        self._route_drop()
        if self.bridge is not None:
            bridge, self.bridge = self.bridge, None
            bridge.cancel()
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.server = None
            upstream.abort()

    def pause_writing(self):
        self.writing_paused = True
        if self.upstream is not None:
            self.upstream.set_reading(False)
        elif self.bridge is not None:
            self.bridge.set_reading(False)

    def resume_writing(self):
        self.writing_paused = False
        if self.upstream is not None:
            self.upstream.set_reading(True)
        elif self.bridge is not None:
            self.bridge.set_reading(True)

    # -- request processing -------------------------------------------------
    def advance(self):
        """Make progress with what is buffered: a new head, body bytes, or read-ahead."""
        while not self.closing:
            if not self.in_flight:
                if not self.buf:
                    if self.client_eof:
                        self.close()
                    return
                try:
                    head = parse_request_head(self.buf, self.ctx.max_header_bytes)
                except ParseError as err:
                    self.in_flight = True
                    self.req_done = True
                    self.t0 = perf_counter()
                    self.ctx.stats.requests += 1
                    self.fail(errors.ClientError(err.reason, status=err.status))
                    return
                if head is NEED_MORE:
                    return
                if not self.begin(head):
                    return
            elif not self.req_done:
                if (self.upstream is None and self.bridge is None) or not self.buf:
                    return
                self.forward_body()
                if not self.req_done:
                    return
            else:
                # A request is in flight and complete: what is buffered is the
                # next pipelined request; stop reading if too much piles up.
                if len(self.buf) > self.ctx.pipeline_buffer:
                    self.pause(PAUSE_PIPELINE)
                return

    def begin(self, head: RequestHead):
        """Start an exchange for a parsed head; False when it cannot go upstream yet."""
        ctx = self.ctx
        consumed: cython.Py_ssize_t = head.consumed
        self.buf = self.buf[consumed:] if consumed < len(self.buf) else b""
        self.head = head
        self.in_flight = True
        self.resp_started = False
        self.retried = False
        self.t0 = perf_counter()
        ctx.stats.requests += 1
        if not head.keep_alive or ctx.draining:
            self.close_after = True
        if head.chunked:
            self.req_kind = BODY_CHUNKED
            self.req_scanner = ChunkedScanner(400, 4096, ctx.max_header_bytes)
            self.req_done = False
        elif head.content_length > 0:
            self.req_kind = BODY_LENGTH
            self.req_remaining = head.content_length
            self.req_done = False
        else:
            self.req_kind = BODY_NONE
            self.req_done = True
        self.counted = True
        ctx.in_flight += 1
        self.repicks = 0
        self.settled = True  # until a balancer picks an endpoint
        self.t_sent = 0.0
        self.target = None
        self._route_drop()  # defensive: a previous request's route timer must not outlive it
        self.attempts = 0
        if ctx.max_in_flight and ctx.in_flight > ctx.max_in_flight:
            self.fail(errors.LoadShed())
            return False
        if self.authz is not None:
            denied = self.authz.check_h1(head)
            if denied is not None:
                self.fail(denied)
                return False
        host = head.host
        if (host is not None and host == self.last_host and self.last_gen == ctx.policy_gen and head.dst_override is None
                and head.method != b"CONNECT" and len(head.target) > 0 and head.target[0] == 47):
            # Same Host as this connection's previous request, origin-form, no
            # override: the router would answer the same passthrough target.
            target = self.last_target
        else:
            try:
                target = ctx.router.route(head, self.meta, self)
            except errors.ProxyError as err:
                self.fail(err)
                return False
            self.last_host = None
            if (target is not QUEUED and target.service is None and self.rp is None and host is not None
                    and head.dst_override is None and len(head.target) > 0 and head.target[0] == 47):
                # Only passthrough targets without a route policy: balanced
                # ones are picked, and policy ones routed, per request.
                self.last_host = host
                self.last_target = target
                self.last_gen = ctx.policy_gen
        if self.rp is not None:
            self._policy_begin()
        if target is QUEUED:
            # The router keeps this connection and calls routed() or fail().
            self.pause(PAUSE_CONNECTING)
            return False
        return self.dispatch(target)

    def dispatch(self, target):
        """Send the current request to ``target``; False when it waits for a connection."""
        ctx = self.ctx
        head = self.head
        self.target = target
        if target.mesh_port and ctx.bridge is not None and head.upgrade is None and head.method != b"CONNECT":
            # A meshed endpoint: the request travels as a stream of the
            # multiplexed HTTP/2 connection to its proxy; the bridge settles
            # the balancer's pick itself.
            self.settled = True
            self.resume(PAUSE_CONNECTING)
            self.t_sent = perf_counter()
            bridge = ctx.bridge(self, head, target)
            self.bridge = bridge
            if self.attempts > 0 and self.replay:
                bridge.send_body(b"".join(self.replay), True)  # a retry: the whole body was kept
            bridge.start()
            if self.buf and not self.req_done and self.bridge is not None:
                self.forward_body()
            return not self.closing
        self.settled = target.service is None
        self.tunnel_here = head.method == b"CONNECT" and target.via_connect
        self.upstream_head = self._upstream_head(head)
        conn = None if self.tunnel_here else ctx.pool.acquire(target)
        if conn is None:
            self.pause(PAUSE_CONNECTING)
            self.upstream = ctx.pool.connect(target, self)
            return False
        self.send_upstream(conn)
        return True

    def routed(self, target):
        """A queued request got its target (called by the router)."""
        if self.closed or not self.in_flight:
            if target.service is not None:
                target.service.settle(target, 0.0, SETTLE_CANCELLED)
            return
        if self.dispatch(target):
            self.advance()

    def settle(self, outcome):
        """Tell the balancer how its pick ended, exactly once per pick."""
        if self.settled:
            return
        self.settled = True
        settle_pick(self.target, self.t_sent, outcome)

    def uncount(self):
        if self.counted:
            self.counted = False
            self.ctx.in_flight -= 1

    def _upstream_head(self, head: RequestHead) -> bytes:
        if self.tunnel_here:
            return b""
        target: bytes = head.target
        absolute: cython.bint = len(target) > 0 and target[0] != 47 and target[0] != 42 and head.method != b"CONNECT"
        # Inbound, only this proxy speaks for the client's identity: a client's
        # own l5d-client-id goes, the verified one (if any) is added.
        strip_id: cython.bint = self.inbound and head.has_client_id
        edit = self.rp.headers if self.rp is not None else None  # the route's RequestHeaderModifier
        if not head.hop_by_hop and not absolute and not strip_id and self.client_id is None and edit is None:
            return head.raw
        first_line = None
        if absolute:
            first_line = b"%s %s HTTP/1.%d" % (head.method, _origin_form(target), head.version - 10)
        keep_upgrade: cython.bint = head.upgrade is not None
        drop = head.connection_tokens
        if keep_upgrade:
            drop = tuple([t for t in drop if t != b"upgrade"])
        if strip_id:
            drop = drop + (b"l5d-client-id",)
        extra = _NO_EXTRA
        if head.host is None and absolute:
            authority = target[target.find(b"://") + 3 :].split(b"/", 1)[0].split(b"?", 1)[0]
            extra = [(b"Host", authority)]
        if self.client_id is not None:
            extra = list(extra) + [(b"l5d-client-id", self.client_id)]
        if edit is not None:
            drop = drop + edit.drop
            extra = list(extra) + list(edit.extra)
        return rewrite_head(head.raw, first_line, drop, keep_upgrade, extra)

    def send_upstream(self, conn: ClientConn):
        self.upstream = conn
        self.t_sent = perf_counter()
        self.resume(PAUSE_CONNECTING)
        conn.attach(self, self.head, not self.close_after)
        if self.req_kind == BODY_NONE:
            self.ctx.tcp_dst.write_bytes += len(self.upstream_head)
            conn.transport.write(self.upstream_head)
            return
        if self.attempts > 0:
            # A retry: the whole body was kept (only complete bodies are retried).
            data = self.upstream_head + b"".join(self.replay)
            self.ctx.tcp_dst.write_bytes += len(data)
            conn.transport.write(data)
            return
        # Send the head together with the body bytes already here: one write.
        # A framing error in those bytes stops the request before any of it
        # (head included) reaches the upstream.
        try:
            body = self._take_body()
        except ParseError as err:
            self.fail(errors.ClientError(err.reason, status=err.status))
            return
        if self.replay is not None and body:
            self._keep(body)
        data = self.upstream_head + body if body else self.upstream_head
        self.ctx.tcp_dst.write_bytes += len(data)
        conn.transport.write(data)

    def _take_body(self, pieces: list = None) -> bytes:
        """Remove from the buffer the request-body bytes that may be forwarded now.

        With ``pieces``, a chunked body's payload is appended there (framing
        removed) for the HTTP/2 bridge; the raw bytes are still returned.
        """
        n: cython.Py_ssize_t
        buf = self.buf
        if not buf:
            return b""
        if self.req_kind == BODY_LENGTH:
            n = len(buf)
            if n > self.req_remaining:
                n = self.req_remaining
            self.req_remaining -= n
            if self.req_remaining == 0:
                self.req_done = True
        else:  # chunked: forward exactly the validated prefix
            n = self.req_scanner.scan(buf, 0, pieces)
            if self.req_scanner.done:
                self.req_done = True
        if n == len(buf):
            self.buf = b""
            return buf
        self.buf = buf[n:]
        return buf[:n]

    def forward_body(self):
        pieces = [] if self.bridge is not None and self.req_kind == BODY_CHUNKED else None
        try:
            body = self._take_body(pieces)
        except ParseError as err:
            self.fail(errors.ClientError(err.reason, status=err.status))
            return
        if self.replay is not None and body:
            self._keep(body)
        if self.bridge is not None:
            self.bridge.send_body(b"".join(pieces) if pieces is not None else body, self.req_done)
            return
        if body:
            self.ctx.tcp_dst.write_bytes += len(body)
            self.upstream.transport.write(body)

    # -- called by the upstream side ----------------------------------------
    def upstream_ready(self, conn: ClientConn):
        if self.closed or self.upstream is not conn:
            self.ctx.pool.release(conn)
            return
        if self.tunnel_here:
            self.response_head_sent(200)
            self.tunnel(conn, _CONNECT_ESTABLISHED, b"", b"")
            return
        self.send_upstream(conn)
        if self.req_kind == BODY_CHUNKED and self.req_scanner is not None and self.buf:
            self.advance()

    def upstream_failed(self, err):
        if self.closed:
            self.settle(SETTLE_CANCELLED)
            return
        self.upstream = None
        target = self.target
        if (target is not None and target.service is not None and isinstance(err, _CONNECT_ERRORS)
                and self.repicks < MAX_REPICKS and not self.resp_started):
            # The request never reached that endpoint: let the balancer pick again.
            self.settle(SETTLE_FAILED)
            self.repicks += 1
            try:
                again = self.ctx.router.reroute(self.head, self.meta, target, self)
            except errors.ProxyError as routing_err:
                self.resume(PAUSE_CONNECTING)
                self.fail(routing_err)
                return
            if again is QUEUED:
                return
            if self.dispatch(again):
                self.advance()
            return
        self.resume(PAUSE_CONNECTING)
        self.fail(err)

    def retry_on_fresh(self):
        """Resend a bodiless idempotent request after a reused connection died unanswered."""
        head = self.head
        if self.retried or self.closed or self.req_kind != BODY_NONE or head is None or head.method not in IDEMPOTENT:
            return False
        self.retried = True
        self.upstream = self.ctx.pool.connect(self.target, self)
        return True

    def response_head_sent(self, status):
        self.resp_started = True
        if not self.settled:
            self.settle(SETTLE_FAILED if status >= 500 else SETTLE_OK)
        ctx = self.ctx
        ctx.stats.record_response(status, (perf_counter() - self.t0) * 1000.0, status >= 500)
        if self.rp is not None:
            self._route_end(status, status >= 1000 or self.rp.failure_status[status] != 0)

    # -- reliability policy (only when the router set ``rp``) -----------------
    def _policy_begin(self):
        """The router matched a route: arm its timeout, and keep the body if the request may be retried."""
        rp = self.rp
        head = self.head
        self.replay = None
        self.replay_size = 0
        if rp.limit > 0 and head.upgrade is None and head.method != b"CONNECT":
            # Chunked bodies are streams: never replayed. A declared length
            # over the buffer is known too big before the first byte.
            self.replay_limit = rp.replay_limit
            if self.req_kind == BODY_NONE or (self.req_kind == BODY_LENGTH and self.req_remaining <= self.replay_limit):
                self.replay = []
        self.resp_edit = rp.response_headers
        if rp.timeout > 0 or rp.idle_timeout > 0:
            self.clock = RouteClock(self.ctx.loop, rp.timeout, rp.idle_timeout, self._route_deadline)

    def _keep(self, body: bytes):
        self.replay_size += len(body)
        if self.replay_size > self.replay_limit:
            self.replay = None
        else:
            self.replay.append(body)

    def retry_wanted(self, status):
        """Whether the attempt that just failed (``status``, or 0: it timed out) is sent again.

        Only complete requests whose body was kept, within the route's limit
        and the service's budget (taken here: a True answer is a retry).
        """
        rp = self.rp
        if self.replay is None or not self.req_done or self.closed or self.attempts >= rp.limit:
            return False
        if status != 0 and (status >= 1000 or rp.retry_status[status] == 0):
            return False
        return rp.withdraw()

    def retry(self):
        """Send the request again on a new balancer pick; the failed attempt's response never reaches the client."""
        self.settle(SETTLE_FAILED)
        self.attempts += 1
        self.rp.stats.retries += 1
        self.upstream = None
        target = self.target
        self.target = None  # until the new pick (a timeout meanwhile must unqueue it)
        try:
            again = self.ctx.router.reroute(self.head, self.meta, target, self, True)
        except errors.ProxyError as err:
            self.resume(PAUSE_CONNECTING)
            self.fail(err)
            return
        if again is QUEUED:
            self.pause(PAUSE_CONNECTING)
            return
        if self.dispatch(again):
            self.advance()

    def attempt_timed_out(self):
        """No response head within the attempt's time (the upstream connection already gave up on it)."""
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.server = None
            upstream.abort()
        if self.rp is not None and self.retry_wanted(0):
            self.retry()
            return
        self.fail(attempt_timeout_error(self.rp))

    def _route_deadline(self, err):
        """A route's time limit hit: 504 before the response head, a cut connection after."""
        if self.closed or not self.in_flight:
            return
        if self.resp_started:
            log_cut("outbound", err, self.head, self.meta)  # route policies exist outbound only
        elif self.target is None and self.bridge is None:
            self.ctx.router.unqueue(self)  # waiting for an endpoint: leave the queue
        self.fail(err)

    def _route_end(self, status, failure):
        """The request's outcome is known (a response head or a synthesized error): count it once."""
        rp = self.rp
        self.rp = None
        self.replay = None
        rp.stats.record((perf_counter() - self.t0) * 1000.0, failure)

    def _route_drop(self):
        self.rp = None
        self.replay = None
        self._stop_route_timer()

    def _stop_route_timer(self):
        self.resp_edit = None  # the exchange is over (this runs at its every ending)
        if self.clock is not None:
            self.clock.stop()
            self.clock = None

    def hold_reading(self, on):
        """The bridge has too much request body waiting for the peer's window (on) or not (off)."""
        if on:
            self.pause(PAUSE_UPSTREAM_FULL)
        else:
            self.resume(PAUSE_UPSTREAM_FULL)

    def bridge_done(self):
        self.bridge = None
        self.response_done(False)

    def bridge_failed(self, err):
        self.bridge = None
        self.fail(err)

    def response_done(self, tunnel):
        """The upstream finished its response (the upstream connection is already released)."""
        self.upstream = None
        self.bridge = None
        self._stop_route_timer()
        self.in_flight = False
        self.resp_started = False
        self.head = None
        self.uncount()
        if tunnel:
            self.closed = True
            self.ctx.connections.discard(self)
            return
        if not self.req_done:
            # The server answered before the request body ended; the rest of
            # that body cannot be told apart from a next request.
            self.close_after = True
        self.idle_since = self.ctx.loop.time()
        if self.close_after:
            self.close()
            return
        self.resume(PAUSE_PIPELINE)
        self.advance()

    def tunnel(self, conn: ClientConn, to_client: bytes, to_upstream: bytes, from_upstream: bytes):
        """Hand both connections to a raw byte tunnel (101 Switching Protocols, CONNECT).

        Bytes the client sent after its request (already buffered) go to the
        upstream; bytes the upstream sent after its response head go to the client.
        """
        ctx = self.ctx
        rest = self.buf
        self.buf = b""
        self.req_done = True
        if to_client:
            self.write(to_client)
        conn.state = C_DONE
        conn.server = None
        splice(self.transport, conn.transport, ctx.tcp_src, ctx.tcp_dst, to_upstream + rest, from_upstream)
        self.response_done(True)

    def fail(self, err):
        """Answer the in-flight request with a synthesized error, or cut the connection if too late."""
        if self.closed:
            return
        ctx = self.ctx
        if self.rp is not None:
            self._route_end(err.status, err.failure)
        self._stop_route_timer()
        self.settle(SETTLE_FAILED if isinstance(err, errors.UpstreamError) else SETTLE_CANCELLED)
        self.uncount()
        if self.bridge is not None:
            bridge, self.bridge = self.bridge, None
            bridge.cancel()
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.server = None
            upstream.abort()
        self.resume(PAUSE_CONNECTING)
        if self.resp_started:
            # Part of a response already went out: the only honest signal left
            # in HTTP/1 is to cut the connection.
            self.transport.abort()
            return
        if err.closes or not self.req_done:
            self.close_after = True
        ctx.stats.record_response(err.status, (perf_counter() - self.t0) * 1000.0, err.failure)
        self.write(ctx.rescue(err, self.head, self.meta, self.close_after))
        self.resp_started = False  # this exchange is over
        self.in_flight = False
        self.head = None
        self.req_done = True
        self.idle_since = ctx.loop.time()
        if self.close_after:
            self.close()
        else:
            self.advance()

    def begin_drain(self):
        self.close_after = True
        if not self.in_flight:
            self.close()

    # -- helpers -------------------------------------------------------------
    def pause(self, reason):
        self.paused |= reason
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume(self, reason):
        self.paused &= ~reason
        if self.paused == 0 and self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def write(self, data):
        self.ctx.tcp_src.write_bytes += len(data)
        if self.clock is not None:
            self.clock.touch()
        self.transport.write(data)

    def close(self):
        # Whatever is still buffered is never looked at again: after an error
        # it is the rest of a rejected request.
        self.closing = True
        self.buf = b""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class ClientConn:
    """One connection to an upstream, reused across requests through the pool."""

    def __init__(self, pool, target):
        self.pool = pool
        self.target = target
        self.transport = None
        self.server = None
        self.buf = b""
        self.head = None
        self.kind = BODY_NONE
        self.remaining = 0
        self.scanner = None
        self.state = C_CONNECTING
        self.head_request = False
        self.connect_request = False
        self.upgrade_requested = False
        self.client_version = 11
        self.client_keep = True
        self.dechunk = False
        self.client_closes = False
        self.got_bytes = False
        self.reused = False
        self.idle_since = 0.0
        self.timer = None
        self.reading_paused = False
        self.request_keeps = True

    def set_reading(self, on):
        """Pause or resume reading the upstream (the client's write buffer is full or drained)."""
        if self.transport is None or on != self.reading_paused:
            return
        self.reading_paused = not on
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    # -- asyncio protocol --------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        ctx = self.pool.ctx
        ctx.tcp_dst.opened += 1
        transport.set_write_buffer_limits(ctx.write_high, ctx.write_high // 4)
        server = self.server
        if server is None:
            self.pool.release(self)
        else:
            server.upstream_ready(self)

    def connect_failed(self, exc):
        self.state = C_DONE
        server = self.server
        self.server = None
        if server is not None:
            server.upstream_failed(errors.connect_error(exc))

    def data_received(self, data):
        self.pool.ctx.tcp_dst.read_bytes += len(data)
        if self.server is None:
            # Bytes from an upstream we asked nothing of: it is not speaking
            # HTTP/1 as agreed, so the connection cannot be trusted again.
            self.abort()
            return
        self.got_bytes = True
        if self.buf:
            self.buf += data
        else:
            self.buf = data
        if self.state == C_WAIT_HEAD:
            self.on_head()
        elif self.state == C_BODY:
            self.on_body(0, None)

    def eof_received(self):
        if self.state == C_BODY and self.kind == BODY_CLOSE:
            self.finish(False)
        return False

    def connection_lost(self, exc):
        state = self.state
        self.state = C_DONE
        self._cancel_timer()
        server = self.server
        self.server = None
        ctx = self.pool.ctx
        if self.transport is not None:
            ctx.tcp_dst.closed += 1
        if state == C_IDLE:
            self.pool.forget(self)
            return
        if server is None:
            return
        if state == C_BODY and self.kind == BODY_CLOSE:
            server.response_done(False)
            return
        if state == C_WAIT_HEAD and self.reused and not self.got_bytes and server.retry_on_fresh():
            return
        server.upstream_failed(errors.UpstreamReset())

    def pause_writing(self):
        server = self.server
        if server is not None:
            server.pause(PAUSE_UPSTREAM_FULL)

    def resume_writing(self):
        server = self.server
        if server is not None:
            server.resume(PAUSE_UPSTREAM_FULL)

    # -- exchange ------------------------------------------------------------
    def attach(self, server: ServerConn, head: RequestHead, keep):
        self.server = server
        self.state = C_WAIT_HEAD
        self.buf = b""
        self.got_bytes = False
        self.head_request = head.method == b"HEAD"
        self.connect_request = head.method == b"CONNECT"
        self.upgrade_requested = head.upgrade is not None
        self.client_version = head.version
        self.client_keep = keep
        # An HTTP/1.0 request goes upstream as 1.0 without keep-alive (that
        # field is hop-by-hop): the upstream closes after answering it.
        self.request_keeps = head.version >= 11
        # Reading follows the client's ability to take the response.
        self.set_reading(not server.writing_paused)
        ctx = self.pool.ctx
        timeout: cython.double = attempt_time_limit(ctx.response_timeout, server.rp)
        if timeout > 0:
            self.timer = ctx.loop.call_later(timeout, self._timed_out)

    def _timed_out(self):
        self.timer = None
        server = self.server
        if server is not None and self.state == C_WAIT_HEAD:
            self.server = None
            self.state = C_DONE
            self.abort()
            server.attempt_timed_out()

    def _cancel_timer(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def on_head(self):
        server = self.server
        ctx = self.pool.ctx
        status: cython.int
        while True:
            try:
                head = parse_response_head(self.buf, ctx.max_header_bytes)
            except ParseError as err:
                self._bad_response(err.reason)
                return
            if head is NEED_MORE:
                return
            rh: ResponseHead = head
            status = rh.status
            consumed: cython.Py_ssize_t = rh.consumed
            if 100 <= status < 200 and status != 101:
                # Interim response (100 Continue, 103 Early Hints): relay to
                # HTTP/1.1 clients and keep waiting for the final one.
                self.buf = self.buf[consumed:]
                if self.client_version >= 11:
                    server.write(rh.raw)
                continue
            break
        self._cancel_timer()
        if server.rp is not None and server.retry_wanted(status):
            self._discard(rh, consumed)
            server.retry()
            return
        self.head = rh
        if status == 101 or (self.connect_request and 200 <= status < 300):
            if status == 101 and not self.upgrade_requested:
                self._bad_response("101 without upgrade request")
                return
            rest = self.buf[consumed:]
            self.buf = b""
            server.response_head_sent(status)
            self.state = C_DONE
            self.server = None
            server.tunnel(self, rh.raw, b"", rest)
            return
        # Body framing per RFC 9112 6.3.
        if self.head_request or status == 204 or status == 304:
            self.kind = BODY_NONE
        elif rh.chunked:
            self.kind = BODY_CHUNKED
            self.scanner = ChunkedScanner(502, 4096, ctx.max_header_bytes)
        elif rh.has_transfer_encoding:
            self.kind = BODY_CLOSE
        elif rh.content_length >= 0:
            self.kind = BODY_LENGTH if rh.content_length > 0 else BODY_NONE
            self.remaining = rh.content_length
        else:
            self.kind = BODY_CLOSE
        keep: cython.bint = self.client_keep and not ctx.draining and self.kind != BODY_CLOSE
        self.dechunk = self.kind == BODY_CHUNKED and self.client_version < 11
        if self.dechunk:
            keep = False
        self.client_closes = not keep
        edit = server.resp_edit  # the route's ResponseHeaderModifier
        if keep and not rh.hop_by_hop and self.client_version >= 11 and edit is None:
            out = None  # forward the head exactly as received
        else:
            drop = rh.connection_tokens + _DECHUNK_DROP if self.dechunk else rh.connection_tokens
            if not keep:
                extra = _CONNECTION_CLOSE
            elif self.client_version < 11:
                extra = _CONNECTION_KEEP_ALIVE
            else:
                extra = _NO_EXTRA
            if edit is not None:
                drop = drop + edit.drop
                extra = list(extra) + list(edit.extra)
            out = rewrite_head(rh.raw, None, drop, False, extra)
        if not keep:
            server.close_after = True
        server.response_head_sent(status)
        self.state = C_BODY
        if out is None:
            self.on_body(consumed, None)  # raw head and body together
        else:
            self.buf = self.buf[consumed:]
            self.on_body(0, out)  # rewritten head and body together

    def on_body(self, head_len: cython.Py_ssize_t = 0, head: bytes = None):
        """Forward the body bytes that are buffered, after ``head_len`` bytes of raw head.

        The head (the raw one in the buffer, or a rewritten ``head``) and the
        body bytes that arrived with it leave in one write: one syscall per
        response in the common case.
        """
        buf = self.buf
        total: cython.Py_ssize_t = len(buf)
        n: cython.Py_ssize_t = total - head_len
        kind = self.kind
        done: cython.bint = False
        pieces = None
        if kind == BODY_NONE:
            n = 0
            done = True
        elif kind == BODY_LENGTH:
            if n >= self.remaining:
                n = self.remaining
                done = True
            self.remaining -= n
        elif kind == BODY_CHUNKED:
            if self.dechunk:
                pieces = []
            try:
                n = self.scanner.scan(buf, head_len, pieces) - head_len
            except ParseError as err:
                self._bad_body(err.reason)
                return
            done = self.scanner.done
        elif n == 0:
            if head is not None:
                self.server.write(head)
            return  # read-until-close, nothing new
        end: cython.Py_ssize_t = head_len + n
        self.buf = buf[end:] if end < total else b""
        server = self.server
        if pieces is not None:
            body = b"".join(pieces)
        else:
            body = buf if end == total else buf[:end]
        if head is not None:
            server.write(head + body if body else head)
        elif body:
            server.write(body)
        if done:
            self.finish(not self.buf)

    def finish(self, reusable):
        """The response is complete: release this connection, then let the client go on."""
        server = self.server
        upstream_keep: cython.bint = self.head is not None and self.head.keep_alive
        self.server = None
        self.scanner = None
        self.head = None
        if server is None:
            self.abort()
            return
        if reusable and upstream_keep and self.request_keeps and self.kind != BODY_CLOSE and server.req_done:
            self.pool.release(self)
        else:
            self.abort()
        server.response_done(False)

    def _discard(self, rh: ResponseHead, consumed: cython.Py_ssize_t):
        """Drop a response that is being retried. The connection is kept only when
        all of it (a small, length-delimited body) is already here; otherwise
        the rest would have to be read and thrown away: close instead."""
        rest: cython.Py_ssize_t = len(self.buf) - consumed
        status: cython.int = rh.status
        self.server.upstream = None
        self.server = None
        self.buf = b""
        self.head = None
        reusable: cython.bint = rh.keep_alive and self.request_keeps and not rh.chunked and not rh.has_transfer_encoding
        if self.head_request or status == 204 or status == 304:
            reusable = reusable and rest == 0
        else:
            reusable = reusable and rh.content_length == rest
        if reusable:
            self.pool.release(self)
        else:
            self.abort()

    def _bad_response(self, reason):
        server = self.server
        self.server = None
        self.abort()
        if server is not None:
            server.fail(errors.BadResponse(f"invalid response from upstream: {reason}"))

    def _bad_body(self, reason):
        server = self.server
        self.server = None
        self.abort()
        if server is not None:
            server.fail(errors.BadResponse(f"invalid response body from upstream: {reason}"))

    def abort(self):
        self.state = C_DONE
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

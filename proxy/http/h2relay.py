"""Per-request HTTP/2 proxying: each stream of a client's HTTP/2 connection is routed, balanced and relayed on its own.

``H2Server`` speaks HTTP/2 (server role) to a client; every request stream
becomes an ``Exchange`` that is routed like an HTTP/1 request (so one
long-lived gRPC connection spreads its calls over all endpoints), and sent on
a stream of a multiplexed ``H2Client`` connection to the chosen target, kept
in an ``H2Pool`` per target. Flow control is the backpressure: bytes received
on one side are acknowledged (WINDOW_UPDATE) only once the other side has
accepted them, so at most a window's worth is buffered per stream. Resets
travel both ways; a stream the upstream refused or never processed (GOAWAY
above its last id) is retry-safe and is sent again on a fresh connection.
"""

import time
from time import perf_counter

import cython

from proxy import errors
from proxy.protocol import h2conn
from proxy.protocol import transport_header
from proxy.core.responses import log_cut
from proxy.http.relay import (
    QUEUED, SETTLE_CANCELLED, SETTLE_FAILED, SETTLE_OK, RouteClock, attempt_time_limit, attempt_timeout_error,
    settle_pick,
)

# RFC 9113 error codes used here.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
REFUSED_STREAM = 0x7
CANCEL = 0x8

# Fields that must not be copied from one hop to the next.
_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))

MAX_RETRIES = 1  # a refused stream is sent again once, on another connection

# Write coalescing. While a read is being processed, flush() only marks a
# connection dirty; every dirty connection is written once when the outermost
# callback returns. One read carrying ten requests then costs one write
# upstream instead of ten (profiling showed 88% of the time in write()).
_batch = [0]
_dirty = []


def begin_batch():
    _batch[0] += 1


def defer_write(conn):
    """While a read is being processed, mark ``conn`` (``.dirty``, ``.write_out()``) for one write
    at its end; True if deferred."""
    if _batch[0] == 0:
        return False
    if not conn.dirty:
        conn.dirty = True
        _dirty.append(conn)
    return True


def _end_batch():
    _batch[0] -= 1
    if _batch[0] == 0:
        _write_dirty()


def _write_dirty():
    while _dirty:
        conns = list(_dirty)
        del _dirty[:]
        for conn in conns:
            conn.dirty = False
            conn.write_out()


# The meshed hop's HTTP/1 side feeds HTTP/2 connections from many sockets:
# fifty HTTP/1 clients read in one loop iteration would otherwise mean fifty
# writes to the one connection to the peer proxy. A batch those callbacks open
# is therefore written at the end of the iteration (one call_soon per
# iteration, not per request).
_tick = [False]


def end_batch_at_tick(loop):
    """Like _end_batch, but what the batch marked is written at the end of the loop iteration."""
    _batch[0] -= 1
    if _batch[0] == 0 and _dirty and not _tick[0]:
        _tick[0] = True
        loop.call_soon(_tick_done)


def _tick_done():
    _tick[0] = False
    if _batch[0] == 0:
        _write_dirty()


class RequestMeta:
    """The parts of an HTTP/2 request the routers read (the same names as the HTTP/1 head)."""


    def __init__(self, headers):
        self.method = b"GET"
        self.target = b"/"
        self.host = None
        self.dst_override = None
        self.version = 20
        self.keep_alive = True
        self.upgrade = None
        for name, value in headers:
            if name == b":method":
                self.method = value
            elif name == b":path":
                self.target = value
            elif name == b":authority":
                self.host = value
            elif name == b"host" and self.host is None:
                self.host = value
            elif name == b"l5d-dst-override":
                self.dst_override = value
        if self.method == b"CONNECT":
            self.target = self.host or b""


def _status(headers) -> int:
    for name, value in headers:
        if name == b":status":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _grpc_status(headers) -> int:
    """``grpc-status`` of a header block, or -1 when absent or malformed."""
    for name, value in headers:
        if name == b"grpc-status":
            try:
                return int(value)
            except ValueError:
                return -1
    return -1


def _is_grpc(headers) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.startswith(b"application/grpc")
    return False


def _forwardable(headers):
    return [(n, v) for n, v in headers if n not in _HOP]


def _client_id_headers(headers, client_id):
    """Inbound: only this proxy speaks for the client's identity; a client's own l5d-client-id goes."""
    out = [(n, v) for n, v in headers if n != b"l5d-client-id"]
    if client_id is not None:
        out.append((b"l5d-client-id", client_id))
    return out


def _end(conn, sid, trailers):
    """End our side of a stream: with trailers when there are any, else an empty END_STREAM DATA."""
    try:
        if trailers is not None:
            conn.send_headers(sid, trailers, True)
        else:
            conn.end_stream(sid)
    except h2conn.H2UsageError:
        pass  # the stream was reset meanwhile


class Exchange:
    """One request stream: from the client's connection to an upstream stream and back."""


    def __init__(self, server, sid, headers, end_stream):
        self.server = server
        self.sid = sid
        self.headers = headers
        self.meta = RequestMeta(headers)
        self.end_in = end_stream
        self.target = None
        self.client = None  # H2Client carrying the upstream stream
        self.up_sid = 0
        self.to_up = []  # (data, flow_len) waiting for the upstream window
        self.to_down = []  # (data, flow_len) waiting for the downstream window
        self.up_end_pending = False
        self.down_end_pending = False
        self.resp_started = False
        self.t0 = perf_counter()
        self.t_sent = 0.0
        self.settled = True
        self.done = False
        self.retries = 0
        self.trailers_up = None
        self.trailers_down = None
        self.req_ended = end_stream
        self.timer = None
        self.rp = None  # outbound: the route policy (set by the router), or None
        self.replay = None  # request DATA kept for a retry; None: not replayable
        self.replay_size = 0
        self.attempts = 0
        self.body_sent = False
        self.clock = None
        self.route_ms = 0.0
        self.grpc_pending = False  # a gRPC response whose class waits for its trailers
        self.held = None  # a gRPC response head kept until its first DATA or its trailers (policy_response)
        self.resp_edit = None  # the route's ResponseHeaderModifier (outbound/policy.HeaderEdit)
        self.orig_h1 = False
        for name, _ in headers:
            if name == b"l5d-orig-proto":
                self.orig_h1 = True
                break

    # -- routing (the same router API as HTTP/1) -----------------------------
    def start(self):
        ctx = self.server.ctx
        ctx.stats.requests += 1
        if self.server.authz is not None:
            denied = self.server.authz.check_h2(self.meta, self.headers)
            if denied is not None:
                self.fail(denied)
                return
        try:
            target = ctx.router.route(self.meta, self.server.meta, self)
        except errors.ProxyError as err:
            self.fail(err)
            return
        if self.rp is not None:
            self.policy_begin()
        if target is QUEUED:
            return  # the router calls routed() or fail()
        self.routed(target)

    def routed(self, target):
        if self.done:
            if target.service is not None:
                target.service.settle(target, 0.0, SETTLE_CANCELLED)
            return
        self.target = target
        self.settled = target.service is None
        if self.orig_h1 and self.server.h1_pool is not None:
            # Sent by a peer proxy on behalf of an HTTP/1 client: the app gets HTTP/1.
            self.server.h1_pool.open(target, self)
        else:
            self.server.pool.open(target, self)

    # -- upstream side, called by H2Client -----------------------------------
    def attach(self, client, up_sid):
        self.client = client
        self.up_sid = up_sid
        self.t_sent = perf_counter()
        ctx = self.server.ctx
        timeout = attempt_time_limit(ctx.response_timeout, self.rp)
        if timeout > 0 and self.timer is None:
            self.timer = ctx.loop.call_later(timeout, self.timed_out)
        self.pump_up()

    def timed_out(self):
        self.timer = None
        if not self.resp_started and not self.done:
            rp = self.rp
            if rp is not None and self.retry_wanted(0, -1):
                if self.client is not None:
                    self.client.reset(self.up_sid, CANCEL)
                    self.client = None
                self.retry()
            else:
                self.fail(attempt_timeout_error(rp))

    def cancel_timer(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pump_up(self):
        """Send buffered request body to the upstream as its window allows."""
        client = self.client
        if client is None or self.done:
            return
        conn = client.conn
        while self.to_up:
            data, flow = self.to_up[0]
            try:
                sent = conn.send_data(self.up_sid, data, False) if data else 0
            except h2conn.H2UsageError:
                self.to_up = []
                return
            if sent:
                self.body_sent = True
            if sent < len(data):
                if sent:
                    self.to_up[0] = (data[sent:], flow)
                    self.server.ack(self.sid, sent if sent < flow else flow)
                break
            self.to_up.pop(0)
            self.server.ack(self.sid, flow)
        if not self.to_up and self.up_end_pending:
            self.up_end_pending = False
            _end(conn, self.up_sid, self.trailers_up)
        client.flush()
        # The WINDOW_UPDATEs that let the client send more are queued on its
        # connection: this may run from an upstream callback, so send them now.
        self.server.flush()

    def on_response(self, headers, end_stream):
        status = _status(headers)
        if self.clock is not None:
            self.clock.touch()
        if self.rp is not None and self.policy_response(headers, status, end_stream):
            return  # retried, or held until its trailers or first DATA
        self.forward_head(headers, status, end_stream)

    def forward_head(self, headers, status, end_stream):
        self.settle(SETTLE_FAILED if status >= 500 else SETTLE_OK)
        ctx = self.server.ctx
        ctx.stats.record_response(status, (perf_counter() - self.t0) * 1000.0, status >= 500)
        self.resp_started = True
        self.cancel_timer()
        out = _forwardable(headers)
        if self.resp_edit is not None:
            out = self.resp_edit.apply(out)
        self.server.send_headers(self.sid, out, end_stream)
        if end_stream:
            self.finish()
        self.server.flush()  # called from an upstream callback: nothing else would send it

    def on_informational(self, headers):
        self.server.send_headers(self.sid, _forwardable(headers), False)
        self.server.flush()

    def on_response_data(self, data, flow, end_stream):
        if self.clock is not None:
            self.clock.touch()
        if self.held is not None:  # a message: the status will not come before it, let the head go
            self.release_head()
        self.to_down.append((data, flow))
        if end_stream:
            self.down_end_pending = True
        self.pump_down()

    def on_response_trailers(self, headers):
        if self.held is not None:
            # Head then trailers, no message: the gRPC status can still be retried.
            if self.retry_wanted(_status(self.held), _grpc_status(headers)):
                if self.client is not None:
                    self.client.reset(self.up_sid, CANCEL)
                    self.client = None
                self.retry()
                return
            self.release_head()
        if self.grpc_pending:
            self.grpc_pending = False
            self.route_end(0, _grpc_status(headers), self.route_ms)
        self.trailers_down = _forwardable(headers)
        self.down_end_pending = True
        self.pump_down()

    def pump_down(self):
        """Send buffered response body to the client as its window allows."""
        server = self.server
        conn = server.conn
        if self.done and not self.to_down and not self.down_end_pending:
            return
        while self.to_down:
            data, flow = self.to_down[0]
            try:
                sent = conn.send_data(self.sid, data, False) if data else 0
            except h2conn.H2UsageError:
                self.to_down = []
                self.down_end_pending = False
                return
            if sent < len(data):
                if sent:
                    self.to_down[0] = (data[sent:], flow)
                break
            self.to_down.pop(0)
            if self.client is not None:
                self.client.ack(self.up_sid, flow)
        if not self.to_down and self.down_end_pending:
            self.down_end_pending = False
            _end(conn, self.sid, self.trailers_down)
            self.finish()
        server.flush()

    def on_upstream_reset(self, error_code, retry_safe):
        """The upstream stream was reset (or its connection went away)."""
        self.client = None
        if self.done:
            return
        # Sent again only whole: body bytes already gone upstream and not kept
        # cannot be sent twice, and a request missing them must not be sent at all.
        if (retry_safe and not self.resp_started and self.retries < MAX_RETRIES and self.target is not None
                and (self.replay is not None or not self.body_sent)):
            # Never processed by the upstream: send it again on a fresh connection.
            self.retries += 1
            self.settle(SETTLE_CANCELLED)  # routing again makes a new pick
            self.routed_again()
            return
        if not self.resp_started:
            self.fail(errors.UpstreamReset(f"upstream reset the stream (error code {error_code})"))
            return
        self.settle(SETTLE_FAILED)
        self.server.reset(self.sid, error_code or INTERNAL_ERROR)
        self.finish()

    def routed_again(self, resplit=False):
        """Send the request again: a new pick of the same concrete service (a stream never processed),
        or with ``resplit`` (a policy retry) of the route's traffic split first."""
        ctx = self.server.ctx
        failed = self.target
        self.target = None  # until the new pick (a route timeout meanwhile must unqueue it)
        self.held = None  # the last attempt's held head, if any, is that attempt's
        self.grpc_pending = False
        if self.replay is not None:
            # Rewind to the kept body; what was waiting for the old stream's
            # window goes back to the client's flow control.
            for _, flow in self.to_up:
                self.server.ack(self.sid, flow)
            self.to_up = [(data, 0) for data in self.replay]
            self.up_end_pending = self.req_ended
            self.body_sent = False
        try:
            if failed is None:
                target = ctx.router.route(self.meta, self.server.meta, self)
            elif resplit or failed.service is not None:  # outbound: not routed from the start (counted once)
                target = ctx.router.reroute(self.meta, self.server.meta, failed, self, resplit)
            else:
                target = failed  # not balanced: the only choice
        except errors.ProxyError as err:
            self.fail(err)
            return
        if target is not QUEUED:
            self.routed(target)

    # -- reliability policy (only when the router set ``rp``) -----------------
    def policy_begin(self):
        rp = self.rp
        if rp.headers is not None:
            self.headers = rp.headers.apply(self.headers)  # the route's RequestHeaderModifier
        self.resp_edit = rp.response_headers
        if rp.limit > 0 and self.meta.method != b"CONNECT":
            self.replay = []
        if rp.timeout > 0 or rp.idle_timeout > 0:
            self.clock = RouteClock(self.server.ctx.loop, rp.timeout, rp.idle_timeout, self.route_deadline)

    def policy_response(self, headers, status, end_stream):
        """A response head under a route policy: retry it (True) or count it and let it through."""
        grpc = _grpc_status(headers)
        if self.retry_wanted(status, grpc):
            if self.client is not None:
                self.client.reset(self.up_sid, CANCEL)
                self.client = None
            self.retry()
            return True
        elapsed = (perf_counter() - self.t0) * 1000.0
        if grpc < 0 and not end_stream and _is_grpc(headers):
            # The gRPC status comes in the trailers: classify then.
            self.grpc_pending = True
            self.route_ms = elapsed
            rp = self.rp
            if rp.grpc_retry and self.replay is not None and self.req_ended and self.attempts < rp.limit:
                # Peek, as Linkerd does: most failed calls send no message, so
                # the trailers follow the head at once and may still be retried.
                # The head goes out with the first DATA, or after the trailers.
                self.held = headers
                return True
        else:
            self.route_end(status, grpc, elapsed)
        return False

    def release_head(self):
        headers, self.held = self.held, None
        self.forward_head(headers, _status(headers), False)

    def retry_wanted(self, status, grpc):
        """Whether the failed attempt (``status`` with ``grpc`` or -1; status 0: timed out) is sent again;
        a True answer has taken the budget."""
        rp = self.rp
        if self.replay is None or not self.req_ended or self.done or self.attempts >= rp.limit:
            return False
        if status != 0 and not rp.retry_on(status, None if grpc < 0 else grpc):
            return False
        return rp.withdraw()

    def retry(self):
        self.settle(SETTLE_FAILED)
        self.attempts += 1
        self.rp.stats.retries += 1
        self.cancel_timer()
        self.routed_again(True)

    def route_deadline(self, err):
        """A route's time limit hit: 504 before the response head, RST_STREAM after."""
        if self.done:
            return
        if not self.resp_started:
            if self.target is None:
                self.server.ctx.router.unqueue(self)  # waiting for an endpoint: leave the queue
            self.fail(err)
            return
        log_cut("outbound", err, self.meta, self.server.meta)  # route policies exist outbound only
        if self.grpc_pending:  # its trailers will never come: a failure
            self.grpc_pending = False
            self.route_end(504, -1, self.route_ms)
        self.settle(SETTLE_CANCELLED)
        if self.client is not None:
            self.client.reset(self.up_sid, CANCEL)
            self.client = None
        self.server.reset(self.sid, CANCEL)
        self.finish()

    def stop_route_timer(self):
        if self.clock is not None:
            self.clock.stop()
            self.clock = None

    def route_end(self, status, grpc, elapsed):
        rp = self.rp
        self.rp = None
        self.replay = None
        if status == 0:  # classified at the trailers: the head's status was counted then
            status = 200
        rp.stats.record(elapsed, rp.failed(status, None if grpc < 0 else grpc))

    def upstream_failed(self, err):
        """The upstream connection could not be opened."""
        self.client = None
        if self.done:
            return
        target = self.target
        self.settle(SETTLE_FAILED)
        if target is not None and target.service is not None and self.retries < MAX_RETRIES + 1 and \
                isinstance(err, (errors.ConnectRefused, errors.ConnectFailed, errors.ConnectTimeout)):
            self.retries += 1
            self.routed_again()
            return
        self.fail(err)

    # -- client side, called by H2Server -------------------------------------
    def on_request_data(self, data, flow, end_stream):
        if self.done:
            self.server.ack(self.sid, flow)
            return
        if self.clock is not None:
            self.clock.touch()
        if self.replay is not None and data:
            self.replay_size += len(data)
            if self.replay_size > self.rp.replay_limit:
                self.replay = None  # too big to keep: this request is not retried
            else:
                self.replay.append(data)
        self.to_up.append((data, flow))
        if end_stream:
            self.up_end_pending = True
            self.req_ended = True
        self.pump_up()

    def on_request_trailers(self, headers):
        self.req_ended = True
        if self.done:
            return
        self.trailers_up = _forwardable(headers)
        self.up_end_pending = True
        self.pump_up()

    def on_client_reset(self, error_code):
        self.req_ended = True  # the stream is gone: nothing to end
        self.settle(SETTLE_CANCELLED)
        if self.client is not None:
            self.client.reset(self.up_sid, error_code or CANCEL)
        self.finish()

    # -- endings -------------------------------------------------------------
    def settle(self, outcome):
        if self.settled:
            return
        self.settled = True
        settle_pick(self.target, self.t_sent, outcome)

    def fail(self, err):
        """Answer with a synthesized error response, or reset if the response already started."""
        if self.done:
            return
        self.held = None  # never forwarded: the error response replaces it
        self.grpc_pending = False
        if self.rp is not None:
            self.route_end(err.status, -1, (perf_counter() - self.t0) * 1000.0)
        self.settle(SETTLE_FAILED if isinstance(err, errors.UpstreamError) else SETTLE_CANCELLED)
        if self.client is not None:
            self.client.reset(self.up_sid, CANCEL)
            self.client = None
        server = self.server
        if self.resp_started:
            server.reset(self.sid, INTERNAL_ERROR)
        else:
            server.ctx.stats.record_response(err.status, (perf_counter() - self.t0) * 1000.0, err.failure)
            server.ctx.rescue(err, self.meta, server.meta, False)  # logs; the HTTP/1 bytes are not used
            body = (err.reason + "\n").encode()
            fields = [
                (b":status", str(err.status).encode()),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ]
            if err.failure:
                fields.append((b"l5d-proxy-error", err.reason.encode("latin-1", "replace")))
            fields.extend((name.encode("latin-1"), value.encode("latin-1", "replace")) for name, value in err.fields)
            server.send_headers(self.sid, fields, False)
            self.resp_started = True
            self.to_down = [(body, 0)]
            self.down_end_pending = True
            self.pump_down()
        self.finish()

    def finish(self):
        if self.done:
            return
        self.done = True
        self.cancel_timer()
        self.stop_route_timer()
        if self.rp is not None:
            if self.grpc_pending:  # ended without trailers: the HTTP status decides
                self.grpc_pending = False
                self.route_end(200, -1, self.route_ms)
            else:  # the client went away first: nothing to count
                self.rp = None
                self.replay = None
        server = self.server
        server.exchanges.pop(self.sid, None)
        if self.client is not None:
            self.client.exchanges.pop(self.up_sid, None)
        if self.to_up:
            # Request body that will never be sent: return its window to the
            # client, or its connection would slowly run out of credit.
            for _, flow in self.to_up:
                server.ack(self.sid, flow)
            self.to_up = []
        if not self.req_ended:
            # Answered before the request ended: tell the client to stop
            # sending (RFC 9113 8.1), which also settles its window.
            server.conn.reset_stream(self.sid, NO_ERROR)
        server.flush()


# Both HTTP/2 connection classes are buffered protocols: over TLS, uvloop
# otherwise decrypts every read into a fresh 256 KiB bytes object (an mmap, an
# mremap and a munmap per read; ~4% of a meshed hop's CPU). It decrypts into
# this buffer instead, and buffer_updated copies out exactly what arrived
# before anything else runs, so one buffer serves every connection of the loop.
_READ_BUFFER = memoryview(bytearray(256 * 1024))


class H2Server:
    """A client's HTTP/2 connection to the proxy (server role)."""

    def __init__(self, ctx, meta, pool, settings, h1_pool=None):
        self.ctx = ctx
        self.meta = meta
        self.pool = pool
        self.h1_pool = h1_pool
        self.conn = h2conn.H2Connection(False, settings)
        self.transport = None
        self.exchanges = {}
        self.closed = False
        self.idle_since = 0.0
        self.in_flight = False  # for the idle sweeper: true while streams are open
        self.draining = False
        self.writing_paused = False
        self.dirty = False
        self.authz = meta.authz
        self.inbound = meta.direction == "inbound"
        self.client_id = meta.client_id.encode("ascii") if meta.client_id else None

    def connection_made(self, transport):
        self.transport = transport
        self.ctx.connections.add(self)
        self.conn.initiate()
        self.flush()

    def get_buffer(self, sizehint):
        return _READ_BUFFER

    def buffer_updated(self, nbytes):
        self.data_received(_READ_BUFFER[:nbytes].tobytes())

    def data_received(self, data):
        self.ctx.tcp_src.read_bytes += len(data)
        begin_batch()
        try:
            events = self.conn.receive_data(data, int(time.monotonic() * 1000))
            for event in events:
                self.dispatch(event)
            self.in_flight = bool(self.exchanges)
            if not self.in_flight:
                self.idle_since = self.ctx.loop.time()
            self.flush()
        finally:
            _end_batch()
        if self.conn.dead:
            self.close()  # after a connection error GOAWAY (RFC 9113 5.4.1)
        else:
            self.close_if_drained()

    def dispatch(self, event):
        kind = type(event)
        if kind is h2conn.RequestReceived:
            headers = event.headers
            if self.inbound:
                headers = _client_id_headers(headers, self.client_id)
            ex = Exchange(self, event.stream_id, headers, event.end_stream)
            self.exchanges[event.stream_id] = ex
            if event.end_stream:
                ex.up_end_pending = True
            ex.start()
        elif kind is h2conn.DataReceived:
            ex = self.exchanges.get(event.stream_id)
            if ex is None:
                self.conn.acknowledge_received(event.stream_id, event.flow_controlled_length)
            else:
                ex.on_request_data(event.data, event.flow_controlled_length, event.end_stream)
        elif kind is h2conn.TrailersReceived:
            ex = self.exchanges.get(event.stream_id)
            if ex is not None:
                ex.on_request_trailers(event.headers)
        elif kind is h2conn.StreamReset:
            ex = self.exchanges.get(event.stream_id)
            if ex is not None:
                ex.on_client_reset(event.error_code)
        elif kind is h2conn.WindowUpdated:
            if event.stream_id == 0:
                for ex in list(self.exchanges.values()):
                    ex.pump_down()
            else:
                ex = self.exchanges.get(event.stream_id)
                if ex is not None:
                    ex.pump_down()
        elif kind is h2conn.HeaderListTooLarge:
            self.ctx.stats.requests += 1
            self.ctx.stats.record_response(431, 0.0, True)
        elif kind is h2conn.ConnectionTerminated:
            if not event.remote:
                # We found the client broken: its streams end with the connection.
                for ex in list(self.exchanges.values()):
                    ex.on_client_reset(CANCEL)
            # A client's GOAWAY names the last *pushed* stream it accepts: its
            # own requests in flight are still to be answered.

    # -- called by exchanges -------------------------------------------------
    def send_headers(self, sid, headers, end_stream):
        try:
            self.conn.send_headers(sid, headers, end_stream)
        except h2conn.H2UsageError:
            pass  # the client reset the stream or the connection is gone

    def reset(self, sid, code):
        self.conn.reset_stream(sid, code)
        self.flush()

    def ack(self, sid, n):
        if n > 0:
            self.conn.acknowledge_received(sid, n)

    def flush(self):
        if not defer_write(self):
            self.write_out()

    def write_out(self):
        if self.writing_paused or self.transport is None or self.closed:
            return  # frames stay queued in the connection (bounded by flow control and its limits)
        out = self.conn.data_to_send()
        if out:
            self.ctx.tcp_src.write_bytes += len(out)
            self.transport.write(out)

    # -- lifecycle -------------------------------------------------------------
    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if self.closed:
            return
        self.closed = True
        self.ctx.connections.discard(self)
        self.ctx.tcp_src.closed += 1
        for ex in list(self.exchanges.values()):
            ex.on_client_reset(CANCEL)

    def pause_writing(self):
        # The client is not reading: stop reading its frames too, so it cannot
        # make us queue answers (PING ACKs, RSTs) without bound.
        self.writing_paused = True
        self.transport.pause_reading()

    def resume_writing(self):
        self.writing_paused = False
        if not self.closed:
            self.transport.resume_reading()
            self.flush()

    def begin_drain(self):
        """RFC 9113 6.8's two-step GOAWAY; the connection closes once drained."""
        self.draining = True
        self.conn.graceful_shutdown()
        self.flush()
        self.close_if_drained()

    def close_if_drained(self):
        if self.draining and not self.exchanges and self.conn.drained:
            self.close()

    def close(self):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class H2Client:
    """One multiplexed HTTP/2 connection to an upstream target (client role)."""

    def __init__(self, pool, target, settings):
        self.pool = pool
        self.target = target
        self.conn = h2conn.H2Connection(True, settings)
        self.transport = None
        self.exchanges = {}  # upstream stream id -> Exchange
        self.waiting = []  # exchanges to open once connected
        self.connected = False
        self.dead = False
        self.dirty = False

    def connection_made(self, transport):
        self.transport = transport
        self.connected = True
        self.pool.ctx.tcp_dst.opened += 1
        target = self.target
        if target.needs_header:
            # A peer proxy's inbound port: say which app port this HTTP/2 session is for.
            transport.write(transport_header.encode(target.mesh_port, transport_header.PROTO_HTTP))
        self.conn.initiate()
        waiting, self.waiting = self.waiting, []
        for ex in waiting:
            self.open(ex)
        self.flush()

    def connect_failed(self, exc):
        self.dead = True
        self.pool.forget(self)
        waiting, self.waiting = self.waiting, []
        err = errors.connect_error(exc)
        for ex in waiting:
            ex.upstream_failed(err)

    def can_open(self):
        return not self.dead and not self.conn.closing

    def open(self, ex):
        """Start the exchange's request (an Exchange or an h1bridge.H1ToH2) on a new stream."""
        if not self.connected:
            self.waiting.append(ex)
            return
        headers = _forwardable(ex.headers)
        try:
            sid = self.conn.send_request(headers, ex.end_in and not ex.to_up)
        except (h2conn.StreamLimitReached, h2conn.ConnectionClosing):
            self.pool.open_elsewhere(self, ex)
            return
        self.exchanges[sid] = ex
        if ex.end_in and not ex.to_up:
            ex.up_end_pending = False
        ex.attach(self, sid)
        self.flush()

    def get_buffer(self, sizehint):
        return _READ_BUFFER

    def buffer_updated(self, nbytes):
        self.data_received(_READ_BUFFER[:nbytes].tobytes())

    def data_received(self, data):
        self.pool.ctx.tcp_dst.read_bytes += len(data)
        begin_batch()
        try:
            for event in self.conn.receive_data(data, int(time.monotonic() * 1000)):
                self.dispatch(event)
            self.flush()
        finally:
            _end_batch()
        if self.conn.dead and self.transport is not None:
            self.transport.close()

    def dispatch(self, event):
        kind = type(event)
        ex = self.exchanges.get(getattr(event, "stream_id", 0))
        if kind is h2conn.ResponseReceived:
            if ex is not None:
                ex.on_response(event.headers, event.end_stream)
        elif kind is h2conn.InformationalResponseReceived:
            if ex is not None:
                ex.on_informational(event.headers)
        elif kind is h2conn.DataReceived:
            if ex is None:
                self.conn.acknowledge_received(event.stream_id, event.flow_controlled_length)
            else:
                ex.on_response_data(event.data, event.flow_controlled_length, event.end_stream)
        elif kind is h2conn.TrailersReceived:
            if ex is not None:
                ex.on_response_trailers(event.headers)
        elif kind is h2conn.StreamReset:
            if ex is not None:
                self.exchanges.pop(event.stream_id, None)
                ex.on_upstream_reset(event.error_code, event.error_code == REFUSED_STREAM)
        elif kind is h2conn.WindowUpdated:
            if event.stream_id == 0:
                for other in list(self.exchanges.values()):
                    other.pump_up()
            elif ex is not None:
                ex.pump_up()
        elif kind is h2conn.ConnectionTerminated:
            self.pool.forget(self)

    def ack(self, sid, n):
        if n > 0 and not self.dead:
            self.conn.acknowledge_received(sid, n)
            self.flush()

    def reset(self, sid, code):
        self.exchanges.pop(sid, None)
        if not self.dead:
            self.conn.reset_stream(sid, code)
            self.flush()

    def flush(self):
        if not defer_write(self):
            self.write_out()

    def write_out(self):
        if self.transport is None or self.dead:
            return
        out = self.conn.data_to_send()
        if out:
            self.pool.ctx.tcp_dst.write_bytes += len(out)
            self.transport.write(out)
        if not self.exchanges and self.conn.closing and not self.waiting:
            self.transport.close()

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.dead = True
        self.pool.forget(self)
        self.pool.ctx.tcp_dst.closed += 1
        exchanges, self.exchanges = self.exchanges, {}
        for ex in exchanges.values():
            # Whether the upstream processed these is unknown: not retry-safe.
            ex.on_upstream_reset(CANCEL, False)

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass


class H2Pool:
    """Upstream HTTP/2 connections per target; new streams go to the newest open one."""

    def __init__(self, ctx, settings, max_connections_per_target=4):
        self.ctx = ctx
        self.settings = settings
        self.max_per_target = max_connections_per_target
        self.conns = {}  # target -> list[H2Client]

    def open(self, target, ex):
        clients = self.conns.get(target)
        if clients:
            client = clients[len(clients) - 1]
            if client.can_open():
                client.open(ex)
                return
        self._new(target).open(ex)

    def open_elsewhere(self, full, ex):
        clients = self.conns.get(full.target, [])
        for client in reversed(clients):
            if client is not full and client.can_open() and client.conn.open_streams < full.conn.open_streams:
                client.open(ex)
                return
        if len(clients) >= self.max_per_target:
            ex.fail(errors.LoadShed("load shed: upstream concurrency limit reached"))
            return
        self._new(full.target).open(ex)

    def _new(self, target):
        client = H2Client(self, target, self.settings)
        self.conns.setdefault(target, []).append(client)
        self.ctx.connector(target, client)
        return client

    def forget(self, client):
        clients = self.conns.get(client.target)
        if clients and client in clients:
            clients.remove(client)
            if not clients:
                del self.conns[client.target]

    def close_all(self):
        for clients in list(self.conns.values()):
            for client in list(clients):
                client.conn.close(NO_ERROR)
                client.flush()

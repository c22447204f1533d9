"""HTTP/1 across the meshed hop: HTTP/1 requests carried as HTTP/2 streams between proxies, and restored for the app.

Between two proxies all HTTP travels over one multiplexed HTTP/2 connection
per peer. On the client side, ``H1ToH2`` takes a request from the HTTP/1
relay (``ServerConn``) and sends it as a stream with
``l5d-orig-proto: HTTP/1.1`` (plus ``; absolute-form`` when the request used
an absolute URI), then writes the answer back as HTTP/1 (content-length or
chunked framing, trailers as chunked trailers). On the server side,
``H1Upstream`` lets an HTTP/2 ``Exchange`` whose request carries
``l5d-orig-proto`` reach an HTTP/1 app: it serializes the request (restoring
the version and the absolute form) and turns the app's HTTP/1 response into
HTTP/2 response events. Upgrades and CONNECT are not converted: they keep
using raw HTTP/1 connections.
"""

from http import HTTPStatus
from time import perf_counter

from proxy import errors
from proxy.protocol.http1 import NEED_MORE, ChunkedScanner, ParseError, parse_response_head
from proxy.http.h2relay import begin_batch, defer_write, end_batch_at_tick
from proxy.http.relay import (
    QUEUED, SETTLE_CANCELLED, SETTLE_FAILED, SETTLE_OK, attempt_time_limit, attempt_timeout_error, settle_pick,
)

ORIG_PROTO = b"l5d-orig-proto"
CANCEL = 0x8
MAX_RETRIES = 1

# Connection-specific fields (RFC 9113 8.2.2) and Host (it becomes :authority).
_H1_ONLY = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding",
                      b"upgrade", b"host", b"trailer"))
_CONNECT_ERRORS = (errors.ConnectRefused, errors.ConnectFailed, errors.ConnectTimeout)


def _known_phrases():
    return {int(s): s.phrase.encode() for s in HTTPStatus}


_PHRASES = _known_phrases()  # enum lookups cost more than the rest of the response head


def _phrase(status):
    return _PHRASES.get(status, b"Status")


def h2_request_headers(head):
    """An HTTP/1 request head as HTTP/2 request fields, with ``l5d-orig-proto``."""
    target = head.target
    authority = head.host or b""
    orig = b"HTTP/1.1" if head.version >= 11 else b"HTTP/1.0"
    path = target
    if target[:1] not in (b"/", b"*"):
        # Absolute form: the URI names the authority; remember the form so the
        # far side can restore it.
        rest = target.partition(b"://")[2]
        slash = rest.find(b"/")
        authority = rest[:slash] if slash >= 0 else rest
        path = rest[slash:] if slash >= 0 else b"/"
        orig += b"; absolute-form"
    fields = [(b":method", head.method), (b":scheme", b"http"), (b":authority", authority), (b":path", path)]
    tokens = head.connection_tokens
    drop = _H1_ONLY.union(tokens) if tokens else _H1_ONLY  # most heads name no extra hop-by-hop field
    for name, value in head.header_list():
        low = name.lower()
        if low not in drop and low != ORIG_PROTO:
            fields.append((low, value))
    fields.append((ORIG_PROTO, orig))
    return fields


def h1_response_head(fields, chunked, close):
    """HTTP/2 response fields as an HTTP/1.1 head (``chunked``/``close`` framing added here)."""
    status = 0
    lines = []
    for name, value in fields:
        if name == b":status":
            status = int(value)
        elif name[:1] != b":" and name not in _H1_ONLY:
            lines.append(name + b": " + value)
    out = [b"HTTP/1.1 %d %s" % (status, _phrase(status))]
    out.extend(lines)
    if chunked:
        out.append(b"transfer-encoding: chunked")
    if close:
        out.append(b"connection: close")
    return status, b"\r\n".join(out) + b"\r\n\r\n"


def _has(fields, wanted):
    for name, _ in fields:
        if name == wanted:
            return True
    return False


class H1ToH2:
    """One request of an HTTP/1 client connection, carried as a stream to a peer proxy."""

    def __init__(self, conn, head, target, pool, router):
        self.conn = conn  # relay.ServerConn
        self.head = head
        self.target = target
        self.pool = pool
        self.router = router
        self.headers = h2_request_headers(head)
        if conn.rp is not None and conn.rp.headers is not None:
            self.headers = conn.rp.headers.apply(self.headers)  # the route's RequestHeaderModifier
        self.end_in = conn.req_done
        self.to_up = []
        self.up_end_pending = conn.req_done
        self.trailers_up = None
        self.client = None
        self.up_sid = 0
        self.resp_started = False
        self.done = False
        self.chunked_out = False
        self.t_sent = 0.0
        self.settled = target.service is None
        self.retries = 0
        self.body_sent = False  # some request body went to the current stream
        self.owed = 0  # response bytes to acknowledge once the client reads again
        self.paused = False
        self.timer = None
        self.head_out = None  # the response head, held to go out with the first body bytes
        self.dirty = False  # queued for write_out at the end of the current read (h2relay's batch)

    # Called from the HTTP/1 relay (one client socket among many read in this
    # loop iteration): the HTTP/2 frames are written once per iteration.
    def start(self):
        begin_batch()
        try:
            self.pool.open(self.target, self)
        finally:
            end_batch_at_tick(self.conn.ctx.loop)

    # -- request side ----------------------------------------------------------
    def send_body(self, data, last):
        if data:
            self.to_up.append((data, 0))
        if last:
            self.up_end_pending = True
        begin_batch()
        try:
            self.pump_up()
        finally:
            end_batch_at_tick(self.conn.ctx.loop)

    def attach(self, client, sid):
        self.client = client
        self.up_sid = sid
        self.t_sent = perf_counter()
        # The same bound on the time to the response head as a direct upstream
        # attempt: MESHPROXY_RESPONSE_TIMEOUT, or the route's backend timeout.
        conn = self.conn
        timeout = attempt_time_limit(conn.ctx.response_timeout, conn.rp)
        if timeout > 0 and self.timer is None:
            self.timer = conn.ctx.loop.call_later(timeout, self._timed_out)
        self.pump_up()

    def _cancel_timer(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self):
        self.timer = None
        if self.done or self.resp_started:
            return
        conn = self.conn
        self.settle(SETTLE_FAILED)
        if self.client is not None:
            self.client.reset(self.up_sid, CANCEL)
            self.client = None
        if conn.rp is not None and conn.retry_wanted(0):
            self.done = True
            conn.bridge = None
            conn.retry()
            return
        conn.bridge_failed(attempt_timeout_error(conn.rp))

    def pump_up(self):
        client = self.client
        if client is None or self.done:
            return
        h2 = client.conn
        while self.to_up:
            data, flow = self.to_up[0]
            sent = h2.send_data(self.up_sid, data, False)
            if sent:
                self.body_sent = True
            if sent < len(data):
                self.to_up[0] = (data[sent:], flow)
                break
            self.to_up.pop(0)
        # Too much body waiting for the peer's window: stop reading the client.
        self.conn.hold_reading(len(self.to_up) > 4)
        if not self.to_up and self.up_end_pending:
            self.up_end_pending = False
            h2.end_stream(self.up_sid)
        client.flush()

    # -- response side ------------------------------------------------------------
    def on_informational(self, fields):
        if self.head.version >= 11:
            status, raw = h1_response_head(fields, False, False)
            self.conn.write(raw)

    def on_response(self, fields, end_stream):
        self._cancel_timer()
        conn = self.conn
        status = 0
        for name, value in fields:
            if name == b":status":
                status = int(value)
                break
        if conn.rp is not None and conn.retry_wanted(status):
            # Retried by the relay on a new pick: this stream and its answer go no further.
            self.settle(SETTLE_FAILED)
            self.done = True
            if self.client is not None:
                self.client.reset(self.up_sid, CANCEL)
                self.client = None
            conn.bridge = None
            conn.retry()
            return
        self.settle(SETTLE_FAILED if status >= 500 else SETTLE_OK)
        bodiless = end_stream or self.head.method == b"HEAD" or status in (204, 304)
        close = conn.close_after
        self.chunked_out = False
        if not bodiless and not _has(fields, b"content-length"):
            if self.head.version >= 11:
                self.chunked_out = True
            else:
                close = True  # an HTTP/1.0 client learns the end from the close
                conn.close_after = True
        if conn.resp_edit is not None:
            fields = conn.resp_edit.apply(fields)  # the route's ResponseHeaderModifier
        status, raw = h1_response_head(fields, self.chunked_out, close)
        self.resp_started = True
        conn.response_head_sent(status)
        if end_stream:
            conn.write(raw)
            self.finish()
        elif defer_write(self):
            # The body usually arrived in the same read: one write for both
            # (a write is the costliest part of a small response); whatever
            # the read held, the head goes out when it has been processed.
            self.head_out = raw
        else:
            conn.write(raw)

    def write_out(self):
        """End of the read that carried the response head: send it if no body came with it."""
        head, self.head_out = self.head_out, None
        if head is not None and not self.conn.closed:
            self.conn.write(head)

    def _write(self, data):
        head = self.head_out
        if head is not None:
            self.head_out = None
            data = head + data
        self.conn.write(data)

    def on_response_data(self, data, flow, end_stream):
        if self.done:
            return
        if data:
            if self.chunked_out:
                self._write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self._write(data)
        if flow:
            if self.paused:
                self.owed += flow
            else:
                self.client.ack(self.up_sid, flow)
        if end_stream:
            self.finish()

    def on_response_trailers(self, fields):
        if self.chunked_out:
            lines = [name + b": " + value for name, value in fields if name[:1] != b":"]
            self._write(b"0\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n")
            self.chunked_out = False
        self.finish()

    def set_reading(self, on):
        """The client's write buffer filled (off) or drained (on): hold or release the peer's window."""
        self.paused = not on
        if on and self.owed and self.client is not None:
            owed, self.owed = self.owed, 0
            self.client.ack(self.up_sid, owed)

    # -- endings -----------------------------------------------------------------
    def finish(self):
        self._cancel_timer()
        if self.done:
            return
        self.done = True
        if self.chunked_out:
            self._write(b"0\r\n\r\n")
        elif self.head_out is not None:
            self._write(b"")
        if self.client is not None:
            self.client.exchanges.pop(self.up_sid, None)
        self.conn.bridge_done()

    def settle(self, outcome):
        if self.settled:
            return
        self.settled = True
        settle_pick(self.target, self.t_sent, outcome)

    def routed(self, target):
        """A new endpoint for a retried request (the balancer's queue may call this later)."""
        if self.done:
            if target.service is not None:
                target.service.settle(target, 0.0, SETTLE_CANCELLED)
            return
        self.target = target
        self.settled = target.service is None
        self.pool.open(target, self)

    def _again(self):
        service = self.target.service
        if service is None:
            self.pool.open(self.target, self)
            return
        target = service.route(self, self.target.endpoint)  # not the endpoint that just failed
        if target is not QUEUED:
            self.routed(target)

    def on_upstream_reset(self, error_code, retry_safe):
        self._cancel_timer()
        self.client = None
        if self.done:
            return
        # Body bytes already sent are gone: the rest alone would be a truncated request.
        if retry_safe and not self.resp_started and self.retries < MAX_RETRIES and not self.body_sent:
            self.retries += 1
            self.settle(SETTLE_CANCELLED)
            self._again()
            return
        self.settle(SETTLE_FAILED)
        self.conn.bridge_failed(errors.UpstreamReset(f"peer proxy reset the stream (error code {error_code})"))

    def upstream_failed(self, err):
        self._cancel_timer()
        self.client = None
        if self.done:
            return
        self.settle(SETTLE_FAILED)
        if self.target.service is not None and isinstance(err, _CONNECT_ERRORS) and self.retries <= MAX_RETRIES:
            self.retries += 1
            self._again()
            return
        self.conn.bridge_failed(err)

    def fail(self, err):
        self.settle(SETTLE_CANCELLED)
        self.conn.bridge_failed(err)

    def cancel(self):
        """The client connection is gone or the request failed: stop the stream."""
        self._cancel_timer()
        if self.done:
            return
        self.done = True
        self.head_out = None  # the exchange was cut: a held head must not follow
        self.settle(SETTLE_CANCELLED)
        if self.client is not None:
            self.client.reset(self.up_sid, CANCEL)
            self.client = None


class H1Pool:
    """Keep-alive HTTP/1 connections per target for requests restored from the meshed hop."""

    def __init__(self, ctx, max_idle=64):
        self.ctx = ctx
        self.idle = {}
        self.max_idle = max_idle

    def open(self, target, ex):
        conns = self.idle.get(target)
        while conns:
            up = conns.pop()
            if up.usable():
                up.start(ex)
                return
        up = H1Upstream(self, target)
        up.start(ex)
        self.ctx.connector(target, up)

    def release(self, up):
        conns = self.idle.setdefault(up.target, [])
        if len(conns) >= self.max_idle or self.ctx.draining:
            up.close()
        else:
            conns.append(up)

    def close_all(self):
        for conns in self.idle.values():
            for up in conns:
                up.close()
        self.idle.clear()


class H1Upstream:
    """An HTTP/1 connection to the app, driven by an HTTP/2 ``Exchange`` as if it were an upstream stream."""

    def __init__(self, pool, target):
        self.pool = pool
        self.target = target
        self.conn = self  # the Exchange calls client.conn.send_data(...) etc.
        self.exchanges = {}
        self.transport = None
        self.ex = None
        self.buf = b""
        self.head = None
        self.kind = 0  # 0 none, 1 length, 2 chunked, 3 close
        self.remaining = 0
        self.scanner = None
        self.chunked_req = False
        self.got_bytes = False
        self.reused = False
        self.closed = False

    def usable(self):
        return self.transport is not None and not self.closed and not self.transport.is_closing()

    # -- driven by the Exchange (HTTP/2 upstream-stream interface) ---------------
    def start(self, ex):
        self.ex = ex
        self.exchanges[1] = ex
        self.reused = self.transport is not None
        if self.transport is not None:
            self._send_head()

    def send_data(self, sid, data, end_stream):
        if self.chunked_req and data:
            self._write(b"%x\r\n%s\r\n" % (len(data), data))
        elif data:
            self._write(data)
        return len(data)

    def end_stream(self, sid):
        if self.chunked_req:
            self._write(b"0\r\n\r\n")

    def send_headers(self, sid, fields, end_stream):
        if self.chunked_req:
            lines = b"".join(n + b": " + v + b"\r\n" for n, v in fields if n[:1] != b":")
            self._write(b"0\r\n" + lines + b"\r\n")

    def ack(self, sid, n):
        pass  # HTTP/1 has no window to return

    def reset(self, sid, code):
        self.ex = None
        self.close()

    def flush(self):
        pass

    # -- asyncio protocol ------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.pool.ctx.tcp_dst.opened += 1
        if self.ex is not None:
            self._send_head()

    def connect_failed(self, exc):
        self.closed = True
        ex, self.ex = self.ex, None
        if ex is not None:
            ex.upstream_failed(errors.connect_error(exc))

    def _send_head(self):
        ex = self.ex
        method = b"GET"
        path = b"/"
        authority = b""
        version = b"HTTP/1.1"
        absolute = False
        lines = []
        has_length = False
        for name, value in ex.headers:
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == ORIG_PROTO:
                version = value.split(b";", 1)[0].strip() or b"HTTP/1.1"
                absolute = b"absolute-form" in value
            elif name[:1] != b":":
                if name == b"content-length":
                    has_length = True
                lines.append(name + b": " + value)
        target = b"http://" + authority + path if absolute else path
        head = [b"%s %s %s" % (method, target, version), b"host: " + authority]
        head.extend(lines)
        bodiless = ex.end_in and not ex.to_up
        self.chunked_req = not bodiless and not has_length and version == b"HTTP/1.1"
        if self.chunked_req:
            head.append(b"transfer-encoding: chunked")
        self.buf = b""
        self.head = None
        self.got_bytes = False
        self._write(b"\r\n".join(head) + b"\r\n\r\n")
        ex.attach(self, 1)

    def _write(self, data):
        if self.transport is not None and not self.closed:
            self.pool.ctx.tcp_dst.write_bytes += len(data)
            self.transport.write(data)

    def data_received(self, data):
        self.pool.ctx.tcp_dst.read_bytes += len(data)
        ex = self.ex
        if ex is None:
            self.close()  # bytes nobody asked for
            return
        self.got_bytes = True
        self.buf = self.buf + data if self.buf else data
        # One of many app connections answering in this loop iteration: what
        # goes back to the peer proxy is written once per iteration.
        begin_batch()
        try:
            if self.head is None:
                self._on_head()
            else:
                self._on_body()
        finally:
            end_batch_at_tick(self.pool.ctx.loop)

    def _on_head(self):
        ex = self.ex
        while True:
            try:
                head = parse_response_head(self.buf, self.pool.ctx.max_header_bytes)
            except ParseError as err:
                self.ex = None
                self.close()
                ex.on_upstream_reset(0x1, False)
                return
            if head is NEED_MORE:
                return
            self.buf = self.buf[head.consumed:]
            status = head.status
            fields = [(b":status", str(status).encode())]
            tokens = head.connection_tokens
            drop = _H1_ONLY.union(tokens) if tokens else _H1_ONLY
            for name, value in head.header_list():
                low = name.lower()
                if low not in drop:
                    fields.append((low, value))
            if 100 <= status < 200:
                if status != 101:
                    ex.on_informational(fields)
                    continue
            break
        self.head = head
        method = b"GET"
        for name, value in ex.headers:
            if name == b":method":
                method = value
                break
        if method == b"HEAD" or status in (204, 304) or (100 <= status < 200):
            self.kind = 0
        elif head.chunked:
            self.kind = 2
            self.scanner = ChunkedScanner(502, 4096, self.pool.ctx.max_header_bytes)
        elif head.has_transfer_encoding or head.content_length < 0:
            self.kind = 3
        else:
            self.kind = 1 if head.content_length > 0 else 0
            self.remaining = head.content_length
        ex.on_response(fields, self.kind == 0)
        if self.kind == 0:
            self._done()
        else:
            self._on_body()

    def _on_body(self):
        ex = self.ex
        buf = self.buf
        if self.kind == 1:
            n = min(len(buf), self.remaining)
            self.remaining -= n
            self.buf = buf[n:]
            end = self.remaining == 0
            if n or end:
                ex.on_response_data(buf[:n], 0, end)
            if end:
                self._done()
        elif self.kind == 2:
            pieces = []
            try:
                n = self.scanner.scan(buf, 0, pieces)
            except ParseError:
                self.ex = None
                self.close()
                ex.on_upstream_reset(0x1, False)
                return
            self.buf = buf[n:]
            end = self.scanner.done
            if pieces or end:
                ex.on_response_data(b"".join(pieces), 0, end)
            if end:
                self._done()
        elif buf:
            self.buf = b""
            ex.on_response_data(buf, 0, False)

    def _done(self):
        keep = self.head is not None and self.head.keep_alive and not self.buf and self.kind != 3
        self.ex = None
        self.exchanges.clear()
        self.head = None
        if keep:
            self.pool.release(self)
        else:
            self.close()

    def eof_received(self):
        if self.ex is not None and self.head is not None and self.kind == 3:
            ex, self.ex = self.ex, None
            ex.on_response_data(b"", 0, True)
        return False

    def connection_lost(self, exc):
        if self.transport is not None:
            self.pool.ctx.tcp_dst.closed += 1
        self.closed = True
        ex, self.ex = self.ex, None
        if ex is None:
            return
        if self.head is not None and self.kind == 3:
            ex.on_response_data(b"", 0, True)
            return
        # A reused connection that died before any answer: safe to send again.
        ex.on_upstream_reset(CANCEL, self.reused and not self.got_bytes)

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass

    def close(self):
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

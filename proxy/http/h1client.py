"""HTTP/1 to upstreams: pooled client connections, each carrying one exchange's attempt at a time.

``H1Client`` writes an exchange's request (head, then body framed by length
or re-chunked) and reads the response strictly (RFC 9112): interim 1xx are
passed on, 101 hands the connection to a tunnel, the body is de-framed and
handed to the exchange with its credit. Reading stops while more than the
write high-water mark of response bytes is waiting for the client, and
resumes as the client takes them; sending stops while the upstream's socket
buffer is full. A connection goes back to the pool only when both messages
ended cleanly and nothing unasked-for arrived; bytes from an idle
connection, a body longer than declared, or a bodiless response that may
be followed by a body make it unusable, never reused.
"""

import cython

from proxy import errors
from proxy.exchange.clock import now
from proxy.exchange.core import IDEMPOTENT
from proxy.exchange.ends import UpEnd
from proxy.http.batch import batch_begin, batch_end_at_tick
from proxy.protocol import transport_header
from proxy.protocol.http1 import NEED_MORE, ChunkedScanner, ParseError, bytes_range, parse_response_head
from proxy.telemetry.counters import errno_of

# How a response body ends.
BODY_NONE = cython.declare(cython.int, 0)
BODY_LENGTH = cython.declare(cython.int, 1)
BODY_CHUNKED = cython.declare(cython.int, 2)
BODY_CLOSE = cython.declare(cython.int, 3)  # read until the upstream closes

# Connection states.
C_CONNECTING = cython.declare(cython.int, 0)
C_IDLE = cython.declare(cython.int, 1)
C_WAIT_HEAD = cython.declare(cython.int, 2)
C_BODY = cython.declare(cython.int, 3)
C_DONE = cython.declare(cython.int, 4)  # closed, or handed to a tunnel


class IdleStack:
    """One target's idle connections, the last released on top.

    A plain list popped to empty and appended again reallocates its storage
    both times (each keep-alive request takes a connection and gives it
    back); the slots here stay allocated, up to the pool's per-target bound.
    """

    def __init__(self):
        self.slots = []
        self.count = 0

    def push(self, conn):
        if self.count < len(self.slots):
            self.slots[self.count] = conn
        else:
            self.slots.append(conn)
        self.count += 1

    def pop(self):
        self.count -= 1
        conn: H1Client = self.slots[self.count]
        self.slots[self.count] = None
        return conn

    def remove(self, conn):
        """Take ``conn`` out wherever it is; False if it is not here."""
        i: cython.Py_ssize_t
        for i in range(self.count):
            if self.slots[i] is conn:
                del self.slots[i]  # the ones above move down, and the slot count shrinks by one
                self.count -= 1
                return True
        return False

    def conns(self):
        return self.slots[:self.count]


class H1Pool:
    """Idle upstream HTTP/1 connections per target, bounded in count and idle time."""

    def __init__(self, loop, connector, tcp_stats, max_header_bytes, write_high, max_idle, idle_timeout):
        self.loop = loop
        self.connector = connector
        self.tcp = tcp_stats
        self.labels = None  # proxy.telemetry.labels.LabelSets: each connection's label set by target
        self.max_header_bytes = max_header_bytes
        self.write_high = write_high
        self.idle = {}  # target -> IdleStack
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.idle_count = 0
        self.draining = False

    def open(self, ex, target, pooled):
        """Give ``ex`` a connection to ``target``: an idle one, or a new one.

        ``pooled`` False: always new, never kept.
        """
        if pooled:
            stack: IdleStack = self.idle.get(target)
            while stack is not None and stack.count > 0:
                conn: H1Client = stack.pop()
                self.idle_count -= 1
                # An idle connection the upstream closed left C_IDLE in eof_received, one this proxy
                # closed in abort. A reset read earlier in this same loop iteration is the case left:
                # uvloop has closed the transport and calls connection_lost only later, so a request
                # attached now would be lost (a POST answered 502). is_closing() (one Python call per
                # checkout) sends it to another connection instead.
                if conn.state == C_IDLE and not conn.transport.is_closing():
                    conn.reused = True
                    conn.attach(ex)
                    return
        conn = H1Client(self, target, pooled)
        conn.pending = ex
        ex.connecting(conn)
        self.connector(target, conn)

    def release(self, conn):
        # No ``transport.is_closing()`` here (a Python method call, ~180 instructions a request): a
        # connection is released only from its own read of a complete response (or, fresh, from
        # connection_made), and uvloop stops reading a transport once it closes it, so it is never
        # closing at this point.
        if self.draining or not conn.pooled or conn.transport is None:
            conn.abort()
            return
        stack: IdleStack = self.idle.get(conn.target)
        if stack is None:
            stack = IdleStack()
            self.idle[conn.target] = stack
        if stack.count >= self.max_idle:
            conn.abort()
            return
        conn.state = C_IDLE
        conn.set_reading(True)  # an idle connection must notice the upstream closing it
        conn.idle_since = now()
        stack.push(conn)
        self.idle_count += 1

    def forget(self, conn):
        """Drop a connection that closed while idle."""
        stack: IdleStack = self.idle.get(conn.target)
        if stack is not None and stack.remove(conn):
            self.idle_count -= 1

    def sweep(self, now):
        for target in list(self.idle):
            stack: IdleStack = self.idle[target]
            conns = stack.conns()
            keep = IdleStack()
            for conn in conns:
                if conn.state == C_IDLE and now - conn.idle_since <= self.idle_timeout:
                    keep.push(conn)
                else:
                    conn.abort()
            self.idle_count -= len(conns) - keep.count
            if keep.count:
                self.idle[target] = keep
            else:
                del self.idle[target]

    def close_all(self):
        for stack in self.idle.values():
            for conn in stack.conns():
                conn.abort()
        self.idle.clear()
        self.idle_count = 0


class H1Client(UpEnd):
    """One connection to an upstream speaking HTTP/1."""

    def __init__(self, pool, target, pooled):
        self.pool = pool
        self.target = target
        self.pooled = pooled
        self.tcp = pool.tcp
        self.opened_at = 0.0
        self.transport = None
        self.transport_write = None
        self.ex = None
        self.pending = None
        self.buf = b""
        self.head = None
        self.kind = BODY_NONE
        self.remaining = 0
        self.scanner = None
        self.state = C_CONNECTING
        self.head_request = False
        self.req_keeps = True
        self.chunked_req = False
        self.got_bytes = False
        self.reused = False
        self.reusable = True
        self.idle_since = 0.0
        self.reading_paused = False
        self.writing_paused = False
        self.credit_paused = False
        self.unreleased = 0
        self.dirty = False

    # -- asyncio protocol --------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        # Bound once: each request's head would otherwise look the method up on the transport's type.
        self.transport_write = transport.write
        pool = self.pool
        if pool.labels is not None:
            self.tcp = pool.labels.tcp_dst(self.target)
        self.tcp.opened += 1
        self.opened_at = now()
        transport.set_write_buffer_limits(pool.write_high, pool.write_high // 4)
        target = self.target
        if target.needs_header:
            # A peer proxy's inbound port: say which app port this HTTP/1 session is for.
            transport.write(transport_header.encode(target.mesh_port, transport_header.PROTO_HTTP1))
        ex = self.pending
        self.pending = None
        if ex is None:
            pool.release(self)
        else:
            self.attach(ex)

    def connect_failed(self, exc):
        self.state = C_DONE
        ex = self.pending
        self.pending = None
        if ex is not None:
            ex.upstream_failed(errors.connect_error(exc))

    def data_received(self, data):
        self.tcp.read_bytes += len(data)
        if self.ex is None:
            # Bytes from an upstream we asked nothing of: it is not speaking
            # HTTP/1 as agreed, so the connection cannot be trusted again.
            self.abort()
            return
        self.got_bytes = True
        if self.buf:
            self.buf += data
        else:
            self.buf = data
        batch_begin()
        try:
            if self.state == C_WAIT_HEAD:
                self.on_head()
            elif self.state == C_BODY:
                self.on_body(0)
            ex = self.ex
            if ex is not None:
                ex.flush_down()
        finally:
            batch_end_at_tick(self.pool.loop)

    def eof_received(self):
        if self.state == C_IDLE:
            # The upstream closed an idle connection: out of the pool now, so that no request
            # picks it before connection_lost arrives.
            self.state = C_DONE
            self.pool.forget(self)
            return False
        if self.state == C_BODY and self.kind == BODY_CLOSE and self.ex is not None:
            ex = self.detach(False)
            ex.response_data(b"", 0, True)
        return False

    def connection_lost(self, exc):
        state = self.state
        self.state = C_DONE
        pool = self.pool
        if self.transport is not None:
            self.tcp.close(self.opened_at, errno_of(exc))
        if state == C_IDLE:
            pool.forget(self)
            return
        ex = self.ex
        if ex is None:
            return
        self.ex = None
        if state == C_BODY and self.kind == BODY_CLOSE and exc is None:
            ex.response_data(b"", 0, True)
            return
        # A body read until close that ends in a reset was cut, not complete: the client must see a
        # truncation (its connection cut, or its stream reset), never a clean end.
        # A reused connection that died before any answer to an idempotent
        # request: the upstream closed it while idle, it never saw the request.
        safe = (state == C_WAIT_HEAD and self.reused and not self.got_bytes
                and ex.head is not None and ex.head.method in IDEMPOTENT)
        ex.upstream_reset(errors.Http1ConnectionLost(), safe)

    def pause_writing(self):
        self.writing_paused = True

    def resume_writing(self):
        self.writing_paused = False
        if self.ex is not None:
            self.ex.pump_up()

    def set_reading(self, on):
        """Pause or resume reading the upstream."""
        if self.transport is None or on != self.reading_paused:
            return
        self.reading_paused = not on
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    # -- the exchange's up end ---------------------------------------------
    def attach(self, ex):
        """Send ``ex``'s request on this connection."""
        self.ex = ex
        self.state = C_WAIT_HEAD
        self.buf = b""
        self.head = None
        self.got_bytes = False
        self.reusable = True
        self.unreleased = 0
        self.credit_paused = False
        self.head_request = ex.head.method == b"HEAD"
        head = ex.up_h1
        self.chunked_req = ex.up_chunked
        # An HTTP/1.0 request goes upstream as 1.0 without keep-alive (that
        # field is hop-by-hop): the upstream closes after answering it.
        self.req_keeps = ex.up_keeps
        self.write(head)
        self.set_reading(True)
        ex.attached(self, 0, False)

    def send(self, ex, data):
        if ex is not self.ex or self.writing_paused or self.transport is None:
            return 0
        if self.chunked_req:
            self.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.write(data)
        return len(data)

    def end_request(self, ex, trailers):
        if ex is not self.ex:
            return
        if self.chunked_req:
            if trailers:
                from proxy.http.convert import trailer_lines

                self.write(b"0\r\n" + trailer_lines(trailers) + b"\r\n")
            else:
                self.write(b"0\r\n\r\n")

    def release(self, ex, credit):
        if ex is not self.ex:
            return  # this connection has moved on: HTTP/1 has no credit to return
        self.unreleased -= credit
        if self.credit_paused and self.unreleased <= self.pool.write_high // 2:
            self.credit_paused = False
            self.set_reading(True)

    def cancel(self, ex):
        if ex is self.pending:
            self.pending = None  # the connect finishes into the pool, or fails quietly
            return
        if ex is not self.ex:
            return
        self.ex = None
        self.abort()

    # -- the response --------------------------------------------------------
    def on_head(self):
        ex = self.ex
        pool = self.pool
        status: cython.int
        while True:
            try:
                parsed = parse_response_head(self.buf, pool.max_header_bytes)
            except ParseError as err:
                self._bad(f"invalid response from upstream: {err.reason}")
                return
            if parsed is NEED_MORE:
                return
            head = parsed  # typed from here: its fields are read as C fields
            status = head.status
            consumed: cython.Py_ssize_t = head.consumed
            if 100 <= status < 200 and status != 101:
                # Interim response (100 Continue, 103 Early Hints): pass it on, wait for the final one.
                self.buf = bytes_range(self.buf, consumed, len(self.buf))
                ex.response_informational(status, head, None)
                if self.ex is not ex:
                    return
                continue
            break
        if status == 101:
            if not ex.upgrade or ex.head.method == b"CONNECT":
                self._bad("101 without an upgrade request")
                return
            rest = bytes_range(self.buf, consumed, len(self.buf))
            self.buf = b""
            self.state = C_DONE
            self.ex = None
            transport = self.transport
            self.transport = None  # the tunnel owns it now
            self.transport_write = None
            ex.upgraded(status, head, transport, rest)
            return
        self.head = head
        # Body framing per RFC 9112 6.3.
        length: cython.longlong = -1
        if self.head_request or status == 204 or status == 304:
            self.kind = BODY_NONE
            length = 0
            # A sloppy upstream may send a body after a HEAD response (or a
            # 204/304 that declared one) anyway; on a reused connection those
            # bytes would become the next client's answer. Such connections end here.
            if self.head_request or head.content_length > 0 or head.has_transfer_encoding:
                self.reusable = False
        elif head.chunked:
            self.kind = BODY_CHUNKED
            self.scanner = ChunkedScanner(502, 4096, pool.max_header_bytes, True)
        elif head.has_transfer_encoding:
            self.kind = BODY_CLOSE
        elif head.content_length >= 0:
            self.kind = BODY_LENGTH if head.content_length > 0 else BODY_NONE
            self.remaining = head.content_length
            length = head.content_length
        else:
            self.kind = BODY_CLOSE
        if not head.keep_alive or self.kind == BODY_CLOSE or not self.req_keeps:
            self.reusable = False
        self.buf = bytes_range(self.buf, consumed, len(self.buf)) if consumed < len(self.buf) else b""
        if self.kind == BODY_CHUNKED and self.buf:
            # Chunks that came with the head are checked before the head goes
            # on: a framing error there is still answered with a 502 instead
            # of a cut response. (The real scan repeats it, cheaply: chunk data
            # is skipped, not read.)
            try:
                ChunkedScanner(502, 4096, pool.max_header_bytes, False).scan(self.buf, 0, None)
            except ParseError as err:
                self._bad(f"invalid response body from upstream: {err.reason}")
                return
        if self.kind == BODY_NONE:
            self.detach(True)
            ex.response_head(status, head, None, length, True)
            return
        self.state = C_BODY
        ex.response_head(status, head, None, length, False)
        if self.ex is ex:
            self.on_body(0)

    def on_body(self, start: cython.Py_ssize_t):
        ex = self.ex
        buf = self.buf
        total: cython.Py_ssize_t = len(buf)
        n: cython.Py_ssize_t = total - start
        done: cython.bint = False
        kind = self.kind
        trailers = None
        if kind == BODY_LENGTH:
            if n >= self.remaining:
                n = self.remaining
                done = True
            self.remaining -= n
            data = buf if n == total else bytes_range(buf, 0, n)
            self.buf = bytes_range(buf, n, total) if n < total else b""
            credit = n
        elif kind == BODY_CHUNKED:
            pieces: list[bytes] = []
            try:
                end: cython.Py_ssize_t = self.scanner.scan(buf, 0, pieces)
            except ParseError as err:
                self._bad(f"invalid response body from upstream: {err.reason}")
                return
            done = self.scanner.done
            if done:
                trailers = self.scanner.trailers
            data = b"".join(pieces)
            self.buf = bytes_range(buf, end, total) if end < total else b""
            credit = end
        else:  # read until close
            data = buf
            self.buf = b""
            credit = total
        if done:
            ex = self.detach(not self.buf)
            if trailers:
                ex.response_data(data, credit, False)
                ex.response_trailers(trailers)
            else:
                ex.response_data(data, credit, True)
            return
        if not data and not credit:
            return
        self.unreleased += credit
        if self.unreleased > self.pool.write_high and not self.credit_paused:
            # The client is slower than the upstream: hold the rest in the upstream's socket.
            self.credit_paused = True
            self.set_reading(False)
        ex.response_data(data, credit, False)

    def detach(self, clean):
        """The response ended: leave the exchange (back to the pool when both messages ended cleanly)."""
        ex = self.ex
        self.ex = None
        self.scanner = None
        self.head = None
        self.state = C_DONE
        if clean and self.reusable and ex.up_ended and not self.buf:
            self.pool.release(self)
        else:
            self.abort()
        return ex

    def _bad(self, reason):
        ex = self.ex
        self.ex = None
        self.abort()
        if ex is not None:
            ex.upstream_reset(errors.BadResponse(reason), False)

    # -- writing -------------------------------------------------------------
    def write(self, data):
        self.tcp.write_bytes += len(data)
        self.transport_write(data)

    def write_out(self):
        pass  # nothing deferred: HTTP/1 writes go out as they are made

    def abort(self):
        self.state = C_DONE
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()


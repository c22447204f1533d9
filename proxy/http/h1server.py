"""HTTP/1 from clients: one connection's requests, parsed strictly, each handed to an exchange, answers framed back.

``H1Server`` is the protocol of an accepted connection speaking HTTP/1.
One exchange is in flight at a time (reused for every request of the
connection): pipelined requests wait in the read buffer, bounded, and are
answered in order. A request head must arrive whole within the header
timeout (408 otherwise). The body is de-framed (length or chunked, checked
chunk by chunk so a bad size stops the request before any of it goes on)
and handed to the exchange with its credit; reading stops while more than
the write high-water mark of it waits for the upstream. Responses are
framed for this client: forwarded as received when nothing must change,
re-chunked, or de-chunked for HTTP/1.0; writes stop being accepted while the
client's socket buffer is full, which holds the upstream back.
"""

import cython

from proxy import errors
from proxy.exchange.clock import now
from proxy.exchange.core import Exchange, spare_exchange, take_exchange, unbind_exchange
from proxy.exchange.ends import DownEnd
from proxy.http.batch import batch_begin, batch_end_at_tick
from proxy.http.convert import h1_response_from_fields, phrase, trailer_lines
from proxy.http.render import h1_error
from proxy.http.tunnel import splice
from proxy.protocol.http1 import (
    NEED_MORE,
    ChunkedScanner,
    ParseError,
    ResponseHead,
    bytes_range,
    parse_request_head,
    rewrite_head,
)
from proxy.telemetry.counters import errno_of

# How the request body ends.
REQ_NONE = cython.declare(cython.int, 0)
REQ_LENGTH = cython.declare(cython.int, 1)
REQ_CHUNKED = cython.declare(cython.int, 2)

# How the response body is framed for this client.
OUT_NONE = cython.declare(cython.int, 0)
OUT_RAW = cython.declare(cython.int, 1)  # as received: length-delimited, or read until close
OUT_CHUNKED = cython.declare(cython.int, 2)  # re-chunked here

# Why reading from the client is paused (a bit set: reading resumes when none is left).
PAUSE_BODY = cython.declare(cython.int, 1)  # request bytes waiting for the upstream above the limit
PAUSE_PIPELINE = cython.declare(cython.int, 2)  # read-ahead full while a request is in flight

_CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
_CLOSE = [(b"Connection", b"close")]
_KEEP_ALIVE = [(b"Connection", b"keep-alive")]
_CHUNKED = [(b"Transfer-Encoding", b"chunked")]
_NO_EXTRA: list[tuple[bytes, bytes]] = []
_DROP_TE = (b"transfer-encoding",)
_DROP_LENGTH = (b"content-length",)
_DROP_FRAMING = (b"content-length", b"transfer-encoding")


def _status_line(rh):
    """The head with a status line RFC 9112 allows: a status line without
    its space before the (empty) reason gets one, and a reason."""
    raw = rh.raw
    if raw[12] == 32:
        return raw
    return b"HTTP/1.%d %d %s" % (rh.version - 10, rh.status, phrase(rh.status)) + raw[12:]


class H1Server(DownEnd):
    """One client connection speaking HTTP/1 to the proxy."""

    def __init__(self, ctx, meta, first_byte_at=0.0):
        self.ctx = ctx
        self.meta = meta
        # The connection's TCP label set and open time: set by the accept stage, which counted it open.
        self.tcp = ctx.tcp_src
        self.opened_at = 0.0
        self.transport = None
        self.transport_write = None
        self.buf = b""
        self.ex = None
        self.head = None
        self.in_flight = False
        self.req_kind = REQ_NONE
        self.req_remaining = 0
        self.req_scanner = None
        self.req_done = True
        self.req_unreleased = 0
        self.out = OUT_NONE
        self.pending_head = None
        self.close_after = False
        self.client_eof = False
        self.paused = 0
        self.reading_paused = False
        self.writing_paused = False
        self.advancing = False
        self.idle_since = 0.0
        self.closed = False
        self.closing = False
        self.handed_off = False
        self.header_timer = None
        self.head_started = first_byte_at
        self.discarding = False  # reading and dropping the rest of an answered request's body
        self.discard_timer = None
        self.dirty = False

    # -- asyncio protocol --------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        # Bound once: two writes per request would each look the method up on the transport's type.
        self.transport_write = transport.write
        ctx = self.ctx
        transport.set_write_buffer_limits(ctx.write_high, ctx.write_high // 4)
        ctx.connections.add(self)
        self.idle_since = ctx.loop.time()

    def data_received(self, data):
        self.tcp.read_bytes += len(data)
        if self.closing or self.handed_off:
            return
        if self.buf:
            self.buf += data
        else:
            self.buf = data
        batch_begin()
        try:
            self.advance()
        finally:
            batch_end_at_tick(self.ctx.loop)

    def eof_received(self):
        self.client_eof = True
        if not self.in_flight:
            self.close()
            return False
        if not self.req_done:
            # The client stopped sending in the middle of its request body: the
            # upstream would wait for the rest forever.
            self.close_after = True
            self.ex.fail(errors.ClientError("client closed the connection before the request body ended"))
            return False
        return True  # half-closed client: still send it the response

    def connection_lost(self, exc):
        if self.closed:
            return
        self.closed = True
        ctx = self.ctx
        ctx.connections.discard(self)
        if not self.handed_off:
            self.tcp.close(self.opened_at, errno_of(exc))
        self._stop_header_timer()
        ex = self.ex
        if self.in_flight and ex is not None:
            ex.client_gone()  # it ends in exchange_done, which lets it go
        elif ex is not None:
            # The exchange points back at this connection: let go of (to the spares, for a new connection's
            # request), the pair is freed by reference counting now, not left to the cyclic collector.
            self.ex = None
            spare_exchange(ex)

    def idle(self):
        """The context's sweep (about once a second) found no request in flight: the exchange goes to the
        spares (or is freed), so an idle keep-alive connection holds none; the next request takes one."""
        ex = self.ex
        if ex is not None and not self.in_flight:
            self.ex = None
            spare_exchange(ex)

    def pause_writing(self):
        self.writing_paused = True

    def resume_writing(self):
        self.writing_paused = False
        if self.in_flight and self.ex is not None:
            self.ex.pump_down()

    # -- requests --------------------------------------------------------------
    def advance(self):
        """Make progress with what is buffered: a new head, body bytes, or read-ahead."""
        if self.advancing:
            return  # an exchange ended inside this loop: the loop goes on
        self.advancing = True
        try:
            while not self.closing and not self.handed_off:
                if self.discarding:
                    if not self._discard():
                        return
                    continue
                if not self.in_flight:
                    if not self.buf:
                        if self.client_eof:
                            self.close()
                        return
                    try:
                        head = parse_request_head(self.buf, self.ctx.max_header_bytes)
                    except ParseError as err:
                        self._reject(errors.ClientError(err.reason, status=err.status))
                        return
                    if head is NEED_MORE:
                        self._arm_header_timer()
                        return
                    self._stop_header_timer()
                    self.begin(head)
                elif not self.req_done:
                    if not self.buf:
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
        finally:
            self.advancing = False

    def begin(self, head):
        ctx = self.ctx
        consumed: cython.Py_ssize_t = head.consumed
        self.buf = bytes_range(self.buf, consumed, len(self.buf)) if consumed < len(self.buf) else b""
        self.head = head
        self.in_flight = True
        self.req_unreleased = 0
        self.out = OUT_NONE
        self.pending_head = None
        if not head.keep_alive or ctx.draining:
            self.close_after = True
        length: cython.longlong = -1
        if head.chunked:
            self.req_kind = REQ_CHUNKED
            self.req_scanner = ChunkedScanner(400, 4096, ctx.max_header_bytes, True)
            self.req_done = False
        elif head.content_length > 0:
            self.req_kind = REQ_LENGTH
            self.req_remaining = head.content_length
            self.req_done = False
            length = head.content_length
        else:
            # No body; after an Upgrade or CONNECT, what follows belongs to the tunnel.
            self.req_kind = REQ_NONE
            self.req_done = True
            length = 0
        ex = self.ex
        if ex is None:
            ex = take_exchange(ctx, self, self.meta)
            self.ex = ex
        ex.start(head, None, length, self.req_done)
        if self.in_flight and not self.req_done and self.buf:
            self.forward_body()

    def forward_body(self):
        """Hand the request-body bytes that are buffered to the exchange, framing removed."""
        buf = self.buf
        n: cython.Py_ssize_t
        trailers = None
        if self.req_kind == REQ_LENGTH:
            n = len(buf)
            if n > self.req_remaining:
                n = self.req_remaining
            self.req_remaining -= n
            data = buf if n == len(buf) else bytes_range(buf, 0, n)
            if self.req_remaining == 0:
                self.req_done = True
        else:
            pieces = []
            try:
                n = self.req_scanner.scan(buf, 0, pieces)
            except ParseError as err:
                self.req_done = True  # nothing more of it is read
                self.close_after = True
                self.ex.fail(errors.ClientError(err.reason, status=err.status))
                return
            data = b"".join(pieces)
            if self.req_scanner.done:
                self.req_done = True
                trailers = self.req_scanner.trailers
        self.buf = bytes_range(buf, n, len(buf)) if n < len(buf) else b""
        self.req_unreleased += n
        if self.req_unreleased > self.ctx.write_high:
            self.pause(PAUSE_BODY)
        ex = self.ex
        if trailers:
            ex.request_data(data, n, False)
            ex.request_trailers(trailers)
        else:
            ex.request_data(data, n, self.req_done)

    def _discard(self):
        """Drop buffered bytes of an answered request's body; True when the body ended and the connection goes on."""
        buf = self.buf
        if not buf:
            return False
        n: cython.Py_ssize_t
        if self.req_kind == REQ_LENGTH:
            n = len(buf) if len(buf) < self.req_remaining else self.req_remaining
            self.req_remaining -= n
            done: cython.bint = self.req_remaining == 0
        else:
            try:
                n = self.req_scanner.scan(buf, 0, None)
            except ParseError:
                self.close()  # its framing broke: nothing after it can be trusted
                return False
            done = self.req_scanner.done
        self.buf = bytes_range(buf, n, len(buf)) if n < len(buf) else b""
        if not done:
            return False
        self.discarding = False
        self.req_done = True
        if self.discard_timer is not None:
            self.discard_timer.cancel()
            self.discard_timer = None
        if self.close_after:
            self.close()
            return False
        return True

    def _discard_timed_out(self):
        self.discard_timer = None
        if self.discarding and not self.closed:
            self.close()

    def _reject(self, err):
        """A request the parser refused: answered here with the exchange's accounting, then the connection ends."""
        self.in_flight = True
        self.req_done = True
        self.close_after = True
        ex = self.ex
        if ex is None:
            ex = take_exchange(self.ctx, self, self.meta)
            self.ex = ex
        ex.reject(err)

    def _arm_header_timer(self):
        if self.header_timer is not None:
            return
        loop = self.ctx.loop
        now = loop.time()
        if self.head_started <= 0.0:
            self.head_started = now
        delay = self.head_started + self.ctx.header_timeout - now
        self.header_timer = loop.call_later(delay if delay > 0 else 0, self._header_timed_out)

    def _stop_header_timer(self):
        self.head_started = 0.0
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timed_out(self):
        self.header_timer = None
        if self.in_flight or self.closing or self.handed_off or self.closed:
            return
        self._reject(errors.HeaderTimeout(f"request head not complete within {self.ctx.header_timeout:g}s"))

    # -- the exchange's down end -------------------------------------------
    def send_informational(self, ex, status, h1head, fields):
        if self.head.version < 11:
            return  # HTTP/1.0 clients do not expect interim responses
        if h1head is not None:
            rh: ResponseHead = h1head
            # An interim response has no body: framing fields in one (and the
            # hop-by-hop ones) are the upstream's mistake, not passed on.
            self.write(rewrite_head(_status_line(rh), None, _DROP_FRAMING, False, _NO_EXTRA)
                       if rh.hop_by_hop or rh.content_length >= 0 or rh.has_transfer_encoding or rh.raw[12] != 32
                       else rh.raw)
        else:
            self.write(h1_response_from_fields(fields, False, False, None))

    def send_head(self, ex, status, h1head, fields, length, end):
        version = self.head.version
        keep: cython.bint = not self.close_after and not self.ctx.draining
        exch: Exchange = ex  # typed: its field is read as a C field, not looked up by name
        edit = exch.resp_edit
        if h1head is not None:
            rh: ResponseHead = h1head
            dechunk: cython.bint = False
            rechunk: cython.bint = False
            if end:
                self.out = OUT_NONE
            elif rh.chunked:
                if version >= 11:
                    self.out = OUT_CHUNKED
                else:
                    # An HTTP/1.0 client does not know chunked: plain bytes, and the close ends them.
                    self.out = OUT_RAW
                    dechunk = True
                    keep = False
            elif length < 0 and version >= 11:
                # The upstream ends the body by closing (an HTTP/1.0 app): that ends the upstream's
                # connection, not this client's, which gets the body chunked and stays usable.
                self.out = OUT_CHUNKED
                rechunk = True
            else:
                self.out = OUT_RAW
                if length < 0:
                    keep = False  # read until close upstream, and an HTTP/1.0 client learns the end the same way
            # RFC 9110 8.6: a 204 has no Content-Length; one an upstream sent anyway is dropped.
            no_length: cython.bint = status == 204 and rh.content_length >= 0
            # RFC 9110 2.5: a proxy answers in its own version; an HTTP/1.1 client told "HTTP/1.0" would
            # drop a connection that this proxy keeps.
            older: cython.bint = rh.version < 11 and version >= 11
            reason_ok: cython.bint = rh.raw[12] == 32  # "HTTP/1.1 200" without a reason: made whole below
            # "Connection: keep-alive" alone (what nginx sends) is kept as this proxy's own option for
            # the connection it keeps: RFC 9110 7.6.1 lets an intermediary replace the field with its
            # own options, and a rewritten head costs as much as parsing one.
            if (keep and (not rh.hop_by_hop or rh.only_keep_alive) and version >= 11 and edit is None
                    and not no_length and reason_ok and not older and not rechunk):
                head = rh.raw  # forwarded exactly as received
            else:
                drop = rh.connection_tokens + _DROP_TE if dechunk else rh.connection_tokens
                if no_length:
                    drop = drop + _DROP_LENGTH
                if not keep:
                    extra = _CLOSE
                elif version < 11:
                    extra = _KEEP_ALIVE
                else:
                    extra = _NO_EXTRA
                if rechunk:
                    extra = extra + _CHUNKED
                if edit is not None:
                    drop = drop + edit.drop
                    extra = list(extra) + list(edit.extra)
                raw = rh.raw if reason_ok else _status_line(rh)
                if older:
                    raw = b"HTTP/1.1" + raw[8:]
                head = rewrite_head(raw, None, drop, False, extra)
        else:
            chunked: cython.bint = False
            if end:
                self.out = OUT_NONE
            elif length >= 0:
                self.out = OUT_RAW
            elif version >= 11:
                self.out = OUT_CHUNKED
                chunked = True
            else:
                self.out = OUT_RAW
                keep = False  # an HTTP/1.0 client learns the end from the close
            head = h1_response_from_fields(fields, chunked, not keep, edit)
        if not keep:
            self.close_after = True
        if end:
            self.write(head)
            return
        # The body usually arrives in the same read: one write for both (a
        # write is the costliest part of a small response); at the end of the
        # upstream's read (flush_response) the head goes out alone if no body came with it.
        self.pending_head = head

    def send(self, ex, data):
        if self.writing_paused or self.closing:
            return 0
        if self.out == OUT_CHUNKED:
            out = b"%x\r\n%s\r\n" % (len(data), data)
        else:
            out = data
        head = self.pending_head
        if head is not None:
            self.pending_head = None
            out = head + out
        self.write(out)
        return len(data)

    def end_response(self, ex, trailers):
        out = self.pending_head
        self.pending_head = None
        if self.out == OUT_CHUNKED:
            tail = b"0\r\n" + trailer_lines(trailers) + b"\r\n" if trailers else b"0\r\n\r\n"
            out = out + tail if out is not None else tail
        if out is not None:
            self.write(out)

    def send_error(self, ex, err):
        close: cython.bint = err.closes or not self.req_done or self.close_after or self.ctx.draining
        if close:
            self.close_after = True
        self.pending_head = None
        self.write(h1_error(err, close))

    def cut(self, ex, err):
        # Part of a response already went out: the only honest signal left in
        # HTTP/1 is to cut the connection.
        self.pending_head = None
        self.close_after = True
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def tunnel(self, ex, status, h1head, transport, rest):
        """Hand both connections to a raw byte tunnel (101 Switching Protocols, CONNECT).

        Bytes the client sent after its request (already buffered) go to the
        upstream; bytes the upstream sent after its response head go to the client.
        """
        ctx = self.ctx
        self.handed_off = True
        self._stop_header_timer()
        ctx.connections.discard(self)
        head = h1head.raw if h1head is not None else _CONNECT_ESTABLISHED
        self.write(head)
        pending = self.buf
        self.buf = b""
        # The upstream's label set is its target's (the one its connection counted open on).
        labels = ctx.labels
        up_tcp = ctx.tcp_dst if labels is None or ex.target is None else labels.tcp_dst(ex.target)
        return splice(self.transport, transport, self.tcp, up_tcp, pending, rest, self.opened_at)[0]

    def release(self, ex, credit):
        self.req_unreleased -= credit
        if self.paused & PAUSE_BODY and self.req_unreleased <= self.ctx.write_high // 2:
            self.resume(PAUSE_BODY)

    def exchange_done(self, ex):
        """The exchange ended: the next pipelined request, or the end of the connection."""
        if self.pending_head is not None:
            self.flush_response(ex)
        self.in_flight = False
        self.head = None
        self.req_unreleased = 0
        if self.handed_off:
            return
        if self.closed:
            # The client left mid-request. The spares hold it before this lets go (a caller up the stack may
            # borrow this connection's reference); with them full it stays, no longer pointing back here (no
            # cycle: both are freed by reference counting).
            if spare_exchange(ex):
                self.ex = None
            else:
                unbind_exchange(ex)
            return
        self.idle_since = now()
        if not self.req_done and not self.client_eof:
            # Answered before the request body ended (an app refusing an upload
            # early): the rest of the body is read and dropped, within the header
            # timeout, so the next request can be found and the client, still
            # sending, is not reset before it reads the answer.
            self.discarding = True
            delay = self.ctx.header_timeout
            self.discard_timer = self.ctx.loop.call_later(delay if delay > 0 else 10.0, self._discard_timed_out)
        elif not self.req_done or self.close_after or (self.client_eof and not self.buf):
            self.close()
            return
        self.resume(PAUSE_PIPELINE | PAUSE_BODY)
        if not self.advancing:
            self.advance()

    # -- helpers -------------------------------------------------------------
    def flush_response(self, ex):
        """End of the upstream's read: a response head held for its body goes out alone."""
        head = self.pending_head
        if head is not None and not self.closed:
            self.pending_head = None
            self.write(head)

    def write(self, data):
        self.tcp.write_bytes += len(data)
        self.transport_write(data)

    def pause(self, reason):
        self.paused |= reason
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume(self, reason):
        self.paused &= ~reason
        if self.paused == 0 and self.reading_paused and not self.closed and not self.handed_off:
            self.reading_paused = False
            self.transport.resume_reading()

    def begin_drain(self):
        self.close_after = True
        if not self.in_flight:
            self.close()

    def close(self):
        # Whatever is still buffered is never looked at again: after an error
        # it is the rest of a rejected request.
        self.closing = True
        self.buf = b""
        self._stop_header_timer()
        if self.discard_timer is not None:
            self.discard_timer.cancel()
            self.discard_timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

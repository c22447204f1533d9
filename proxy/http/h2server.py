"""HTTP/2 from clients: every stream of a client's connection is its own exchange, routed and balanced on its own.

``H2Server`` speaks HTTP/2 (server role, ``proxy.protocol.h2conn``) to a
client; each request stream becomes an ``Exchange`` (so one long-lived
gRPC connection spreads its calls over all endpoints). Flow control is the
backpressure: DATA a client sent is acknowledged (WINDOW_UPDATE) only when
the upstream took it, response bytes are sent only within the client's
windows and the rest waits in the exchange with its credit, so at most a
stream window is buffered per stream.
"""

import time

import cython

from proxy import errors
from proxy.exchange.core import Exchange
from proxy.exchange.ends import DownEnd
from proxy.http.batch import batch_begin, batch_defer, batch_end
from proxy.http.convert import content_length, fields_from_h1_response, h2_response_fields, h2_trailers
from proxy.http.render import grpc_trailers, h2_error, is_grpc
from proxy.protocol import h2conn
from proxy.protocol.h2conn import (
    ConnectionTerminated,
    DataReceived,
    HeaderListTooLarge,
    RequestReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from proxy.protocol.h2frame import INTERNAL_ERROR, NO_ERROR
from proxy.protocol.http1 import valid_request_target
from proxy.protocol.l5d import CLIENT_ID
from proxy.protocol.request import h2_request_line
from proxy.telemetry.counters import errno_of

# Both HTTP/2 connection classes are buffered protocols: over TLS, uvloop
# otherwise decrypts every read into a fresh 256 KiB bytes object (an mmap, an
# mremap and a munmap per read; ~4% of a meshed hop's CPU). It decrypts into
# this buffer instead, and buffer_updated copies out exactly what arrived
# before anything else runs, so one buffer serves every connection of the loop.
READ_BUFFER = memoryview(bytearray(256 * 1024))


def _down_id(ex):
    # Through the Exchange's struct: the relay entry points take an untyped ex (DownEnd's signature), and
    # reading the attribute generically costs a few hundred instructions a call.
    return cython.cast(Exchange, ex, typecheck=True).down_id


def _client_id_headers(headers, client_id):
    """Inbound: only this proxy speaks for the client's identity; a client's own l5d-client-id goes."""
    out = []
    ours = CLIENT_ID  # typed (and looked up once): each name is compared by length and memcmp
    for field in headers:  # each field as it came (a never-indexed one stays so: RFC 7541 7.1.3)
        name = field[0]  # validated: a bytes name
        if name != ours:
            out.append(field)
    if client_id is not None:
        out.append((CLIENT_ID, client_id))
    return out


def _path(headers):
    for name, value in headers:
        if name == b":path":
            return value
    return None


def _authority_conflict(headers):
    """A ``host`` field naming another authority than ``:authority`` (RFC 9113 8.3.1: malformed)."""
    authority = host = None
    for name, value in headers:
        if name == b":authority":
            authority = value
        elif name == b"host":
            if host is not None:
                return True
            host = value
    return authority is not None and host is not None and host != authority


class H2Server(DownEnd):
    """A client's HTTP/2 connection to the proxy (server role)."""

    def __init__(self, ctx, meta, settings):
        self.ctx = ctx
        self.meta = meta
        # The connection's TCP label set and open time: set by the accept stage, which counted it open.
        self.tcp = ctx.tcp_src
        self.opened_at = 0.0
        self.conn = h2conn.H2Connection(False, settings)
        self.transport = None
        self.exchanges = {}
        self.closed = False
        self.idle_since = 0.0
        self.in_flight = False  # for the idle sweeper: true while streams are open
        self.draining = False
        self.writing_paused = False
        self.dirty = False
        self.reset_now = None  # streams the client reset in the read being dispatched
        self.inbound = meta.direction == "inbound"
        self.client_id = meta.client_id.encode("ascii") if meta.client_id else None

    def connection_made(self, transport):
        self.transport = transport
        self.ctx.connections.add(self)
        self.idle_since = self.ctx.loop.time()
        self.conn.initiate()
        self.flush()

    def get_buffer(self, sizehint):
        return READ_BUFFER

    def buffer_updated(self, nbytes):
        self.data_received(READ_BUFFER[:nbytes].tobytes())

    def data_received(self, data):
        self.tcp.read_bytes += len(data)
        batch_begin()
        try:
            events = self.conn.receive_data(data, int(time.monotonic() * 1000))
            self.reset_now = None
            for event in events:
                if type(event) is StreamReset:
                    if self.reset_now is None:
                        self.reset_now = set()
                    self.reset_now.add(cython.cast(StreamReset, event).stream_id)
            for event in events:
                self.dispatch(event)
            self.reset_now = None
            self.in_flight = bool(self.exchanges)
            if not self.in_flight:
                self.idle_since = self.ctx.loop.time()
            self.flush()
        finally:
            batch_end()
        if self.conn.dead:
            self.close()  # after a connection error GOAWAY (RFC 9113 5.4.1)
        else:
            self.close_if_drained()

    def dispatch(self, event):
        # Compiled, each kind is compared as a type and read as a struct (see H2Client.dispatch).
        kind = type(event)
        if kind is RequestReceived:
            req = cython.cast(RequestReceived, event)
            reset_now = self.reset_now
            if reset_now is not None and req.stream_id in reset_now:
                # Opened and reset in one read (rapid reset, CVE-2023-44487): never
                # started, so nothing reaches an upstream, least of all the shared
                # connection to a peer proxy that would count the resets against it.
                return
            self._request(req.stream_id, req.headers, req.end_stream)
        elif kind is DataReceived:
            chunk = cython.cast(DataReceived, event)
            ex = self.exchanges.get(chunk.stream_id)
            if ex is None:
                self.conn.acknowledge_received(chunk.stream_id, chunk.flow_controlled_length)
            else:
                ex.request_data(chunk.data, chunk.flow_controlled_length, chunk.end_stream)
        elif kind is TrailersReceived:
            trailers = cython.cast(TrailersReceived, event)
            ex = self.exchanges.get(trailers.stream_id)
            if ex is not None:
                ex.request_trailers(trailers.headers)
        elif kind is StreamReset:
            ex = self.exchanges.get(cython.cast(StreamReset, event).stream_id)
            if ex is not None:
                ex.client_gone()
        elif kind is WindowUpdated:
            sid = cython.cast(WindowUpdated, event).stream_id
            if sid == 0:
                for other in list(self.exchanges.values()):
                    other.pump_down()
            else:
                ex = self.exchanges.get(sid)
                if ex is not None:
                    ex.pump_down()
        elif kind is HeaderListTooLarge:
            self.ctx.stats.requests += 1
            self.ctx.stats.record_response(431, 0.0, True)
        elif kind is ConnectionTerminated:
            if not cython.cast(ConnectionTerminated, event).remote:
                # We found the client broken: its streams end with the connection.
                for other in list(self.exchanges.values()):
                    other.client_gone()
            # A client's GOAWAY names the last *pushed* stream it accepts: its
            # own requests in flight are still to be answered.

    def _request(self, sid, headers, end_stream):
        if self.inbound:
            headers = _client_id_headers(headers, self.client_id)
        ex = Exchange(self.ctx, self, self.meta, sid)
        self.exchanges[sid] = ex
        if _authority_conflict(headers):
            ex.reject(errors.ClientError("host differs from :authority"))
            return
        path = _path(headers)
        if path is not None and path != b"*" and not valid_request_target(path):
            # Held to what HTTP/1 ingress accepts: the next hop may be HTTP/1.
            ex.reject(errors.ClientError("invalid :path"))
            return
        length = 0 if end_stream else content_length(headers)
        ex.start(h2_request_line(headers), headers, length, end_stream)

    # -- the exchanges' down end -------------------------------------------
    def send_informational(self, ex, status, h1head, fields):
        out = h2_response_fields(fields, None) if fields is not None else fields_from_h1_response(h1head, None)
        self._headers(_down_id(ex), out, False)
        self.flush()

    def send_head(self, ex, status, h1head, fields, length, end):
        sid = _down_id(ex)  # checks ex is an Exchange
        edit = cython.cast(Exchange, ex).resp_edit
        if fields is not None:
            out = h2_response_fields(fields, edit)
        else:
            out = fields_from_h1_response(h1head, edit)
        self._headers(sid, out, end)
        self.flush()

    def send(self, ex, data):
        try:
            n = self.conn.send_data(_down_id(ex), data, False)
        except h2conn.H2UsageError:
            return len(data)  # the client reset the stream meanwhile: nobody to send it to
        self.flush()
        return n

    def end_response(self, ex, trailers):
        sid = _down_id(ex)
        try:
            fields = h2_trailers(trailers) if trailers else None
            if fields:
                self.conn.send_headers(sid, fields, True)
            else:
                self.conn.end_stream(sid)
        except h2conn.H2UsageError:
            # Reset meanwhile, or trailers HTTP/2 cannot carry: the stream must still end.
            self.conn.reset_stream(sid, NO_ERROR)
        self.flush()

    def flush_response(self, ex):
        self.flush()

    def send_error(self, ex, err):
        fields, body = h2_error(err, ex.headers)
        sid = _down_id(ex)
        if not body:  # a gRPC trailers-only answer
            self._headers(sid, fields, True)
            self.flush()
            return
        self._headers(sid, fields, False)
        try:
            sent = self.conn.send_data(sid, body, True)
        except h2conn.H2UsageError:
            sent = len(body)
        if sent < len(body):
            # A client with no window left for a one-line body: the status went out, end the stream.
            self.conn.reset_stream(sid, NO_ERROR)
        self.flush()

    def cut(self, ex, err):
        sid = _down_id(ex)
        if is_grpc(ex.headers):
            # A gRPC call whose response had started ends with its status in trailers, as Linkerd does:
            # the client learns why (UNAVAILABLE, DEADLINE_EXCEEDED...) instead of a bare reset.
            try:
                self.conn.send_headers(sid, grpc_trailers(err), True)
                self.flush()
                return
            except h2conn.H2UsageError:
                pass  # the stream is gone or half-closed by us already: only a reset can end it
        self.conn.reset_stream(sid, err.reset_code)
        self.flush()

    def tunnel(self, ex, status, h1head, transport, rest):
        # Unreachable: the dispatcher refuses CONNECT from HTTP/2 clients and
        # HTTP/2 requests carry no Upgrade.
        transport.abort()
        self.conn.reset_stream(_down_id(ex), INTERNAL_ERROR)
        self.flush()
        return None

    def release(self, ex, credit):
        if credit > 0:
            self.conn.acknowledge_received(_down_id(ex), credit)
            self.flush()

    def exchange_done(self, ex):
        sid = _down_id(ex)
        self.exchanges.pop(sid, None)
        if not cython.cast(Exchange, ex).req_ended and not cython.cast(Exchange, ex).down_gone:
            # Answered before the request ended: tell the client to stop
            # sending (RFC 9113 8.1), which also settles its window.
            self.conn.reset_stream(sid, NO_ERROR)
        if not self.exchanges:
            self.in_flight = False
            self.idle_since = self.ctx.loop.time()
        self.flush()
        if self.draining:
            self.close_if_drained()

    def _headers(self, sid, fields, end):
        try:
            self.conn.send_headers(sid, fields, end)
        except h2conn.H2UsageError:
            pass  # the client reset the stream or the connection is gone

    # -- writing -------------------------------------------------------------
    def flush(self):
        if not batch_defer(self):
            self.write_out()

    def write_out(self):
        if self.writing_paused or self.transport is None or self.closed:
            return  # frames stay queued in the connection (bounded by flow control and its limits)
        out = self.conn.data_to_send()
        if out:
            self.tcp.write_bytes += len(out)
            self.transport.write(out)

    # -- lifecycle -------------------------------------------------------------
    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if self.closed:
            return
        self.closed = True
        self.ctx.connections.discard(self)
        self.tcp.close(self.opened_at, errno_of(exc))
        for ex in list(self.exchanges.values()):
            ex.client_gone()

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

    def idle(self):
        """The context's sweep found no stream open: nothing to let go of (its exchanges are per stream)."""

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

"""HTTP/2 to upstreams: multiplexed client connections per target, each stream one exchange's attempt.

``H2Client`` carries attempts as streams of one connection (client role);
``H2Pool`` keeps them per target and opens another when the peer's stream
limit is reached. The request body is sent within the peer's windows (the
rest waits in the exchange with its credit); response DATA is acknowledged
only when the client took it. A stream the peer refused (REFUSED_STREAM,
or above a GOAWAY's last id) is reported retry-safe; a connection lost
with streams open is not. Meshed peers are addressed at their inbound
port with a transport header naming the app port first.

An endpoint nothing says speaks HTTP/2 (not a peer proxy, no discovery hint)
may be an HTTP/1-only app that an HTTP/2 client reached: the first
connection to it sends the connection preface but holds requests back until
the server's first bytes. An answer that is not HTTP/2 (an HTTP/1 server refusing the
preface) means no request was sent: the pool remembers the address and
hands the held requests to HTTP/1 (``fallback``), as every later one to it.
"""

import time

import cython

from proxy import errors
from proxy.exchange.clock import now
from proxy.exchange.core import Exchange
from proxy.exchange.ends import UpEnd
from proxy.http.batch import batch_begin, batch_defer, batch_end
from proxy.http.convert import content_length, h2_trailers
from proxy.http.h2server import READ_BUFFER
from proxy.protocol import h2conn, transport_header
from proxy.protocol.h2conn import (
    ConnectionTerminated,
    DataReceived,
    HeaderListTooLarge,
    InformationalResponseReceived,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from proxy.protocol.h2frame import CANCEL, ERROR_CODE_NAMES, NO_ERROR, REFUSED_STREAM
from proxy.telemetry.counters import errno_of
from proxy.telemetry.logging import get_logger

# Addresses whose protocol was learned by a first connection; beyond this many the map starts over
# (an address learned again costs one held first request). What is learned is probed again after
# LEARNED_TTL seconds: an address can be given to another app (a pod's IP in Kubernetes).
LEARNED_MAX = 4096
LEARNED_TTL = 300.0

log = get_logger("proxy.http")


def _up_id(ex):
    # Through the Exchange's struct: the relay entry points take an untyped ex (UpEnd's signature), and
    # reading the attribute generically costs a few hundred instructions a call.
    return cython.cast(Exchange, ex, typecheck=True).up_id


def _status(fields):
    for name, value in fields:
        if name == b":status":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class H2Pool:
    """Upstream HTTP/2 connections per target; new streams go to the newest open one."""

    def __init__(self, loop, connector, tcp_stats, settings, max_connections_per_target=4):
        self.loop = loop
        self.connector = connector
        self.tcp = tcp_stats
        self.labels = None  # proxy.telemetry.labels.LabelSets: each connection's label set by target
        self.settings = settings
        self.max_per_target = max_connections_per_target
        self.conns = {}  # target -> list[H2Client]
        self.http1_learned = 0  # entries of learned that say HTTP/1 (expired ones too)
        self.learned = {}  # (host, port) -> (speaks HTTP/1 only, until), for endpoints nothing says the protocol of
        self.fallback = None  # (exchange, target) -> None: an attempt goes over HTTP/1 instead
        self.probe_timeout = 3.0  # seconds for a probed server's first bytes (MESHPROXY_CONNECT_TIMEOUT)
        self.idle_timeout = 0.0  # a connection with no stream this long closes (MESHPROXY_POOL_IDLE_TIMEOUT; 0: never)

    def speaks_http1(self, target):
        """Whether a first connection found this endpoint answering HTTP/1 to the HTTP/2 preface."""
        if self.http1_learned == 0:  # the usual case, asked per request: no key built, no lookup
            return False
        found = self.learned.get((target.host, target.port))
        return found is not None and found[0] and found[1] > now()

    def knows(self, target):
        found = self.learned.get((target.host, target.port))
        return found is not None and found[1] > now()

    def learn(self, target, http1):
        learned = self.learned
        key = (target.host, target.port)
        found = learned.get(key)
        if found is not None and found[0]:
            self.http1_learned -= 1
        if len(learned) >= LEARNED_MAX:
            learned.clear()
            self.http1_learned = 0
        learned[key] = (http1, now() + LEARNED_TTL)
        if http1:
            self.http1_learned += 1

    def open(self, ex, target):
        clients = self.conns.get(target)
        if clients:
            client: H2Client = clients[len(clients) - 1]
            if client.can_open() and not client.conn.saturated:
                client.open(ex)
                return
            # Stalled clients fill that connection's buffer: its window is
            # held back, and a new stream there would wait for them. Another
            # connection (within the per-target limit) keeps the rest flowing.
            for other in reversed(clients):
                if other.can_open() and not other.conn.saturated:
                    other.open(ex)
                    return
            if len(clients) >= self.max_per_target:
                for other in reversed(clients):
                    if other.can_open():
                        other.open(ex)
                        return
        self._new(target).open(ex)

    def open_elsewhere(self, full, ex):
        clients = self.conns.get(full.target, [])
        for client in reversed(clients):
            if client is not full and client.can_open() and client.conn.open_streams < full.conn.open_streams:
                client.open(ex)
                return
        if len(clients) >= self.max_per_target:
            ex.upstream_failed(errors.LoadShed("load shed: upstream concurrency limit reached"))
            return
        self._new(full.target).open(ex)

    def _new(self, target):
        client = H2Client(self, target)
        self.conns.setdefault(target, []).append(client)
        self.connector(target, client)
        return client

    def forget(self, client):
        clients = self.conns.get(client.target)
        if clients and client in clients:
            clients.remove(client)
            if not clients:
                del self.conns[client.target]

    def sweep(self, now):
        """Close connections that carried no stream for ``idle_timeout`` (gracefully: GOAWAY, then close), so
        a peer that left discovery, or a burst's extra connections, do not stay open for ever."""
        limit = self.idle_timeout
        if limit <= 0:
            return
        for clients in list(self.conns.values()):
            for client in list(clients):
                if client.connected and not client.exchanges and not client.waiting and not client.dead \
                        and now - client.idle_since > limit:
                    client.close_idle()

    def close_all(self):
        for clients in list(self.conns.values()):
            for client in list(clients):
                client.conn.close(NO_ERROR)
                client.flush()


class H2Client(UpEnd):
    """One multiplexed HTTP/2 connection to an upstream target (client role)."""

    def __init__(self, pool, target):
        self.pool = pool
        self.target = target
        self.tcp = pool.tcp
        self.opened_at = 0.0
        self.conn = h2conn.H2Connection(True, pool.settings)
        self.transport = None
        self.exchanges = {}  # upstream stream id -> Exchange
        self.waiting = []  # exchanges to open once connected
        self.heads = []  # exchanges that got a response head in the read being processed
        self.connected = False
        self.dead = False
        self.dirty = False
        self.idle_since = 0.0  # when its last stream ended (or it connected)
        # Requests wait for the server's first bytes: see the module's docstring.
        self.probing = (target.mesh_port == 0 and target.protocol is None and pool.fallback is not None
                        and not pool.knows(target))
        self.probe_timer = None
        self.too_large = 0  # the stream whose response head was over our limit (its reset follows)
        self.broke = None  # why we closed the connection on the upstream (a GOAWAY of ours), for its streams
        self.goaway_last = -1  # the last stream id of the upstream's GOAWAY (-1: none came)
        self.goaway_code = 0

    def connection_made(self, transport):
        self.transport = transport
        self.connected = True
        if self.pool.labels is not None:
            self.tcp = self.pool.labels.tcp_dst(self.target)
        self.tcp.opened += 1
        self.opened_at = now()
        self.idle_since = self.opened_at
        target = self.target
        if target.needs_header:
            # A peer proxy's inbound port: say which app port this HTTP/2 session is for.
            transport.write(transport_header.encode(target.mesh_port, transport_header.PROTO_HTTP))
        self.conn.initiate()
        if self.probing:
            # A server that says nothing (neither SETTINGS nor an HTTP/1 refusal) must not hold requests forever.
            self.probe_timer = self.pool.loop.call_later(self.pool.probe_timeout, self._probe_timed_out)
        else:
            self._open_waiting()
        self.flush()

    def _probe_timed_out(self):
        self.probe_timer = None
        if not self.probing:
            return
        self.probing = False
        self.dead = True
        self.pool.forget(self)
        waiting, self.waiting = self.waiting, []
        err = errors.ConnectTimeout("upstream sent nothing after the HTTP/2 preface")
        for ex in waiting:
            if not ex.done:
                ex.upstream_failed(err)
        if self.transport is not None:
            self.transport.close()

    def _open_waiting(self):
        waiting, self.waiting = self.waiting, []
        for ex in waiting:
            if not ex.done:
                self.open(ex)

    def _probed(self, data):
        """The server's first bytes: HTTP/2 (the held requests go) or an HTTP/1 refusal of the preface
        (they go over HTTP/1; this connection ends). True when ``data`` is to be read as HTTP/2.

        An HTTP/2 server's first frame is its SETTINGS (type 4 in the frame header's fourth byte); an
        HTTP/1 server answers the preface's ``PRI * HTTP/2.0`` line with an error, which may not even
        start with a status line (Python's http.server sends the bare page)."""
        self.probing = False
        if self.probe_timer is not None:
            self.probe_timer.cancel()
            self.probe_timer = None
        if len(data) < 4 or data[3] == 4:
            self.pool.learn(self.target, False)
            self._open_waiting()
            return True
        self.pool.learn(self.target, True)
        log.info("upstream does not speak HTTP/2: its requests go over HTTP/1", upstream=str(self.target))
        self.dead = True
        self.pool.forget(self)
        self.transport.close()
        waiting, self.waiting = self.waiting, []
        for ex in waiting:
            if not ex.done:
                self.pool.fallback(ex, self.target)
        return False

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
        """Start the exchange's request on a new stream."""
        if not self.connected or self.probing:
            self.waiting.append(ex)
            ex.connecting(self)
            return
        end = ex.req_ended and not ex.up_queue and ex.req_trailers is None
        try:
            sid = self.conn.send_request(ex.up_fields, end)
        except (h2conn.StreamLimitReached, h2conn.ConnectionClosing):
            self.pool.open_elsewhere(self, ex)
            return
        self.exchanges[sid] = ex
        ex.attached(self, sid, end)
        self.flush()

    # -- the exchanges' up end ---------------------------------------------
    def send(self, ex, data):
        try:
            n = self.conn.send_data(_up_id(ex), data, False)
        except h2conn.H2UsageError:
            return 0  # reset meanwhile: the reset's event says what happened
        self.flush()
        return n

    def end_request(self, ex, trailers):
        sid = _up_id(ex)
        try:
            fields = h2_trailers(trailers) if trailers else None
            if fields:
                self.conn.send_headers(sid, fields, True)
            else:
                self.conn.end_stream(sid)
        except h2conn.H2UsageError:
            # Reset meanwhile, or trailers HTTP/2 cannot carry: the stream must still end.
            self.conn.reset_stream(sid, CANCEL)
        self.flush()

    def release(self, ex, credit):
        if credit > 0 and not self.dead:
            self.conn.acknowledge_received(_up_id(ex), credit)
            self.flush()

    def cancel(self, ex):
        if ex in self.waiting:
            self.waiting.remove(ex)
            return
        sid = _up_id(ex)
        if self.exchanges.get(sid) is ex:
            del self.exchanges[sid]
            if not self.exchanges:
                self.idle_since = now()
        if not self.dead:
            # A stream still open is reset; for one already closed this only
            # gives back what it delivered and nobody acknowledged.
            self.conn.reset_stream(sid, CANCEL)
            self.flush()
        if not self.exchanges and self.conn.closing and self.transport is not None:
            self.transport.close()

    def close_idle(self):
        self.pool.forget(self)
        self.conn.close(NO_ERROR)
        self.write_out()  # the GOAWAY; with no stream left, the transport closes after it
        self.dead = True

    # -- reading -------------------------------------------------------------
    def get_buffer(self, sizehint):
        return READ_BUFFER

    def buffer_updated(self, nbytes):
        self.data_received(READ_BUFFER[:nbytes].tobytes())

    def data_received(self, data):
        self.tcp.read_bytes += len(data)
        if self.probing and not self._probed(data):
            return
        batch_begin()
        try:
            for event in self.conn.receive_data(data, int(time.monotonic() * 1000)):
                self.dispatch(event)
            heads = self.heads
            if heads:
                # Response heads whose body did not come in this read go out alone now.
                self.heads = []
                for ex in heads:
                    ex.flush_down()
            self.flush()
        finally:
            batch_end()
        if self.conn.dead and self.transport is not None:
            self.transport.close()

    def dispatch(self, event):
        # Compiled, each kind is compared as a type and read as a struct: per event, no module
        # attribute lookups, no getattr, and the exchange's methods called directly.
        kind = type(event)
        if kind is ResponseReceived:
            head = cython.cast(ResponseReceived, event)
            ex = self.exchanges.get(head.stream_id)
            if ex is not None:
                fields = head.headers
                end = head.end_stream
                ex.response_head(_status(fields), None, fields, 0 if end else content_length(fields), end)
                if not end:
                    self.heads.append(ex)
        elif kind is DataReceived:
            chunk = cython.cast(DataReceived, event)
            ex = self.exchanges.get(chunk.stream_id)
            if ex is None:
                self.conn.acknowledge_received(chunk.stream_id, chunk.flow_controlled_length)
            else:
                ex.response_data(chunk.data, chunk.flow_controlled_length, chunk.end_stream)
        elif kind is InformationalResponseReceived:
            info = cython.cast(InformationalResponseReceived, event)
            ex = self.exchanges.get(info.stream_id)
            if ex is not None:
                ex.response_informational(_status(info.headers), None, info.headers)
        elif kind is TrailersReceived:
            trailers = cython.cast(TrailersReceived, event)
            ex = self.exchanges.get(trailers.stream_id)
            if ex is not None:
                ex.response_trailers(trailers.headers)
        elif kind is StreamReset:
            reset = cython.cast(StreamReset, event)
            ex = self.exchanges.get(reset.stream_id)
            if ex is not None:
                del self.exchanges[reset.stream_id]
                if not self.exchanges:
                    self.idle_since = now()
                code = reset.error_code
                if reset.remote and code == REFUSED_STREAM and 0 <= self.goaway_last < reset.stream_id:
                    # Refused by the upstream's GOAWAY (it comes first): Linkerd tells it from a reset.
                    ex.upstream_reset(errors.StreamGoAway(self.goaway_code), True)
                elif reset.remote:
                    ex.upstream_reset(errors.StreamReset(code), code == REFUSED_STREAM)
                elif reset.stream_id == self.too_large:
                    ex.upstream_reset(errors.UpstreamBroke("response head over the header list limit "
                                                           "(MESHPROXY_MAX_HEADER_BYTES)"), False)
                else:  # our reset: the upstream broke a stream rule (its head, its window...)
                    ex.upstream_reset(errors.UpstreamBroke(
                        f"upstream broke HTTP/2 on the stream ({ERROR_CODE_NAMES.get(code, code)})"), False)
            self.too_large = 0
        elif kind is HeaderListTooLarge:  # a StreamReset of ours follows at once
            self.too_large = cython.cast(HeaderListTooLarge, event).stream_id
        elif kind is WindowUpdated:
            sid = cython.cast(WindowUpdated, event).stream_id
            if sid == 0:
                for other in list(self.exchanges.values()):
                    other.pump_up()
            else:
                ex = self.exchanges.get(sid)
                if ex is not None:
                    ex.pump_up()
        elif kind is ConnectionTerminated:
            self.pool.forget(self)
            terminated = cython.cast(ConnectionTerminated, event)
            if terminated.remote:
                self.goaway_last = terminated.last_stream_id
                self.goaway_code = terminated.error_code
            else:  # our GOAWAY: the streams still open fail for the upstream's fault
                code = terminated.error_code
                self.broke = (f"upstream broke HTTP/2 ({ERROR_CODE_NAMES.get(code, code)}: "
                              f"{terminated.debug.decode('ascii', 'replace')})")

    # -- writing -------------------------------------------------------------
    def flush(self):
        if not batch_defer(self):
            self.write_out()

    def write_out(self):
        if self.transport is None or self.dead:
            return
        out = self.conn.data_to_send()
        if out:
            self.tcp.write_bytes += len(out)
            self.transport.write(out)
        if not self.exchanges and self.conn.closing and not self.waiting:
            self.transport.close()

    # -- lifecycle -------------------------------------------------------------
    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.dead = True
        self.probing = False
        if self.probe_timer is not None:
            self.probe_timer.cancel()
            self.probe_timer = None
        self.pool.forget(self)
        if self.connected:
            self.tcp.close(self.opened_at, errno_of(exc))
        exchanges, self.exchanges = self.exchanges, {}
        for ex in exchanges.values():
            # Whether the upstream processed these is unknown: not retry-safe.
            ex.upstream_reset(errors.UpstreamReset() if self.broke is None else errors.UpstreamBroke(self.broke),
                              False)
        waiting, self.waiting = self.waiting, []
        for ex in waiting:
            # Held while the server's first bytes were awaited: it closed without any, nothing was sent.
            if not ex.done:
                ex.upstream_reset(errors.UpstreamReset("upstream closed the connection before speaking HTTP/2"),
                                  True)

    def pause_writing(self):
        pass  # bounded by the peer's flow-control windows

    def resume_writing(self):
        pass

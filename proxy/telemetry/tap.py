"""Tap: live request events for Linkerd's tap API, matched and encoded per request (compiled).

The hub holds the open tap streams (``TapSession``). An exchange asks it
once, when its request has a destination (``observe``), which streams want
the request; each that does gets a ``TapRecord`` that encodes the request's
``request_init``, ``response_init`` and ``response_end`` events
(io.linkerd.proxy.tap.TapEvent), frames them as gRPC messages and hands them
to its session's buffer, which the tap server drains onto its HTTP/2 stream
(proxy/telemetry/tapserver.py). With no tap open the contexts' ``tap`` is
None and a request pays nothing; a full buffer drops the event and counts
it: the data path never waits for a tap client.

The message encoding follows linkerd2-proxy-api's tap.proto, net.proto and
http_types.proto field by field; the tests decode it with classes generated
from those definitions by grpcio-tools.
"""

import ipaddress
import random

import cython

from proxy.exchange.clock import now
from proxy.exchange.core import Exchange
from proxy.exchange.taphook import TapEvents, TapHook
from proxy.protocol.request import RequestLine
from proxy.telemetry.labels import NO_TLS_DISABLED, NO_TLS_FROM_REMOTE, NO_TLS_LOOPBACK, NO_TLS_NO_DISCOVERY
from proxy.telemetry.pbwire import fixed32_field, fixed64_field, len_field, str_field, uint_field

# TapEvent.ProxyDirection
INBOUND = 1
OUTBOUND = 2

# http_types.HttpMethod.Registered and Scheme.Registered
_METHODS = {b"GET": 0, b"POST": 1, b"PUT": 2, b"DELETE": 3, b"PATCH": 4, b"OPTIONS": 5, b"CONNECT": 6,
            b"HEAD": 7, b"TRACE": 8}
_SCHEMES = {"http": 0, "https": 1}
METHOD_NAMES = {v: k.decode("ascii") for k, v in _METHODS.items()}
SCHEME_NAMES = {v: k for k, v in _SCHEMES.items()}

# RST_STREAM codes reported in Eos.reset_error_code
CANCEL = 8

# The per-connection and per-destination parts of an event are encoded once and kept, up to this many each.
_CACHE_LIMIT = 4096
# Every byte's high bit: a byte at or above 0x80 in a word of eight (a C constant: Cython makes a literal this
# large a Python int).
_HIGH_BITS = 0x8080808080808080
# Ended records a tap keeps for its next requests (HTTP/2's concurrent streams end several before the next
# ones start), up to this many.
_SPARE_RECORDS = 32
# Addresses parsed for netmask matches, kept up to this many.
_ADDRESSES: dict = {}


# ------------------------------------------------------------------ what a match sees


class TapView:
    """The facts of one request a match reads (Linkerd's ``Inspect``): addresses, labels, method, scheme,
    authority and path (without its query)."""

    def __init__(self, src_host, src_port, dst_host, dst_port, dst_labels, route_labels, scheme, method,
                 authority, path):
        self.src_host = src_host
        self.src_port = src_port
        self.dst_host = dst_host  # None: no destination was chosen (a request refused before routing)
        self.dst_port = dst_port
        self.dst_labels = dst_labels  # dict, or None
        self.route_labels = route_labels  # dict, or None
        self.scheme = scheme  # "http", "https", another URI scheme, or None when the request named none
        self.method = method
        self.authority = authority  # None when the request named none
        self.path = path


def _address(host):
    """``host`` as an ip_address (None when it is a name), cached."""
    found = _ADDRESSES.get(host)
    if found is None:
        try:
            found = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            found = False
        if len(_ADDRESSES) >= _CACHE_LIMIT:
            _ADDRESSES.clear()
        _ADDRESSES[host] = found
    return found if found is not False else None


# ------------------------------------------------------------------ matches (ObserveRequest.Match)


class Match:
    """A node of a tap's match expression."""

    def matches(self, view):
        return False


class MatchAll(Match):
    """Every one of ``items`` (none: every request)."""

    def __init__(self, items):
        self.items = items

    def matches(self, view):
        m: Match
        for m in self.items:
            if not m.matches(view):
                return False
        return True


class MatchAny(Match):
    """One of ``items`` at least (none: no request)."""

    def __init__(self, items):
        self.items = items

    def matches(self, view):
        m: Match
        for m in self.items:
            if m.matches(view):
                return True
        return False


class MatchNot(Match):
    def __init__(self, inner):
        self.inner = inner

    def matches(self, view):
        return not self.inner.matches(view)


class MatchTcp(Match):
    """The source's or the destination's address in ``network`` or its port in [``lo``, ``hi``]."""

    def __init__(self, destination, network, lo, hi):
        self.destination = destination
        self.network = network  # an ip_network, or None for a port range
        self.lo = lo
        self.hi = hi

    def matches(self, view):
        if self.destination:
            host = view.dst_host
            port = view.dst_port
        else:
            host = view.src_host
            port = view.src_port
        if host is None:
            return False
        if self.network is None:
            return self.lo <= port <= self.hi
        addr = _address(host)
        return addr is not None and addr.version == self.network.version and addr in self.network


class MatchLabel(Match):
    """A destination (or route) label equal to ``value``."""

    def __init__(self, route, key, value):
        self.route = route
        self.key = key
        self.value = value

    def matches(self, view):
        labels = view.route_labels if self.route else view.dst_labels
        return labels is not None and labels.get(self.key) == self.value


class MatchScheme(Match):
    def __init__(self, scheme):
        self.scheme = scheme

    def matches(self, view):
        # As Linkerd: a request that names no scheme is taken as http.
        return (view.scheme or "http") == self.scheme


class MatchMethod(Match):
    def __init__(self, method):
        self.method = method

    def matches(self, view):
        return view.method == self.method


class MatchString(Match):
    """The authority (``field`` 0) or the path (1): equal to ``exact``, or starting with ``prefix``."""

    def __init__(self, field, exact, prefix):
        self.field = field
        self.exact = exact  # None: a prefix match
        self.prefix = prefix

    def matches(self, view):
        value = view.authority if self.field == 0 else view.path
        if value is None:
            return False
        if self.exact is not None:
            return value == self.exact
        return value.startswith(self.prefix)


# ------------------------------------------------------------------ sessions and the hub


class TapSession:
    """One ``Observe`` stream: its match, how many requests it may still tap, and its bounded event buffer.

    Nothing here calls out: the tap server drains ``take`` on its own clock
    and ends the stream once ``complete``, so a request never pays for waking it.
    """

    def __init__(self, hub, match, limit, extract_headers, base_id, buffer_bytes):
        self.hub = hub
        self.match = match
        self.limit = limit
        self.extract_headers = extract_headers
        self.base_id = base_id
        self.buffer_bytes = buffer_bytes
        # A match of everything needs no facts of the request: the common tap costs no matching.
        self.match_all = type(match) is MatchAll and not match.items
        self.id_prefix = uint_field(1, base_id)  # StreamId.base, the start of every event's id
        self.count = 0  # requests tapped so far
        self.open = 0  # tapped requests whose response_end has not been emitted
        self.closed = False
        # The framed events waiting for the client, written in place at [0, used). The buffer only grows
        # (doubling, up to buffer_bytes) and ``take`` copies out, so a steady tap reallocates nothing.
        self.buf = bytearray()
        self.used = 0
        self.events = 0
        self.dropped = 0
        # Records whose request_init or response_init is held back, linked both ways (``pending_next``,
        # ``pending_prev``) so that one leaves when its request ends: a request that ends before the next take
        # writes its three events at once; ``take`` writes the others' first. However long a reader is away,
        # the list holds only requests under way.
        self.pending = None
        # Records that ended (chained through ``pending_next``, up to _SPARE_RECORDS), made the next ones (no
        # allocation per tapped request) when nothing else holds them any more.
        self.spare = None
        self.spares = 0

    def reserve(self, n):
        """Room for one framed event of ``n`` bytes after those waiting: its offset, or -1 when the buffer is
        full (the event is dropped and counted) or the stream closed."""
        if self.closed:
            return -1
        start: cython.Py_ssize_t = self.used
        end: cython.Py_ssize_t = start + n
        if end > self.buffer_bytes:
            self.dropped += 1
            self.hub.dropped += 1
            return -1
        if end > len(self.buf):
            self._grow(end)
        self.used = end
        self.events += 1
        self.hub.events += 1
        return start

    def room(self, n):
        """Room for ``n`` bytes of events (several, written at once): their offset, or -1 without counting a
        drop (the caller then writes them one by one, each reserved and counted on its own)."""
        if self.closed:
            return -1
        start: cython.Py_ssize_t = self.used
        end: cython.Py_ssize_t = start + n
        if end > self.buffer_bytes:
            return -1
        if end > len(self.buf):
            self._grow(end)
        self.used = end
        return start

    def flush_pending(self):
        """Write the events held back by requests still under way (one take is all of them: a tap client sees
        a request's start on the same clock as before, the next batch)."""
        rec: TapRecord = self.pending
        self.pending = None
        while rec is not None:
            nxt: TapRecord = rec.pending_next
            rec.pending_next = rec.pending_prev = None
            rec.listed = False
            if not rec.ended:
                rec._write_held()
            rec = nxt

    def _grow(self, need):
        size: cython.Py_ssize_t = max(4096, 2 * len(self.buf))
        while size < need:
            size *= 2
        if size > self.buffer_bytes:
            size = self.buffer_bytes
        if cython.compiled:
            PyByteArray_Resize(self.buf, size)  # noqa: F821 (cimported in tap.pxd)
        else:
            self.buf.extend(bytes(size - len(self.buf)))

    def take(self):
        """Every waiting event as one block of gRPC messages (empty when none); the buffer starts anew."""
        if self.pending is not None:
            self.flush_pending()
        used: cython.Py_ssize_t = self.used
        if used == 0:
            return b""
        self.used = 0
        if not cython.compiled:
            return bytes(self.buf[:used])
        return PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self.buf), used)  # noqa: F821

    def take_chunks(self, size):
        """The same block cut into pieces of at most ``size`` bytes, each copied once from the buffer: given
        HTTP/2's smallest frame size, each piece is one DATA frame, queued without being cut (copied) again."""
        if self.pending is not None:
            self.flush_pending()
        used: cython.Py_ssize_t = self.used
        out: list = []
        if used == 0:
            return out
        self.used = 0
        pos: cython.Py_ssize_t = 0
        n: cython.Py_ssize_t
        while pos < used:
            n = used - pos if used - pos < size else size
            if cython.compiled:
                out.append(PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self.buf) + pos, n))  # noqa: F821
            else:
                out.append(bytes(self.buf[pos:pos + n]))
            pos += n
        return out

    @property
    def complete(self):
        """Its limit is reached and every tapped request has ended: nothing more will come."""
        return self.count >= self.limit and self.open == 0

    def request_ended(self):
        self.open -= 1

    def close(self):
        """The stream is over (finished, cancelled or its connection gone): no more matching, events dropped."""
        if not self.closed:
            self.closed = True
            self.flush_pending()  # nothing is written (closed): the records held are let go
            self.spare = None
            self.spares = 0
            self.buf = bytearray()
            self.used = 0
            self.hub.retire(self)


class TapHub(TapHook):
    """The open taps of one proxy, shared by both directions' contexts (whose ``tap`` it sets while any is open).
    ``own``: this proxy's workload labels (namespace, pod, owner), reported for the app beside it: the source
    of its outbound requests, the destination of its inbound ones."""

    def __init__(self, own=()):
        self.own = dict(own)
        self.contexts = []
        self.sessions = []  # open and still under their limit: the ones requests are matched against
        self.active = ()  # the same, as the tuple a request walks
        self.live = 0  # open sessions, limit reached or not
        self.next_base = random.getrandbits(32)
        self.events = 0
        self.dropped = 0
        self.opened = 0
        self._bases = {}
        self._routes = {}
        self._last = None  # (target, meta, ctx, base, generation) of the last base encoded or found
        self._method_in = self._method_out = self._host_in = self._host_out = None  # (see TapRecord.request_init)
        self.generation = 0

    def attach(self, ctx):
        """``ctx`` (an ExchangeContext) asks this hub about its requests while a tap is open."""
        self.contexts.append(ctx)
        ctx.tap = self if self.sessions else None

    def open(self, match, limit, extract_headers, buffer_bytes):
        base = self.next_base
        self.next_base = (base + 1) & 0xFFFFFFFF
        session = TapSession(self, match, limit, extract_headers, base, buffer_bytes)
        self.sessions.append(session)
        self.live += 1
        self.opened += 1
        self._publish()
        return session

    def retire(self, session):
        """``session`` closed: never matched again."""
        self.live -= 1
        self._unlist(session)

    def _unlist(self, session):
        if session in self.sessions:
            self.sessions.remove(session)
            self._publish()

    def _publish(self):
        self.active = tuple(self.sessions)
        value = self if self.sessions else None
        for ctx in self.contexts:
            ctx.tap = value

    # -- per request ---------------------------------------------------------------------
    def observe(self, ex):
        """The exchange's request has its destination (or was refused before one): a ``TapRecord`` for the
        taps that want it (chained through ``next``), their request_init events emitted; None when none does."""
        e: Exchange = ex
        active: tuple = self.active
        session: TapSession
        record: TapRecord
        if len(active) == 1:
            # One tap matching everything, the usual one: no walk, no view.
            session = active[0]
            if session.match_all and session.count + 1 < session.limit:
                stream: cython.longlong = session.count
                session.count += 1
                session.open += 1
                record = new_record(session, stream, self._base(e), e.t0, self._route(e))
                record.request_init(e)
                return record
        view = None
        first = None
        last: TapRecord = None
        base = None
        route = b""
        for session in active:
            if not session.match_all:
                if view is None:
                    view = self._view(e)
                if not session.match.matches(view):
                    continue
            if session.count >= session.limit:
                continue  # reached by an earlier request of this same walk
            stream = session.count
            session.count += 1
            session.open += 1
            if session.count >= session.limit:
                self._unlist(session)  # at its limit: later requests are not matched against it
            if base is None:
                base = self._base(e)
                route = self._route(e)
            record = new_record(session, stream, base, e.t0, route)
            record.request_init(e)
            if first is None:
                first = record
            else:
                last.next = record
            last = record
        return first

    def _view(self, ex):
        head = ex.head
        meta = ex.meta
        target = ex.target
        src = meta.client if meta is not None else None
        dst_host = None
        dst_port = 0
        dst_labels = None
        if target is not None:
            dst_host = target.host
            dst_port = target.port
            # Inbound, the destination is this proxy's own workload.
            dst_labels = self.own if ex.ctx.inbound else _endpoint_labels(target)
        route_labels = None
        if ex.rp is not None:
            route_labels = {"route": ex.rp.route.name}
        scheme = _scheme_of(ex)
        authority = head.host.decode("latin-1") if head.host is not None else None
        path = "" if head.method == b"CONNECT" else _path(head.target).decode("latin-1")
        return TapView(src[0] if src else None, src[1] if src else 0, dst_host, dst_port, dst_labels,
                       route_labels, scheme, head.method.decode("latin-1"), authority, path)

    def _base(self, ex):
        """The fields every event of this request carries but its route: source, destination, direction;
        encoded once per connection and destination (kept on the exchange, which an HTTP/1 connection
        reuses, and in a bounded table)."""
        target = ex.target
        cached: tuple = ex.tap_base
        if cached is not None and cached[2] == self.generation:
            # Equal, not only the same: routing by Host makes a new (equal) target per request.
            kept = cached[0]
            if kept is target or kept == target:
                return cached[1]
        # The same connection and endpoint as the request before (HTTP/2's streams, each a new exchange): known
        # by identity, before building and hashing the table's key.
        meta = ex.meta
        ctx = ex.ctx
        last: tuple = self._last
        if last is not None and last[0] is target and last[1] is meta and last[2] is ctx and last[4] == self.generation:
            base = last[3]
        else:
            base = self._connection_base(ex, target)
            self._last = (target, meta, ctx, base, self.generation)
        ex.tap_base = (target, base, self.generation)
        return base

    def _route(self, ex):
        """The request's route field (RouteMeta), b"" when it has none; one per route name, kept."""
        rp = ex.rp
        if rp is None:
            return b""
        name = rp.route.name
        route = self._routes.get(name)
        if route is None:
            route = len_field(7, _labels({"route": name}))
            if len(self._routes) >= _CACHE_LIMIT:
                self._routes.clear()
            self._routes[name] = route
        return route

    def _connection_base(self, ex, target):
        ctx = ex.ctx
        inbound = ctx.inbound
        meta = ex.meta
        if meta is not None:
            key = (meta.client, meta.tls, meta.client_id, target, inbound)
        else:
            key = (None, False, None, target, inbound)
        base = self._bases.get(key)
        if base is None:
            # Without an identity of its own, no hop of this proxy is mutual TLS: Linkerd says "disabled".
            identity = ctx.labels is None or ctx.labels.has_identity
            base = b""
            if meta is not None:
                base = _source_fields(meta, inbound, identity, self.own)
            if target is not None:
                base += _destination_fields(target, inbound, identity, self.own)
            base += uint_field(6, INBOUND if inbound else OUTBOUND)
            if len(self._bases) >= _CACHE_LIMIT:
                self._bases.clear()
                self.generation += 1  # what exchanges kept may be stale too
            self._bases[key] = base
        return base


def _scheme_of(ex):
    """The scheme the request named (HTTP/2 ``:scheme``, an absolute-form target's), else None."""
    headers = ex.headers
    if headers is not None:
        for name, value in headers:
            if name == b":scheme":
                return value.decode("latin-1").lower()
        return None
    head: RequestLine = ex.head
    target = head.target
    if not target or target[0] == 47:  # origin-form ("/..."): no scheme
        return None
    end = target.find(b"://")
    if end > 0:
        return target[:end].decode("latin-1").lower()
    return None


def _scheme_field(ex):
    """HttpRequestInit.scheme (field 3) of the scheme the request named, b"" for none. http and https are
    encoded once: an HTTP/2 request always names one, and this runs for every tapped request."""
    headers = ex.headers
    if headers is not None:
        for name, value in headers:
            if name == b":scheme":
                if value == b"http":
                    return _HTTP_SCHEME
                if value == b"https":
                    return _HTTPS_SCHEME
                break
    scheme = _scheme_of(ex)
    if scheme is None:
        return b""
    if scheme == "http":
        return _HTTP_SCHEME
    if scheme == "https":
        return _HTTPS_SCHEME
    return len_field(3, _scheme(scheme))


def _path(target):
    """The path of a request target, without its query (what Linkerd reports and matches)."""
    n: cython.Py_ssize_t = len(target)
    start: cython.Py_ssize_t = 0
    p: cython.p_uchar = target
    if n and p[0] != 47:  # not origin-form: the path after an absolute-form URI's authority
        scheme_end = target.find(b"://")
        if scheme_end < 0:
            return target
        slash = target.find(b"/", scheme_end + 3)
        if slash < 0:
            return b"/"
        start = slash
    i: cython.Py_ssize_t
    for i in range(start, n):
        if p[i] == 63:  # "?"
            return target[start:i]
    return target[start:] if start else target


def _endpoint_labels(target):
    """Discovery's labels of an outbound endpoint (raw keys, as Linkerd's tap reports them), or None."""
    service = target.service
    if service is None:
        return None
    labels = dict(service.endpoint_labels(target))
    return labels


# ------------------------------------------------------------------ one tapped request


class TapRecord(TapEvents):
    """The events of one tapped request for one session; ``next`` chains the record of another session.

    Each event is written straight into one buffer of its exact size (no
    intermediate objects per field): this runs for every request while a tap
    matches everything, and the tap may cost the proxy little. The
    request_init and response_init events wait on the record (``held``) until
    the response ends, to be written with its response_end in one
    reservation, or until the session's next take writes them (a request
    still under way then). Made by ``new_record``.
    """

    def request_init(self, ex):
        """The request's fields, encoded now; its event is held back (see ``_end``, ``TapSession.take``)."""
        head: RequestLine = ex.head
        hub: TapHub = self.session.hub
        # The method and host of the request before are most often the same (the parser's constants, the
        # connection's host): their fields are kept, the method found by identity, the host by equality.
        method = head.method
        if method is not hub._method_in:
            hub._method_in = method
            hub._method_out = _method_field(method)
        self.q_method = hub._method_out
        self.q_scheme = _scheme_field(ex)
        host = head.host
        if host is not None:
            if host is not hub._host_in and host != hub._host_in:
                hub._host_in = host
                hub._host_out = _utf8(host)
            self.q_host = hub._host_out
        self.q_path = b"" if head.method == b"CONNECT" else _utf8(_path(head.target))
        if self.session.extract_headers:
            self.q_headers = len_field(6, _request_headers(ex))
        self.held = 1
        self._hold()

    def _hold(self):
        """On the session's list of records holding events back, once until its next take (a closed session
        has no next take: it keeps nothing)."""
        session: TapSession = self.session
        if not self.listed and not self.ended and not session.closed:
            self.listed = True
            head: TapRecord = session.pending
            if head is not None:
                head.pending_prev = self
            self.pending_next = head
            session.pending = self

    def response_init(self, status, h1head, fields):
        """The response head went to the client (or the proxy answered itself: no head given)."""
        rec: TapRecord = self
        t: cython.double = now()
        while rec is not None:
            rec._response_init(t, status, h1head, fields)
            rec = rec.next

    def _response_init(self, t, status, h1head, fields):
        if self.held & 2:
            self._write_held()  # a second head (the core sends one): the first one's event goes before it
        self.t_response = t
        self.r_status = status
        if fields is not None:
            for name, value in fields:
                if name == b"grpc-status":
                    self.grpc_status = _uint(value)
        if self.session.extract_headers:
            if fields is not None:
                self.r_headers = len_field(4, _headers(fields))
            elif h1head is not None:
                self.r_headers = len_field(4, _headers([(n.lower(), v) for n, v in h1head.header_list()]))
        self.held |= 2
        self._hold()

    def _write_held(self):
        """The events held back, each reserved (and dropped, counted) on its own: a take's or a full buffer's way."""
        held: cython.int = self.held
        self.held = 0
        pos: cython.Py_ssize_t
        if held & 1:
            pos = self._open(0x0A, _init_rest(self))
            if pos >= 0:
                _w_init(self, self.session.buf, pos)
        if held & 2:
            pos = self._open(0x12, _resp_rest(self))
            if pos >= 0:
                _w_resp(self, self.session.buf, pos)

    def end(self, trailers):
        """The response ended whole (``trailers``: its trailers, or None)."""
        rec: TapRecord = self
        t: cython.double = now()
        grpc: cython.longlong
        while rec is not None:
            grpc = rec.grpc_status
            if trailers is not None:
                grpc = -1
                for name, value in trailers:
                    if name == b"grpc-status":
                        grpc = _uint(value)
            if grpc >= 0:
                rec._end(t, 1, grpc, trailers)
            else:
                rec._end(t, 0, 0, trailers)
            rec = rec.next

    def reset(self, code):
        """The response was cut (or never came): the stream's reset code (CANCEL when the client left)."""
        rec: TapRecord = self
        t: cython.double = now()
        while rec is not None:
            rec._end(t, 2, code, None)
            rec = rec.next

    def _end(self, t, eos_field, eos_value, trailers):
        """``eos_field``: 1 grpc_status_code, 2 reset_error_code (with ``eos_value``), 0 neither.

        The events still held back (the request's start came since the
        session's last take, as most do) go with this one, in one
        reservation: the three events of a short request cost one.
        """
        if self.ended:
            return
        self.ended = True
        trailer_field: bytes = b""
        if trailers is not None and self.session.extract_headers:
            trailer_field = len_field(6, _headers(trailers))
        since: cython.longlong = _nanos(t - self.t0)
        since_response: cython.longlong = _nanos(t - self.t_response)
        eos: cython.Py_ssize_t = 0 if eos_field == 0 else 1 + _vsize(eos_value)
        rest: cython.Py_ssize_t = _duration_size(since) + 2 + eos + len(trailer_field)
        if self.t_response > 0.0:
            rest += _duration_size(since_response)
        if self.nbytes:
            rest += 1 + _vsize(self.nbytes)
        session: TapSession = self.session
        session.request_ended()
        if self.listed:  # off the list now: it holds only requests under way, however long until the next take
            prev: TapRecord = self.pending_prev
            nxt: TapRecord = self.pending_next
            if prev is None:
                session.pending = nxt
            else:
                prev.pending_next = nxt
            if nxt is not None:
                nxt.pending_prev = prev
            self.pending_next = self.pending_prev = None
            self.listed = False
        if cython.compiled and session.spares < _SPARE_RECORDS and not session.closed:
            self.pending_next = session.spare
            session.spare = self
            session.spares += 1
        pos: cython.Py_ssize_t
        buf: cython.p_uchar
        held: cython.int = self.held
        if held:
            init_rest: cython.Py_ssize_t = _init_rest(self) if held & 1 else 0
            resp_rest: cython.Py_ssize_t = _resp_rest(self) if held & 2 else 0
            size: cython.Py_ssize_t = _event_size(self, rest)
            count: cython.int = 1
            if held & 1:
                size += _event_size(self, init_rest)
                count += 1
            if held & 2:
                size += _event_size(self, resp_rest)
                count += 1
            pos = session.room(size)
            if pos < 0:
                self._write_held()  # not all of them fit: as many as do, the others counted as dropped
                pos = self._open(0x1A, rest)
            else:
                self.held = 0
                session.events += count
                session.hub.events += count
                buf = session.buf
                # The first event's common fields and id are copied for the next ones, from the buffer itself.
                lead_at: cython.Py_ssize_t = pos + 5
                id_at: cython.Py_ssize_t = -1
                if held & 1:
                    pos = _w_head(self, buf, pos, 0x0A, init_rest)
                    id_at = pos - self.id_size
                    pos = _w_init(self, buf, pos)
                if held & 2:
                    if id_at < 0:
                        pos = _w_head(self, buf, pos, 0x12, resp_rest)
                        id_at = pos - self.id_size
                    else:
                        pos = _w_again(self, buf, pos, 0x12, resp_rest, lead_at, id_at)
                    pos = _w_resp(self, buf, pos)
                pos = _w_again(self, buf, pos, 0x1A, rest, lead_at, id_at)
        else:
            pos = self._open(0x1A, rest)
        if pos < 0:
            return
        buf = session.buf
        pos = _w_duration(buf, pos, 0x12, since)
        if self.t_response > 0.0:
            pos = _w_duration(buf, pos, 0x1A, since_response)
        if self.nbytes:
            buf[pos] = 0x20  # response_bytes
            pos = _w_varint(buf, pos + 1, self.nbytes)
        buf[pos] = 0x2A  # eos
        buf[pos + 1] = eos
        pos += 2
        if eos_field != 0:
            buf[pos] = 0x08 if eos_field == 1 else 0x10
            pos = _w_varint(buf, pos + 1, eos_value)
        _w_bytes(buf, pos, trailer_field)

    def add_bytes(self, n):
        rec: TapRecord = self
        while rec is not None:
            rec.nbytes += n
            rec = rec.next

    def _open(self, kind, rest):
        """Room in the session's buffer for one event with ``rest`` bytes of fields after the id, and everything
        up to those fields written: where they start, or -1 when the event is dropped."""
        session: TapSession = self.session
        start: cython.Py_ssize_t = session.reserve(_event_size(self, rest))
        if start < 0:
            return -1
        return _w_head(self, session.buf, start, kind, rest)


def new_record(session, stream, base, t0, route=b""):
    """The record of request ``stream`` of ``session``, started at ``t0``, its events' common fields ``base``
    and ``route``; made without the call protocol (a request pays this while a tap matches it)."""
    s: TapSession = session
    rec: TapRecord = s.spare
    if rec is not None:
        s.spare = rec.pending_next
        s.spares -= 1
        rec.pending_next = None
        if cython.compiled and Py_REFCNT(rec) == 1:  # noqa: F821 (cimported in tap.pxd): the slot's was the last
            rec.next = None
            rec.q_host = rec.q_headers = rec.r_headers = None
        else:
            rec = None
    if rec is None:
        rec = TapRecord.__new__(TapRecord)
    rec.session = session
    rec.base = base
    rec.route = route
    rec.lead = len(base) + len(route)
    rec.id_size = 2 + len(session.id_prefix) + 1 + _vsize(stream)
    rec.stream = stream
    rec.t0 = t0
    rec.t_response = 0.0
    rec.nbytes = 0
    rec.grpc_status = -1  # from a trailers-only response head
    rec.ended = False
    rec.held = 0
    rec.listed = False
    if not cython.compiled:  # compiled, a new object's fields are None already
        rec.next = rec.pending_next = rec.pending_prev = None
        rec.q_method = rec.q_scheme = rec.q_host = rec.q_path = rec.q_headers = rec.r_headers = None
        rec.r_status = 0
    return rec


# ------------------------------------------------------------------ encoders

_METHOD_NAMES = tuple(_METHODS)
_METHOD_FIELDS = tuple(len_field(2, uint_field(1, value)) for value in _METHODS.values())


def _method_field(method):
    """HttpMethod: a registered method's field (kept), else the method as a string. By comparison, not a dict:
    the request's method is a new bytes object whose hash a lookup would compute."""
    i: cython.Py_ssize_t
    n: cython.Py_ssize_t = len(method)
    name: bytes
    for i in range(len(_METHOD_NAMES)):
        name = _METHOD_NAMES[i]
        if len(name) == n and name == method:
            return _METHOD_FIELDS[i]
    return len_field(2, str_field(2, _utf8(method)))


@cython.inline
@cython.cfunc
@cython.exceptval(check=False)
def _vsize(n: cython.ulonglong) -> cython.int:
    """Bytes of ``n`` as a varint."""
    size: cython.int = 1
    while n > 0x7F:
        n >>= 7
        size += 1
    return size


@cython.inline
@cython.cfunc
@cython.exceptval(check=False)
def _w_varint(buf: cython.p_uchar, pos: cython.Py_ssize_t, n: cython.ulonglong) -> cython.Py_ssize_t:
    while n > 0x7F:
        buf[pos] = (n & 0x7F) | 0x80
        n >>= 7
        pos += 1
    buf[pos] = n
    return pos + 1


@cython.inline
@cython.cfunc
def _w_bytes(buf: cython.p_uchar, pos: cython.Py_ssize_t, data: bytes) -> cython.Py_ssize_t:
    n: cython.Py_ssize_t = len(data)
    if n == 0:
        return pos
    if cython.compiled:
        memcpy(buf + pos, cython.cast(cython.p_char, data), n)  # type: ignore[name-defined,operator]  # noqa: F821
    else:  # uncompiled, ``buf`` is the session's bytearray
        buf[pos:pos + n] = data  # type: ignore[index,assignment]
    return pos + n


@cython.inline
@cython.cfunc
def _string_size(data: bytes) -> cython.Py_ssize_t:
    n: cython.Py_ssize_t = len(data)
    return 1 + _vsize(n) + n


@cython.inline
@cython.cfunc
def _w_string(buf: cython.p_uchar, pos: cython.Py_ssize_t, tag: cython.uchar, data: bytes) -> cython.Py_ssize_t:
    buf[pos] = tag
    pos = _w_varint(buf, pos + 1, len(data))
    return _w_bytes(buf, pos, data)


@cython.inline
@cython.cfunc
@cython.exceptval(check=False)
def _w_copy(buf: cython.p_uchar, pos: cython.Py_ssize_t, src: cython.Py_ssize_t,
            n: cython.Py_ssize_t) -> cython.Py_ssize_t:
    """``n`` bytes of the buffer from ``src`` (before ``pos``) written again at ``pos``."""
    if cython.compiled:
        memcpy(buf + pos, buf + src, n)  # type: ignore[name-defined,operator]  # noqa: F821
    else:
        buf[pos:pos + n] = buf[src:src + n]  # type: ignore[index]
    return pos + n


@cython.inline
@cython.cfunc
@cython.exceptval(check=False)
def _nanos(seconds: cython.double) -> cython.longlong:
    """A duration in whole nanoseconds (a negative one, from a clock step, as zero)."""
    if seconds <= 0.0:
        return 0
    return cython.cast(cython.longlong, seconds * 1e9)


@cython.inline
@cython.cdivision(True)
@cython.cfunc
@cython.exceptval(check=False)
def _duration_size(ns: cython.longlong) -> cython.int:
    """A google.protobuf.Duration field's length, tag included, for ``ns`` nanoseconds."""
    whole: cython.longlong = ns // 1_000_000_000
    nanos: cython.longlong = ns % 1_000_000_000
    inner: cython.int = (1 + _vsize(whole) if whole else 0) + (1 + _vsize(nanos) if nanos else 0)
    return 2 + inner


@cython.inline
@cython.cdivision(True)
@cython.cfunc
@cython.exceptval(check=False)
def _w_duration(buf: cython.p_uchar, pos: cython.Py_ssize_t, tag: cython.uchar,
                ns: cython.longlong) -> cython.Py_ssize_t:
    whole: cython.longlong = ns // 1_000_000_000
    nanos: cython.longlong = ns % 1_000_000_000
    inner: cython.int = (1 + _vsize(whole) if whole else 0) + (1 + _vsize(nanos) if nanos else 0)
    buf[pos] = tag
    buf[pos + 1] = inner
    pos += 2
    if whole:
        buf[pos] = 0x08
        pos = _w_varint(buf, pos + 1, whole)
    if nanos:
        buf[pos] = 0x10
        pos = _w_varint(buf, pos + 1, nanos)
    return pos



# The parts of a record's events, as C functions called without a method's dispatch (their fields are set before
# they run: nothing here raises). Typed by decorators: mypy does not see a record's fields (they are in tap.pxd).

@cython.inline
@cython.cfunc
@cython.exceptval(check=False)
@cython.locals(rec=TapRecord)
@cython.returns(cython.Py_ssize_t)
def _init_rest(rec):
    """request_init's bytes after its id."""
    rest: cython.Py_ssize_t = len(rec.q_method) + len(rec.q_scheme) + _string_size(rec.q_path)
    if rec.q_headers is not None:
        rest += len(rec.q_headers)
    if rec.q_host is not None:
        rest += _string_size(rec.q_host)
    return rest


@cython.inline
@cython.cfunc
@cython.exceptval(check=False)
@cython.locals(rec=TapRecord, buf=cython.p_uchar, pos=cython.Py_ssize_t)
@cython.returns(cython.Py_ssize_t)
def _w_init(rec, buf, pos):
    pos = _w_bytes(buf, pos, rec.q_method)
    pos = _w_bytes(buf, pos, rec.q_scheme)
    if rec.q_host is not None:
        pos = _w_string(buf, pos, 0x22, rec.q_host)
    pos = _w_string(buf, pos, 0x2A, rec.q_path)
    if rec.q_headers is not None:
        pos = _w_bytes(buf, pos, rec.q_headers)
    return pos


@cython.inline
@cython.cfunc
@cython.exceptval(check=False)
@cython.locals(rec=TapRecord)
@cython.returns(cython.Py_ssize_t)
def _resp_rest(rec):
    """response_init's bytes after its id."""
    rest: cython.Py_ssize_t = _duration_size(_nanos(rec.t_response - rec.t0)) + 1 + _vsize(rec.r_status)
    if rec.r_headers is not None:
        rest += len(rec.r_headers)
    return rest


@cython.inline
@cython.cfunc
@cython.exceptval(check=False)
@cython.locals(rec=TapRecord, buf=cython.p_uchar, pos=cython.Py_ssize_t)
@cython.returns(cython.Py_ssize_t)
def _w_resp(rec, buf, pos):
    pos = _w_duration(buf, pos, 0x12, _nanos(rec.t_response - rec.t0))
    buf[pos] = 0x18  # http_status
    pos = _w_varint(buf, pos + 1, rec.r_status)
    if rec.r_headers is not None:
        pos = _w_bytes(buf, pos, rec.r_headers)
    return pos


# The layout every event shares: gRPC prefix, the request's common fields (``base``, ``route``), then
# http (3) { <kind> { id (1) { base (1), stream (2) }, <rest> } }.

@cython.inline
@cython.cfunc
@cython.exceptval(check=False)
@cython.locals(rec=TapRecord, rest=cython.Py_ssize_t)
@cython.returns(cython.Py_ssize_t)
def _event_size(rec, rest):
    """A whole framed event's bytes with ``rest`` bytes of fields after the id."""
    body: cython.Py_ssize_t = rec.id_size + rest
    http: cython.Py_ssize_t = 1 + _vsize(body) + body
    return 5 + rec.lead + 1 + _vsize(http) + http


@cython.inline
@cython.cfunc
@cython.exceptval(check=False)
@cython.locals(rec=TapRecord, buf=cython.p_uchar, start=cython.Py_ssize_t, kind=cython.uchar, rest=cython.Py_ssize_t)
@cython.returns(cython.Py_ssize_t)
def _w_head(rec, buf, start, kind, rest):
    """An event's framing and fields up to ``rest`` written at ``start``: where the rest goes."""
    pos: cython.Py_ssize_t = _w_bytes(buf, start + 5, rec.base)
    pos = _w_bytes(buf, pos, rec.route)
    pos = _w_frame(rec, buf, start, pos, kind, rest)
    buf[pos] = 0x0A  # id
    buf[pos + 1] = rec.id_size - 2  # (the id's inner length is under 128 bytes)
    pos = _w_bytes(buf, pos + 2, rec.session.id_prefix)
    buf[pos] = 0x10  # StreamId.stream
    return _w_varint(buf, pos + 1, rec.stream)


@cython.inline
@cython.cfunc
@cython.exceptval(check=False)
@cython.locals(rec=TapRecord, buf=cython.p_uchar, start=cython.Py_ssize_t, kind=cython.uchar, rest=cython.Py_ssize_t,
               lead_at=cython.Py_ssize_t, id_at=cython.Py_ssize_t)
@cython.returns(cython.Py_ssize_t)
def _w_again(rec, buf, start, kind, rest, lead_at, id_at):
    """``_w_head`` for another event of the record after one already in the buffer (its common fields at
    ``lead_at``, its id at ``id_at``): those bytes copied."""
    pos: cython.Py_ssize_t = _w_copy(buf, start + 5, lead_at, rec.lead)
    pos = _w_frame(rec, buf, start, pos, kind, rest)
    return _w_copy(buf, pos, id_at, rec.id_size)


@cython.inline
@cython.cfunc
@cython.exceptval(check=False)
@cython.locals(rec=TapRecord, buf=cython.p_uchar, start=cython.Py_ssize_t, pos=cython.Py_ssize_t, kind=cython.uchar,
               rest=cython.Py_ssize_t)
@cython.returns(cython.Py_ssize_t)
def _w_frame(rec, buf, start, pos, kind, rest):
    """The gRPC prefix at ``start`` and, at ``pos`` (after the common fields), the tags and lengths up to the id."""
    body: cython.Py_ssize_t = rec.id_size + rest
    http: cython.Py_ssize_t = 1 + _vsize(body) + body
    event: cython.Py_ssize_t = rec.lead + 1 + _vsize(http) + http
    buf[start] = 0  # not compressed
    buf[start + 1] = (event >> 24) & 0xFF
    buf[start + 2] = (event >> 16) & 0xFF
    buf[start + 3] = (event >> 8) & 0xFF
    buf[start + 4] = event & 0xFF
    buf[pos] = 0x1A  # TapEvent.http
    pos = _w_varint(buf, pos + 1, http)
    buf[pos] = kind
    return _w_varint(buf, pos + 1, body)


def _utf8(data):
    """Request bytes as a protobuf string must be: UTF-8 (bytes beyond ASCII taken as Latin-1)."""
    p: cython.p_uchar = data
    n: cython.Py_ssize_t = len(data)
    i: cython.Py_ssize_t = 0
    if cython.compiled:
        word: cython.ulonglong = 0
        while i + 8 <= n:  # eight bytes at a time: hosts and paths are ASCII
            memcpy(cython.address(word), p + i, 8)  # noqa: F821 (cimported in tap.pxd)
            if word & _HIGH_BITS:
                break
            i += 8
    while i < n:
        if p[i] >= 0x80:
            return data.decode("latin-1").encode("utf-8")
        i += 1
    return data


def _scheme(scheme):
    registered = _SCHEMES.get(scheme)
    if registered is not None:
        return uint_field(1, registered)
    return str_field(2, scheme)


_HTTP_SCHEME = len_field(3, _scheme("http"))
_HTTPS_SCHEME = len_field(3, _scheme("https"))


def _uint(value):
    try:
        n = int(value)
    except ValueError:
        return -1
    return n if 0 <= n <= 0xFFFFFFFF else -1


def _headers(fields):
    """http_types.Headers from (name, value) pairs (bytes or str names)."""
    out = []
    for name, value in fields:
        header = str_field(1, name) + len_field(2, value if isinstance(value, bytes) else value.encode("latin-1"))
        out.append(len_field(1, header))
    return b"".join(out)


_PSEUDO_ORDER = (b":method", b":scheme", b":authority", b":path")


def _request_headers(ex):
    headers = ex.headers
    if headers is None:
        return _headers([(n.lower(), v) for n, v in ex.head.header_list()])
    # HTTP/2: the pseudo-header fields first, in Linkerd's order, then the others as received.
    pseudo = {name: value for name, value in headers if name[:1] == b":"}
    fields = [(name, pseudo[name]) for name in _PSEUDO_ORDER if name in pseudo]
    fields.extend((name, value) for name, value in headers if name[:1] != b":")
    return _headers(fields)


def _labels(labels):
    """A map<string, string> field's entries (for EndpointMeta / RouteMeta field 1), sorted by key."""
    out = []
    for key in sorted(labels):
        out.append(len_field(1, str_field(1, key) + str_field(2, labels[key])))
    return b"".join(out)


def tcp_address(host, port):
    """net.TcpAddress; a name (not an address) gives only the port."""
    addr = _address(host)
    ip = b""
    if addr is not None:
        if addr.version == 4:
            ip = len_field(1, fixed32_field(1, int(addr)))
        else:
            n = int(addr)
            ip = len_field(1, len_field(2, fixed64_field(1, n >> 64) + fixed64_field(2, n & 0xFFFFFFFFFFFFFFFF)))
    return ip + (uint_field(2, port) if port else b"")


def _source_fields(meta, inbound, identity, own):
    """TapEvent.source and source_meta: the client's address; its TLS as Linkerd labels it."""
    labels = {}
    if not inbound:
        labels.update(own)
        labels["tls"] = NO_TLS_LOOPBACK  # the app beside the proxy
    elif meta.tls:
        labels["tls"] = "true"
        labels["client_id"] = meta.client_id or ""
    else:
        labels["tls"] = NO_TLS_FROM_REMOTE if identity else NO_TLS_DISABLED
    out = b""
    if meta.client:
        out = len_field(1, tcp_address(meta.client[0], meta.client[1]))
    return out + len_field(5, _labels(labels))


def _destination_fields(target, inbound, identity, own):
    """TapEvent.destination and destination_meta: the endpoint, discovery's labels, the hop's TLS."""
    labels = {}
    if inbound:
        labels.update(own)
        labels["tls"] = NO_TLS_LOOPBACK  # the app beside the proxy
    else:
        service = target.service
        if service is not None:
            labels.update(service.endpoint_labels(target))
        if not identity:
            labels["tls"] = NO_TLS_DISABLED
        elif target.identity is not None:
            labels["tls"] = "true"
            labels["server_id"] = target.identity
        else:
            labels["tls"] = NO_TLS_NO_DISCOVERY
    return len_field(2, tcp_address(target.host, target.port)) + len_field(4, _labels(labels))

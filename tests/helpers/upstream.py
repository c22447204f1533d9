"""The HTTP/1.1 upstream of the whole-proxy tests: one endpoint per
behaviour a test needs, every request recorded exactly as received."""

from __future__ import annotations

import random
import threading
from typing import Any

from . import wire
from .servers import MAX_WAIT, ServerConn, TcpServer, det_bytes, hold, response_bytes, sha256
from .wire import Request, deadline_in


class HttpUpstream(TcpServer):
    """An HTTP/1.1 origin with one endpoint per behaviour a test needs.

    ``requests`` lists every request as received (head bytes exact, body
    decoded and raw). Endpoints, by path:

    /echo[...]      200, body = request body; X-Conn, X-Index, X-Body-Sha256,
                    X-Body-Length, X-Method, X-Target, X-Trailers headers
    /echo-head      200, body = the request head bytes exactly as received
    /bytes/N        N deterministic bytes (det_bytes(N)); ?chunked=1 to chunk
    /chunked        chunked body "hello chunked world" + trailers (head only for HEAD)
    /not-modified   304 with a Content-Length and no body
    /early-hints    103 Early Hints, then 200 "after hints"
    /close[?n=N]    no framing: body then close (read until close)
    /slow?delay=S   answers after S seconds
    /never          reads, never answers (until the peer or server closes)
    /status/N       status N
    /head-case      response header names in mixed case, fixed order
    /stream-out     sends half a body, waits for ``release`` (event), then the rest
    /stream-in      reads half the body, sets ``partial_seen``, reads the rest
    /continue       sends "100 Continue" (0.3 s late, ``continue_sent`` set
                    first) when asked to, then reads the body
    /slow-body?delay=S  head and half the body at once, the rest S seconds later
    /head-first?delay=S the head alone (Content-Length: 4), the body "body" S seconds later
    /flood[?n=N]    N zero bytes (default 64 MiB) as fast as the peer takes
                    them; ``flood_sent`` counts what was written
    /sink           reads no body until ``release`` is set, then counts it
                    (``sink_read``) and answers the count
    /truncated      Content-Length 100, 50 bytes, then close
    /big-header[?n=N]  a response header of N bytes (default 70000)
    /bad-response   a malformed status line
    /http10-response  an HTTP/1.0 answer (no keep-alive), then closes
    /close-after    Connection: close, then closes
    /idle-close     normal answer; the connection then closes after 0.3 s idle
    anything else   200 "ok"
    """

    RAW = ("/continue", "/stream-in", "/never", "/sink")

    def __init__(self, linger: float = 0.0, **kwargs: Any) -> None:
        # Seconds to wait, reading nothing, before closing a connection this
        # server decided to close (like a busy server whose FIN comes late).
        self.linger = linger
        self.requests: list[Request] = []
        self.release = threading.Event()
        self.partial_seen = threading.Event()
        self.continue_sent = threading.Event()
        self.flood_sent = 0  # bytes of /flood body written so far
        self.sink_read = 0  # bytes of /sink body read so far
        super().__init__(**kwargs)

    def wait_requests(self, count: int, timeout: float = 5.0) -> bool:
        return self.wait_for(lambda: len(self.requests) >= count, timeout)

    def request_number(self, count: int, timeout: float = 5.0) -> Request:
        """The ``count``-th request received (from 1), waiting for it."""
        assert self.wait_requests(count, timeout), f"upstream got {len(self.requests)} requests, wanted {count}"
        return self.requests[count - 1]

    def _record(self, conn: ServerConn, req: Request) -> None:
        with self.changed:
            req.conn_id = conn.id
            req.index = len(conn.requests)
            conn.requests.append(req)
            self.requests.append(req)
            self.changed.notify_all()

    def handle(self, conn: ServerConn) -> None:
        while not self.stopping.is_set():
            try:
                head = wire.read_request_head(conn.stream, deadline_in(conn.idle_timeout))
            except (wire.PeerClosed, TimeoutError):
                return
            method, target, version = wire.split_request_line(head)
            req = Request(head, method, target, version, wire.Body())
            path = req.path
            if path in self.RAW:
                keep = getattr(self, "raw_" + path.strip("/").replace("-", "_"))(conn, req)
            else:
                req.body = wire.read_request_body(conn.stream, head, deadline_in(MAX_WAIT))
                self._record(conn, req)
                keep = self.respond(conn, req, path)
            closing = (
                not keep
                or head.has_token("connection", "close")
                or (version == "HTTP/1.0" and not head.has_token("connection", "keep-alive"))
            )
            if closing:
                if self.linger:
                    self.stopping.wait(self.linger)
                return

    def respond(self, conn: ServerConn, req: Request, path: str) -> bool:
        """Send the answer; False when the connection must close afterwards."""
        head_only = req.method == "HEAD"
        if path.startswith("/echo-head"):
            conn.send(response_bytes(200, [("Content-Type", "application/octet-stream")], req.head.raw))
        elif path.startswith("/echo"):
            data = req.body.data
            headers = [
                ("Content-Type", "application/octet-stream"),
                ("X-Conn", str(conn.id)),
                ("X-Index", str(req.index)),
                ("X-Method", req.method),
                ("X-Target", req.target),
                ("X-Body-Length", str(len(data))),
                ("X-Body-Sha256", sha256(data)),
                ("X-Body-Chunked", "1" if req.body.chunked else "0"),
                ("X-Trailers", ";".join(f"{n.decode()}={v.decode()}" for n, v in req.body.trailers)),
                ("Content-Length", str(len(data))),
            ]
            conn.send(response_bytes(200, headers, b"" if head_only else data))
        elif path.startswith("/bytes/"):
            count = int(path.rsplit("/", 1)[1])
            data = det_bytes(count)
            if req.query.get("chunked") == "1":
                rng = random.Random(count)
                pieces, pos = [], 0
                while pos < count:
                    step = rng.randint(1, 100_000)
                    pieces.append(data[pos : pos + step])
                    pos += step
                conn.send(response_bytes(200, [("Transfer-Encoding", "chunked")], wire.chunked_bytes(pieces)))
            else:
                conn.send(response_bytes(200, [("Content-Type", "application/octet-stream")], data))
        elif path == "/chunked":
            chunks = [b"hello ", b"chunked ", b"world"]
            body = wire.chunked_bytes(chunks, [("X-Trailer-One", "1"), ("X-Checksum", sha256(b"".join(chunks)))])
            headers = [("Transfer-Encoding", "chunked"), ("Trailer", "X-Trailer-One, X-Checksum")]
            conn.send(response_bytes(200, headers, b"" if head_only else body))
        elif path == "/not-modified":
            # A 304 may carry the Content-Length of the body it does not send.
            conn.send(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 100\r\n\r\n")
        elif path == "/early-hints":
            conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            conn.send(response_bytes(200, [], b"after hints"))
        elif path == "/close":
            count = int(req.query.get("n", "0"))
            data = det_bytes(count) if count else b"read until close body"
            conn.send(response_bytes(200, [("Content-Type", "text/plain")], data, length=False))
            return False
        elif path == "/slow":
            self.stopping.wait(min(float(req.query.get("delay", "1")), MAX_WAIT))
            conn.send(response_bytes(200, [], b"slow done"))
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            body = b"" if status in (204, 304) else f"status {status}".encode()
            conn.send(response_bytes(status, [], body))
        elif path == "/head-case":
            headers = [("X-MiXeD-CaSe", "1"), ("x-lower", "2"), ("X-UPPER", "3"),
                       ("Content-Type", "text/plain"), ("Content-Length", "2")]
            conn.send(response_bytes(200, headers, b"ok"))
        elif path == "/stream-out":
            first, second = det_bytes(50_000, 1), det_bytes(50_000, 2)
            conn.send(response_bytes(200, [("Content-Length", str(len(first) + len(second)))], first))
            self.release.wait(MAX_WAIT)
            conn.send(second)
        elif path == "/slow-body":
            first, second = b"head came at once, ", b"the rest later"
            conn.send(response_bytes(200, [("Content-Length", str(len(first) + len(second)))], first))
            self.stopping.wait(min(float(req.query.get("delay", "1")), MAX_WAIT))
            conn.send(second)
        elif path == "/head-first":
            conn.send(response_bytes(200, [("Content-Length", "4")]))
            self.stopping.wait(min(float(req.query.get("delay", "1")), MAX_WAIT))
            conn.send(b"body")
        elif path == "/flood":
            total = int(req.query.get("n", str(64 << 20)))
            conn.send(response_bytes(200, [("Content-Length", str(total))]))
            block = bytes(1 << 16)
            while self.flood_sent < total and not self.stopping.is_set():
                piece = block[: min(len(block), total - self.flood_sent)]
                conn.send(piece)
                self.flood_sent += len(piece)
        elif path == "/truncated":
            conn.send(response_bytes(200, [("Content-Length", "100")], b"t" * 50))
            return False
        elif path == "/big-header":
            size = int(req.query.get("n", "70000"))
            conn.send(response_bytes(200, [("X-Big", "b" * size)], b"big"))
        elif path == "/bad-response":
            conn.send(b"HTTP/1.1 2OO Oops\r\nContent-Length: 2\r\n\r\nok")
            return False
        elif path == "/http10-response":
            # An HTTP/1.0 origin: no keep-alive offered, so the connection ends
            # after this response (late, when ``linger`` is set).
            conn.send(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nold one")
            return False
        elif path == "/keep-alive-field":
            # nginx's way: every response says "Connection: keep-alive".
            conn.send(response_bytes(200, [("Connection", "keep-alive")], b"kept"))
        elif path == "/keep-alive-params":
            conn.send(response_bytes(200, [("Connection", "keep-alive"), ("Keep-Alive", "timeout=5")], b"kept"))
        elif path == "/close-after":
            conn.send(response_bytes(200, [("Connection", "close")], b"closing"))
            return False
        elif path == "/idle-close":
            conn.send(response_bytes(200, [], b"idle-close"))
            conn.idle_timeout = 0.3
        else:
            conn.send(response_bytes(200, [("Content-Type", "text/plain")], b"ok"))
        return True

    # -- endpoints that read the body themselves ---------------------------------
    def raw_continue(self, conn: ServerConn, req: Request) -> bool:
        if req.head.has_token("expect", "100-continue"):
            # Late on purpose, and flagged before sending: a client that sees
            # a 100 while the flag is unset got one the proxy made up.
            self.stopping.wait(0.3)
            self.continue_sent.set()
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        req.body = wire.read_request_body(conn.stream, req.head, deadline_in(MAX_WAIT))
        self._record(conn, req)
        data = req.body.data
        conn.send(response_bytes(200, [("X-Body-Sha256", sha256(data))], data))
        return True

    def raw_stream_in(self, conn: ServerConn, req: Request) -> bool:
        length = int(req.head.get("content-length") or b"0")
        first = conn.stream.read_exact(length // 2, deadline_in(MAX_WAIT))
        self.partial_seen.set()
        rest = conn.stream.read_exact(length - len(first), deadline_in(MAX_WAIT))
        req.body = wire.Body(data=first + rest, raw=first + rest)
        self._record(conn, req)
        conn.send(response_bytes(200, [("X-Body-Sha256", sha256(req.body.data))], b"streamed"))
        return True

    def raw_sink(self, conn: ServerConn, req: Request) -> bool:
        """Reads no body until ``release`` is set, then counts it (not kept)."""
        self._record(conn, req)
        self.release.wait(MAX_WAIT)
        conn.stream.keep = False
        length = int(req.head.get("content-length") or b"0")
        end = deadline_in(MAX_WAIT)
        while self.sink_read < length:
            if not conn.stream.buf and not conn.stream.fill(end, 1 << 18):
                raise wire.PeerClosed(f"EOF after {self.sink_read} of {length} body bytes")
            take = min(len(conn.stream.buf), length - self.sink_read)
            del conn.stream.buf[:take]
            self.sink_read += take
        conn.send(response_bytes(200, [], str(self.sink_read).encode()))
        return True

    def raw_never(self, conn: ServerConn, req: Request) -> bool:
        self._record(conn, req)
        hold(conn)
        return False

"""The apps behind the proxies in the client matrix: lean, streaming, and each able to read slowly or die.

Every app hashes what it receives instead of keeping it (tens of MB cross
each test) and sends slices of one deterministic blob (``blob``), so the
client checks a download by digest and the app reports an upload's digest.

- ``H1App``: HTTP/1.1 (keep-alive, chunked or sized bodies, HTTP/1.0).
- ``H2App``: HTTP/2 with prior knowledge (the ``h2`` package).
- ``GrpcApp``: grpcio, generic handlers (bidirectional echo, a server stream,
  a client stream read slowly).
- ``WsApp``: WebSocket (the ``websockets`` package, no compression).
- ``StreamApp``: raw TCP with one command line from the client; with
  ``banner`` it speaks first (a server-first protocol).
- ``DyingFront``: a TCP relay in front of an app that, when armed, resets
  the connection carrying the response once enough bytes went through: what
  the proxy sees when an app dies mid-response.

Paths (HTTP/1 and HTTP/2; the same words are WebSocket paths and TCP commands):
``/up-down?n=M`` reads the whole body, then answers M bytes with
``x-up-sha256`` and ``x-up-length``; ``/down?n=M`` answers M bytes;
``/slow-read`` reads the body slowly (``SLOW_PIECE`` at a time, pausing),
then answers its digest. Counters: ``completed`` (responses sent whole),
``cut`` (responses whose sending failed: the peer went away), ``resets``
(HTTP/2 streams the peer reset), ``requests`` (request lines seen).
"""

from __future__ import annotations

import hashlib
import select
import socket
import struct
import threading
import time
from concurrent import futures
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .servers import ServerConn, TcpServer

BLOB_SIZE = 64 << 20
SLOW_PIECE = 4096  # an app or client that reads slowly takes this much at a time
SLOW_EVERY = 64 << 10  # ... and pauses after this many bytes
SLOW_PAUSE = 0.01  # ... for this long (at most ~6 MB/s)
MAX_WAIT = 60.0

_blob: bytes | None = None
_blob_lock = threading.Lock()


def blob() -> bytes:
    """The deterministic bytes every app sends slices of (the same in every process)."""
    global _blob
    with _blob_lock:
        if _blob is None:
            import random

            _blob = random.Random(20261206).randbytes(BLOB_SIZE)
        return _blob


def piece(size: int, offset: int = 0) -> memoryview:
    assert offset + size <= BLOB_SIZE, (offset, size)
    return memoryview(blob())[offset:offset + size]


def sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.completed = 0
        self.cut = 0
        self.resets = 0
        self.requests: list[str] = []
        self.changed = threading.Condition(self.lock)

    def add(self, name: str, value: Any = 1) -> None:
        with self.changed:
            if name == "requests":
                self.requests.append(value)
            else:
                setattr(self, name, getattr(self, name) + value)
            self.changed.notify_all()

    def wait(self, predicate, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.1))
        return True


def _send_all(sock: socket.socket, data: memoryview | bytes, step: int = 1 << 18) -> None:
    sock.settimeout(MAX_WAIT)
    view = memoryview(data)
    for pos in range(0, len(view), step):
        sock.sendall(view[pos:pos + step])


def _slow_pause(before: int, after: int) -> None:
    if after // SLOW_EVERY != before // SLOW_EVERY:
        time.sleep(SLOW_PAUSE)


# ---------------------------------------------------------------------------
# HTTP/1.1


class _Reader:
    """A socket with a buffer: lines, exact counts, pieces."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def fill(self, size: int = 1 << 18) -> bool:
        self.sock.settimeout(MAX_WAIT)
        try:
            data = self.sock.recv(size)
        except (TimeoutError, ConnectionResetError):
            data = b""
        if not data:
            return False
        self.buf += data
        return True

    def until(self, delim: bytes, limit: int = 1 << 16) -> bytes | None:
        while True:
            at = self.buf.find(delim)
            if at >= 0:
                out = bytes(self.buf[:at + len(delim)])
                del self.buf[:at + len(delim)]
                return out
            if len(self.buf) > limit or not self.fill():
                return None

    def take(self, count: int, digest: Any, slow: bool = False) -> int:
        """Read ``count`` bytes into ``digest``; returns how many came before EOF."""
        got = 0
        while got < count:
            if not self.buf and not self.fill(SLOW_PIECE if slow else 1 << 18):
                return got
            n = min(len(self.buf), count - got, SLOW_PIECE if slow else len(self.buf))
            digest.update(self.buf[:n])
            del self.buf[:n]
            if slow:
                _slow_pause(got, got + n)
            got += n
        return got


class H1App(TcpServer):
    def __init__(self, **kwargs: Any) -> None:
        self.counts = Counters()
        super().__init__(**kwargs)

    def handle(self, conn: ServerConn) -> None:
        reader = _Reader(conn.sock)
        while not self.stopping.is_set():
            head = reader.until(b"\r\n\r\n")
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            self.counts.add("requests", f"{method} {target} {version}")
            fields: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    fields[name.strip().lower()] = value.strip()
            url = urlsplit(target)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            digest = hashlib.sha256()
            slow = url.path == "/slow-read"
            if fields.get("transfer-encoding", "").lower() == "chunked":
                length = 0
                while True:
                    size_line = reader.until(b"\r\n")
                    if size_line is None:
                        return
                    size = int(size_line.split(b";")[0], 16)
                    if size == 0:
                        if reader.until(b"\r\n") is None:  # no trailers from our clients
                            return
                        break
                    if reader.take(size, digest, slow) < size or reader.until(b"\r\n") is None:
                        return
                    length += size
            else:
                length = int(fields.get("content-length", "0"))
                if reader.take(length, digest, slow) < length:
                    return
            keep = version == "HTTP/1.1" and "close" not in fields.get("connection", "").lower()
            count = int(query.get("n", "0"))
            body = piece(count)
            headers = [f"x-up-sha256: {digest.hexdigest()}", f"x-up-length: {length}",
                       "content-type: application/octet-stream"]
            if query.get("chunked") == "1" and version == "HTTP/1.1":
                headers.append("transfer-encoding: chunked")
            else:
                headers.append(f"content-length: {count}")
            if not keep:
                headers.append("connection: close")
            out = ("HTTP/1.1 200 OK\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()
            try:
                if "transfer-encoding: chunked" in headers:
                    conn.send(out)
                    step = 300_000
                    for pos in range(0, count, step):
                        part = body[pos:pos + step]
                        _send_all(conn.sock, b"%x\r\n" % len(part) + bytes(part) + b"\r\n")
                    conn.send(b"0\r\n\r\n")
                else:
                    conn.send(out)
                    _send_all(conn.sock, body)
            except OSError:
                self.counts.add("cut")
                return
            self.counts.add("completed")
            if not keep:
                return


# ---------------------------------------------------------------------------
# HTTP/2 (prior knowledge)


class H2App(TcpServer):
    WINDOW = 1 << 20

    def __init__(self, **kwargs: Any) -> None:
        self.counts = Counters()
        super().__init__(**kwargs)

    def handle(self, conn: ServerConn) -> None:
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions
        import h2.settings

        sock = conn.sock
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        h2c.initiate_connection()
        h2c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.WINDOW})
        h2c.increment_flow_control_window(16 * self.WINDOW)
        streams: dict[int, dict[str, Any]] = {}

        def respond(sid: int, st: dict[str, Any]) -> None:
            count = int(st["query"].get("n", "0"))
            h2c.send_headers(sid, [(b":status", b"200"), (b"x-up-sha256", st["sha"].hexdigest().encode()),
                                   (b"x-up-length", str(st["len"]).encode())], end_stream=count == 0)
            if count:
                st["out"], st["pos"] = piece(count), 0
            else:
                self.counts.add("completed")
                streams.pop(sid, None)

        while not self.stopping.is_set():
            for sid, st in list(streams.items()):
                out = st.get("out")
                if out is None:
                    continue
                try:
                    while st["pos"] < len(out):
                        room = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                        if room <= 0:
                            break
                        h2c.send_data(sid, bytes(out[st["pos"]:st["pos"] + room]))
                        st["pos"] += room
                    if st["pos"] >= len(out):
                        h2c.end_stream(sid)
                        streams.pop(sid, None)
                        self.counts.add("completed")
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                    streams.pop(sid, None)
            pending = h2c.data_to_send()
            if pending:
                try:
                    _send_all(sock, pending)
                except OSError:
                    self._cut_all(streams)
                    return
            readable, _, _ = select.select([sock], [], [], 0.05)
            if not readable:
                continue
            try:
                data = sock.recv(1 << 18)
            except OSError:
                data = b""
            if not data:
                self._cut_all(streams)
                return
            try:
                events = h2c.receive_data(data)
            except h2.exceptions.ProtocolError:
                return
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    fields = dict(ev.headers)
                    url = urlsplit(fields.get(b":path", b"/").decode())
                    st = {"path": url.path, "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                          "sha": hashlib.sha256(), "len": 0}
                    streams[ev.stream_id] = st
                    self.counts.add("requests", f"{fields.get(b':method', b'').decode()} {url.path}")
                    if ev.stream_ended:
                        respond(ev.stream_id, st)
                elif isinstance(ev, h2.events.DataReceived):
                    st = streams.get(ev.stream_id)
                    if st is not None:
                        st["sha"].update(ev.data)
                        before = st["len"]
                        st["len"] += len(ev.data)
                        if st["path"] == "/slow-read":
                            # Credit comes back slowly: the sender sees a slow reader.
                            time.sleep(SLOW_PAUSE * len(ev.data) / SLOW_EVERY)
                            _slow_pause(before, st["len"])
                    try:
                        h2c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                        pass
                elif isinstance(ev, h2.events.StreamEnded):
                    st = streams.get(ev.stream_id)
                    if st is not None and st.get("out") is None:
                        respond(ev.stream_id, st)
                elif isinstance(ev, h2.events.StreamReset):
                    if streams.pop(ev.stream_id, None) is not None:
                        self.counts.add("resets")
                        self.counts.add("cut")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self._cut_all(streams)
                    return

    def _cut_all(self, streams: dict[int, dict[str, Any]]) -> None:
        for _ in streams:
            self.counts.add("cut")
        streams.clear()


# ---------------------------------------------------------------------------
# gRPC


GRPC_SERVICE = "meshproxy.matrix.Stream"
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 32 << 20),
    ("grpc.max_receive_message_length", 32 << 20),
    ("grpc.enable_http_proxy", 0),
]


class GrpcApp:
    """Bidi (echo), Down (b"N:SIZE": N slices of the blob), SlowUp (reads slowly, answers the digest)."""

    def __init__(self, host: str = "0.0.0.0", port: int = 0) -> None:
        import grpc

        self.counts = Counters()
        handlers = {
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi),
            "Down": grpc.unary_stream_rpc_method_handler(self._down),
            "SlowUp": grpc.stream_unary_rpc_method_handler(self._slow_up),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=GRPC_OPTIONS)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GRPC_SERVICE, handlers),))
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        self.server.start()

    def _watch(self, context: Any) -> threading.Event:
        done = threading.Event()

        def ended() -> None:
            if not done.is_set():
                self.counts.add("cut")

        context.add_callback(ended)
        return done

    def _bidi(self, requests, context):
        self.counts.add("requests", "Bidi")
        done = self._watch(context)
        yield from requests
        done.set()
        self.counts.add("completed")

    def _down(self, request: bytes, context):
        self.counts.add("requests", "Down")
        done = self._watch(context)
        count, size = (int(x) for x in request.split(b":"))
        for i in range(count):
            if not context.is_active():
                return
            yield bytes(piece(size, (i * size) % (BLOB_SIZE - size)))
        done.set()
        self.counts.add("completed")

    def _slow_up(self, requests, context) -> bytes:
        self.counts.add("requests", "SlowUp")
        done = self._watch(context)
        digest = hashlib.sha256()
        total = 0
        for message in requests:
            digest.update(message)
            time.sleep(SLOW_PAUSE * max(1, len(message) // SLOW_EVERY))
            total += len(message)
        done.set()
        self.counts.add("completed")
        return f"{total}:{digest.hexdigest()}".encode()

    def stop(self) -> None:
        self.server.stop(grace=0).wait(5)


# ---------------------------------------------------------------------------
# WebSocket


class WsApp:
    """Paths: /echo, /down?n=M&size=S (M bytes in messages of S), /up-down?n=M&size=S and
    /slow-read (binary messages until the text "END", then the digest as text; /slow-read reads slowly)."""

    def __init__(self, host: str = "0.0.0.0", port: int = 0) -> None:
        from websockets.sync.server import serve

        self.counts = Counters()
        self.server = serve(self._handle, host, port, max_size=None, compression=None, max_queue=4)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="ws-app", daemon=True)
        self.thread.start()

    def _handle(self, ws: Any) -> None:
        url = urlsplit(ws.request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.counts.add("requests", url.path)
        try:
            if url.path == "/echo":
                for message in ws:
                    ws.send(message)
                self.counts.add("completed")
                return
            if url.path in ("/up-down", "/slow-read"):
                digest, total = hashlib.sha256(), 0
                while True:
                    message = ws.recv(timeout=MAX_WAIT)
                    if message == "END":
                        break
                    digest.update(message)
                    if url.path == "/slow-read":
                        time.sleep(SLOW_PAUSE * max(1, len(message) // SLOW_EVERY))
                    total += len(message)
                ws.send(f"{total}:{digest.hexdigest()}")
            count, size = int(query.get("n", "0")), int(query.get("size", str(1 << 20)))
            for pos in range(0, count, size):
                ws.send(bytes(piece(min(size, count - pos), pos)))
            ws.send("END")
        except Exception:
            self.counts.add("cut")
            return
        self.counts.add("completed")

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


# ---------------------------------------------------------------------------
# raw TCP


class StreamApp(TcpServer):
    """One command line from the client (after the banner, when there is one):

    ``ECHO``      echo every byte until the client half-closes, then half-close
    ``DOWN n``    send n bytes of the blob, then half-close
    ``UP n``      read n bytes, answer "<sha256>\\n" (``SLOWUP n``: read them slowly)
    """

    def __init__(self, banner: bytes | None = None, **kwargs: Any) -> None:
        self.banner = banner
        self.counts = Counters()
        super().__init__(**kwargs)

    def handle(self, conn: ServerConn) -> None:
        sock = conn.sock
        if self.banner:
            conn.send(self.banner)
        reader = _Reader(sock)
        line = reader.until(b"\n")
        if line is None:
            return
        words = line.decode("latin-1").split()
        self.counts.add("requests", " ".join(words))
        try:
            if words[0] == "ECHO":
                if reader.buf:
                    conn.send(bytes(reader.buf))
                    reader.buf.clear()
                while True:
                    sock.settimeout(MAX_WAIT)
                    data = sock.recv(1 << 18)
                    if not data:
                        break
                    sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            elif words[0] == "DOWN":
                _send_all(sock, piece(int(words[1])))
                sock.shutdown(socket.SHUT_WR)
            elif words[0] in ("UP", "SLOWUP"):
                digest = hashlib.sha256()
                count = int(words[1])
                if reader.take(count, digest, slow=words[0] == "SLOWUP") < count:
                    self.counts.add("cut")
                    return
                conn.send(digest.hexdigest().encode() + b"\n")
                sock.shutdown(socket.SHUT_WR)
            # Let the client read the end before the close.
            sock.settimeout(5)
            try:
                while sock.recv(1 << 16):
                    pass
            except OSError:
                pass
        except OSError:
            self.counts.add("cut")
            return
        self.counts.add("completed")


# ---------------------------------------------------------------------------
# the front that lets an app die


class DyingFront:
    """A TCP relay on ``port`` to ``backend``. ``arm(after)``: the next connection whose responses
    carry more than ``after`` bytes (counted from the arming) is reset both ways, once."""

    def __init__(self, backend: tuple[str, int], host: str = "0.0.0.0", port: int = 0, name: str = "front") -> None:
        self.backend = backend
        self.name = name
        self.listener = socket.create_server((host, port), reuse_port=False, backlog=256)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.armed: int | None = None
        self.passed = 0
        self.killed = threading.Event()
        self.stopping = threading.Event()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, name=f"{name}-accept", daemon=True).start()

    def arm(self, after: int) -> None:
        with self.lock:
            self.killed.clear()
            self.passed = 0
            self.armed = after

    def disarm(self) -> None:
        with self.lock:
            self.armed = None

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                up = socket.create_connection(self.backend, timeout=5)
            except OSError:
                _abort(client)
                continue
            for sock in (client, up):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(None)
            with self.lock:
                self.pairs.append((client, up))
            ends = [2]  # both directions running; the second to end closes the pair
            threading.Thread(target=self._pump, args=(client, up, False, ends), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, True, ends), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool, ends: list[int]) -> None:
        try:
            while True:
                data = src.recv(1 << 17)
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    with self.lock:
                        ends[0] -= 1
                        last = ends[0] == 0
                    if last:
                        src.close()
                        dst.close()
                    return
                if downstream:
                    with self.lock:
                        kill = False
                        if self.armed is not None:
                            self.passed += len(data)
                            if self.passed > self.armed:
                                self.armed = None
                                kill = True
                    if kill:
                        self.killed.set()
                        # Part of this read goes out first: a response cut in its middle.
                        dst.sendall(data[: len(data) // 2])
                        _abort(dst)
                        _abort(src)
                        return
                dst.sendall(data)
        except OSError:
            _abort(dst)
            _abort(src)

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        with self.lock:
            pairs = list(self.pairs)
        for a, b in pairs:
            _abort(a)
            _abort(b)


def _abort(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a dying process's socket may be."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # A thread blocked in recv() on this socket would keep it alive past close(): wake it
        # (SHUT_RD sends nothing), so that the close really resets the connection now.
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass

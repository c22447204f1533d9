"""The client matrix: client protocol x hop x app protocol, real proxies, real clients and servers.

Everything lives in one network namespace the module creates (loopback,
real iptables), like a pod: the apps, five proxies (run under the group the
nat rules exempt), the identity issuer, and every client. Each app sits
behind a ``DyingFront`` (a relay that can reset the app's connection
mid-response), listening on an unlisted port unless said otherwise.

Hops (how a client reaches app X on port P):

- ``out``:   proxy P1's outbound listener. HTTP clients address it directly
             (Host / :authority / CONNECT 127.0.0.1:P); raw TCP dials
             127.0.0.3:P, which iptables redirects to it (SO_ORIGINAL_DST).
- ``in``:    127.0.0.2:P, redirected to P1's inbound listener, which forwards
             to 127.0.0.1:P.
- ``plain``: proxy A2's outbound (HTTP: Host ``x.mesh:P``; raw TCP: 127.0.0.4:P,
             redirected), which learns from its endpoints file that X is
             behind proxy B2 and crosses a plaintext meshed hop (B2 trusts
             127.0.0.0/8 as the cluster network).
- ``mtls``:  the same through A3 -> B3 (127.0.0.5:P), mutual TLS with identities
             from the test issuer.

Each cell runs five checks: ``large`` (LARGE bytes up and LARGE down, each
checked by sha256), ``slow-client`` (the client reads SLOW bytes in small
pieces with pauses), ``slow-app`` (the app reads SLOW bytes slowly),
``client-reset`` (the client goes away in the middle of a RESET_SIZE
response: the app must see its response cut, not read to the end), and
``app-dies`` (the app's connection is reset mid-response: the client gets a
clean error or close). After every check the cell serves a small exchange
and no proxy has written a traceback or exited.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from helpers.clients import tcp_exchange
from helpers.issuer import Issuer, identity_name
from helpers.matrix_apps import (
    BLOB_SIZE,
    SLOW_EVERY,
    SLOW_PAUSE,
    SLOW_PIECE,
    DyingFront,
    GrpcApp,
    H1App,
    H2App,
    StreamApp,
    WsApp,
    piece,
)
from helpers.netns import NetNs, NsMeshProxy
from helpers.postgres import Postgres, psql_command

pytestmark = pytest.mark.timeout(120)

LARGE = 16 << 20
SLOW = 4 << 20
RESET_SIZE = 48 << 20  # more than every buffer on the way can hold: the app is still sending when the client leaves
KILL_AFTER = 1 << 20
CUT_WAIT = 10.0  # the app sees a client's reset within this
IO_TIMEOUT = 30.0

WEB = identity_name("web")
API = identity_name("api")
BANNER = b"220 matrix banner ready\r\n"
PG_LISTED = 5432  # in the default MESHPROXY_OPAQUE_PORTS
PG_UNLISTED = 15433

HOP_IPS = {"in": "127.0.0.2", "out": "127.0.0.3", "plain": "127.0.0.4", "mtls": "127.0.0.5"}
HOPS = ("out", "in", "plain", "mtls")
CHECKS = ("large", "slow-client", "slow-app", "client-reset", "app-dies")
CLIENTS = {
    # client protocol: the app it talks to
    "h1-keepalive": "h1",
    "h1-chunked": "h1",
    "h1.0": "h1",
    "h2c": "h2",
    "grpc-bidi": "grpc",
    "websocket": "ws",
    "connect": "echo",
    "tcp-client-first": "echo",
    "tcp-server-first": "banner",
    "psql-5432": "pg-listed",
    "psql-unlisted": "pg-unlisted",
}


def _by_construction(client: str, hop: str, check: str) -> str | None:
    """Why a combination is not a cell (None: it is one). Pairings of client and app protocol that
    cannot talk at all (gRPC or h2c to an HTTP/1 app, HTTP/1 to a gRPC app) are never generated."""
    if client == "connect" and hop == "in":
        return "CONNECT asks the outbound side for a tunnel; the inbound side forwards to its own app only"
    if client.startswith("psql") and check == "slow-app":
        return "the app is PostgreSQL itself, which cannot be made to read slowly"
    return None


CELLS = [
    pytest.param(client, hop, check, id=f"{client}-{hop}-{check}")
    for client in CLIENTS for hop in HOPS for check in CHECKS
    if _by_construction(client, hop, check) is None
]


@lru_cache(maxsize=16)
def blob_sha(size: int, offset: int = 0) -> str:
    return hashlib.sha256(piece(size, offset)).hexdigest()


def _abort(sock: socket.socket) -> None:
    """Go away with a reset, as a killed client does."""
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


# ---------------------------------------------------------------------------
# the world: namespace, apps, proxies


@dataclass
class Route:
    connect: tuple[str, int]  # where an HTTP client (or CONNECT) connects
    authority: str  # Host / :authority / CONNECT target
    dial: tuple[str, int]  # where a raw TCP client connects (redirected by iptables)


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ns = NetNs("mpm").create()
        self.apps: dict[str, Any] = {}
        self.fronts: dict[str, DyingFront] = {}
        self.proxies: dict[str, NsMeshProxy] = {}
        self.issuer: Issuer | None = None
        self.postgres: Postgres | None = None
        self.grpc = None

    def start(self) -> None:
        from helpers.grpc_worker import GrpcWorker

        with self.ns:
            self.postgres = Postgres(port=25432)
            pg_thread = threading.Thread(target=self.postgres.start, daemon=True)
            pg_thread.start()
            self.issuer = Issuer(self.tmp / "issuer", [WEB, API]).start()
            backends = {
                "h1": H1App(name="h1-app"),
                "h2": H2App(name="h2-app"),
                "grpc": GrpcApp(host="127.0.0.1"),
                "ws": WsApp(host="127.0.0.1"),
                "echo": StreamApp(name="echo-app"),
                "banner": StreamApp(banner=BANNER, name="banner-app"),
            }
            self.apps = backends
            for name, app in backends.items():
                self.fronts[name] = DyingFront(("127.0.0.1", app.port), name=f"{name}-front")
            self.fronts["pg-listed"] = DyingFront(("127.0.0.1", 25432), port=PG_LISTED, name="pg-listed")
            self.fronts["pg-unlisted"] = DyingFront(("127.0.0.1", 25432), port=PG_UNLISTED, name="pg-unlisted")
            p1 = NsMeshProxy(self.ns, name="P1", log_path=self.tmp / "p1.log")
            b2 = NsMeshProxy(self.ns, env={"MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8"}, name="B2",
                             log_path=self.tmp / "b2.log")
            b3 = NsMeshProxy(self.ns, env=self.issuer.env(API), name="B3", log_path=self.tmp / "b3.log")
            self._endpoints("plain", b2, None)
            self._endpoints("mtls", b3, API)
            a2 = NsMeshProxy(self.ns, env={"MESHPROXY_DESTINATION": f"file://{self.tmp / 'plain.yaml'}"},
                             name="A2", log_path=self.tmp / "a2.log")
            a3 = NsMeshProxy(self.ns, env={**self.issuer.env(WEB),
                                           "MESHPROXY_DESTINATION": f"file://{self.tmp / 'mtls.yaml'}"},
                             name="A3", log_path=self.tmp / "a3.log")
            self.proxies = {"P1": p1, "A2": a2, "B2": b2, "A3": a3, "B3": b3}
            for mp in self.proxies.values():
                mp.start(wait_ready=False)
            for mp in self.proxies.values():
                mp.wait_ready(30)
            self.ns.exempt_proxies()
            self.ns.redirect(HOP_IPS["in"], p1.inbound[1])
            self.ns.redirect(HOP_IPS["out"], p1.outbound[1])
            self.ns.redirect(HOP_IPS["plain"], a2.outbound[1])
            self.ns.redirect(HOP_IPS["mtls"], a3.outbound[1])
            self.grpc = GrpcWorker()
            pg_thread.join(90)
            assert self.postgres.proc is not None and self.postgres.proc.poll() is None, "postgres did not start"

    def _endpoints(self, hop: str, peer: NsMeshProxy, identity: str | None) -> None:
        lines = ["services:"]
        for name, front in self.fronts.items():
            lines += [
                f"  {name}.mesh:{front.port}:",
                f"    addresses: [{HOP_IPS[hop]}:{front.port}]",
                "    endpoints:",
                f"      - address: 127.0.0.1:{front.port}",
                f"        proxy: {peer.inbound_hostport}",
            ]
            if identity:
                lines.append(f"        identity: {identity}")
        (self.tmp / f"{hop}.yaml").write_text("\n".join(lines) + "\n")

    def route(self, app: str, hop: str) -> Route:
        port = self.fronts[app].port
        dial = (HOP_IPS[hop], port)
        if hop == "out":
            return Route(self.proxies["P1"].outbound, f"127.0.0.1:{port}", dial)
        if hop == "in":
            return Route(dial, f"127.0.0.2:{port}", dial)
        outbound = self.proxies["A2" if hop == "plain" else "A3"].outbound
        return Route(outbound, f"{app}.mesh:{port}", dial)

    def stop(self) -> None:
        for stop in [getattr(self.grpc, "stop", None), *(f.stop for f in self.fronts.values()),
                     *(mp.close for mp in self.proxies.values()), *(a.stop for a in self.apps.values()),
                     getattr(self.issuer, "stop", None), getattr(self.postgres, "stop", None)]:
            if stop is None:
                continue
            try:
                stop()
            except Exception as err:  # keep tearing down; the namespace goes last
                print(f"teardown: {err!r}")
        self.ns.delete()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("matrix"))
    try:
        w.start()
        yield w
    finally:
        w.stop()


@pytest.fixture(autouse=True)
def _healthy_proxies(world):
    """Every test runs inside the namespace, and leaves every proxy running without a traceback."""
    marks = {name: mp.mark() for name, mp in world.proxies.items()}
    for front in world.fronts.values():
        front.disarm()
    with world.ns:
        yield
    for name, mp in world.proxies.items():
        assert mp.running(), f"{name} exited;\n{mp.tail()}"
        bad = [line for line in mp.lines(marks[name]) if "Traceback" in line or "Exception in callback" in line]
        assert not bad, f"{name} wrote a traceback:\n" + "\n".join(mp.lines(marks[name])[-60:])


# ---------------------------------------------------------------------------
# raw socket helpers


def _connect(addr: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(addr, timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Reader:
    """Reads a socket into a buffer; hashes bodies; can be slow."""

    def __init__(self, sock: socket.socket, slow: bool = False) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.slow = slow
        self.eof = False
        self.reset = False
        self.total = 0

    def fill(self) -> bool:
        if self.eof:
            return False
        self.sock.settimeout(IO_TIMEOUT)
        try:
            data = self.sock.recv(SLOW_PIECE if self.slow else 1 << 18)
        except ConnectionResetError:
            self.reset = True
            data = b""
        if not data:
            self.eof = True
            return False
        if self.slow and (self.total + len(data)) // SLOW_EVERY != self.total // SLOW_EVERY:
            time.sleep(SLOW_PAUSE)
        self.total += len(data)
        self.buf += data
        return True

    def until(self, delim: bytes) -> bytes:
        while True:
            at = self.buf.find(delim)
            if at >= 0:
                out = bytes(self.buf[:at + len(delim)])
                del self.buf[:at + len(delim)]
                return out
            if not self.fill():
                raise ConnectionError(f"EOF before {delim!r}; got {bytes(self.buf[:300])!r}")

    def body(self, count: int | None, digest: Any, stop_after: int | None = None) -> int:
        """``count`` bytes (None: until EOF) into ``digest``; returns how many came. Stops early after
        ``stop_after`` bytes when given."""
        got = 0
        while count is None or got < count:
            if stop_after is not None and got >= stop_after:
                return got
            if not self.buf and not self.fill():
                return got
            n = len(self.buf) if count is None else min(len(self.buf), count - got)
            digest.update(self.buf[:n])
            del self.buf[:n]
            got += n
        return got


def _stall_then(reader: Reader) -> None:
    """A slow reader first stops reading altogether for a while: everything on the way fills up."""
    time.sleep(0.3)


def _send_in_thread(sock: socket.socket, chunks) -> threading.Thread:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except BaseException as err:  # the reader side reports the outcome
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def _wait_cut(app, before: int, what: str) -> None:
    assert app.counts.wait(lambda: app.counts.cut > before, CUT_WAIT), (
        f"{what}: the app's response was not cut within {CUT_WAIT}s of the client's reset "
        f"(completed={app.counts.completed}, cut={app.counts.cut}): the proxy kept reading the app for nobody")


# ---------------------------------------------------------------------------
# HTTP/1 clients


def _h1_head(reader: Reader) -> tuple[int, dict[str, str]]:
    head = reader.until(b"\r\n\r\n").decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    return status, fields


def _h1_body(reader: Reader, fields: dict[str, str], stop_after: int | None = None) -> tuple[str, int, bool]:
    """(sha256, length, complete) of a response body framed by ``fields``."""
    digest = hashlib.sha256()
    if fields.get("transfer-encoding", "").lower() == "chunked":
        total = 0
        while True:
            try:
                size = int(reader.until(b"\r\n").split(b";")[0], 16)
            except ConnectionError:
                return digest.hexdigest(), total, False
            if size == 0:
                try:
                    reader.until(b"\r\n")
                except ConnectionError:
                    return digest.hexdigest(), total, False
                return digest.hexdigest(), total, True
            got = reader.body(size, digest, None if stop_after is None else max(0, stop_after - total))
            total += got
            if got < size:
                return digest.hexdigest(), total, False
            try:
                reader.until(b"\r\n")
            except ConnectionError:
                return digest.hexdigest(), total, False
    if "content-length" in fields:
        length = int(fields["content-length"])
        got = reader.body(length, digest, stop_after)
        return digest.hexdigest(), got, got == length
    got = reader.body(None, digest, stop_after)
    return digest.hexdigest(), got, reader.eof and not reader.reset


class H1Client:
    """HTTP/1 over a raw socket: ``keepalive`` (several requests on one connection), ``chunked``
    (chunked uploads, chunked responses) or ``1.0`` (HTTP/1.0, one request per connection)."""

    def __init__(self, world: World, hop: str, mode: str) -> None:
        self.world = world
        self.route = world.route("h1", hop)
        self.mode = mode
        self.app = world.apps["h1"]
        self.sock: socket.socket | None = None
        self.reader: Reader | None = None

    def _conn(self, slow: bool = False) -> Reader:
        if self.sock is None or self.mode == "1.0":
            if self.sock is not None:
                self.sock.close()
            self.sock = _connect(self.route.connect)
            self.reader = Reader(self.sock)
        assert self.reader is not None
        self.reader.slow = slow
        return self.reader

    def request(self, method: str, path: str, body: memoryview | bytes = b"", slow: bool = False,
                stop_after: int | None = None) -> tuple[int, dict[str, str], tuple[str, int, bool]]:
        reader = self._conn(slow)
        version = "HTTP/1.0" if self.mode == "1.0" else "HTTP/1.1"
        fields = [f"Host: {self.route.authority}"]
        chunked = self.mode == "chunked" and method == "POST"
        fields.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}")
        head = f"{method} {path} {version}\r\n" + "".join(f + "\r\n" for f in fields) + "\r\n"
        view = memoryview(body)
        step = 300_000
        if chunked:
            parts = [head.encode()] + [b"%x\r\n" % len(view[p:p + step]) + bytes(view[p:p + step]) + b"\r\n"
                                       for p in range(0, len(view), step)] + [b"0\r\n\r\n"]
        else:
            parts = [head.encode()] + [view[p:p + (1 << 18)] for p in range(0, len(view), 1 << 18)]
        sender = _send_in_thread(reader.sock, parts)
        if slow:
            _stall_then(reader)
        status, headers = _h1_head(reader)
        result = _h1_body(reader, headers, stop_after)
        sender.join(IO_TIMEOUT)
        assert not sender.errors or stop_after is not None, sender.errors  # type: ignore[attr-defined]
        return status, headers, result

    def _query(self, count: int) -> str:
        return f"n={count}" + ("&chunked=1" if self.mode == "chunked" else "")

    def small(self) -> None:
        data = piece(1000, 7)
        status, headers, (digest, length, complete) = self.request("POST", f"/up-down?{self._query(1000)}", data)
        assert status == 200 and complete, (status, headers)
        assert headers["x-up-sha256"] == blob_sha(1000, 7) and digest == blob_sha(1000)

    def large(self) -> None:
        status, headers, (digest, length, complete) = self.request(
            "POST", f"/up-down?{self._query(LARGE)}", piece(LARGE))
        assert status == 200, (status, headers)
        assert headers["x-up-length"] == str(LARGE) and headers["x-up-sha256"] == blob_sha(LARGE), headers
        assert complete and length == LARGE and digest == blob_sha(LARGE), (length, complete)
        if self.mode == "keepalive":
            # More requests on the same connection.
            assert "close" not in headers.get("connection", "").lower(), headers
            for _ in range(3):
                self.small()

    def slow_client(self) -> None:
        status, headers, (digest, length, complete) = self.request("GET", f"/down?{self._query(SLOW)}", slow=True)
        assert status == 200 and complete and length == SLOW and digest == blob_sha(SLOW), (status, length)

    def slow_app(self) -> None:
        status, headers, (digest, length, complete) = self.request("POST", "/slow-read?n=10", piece(SLOW))
        assert status == 200 and complete, (status, headers)
        assert headers["x-up-sha256"] == blob_sha(SLOW) and headers["x-up-length"] == str(SLOW), headers

    def client_reset(self) -> None:
        before = self.app.counts.cut
        status, headers, (_, length, complete) = self.request("GET", f"/down?{self._query(RESET_SIZE)}",
                                                              stop_after=KILL_AFTER)
        assert status == 200 and not complete and length >= KILL_AFTER
        assert self.sock is not None
        _abort(self.sock)
        self.sock = None
        _wait_cut(self.app, before, "HTTP/1 client reset")

    def app_dies(self) -> None:
        front = self.world.fronts["h1"]
        front.arm(KILL_AFTER)
        status, headers, (_, length, complete) = self.request("GET", f"/down?{self._query(RESET_SIZE)}")
        assert front.killed.is_set()
        if status == 200:
            # The head had gone out: the only honest signal left is a body cut short and a closed connection.
            assert not complete and length < RESET_SIZE, (length, complete)
            assert self.reader is not None and self.reader.eof, "connection left open after a cut response"
        else:
            assert status in (502, 503) and headers.get("l5d-proxy-error"), (status, headers)
        self.sock = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


# ---------------------------------------------------------------------------
# HTTP/2 (h2c)


class H2cClient:
    def __init__(self, world: World, hop: str) -> None:
        from helpers.h2client import H2Client

        self.world = world
        self.route = world.route("h2", hop)
        self.app = world.apps["h2"]
        self.client = H2Client(self.route.connect, timeout=IO_TIMEOUT, window=1 << 20)

    def _slow_pump(self, deadline: float) -> None:
        """Read at most SLOW_PIECE at a time, pausing: a slow reader that returns credit as it reads."""
        import select

        c = self.client
        readable, _, _ = select.select([c.sock], [], [], 0.2)
        if not readable:
            return
        chunk = c.sock.recv(SLOW_PIECE)
        if not chunk:
            c.eof = True
            return
        for event in c.conn.receive_data(chunk):
            c._event(event)
        c._send_uploads()
        c._flush()
        self._slow_total = getattr(self, "_slow_total", 0) + len(chunk)
        if self._slow_total // SLOW_EVERY != (self._slow_total - len(chunk)) // SLOW_EVERY:
            time.sleep(SLOW_PAUSE)

    def small(self) -> None:
        resp = self.client.exchange("POST", "/up-down?n=1000", self.route.authority, body=bytes(piece(1000, 7)),
                                    timeout=IO_TIMEOUT)
        assert resp.status == 200 and resp.ended, resp.summary()
        assert resp.header("x-up-sha256") == blob_sha(1000, 7)
        assert hashlib.sha256(resp.data).hexdigest() == blob_sha(1000)

    def large(self) -> None:
        resp = self.client.exchange("POST", f"/up-down?n={LARGE}", self.route.authority, body=bytes(piece(LARGE)),
                                    timeout=IO_TIMEOUT)
        assert resp.status == 200 and resp.ended, resp.summary()
        assert resp.header("x-up-sha256") == blob_sha(LARGE) and resp.header("x-up-length") == str(LARGE)
        assert len(resp.data) == LARGE and hashlib.sha256(resp.data).hexdigest() == blob_sha(LARGE)
        self.small()

    def slow_client(self) -> None:
        sid = self.client.request("GET", f"/down?n={SLOW}", self.route.authority)
        resp = self.client.responses[sid]
        time.sleep(0.3)
        end = time.monotonic() + IO_TIMEOUT
        while not resp.done:
            assert not self.client.eof and time.monotonic() < end, resp.summary()
            self._slow_pump(end)
        assert resp.status == 200 and resp.ended, resp.summary()
        assert len(resp.data) == SLOW and hashlib.sha256(resp.data).hexdigest() == blob_sha(SLOW)

    def slow_app(self) -> None:
        resp = self.client.exchange("POST", "/slow-read?n=10", self.route.authority, body=bytes(piece(SLOW)),
                                    timeout=IO_TIMEOUT)
        assert resp.status == 200 and resp.ended, resp.summary()
        assert resp.header("x-up-sha256") == blob_sha(SLOW) and resp.header("x-up-length") == str(SLOW)

    def client_reset(self) -> None:
        before = self.app.counts.cut
        sid = self.client.request("GET", f"/down?n={RESET_SIZE}", self.route.authority)
        resp = self.client.responses[sid]
        self.client.wait(lambda: len(resp.data) >= KILL_AFTER or resp.done, IO_TIMEOUT, "the first MiB")
        assert resp.status == 200 and not resp.done, resp.summary()
        self.client.reset(sid)
        _wait_cut(self.app, before, "HTTP/2 stream reset")

    def app_dies(self) -> None:
        front = self.world.fronts["h2"]
        front.arm(KILL_AFTER)
        sid = self.client.request("GET", f"/down?n={RESET_SIZE}", self.route.authority)
        resp = self.client.response(sid, IO_TIMEOUT)
        assert front.killed.is_set()
        if resp.status == 200:
            # Cut after the head: the stream must end in a reset, never as if complete.
            assert resp.reset_code is not None and not resp.ended and len(resp.data) < RESET_SIZE, resp.summary()
        else:
            assert resp.status in (502, 503) and resp.header("l5d-proxy-error"), resp.summary()

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------------
# gRPC (in the worker process, inside the namespace)


class GrpcClient:
    SIZE = 1 << 20

    def __init__(self, world: World, hop: str) -> None:
        self.world = world
        self.route = world.route("grpc", hop)
        self.app = world.apps["grpc"]
        self.target = f"{self.route.connect[0]}:{self.route.connect[1]}"

    def call(self, **op: Any) -> dict[str, Any]:
        return self.world.grpc.call(target=self.target, authority=self.route.authority, timeout=IO_TIMEOUT, **op)

    def small(self) -> None:
        got = self.call(op="bidi", count=3, size=1000)
        assert got["code"] == "OK" and got["recv_sha"] == got["sent_sha"], got

    def large(self) -> None:
        got = self.call(op="bidi", count=LARGE // self.SIZE, size=self.SIZE)
        assert got["code"] == "OK", got
        assert got["recv_len"] == LARGE and got["recv_sha"] == got["sent_sha"], got

    def slow_client(self) -> None:
        size = 64 << 10
        got = self.call(op="down", count=SLOW // size, size=size, slow=True)
        expect = hashlib.sha256(b"".join(piece(size, (i * size) % (BLOB_SIZE - size)) for i in range(SLOW // size)))
        assert got["code"] == "OK" and got["recv_len"] == SLOW and got["recv_sha"] == expect.hexdigest(), got

    def slow_app(self) -> None:
        size = 64 << 10
        got = self.call(op="slow_up", count=SLOW // size, size=size)
        assert got["code"] == "OK" and got["reply"] == f"{SLOW}:{got['sent_sha']}", got

    def client_reset(self) -> None:
        before = self.app.counts.cut
        size = 256 << 10
        got = self.call(op="down", count=RESET_SIZE // size, size=size, cancel_after=4)
        assert got["code"] == "CANCELLED" and got["messages"] == 4, got
        _wait_cut(self.app, before, "gRPC cancel")

    def app_dies(self) -> None:
        front = self.world.fronts["grpc"]
        front.arm(KILL_AFTER)
        size = 256 << 10
        got = self.call(op="down", count=RESET_SIZE // size, size=size)
        assert front.killed.is_set()
        assert got["code"] not in ("OK", "DEADLINE_EXCEEDED") and got["recv_len"] < RESET_SIZE, got

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------
# WebSocket


class WsClient:
    def __init__(self, world: World, hop: str) -> None:
        self.world = world
        self.route = world.route("ws", hop)
        self.app = world.apps["ws"]

    def _open(self, path: str, **kwargs: Any):
        from websockets.sync.client import connect

        sock = _connect(self.route.connect)
        return connect(f"ws://{self.route.authority}{path}", sock=sock, open_timeout=IO_TIMEOUT,
                       close_timeout=5, max_size=None, compression=None, **kwargs)

    def _download(self, ws, slow: bool = False) -> tuple[str, int]:
        digest, total = hashlib.sha256(), 0
        while True:
            message = ws.recv(timeout=IO_TIMEOUT)
            if message == "END":
                return digest.hexdigest(), total
            digest.update(message)
            if slow and (total + len(message)) // SLOW_EVERY != total // SLOW_EVERY:
                time.sleep(SLOW_PAUSE)
            total += len(message)

    def small(self) -> None:
        with self._open("/echo") as ws:
            for i in range(3):
                ws.send(bytes(piece(1000, i)))
                assert ws.recv(timeout=IO_TIMEOUT) == bytes(piece(1000, i))

    def _upload(self, ws, size: int) -> None:
        step = 1 << 20 if size >= 1 << 20 else size
        for pos in range(0, size, step):
            ws.send(bytes(piece(step, pos)))
        ws.send("END")

    def large(self) -> None:
        with self._open(f"/up-down?n={LARGE}&size={1 << 20}") as ws:
            self._upload(ws, LARGE)
            assert ws.recv(timeout=IO_TIMEOUT) == f"{LARGE}:{blob_sha(LARGE)}"
            assert self._download(ws) == (blob_sha(LARGE), LARGE)

    def slow_client(self) -> None:
        with self._open(f"/down?n={SLOW}&size={16 << 10}", max_queue=2) as ws:
            time.sleep(0.3)
            assert self._download(ws, slow=True) == (blob_sha(SLOW), SLOW)

    def slow_app(self) -> None:
        with self._open("/slow-read") as ws:
            step = 64 << 10
            for pos in range(0, SLOW, step):
                ws.send(bytes(piece(step, pos)))
            ws.send("END")
            assert ws.recv(timeout=IO_TIMEOUT) == f"{SLOW}:{blob_sha(SLOW)}"
            assert ws.recv(timeout=IO_TIMEOUT) == "END"

    def client_reset(self) -> None:
        before = self.app.counts.cut
        with self._open(f"/down?n={RESET_SIZE}&size={256 << 10}", max_queue=2) as ws:
            taken = 0
            while taken < KILL_AFTER:
                taken += len(ws.recv(timeout=IO_TIMEOUT))
            _abort(ws.socket)
        _wait_cut(self.app, before, "WebSocket client reset")

    def app_dies(self) -> None:
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        front = self.world.fronts["ws"]
        front.arm(KILL_AFTER)
        with self._open(f"/down?n={RESET_SIZE}&size={256 << 10}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                self._download(ws)
            assert not isinstance(closed.value, ConnectionClosedOK), closed.value
        assert front.killed.is_set()

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------
# raw TCP: CONNECT tunnels, client-first and server-first protocols


class TcpClient:
    def __init__(self, world: World, hop: str, mode: str) -> None:
        self.world = world
        self.mode = mode  # connect | client-first | server-first
        app = "banner" if mode == "server-first" else "echo"
        self.app = world.apps[app]
        self.front = world.fronts[app]
        self.route = world.route(app, hop)

    def _open(self) -> Reader:
        if self.mode == "connect":
            sock = _connect(self.route.connect)
            sock.sendall(f"CONNECT {self.route.authority} HTTP/1.1\r\nHost: {self.route.authority}\r\n\r\n".encode())
            reader = Reader(sock)
            status, fields = _h1_head(reader)
            assert status == 200, (status, fields)
            return reader
        reader = Reader(_connect(self.route.dial))
        if self.mode == "server-first":
            assert reader.until(b"\r\n") == BANNER
        return reader

    def _echo(self, size: int, offset: int = 0) -> None:
        """``size`` bytes sent while the echo is read back (no half-close: see ``half_close``)."""
        reader = self._open()
        sender = _send_in_thread(reader.sock, [b"ECHO\n", piece(size, offset)])
        digest = hashlib.sha256()
        got = reader.body(size, digest)
        sender.join(IO_TIMEOUT)
        reader.sock.close()
        assert got == size and digest.hexdigest() == blob_sha(size, offset), (got, size)

    def small(self) -> None:
        self._echo(1000, 3)

    def large(self) -> None:
        self._echo(LARGE)

    def half_close(self) -> None:
        """The client half-closes after its bytes; the echo still comes back whole, then the app's FIN."""
        reader = self._open()
        data = bytes(piece(1 << 20, 5))
        got = tcp_exchange(reader.sock, b"ECHO\n" + data, timeout=IO_TIMEOUT, preread=bytes(reader.buf))
        reader.sock.close()
        assert len(got) == len(data) and got == data, f"{len(got)} of {len(data)} echoed bytes came back"

    def slow_client(self) -> None:
        reader = self._open()
        reader.sock.sendall(b"DOWN %d\n" % SLOW)
        reader.slow = True
        _stall_then(reader)
        digest = hashlib.sha256()
        got = reader.body(None, digest)
        reader.sock.close()
        assert got == SLOW and digest.hexdigest() == blob_sha(SLOW) and not reader.reset

    def slow_app(self) -> None:
        reader = self._open()
        sender = _send_in_thread(reader.sock, [b"SLOWUP %d\n" % SLOW, piece(SLOW)])
        line = reader.until(b"\n")
        sender.join(IO_TIMEOUT)
        reader.sock.close()
        assert line == blob_sha(SLOW).encode() + b"\n"

    def client_reset(self) -> None:
        before = self.app.counts.cut
        reader = self._open()
        reader.sock.sendall(b"DOWN %d\n" % RESET_SIZE)
        got = reader.body(None, hashlib.sha256(), stop_after=KILL_AFTER)
        assert got >= KILL_AFTER
        _abort(reader.sock)
        _wait_cut(self.app, before, f"{self.mode} client reset")

    def app_dies(self) -> None:
        self.front.arm(KILL_AFTER)
        reader = self._open()
        reader.sock.sendall(b"DOWN %d\n" % RESET_SIZE)
        got = reader.body(None, hashlib.sha256())
        reader.sock.close()
        assert self.front.killed.is_set()
        assert got < RESET_SIZE and reader.eof

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------
# psql (a real PostgreSQL client and server)


class PsqlClient:
    ROWS_LARGE = LARGE // 1024
    ROWS_SLOW = SLOW // 1024

    def __init__(self, world: World, hop: str, app: str) -> None:
        self.world = world
        self.front = world.fronts[app]
        self.route = world.route(app, hop)

    def _cmd(self, *args: str) -> list[str]:
        return psql_command(self.route.dial[0], self.route.dial[1], *args)

    @staticmethod
    def _rows(count: int) -> bytes:
        # ~1 KiB text rows: 32 x md5(i), the same expression the server evaluates below.
        return b"".join((hashlib.md5(str(i).encode()).hexdigest() * 32).encode() + b"\n" for i in range(1, count + 1))

    def small(self) -> None:
        out = subprocess.run(self._cmd("-At", "-c", "select 40 + 2"), capture_output=True, timeout=IO_TIMEOUT)
        assert out.returncode == 0 and out.stdout == b"42\n", out

    def large(self) -> None:
        rows = self._rows(self.ROWS_LARGE)
        script = (b"CREATE TEMP TABLE t (n serial, x text);\nCOPY t (x) FROM STDIN;\n" + rows + b"\\.\n"
                  b"SELECT md5(string_agg(x, '' ORDER BY n)) FROM t;\n"
                  b"COPY (SELECT x FROM t ORDER BY n) TO STDOUT;\n")
        out = subprocess.run(self._cmd("-At", "-f", "-"), input=script, capture_output=True, timeout=IO_TIMEOUT)
        assert out.returncode == 0, out.stderr[-2000:]
        first, _, rest = out.stdout.partition(b"\n")
        assert first.decode() == hashlib.md5(rows.replace(b"\n", b"")).hexdigest(), "upload digest differs"
        assert len(rest) == len(rows) and hashlib.sha256(rest).digest() == hashlib.sha256(rows).digest()

    def _copy_out(self, rows: int) -> subprocess.Popen:
        sql = f"COPY (SELECT repeat(md5(i::text), 32) FROM generate_series(1, {rows}) i) TO STDOUT"
        return subprocess.Popen(self._cmd("-c", sql), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def slow_client(self) -> None:
        proc = self._copy_out(self.ROWS_SLOW)
        assert proc.stdout is not None
        time.sleep(0.3)
        digest, total = hashlib.sha256(), 0
        while True:
            data = proc.stdout.read1(SLOW_PIECE)
            if not data:
                break
            if (total + len(data)) // SLOW_EVERY != total // SLOW_EVERY:
                time.sleep(SLOW_PAUSE)
            total += len(data)
            digest.update(data)
        assert proc.wait(IO_TIMEOUT) == 0, proc.stderr.read() if proc.stderr else ""
        assert digest.digest() == hashlib.sha256(self._rows(self.ROWS_SLOW)).digest(), total

    def slow_app(self) -> None:
        raise AssertionError("not a cell")  # by construction

    def client_reset(self) -> None:
        proc = self._copy_out(RESET_SIZE // 1024)
        assert proc.stdout is not None
        taken = 0
        while taken < KILL_AFTER:
            data = proc.stdout.read1(1 << 16)
            assert data, proc.stderr.read() if proc.stderr else ""
            taken += len(data)
        proc.kill()
        proc.wait(10)

    def app_dies(self) -> None:
        self.front.arm(KILL_AFTER)
        proc = self._copy_out(RESET_SIZE // 1024)
        out, err = proc.communicate(timeout=IO_TIMEOUT)
        assert self.front.killed.is_set()
        assert proc.returncode != 0 and len(out) < RESET_SIZE, (proc.returncode, err[-500:])

    def close(self) -> None:
        pass


def _client(world: World, client: str, hop: str):
    if client.startswith("h1"):
        return H1Client(world, hop, {"h1-keepalive": "keepalive", "h1-chunked": "chunked", "h1.0": "1.0"}[client])
    if client == "h2c":
        return H2cClient(world, hop)
    if client == "grpc-bidi":
        return GrpcClient(world, hop)
    if client == "websocket":
        return WsClient(world, hop)
    if client in ("connect", "tcp-client-first", "tcp-server-first"):
        return TcpClient(world, hop, client.removeprefix("tcp-"))
    return PsqlClient(world, hop, CLIENTS[client])


# Which proxies a cell's traffic must cross, and the counter that shows it did (a redirect that
# silently failed would let a raw client reach the app directly and pass every check).
PATHS = {"out": (("P1", "outbound"),), "in": (("P1", "inbound"),),
         "plain": (("A2", "outbound"), ("B2", "inbound")), "mtls": (("A3", "outbound"), ("B3", "inbound"))}
HTTP_CLIENTS = ("h1-keepalive", "h1-chunked", "h1.0", "h2c", "grpc-bidi", "websocket", "connect")


class OnPath:
    def __init__(self, world: World, client: str, hop: str) -> None:
        self.proxies = [(world.proxies[name], direction) for name, direction in PATHS[hop]]
        self.client = client
        self.before = [self._count(mp, d) for mp, d in self.proxies]

    def _count(self, mp: NsMeshProxy, direction: str) -> float:
        # A CONNECT is a request to the outbound side and an opaque connection to the peer's inbound.
        if self.client in HTTP_CLIENTS and not (self.client == "connect" and direction == "inbound"):
            return mp.metrics().get("request_total", direction=direction)
        return mp.metrics().get("tcp_open_total", direction=direction, peer="src")

    def check(self) -> None:
        for (mp, direction), before in zip(self.proxies, self.before):
            assert self._count(mp, direction) > before, f"the traffic did not cross {mp.name} {direction}"


@pytest.mark.parametrize(("client", "hop", "check"), CELLS)
def test_cell(world, client, hop, check):
    path = OnPath(world, client, hop)
    driver = _client(world, client, hop)
    try:
        getattr(driver, check.replace("-", "_"))()
        # Whatever happened, the cell serves the next exchange (a new connection where the last one died).
        if check in ("client-reset", "app-dies"):
            driver.close()
            driver = _client(world, client, hop)
        driver.small()
    finally:
        driver.close()
    path.check()


@pytest.mark.parametrize(("client", "hop"), [
    pytest.param(client, hop, id=f"{client}-{hop}")
    for client in ("connect", "tcp-client-first", "tcp-server-first") for hop in HOPS
    if _by_construction(client, hop, "large") is None
])
def test_tcp_half_close(world, client, hop):
    """Opaque bytes keep TCP's half-close: the client's FIN reaches the app, whose answer still comes back."""
    path = OnPath(world, client, hop)
    driver = _client(world, client, hop)
    driver.half_close()
    driver.small()
    path.check()


# ---------------------------------------------------------------------------
# server-speaks-first without configuration (MESHPROXY_SERVER_FIRST_PROBE, 50 ms by default)


def _first_byte_after(addr: tuple[str, int]) -> float:
    """Seconds from the start of connect() to the server's first byte."""
    start = time.monotonic()
    with socket.create_connection(addr, timeout=10) as sock:
        sock.settimeout(5)
        assert sock.recv(1) == BANNER[:1]
        return time.monotonic() - start


@pytest.mark.parametrize("hop", HOPS)
def test_server_first_banner_within_100ms_of_a_direct_connection(world, hop):
    """A banner server on a port nobody listed: through the proxy its first byte comes at most 100 ms after
    it comes on a direct connection (medians of interleaved tries, so one slow try on a busy machine does
    not decide)."""
    port = world.fronts["banner"].port
    direct, proxied = [], []
    path = OnPath(world, "tcp-server-first", hop)
    for _ in range(7):
        direct.append(_first_byte_after(("127.0.0.1", port)))
        proxied.append(_first_byte_after((HOP_IPS[hop], port)))
    direct.sort()
    proxied.sort()
    extra = proxied[3] - direct[3]
    assert extra < 0.100, f"median first byte {proxied[3] * 1000:.0f} ms through {hop}, {direct[3] * 1000:.0f} ms " \
                          f"direct (all: {[round(t * 1000) for t in proxied]} ms)"
    path.check()


@pytest.mark.parametrize("hop", HOPS)
def test_silent_http_client_is_still_proxied_as_http(world, hop):
    """A client that says nothing for longer than the probe delay, then sends a request: the proxy
    connected early in case the server spoke first, but the request is proxied as HTTP, and the app
    sees exactly one request."""
    app = world.apps["h1"]
    route = world.route("h1", hop)
    path = OnPath(world, "h1-keepalive", hop)
    before = len(app.counts.requests)
    with socket.create_connection(route.dial, timeout=10) as sock:
        time.sleep(0.4)  # eight probe delays
        sock.sendall(f"GET /up-down?n=100 HTTP/1.1\r\nHost: {route.authority}\r\n\r\n".encode())
        reader = Reader(sock)
        status, fields = _h1_head(reader)
        digest, length, complete = _h1_body(reader, fields)
    assert status == 200 and complete and digest == blob_sha(100), (status, fields)
    time.sleep(0.3)
    assert app.counts.requests[before:] == ["GET /up-down?n=100 HTTP/1.1"]
    path.check()  # counted as an HTTP request by every proxy on the way

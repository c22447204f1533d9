"""Large transfers for the backpressure tests, without holding them in memory.

``pattern(n)`` is a deterministic byte stream of any length (1 MiB blocks,
each stamped with its index, so a lost, repeated or reordered block changes
the digest) and ``pattern_sha256(n)`` its digest. ``BulkApp`` is an HTTP/1.1
app that streams the pattern out and hashes what it reads, optionally
pausing like a slow reader, and records how far each transfer got.
``H1Conn`` is one keep-alive HTTP/1.1 client connection that downloads with
pauses and uploads, hashing as it goes. ``RssWatch`` samples processes'
VmRSS during a transfer. Every wait has a deadline.
"""

from __future__ import annotations

import functools
import hashlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import wire
from .servers import ServerConn, TcpServer, response_bytes
from .wire import deadline_in

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
BLOCK = MIB
_BASE = random.Random(0xB10C).randbytes(BLOCK)
TRANSFER_WAIT = 120.0  # the longest any one socket operation of a bulk transfer may block


def pattern(total: int) -> Iterator[bytes]:
    """``total`` bytes in 1 MiB blocks; block i starts with i as 8 big-endian bytes."""
    index = sent = 0
    while sent < total:
        size = min(BLOCK, total - sent)
        block = index.to_bytes(8, "big") + _BASE[8:]
        yield block if size == BLOCK else block[:size]
        sent += size
        index += 1


@functools.lru_cache(maxsize=32)
def pattern_sha256(total: int) -> str:
    digest = hashlib.sha256()
    for block in pattern(total):
        digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Pauses:
    """A slow reader: read ``every`` bytes, sleep ``seconds``, ``count`` times; then read the rest fast."""

    count: int = 10
    every: int = MIB
    seconds: float = 0.2

    @property
    def total_sleep(self) -> float:
        return self.count * self.seconds


class _Pacer:
    """Sleeps once each time the bytes counted cross the next multiple of ``every``."""

    def __init__(self, pauses: Pauses | None, stop: threading.Event | None = None) -> None:
        self.pauses = pauses
        self.done = 0
        self.next_at = pauses.every if pauses and pauses.count else None
        self.stop = stop

    def want(self, default: int) -> int:
        """How many bytes to read before the next pause is due."""
        return default if self.next_at is None else max(1, min(default, self.next_at - self.done))

    def count(self, size: int) -> None:
        self.done += size
        if self.next_at is not None and self.done >= self.next_at:
            assert self.pauses is not None
            if self.stop is not None:
                self.stop.wait(self.pauses.seconds)
            else:
                time.sleep(self.pauses.seconds)
            self.next_at += self.pauses.every
            if self.next_at > self.pauses.every * self.pauses.count:
                self.next_at = None


# ---------------------------------------------------------------------------
# the app


@dataclass
class Transfer:
    """One body the app sent or read: how far it got, and when."""

    conn_id: int
    path: str
    total: int | None
    done: int = 0
    sha256: str = ""
    started: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    error: str = ""
    finished: threading.Event = field(default_factory=threading.Event)


class BulkApp(TcpServer):
    """An HTTP/1.1 app for large bodies. Endpoints, by path:

    /download?n=N[&chunked=1]     N pattern bytes (Content-Length, or chunked)
    /upload[?every=B&pause=S&pauses=K]  reads the body (Content-Length or chunked)
                                  hashing it; with a pause, sleeps S seconds after
                                  every B bytes, K times (a slow reader); answers
                                  200 with X-Body-Length and X-Body-Sha256
    /upload-early                 answers 200 "early" at once, then reads and discards
                                  the body (what nginx's ``return`` does); keeps alive
    anything else                 200 "ok"

    ``downloads`` and ``uploads`` record each transfer as it progresses.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.downloads: list[Transfer] = []
        self.uploads: list[Transfer] = []
        kwargs.setdefault("idle_timeout", TRANSFER_WAIT)
        kwargs.setdefault("name", "bulk-app")
        super().__init__(**kwargs)

    def last_download(self, timeout: float = 10.0) -> Transfer:
        assert self.wait_for(lambda: bool(self.downloads), timeout), "the app got no download request"
        return self.downloads[-1]

    def handle(self, conn: ServerConn) -> None:
        conn.stream.keep = False
        while not self.stopping.is_set():
            try:
                head = wire.read_request_head(conn.stream, deadline_in(conn.idle_timeout))
            except (wire.PeerClosed, TimeoutError):
                return
            _, target, version = wire.split_request_line(head)
            url = urlsplit(target)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/download":
                self._download(conn, int(query["n"]), query.get("chunked") == "1", target)
            elif url.path == "/upload-early":
                conn.send(response_bytes(200, [("Content-Type", "text/plain")], b"early"))
                _drain_body(conn, head)
            elif url.path == "/upload":
                pauses = None
                if "pause" in query:
                    pauses = Pauses(int(query.get("pauses", "10")), int(query.get("every", str(MIB))),
                                    float(query["pause"]))
                self._upload(conn, head, pauses, target)
            else:
                _drain_body(conn, head)
                conn.send(response_bytes(200, [("Content-Type", "text/plain")], b"ok"))
            if head.has_token("connection", "close") or version == "HTTP/1.0":
                return

    def _record(self, kind: list[Transfer], transfer: Transfer) -> None:
        with self.changed:
            kind.append(transfer)
            self.changed.notify_all()

    def _download(self, conn: ServerConn, total: int, chunked: bool, target: str) -> None:
        transfer = Transfer(conn.id, target, total)
        self._record(self.downloads, transfer)
        framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(total))
        conn.sock.settimeout(TRANSFER_WAIT)
        try:
            conn.sock.sendall(response_bytes(200, [("Content-Type", "application/octet-stream"), framing],
                                             length=False))
            for block in pattern(total):
                conn.sock.sendall(b"%x\r\n%b\r\n" % (len(block), block) if chunked else block)
                transfer.done += len(block)
            if chunked:
                conn.sock.sendall(b"0\r\n\r\n")
            transfer.sha256 = pattern_sha256(total)
        except OSError as err:
            transfer.error = f"{type(err).__name__}: {err}"
            raise
        finally:
            transfer.finished_at = time.monotonic()
            transfer.finished.set()
            self.notify()

    def _upload(self, conn: ServerConn, head: wire.Head, pauses: Pauses | None, target: str) -> None:
        length = head.get("content-length")
        transfer = Transfer(conn.id, target, int(length) if length is not None else None)
        self._record(self.uploads, transfer)
        digest = hashlib.sha256()
        pacer = _Pacer(pauses, self.stopping)
        stream = conn.stream

        def take(count: int) -> None:
            # Consume ``count`` body bytes, reading no faster than the pacer allows.
            left = count
            end = deadline_in(TRANSFER_WAIT)
            while left:
                if not stream.buf and not stream.fill(end, pacer.want(min(left, 1 << 18))):
                    raise wire.PeerClosed(f"EOF with {left} body bytes to go")
                piece = min(left, len(stream.buf), pacer.want(left))
                digest.update(stream.buf[:piece])
                del stream.buf[:piece]
                left -= piece
                transfer.done += piece
                pacer.count(piece)

        try:
            if length is not None:
                take(int(length))
            elif head.has_token("transfer-encoding", "chunked"):
                while True:
                    line = stream.read_until(b"\r\n", deadline_in(TRANSFER_WAIT), limit=4096)
                    size = int(line[:-2].split(b";", 1)[0], 16)
                    if size == 0:
                        while stream.read_until(b"\r\n", deadline_in(TRANSFER_WAIT), limit=65536) != b"\r\n":
                            pass
                        break
                    take(size)
                    if stream.read_exact(2, deadline_in(TRANSFER_WAIT)) != b"\r\n":
                        raise wire.WireError("chunk not followed by CRLF")
            transfer.sha256 = digest.hexdigest()
        except (OSError, TimeoutError, wire.WireError) as err:
            transfer.error = f"{type(err).__name__}: {err}"
            raise
        finally:
            transfer.finished_at = time.monotonic()
            transfer.finished.set()
            self.notify()
        conn.send(response_bytes(200, [("X-Body-Length", str(transfer.done)), ("X-Body-Sha256", transfer.sha256)],
                                 b"uploaded"))


def _drain_body(conn: ServerConn, head: wire.Head) -> None:
    wire.read_request_body(conn.stream, head, deadline_in(TRANSFER_WAIT))


# ---------------------------------------------------------------------------
# the HTTP/1.1 client


@dataclass
class Result:
    """A response as the client saw it: the body hashed, never kept (unless small)."""

    status: int
    headers: dict[str, str]
    length: int
    sha256: str
    seconds: float
    body: bytes = b""  # only when at most 64 KiB

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class H1Conn:
    """One keep-alive HTTP/1.1 client connection; bodies are streamed and hashed."""

    def __init__(self, addr: tuple[str, int], host: str, timeout: float = TRANSFER_WAIT,
                 rcvbuf: int | None = None) -> None:
        self.host = host
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect, so the kernel cannot buffer much for a client that does not read.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self._scratch = bytearray(1 << 20)

    # -- sending ---------------------------------------------------------------
    def _head(self, method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}"] + [f"{n}: {v}" for n, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send_request(self, method: str, target: str, headers: list[tuple[str, str]] | None = None) -> None:
        self.sock.settimeout(self.timeout)
        self.sock.sendall(self._head(method, target, headers or []))

    # -- receiving -------------------------------------------------------------
    def _recv(self, size: int) -> int:
        """Receive at most ``size`` bytes into ``buf``; 0 on EOF."""
        size = min(size, len(self._scratch))
        got = self.sock.recv_into(self._scratch, size)
        if got:
            self.buf += memoryview(self._scratch)[:got]
        return got

    def _read_head(self, deadline: float) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not self._recv(65536):
                raise wire.PeerClosed(f"EOF before a response head; got {bytes(self.buf[:200])!r}")
            if len(self.buf) > 1 << 20:
                raise wire.WireError("response head over 1 MiB")
        end = self.buf.index(b"\r\n\r\n") + 4
        raw = bytes(self.buf[:end])
        del self.buf[:end]
        lines = raw[:-4].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def _consume(self, count: int, digest: Any, pacer: _Pacer, keep: bytearray | None, deadline: float) -> None:
        left = count
        while left:
            if not self.buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"response body not complete in time ({left} bytes to go)")
                self.sock.settimeout(min(remaining, self.timeout))
                if not self._recv(pacer.want(min(left, 1 << 20))):
                    raise wire.PeerClosed(f"EOF with {left} body bytes to go")
            piece = min(left, len(self.buf), pacer.want(left))
            view = memoryview(self.buf)[:piece]
            digest.update(view)
            if keep is not None and len(keep) < 65536:
                keep += view
            view.release()
            del self.buf[:piece]
            left -= piece
            pacer.count(piece)

    def _line(self, deadline: float) -> bytes:
        while b"\r\n" not in self.buf:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            if not self._recv(4096):
                raise wire.PeerClosed("EOF inside chunked framing")
        end = self.buf.index(b"\r\n") + 2
        line = bytes(self.buf[:end])
        del self.buf[:end]
        return line

    def read_response(self, pauses: Pauses | None = None, deadline: float | None = None,
                      started: float | None = None, method: str = "GET") -> Result:
        started = time.monotonic() if started is None else started
        deadline = deadline or deadline_in(self.timeout * 4)
        status, headers = self._read_head(deadline)
        while 100 <= status < 200:
            status, headers = self._read_head(deadline)
        digest, pacer, keep = hashlib.sha256(), _Pacer(pauses), bytearray()
        length = 0
        if method == "HEAD" or status in (204, 304):
            pass
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self._line(deadline)[:-2].split(b";", 1)[0], 16)
                if size == 0:
                    while self._line(deadline) != b"\r\n":
                        pass
                    break
                self._consume(size, digest, pacer, keep, deadline)
                length += size
                if self._line(deadline) != b"\r\n":
                    raise wire.WireError("chunk not followed by CRLF")
        elif "content-length" in headers:
            length = int(headers["content-length"])
            self._consume(length, digest, pacer, keep, deadline)
        else:
            raise wire.WireError(f"response without framing: {status} {headers}")
        return Result(status, headers, length, digest.hexdigest(), time.monotonic() - started,
                      bytes(keep) if length <= 65536 else b"")

    # -- whole exchanges -------------------------------------------------------
    def get(self, target: str, pauses: Pauses | None = None, deadline: float | None = None) -> Result:
        started = time.monotonic()
        self.send_request("GET", target)
        return self.read_response(pauses, deadline, started)

    def download(self, total: int, pauses: Pauses | None = None, chunked: bool = False,
                 deadline: float | None = None) -> Result:
        return self.get(f"/download?n={total}" + ("&chunked=1" if chunked else ""), pauses, deadline)

    def upload(self, total: int, query: str = "", chunked: bool = False, deadline: float | None = None,
               path: str = "/upload") -> Result:
        started = time.monotonic()
        framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(total))
        self.send_request("POST", path + (f"?{query}" if query else ""),
                          [("Content-Type", "application/octet-stream"), framing])
        for block in pattern(total):
            self.sock.sendall(b"%x\r\n%b\r\n" % (len(block), block) if chunked else block)
        if chunked:
            self.sock.sendall(b"0\r\n\r\n")
        return self.read_response(None, deadline, started, "POST")

    def send_until_stuck(self, total: int, target: str = "/upload", stuck_after: float = 0.5,
                         limit_s: float = 30.0) -> int:
        """Start a ``total``-byte upload and send until the proxy stops taking bytes for
        ``stuck_after`` seconds; returns the body bytes sent (the request stays unfinished)."""
        self.send_request("POST", target, [("Content-Type", "application/octet-stream"),
                                           ("Content-Length", str(total))])
        sent = 0
        end = time.monotonic() + limit_s
        self.sock.settimeout(stuck_after)
        try:
            for block in pattern(total):
                view = memoryview(block)
                while len(view):
                    if time.monotonic() > end:
                        return sent
                    count = self.sock.send(view)
                    sent += count
                    view = view[count:]
        except TimeoutError:
            return sent
        finally:
            self.sock.settimeout(self.timeout)
        return sent

    def close(self, reset: bool = False) -> None:
        """Close; ``reset`` sends RST (SO_LINGER 0) like a client that vanished."""
        try:
            if reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> H1Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------
# memory


def rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux clear_refs 5); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssWatch:
    """VmRSS of named processes, sampled every ``interval`` s in a thread over a ``with`` block.

    ``idle`` is each process's figure when the block starts; the peak is the
    larger of the highest sample and VmHWM (reset at the start where Linux
    allows it, so even a spike between two samples counts).
    """

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.idle: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.samples = 0
        self._hwm_reset: dict[str, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-watch", daemon=True)

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                value = rss_kib(pid)
            except (OSError, RuntimeError):
                continue
            self.peak[name] = max(self.peak.get(name, 0), value)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssWatch:
        for name, pid in self.pids.items():
            self.idle[name] = rss_kib(pid)
            self.peak[name] = self.idle[name]
            self._hwm_reset[name] = reset_peak(pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()
        for name, pid in self.pids.items():
            if self._hwm_reset.get(name):
                try:
                    self.peak[name] = max(self.peak[name], _status_kib(pid, "VmHWM"))
                except (OSError, RuntimeError):
                    pass

    def growth_kib(self, name: str) -> int:
        return self.peak[name] - self.idle[name]

    def describe(self) -> str:
        return ", ".join(f"{n}: idle {self.idle[n] / 1024:.1f} MiB, peak {self.peak[n] / 1024:.1f} MiB"
                         f" (+{self.growth_kib(n) / 1024:.1f})" for n in self.pids)

    def assert_within(self, limit_kib: int, what: str = "") -> None:
        over = [n for n in self.pids if self.growth_kib(n) > limit_kib]
        assert not over, (f"{what}: RSS grew more than {limit_kib / 1024:.0f} MiB over idle in {', '.join(over)}:"
                          f" {self.describe()}")

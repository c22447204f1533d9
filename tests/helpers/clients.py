"""Clients that drive the proxy: a raw socket client, byte-exact TCP
exchange, curl and a requests session that ignore any proxy environment."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from typing import Any

import requests

from . import wire
from .wire import Response, Stream, deadline_in

PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without proxy settings and without MESHPROXY_* names."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in PROXY_ENV and not k.startswith("MESHPROXY_")
    }
    env.update(extra)
    return env


def host_header(server: Any) -> list[tuple[str, str]]:
    """``[("Host", "addr:port")]`` for a server: routes a request to it."""
    return [("Host", server.hostport)]


class RawClient:
    """One TCP connection; send exact bytes, read responses with deadlines."""

    def __init__(
        self, addr: tuple[str, int], timeout: float = 5.0, source: tuple[str, int] | None = None
    ) -> None:
        self.addr = addr
        self.sock = socket.create_connection(addr, timeout=timeout, source_address=source)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = Stream(self.sock)

    def send(self, data: bytes) -> None:
        self.sock.settimeout(30)
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        version: str = "HTTP/1.1",
    ) -> None:
        self.send(wire.request_bytes(method, target, headers, body, version))

    def response(self, timeout: float = 5.0, method: str = "GET") -> Response:
        """The next response, 1xx included."""
        return wire.read_response(self.stream, deadline_in(timeout), method)

    def final(self, timeout: float = 5.0, method: str = "GET") -> Response:
        """The next final response, skipping 1xx (except 101)."""
        return wire.read_final(self.stream, deadline_in(timeout), method)[1]

    def exchange(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        timeout: float = 5.0,
    ) -> Response:
        self.request(method, target, headers, body)
        return self.final(timeout, method)

    def recv_some(self, timeout: float = 5.0) -> bytes:
        """Whatever is buffered or arrives next (b"" on EOF)."""
        if not self.stream.buf:
            self.stream.fill(deadline_in(timeout))
        out = bytes(self.stream.buf)
        self.stream.buf.clear()
        return out

    def read_exact(self, count: int, timeout: float = 5.0) -> bytes:
        return self.stream.read_exact(count, deadline_in(timeout))

    def discard(self, count: int, timeout: float = 30.0) -> None:
        """Read ``count`` bytes and keep none of them (large bodies)."""
        self.stream.keep = False
        end = deadline_in(timeout)
        while count > 0:
            if not self.stream.buf and not self.stream.fill(end, 1 << 18):
                raise wire.PeerClosed(f"EOF with {count} bytes still to come")
            take = min(count, len(self.stream.buf))
            del self.stream.buf[:take]
            count -= take

    def send_until_blocked(self, data: bytes, stall: float = 0.5, limit: float = 5.0) -> int:
        """Send until the peer stops taking bytes for ``stall`` seconds (or
        ``limit`` passes); returns how many bytes it took."""
        sent = 0
        self.sock.settimeout(stall)
        start = time.monotonic()
        try:
            while sent < len(data) and time.monotonic() - start < limit:
                sent += self.sock.send(data[sent : sent + (1 << 16)])
        except TimeoutError:
            pass
        return sent

    def read_until_close(self, timeout: float = 10.0) -> bytes:
        return self.stream.read_until_close(deadline_in(timeout))

    def closed_within(self, timeout: float = 3.0) -> bool:
        """True when the peer closes (EOF or reset) within ``timeout`` and sent
        nothing more; False if it stays open or sends bytes."""
        if self.stream.buf:
            return False
        end = deadline_in(timeout)
        try:
            return not self.stream.fill(end)
        except TimeoutError:
            return False

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def tcp_exchange(
    sock: socket.socket,
    data: bytes,
    timeout: float = 20.0,
    preread: bytes = b"",
) -> bytes:
    """Send ``data`` while reading, half-close, then read to EOF. Returns all
    bytes read (``preread`` first). Sending and reading run concurrently so a
    large echo cannot deadlock on full socket buffers."""
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            view = memoryview(data)
            for pos in range(0, len(view), 1 << 16):
                sock.sendall(view[pos : pos + (1 << 16)])
            sock.shutdown(socket.SHUT_WR)
        except BaseException as err:  # reported to the caller below
            errors.append(err)

    sock.settimeout(timeout)
    thread = threading.Thread(target=sender, name="tcp-exchange-send", daemon=True)
    thread.start()
    received = bytearray(preread)
    end = deadline_in(timeout)
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no EOF within {timeout}s after {len(received)} bytes")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 18)
        except TimeoutError:
            raise TimeoutError(f"no EOF within {timeout}s after {len(received)} bytes") from None
        if not chunk:
            break
        received += chunk
    thread.join(timeout)
    if errors:
        raise errors[0]
    return bytes(received)


def connect_refused(addr: tuple[str, int], timeout: float = 1.0) -> bool:
    """True when a TCP connect to ``addr`` is refused right now."""
    try:
        sock = socket.create_connection(addr, timeout=timeout)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    sock.close()
    return False


def wait_refused(addr: tuple[str, int], timeout: float = 5.0) -> bool:
    end = deadline_in(timeout)
    while time.monotonic() < end:
        if connect_refused(addr):
            return True
        time.sleep(0.05)
    return False


def curl(*args: str, timeout: float = 30.0, input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run curl (silent, errors shown, bounded by --max-time and ``timeout``)."""
    cmd = ["curl", "-sS", "--max-time", str(int(timeout)), *args]
    return subprocess.run(
        cmd, capture_output=True, timeout=timeout + 5, env=clean_env(), input=input, check=False
    )


def session() -> requests.Session:
    """A requests session that never reads proxy settings from the environment."""
    sess = requests.Session()
    sess.trust_env = False
    return sess

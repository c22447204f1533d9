"""Minimal HTTP/1.1 for the sample apps, the load generator and the admin
scrapes: read a head and a body, and a keep-alive client.

How a connection is opened is the caller's choice (``Connect``): a plain TCP
connect on loopback, or a socket created inside a pod's network namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

MAX_BODY = 1 << 20
REQUEST_TIMEOUT = 5.0

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connect = Callable[[], Awaitable[Streams]]


class ProtocolError(Exception):
    """The peer sent something that is not HTTP/1.1 as these apps speak it."""


# What a request through a proxy may fail with, short of a response.
CLIENT_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError)

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           500: "Internal Server Error", 502: "Bad Gateway"}


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def tcp(host: str, port: int) -> Connect:
    """Connect with a plain TCP connection from this process's namespace."""
    return lambda: asyncio.open_connection(host, port)


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]] | None:
    """Start line and lower-cased headers; None on a clean close before any byte."""
    try:
        data = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as err:
        if not err.partial:
            return None
        raise ConnectionResetError("connection closed inside a message head") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("message head too large") from None
    lines = data.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line!r}")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str], until_eof: bool) -> tuple[bytes, bool]:
    """The body and whether it was framed (an unframed one ends the connection)."""
    try:
        return await _read_body(reader, headers, until_eof)
    except (ValueError, asyncio.LimitOverrunError):
        raise ProtocolError("malformed body framing") from None


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], until_eof: bool) -> tuple[bytes, bool]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        size = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            length = int(line.split(b";")[0].strip(), 16)
            if length == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(parts), True
            size += length
            if size > MAX_BODY:
                raise ProtocolError("body too large")
            parts.append(await reader.readexactly(length))
            await reader.readexactly(2)
    if "content-length" in headers:
        length = int(headers["content-length"])
        if not 0 <= length <= MAX_BODY:
            raise ProtocolError("bad content-length")
        return await reader.readexactly(length), True
    if until_eof:
        return await reader.read(MAX_BODY), False
    return b"", True


class Http1Client:
    """GET requests over a small pool of keep-alive connections opened by ``connect``."""

    def __init__(self, connect: Connect, max_idle: int = 8) -> None:
        self.connect, self.max_idle = connect, max_idle
        self._idle: list[Streams] = []
        self._closed = False

    async def get(self, target: str, authority: str, timeout: float = REQUEST_TIMEOUT) -> Response:
        async with asyncio.timeout(timeout):
            for attempt in (1, 2):
                conn = self._idle.pop() if self._idle else None
                reused = conn is not None and not conn[1].is_closing()
                if not reused:
                    conn = await self.connect()
                assert conn is not None
                try:
                    response, reusable = await self._exchange(*conn, target, authority)
                except (ConnectionError, asyncio.IncompleteReadError):
                    conn[1].close()
                    if reused and attempt == 1:
                        continue  # the peer closed an idle connection: GET is safe to retry
                    raise
                except BaseException:
                    conn[1].close()
                    raise
                if reusable and not self._closed and len(self._idle) < self.max_idle:
                    self._idle.append(conn)
                else:
                    conn[1].close()
                return response
        raise AssertionError("unreachable")

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, authority: str
    ) -> tuple[Response, bool]:
        keep_alive = self.max_idle > 0
        head = f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: meshproxy-demo\r\n"
        writer.write((head + ("" if keep_alive else "Connection: close\r\n") + "\r\n").encode("latin-1"))
        await writer.drain()
        while True:
            parsed = await read_head(reader)
            if parsed is None:
                raise ConnectionResetError("connection closed before the response")
            start, headers = parsed
            version, _, rest = start.partition(" ")
            if not (version.startswith("HTTP/1.") and rest[:3].isdigit()):
                raise ProtocolError(f"bad status line {start!r}")
            status = int(rest[:3])
            if not 100 <= status < 200:
                break  # skip interim responses
        if status in (204, 304):
            body, framed = b"", True
        else:
            body, framed = await read_body(reader, headers, until_eof=True)
        reusable = keep_alive and framed and version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return Response(status, headers, body), reusable

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop()[1].close()


async def get_once(connect: Connect, target: str, authority: str, timeout: float = 2.0) -> Response:
    """One request on its own connection (admin endpoints)."""
    return await Http1Client(connect, max_idle=0).get(target, authority, timeout)

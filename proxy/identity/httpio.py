"""A minimal HTTP/1.1 exchange over asyncio streams, for the issuer's small JSON API.

Both sides are tiny and bounded: heads up to 16 KiB, bodies up to 64 KiB (a
CSR is under 1 KiB); requests carry Content-Length (no chunked uploads);
responses may be Content-Length, chunked or read until close (the
Kubernetes API uses all three).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from dataclasses import dataclass

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024


class HttpError(Exception):
    """Malformed or oversized HTTP; ``status`` is what a server answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


def _parse_head(raw: bytes) -> tuple[str, dict[str, str]]:
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise HttpError("undecodable head") from None
    lines = text[:-4].split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(f"malformed header line {line[:40]!r}")
        headers[name.lower()] = value.strip()
    return lines[0], headers


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError("head too large", 431) from None


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request, or None at a clean end of the connection."""
    try:
        raw = await _read_head(reader)
    except asyncio.IncompleteReadError as err:
        if err.partial.strip():
            raise HttpError("connection closed inside a request head") from None
        return None
    start, headers = _parse_head(raw)
    parts = start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(f"malformed request line {start[:60]!r}")
    if "transfer-encoding" in headers:
        raise HttpError("chunked request bodies are not accepted; send Content-Length", 411)
    length = _content_length(headers)
    if length is None:
        length = 0
    if length > MAX_BODY:
        raise HttpError(f"body over {MAX_BODY} bytes", 413)
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise HttpError("connection closed inside a request body") from None
    return Request(parts[0], parts[1], headers, body)


def _content_length(headers: dict[str, str]) -> int | None:
    if "content-length" not in headers:
        return None
    text = headers["content-length"]
    if not text.isdigit():
        raise HttpError(f"bad Content-Length {text!r}")
    return int(text)


def response(status: int, body: bytes, content_type: str = "application/json", close: bool = False) -> bytes:
    phrase = PHRASES.get(status, "Unknown")
    head = (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            + ("connection: close\r\n" if close else "") + "\r\n")
    return head.encode("latin-1") + body


PHRASES = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


# ---- client --------------------------------------------------------------------


async def request(url: str, method: str, body: bytes, headers: dict[str, str] | None = None,
                  ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0,
                  server_hostname: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; ``(status, headers, body)``. Raises
    OSError, ssl.SSLError, TimeoutError or HttpError."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"expected an http:// or https:// URL, not {url!r}")
    tls = parsed.scheme == "https"
    port = parsed.port or (443 if tls else 80)
    host = parsed.hostname
    authority = f"[{host}]" if ":" in host else host
    target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    head = [f"{method} {target} HTTP/1.1", f"host: {authority}:{port}", f"content-length: {len(body)}",
            "connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    async with asyncio.timeout(timeout):
        if tls:
            ctx = ssl_context or ssl.create_default_context()
            reader, writer = await asyncio.open_connection(host, port, ssl=ctx,
                                                           server_hostname=server_hostname or host, limit=MAX_HEAD)
        else:
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            return await _read_response(reader)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    try:
        raw = await _read_head(reader)
    except asyncio.IncompleteReadError:
        raise HttpError("the server closed the connection without a response") from None
    start, headers = _parse_head(raw)
    parts = start.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"malformed status line {start[:60]!r}")
    status = int(parts[1])
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        length = _content_length(headers)
        if length is not None:
            if length > MAX_BODY:
                raise HttpError(f"response body over {MAX_BODY} bytes")
            body = await reader.readexactly(length)
        else:
            body = await reader.read(MAX_BODY + 1)
            while body and len(body) <= MAX_BODY:
                more = await reader.read(MAX_BODY + 1 - len(body))
                if not more:
                    break
                body += more
            if len(body) > MAX_BODY:
                raise HttpError(f"response body over {MAX_BODY} bytes")
    return status, headers, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return body
        if len(body) + size > MAX_BODY:
            raise HttpError(f"response body over {MAX_BODY} bytes")
        body += (await reader.readexactly(size + 2))[:-2]

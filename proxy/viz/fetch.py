"""One HTTP/1.1 GET on its own connection, with a deadline and a size cap: the scrape of a proxy's
admin ``/metrics`` and the query of a plain-HTTP Prometheus. Errors are ``FetchError`` with a reason."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

MAX_BYTES = 64 << 20  # a /metrics of a proxy with every label set in use is a few MB at most


class FetchError(Exception):
    """The server did not answer with a whole 200 response; the message says why."""


async def get(url: str, timeout: float) -> bytes:
    """The body of a 200 answer to GET ``url`` (``http://host:port/path?query``)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise FetchError(f"only http:// URLs are supported, got {url!r}")
    port = parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        return await asyncio.wait_for(_get(parts.hostname, port, target), timeout)
    except TimeoutError:
        raise FetchError(f"no answer within {timeout:g}s") from None
    except ConnectionRefusedError:
        raise FetchError("connection refused") from None
    except OSError as err:
        raise FetchError(err.strerror or str(err) or type(err).__name__) from None
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as err:
        raise FetchError(str(err) or type(err).__name__) from None


async def _get(host: str, port: int, target: str) -> bytes:
    reader, writer = await asyncio.open_connection(host, port, limit=MAX_BYTES)
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/plain, application/json\r\n"
                     "Connection: close\r\n\r\n".encode("latin-1"))
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise FetchError(f"not an HTTP response: {status_line[:80]!r}")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _chunked(reader)
        elif "content-length" in headers:
            size = int(headers["content-length"])
            if size > MAX_BYTES:
                raise FetchError(f"response of {size} bytes is over the {MAX_BYTES} limit")
            body = await reader.readexactly(size)
        else:
            body = await reader.read(MAX_BYTES + 1)
            if len(body) > MAX_BYTES:
                raise FetchError(f"response over the {MAX_BYTES} bytes limit")
        if parts[1] != "200":
            raise FetchError(f"HTTP {status_line.split(' ', 1)[1]}: {body[:200].decode('utf-8', 'replace')}")
        return body
    finally:
        writer.close()


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            return bytes(out)
        if len(out) + size > MAX_BYTES:
            raise FetchError(f"response over the {MAX_BYTES} bytes limit")
        out += await reader.readexactly(size)
        await reader.readexactly(2)

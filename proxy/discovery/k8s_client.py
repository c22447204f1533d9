"""The Kubernetes API client: JSON requests and watch streams over HTTP/1.1, asyncio streams and stdlib TLS.

The project's own, not a maintained client library: discovery needs two
watches and Pod reads, and kubernetes_asyncio (with aiohttp and its
generated models) cost every sidecar about 50 MiB of memory and the image
48 MB. This one is a few hundred lines on the standard library: in-cluster
configuration (``KUBERNETES_SERVICE_HOST``/``_PORT``, the ServiceAccount CA
and token) or an explicit ``MESHPROXY_K8S_API`` (http or https, optional
``user:password@`` sent as Basic auth when there is no token, optional path
prefix); TLS verified against the CA file; the bearer token reread whenever
its file changes (projected tokens rotate); kept-alive connections for
requests; one connection per watch stream. Framing is k8s_wire's (sans-IO).

Every failure is an ``ApiError``: the server's answer (``status`` its HTTP
status; ``Gone`` for 410) or, with ``status`` 0, ``Unavailable`` (network,
TLS, time limit, broken framing) and ``EventTooLarge`` (a watch event over
``MESHPROXY_K8S_MAX_EVENT_BYTES``; the watch must relist).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from proxy import __version__
from proxy.config import K8S_API, K8S_CA_FILE, ConfigError, DiscoverySettings, redact
from proxy.discovery.k8s_wire import (
    MAX_HEAD,
    ChunkedDecoder,
    LineSplitter,
    LineTooLong,
    ResponseHead,
    WireError,
    parse_head,
)
from proxy.telemetry.logging import get_logger

log = get_logger("proxy.discovery.k8s")

MAX_IDLE = 4  # kept-alive request connections (Pod reads run a few at a time)
IDLE_SECONDS = 30.0  # an idle connection older than this is closed rather than reused
READ_SIZE = 64 * 1024
WATCH_SILENCE = 30.0  # beyond timeoutSeconds: a watch this long without a byte is dead (bookmarks come every minute)
_SAFE_PATH = "/:@!$&'()*+,;=-._~"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


class Gone(ApiError):
    """410: the resourceVersion (or continue token) is too old; relist."""


class Unavailable(ApiError):
    """No usable answer: connect, TLS, time limit, closed connection or broken HTTP framing (status 0)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class EventTooLarge(ApiError):
    """A watch event over the limit: it cannot be applied, so the watch must relist (status 0)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the API server is and how to address it."""

    tls: bool
    host: str  # without IPv6 brackets
    port: int
    prefix: str  # a path the API is served under ("" normally)
    basic: str | None  # "Basic ..." from user:password@ in an explicit URL

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.authority}{self.prefix}"


def in_cluster(environ: dict[str, str] | os._Environ[str] = os.environ) -> Endpoint:
    """The API server a pod reaches (``KUBERNETES_SERVICE_HOST``/``_PORT``); ValueError outside a cluster.
    Every command that talks to the API finds it here (discovery, the identity issuer's TokenReview, check)."""
    host, text = environ.get("KUBERNETES_SERVICE_HOST", ""), environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ValueError("not in a cluster (KUBERNETES_SERVICE_HOST is unset)")
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"KUBERNETES_SERVICE_PORT={text!r} is not a port")
    return Endpoint(True, host.strip("[]"), int(text), "", None)


def endpoint(settings: DiscoverySettings, environ: dict[str, str] | os._Environ[str] = os.environ) -> Endpoint:
    """The API server of ``MESHPROXY_K8S_API``, else the in-cluster one; ConfigError when neither is usable."""
    if not settings.k8s_api:
        try:
            return in_cluster(environ)
        except ValueError as err:
            raise ConfigError(K8S_API, None, f"unset, and {err}") from None
    shown = redact(settings.k8s_api)
    url = urllib.parse.urlsplit(settings.k8s_api)
    try:
        port = url.port
    except ValueError:
        raise ConfigError(K8S_API, shown, "bad port") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(K8S_API, shown, "expected http(s)://host[:port][/prefix]")
    basic = None
    if url.username is not None:
        pair = f"{urllib.parse.unquote(url.username)}:{urllib.parse.unquote(url.password or '')}"
        basic = "Basic " + base64.b64encode(pair.encode()).decode()
    tls = url.scheme == "https"
    return Endpoint(tls, url.hostname, port or (443 if tls else 80), url.path.rstrip("/"), basic)


class _Token:
    """The bearer token, reread when its file changes (one stat per request)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._value: str | None = None

    def header(self) -> str | None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            if stamp is not None:
                try:
                    with open(self.path, encoding="utf-8") as fh:
                        self._value = fh.read().strip() or None
                except (OSError, UnicodeDecodeError) as err:
                    log.warning("cannot reread the Kubernetes token; keeping the old one", file=self.path,
                                error=str(err))
        return f"Bearer {self._value}" if self._value else None


class _Conn:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = 0.0

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()


class KubeApi:
    """A connection to the API server (``await open()`` first)."""

    def __init__(self, settings: DiscoverySettings, request_timeout: float = 30.0, *,
                 token: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        """``token`` and ``tls``, when given (a kubeconfig's user and cluster, for ``viz --kubernetes``), are
        used instead of the token file and the CA file."""
        self.settings = settings
        self._fixed_token = token
        self._fixed_tls = tls
        self.request_timeout = request_timeout
        self.max_event_bytes = settings.k8s_max_event_bytes
        self.max_response_bytes = settings.k8s_max_response_bytes
        self.endpoint: Endpoint | None = None
        self._ssl: ssl.SSLContext | None = None
        self._token = _Token(settings.k8s_token_file)
        self._idle: list[_Conn] = []
        self._conns: set[_Conn] = set()  # every open connection, closed by close()

    async def open(self) -> None:
        self.endpoint = ep = endpoint(self.settings)
        if ep.tls and self._fixed_tls is not None:
            self._ssl = self._fixed_tls
        elif ep.tls:
            ca = self.settings.k8s_ca_file
            if not self.settings.k8s_api and not os.path.isfile(ca):
                raise ConfigError(K8S_CA_FILE, ca, "in a cluster the API server's CA file is needed")
            try:  # verified: CERT_REQUIRED and the host name (or IP) checked against the certificate
                self._ssl = ssl.create_default_context(cafile=ca if os.path.isfile(ca) else None)
            except (OSError, ssl.SSLError) as err:
                raise ConfigError(K8S_CA_FILE, ca, f"unusable CA file: {err}") from None

    async def close(self) -> None:
        conns, self._conns, self._idle = list(self._conns), set(), []
        for conn in conns:
            conn.writer.transport.abort()

    # ---- requests ------------------------------------------------------------------

    async def get(self, path: str, query: dict[str, str] | None = None) -> dict:
        return await self.request("GET", path, query=query)

    async def request(self, method: str, path: str, body: dict | bytes | None = None, *,
                      query: dict[str, str] | None = None, content_type: str = "application/json") -> dict:
        """One request; the response's JSON. Raises ApiError (Gone, Unavailable) for anything but 2xx JSON."""
        for attempt in (0, 1):
            conn, reused = await self._checkout()
            try:
                async with asyncio.timeout(self.request_timeout):
                    await self._send(conn, method, path, query, body, content_type)
                    head = await self._head(conn)
                    data = b"".join([piece async for piece in self._body(conn, head, method, self.max_response_bytes)])
            except _Closed as err:
                self._discard(conn)
                if reused and not err.partial and attempt == 0 and method in ("GET", "HEAD"):
                    continue  # the server closed a kept-alive connection as we reused it: once more, fresh
                raise Unavailable(f"{self._where()}: {err}") from None
            except BaseException as err:
                self._discard(conn)
                raise self._failure(err, "waiting for the response") from None
            if head.keep_alive and (head.length is not None or head.chunked or head.status in (204, 304)):
                self._checkin(conn)  # the body was delimited, so the next response starts cleanly
            else:
                self._discard(conn)
            _raise_for_status(head.status, data)
            try:
                return json.loads(data) if data else {}
            except ValueError:
                raise Unavailable(f"{self._where()}: the response is not JSON: {data[:80]!r}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def watch(self, path: str, query: dict[str, str], timeout_seconds: int,
                    on_open: Callable[[], None] | None = None) -> AsyncIterator[dict]:
        """Yield watch events (dicts) until the server ends the stream; raises ApiError (Gone, EventTooLarge)."""
        query = {**query, "watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        conn = await self._connect()  # its own connection: it is held for the stream's life
        try:
            try:
                async with asyncio.timeout(self.request_timeout):
                    await self._send(conn, "GET", path, query, None, "")
                    head = await self._head(conn)
                    if head.status != 200:
                        data = b"".join([p async for p in self._body(conn, head, "GET", self.max_response_bytes)])
                        _raise_for_status(head.status, data)
            except ApiError:
                raise
            except BaseException as err:
                raise self._failure(err, "waiting for the watch to start") from None
            if on_open is not None:
                on_open()
            lines = LineSplitter(self.max_event_bytes)
            pieces = self._body(conn, head, "GET", None, timeout_seconds + WATCH_SILENCE)
            while True:
                try:
                    piece = await anext(pieces, None)
                    events = [] if piece is None else lines.feed(piece)
                    if piece is None:
                        rest = lines.finish()
                        events = [rest] if rest else []
                except LineTooLong as err:
                    raise EventTooLarge(f"{self._where()}: {err} (MESHPROXY_K8S_MAX_EVENT_BYTES)") from None
                except BaseException as err:
                    raise self._failure(err, "reading the watch stream") from None
                for line in events:
                    yield _event(line)
                if piece is None:
                    return
        finally:
            self._discard(conn)

    # ---- the wire ----------------------------------------------------------------------

    async def _connect(self) -> _Conn:
        ep = self.endpoint
        assert ep is not None, "open() first"
        try:
            async with asyncio.timeout(self.request_timeout):
                reader, writer = await asyncio.open_connection(
                    ep.host, ep.port, ssl=self._ssl, server_hostname=ep.host if self._ssl else None, limit=MAX_HEAD)
        except BaseException as err:
            raise self._failure(err, "connecting") from None
        conn = _Conn(reader, writer)
        self._conns.add(conn)
        return conn

    async def _checkout(self) -> tuple[_Conn, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable and now - conn.idle_since < IDLE_SECONDS:
                return conn, True
            self._discard(conn)
        return await self._connect(), False

    def _checkin(self, conn: _Conn) -> None:
        if len(self._idle) >= MAX_IDLE or not conn.usable:
            self._discard(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def _discard(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        conn.writer.transport.abort()

    async def _send(self, conn: _Conn, method: str, path: str, query: dict[str, str] | None,
                    body: dict | bytes | None, content_type: str) -> None:
        ep = self.endpoint
        assert ep is not None, "open() first"
        target = ep.prefix + urllib.parse.quote(path, safe=_SAFE_PATH)
        if query:
            target += "?" + urllib.parse.urlencode(query)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {ep.authority}", f"User-Agent: meshproxy/{__version__}",
                 "Accept: application/json"]
        auth = (f"Bearer {self._fixed_token}" if self._fixed_token else self._token.header()) or ep.basic
        if auth:
            lines.append(f"Authorization: {auth}")
        payload = b""
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            lines.append(f"Content-Type: {content_type}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(payload)}")
        conn.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        await conn.writer.drain()

    async def _head(self, conn: _Conn) -> ResponseHead:
        while True:
            try:
                raw = await conn.reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise WireError(f"response head over {MAX_HEAD} bytes") from None
            except asyncio.IncompleteReadError as err:
                raise _Closed(bool(err.partial)) from None
            except (ConnectionResetError, BrokenPipeError):
                raise _Closed(False) from None
            head = parse_head(raw)
            if not 100 <= head.status < 200:
                return head  # 1xx (100 Continue) come before the real head

    async def _body(self, conn: _Conn, head: ResponseHead, method: str, limit: int | None,
                    silence: float | None = None) -> AsyncIterator[bytes]:
        """The body's pieces; at most ``limit`` bytes in all; each read within ``silence`` seconds."""
        if method == "HEAD" or head.status in (204, 304):
            return
        length, total = head.length, 0
        decoder = ChunkedDecoder() if head.chunked else None
        if length is not None and limit is not None and length > limit:
            raise WireError(f"response of {length} bytes, over {limit} (MESHPROXY_K8S_MAX_RESPONSE_BYTES)")
        while decoder is None or not decoder.done:
            if length is not None and total >= length:
                return
            want = READ_SIZE if length is None else min(READ_SIZE, length - total)
            if silence is None:
                data = await conn.reader.read(want)
            else:
                async with asyncio.timeout(silence):
                    data = await conn.reader.read(want)
            if not data:
                if decoder is None and length is None:
                    return  # a body delimited by the connection's end
                raise WireError("the connection closed inside the response body")
            pieces = decoder.feed(data) if decoder is not None else [data]
            for piece in pieces:
                total += len(piece)
                if limit is not None and total > limit:
                    raise WireError(f"response over {limit} bytes (MESHPROXY_K8S_MAX_RESPONSE_BYTES)")
                yield piece
            if decoder is not None and decoder.error is not None:
                raise decoder.error  # after the good pieces before it
        if decoder is not None and decoder.trailing:
            raise WireError("bytes after the end of the response body")

    def _where(self) -> str:
        return self.endpoint.url if self.endpoint is not None else "the Kubernetes API"

    def _failure(self, err: BaseException, doing: str) -> BaseException:
        """Network, TLS, time limit and framing errors as Unavailable; anything else (cancellation) as is."""
        if isinstance(err, ApiError | asyncio.CancelledError | GeneratorExit) or not isinstance(err, Exception):
            return err
        if isinstance(err, TimeoutError):
            text = f"no answer within the time limit, {doing}"
        elif isinstance(err, ssl.SSLError | ssl.CertificateError):
            text = f"TLS: {err.reason if isinstance(err, ssl.SSLError) and err.reason else err}"
        elif isinstance(err, WireError | OSError | EOFError | _Closed):
            text = f"{doing}: {err or type(err).__name__}"
        else:
            return err
        return Unavailable(f"{self._where()}: {text}")


class _Closed(Exception):
    """The server closed the connection before (``partial`` False) or inside a response head."""

    def __init__(self, partial: bool) -> None:
        super().__init__("the server closed the connection " + ("inside the response head" if partial
                                                                else "before answering"))
        self.partial = partial


def _event(line: bytes) -> dict:
    try:
        event = json.loads(line)
    except ValueError:
        raise Unavailable(f"a watch event is not JSON: {line[:80]!r}") from None
    if not isinstance(event, dict):
        raise Unavailable(f"a watch event is not an object: {line[:80]!r}")
    if event.get("type") == "ERROR":
        status = event.get("object") or {}
        code = int(status.get("code") or 500)
        raise (Gone if code == 410 else ApiError)(code, status.get("message", "watch error"))
    return event


def _raise_for_status(status: int, body: bytes) -> None:
    if 200 <= status < 300:
        return
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    raise (Gone if status == 410 else ApiError)(status, message)

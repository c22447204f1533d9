"""The HTTP access log, as Linkerd's proxy writes it: one line per request, ``apache`` or ``json``, on stderr.

Off unless ``MESHPROXY_ACCESS_LOG`` names a format. The exchange core calls
``AccessLog.record`` once per finished exchange (``ExchangeContext.access_log``,
None when off: the off cost is that one check). The line is formatted at
once, while the exchange's fields are at hand, and joins a batch; the event
loop hands the batch to a writer thread once per loop iteration, and the
thread writes it to stderr. A slow reader of stderr therefore never stalls
the data path: at most ``MESHPROXY_ACCESS_LOG_BUFFER`` lines wait (batched or
being written), and a line beyond that is dropped and counted in
``access_log_dropped_total``.

The fields are Linkerd's (``linkerd/http/access-log``): client address and
identity, request start time, method, URI, version, trace id, request and
response body length as the head tells it (``content-length``, 0 without a
body), status, total and
processing time in nanoseconds, user agent and host. Two measures differ in
shape from Linkerd's because the exchange core is not a future being polled:
``total_ns`` runs from the request head to the end of the exchange (the
response's last byte, or the error), and ``processing_ns`` from the request
head to its (last) attempt being handed to the upstream connection, which is
the proxy's own routing, policy, balancing and connecting.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from json.encoder import encode_basestring  # the C string encoder (JSON-quotes a str)
from typing import Any

from proxy.telemetry.logging import OUTPUT_LOCK

FORMATS = ("apache", "json")
_VERSIONS = {10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2.0"}
# Linkerd's order of preference for the trace id.
_TRACE_HEADERS = (b"x-b3-traceid", b"x-request-id", b"x-amzn-trace-id")
_WANTED = frozenset((b"user-agent", b":scheme") + _TRACE_HEADERS)
# The same fields in an HTTP/1 head's raw bytes, found by a search of the lower-cased head: no
# header list is built (the strict parser allows no space before the colon).
_RAW_KEYS = tuple((name, b"\r\n" + name + b":") for name in (b"user-agent",) + _TRACE_HEADERS)
_ADDR_CACHE = 4096  # client addresses kept formatted (one per recent client connection)
# What the apache format escapes inside its quoted request (as Apache httpd does): quote, backslash, controls.
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f-\xff]')
_WRITE_CHUNK = 64 * 1024


def _escape(text: str) -> str:
    return _UNSAFE.sub(lambda m: "\\" + m.group() if m.group() in '"\\' else f"\\x{ord(m.group()):02x}", text)


class AccessLog:
    """Formats finished exchanges into lines and writes them off the event loop, within a bounded buffer."""

    def __init__(self, fmt: str, capacity: int, loop: Any, fd: int = 2) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"access log format must be one of {', '.join(FORMATS)}")
        self.json = fmt == "json"
        self.capacity = capacity
        self.loop = loop
        self.fd = fd
        self.dropped = 0  # over capacity (the loop's count)
        self.failed = 0  # lines a write error lost (the writer thread's count)
        self.appended = 0  # lines accepted (the loop's count)
        self.written = 0  # lines written or abandoned (the writer thread's count): appended - written wait
        self._batch: list[str] = []
        self._scheduled = False
        self._second = -1
        self._second_text = ""
        self._addrs: dict[tuple[str, int], str] = {}
        self._queue: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name="access-log", daemon=True)
        self._thread.start()

    # -- on the event loop -----------------------------------------------------------
    def record(self, ex: Any) -> None:
        """The hook: ``ex`` (a finished ``proxy.exchange.core.Exchange``) becomes one line, or one drop."""
        if self.appended - self.written >= self.capacity:
            self.dropped += 1
            return
        try:
            line = self.format(ex)
        except Exception:  # noqa: BLE001 - a line we cannot make must never break the exchange
            self.dropped += 1
            return
        self._batch.append(line)
        self.appended += 1
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._batch = self._batch, []
        if batch:
            self._queue.put(batch)

    def _timestamp(self, wall_ns: int) -> str:
        """RFC 3339 in UTC with nanoseconds, as Linkerd prints it; the date part is made once a second."""
        second, nanos = divmod(wall_ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{nanos:09d}Z"

    def format(self, ex: Any) -> str:
        """One line for ``ex``, in this log's format."""
        end = time.perf_counter()  # the exchange clock's source (proxy/exchange/clock.py)
        total_ns = int((end - ex.t0) * 1e9) if ex.t0 > 0.0 else 0
        processing_ns = int((ex.t_sent - ex.t0) * 1e9) if ex.t_sent > 0.0 else total_ns
        timestamp = self._timestamp(time.time_ns() - total_ns)
        meta = ex.meta
        client: tuple[str, int] | None = meta.client if meta is not None else None
        if client is None:
            addr = "-"
        else:
            cached = self._addrs.get(client)
            if cached is None:
                cached = f"[{client[0]}]:{client[1]}" if ":" in client[0] else f"{client[0]}:{client[1]}"
                if len(self._addrs) >= _ADDR_CACHE:
                    self._addrs.clear()
                self._addrs[client] = cached
            addr = cached
        client_id = (meta.client_id if meta is not None else None) or "-"
        head = ex.head
        status = ex.status
        if head is None:  # refused before its head could be parsed
            method = uri = version = host = ""
            fields: dict[bytes, bytes] = {}
        else:
            # The apache line needs no field of an HTTP/1 head: its header list is not even made.
            fields = _fields(ex) if self.json or head.version == 20 else {}
            method = head.method.decode("latin-1")
            version = _VERSIONS.get(head.version, "")
            host = head.host.decode("latin-1") if head.host is not None else ""
            uri = head.target.decode("latin-1")
            if head.version == 20 and head.method != b"CONNECT" and head.host is not None:
                uri = f"{fields.get(b':scheme', b'http').decode('latin-1')}://{host}{uri}"
        if not self.json:
            request = f"{method} {uri} {version}" if head is not None else "-"
            if _UNSAFE.search(request) is not None:
                request = f"{_escape(method)} {_escape(uri)} {version}"
            return f'{addr} {client_id} - [{timestamp}] "{request}" ' + (str(status) if status else "-")
        trace_id = (fields.get(b"x-b3-traceid") or fields.get(b"x-request-id") or fields.get(b"x-amzn-trace-id")
                    or b"").decode("latin-1")
        user_agent = fields.get(b"user-agent", b"").decode("latin-1")
        request_bytes = ex.req_length if ex.req_length >= 0 else ""
        status_field = f',"status":{status}' if status else ""
        response_field = f',"response_bytes":"{ex.resp_length}"' if ex.resp_length >= 0 else ""
        quote = encode_basestring
        return (f'{{"client.addr":{quote(addr)},"client.id":{quote(client_id)},"timestamp":"{timestamp}",'
                f'"method":{quote(method)},"uri":{quote(uri)},"version":"{version}","trace_id":{quote(trace_id)},'
                f'"request_bytes":"{request_bytes}"{status_field}{response_field},"total_ns":{total_ns},'
                f'"processing_ns":{processing_ns},"user_agent":{quote(user_agent)},"host":{quote(host)}}}')

    # -- off the event loop ------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            data = ("\n".join(batch) + "\n").encode("utf-8", "replace")
            try:
                # Whole lines per write, under the lock the diagnostic logs take too.
                for start in range(0, len(data), _WRITE_CHUNK):
                    stop = data.rfind(b"\n", start, start + _WRITE_CHUNK) + 1 if start + _WRITE_CHUNK < len(data) \
                        else len(data)
                    view = memoryview(data)[start:stop]
                    with OUTPUT_LOCK:
                        while view:
                            view = view[os.write(self.fd, view):]
            except OSError:  # stderr closed or broken: the lines are lost and counted, the proxy goes on
                self.failed += len(batch)
            self.written += len(batch)

    def close(self, timeout: float = 2.0) -> None:
        """Write what is pending and stop the writer (at shutdown)."""
        self._flush()
        self._queue.put(None)
        self._thread.join(timeout)

    def render(self, out: list[str]) -> None:
        out.append("# HELP access_log_dropped_total Access log lines dropped: MESHPROXY_ACCESS_LOG_BUFFER lines "
                   "were already waiting to be written, or writing to stderr failed.")
        out.append("# TYPE access_log_dropped_total counter")
        out.append(f"access_log_dropped_total {self.dropped + self.failed}")


def _fields(ex: Any) -> dict[bytes, bytes]:
    """The request fields the log reads (first occurrence of each), lower-cased names."""
    found: dict[bytes, bytes] = {}
    if ex.headers is None:  # HTTP/1
        raw = ex.head.raw
        lower = raw.lower()
        for name, key in _RAW_KEYS:
            at = lower.find(key)
            if at >= 0:
                at += len(key)
                found[name] = raw[at:lower.find(b"\r\n", at)].strip(b" \t")
        return found
    for name, value in ex.headers:
        lower = name.lower()
        if lower in _WANTED and lower not in found:
            found[lower] = value
    return found

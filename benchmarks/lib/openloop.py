"""Open-loop HTTP/1.1 load: a fixed request rate, latency counted from each request's intended send time.

A closed-loop client (wrk) sends a connection's next request only after the
previous answer, so a stalled server also stalls the client and the stall
shows up as a few slow requests instead of all the requests that should have
been sent meanwhile (coordinated omission). Here request ``i`` is due at
``start + i / rate`` whatever happened before; it goes out on an idle
keep-alive connection of a bounded pool or, when every connection is busy,
waits in a FIFO, and its latency runs from the due time to the end of its
response. The achieved rate, the send lag (actual write - due time) and the
service time (answer - actual write) say whether the generator itself kept up.

The same module holds the tiny counting backend the generator is checked
against and that the ``balancing`` scenario balances over. Command line (one
``OPENLOOP_JSON`` line on stdout, as ``configs/wrk_report.lua`` does for wrk)::

    python -m benchmarks.lib.openloop load http://127.0.0.1:8080/ --rate 2000 --duration 10 --connections 200
    python -m benchmarks.lib.openloop serve --name slow --port 8081 --delay-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import sys
import time
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.lib.procs import run_bounded

REPO = Path(__file__).resolve().parents[2]
MARKER = "OPENLOOP_JSON "
NS = 1_000_000_000
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1 << 20
MAX_DISTINCT_BODIES = 16        # the tally of bodies is for "which backend answered"
SWEEP_INTERVAL_S = 0.05         # how often timeouts are looked for
RECONNECT_DELAY_S = 0.1
PERCENTILES = (50, 90, 99, 99.9)
_now = time.perf_counter_ns     # uvloop's loop.time() only has millisecond resolution


@dataclass(frozen=True)
class LoadParams:
    """One fixed-rate run: recorded in the report as is."""

    rate: float           # requests per second, offered whatever the answers do
    duration_s: float     # sending window; the run then waits for answers up to timeout_s
    connections: int      # keep-alive pool bound, all opened before the first send
    timeout_s: float = 2.0  # from the intended send time

    @property
    def total(self) -> int:
        return max(1, round(self.rate * self.duration_s))

    def describe(self) -> dict[str, Any]:
        return {"rate_rps": self.rate, "duration_s": self.duration_s,
                "connections": self.connections, "request_timeout_s": self.timeout_s}


def pool_size(rate: float, seconds_per_conn: float = 0.1, low: int = 8, high: int = 256) -> int:
    """Connections for ``rate``: rate * 0.1 s of in-flight time, within [low, high].

    Enough that a 50 ms backend taking a third of the requests (round-robin
    needs rate * 0.017 connections) never makes requests wait for a connection.
    """
    return max(low, min(high, math.ceil(rate * seconds_per_conn)))


@dataclass
class LoadResult:
    ok: bool
    failure: str = ""
    target_rps: float = 0.0
    scheduled: int = 0
    sent: int = 0
    completed: int = 0                   # answered (any status)
    lost: int = 0                        # never answered: timeout, connection lost, unparseable
    errors: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0                # first intended send .. last actual send (+ one interval)
    achieved_rps: float = 0.0            # answered requests per second of the sending window
    latency_ms: dict[str, float] = field(default_factory=dict)   # intended send -> response end
    service_ms: dict[str, float] = field(default_factory=dict)   # actual send -> response end
    send_lag_ms: dict[str, float] = field(default_factory=dict)  # actual send - intended send
    waited_for_connection: int = 0       # requests that found every connection busy
    max_waiting: int = 0
    bodies: dict[str, int] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    # Per-request nanoseconds (in-process runs only; not in the JSON).
    latencies_ns: array | None = None
    service_ns: array | None = None

    @property
    def failed_requests(self) -> int:
        """Requests without a good answer: never answered, or status >= 400."""
        return self.lost + self.errors.get("status", 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "failure": self.failure, "target_rps": self.target_rps,
            "scheduled": self.scheduled, "sent": self.sent, "completed": self.completed, "lost": self.lost,
            "errors": self.errors, "window_s": round(self.window_s, 4),
            "achieved_rps": round(self.achieved_rps, 1), "latency_ms": self.latency_ms,
            "service_ms": self.service_ms, "send_lag_ms": self.send_lag_ms,
            "waited_for_connection": self.waited_for_connection, "max_waiting": self.max_waiting,
            "bodies": self.bodies, "command": self.command,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any], command: list[str]) -> LoadResult:
        fields = {k: v for k, v in raw.items() if k != "command"}
        return cls(**fields, command=command)


def percentiles_ms(values_ns: Sequence[int]) -> dict[str, float]:
    """Nearest-rank percentiles, max and mean of nanosecond samples, in ms."""
    if not values_ns:
        return {}
    ordered = sorted(values_ns)
    n = len(ordered)
    out = {}
    for p in PERCENTILES:
        rank = max(1, math.ceil(p / 100 * n))
        out[f"p{p:g}"] = round(ordered[rank - 1] / 1e6, 3)
    out["max"] = round(ordered[-1] / 1e6, 3)
    out["mean"] = round(sum(ordered) / n / 1e6, 3)
    return out


# ---- the generator ---------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying at most one request at a time (no pipelining)."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.intended = 0
        self.sent = 0
        self.body_at = -1   # offset of the body once the head is parsed
        self.end_at = 0
        self.status = 0
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.ready.set_result(None)

    def send(self, intended: int) -> None:
        self.busy = True
        self.intended = intended
        self.sent = _now()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        now = _now()
        if not self.busy:
            self.run.lose(self, "protocol")
            return
        buf = self.buf
        buf += data
        if self.body_at < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self.run.lose(self, "protocol")
                return
            parsed = _parse_head(bytes(buf[:end]))
            if parsed is None:
                self.run.lose(self, "protocol")
                return
            self.status, length = parsed
            self.body_at = end + 4
            self.end_at = self.body_at + length
        if len(buf) < self.end_at:
            return
        if len(buf) > self.end_at:  # bytes nobody asked for yet
            self.run.lose(self, "protocol")
            return
        body = bytes(buf[self.body_at:])
        buf.clear()
        self.body_at = -1
        self.busy = False
        self.run.complete(self, now, self.status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed"))
        self.run.closed(self)


def _parse_head(head: bytes) -> tuple[int, int] | None:
    """(status, content length) of a response head; None when it is not one we can frame."""
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.") or len(lines[0]) < 12:
        return None
    try:
        status = int(lines[0][9:12])
    except ValueError:
        return None
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None
        elif name == b"transfer-encoding":
            return None  # the targets we measure all send Content-Length
    if length is None:
        # 1xx, 204 and 304 have no body; anything else must say its length.
        return (status, 0) if status in (204, 304) or status < 200 else None
    if not 0 <= length <= MAX_BODY_BYTES:
        return None
    return status, length


class _Run:
    """The state of one run: pool, schedule, waiting requests and the samples."""

    def __init__(self, host: str, port: int, request: bytes, params: LoadParams) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port, self.request, self.params = host, port, request, params
        self.interval_ns = NS / params.rate
        self.timeout_ns = int(params.timeout_s * NS)
        self.total = params.total
        self.conns: set[_Conn] = set()
        self.idle: list[_Conn] = []
        self.waiting: deque[int] = deque()
        self.next_index = 0
        self.start = 0
        self.last_sent = 0
        self.sent = self.completed = self.lost = 0
        self.waited = self.max_waiting = 0
        self.errors = {"connect": 0, "read": 0, "timeout": 0, "protocol": 0, "status": 0}
        self.latency, self.service, self.lag = array("q"), array("q"), array("q")
        self.bodies: dict[bytes, int] = {}
        self.running = True
        self.done = self.loop.create_future()

    # -- connections -----------------------------------------------------------------------
    async def connect(self) -> _Conn:
        _, conn = await self.loop.create_connection(lambda: _Conn(self), self.host, self.port)
        await conn.ready
        self.conns.add(conn)
        return conn

    async def reconnect(self) -> None:
        while self.running:
            try:
                conn = await self.connect()
            except OSError:
                self.errors["connect"] += 1
                await asyncio.sleep(RECONNECT_DELAY_S)
                continue
            self.release(conn)
            return

    def closed(self, conn: _Conn) -> None:
        if conn.busy:  # the answer will never come
            conn.busy = False
            self.errors["read"] += 1
            self.lost += 1
        if conn in self.conns:
            self.conns.discard(conn)
            if conn in self.idle:
                self.idle.remove(conn)
            if self.running:
                self.loop.create_task(self.reconnect())
        self.check_done()

    def lose(self, conn: _Conn, kind: str) -> None:
        """Give up the request on ``conn`` (counted as ``kind``) and the connection with it."""
        if conn.busy:
            conn.busy = False
            self.lost += 1
        self.errors[kind] += 1
        conn.transport.abort()

    # -- requests --------------------------------------------------------------------------
    def tick(self) -> None:
        """Send every request that is due, then sleep until the next one is."""
        now = _now()
        i = self.next_index
        while i < self.total:
            due = self.start + int(i * self.interval_ns)
            if due > now:
                break
            self.issue(due)
            i += 1
        self.next_index = i
        if i < self.total:
            wait = self.start + int(i * self.interval_ns) - _now()
            # uvloop's timers count whole milliseconds and run a sub-0.5 ms delay at
            # once: ask for at least one (never early; the lateness is measured).
            self.loop.call_later(max(1, math.ceil(wait / 1e6)) / 1e3, self.tick)
        else:
            self.check_done()

    def issue(self, due: int) -> None:
        if self.idle:
            self.send(self.idle.pop(), due)
        else:
            self.waiting.append(due)
            self.waited += 1
            self.max_waiting = max(self.max_waiting, len(self.waiting))

    def send(self, conn: _Conn, due: int) -> None:
        conn.send(due)
        self.sent += 1
        self.last_sent = conn.sent
        self.lag.append(conn.sent - due)

    def complete(self, conn: _Conn, now: int, status: int, body: bytes) -> None:
        self.completed += 1
        self.latency.append(now - conn.intended)
        self.service.append(now - conn.sent)
        if status >= 400:
            self.errors["status"] += 1
        if body in self.bodies:
            self.bodies[body] += 1
        elif len(self.bodies) < MAX_DISTINCT_BODIES:
            self.bodies[body] = 1
        else:
            self.bodies[b"(other)"] = self.bodies.get(b"(other)", 0) + 1
        self.release(conn)

    def release(self, conn: _Conn) -> None:
        if self.waiting:
            self.send(conn, self.waiting.popleft())
        else:
            self.idle.append(conn)
            self.check_done()

    def sweep(self) -> None:
        """Requests not answered within the timeout of their due time are lost."""
        if not self.running:
            return
        limit = _now() - self.timeout_ns
        while self.waiting and self.waiting[0] < limit:
            self.waiting.popleft()
            self.errors["timeout"] += 1
            self.lost += 1
        for conn in [c for c in self.conns if c.busy and c.intended < limit]:
            self.lose(conn, "timeout")
        self.check_done()
        self.loop.call_later(SWEEP_INTERVAL_S, self.sweep)

    def check_done(self) -> None:
        if (self.next_index >= self.total and not self.waiting
                and self.completed + self.lost >= self.total and not self.done.done()):
            self.done.set_result(None)


async def generate(url: str, params: LoadParams, headers: dict[str, str] | None = None) -> LoadResult:
    """Run one fixed-rate load against ``url`` in the running loop and return its numbers."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// URLs: {url!r}")
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    head = {"Host": parts.netloc}
    for name, value in (headers or {}).items():
        head = {k: v for k, v in head.items() if k.lower() != name.lower()}
        head[name] = value
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
    run = _Run(parts.hostname, port, request.encode("latin-1"), params)

    result = LoadResult(ok=False, target_rps=params.rate, scheduled=run.total)
    try:
        conns = await asyncio.gather(*(run.connect() for _ in range(params.connections)),
                                     return_exceptions=True)
    except BaseException:
        _close(run)
        raise
    refused = [c for c in conns if isinstance(c, BaseException)]
    if refused:
        _close(run)
        result.errors = {"connect": len(refused)}
        result.lost = run.total
        result.failure = f"{len(refused)} of {params.connections} connections failed: {refused[0]}"
        return result
    run.idle.extend(conns)

    # Collections would pause the loop at random moments; the samples are flat arrays.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        run.start = _now() + 5_000_000  # a little lead so the first sends are not late already
        run.loop.call_later(0.005, run.tick)
        run.loop.call_later(SWEEP_INTERVAL_S, run.sweep)
        await run.done
    finally:
        run.running = False
        _close(run)
        if gc_was_on:
            gc.enable()
    return _result(run, result)


def _close(run: _Run) -> None:
    run.running = False
    for conn in list(run.conns):
        run.conns.discard(conn)
        if conn.transport is not None:
            conn.transport.abort()


def _result(run: _Run, result: LoadResult) -> LoadResult:
    result.sent, result.completed, result.lost = run.sent, run.completed, run.lost
    result.errors = dict(run.errors)
    window = (max(run.last_sent, run.start) - run.start + run.interval_ns) / NS
    result.window_s = window
    result.achieved_rps = (run.completed - run.errors["status"]) / window if window > 0 else 0.0
    result.latency_ms = percentiles_ms(run.latency)
    result.service_ms = percentiles_ms(run.service)
    result.send_lag_ms = percentiles_ms(run.lag)
    result.waited_for_connection, result.max_waiting = run.waited, run.max_waiting
    result.bodies = {k.decode("latin-1"): v for k, v in sorted(run.bodies.items())}
    result.latencies_ns, result.service_ns = run.latency, run.service
    bad = {k: v for k, v in run.errors.items() if v and k != "status"}
    if bad:
        result.failure = "errors: " + ", ".join(f"{k} {v}" for k, v in bad.items())
    elif run.errors["status"]:
        result.failure = f"{run.errors['status']} responses with status >= 400"
    elif run.completed == 0:
        result.failure = "no request completed"
    result.ok = not result.failure
    return result


# ---- running it as a pinned subprocess -------------------------------------------------------


def command(url: str, params: LoadParams, *, headers: dict[str, str] | None = None,
            pin: list[str] | None = None) -> list[str]:
    argv = [*(pin or []), sys.executable, "-m", "benchmarks.lib.openloop", "load", url,
            f"--rate={params.rate:g}", f"--duration={params.duration_s:g}",
            f"--connections={params.connections}", f"--timeout={params.timeout_s:g}"]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    return argv


def run(url: str, params: LoadParams, *, headers: dict[str, str] | None = None,
        pin: list[str] | None = None) -> LoadResult:
    """One load in its own (pinned) process, as the scenarios run wrk; never raises for a bad run."""
    argv = command(url, params, headers=headers, pin=pin)
    try:
        done = run_bounded(argv, timeout=params.duration_s + params.timeout_s + 20, cwd=REPO)
    except TimeoutError as err:
        return LoadResult(ok=False, failure=str(err), target_rps=params.rate, command=argv)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return LoadResult(ok=False, failure=f"openloop status {done.returncode}: {tail[0]}",
                          target_rps=params.rate, command=argv)
    return LoadResult.from_json(json.loads(line[len(MARKER):]), argv)


# ---- the counting backend ----------------------------------------------------------------------


class _Backend(asyncio.Protocol):
    """Answers every GET with its name after ``delay``; ``GET /count`` answers how many it served.

    Requests are bodiless GETs, as every balancer measured here forwards them;
    pipelined requests are answered in order (equal delays keep timer order).
    """

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            target = self.buf[:end].split(b" ", 2)[1:2]
            del self.buf[:end + 4]
            if target == [bytearray(b"/count")]:
                self.transport.write(_response(str(self.state["count"]).encode()))
                continue
            self.state["count"] += 1
            if self.state["delay"]:
                self.state["loop"].call_later(self.state["delay"], self._reply)
            else:
                self._reply()
        if len(self.buf) > MAX_HEAD_BYTES:
            self.transport.close()

    def _reply(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(self.state["response"])


def _response(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def serve(name: str, host: str, port: int, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    state = {"count": 0, "delay": delay_s, "loop": loop, "response": _response(name.encode())}
    server = await loop.create_server(lambda: _Backend(state), host, port, backlog=4096)
    async with server:
        await server.serve_forever()


# ---- command line ----------------------------------------------------------------------------------


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # the runner's venv has it; plain asyncio still works, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lib.openloop", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    load = sub.add_parser("load", help="fixed-rate load; prints one OPENLOOP_JSON line")
    load.add_argument("url")
    load.add_argument("--rate", type=float, required=True, help="requests per second")
    load.add_argument("--duration", type=float, required=True, help="seconds of sending")
    load.add_argument("--connections", type=int, help="keep-alive pool (default: rate * 0.1, 8..256)")
    load.add_argument("--timeout", type=float, default=2.0, help="seconds from the intended send time")
    load.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    srv = sub.add_parser("serve", help="a counting backend that answers its name")
    srv.add_argument("--name", required=True)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)

    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        if args.cmd == "serve":
            loop.run_until_complete(serve(args.name, args.host, args.port, args.delay_ms / 1000))
            return 0
        headers = dict(h.split(":", 1) for h in args.header)
        headers = {k.strip(): v.strip() for k, v in headers.items()}
        params = LoadParams(args.rate, args.duration, args.connections or pool_size(args.rate), args.timeout)
        result = loop.run_until_complete(generate(args.url, params, headers))
        print(MARKER + json.dumps(result.to_json()), flush=True)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())

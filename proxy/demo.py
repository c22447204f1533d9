"""``meshproxy demo``: a small mesh on loopback that shows the golden metrics.

Two sample services, web and api, run as tiny HTTP/1.1 apps in this process,
each behind its own ``meshproxy run`` child. A load generator calls web
through web's inbound proxy; web calls api through its own outbound proxy.
Every few seconds the demo reads each proxy's /metrics and prints requests,
success rate, RPS and latency percentiles per proxy and direction.

The mesh is data (``SERVICES``) and each ``Pod`` has a start/stop lifecycle,
so pods can later become network namespaces with iptables redirection
instead of loopback ports without changing the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from proxy import config

HOST = "127.0.0.1"
MAX_BODY = 1 << 20
REQUEST_TIMEOUT = 5.0

# ---- the mesh, as data -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One sample service: its app calls ``calls`` (through its own outbound
    proxy) or, with no calls, answers itself after a short random delay."""

    name: str
    calls: tuple[str, ...] = ()
    latency_ms: tuple[float, float] = (0.0, 0.0)  # uniform range of the app's own delay
    slow_fraction: float = 0.0  # share of answers that take 5x the top of that range
    failure_rate: float = 0.0  # share answered 500; --failure-rate sets it for services that call none


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("web", calls=("api",)),
    ServiceSpec("api", latency_ms=(1.0, 6.0), slow_fraction=0.03, failure_rate=0.01),
)
ENTRY = "web"  # where the load generator sends its requests


class DemoError(Exception):
    """The demo cannot go on; the message says why (and where the logs are)."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived before the mesh was up."""


# ---- ports -------------------------------------------------------------------

_given_ports: set[int] = set()


def pick_port() -> int:
    """A free loopback port below the kernel's ephemeral range, so the client
    side of some other connection cannot take it before the proxy binds."""
    for _ in range(500):
        port = random.randrange(20000, 32000)
        if port in _given_ports:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    raise DemoError("no free port on 127.0.0.1")


# ---- minimal HTTP/1.1 (the sample apps and their clients) -------------------


class ProtocolError(Exception):
    """The peer sent something that is not HTTP/1.1 as these apps speak it."""


# What a request through a proxy may fail with, short of a response.
CLIENT_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError)


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


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
        parts, size = [], 0
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
    """Requests to one address over a small pool of keep-alive connections."""

    def __init__(self, host: str, port: int, max_idle: int = 8) -> None:
        self.host, self.port, self.max_idle = host, port, max_idle
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._closed = False

    async def get(self, target: str, authority: str, timeout: float = REQUEST_TIMEOUT) -> Response:
        async with asyncio.timeout(timeout):
            for attempt in (1, 2):
                conn = self._idle.pop() if self._idle else None
                reused = conn is not None and not conn[1].is_closing()
                if not reused:
                    conn = await asyncio.open_connection(self.host, self.port)
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


async def http_get(host: str, port: int, target: str, timeout: float = 2.0) -> Response:
    """One request on its own connection (admin endpoints)."""
    client = Http1Client(host, port, max_idle=0)
    return await client.get(target, f"{host}:{port}", timeout)


REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           500: "Internal Server Error", 502: "Bad Gateway"}


class SampleApp:
    """A sample service's HTTP app: answers GET / with a small JSON document."""

    def __init__(self, spec: ServiceSpec, mesh: Mesh, outbound: Http1Client) -> None:
        self.spec, self.mesh, self.outbound = spec, mesh, outbound
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        # Closed connections end their handlers; wait so none is cancelled mid-read at loop exit.
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)
        self.outbound.close()

    async def handle(self, method: str, target: str) -> tuple[int, dict[str, object]]:
        name = self.spec.name
        if method != "GET":
            return 405, {"service": name, "error": "only GET"}
        if target.split("?")[0] != "/":
            return 404, {"service": name, "error": f"no route for {target}"}
        answers: dict[str, object] = {}
        for callee in self.spec.calls:
            try:
                answer = await self.outbound.get("/", self.mesh.authority(callee))
            except CLIENT_ERRORS as err:
                return 502, {"service": name, "error": f"{callee} unreachable: {err or type(err).__name__}"}
            if answer.status >= 500:
                return 502, {"service": name, "error": f"{callee} answered {answer.status}"}
            try:
                answers[callee] = json.loads(answer.body)
            except ValueError:
                answers[callee] = answer.body.decode("utf-8", "replace")
        low, high = self.spec.latency_ms
        if high > 0:
            delay = random.uniform(low, high) * (5 if random.random() < self.spec.slow_fraction else 1)
            await asyncio.sleep(delay / 1000)
        if random.random() < self.spec.failure_rate:
            return 500, {"service": name, "error": "injected failure"}
        return 200, {"service": name, "answer": random.randrange(1000), **answers}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                parsed = await read_head(reader)
                if parsed is None:
                    break
                start, headers = parsed
                try:
                    method, target, version = start.split(" ")
                    await read_body(reader, headers, until_eof=False)
                    status, payload = await self.handle(method, target)
                except (ValueError, ProtocolError):
                    status, payload, version = 400, {"error": "bad request"}, "HTTP/1.0"
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                body = json.dumps(payload).encode()
                close = "" if keep else "connection: close\r\n"
                writer.write(
                    f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n{close}\r\n".encode() + body
                )
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()


# ---- the proxies -------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the demo is killed outright
    # (SIGKILL, a test's time-out), the kernel sends the proxy SIGTERM.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ProxyProcess:
    """One ``meshproxy run`` child with its log file."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name, self.env, self.log_path = name, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "run"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops the proxies in order
                preexec_fn=_die_with_parent,
            )

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join("    " + line for line in text)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def wait(self, timeout: float) -> int | None:
        """Wait for the exit; SIGKILL after ``timeout`` seconds."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"meshproxy demo: {self.name} proxy still running {timeout:g}s after SIGTERM; killing it",
                  file=sys.stderr)
            self.proc.kill()
            return self.proc.wait()


class Pod:
    """A service's app plus its proxy, with their addresses."""

    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec
        self.inbound, self.outbound, self.admin = pick_port(), pick_port(), pick_port()
        self.app_port = 0
        self.app: SampleApp | None = None
        self.proxy: ProxyProcess | None = None

    def proxy_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            config.INBOUND_LISTEN: f"{HOST}:{self.inbound}",
            config.OUTBOUND_LISTEN: f"{HOST}:{self.outbound}",
            config.ADMIN_LISTEN: f"{HOST}:{self.admin}",
            config.INBOUND_DEFAULT_TARGET: f"{HOST}:{self.app_port}",
        })
        env.setdefault(config.DRAIN_TIMEOUT, "2s")
        # The proxies run the very package this demo was imported from.
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        return env

    async def start(self, mesh: Mesh, log_dir: Path) -> None:
        self.app = SampleApp(self.spec, mesh, Http1Client(HOST, self.outbound, max_idle=32))
        self.app_port = await self.app.start()
        self.proxy = ProxyProcess(self.spec.name, self.proxy_env(), log_dir / f"{self.spec.name}-proxy.log")
        self.proxy.start()

    async def wait_ready(self, deadline: float, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        assert self.proxy is not None
        while True:
            status = self.proxy.exited()
            if status is not None:
                raise DemoError(f"{self.spec.name} proxy exited with status {status} while starting; "
                                f"log {self.proxy.log_path}:\n{self.proxy.log_tail()}")
            try:
                if (await http_get(HOST, self.admin, "/ready", timeout=1.0)).status == 200:
                    return
            except CLIENT_ERRORS:
                pass
            if stop.is_set():
                raise Interrupted()
            if loop.time() > deadline:
                raise DemoError(f"{self.spec.name} proxy not ready on {HOST}:{self.admin} in time; "
                                f"log {self.proxy.log_path}:\n{self.proxy.log_tail()}")
            await asyncio.sleep(0.1)

    async def scrape(self) -> dict[str, DirectionStats] | None:
        try:
            response = await http_get(HOST, self.admin, "/metrics")
        except CLIENT_ERRORS:
            return None
        if response.status != 200:
            return None
        return summarize(parse_prometheus(response.body.decode("utf-8", "replace")))

    def describe(self) -> str:
        pid = self.proxy.proc.pid if self.proxy and self.proxy.proc else "-"
        calls = f"  calls {', '.join(self.spec.calls)}" if self.spec.calls else ""
        return (f"  {self.spec.name:<4} app {HOST}:{self.app_port}  proxy pid {pid}: inbound {HOST}:{self.inbound}"
                f"  outbound {HOST}:{self.outbound}  admin {HOST}:{self.admin}{calls}")


class Mesh:
    """The pods of ``SERVICES``, started and stopped together."""

    def __init__(self, services: Iterable[ServiceSpec], log_dir: Path) -> None:
        self.pods = {spec.name: Pod(spec) for spec in services}
        self.log_dir = log_dir

    def authority(self, service: str) -> str:
        """How a peer names a service: web's outbound proxy routes by this Host."""
        return f"{HOST}:{self.pods[service].inbound}"

    async def start(self) -> None:
        for pod in self.pods.values():
            await pod.start(self, self.log_dir)

    async def wait_ready(self, ready_timeout: float, stop: asyncio.Event) -> None:
        deadline = asyncio.get_running_loop().time() + ready_timeout
        await asyncio.gather(*(pod.wait_ready(deadline, stop) for pod in self.pods.values()))

    def check_alive(self) -> None:
        for pod in self.pods.values():
            status = pod.proxy.exited() if pod.proxy else None
            if status is not None:
                raise DemoError(f"{pod.spec.name} proxy exited with status {status}; "
                                f"log {pod.proxy.log_path}:\n{pod.proxy.log_tail()}")

    async def scrape(self) -> dict[str, dict[str, DirectionStats] | None]:
        results = await asyncio.gather(*(pod.scrape() for pod in self.pods.values()))
        return dict(zip(self.pods, results, strict=True))

    async def stop(self) -> None:
        for pod in self.pods.values():
            if pod.app is not None:
                await pod.app.stop()
        self.stop_proxies()

    def stop_proxies(self) -> None:
        """SIGTERM every proxy, then wait for each (SIGKILL past the drain time).
        Synchronous and idempotent, so it also runs after the event loop is gone."""
        running = [pod.proxy for pod in self.pods.values() if pod.proxy is not None and pod.proxy.exited() is None]
        for proxy in running:
            proxy.terminate()
        for proxy in running:
            status = proxy.wait(timeout=8.0)
            if status:
                print(f"meshproxy demo: {proxy.name} proxy exited with status {status} on SIGTERM; "
                      f"log {proxy.log_path}", file=sys.stderr)


# ---- the load generator ------------------------------------------------------


@dataclass(slots=True)
class LoadCounts:
    sent: int = 0
    ok: int = 0  # answered below 500
    failed: int = 0  # answered 5xx
    errors: int = 0  # no answer (connection error or time-out)
    skipped: int = 0  # due while every worker was still busy


class LoadGenerator:
    """A steady request rate into one address over keep-alive connections:
    a ticker hands out one token per 1/rps seconds to a bounded set of workers;
    a tick that finds them all busy is skipped, so the rate never bursts."""

    def __init__(self, client: Http1Client, authority: str, rps: float, concurrency: int) -> None:
        self.client, self.authority, self.rps = client, authority, rps
        self.concurrency = concurrency
        self.counts = LoadCounts()
        self._tokens: asyncio.Queue[None] = asyncio.Queue(maxsize=concurrency)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._tick())]
        self._tasks += [asyncio.create_task(self._work()) for _ in range(self.concurrency)]

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        period, due = 1.0 / self.rps, loop.time()
        while True:
            if self._tokens.full():
                self.counts.skipped += 1
            else:
                self._tokens.put_nowait(None)
            due += period
            if loop.time() - due > 1.0:  # the loop stalled: do not catch up in a burst
                due = loop.time()
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def _work(self) -> None:
        while True:
            await self._tokens.get()
            self.counts.sent += 1
            try:
                response = await self.client.get("/", self.authority)
            except CLIENT_ERRORS:
                self.counts.errors += 1
            else:
                if response.status >= 500:
                    self.counts.failed += 1
                else:
                    self.counts.ok += 1
            finally:
                self._tokens.task_done()

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.client.close()

    async def stop(self, grace: float = 3.0) -> None:
        """Stop ticking, let requests in flight finish (bounded), then end."""
        self._tasks[0].cancel()
        while not self._tokens.empty():
            self._tokens.get_nowait()
            self._tokens.task_done()
        try:
            async with asyncio.timeout(grace):
                await self._tokens.join()
        except TimeoutError:
            pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.client.close()


# ---- metrics: parse, summarize, percentiles ----------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of the Prometheus text format as (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        labels = {k: re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], v)
                  for k, v in _LABEL.findall(match[2] or "")}
        try:
            samples.append((match[1], labels, float(match[3])))
        except ValueError:
            continue
    return samples


@dataclass(slots=True)
class DirectionStats:
    """One proxy direction's counters: requests, answers, latency histogram."""

    requests: float = 0.0
    success: float = 0.0
    failure: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count

    def minus(self, earlier: DirectionStats | None) -> DirectionStats:
        """The counts since ``earlier`` (a window between two scrapes)."""
        if earlier is None:
            return self
        return DirectionStats(
            self.requests - earlier.requests, self.success - earlier.success, self.failure - earlier.failure,
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
        )

    def success_rate(self) -> float | None:
        answered = self.success + self.failure
        return self.success / answered if answered > 0 else None

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.buckets.items())


def summarize(samples: Iterable[tuple[str, dict[str, str], float]]) -> dict[str, DirectionStats]:
    """Per direction, summed over every other label."""
    out: dict[str, DirectionStats] = {}
    for name, labels, value in samples:
        direction = labels.get("direction")
        if direction is None:
            continue
        stats = out.setdefault(direction, DirectionStats())
        if name == "request_total":
            stats.requests += value
        elif name == "response_total":
            klass = labels.get("classification")
            ok = klass == "success" if klass else not labels.get("status_code", "").startswith("5")
            if ok:
                stats.success += value
            else:
                stats.failure += value
        elif name == "response_latency_ms_bucket" and "le" in labels:
            le = float(labels["le"])  # float() reads "+Inf"
            stats.buckets[le] = stats.buckets.get(le, 0.0) + value
    return out


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Estimate the ``q``-quantile (0..1) from cumulative histogram buckets
    given as (upper bound, count), the way PromQL's histogram_quantile does:
    find the bucket holding rank q*total and interpolate linearly inside it
    (the first bucket starts at 0). A rank in the +Inf bucket gives the highest
    finite bound. None when the histogram is empty."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not between 0 and 1")
    points = sorted(buckets)
    bounds, counts, running = [], [], 0.0
    for bound, count in points:
        running = max(running, count)  # counts scraped mid-update may dip; never go back
        bounds.append(bound)
        counts.append(running)
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    i = next(i for i, count in enumerate(counts) if count >= rank and count > 0)
    if math.isinf(bounds[i]):
        return bounds[i - 1] if i > 0 else None
    lower = bounds[i - 1] if i > 0 else min(0.0, bounds[i])
    below = counts[i - 1] if i > 0 else 0.0
    return lower + (bounds[i] - lower) * (rank - below) / (counts[i] - below)


# ---- output ------------------------------------------------------------------

COLUMNS = f"{'POD':<5} {'DIRECTION':<9} {'REQUESTS':>8} {'SUCCESS':>8} {'RPS':>7} {'P50':>8} {'P95':>8} {'P99':>8}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}ms" if value < 10 else f"{value:.0f}ms"


def format_table(snapshot: dict[str, dict[str, DirectionStats] | None],
                 earlier: dict[str, dict[str, DirectionStats] | None] | None, seconds: float) -> str:
    """One row per proxy and direction; over the window since ``earlier``, or
    the totals when ``earlier`` is None."""
    rows = [COLUMNS]
    for pod, directions in snapshot.items():
        if directions is None:
            rows.append(f"{pod:<5} (metrics unavailable)")
            continue
        before = (earlier or {}).get(pod) or {}
        for direction in sorted(directions):
            stats = directions[direction].minus(before.get(direction))
            rate = stats.success_rate()
            rows.append(
                f"{pod:<5} {direction:<9} {stats.requests:>8.0f} {'-' if rate is None else f'{rate:.2%}':>8}"
                f" {stats.requests / seconds if seconds > 0 else 0.0:>7.1f} {_ms(stats.quantile(0.5)):>8}"
                f" {_ms(stats.quantile(0.95)):>8} {_ms(stats.quantile(0.99)):>8}"
            )
    return "\n".join(rows)


# ---- the command -------------------------------------------------------------


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not value > 0 or math.isinf(value):
            raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
        return value
    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="meshproxy demo",
        description="Run a small local mesh (web -> api, each behind its own meshproxy) "
                    "under steady load and print the proxies' golden metrics.",
    )
    parser.add_argument("--duration", type=_positive(float), metavar="SECONDS",
                        help="stop after this long (default: run until Ctrl-C)")
    parser.add_argument("--rps", type=_positive(float), default=50.0, help="requests per second into web (default 50)")
    parser.add_argument("--concurrency", type=_positive(int), default=8, help="load generator connections (default 8)")
    parser.add_argument("--interval", type=_positive(float), default=2.0, help="seconds between summaries (default 2)")
    parser.add_argument("--failure-rate", type=float, help="share of api's answers that are 500 (default 0.01)")
    parser.add_argument("--log-dir", type=Path, help="where the proxies' logs go (default: a new temporary directory)")
    parser.add_argument("--ready-timeout", type=_positive(float), default=30.0, help="seconds to wait for the proxies")
    opts = parser.parse_args(argv)
    if opts.rps > 5000:
        parser.error("--rps is at most 5000")
    if opts.failure_rate is not None and not 0.0 <= opts.failure_rate <= 1.0:
        parser.error("--failure-rate must be between 0 and 1")
    return opts


async def run(mesh: Mesh, opts: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    load: LoadGenerator | None = None
    try:
        print(f"meshproxy demo: starting {', '.join(mesh.pods)}; proxy logs in {mesh.log_dir}", flush=True)
        await mesh.start()
        print("\n".join(pod.describe() for pod in mesh.pods.values()), flush=True)
        await mesh.wait_ready(opts.ready_timeout, stop)
        entry = mesh.pods[ENTRY]
        until = f"for {opts.duration:g}s" if opts.duration else "Ctrl-C to stop"
        print(f"load: {opts.rps:g} rps into {ENTRY} via its inbound proxy {mesh.authority(ENTRY)}; {until}", flush=True)
        earlier = await mesh.scrape()
        load = LoadGenerator(Http1Client(HOST, entry.inbound, max_idle=opts.concurrency),
                             mesh.authority(ENTRY), opts.rps, opts.concurrency)
        started = last = loop.time()
        load.start()
        end = started + opts.duration if opts.duration else math.inf
        while not stop.is_set():
            tick = min(last + opts.interval, end)
            try:
                async with asyncio.timeout(max(0.0, tick - loop.time())):
                    await stop.wait()
            except TimeoutError:
                pass
            mesh.check_alive()
            now = loop.time()
            if stop.is_set() or now >= end:
                break
            snapshot = await mesh.scrape()
            print(f"\n[{now - started:6.1f}s] last {now - last:.1f}s\n{format_table(snapshot, earlier, now - last)}",
                  flush=True)
            earlier, last = snapshot, now
        elapsed = loop.time() - started
        await load.stop()
        mesh.check_alive()
        final = await mesh.scrape()
        c = load.counts
        print(f"\nsummary: {elapsed:.1f}s of load, totals per proxy\n{format_table(final, None, elapsed)}\n"
              f"load generator: sent {c.sent}, answered {c.ok + c.failed} ({c.ok} ok, {c.failed} 5xx), "
              f"errors {c.errors}, skipped {c.skipped}", flush=True)
        return 0
    except Interrupted:
        print("meshproxy demo: interrupted while starting", file=sys.stderr)
        return 130
    finally:
        if load is not None:
            load.cancel()
        await mesh.stop()
        print(f"meshproxy demo: stopped; proxy logs in {mesh.log_dir}", flush=True)


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    log_dir = opts.log_dir or Path(tempfile.mkdtemp(prefix="meshproxy-demo-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    services = SERVICES
    if opts.failure_rate is not None:
        services = tuple(s if s.calls else dataclasses.replace(s, failure_rate=opts.failure_rate) for s in services)
    mesh = Mesh(services, log_dir)
    try:
        return asyncio.run(run(mesh, opts))
    except DemoError as err:
        print(f"meshproxy demo: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        mesh.stop_proxies()  # already done unless the loop died first; idempotent

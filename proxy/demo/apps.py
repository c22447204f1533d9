"""The sample apps and the load generator: plain HTTP/1.1 programs that know
nothing of the mesh. An app answers ``GET /`` with a small JSON document after
asking the services it calls; the load generator calls one service at a
steady rate. Every outgoing request is an ordinary client request to the
callee's address; what carries it there (interception, or the caller's
outbound proxy on loopback) is the mesh's business.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from dataclasses import dataclass

from proxy.demo.http import CLIENT_ERRORS, REASONS, Http1Client, ProtocolError, read_body, read_head
from proxy.demo.spec import ServiceSpec


@dataclass(frozen=True, slots=True)
class Callee:
    """How an app reaches one service: a client and the Host it sends."""

    name: str
    client: Http1Client
    authority: str


class SampleApp:
    """A sample service's HTTP app, serving on a listening socket it is given."""

    def __init__(self, spec: ServiceSpec, callees: list[Callee]) -> None:
        self.spec, self.callees = spec, callees
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, sock: socket.socket) -> int:
        self._server = await asyncio.start_server(self._serve, sock=sock)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        # Closed connections end their handlers; wait so none is cancelled mid-read at loop exit.
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)
        for callee in self.callees:
            callee.client.close()

    async def handle(self, method: str, target: str) -> tuple[int, dict[str, object]]:
        name = self.spec.name
        if method != "GET":
            return 405, {"service": name, "error": "only GET"}
        if target.split("?")[0] != "/":
            return 404, {"service": name, "error": f"no route for {target}"}
        answers: dict[str, object] = {}
        for callee in self.callees:
            try:
                answer = await callee.client.get("/", callee.authority)
            except CLIENT_ERRORS as err:
                return 502, {"service": name, "error": f"{callee.name} unreachable: {err or type(err).__name__}"}
            if answer.status >= 500:
                return 502, {"service": name, "error": f"{callee.name} answered {answer.status}"}
            try:
                answers[callee.name] = json.loads(answer.body)
            except ValueError:
                answers[callee.name] = answer.body.decode("utf-8", "replace")
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


@dataclass(slots=True)
class LoadCounts:
    sent: int = 0
    ok: int = 0  # answered below 500
    failed: int = 0  # answered 5xx
    errors: int = 0  # no answer (connection error or time-out)
    skipped: int = 0  # due while every worker was still busy

    def describe(self) -> str:
        return (f"sent {self.sent}, answered {self.ok + self.failed} ({self.ok} ok, {self.failed} 5xx), "
                f"errors {self.errors}, skipped {self.skipped}")


class LoadGenerator:
    """A steady request rate to one service over keep-alive connections:
    a ticker hands out one token per 1/rps seconds to a bounded set of workers;
    a tick that finds them all busy is skipped, so the rate never bursts."""

    def __init__(self, callee: Callee, rps: float, concurrency: int) -> None:
        self.callee, self.rps = callee, rps
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
                response = await self.callee.client.get("/", self.callee.authority)
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
        self.callee.client.close()

    async def stop(self, grace: float = 3.0) -> None:
        """Stop ticking, let requests in flight finish (bounded), then end."""
        if not self._tasks:
            return
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
        self.callee.client.close()

"""A tiny counting HTTP/1.1 backend: answers every GET with its name, and ``GET /count`` with how many it served.

The ``balancing`` scenario balances over three of them (one with an added
delay) and reads their counters to see who got which share. uvloop,
keep-alive, one process each, a few microseconds of CPU per request::

    python -m benchmarks.lib.backend --name slow --port 8081 --delay-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

MAX_HEAD_BYTES = 16 * 1024


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


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # the runner's venv has it; plain asyncio still works, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lib.backend", description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="the body of every answer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added before each answer")
    args = parser.parse_args(argv)
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(args.name, args.host, args.port, args.delay_ms / 1000))
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())

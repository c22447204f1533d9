"""A tap client for the benchmarks: one match-everything tap on a proxy's tap port, its events read and
counted as fast as they come (what ``meshproxy viz tap`` or Linkerd's tap API would do), until killed.

Usage: python -m benchmarks.lib.tapsink HOST:PORT. Prints ``events N`` every second on stdout.

It speaks gRPC over the project's own compiled HTTP/2 code (client side) on uvloop and only counts the
messages (their 5-byte prefixes), without decoding them: a client built on grpcio's Python iterator spends
about as much CPU per event as the proxy spends per request, and on a two-CPU machine it runs beside the
load generator, so it would slow the load and make the tap look dearer than it is. The request is
ObserveRequest{limit: 2**32-1, match: {all: {}}}, written by hand.
"""

from __future__ import annotations

import asyncio
import sys
import time

import uvloop

from proxy.protocol import h2conn

OBSERVE = b"/io.linkerd.proxy.tap.Tap/Observe"
REQUEST = b"\x08\xff\xff\xff\xff\x0f" + b"\x12\x02\x0a\x00"
WINDOW = 16 << 20  # a large stream window: the sink is never the reason the proxy holds events back


class Sink(asyncio.Protocol):
    def __init__(self, authority: bytes, done: asyncio.Future) -> None:
        self.conn = h2conn.H2Connection(True, h2conn.H2Settings(initial_window_size=WINDOW))
        self.authority = authority
        self.done = done
        self.events = 0
        self.partial = 0  # bytes of the current message still to skip (prefix included)
        self.prefix = b""  # a message prefix split across two DATA frames
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] (uvloop's transports are not asyncio's classes)
        self.conn.initiate()
        sid = self.conn.send_request([
            (b":method", b"POST"), (b":scheme", b"http"), (b":path", OBSERVE), (b":authority", self.authority),
            (b"content-type", b"application/grpc"), (b"te", b"trailers"),
        ], False)
        self.conn.send_data(sid, b"\x00" + len(REQUEST).to_bytes(4, "big") + REQUEST, True)
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data, int(time.monotonic() * 1000)):
            kind = type(event)
            if kind is h2conn.DataReceived:
                self._count(event.data)
                self.conn.acknowledge_received(event.stream_id, event.flow_controlled_length)
            elif kind is h2conn.TrailersReceived or kind is h2conn.StreamReset:
                print(f"tap ended: {event}", flush=True)
                self.done.set_result(1)
            elif kind is h2conn.ConnectionTerminated:
                self.done.set_result(1)
        out = self.conn.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    def _count(self, data: bytes) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            if self.partial:
                step = min(self.partial, n - pos)
                self.partial -= step
                pos += step
                continue
            need = 5 - len(self.prefix)
            self.prefix += data[pos:pos + need]
            pos += need
            if len(self.prefix) < 5:
                return
            self.partial = int.from_bytes(self.prefix[1:5], "big")
            self.prefix = b""
            self.events += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(1)


async def run(target: str) -> int:
    host, _, port = target.rpartition(":")
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    sink = Sink(target.encode(), done)
    await loop.create_connection(lambda: sink, host, int(port))

    async def report() -> None:
        while True:
            await asyncio.sleep(1.0)
            print(f"events {sink.events}", flush=True)

    reporter = asyncio.ensure_future(report())
    try:
        return await done
    finally:
        reporter.cancel()


def main(target: str) -> int:
    return uvloop.run(run(target))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

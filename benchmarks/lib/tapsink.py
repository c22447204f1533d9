"""A tap client for the benchmarks: one match-everything tap on a proxy's tap port, its events read and
counted as fast as they come (what ``meshproxy viz tap`` or Linkerd's tap API would do), until killed.

Usage: python -m benchmarks.lib.tapsink HOST:PORT. Prints ``events N`` every second on stdout.

It is ``meshproxy viz tap``'s call (the project's own compiled HTTP/2 code on uvloop) counting the
messages by their 5-byte prefixes instead of decoding them: a client built on grpcio's Python iterator
spends about as much CPU per event as the proxy spends per request, and on a two-CPU machine it runs
beside the load generator, so it would slow the load and make the tap look dearer than it is.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvloop

from proxy.viz.tap import ObserveCall

# ObserveRequest{limit: 2**32-1, match: {all: {}}}
REQUEST = b"\x08\xff\xff\xff\xff\x0f" + b"\x12\x02\x0a\x00"


def nghttp_command(port: int, workdir: Path) -> list[str]:
    """The same match-everything Observe call made by nghttp (C; it reads and discards, as a Go client would
    cost about), with 2**24-byte windows as the Python sink's: the proxy never waits for credit."""
    body = workdir / "tap-observe.bin"
    body.write_bytes(b"\0" + len(REQUEST).to_bytes(4, "big") + REQUEST)
    return ["nghttp", "-n", "-w", "24", "-W", "24", "-d", str(body), "-H", "content-type: application/grpc",
            "-H", "te: trailers", f"http://127.0.0.1:{port}/io.linkerd.proxy.tap.Tap/Observe"]


class Sink(ObserveCall):
    def __init__(self) -> None:
        super().__init__(REQUEST, lambda event: None)
        self.events = 0
        self.skip = 0  # bytes of the current message still to pass over

    def _messages(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            if self.skip:
                step = min(self.skip, n - pos)
                self.skip -= step
                pos += step
                continue
            need = 5 - len(self.buffer)
            self.buffer += data[pos:pos + need]
            pos += need
            if len(self.buffer) < 5:
                return
            self.skip = int.from_bytes(self.buffer[1:5], "big")
            self.buffer = b""
            self.events += 1


async def run(target: str) -> int:
    host, _, port = target.rpartition(":")
    sink = Sink()
    await asyncio.get_running_loop().create_connection(lambda: sink, host, int(port))
    while not sink.done.done():
        await asyncio.wait([sink.done], timeout=1.0)
        print(f"events {sink.events}", flush=True)
    code, message = sink.done.result()
    print(f"tap ended: {message} (grpc-status {code})", flush=True)
    return 1


def main(target: str) -> int:
    return uvloop.run(run(target))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

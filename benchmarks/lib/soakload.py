"""The soak scenario's mixed traffic: one process, a thread per kind of client, for a fixed time.

``python -m benchmarks.lib.soakload HOST:PORT --h1 SERVICE --h2 SERVICE --large N --duration S``
runs, against a proxy's outbound listener, until S seconds have passed:

- ``h1-keepalive`` (4 threads): keep-alive HTTP/1.1, GET / every 20 ms each
- ``h2-small``: one h2c connection, GET / every 10 ms
- ``h1-slow-reader``: GET /large (N bytes) reading 1 MiB then sleeping 200 ms, 5 times, then fast
- ``h2-slow-reader``: GET /large on a stream with a zero window, opened 1 MiB at a time with
  200 ms pauses, 5 times, then fast
- ``h1-vanish``: GET /large, read 256 KiB, close with RST
- ``h2-vanish``: GET /large, read 256 KiB, then reset the stream or drop the whole connection
  (alternately)
- ``h1-upload`` and ``h2-upload``: POST /upload with a 16 MiB body (the app reads it all, then answers)
- ``h1-upload-early`` and ``h2-upload-early``: POST /upload-early with a 4 MiB body, which the app
  answers at once and discards as it comes (an HTTP/2 app then resets with NO_ERROR), every 0.5 s

Each kind counts successes and errors (by reason); the small requests keep
their latencies. One ``SOAK_JSON`` line at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.lib.h2peer import MIB, H1Peer, H2Peer, PeerError, percentiles

MARKER = "SOAK_JSON "
UPLOAD = 16 * MIB
EARLY_UPLOAD = 4 * MIB
VANISH_AFTER = 256 * 1024


@dataclass
class Tally:
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def good(self, latency_ms: float | None = None, size: int = 0) -> None:
        with self.lock:
            self.ok += 1
            self.bytes += size
            if latency_ms is not None:
                self.latencies_ms.append(latency_ms)

    def bad(self, reason: str) -> None:
        with self.lock:
            key = reason[:80]
            self.errors[key] = self.errors.get(key, 0) + 1

    def to_json(self) -> dict:
        return {"ok": self.ok, "errors": sum(self.errors.values()), "error_reasons": self.errors,
                "mib_moved": round(self.bytes / MIB, 1),
                "latency_ms": {k: round(v, 3) for k, v in percentiles(self.latencies_ms).items()}}


class Soak:
    def __init__(self, addr: tuple[str, int], h1: str, h2: str, large: int, duration: float) -> None:
        self.addr, self.h1, self.h2, self.large = addr, h1, h2, large
        self.end = time.monotonic() + duration
        self.tallies: dict[str, Tally] = {}

    def live(self) -> bool:
        return time.monotonic() < self.end

    def run(self) -> dict:
        kinds: list[tuple[str, Callable[[Tally], None], int]] = [
            ("h1-keepalive", self.h1_keepalive, 4), ("h2-small", self.h2_small, 1),
            ("h1-slow-reader", self.h1_slow, 1), ("h2-slow-reader", self.h2_slow, 1),
            ("h1-vanish", self.h1_vanish, 1), ("h2-vanish", self.h2_vanish, 1),
            ("h1-upload", self.h1_upload, 1), ("h2-upload", self.h2_upload, 1),
            ("h1-upload-early", self.h1_upload_early, 1), ("h2-upload-early", self.h2_upload_early, 1),
        ]
        threads = []
        for name, body, count in kinds:
            tally = self.tallies.setdefault(name, Tally())
            for _ in range(count):
                threads.append(threading.Thread(target=self._loop, args=(body, tally), name=name, daemon=True))
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, self.end - time.monotonic()) + 120)
        stuck = [t.name for t in threads if t.is_alive()]
        return {"ok": not stuck, "failure": f"clients still busy 120 s after the end: {stuck}" if stuck else "",
                "seconds": round(time.monotonic() - started, 1),
                "kinds": {name: tally.to_json() for name, tally in self.tallies.items()}}

    def _loop(self, body: Callable[[Tally], None], tally: Tally) -> None:
        while self.live():
            try:
                body(tally)
            except (PeerError, OSError) as err:
                tally.bad(str(err) or type(err).__name__)
                time.sleep(0.1)

    # -- the kinds ---------------------------------------------------------------
    def h1_keepalive(self, tally: Tally) -> None:
        peer = H1Peer(self.addr, self.h1, timeout=5)
        try:
            while self.live():
                t0 = time.monotonic()
                peer.send("GET", "/")
                status, _ = peer.response(t0 + 5)
                if status != 200:
                    raise PeerError(f"status {status}")
                tally.good((time.monotonic() - t0) * 1000)
                time.sleep(0.02)
        finally:
            peer.close()

    def h2_small(self, tally: Tally) -> None:
        peer = H2Peer(self.addr, self.h2, timeout=5)
        try:
            while self.live():
                t0 = time.monotonic()
                peer.exchange("/", 5)
                tally.good((time.monotonic() - t0) * 1000)
                time.sleep(0.01)
        finally:
            peer.close()

    def h1_slow(self, tally: Tally) -> None:
        peer = H1Peer(self.addr, self.h1, timeout=30, rcvbuf=64 * 1024)
        try:
            peer.send("GET", "/large")
            status, got = peer.response(time.monotonic() + 120, pauses=5)
            if status != 200 or got != self.large:
                raise PeerError(f"status {status}, {got} of {self.large} bytes")
            tally.good(size=got)
        finally:
            peer.close()

    def h2_slow(self, tally: Tally) -> None:
        peer = H2Peer(self.addr, self.h2, initial_window=0, timeout=30)
        try:
            sid = peer.request("GET", "/large", held=True)
            stream = peer.streams[sid]
            for _ in range(5):
                want = stream.received + MIB
                peer.grant(sid, MIB)
                peer.wait(lambda want=want: stream.received >= want or stream.done, 30, "1 MiB more")
                time.sleep(0.2)
            peer.release(sid)
            peer.wait(lambda: stream.done, 120, "the rest of /large")
            if stream.status != 200 or stream.received != self.large or stream.reset_code is not None:
                raise PeerError(f"status {stream.status}, {stream.received} of {self.large} bytes,"
                                f" reset {stream.reset_code}")
            tally.good(size=stream.received)
        finally:
            peer.close()

    def h1_vanish(self, tally: Tally) -> None:
        peer = H1Peer(self.addr, self.h1, timeout=30, rcvbuf=64 * 1024)
        try:
            peer.send("GET", "/large")
            status, got = peer.response(time.monotonic() + 30, stop_after=VANISH_AFTER)
            if status != 200 or got < VANISH_AFTER:
                raise PeerError(f"status {status}, {got} bytes")
            tally.good(size=got)
        finally:
            peer.vanish()
        time.sleep(0.3)

    def h2_vanish(self, tally: Tally) -> None:
        peer = H2Peer(self.addr, self.h2, timeout=30)
        drop_connection = tally.ok % 2 == 1
        try:
            sid = peer.request("GET", "/large")
            stream = peer.streams[sid]
            peer.wait(lambda: stream.received >= VANISH_AFTER or stream.done, 30, "256 KiB of /large")
            if stream.status != 200:
                raise PeerError(f"status {stream.status}")
            if not drop_connection:
                peer.reset(sid)
                peer.exchange("/", 5)  # the connection still serves after the reset
            tally.good(size=stream.received)
        finally:
            peer.close()
        time.sleep(0.3)

    def h1_upload(self, tally: Tally) -> None:
        peer = H1Peer(self.addr, self.h1, timeout=30)
        try:
            while self.live():
                peer.send("POST", "/upload", body=UPLOAD)
                status, _ = peer.response(time.monotonic() + 30)
                if status != 200:
                    raise PeerError(f"status {status}")
                tally.good(size=UPLOAD)
        finally:
            peer.close()

    def h2_upload(self, tally: Tally) -> None:
        peer = H2Peer(self.addr, self.h2, timeout=30)
        try:
            while self.live():
                peer.exchange("/upload", 60, method="POST", body=UPLOAD)
                tally.good(size=UPLOAD)
        finally:
            peer.close()

    def h1_upload_early(self, tally: Tally) -> None:
        peer = H1Peer(self.addr, self.h1, timeout=30)
        try:
            peer.send("POST", "/upload-early", body=EARLY_UPLOAD)
            status, _ = peer.response(time.monotonic() + 30)
            if status != 200:
                raise PeerError(f"status {status}")
            tally.good(size=EARLY_UPLOAD)
        finally:
            peer.close()
        time.sleep(0.5)

    def h2_upload_early(self, tally: Tally) -> None:
        peer = H2Peer(self.addr, self.h2, timeout=30)
        try:
            peer.exchange("/upload-early", 30, method="POST", body=EARLY_UPLOAD)
            tally.good(size=EARLY_UPLOAD)
        finally:
            peer.close()
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lib.soakload")
    parser.add_argument("target")
    parser.add_argument("--h1", required=True, help="the HTTP/1 service (Host)")
    parser.add_argument("--h2", required=True, help="the HTTP/2 service (:authority)")
    parser.add_argument("--large", type=int, required=True, help="size of /large in bytes")
    parser.add_argument("--duration", type=float, default=600.0)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    out = Soak((host, int(port)), args.h1, args.h2, args.large, args.duration).run()
    print(MARKER + json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

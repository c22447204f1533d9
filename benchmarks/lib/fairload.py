"""The three clients of the fairness scenario, each its own process (one ``FAIR_JSON`` line at the end).

``python -m benchmarks.lib.fairload stall HOST:PORT AUTHORITY PATH``
    an HTTP/2 client whose streams start with a zero window: it asks for a
    large response, prints ``FAIR_READY`` once the head came and then holds
    the window shut (reading frames, never DATA) until SIGTERM.
``... resets HOST:PORT AUTHORITY --count N``
    N HEADERS + RST_STREAM pairs the proxy reads, 100 per write paced by a
    PING, reconnecting after a GOAWAY (``h2peer.rapid_resets``).
``... probe HOST:PORT AUTHORITY --duration S --rate R``
    one HTTP/2 connection, one small request at a time, started every 1/R s
    (or at once when the previous one was late); each must answer 2xx within
    ``--timeout``. A failed request (timeout, reset, error status, closed
    connection) is counted by reason and the probe reconnects. Each request's
    start time (CLOCK_MONOTONIC, comparable across processes), latency and
    outcome are in the JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from benchmarks.lib.h2peer import H2Peer, PeerError, rapid_resets

MARKER = "FAIR_JSON "
READY = "FAIR_READY"


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def stall(addr: tuple[str, int], authority: str, path: str, limit_s: float) -> dict:
    stop = {"now": False}

    def on_term(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    peer = H2Peer(addr, authority, initial_window=0, timeout=10)
    sid = peer.request("GET", path, held=True)
    stream = peer.streams[sid]
    out: dict = {"role": "stall", "ok": True, "failure": ""}
    try:
        peer.wait(lambda: stream.status is not None or stream.done, 10, "the large response's head")
    except PeerError as err:
        return {**out, "ok": False, "failure": f"no response head: {err}"}
    print(READY, flush=True)
    end = time.monotonic() + limit_s
    while not stop["now"] and time.monotonic() < end and not peer.eof:
        try:
            peer.pump(min(end, time.monotonic() + 0.2))
        except PeerError as err:
            out.update(ok=False, failure=str(err))
            break
    out.update(status=stream.status, received=stream.received, reset_code=stream.reset_code,
               connection_open=not peer.eof, goaway=peer.goaway)
    if stream.received:
        out.update(ok=False, failure=f"{stream.received} bytes of DATA beyond a zero window")
    peer.close()
    return out


def probe(addr: tuple[str, int], authority: str, path: str, duration: float, rate: float, timeout: float) -> dict:
    samples: list[list] = []   # [start (monotonic), latency ms, outcome]
    reasons: dict[str, int] = {}
    reconnects = 0
    peer: H2Peer | None = None
    start = time.monotonic()
    end = start + duration
    slot = start
    while time.monotonic() < end:
        now = time.monotonic()
        if now < slot:
            time.sleep(slot - now)
        slot = max(slot + 1.0 / rate, time.monotonic() - 1.0 / rate)
        t0 = time.monotonic()
        try:
            if peer is None:
                peer = H2Peer(addr, authority, timeout=timeout)
            peer.exchange(path, timeout)
            samples.append([t0, (time.monotonic() - t0) * 1000.0, "ok"])
        except (PeerError, OSError) as err:
            reason = str(err).split(":")[0][:60] or type(err).__name__
            reasons[reason] = reasons.get(reason, 0) + 1
            samples.append([t0, (time.monotonic() - t0) * 1000.0, reason])
            if peer is not None:
                peer.close()
            peer = None
            reconnects += 1
    if peer is not None:
        peer.close()
    ok = sum(1 for s in samples if s[2] == "ok")
    return {"role": "probe", "ok": True, "failure": "", "started": start, "duration_s": time.monotonic() - start,
            "requests": len(samples), "succeeded": ok, "failed": len(samples) - ok, "reasons": reasons,
            "reconnects": reconnects, "samples": [[round(s[0], 6), round(s[1], 3), s[2]] for s in samples]}


def resets(addr: tuple[str, int], authority: str, count: int, path: str) -> dict:
    res = rapid_resets(addr, authority, count, path)
    ok = res.resets >= count
    return {"role": "resets", "ok": ok, "failure": "" if ok else f"only {res.resets} of {count} resets sent",
            "resets": res.resets, "written": res.written, "stalls": res.stalls,
            "connections": res.connections, "goaways": res.goaways,
            "refused_connects": res.refused, "seconds": res.seconds, "started": res.started, "ended": res.ended}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lib.fairload")
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("stall")
    p.add_argument("target")
    p.add_argument("authority")
    p.add_argument("path")
    p.add_argument("--limit", type=float, default=600.0)
    p = sub.add_parser("resets")
    p.add_argument("target")
    p.add_argument("authority")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--path", default="/")
    p = sub.add_parser("probe")
    p.add_argument("target")
    p.add_argument("authority")
    p.add_argument("--path", default="/")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    addr = _addr(args.target)
    if args.role == "stall":
        out = stall(addr, args.authority, args.path, args.limit)
    elif args.role == "resets":
        out = resets(addr, args.authority, args.count, args.path)
    else:
        out = probe(addr, args.authority, args.path, args.duration, args.rate, args.timeout)
    print(MARKER + json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

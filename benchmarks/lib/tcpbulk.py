"""Opaque TCP bulk transfer: a receiver that discards and a sender that measures.

``python -m benchmarks.lib.tcpbulk serve PORT`` accepts connections (one
thread each), reads into a 1 MiB buffer until EOF, then writes back the byte
count it received (8 bytes, big-endian) and closes. ``... send HOST:PORT
--duration S`` writes 1 MiB chunks for S seconds, half-closes, waits for the
count and prints one ``TCP_JSON`` line. Throughput is the receiver's count
over the time to its answer, so bytes left in socket or proxy buffers are not
counted as moved; a count that differs from the bytes sent is a failure, as
is a missing answer (a relay that does not pass the half-close on).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

CHUNK = 1 << 20
MARKER = "TCP_JSON "


def _drain(conn: socket.socket) -> None:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    with conn:
        while True:
            n = conn.recv_into(view)
            if not n:
                break
            total += n
        conn.sendall(total.to_bytes(8, "big"))


def serve(port: int) -> None:
    with socket.create_server(("127.0.0.1", port), backlog=128) as lsock:
        while True:
            conn, _ = lsock.accept()
            threading.Thread(target=_drain, args=(conn,), daemon=True).start()


def send(target: str, duration: float) -> dict:
    host, _, port = target.rpartition(":")
    payload = memoryview(b"\x5a" * CHUNK)
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        t0 = time.perf_counter()
        end = t0 + duration
        while time.perf_counter() < end:
            sock.sendall(payload)
            sent += CHUNK
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while len(answer) < 8:
                part = sock.recv(8 - len(answer))
                if not part:
                    break
                answer += part
        except TimeoutError:
            pass
        elapsed = time.perf_counter() - t0
    if len(answer) < 8:
        return {"ok": False, "failure": f"no byte count from the receiver after half-close ({sent} bytes sent)",
                "sent": sent}
    received = int.from_bytes(answer, "big")
    ok = received == sent
    return {"ok": ok, "failure": "" if ok else f"receiver got {received} of {sent} bytes", "sent": sent,
            "received": received, "seconds": round(elapsed, 4), "gbit_per_s": round(received * 8 / elapsed / 1e9, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lib.tcpbulk")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve").add_argument("port", type=int)
    p = sub.add_parser("send")
    p.add_argument("target")
    p.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        serve(args.port)
        return 0
    try:
        result = send(args.target, args.duration)
    except OSError as err:
        result = {"ok": False, "failure": f"{type(err).__name__}: {err}"}
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

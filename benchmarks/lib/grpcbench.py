"""gRPC unary load: a small server and a closed-loop client (grpcio's asyncio API).

``python -m benchmarks.lib.grpcbench serve PORT`` answers ``/bench.Bench/Echo``
with a fixed 64-byte message through a generic handler (raw bytes, no
protobuf), so the server's cost is grpcio's own. ``... load TARGET`` keeps
``--concurrency`` calls in flight over ``--channels`` channels for
``--duration`` seconds after a warm-up and prints one ``GRPC_JSON`` line:
calls completed, calls per second, errors by status code, latency percentiles.
``--authority`` sets ``grpc.default_authority`` (how a client addresses a
service through a meshproxy outbound listener).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import grpc

METHOD = "/bench.Bench/Echo"
REPLY = b"meshproxy grpc benchmark: a fixed small reply message, 64 bytes."
assert len(REPLY) == 64
REQUEST = b"ping" * 8
MARKER = "GRPC_JSON "


async def _serve(port: int) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return REPLY

    handler = grpc.method_handlers_generic_handler("bench.Bench", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def _load(target: str, authority: str | None, concurrency: int, channels: int,
                duration: float, warmup: float) -> dict:
    options = [("grpc.default_authority", authority)] if authority else []
    chans = [grpc.aio.insecure_channel(target, options=options + [("grpc.use_local_subchannel_pool", 1)])
             for _ in range(channels)]
    calls = [ch.unary_unary(METHOD) for ch in chans]
    # One call first: a broken path fails here with its status, not 10^4 times.
    reply = await calls[0](REQUEST, timeout=5)
    if reply != REPLY:
        return {"ok": False, "failure": f"wrong reply ({len(reply)} bytes)"}
    state = {"measuring": False, "stop": False}
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def worker(i: int) -> None:
        call = calls[i % len(calls)]
        while not state["stop"]:
            t0 = time.perf_counter()
            try:
                await call(REQUEST, timeout=5)
            except grpc.aio.AioRpcError as err:
                if state["measuring"]:
                    errors[err.code().name] = errors.get(err.code().name, 0) + 1
                continue
            if state["measuring"]:
                latencies.append(time.perf_counter() - t0)

    tasks = [asyncio.ensure_future(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup)
    state["measuring"] = True
    t0 = time.perf_counter()
    await asyncio.sleep(duration)
    state["measuring"] = False
    elapsed = time.perf_counter() - t0
    state["stop"] = True
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in chans:
        await ch.close()
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 4) if latencies else 0.0

    return {"ok": not errors and bool(latencies), "failure": ", ".join(f"{v} {k}" for k, v in errors.items()),
            "calls": len(latencies), "seconds": round(elapsed, 3), "calls_per_s": round(len(latencies) / elapsed, 1),
            "errors": errors, "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lib.grpcbench")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("port", type=int)
    load = sub.add_parser("load")
    load.add_argument("target")
    load.add_argument("--authority")
    load.add_argument("--concurrency", type=int, default=64)
    load.add_argument("--channels", type=int, default=2)
    load.add_argument("--duration", type=float, default=10.0)
    load.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        asyncio.run(_serve(args.port))
        return 0
    try:
        result = asyncio.run(_load(args.target, args.authority, args.concurrency, args.channels,
                                   args.duration, args.warmup))
    except grpc.aio.AioRpcError as err:
        result = {"ok": False, "failure": f"first call: {err.code().name}: {err.details()}"}
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

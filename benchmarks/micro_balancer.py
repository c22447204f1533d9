"""Balancer micro-benchmark: ns per pick()+complete(), compiled vs uncompiled, and balancing quality.

Standalone (``.venv/bin/python benchmarks/micro_balancer.py [--quick]``); needs
the compiled ``proxy/outbound/balancer`` extension. Two parts:

1. Timing. A balancer of 10 or 100 endpoints; each step advances a fake clock
   by 1 us and calls ``pick(now)`` then ``complete(ep, now + 0.5 us, 1 ms,
   True)``. Equal weights (the O(1) uniform draw) and unequal weights (the
   O(log n) weighted draw). The compiled extension and the same ``.py`` loaded
   uncompiled run the same loop; figures are the best of several repeats, in ns
   per step, including the Python loop and the two calls. ``loop`` is that loop
   with the two calls left out.
2. Quality. A discrete-event simulation on the fake clock: three endpoints
   (infinite servers, latency 10 ms +-50% uniform; one has 50 ms more), one
   request arriving every fixed interval. PeakEWMA+P2C (this balancer, default
   settings) against round-robin: share of requests sent to the slow endpoint
   and latency percentiles.

Fixed seeds throughout, so the quality table is the same on every machine.
"""

from __future__ import annotations

import argparse
import heapq
import importlib.util
import itertools
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import proxy.outbound.balancer as compiled  # noqa: E402

MS = 1_000_000
SEED = 20240601


def load_pure():
    spec = importlib.util.spec_from_file_location("balancer_pure", ROOT / "proxy/outbound/balancer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine() -> str:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    import Cython

    return (
        f"{cpu}; {os.cpu_count()} CPUs; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; Cython {Cython.__version__}"
    )


# ---------------------------------------------------------------- timing


def make_balancer(mod, n: int, weighted: bool):
    b = mod.Balancer(seed=SEED)
    weights = [1.0 + (i % 4) for i in range(n)] if weighted else [1.0] * n
    b.update([(f"10.0.{i // 256}.{i % 256}:8080", w, None) for i, w in enumerate(weights)])
    # Warm: every endpoint has an observed latency.
    for k, ep in enumerate(b.endpoints()):
        while b.pick(k) is not ep:
            pass
    for ep in b.endpoints():
        while ep.pending:
            b.complete(ep, n, 1 * MS, True)
    return b


def step_loop(b, iters: int, t0: int) -> float:
    pick = b.pick
    complete = b.complete
    now = t0
    start = time.perf_counter_ns()
    for _ in range(iters):
        now += 1000
        ep = pick(now)
        complete(ep, now + 500, 1_000_000.0, True)
    return (time.perf_counter_ns() - start) / iters


def pick_loop(b, iters: int, t0: int) -> float:
    pick = b.pick
    now = t0
    start = time.perf_counter_ns()
    for _ in range(iters):
        now += 1000
        ep = pick(now)  # noqa: F841
    return (time.perf_counter_ns() - start) / iters


def empty_loop(iters: int, t0: int) -> float:
    now = t0
    start = time.perf_counter_ns()
    for _ in range(iters):
        now += 1000
        ep = now  # noqa: F841
    return (time.perf_counter_ns() - start) / iters


def best(fn, repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def timing(pure, iters: int, repeats: int) -> None:
    print(f"ns per step (best of {repeats}, {iters} steps; includes the Python loop)")
    print(
        f"  {'endpoints':>9}  {'weights':>7}  {'pick+complete':>13}  {'(pure)':>7}  {'speed-up':>8}"
        f"  {'pick only':>9}  {'(pure)':>7}"
    )
    loop = best(lambda: empty_loop(iters, 10**12), repeats)
    for n in (10, 100):
        for weighted in (False, True):
            row = []
            for body in (step_loop, pick_loop):
                for mod, k in ((compiled, iters), (pure, max(iters // 10, 1000))):
                    b = make_balancer(mod, n, weighted)
                    clock = itertools.count(10**12, 10**9)
                    row.append(best(lambda body=body, b=b, k=k, clock=clock: body(b, k, next(clock)), repeats))
            label = "1..4" if weighted else "equal"
            print(
                f"  {n:>9}  {label:>7}  {row[0]:>13.0f}  {row[1]:>7.0f}  {row[1] / row[0]:>7.1f}x"
                f"  {row[2]:>9.0f}  {row[3]:>7.0f}"
            )
    print(f"  the loop alone: {loop:.0f} ns")


# ---------------------------------------------------------------- quality


class RoundRobin:
    def __init__(self, keys):
        self.keys = list(keys)
        self.i = -1

    def pick(self, now):
        self.i = (self.i + 1) % len(self.keys)
        return self.keys[self.i]

    def complete(self, key, now, rtt, ok):
        pass


class P2C:
    def __init__(self, keys):
        self.b = compiled.Balancer(seed=SEED)
        self.b.update([(k, 1.0, k) for k in keys])

    def pick(self, now):
        return self.b.pick(now)

    def complete(self, ep, now, rtt, ok):
        self.b.complete(ep, now, rtt, ok)


def key_of(choice):
    return choice if isinstance(choice, str) else choice.key


def simulate(policy, interval_ns: int, duration_ns: int, slow_extra_ms: float = 50.0):
    """Fixed arrivals; infinite-server endpoints; returns (slow share, sorted latencies in ms)."""
    keys = ["fast-1", "fast-2", "slow"]
    extra = {"fast-1": 0.0, "fast-2": 0.0, "slow": slow_extra_ms * MS}
    rng = random.Random(SEED)
    lb = policy(keys)
    in_flight: list = []
    latencies = []
    slow = 0
    seq = itertools.count()
    for now in range(0, duration_ns, interval_ns):
        while in_flight and in_flight[0][0] <= now:
            done, _, choice, rtt = heapq.heappop(in_flight)
            lb.complete(choice, done, rtt, True)
        choice = lb.pick(now)
        key = key_of(choice)
        rtt = 10 * MS * (0.5 + rng.random()) + extra[key]
        slow += key == "slow"
        latencies.append(rtt / MS)
        heapq.heappush(in_flight, (now + int(rtt), next(seq), choice, rtt))
    latencies.sort()
    return slow / len(latencies), latencies


def pct(sorted_values, q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def quality(duration_s: int) -> None:
    print()
    print(f"Balancing quality: 3 endpoints, 10 ms +-50%, one +50 ms; {duration_s} s simulated per row")
    print(
        f"  {'arrivals/s':>10}  {'policy':>13}  {'slow share':>10}  {'p50 ms':>7}  {'p95 ms':>7}"
        f"  {'p99 ms':>7}  {'mean ms':>7}"
    )
    for rate in (100, 1000, 5000):
        interval = 1_000_000_000 // rate
        for name, policy in (("round-robin", RoundRobin), ("PeakEWMA+P2C", P2C)):
            share, lat = simulate(policy, interval, duration_s * 1_000_000_000)
            mean = sum(lat) / len(lat)
            print(
                f"  {rate:>10}  {name:>13}  {share:>10.1%}  {pct(lat, 0.50):>7.1f}  {pct(lat, 0.95):>7.1f}"
                f"  {pct(lat, 0.99):>7.1f}  {mean:>7.1f}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and a shorter simulation")
    args = parser.parse_args()
    if not compiled.__file__.endswith((".so", ".pyd")):
        print(f"compiled balancer not in use ({compiled.__file__}); build it first", file=sys.stderr)
        return 1
    pure = load_pure()
    print(f"machine: {machine()}")
    iters, repeats, duration = (50_000, 3, 20) if args.quick else (300_000, 7, 60)
    timing(pure, iters, repeats)
    quality(duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())

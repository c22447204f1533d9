"""Rate-limit micro-benchmark: ns per inbound request check, without and with an HTTPLocalRateLimitPolicy.

Standalone (``.venv/bin/python benchmarks/micro_ratelimit.py``; under
``flock /tmp/bench.lock``). What the inbound relay calls per request,
``ConnAuthz.check_h1``, on a port with an open Server: alone, then with a
policy of ``total`` and ``identity`` limits high enough never to refuse (the
cost of admitting), and the GCRA ``LocalRateLimit.check`` alone, compiled
and loaded from its ``.py`` uncompiled. Best of several repeats, ns per call
including the Python loop; ``loop`` is the loop alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.micro_balancer import machine  # noqa: E402
from benchmarks.scenarios.micro import load_pure  # noqa: E402
from proxy.config import PolicySettings  # noqa: E402
from proxy.core.addr import ConnMeta  # noqa: E402
from proxy.inbound.authz import InboundAuthorizer  # noqa: E402
from proxy.policy import ratelimit  # noqa: E402
from proxy.policy.authz_model import RateLimit  # noqa: E402
from proxy.policy.parse import parse  # noqa: E402

N = 200_000
REPEATS = 7
SERVER = """
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: web-http, namespace: default}
spec: {podSelector: {}, port: 8080, accessPolicy: all-unauthenticated}
"""
LIMIT = """---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: {name: web-rl, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}
  total: {requestsPerSecond: 2000000000}
  identity: {requestsPerSecond: 1000000000}
"""


def best(fn) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return min(times) / N


def conn_check(text: str) -> float:
    settings = PolicySettings(None, "all-unauthenticated", ("10.0.0.0/8",), ())
    authorizer = InboundAuthorizer(settings, True)
    authorizer.update(parse(text).authz)
    meta = ConnMeta(direction="inbound", client=("10.1.2.3", 40000), local=("10.1.2.4", 4143),
                    orig_dst=("10.1.2.4", 8080),
                    tls=True, client_id="web.default.serviceaccount.identity.cluster.local")
    conn = authorizer.http(meta, 8080)
    head = SimpleNamespace(method=b"GET", target=b"/")
    check = conn.check_h1

    def run():
        for _ in range(N):
            if check(head) is not None:
                raise AssertionError("refused")
    return best(run)


def gcra(module) -> float:
    lim = module.LocalRateLimit(RateLimit("rl", "ns", 2_000_000_000, 1_000_000_000), 10_000)
    check = lim.check

    def run():
        t = 1000.0
        for _ in range(N):
            t += 1e-6
            if check("web", t):
                raise AssertionError("refused")
    return best(run)


def loop() -> float:
    def run():
        t = 1000.0
        for _ in range(N):
            t += 1e-6
    return best(run)


def pure():
    module, why = load_pure("policy.ratelimit")
    if module is None:
        raise SystemExit(why)
    return module


def main() -> None:
    print(f"machine: {machine()}")
    print(f"ratelimit compiled: {ratelimit.__file__.endswith('.so')}")
    print(f"loop                                  {loop():7.1f} ns")
    print(f"LocalRateLimit.check compiled         {gcra(ratelimit):7.1f} ns")
    print(f"LocalRateLimit.check uncompiled       {gcra(pure()):7.1f} ns")
    print(f"ConnAuthz.check_h1, no rate limit     {conn_check(SERVER):7.1f} ns")
    print(f"ConnAuthz.check_h1, total + identity  {conn_check(SERVER + LIMIT):7.1f} ns")


if __name__ == "__main__":
    main()

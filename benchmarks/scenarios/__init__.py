"""The scenarios the runner knows, in the order ``run.py`` runs them.

A scenario is a module with ``NAME``, ``DESCRIPTION`` and
``run(ctx: Context) -> ScenarioResult``. To add one (HTTP/2, mTLS, gRPC,
TCP, handshakes), write the module and list it here; the runner, the process
cleanup and the report come for free.
"""

from __future__ import annotations

from types import ModuleType

from benchmarks.scenarios import (
    balancing,
    connrate,
    fairness,
    grpc,
    h2,
    handshake,
    http1,
    latency,
    memory,
    meshhop,
    micro,
    soak,
    tcp,
    vizmem,
)

SCENARIOS: dict[str, ModuleType] = {m.NAME: m for m in (
    http1, latency, h2, grpc, tcp, connrate, memory, micro, balancing, meshhop, handshake, fairness, soak, vizmem,
)}

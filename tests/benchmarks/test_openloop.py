"""benchmarks/lib/openloop.py against a real local server (its own counting backend, in a subprocess).

The generator must offer the rate it was asked for, and a server stall must
show up in every request that was due during the stall, measured from the
intended send time, not only in the few requests that were on the wire.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uvloop

from benchmarks.lib import openloop

ROOT = Path(__file__).resolve().parents[2]
MS = 1_000_000
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def backend():
    """(process, port) of ``openloop serve``, answering at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.lib.openloop", "serve", "--name", "fast", "--port", str(port)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "backend did not listen"
                time.sleep(0.05)
        yield proc, port
    finally:
        proc.kill()  # SIGKILL also ends a SIGSTOPped process
        proc.wait()
        proc.stderr.close()


def _run(coro):
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def _count(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/count")
        return int(conn.getresponse().read())
    finally:
        conn.close()


def test_offers_the_target_rate_and_measures_a_small_floor(backend):
    _, port = backend
    params = openloop.LoadParams(rate=1000, duration_s=2.0, connections=16)
    result = _run(openloop.generate(f"http://127.0.0.1:{port}/", params, {"Host": "web.bench:80"}))

    assert result.ok, result.failure
    assert result.sent == result.completed == params.total == 2000
    assert _count(port) == 2000  # the server saw each request once
    assert result.bodies == {"fast": 2000}
    assert abs(result.achieved_rps - 1000) / 1000 < 0.03, result.achieved_rps
    assert result.waited_for_connection == 0
    # The floor against a server that answers at once: the millisecond timer's
    # send lag plus loopback; generous for a busy CI machine.
    assert result.latency_ms["p50"] < 5, result.latency_ms


def test_a_server_stall_shows_in_latency_from_the_intended_send_time(backend):
    proc, port = backend
    rate, stall_s, connections = 500, 0.3, 4

    async def load_with_a_stall():
        import asyncio

        loop = asyncio.get_running_loop()
        loop.call_later(0.5, os.kill, proc.pid, signal.SIGSTOP)
        loop.call_later(0.5 + stall_s, os.kill, proc.pid, signal.SIGCONT)
        params = openloop.LoadParams(rate=rate, duration_s=1.5, connections=connections)
        return await openloop.generate(f"http://127.0.0.1:{port}/", params)

    result = _run(load_with_a_stall())

    assert result.ok, result.failure
    assert result.completed == 750
    # The first request due in the stall waited for all of it.
    assert result.latency_ms["max"] >= (stall_s - 0.03) * 1000, result.latency_ms
    # Every request due in the stall's first 200 ms waited at least 100 ms:
    # the stall is in ~100 samples, so it reaches p90, not just the max.
    slow = sum(1 for ns in result.latencies_ns if ns >= 100 * MS)
    assert slow >= 0.8 * rate * (stall_s - 0.1), slow
    assert result.latency_ms["p90"] >= 20, result.latency_ms
    # Measured from the actual send (what a closed loop sees), only the few
    # requests on the wire when the server stopped were slow.
    on_the_wire = sum(1 for ns in result.service_ns if ns >= 100 * MS)
    assert 1 <= on_the_wire <= 2 * connections, on_the_wire
    assert result.waited_for_connection > 0

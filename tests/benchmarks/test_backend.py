"""benchmarks/lib/backend.py: the counting backend the balancing scenario balances over."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.lib.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(30)


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_answers_its_name_after_its_delay_and_counts():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.lib.backend", "--name", "slow", "--port", str(port), "--delay-ms", "50"],
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
        started = time.monotonic()
        assert _get(port, "/") == (200, b"slow")
        assert time.monotonic() - started >= 0.045
        assert _get(port, "/anything") == (200, b"slow")
        assert _get(port, "/count") == (200, b"2")  # /count itself is not counted
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()

"""Discovery tests run their coroutines on uvloop, the loop the proxy uses (no pytest-asyncio)."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop


@pytest.fixture
def run():
    """``run(coro)``: run a coroutine to completion on a fresh uvloop loop, with a time limit."""

    def runner(coro, timeout: float = 20.0):
        async def bounded():
            return await asyncio.wait_for(coro, timeout)

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            return r.run(bounded())

    return runner


async def eventually(predicate, timeout: float = 5.0, interval: float = 0.02):
    """Wait until ``predicate()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)

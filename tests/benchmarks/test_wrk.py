"""benchmarks/lib/wrk.py: the command line it builds."""

from __future__ import annotations

import pytest

from benchmarks.lib import wrk


def test_durations_are_whole_seconds():
    argv = wrk.command("http://127.0.0.1:1/", wrk.WrkParams(threads=1, connections=2, duration_s=3))
    assert "--duration=3s" in argv and argv[0] == "wrk"
    # wrk reads "0.5s" as a usage error and exits at once: refuse to build it.
    for bad in (0.5, 1.5, 0):
        with pytest.raises(ValueError, match="whole seconds"):
            wrk.command("http://127.0.0.1:1/", wrk.WrkParams(threads=1, connections=2, duration_s=bad))

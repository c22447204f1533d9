"""benchmarks/idle_rss.py: its /proc readings add up to what the kernel reports."""

from __future__ import annotations

import os

from benchmarks.idle_rss import mappings, status


def test_the_mappings_add_up_to_vmrss():
    pid = os.getpid()
    before, maps, after = status(pid), mappings(pid), status(pid)
    assert set(before) == {"VmRSS", "RssAnon", "RssFile"}
    total = sum(maps.values())
    low, high = sorted((before["VmRSS"], after["VmRSS"]))
    assert low - 512 <= total <= high + 512  # the reads are a few allocations apart
    assert any(name.endswith(".so") or ".so." in name for name in maps) and maps.get("[stack]", 0) > 0

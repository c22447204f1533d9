"""Tests of proxy/telemetry/memory.py: when the trimmer gives memory back."""

from proxy.telemetry import memory
from proxy.telemetry.memory import Trimmer


def test_trims_only_after_a_real_drop_and_not_too_often():
    t = Trimmer()
    assert not t.observe(10, now=100.0)  # small: nothing to give back
    assert not t.observe(1000, now=101.0)  # the burst
    assert not t.observe(900, now=102.0)  # still busy
    trimmed = t.observe(100, now=103.0)  # fell far below the peak
    assert trimmed is (memory._libc_trim() is not None)
    if trimmed:
        assert t.trims == 1 and t.peak == 100
        assert not t.observe(1000, now=104.0) and not t.observe(0, now=105.0)  # within MIN_INTERVAL
        assert t.observe(0, now=103.0 + memory.MIN_INTERVAL)


def test_trim_comes_from_the_compiled_helper_not_ctypes():
    """ctypes would stay resident in every proxy for one C call; the build has malloc_trim compiled."""
    from proxy.telemetry import malloc

    assert malloc.AVAILABLE  # glibc here
    assert memory._load_trim() is malloc.malloc_trim
    assert malloc.malloc_trim(0) in (0, 1)


def test_settle_after_start_freezes_the_start_and_leaves_later_cycles_collectable():
    """What the start built is out of every collection's walk; garbage made afterwards is still found."""
    import gc

    class Node:
        pass

    assert gc.get_freeze_count() == 0  # pytest's own process never froze
    try:
        memory.settle_after_start()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the interpreter, pytest and the proxy's modules
        assert memory.frozen_objects() == frozen  # counted once, for /metrics
        assert gc.get_objects(2) == [] or len(gc.get_objects(2)) < frozen // 10
        a, b = Node(), Node()
        a.peer, b.peer = b, a  # a cycle, made after the freeze
        del a, b
        assert gc.collect() >= 2
        assert gc.get_freeze_count() == frozen  # a collection never walks (or thaws) the frozen objects
    finally:
        gc.unfreeze()

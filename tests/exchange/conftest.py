"""Fixtures for the exchange core's tests: a rig of fakes per test, with the core's clock and log lines patched in."""

from __future__ import annotations

import pytest

from .fakes import Rig, patched


@pytest.fixture
def make_rig():
    """``make_rig(**options)``: a ``Rig``; the core reads the clock and logs through the last one made."""
    active = []

    def make(**options):
        while active:
            active.pop().__exit__(None, None, None)
        rig = Rig(**options)
        patch = patched(rig)
        patch.__enter__()
        active.append(patch)
        return rig

    yield make
    while active:
        active.pop().__exit__(None, None, None)

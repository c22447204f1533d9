"""Fixtures for the meshproxy-init tests: throwaway network namespaces and a world-readable copy of the tool."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .support import ENV, INIT_DIR, Netns

_counter = itertools.count()


@pytest.fixture
def make_netns():
    """Factory of namespaces named mpi-<pid>-<n>; all deleted when the test ends."""
    made: list[str] = []

    def make() -> Netns:
        name = f"mpi-{os.getpid()}-{next(_counter)}"
        subprocess.run(["ip", "netns", "add", name], check=True, env=ENV)
        made.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, env=ENV)
        return Netns(name)

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], env=ENV, capture_output=True)


@pytest.fixture
def netns(make_netns) -> Netns:
    return make_netns()


@pytest.fixture(scope="session")
def public_dir():
    """A world-readable copy of iptables-init/ and endpoints.py, for commands run as other uids."""
    root = Path(tempfile.mkdtemp(prefix="mpi-public-"))
    try:
        shutil.copytree(INIT_DIR, root / "iptables-init", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(Path(__file__).with_name("endpoints.py"), root / "endpoints.py")
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)

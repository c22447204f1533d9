"""Lint and types run with the tests: ruff over the repository, mypy over ``proxy/``.

Both read their configuration from ``pyproject.toml``. mypy reads a compiled
module through its ``.pyi`` stub, so its ``.py`` source is checked in a second
run of its own, and stubtest compares each stub with the module it describes
(a stub that lies is a defect). The caches (``.ruff_cache``, ``.mypy_cache``)
keep a repeated run to about a second.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A first run, with no cache yet, takes mypy about half a minute.
pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
STUBS = sorted((ROOT / "proxy").rglob("*.pyi"))

# What Cython adds to every compiled module and extension type (pickling
# support, the C API capsule, doctest hooks): present at runtime, no API.
STUBTEST_ALLOWLIST = r"""
.*\.__reduce_cython__
.*\.__setstate_cython__
.*\.__pyx_capi__
.*\.__test__
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        command = " ".join(proc.args[2:])
        pytest.fail(f"{command} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}", pytrace=False)


def test_ruff():
    assert_clean(run("ruff", "check", "--no-fix", "."))


def test_mypy():
    assert_clean(run("mypy"))


def test_mypy_compiled_sources():
    sources = [str(stub.with_suffix(".py").relative_to(ROOT)) for stub in STUBS if stub.with_suffix(".py").exists()]
    assert sources
    # A cache of its own: here these modules come from their .py, in the run above from their .pyi.
    assert_clean(run("mypy", "--cache-dir", ".mypy_cache/compiled-sources", *sources))


def test_stubs_match_the_modules(tmp_path):
    modules = [".".join(stub.relative_to(ROOT).with_suffix("").parts) for stub in STUBS]
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(STUBTEST_ALLOWLIST)
    # Cython's extension types are disjoint bases (PEP 800); the stubs do not spell that out.
    assert_clean(run("mypy.stubtest", "--mypy-config-file", "pyproject.toml", "--allowlist", str(allowlist),
                     "--ignore-unused-allowlist", "--ignore-disjoint-bases", *modules))

"""Session-wide test setup: the compiled fast path must be the one under test.

Tests run against the Cython build, never silently against the pure-Python
sources; the README's test command (``./scripts/test.sh``) builds it first.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The repository root first (the in-place build of ``proxy``) and this
# directory last (for ``helpers``, without shadowing anything installed),
# however pytest was launched.
_TESTS = Path(__file__).resolve().parent
if str(_TESTS.parent) not in sys.path:
    sys.path.insert(0, str(_TESTS.parent))
if str(_TESTS) not in sys.path:
    sys.path.append(str(_TESTS))

_BUILD_HINT = (
    "the compiled fast path is not in use; build it with the README's test "
    "command (./scripts/test.sh, which runs the Cython build; or "
    ".venv/bin/python setup.py build_ext --inplace) and run without MESHPROXY_PURE"
)

try:
    import proxy.compiled as _compiled
except Exception as _err:  # a module the package lists is missing or broken
    raise AssertionError(
        f"{_BUILD_HINT}: cannot import proxy.compiled: {type(_err).__name__}: {_err}"
    ) from _err

assert _compiled.COMPILED, f"{_BUILD_HINT}: {_compiled.compiled_status()}"


@pytest.fixture(scope="session", autouse=True)
def _kill_leftover_proxies():
    """Safety net: no proxy a test started outlives the session."""
    yield
    from helpers.meshproxy import kill_all

    kill_all()

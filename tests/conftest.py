"""Session-wide test setup: the compiled fast path must be the one under test.

Tests run against the Cython build, never silently against the pure-Python
sources; the README's test command (``./scripts/test.sh``) builds it first.
"""

from __future__ import annotations

import signal
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


def _sigint_state() -> tuple[object, bool]:
    """SIGINT's handler in this process and whether its main thread blocks it."""
    return signal.getsignal(signal.SIGINT), signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, ())


def pytest_configure(config: pytest.Config) -> None:
    # A harness that starts pytest with SIGINT ignored or blocked (a script's background job) would pass that
    # on to every child a test starts and sends Ctrl-C to: the tests start from Python's own disposition.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _sigint_left_as_found(request):
    """A test that leaves SIGINT ignored, handled otherwise or blocked in the pytest process fails here:
    every child started later (a proxy, ``viz tap``) would inherit it and outlive its Ctrl-C (CI's hangs)."""
    before = _sigint_state()
    yield
    after = _sigint_state()
    if after != before:
        signal.signal(signal.SIGINT, before[0])  # type: ignore[arg-type]
        signal.pthread_sigmask(signal.SIG_BLOCK if before[1] else signal.SIG_UNBLOCK, {signal.SIGINT})
        pytest.fail(f"{request.node.nodeid} left SIGINT {after} (was {before}) in the pytest process",
                    pytrace=False)

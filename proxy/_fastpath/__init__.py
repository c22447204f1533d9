"""The compiled hot paths: detection, HTTP/1 parsing, the per-request relay, metrics.

Each module is one source for compiled and uncompiled use (a ``.py`` with a
``.pxd`` beside it, or a ``.pyx``). ``COMPILED`` says whether every module is
loaded from its compiled extension (computed on first use); tests assert it. Setting
``MESHPROXY_PURE=1`` before import loads the plain ``.py`` sources instead,
which is how benchmarks measure what compilation buys.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

# Dependency order: a module is loaded after the ones it cimports/imports.
MODULES: tuple[str, ...] = ("detect", "http1", "metrics", "tunnel", "relay", "balancer", "hpack", "h2frame", "h2state", "h2conn", "h2relay", "h1bridge", "sockopt")

_HERE = Path(__file__).parent
PURE_REQUESTED = os.environ.get("MESHPROXY_PURE", "") not in ("", "0")


def _load_pure(name: str) -> None:
    full = f"{__name__}.{name}"
    source = _HERE / f"{name}.py"
    if full in sys.modules or not source.exists():
        return
    spec = importlib.util.spec_from_file_location(full, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)


if PURE_REQUESTED:
    for _name in MODULES:
        _load_pure(_name)


def module_is_compiled(name: str) -> bool:
    """True when ``proxy._fastpath.<name>`` was loaded from a compiled extension."""
    module = importlib.import_module(f"{__name__}.{name}")
    origin = getattr(module, "__file__", "") or ""
    return origin.endswith((".so", ".pyd"))


def compiled_status() -> dict[str, bool]:
    """Per module: whether the compiled extension is the one in use."""
    return {name: module_is_compiled(name) for name in MODULES}


def loaded_status() -> dict[str, bool]:
    """Like compiled_status(), for the modules this process has loaded so far (imports nothing)."""
    out = {}
    for name in MODULES:
        module = sys.modules.get(f"{__name__}.{name}")
        if module is not None:
            out[name] = (getattr(module, "__file__", "") or "").endswith((".so", ".pyd"))
    return out


def __getattr__(name: str):
    # COMPILED is computed on first use: it imports every fast-path module, and
    # a running proxy should only load (and pay memory for) the ones it uses.
    if name == "COMPILED":
        value = not PURE_REQUESTED and all(compiled_status().values())
        globals()["COMPILED"] = value
        return value
    raise AttributeError(name)

"""Which modules are compiled, whether the compiled build is the one in use, and the pure-Python switch.

A module is compiled when a ``.pxd`` sits beside its ``.py`` (or it is a
hand-written ``.pyx``), wherever it lives under ``proxy/``: ``setup.py``
builds exactly those, and ``MODULES`` lists them in dependency order.
``COMPILED`` says whether every one of them is loaded from its extension
(computed on first use); tests assert it. ``MESHPROXY_PURE=1`` before the
first import of ``proxy`` loads the plain ``.py`` sources instead, which is
how benchmarks measure what compilation buys.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import importlib.machinery
    from pathlib import Path

# Dependency order: a module is listed after the ones it cimports or imports.
MODULES: tuple[str, ...] = (
    "proxy.protocol.request",
    "proxy.protocol.detect",
    "proxy.protocol.http1",
    "proxy.protocol.hpack",
    "proxy.protocol.h2frame",
    "proxy.protocol.h2state",
    "proxy.protocol.h2conn",
    "proxy.policy.ratelimit",
    "proxy.telemetry.counters",
    "proxy.telemetry.tracecontext",
    "proxy.telemetry.pbwire",
    "proxy.telemetry.otlp",
    "proxy.telemetry.tracing",
    "proxy.core.target",
    "proxy.core.addr",
    "proxy.outbound.balancer",
    "proxy.exchange.ends",
    "proxy.exchange.clock",
    "proxy.exchange.taphook",
    "proxy.exchange.context",
    "proxy.exchange.core",
    "proxy.outbound.balance",
    "proxy.telemetry.tap",
    "proxy.policy.routes",
    "proxy.policy.split",
    "proxy.outbound.mirror",
    "proxy.outbound.policy",
    "proxy.http.batch",
    "proxy.http.convert",
    "proxy.http.tunnel",
    "proxy.http.h1client",
    "proxy.http.h1server",
    "proxy.http.h2server",
    "proxy.http.h2client",
    "proxy.http.upstreams",
    "proxy.outbound.server",
    "proxy.transport.meshtls",
    "proxy.transport.sockopt",
    "proxy.transport.orig_dst",
    "proxy.core.accept",
    "proxy.telemetry.malloc",
)

# A string, and pathlib and importlib.util imported where used: only the pure mode and the
# tests need them, and a running proxy would otherwise keep them resident (0.3 MiB).
_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
PURE_REQUESTED = os.environ.get("MESHPROXY_PURE", "") not in ("", "0")


def source_of(name: str) -> Path:
    """The ``.py`` a module is compiled from (``proxy.http.h1server`` -> proxy/http/h1server.py)."""
    from pathlib import Path

    return Path(_ROOT).joinpath(*name.split(".")).with_suffix(".py")


class _PureFinder:
    """Finds the listed modules' ``.py`` ahead of their extensions, whoever imports them first (a pure
    module importing another must not get the compiled one: extensions win over sources by default)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name not in MODULES:
            return None
        source = source_of(name)
        if not source.exists():
            return None  # a .pyx-only module (sockopt, malloc) has no pure twin
        import importlib.util

        return importlib.util.spec_from_file_location(name, source)


def load_pure() -> None:
    """Load every compiled module from its ``.py`` (called by ``proxy/__init__`` under MESHPROXY_PURE)."""
    if _PureFinder not in sys.meta_path:
        sys.meta_path.insert(0, _PureFinder)
    for name in MODULES:
        if source_of(name).exists():
            importlib.import_module(name)


def module_is_compiled(name: str) -> bool:
    """True when module ``name`` was loaded from a compiled extension."""
    module = importlib.import_module(name)
    origin = getattr(module, "__file__", "") or ""
    return origin.endswith((".so", ".pyd"))


def compiled_status() -> dict[str, bool]:
    """Per module: whether the compiled extension is the one in use."""
    return {name: module_is_compiled(name) for name in MODULES}


def loaded_status() -> dict[str, bool]:
    """Like compiled_status(), for the modules this process has loaded so far (imports nothing)."""
    out = {}
    for name in MODULES:
        module = sys.modules.get(name)
        if module is not None:
            out[name] = (getattr(module, "__file__", "") or "").endswith((".so", ".pyd"))
    return out


def __getattr__(name: str) -> bool:
    # COMPILED is computed on first use: it imports every compiled module, and
    # a running proxy should only load (and pay memory for) the ones it uses.
    if name == "COMPILED":
        value = not PURE_REQUESTED and all(compiled_status().values())
        globals()["COMPILED"] = value
        return value
    raise AttributeError(name)

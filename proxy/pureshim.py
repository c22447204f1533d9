"""A stand-in for Cython's ``cython`` module, so that ``MESHPROXY_PURE=1`` runs where Cython is not installed.

The compiled modules are written in Cython's pure-Python mode: they import
``cython`` for their C types (``cython.int``, ``cython.cast``, ...) and test
``cython.compiled``. Run uncompiled, that import needs Cython's own shadow
module, which a normal install (a wheel, the container image) does not have.
When ``cython`` cannot be imported, ``install()`` puts this stand-in in its
place: the types are plain Python ones, casts to integer types truncate as C
would, declarations return their value, and ``cython.cimports.libc.math`` is
Python's ``math``. Only what the modules listed in ``proxy/compiled.py`` use
is provided (``tests/test_pureshim.py`` checks that list against the sources).
"""

from __future__ import annotations

import math
import sys
import types
from typing import Any

# The C integer and pointer types the sources name, and the Python type each stands for in pure mode.
INTEGERS = ("int", "longlong", "Py_ssize_t", "bint", "uint", "ulonglong", "size_t", "char", "uchar")
OTHERS = {"double": float, "float": float, "p_uchar": bytes, "p_char": bytes}


class _CType:
    """A C type named in a declaration: calling it converts as Cython's shadow module does."""

    def __init__(self, name: str, convert: Any) -> None:
        self.name = name
        self.convert = convert

    def __call__(self, value: Any = 0) -> Any:
        return self.convert(value)

    def __repr__(self) -> str:
        return f"cython.{self.name}"


def _cast(ctype: Any, value: Any, typecheck: bool = False) -> Any:
    if isinstance(ctype, _CType):
        return ctype(value)
    return value  # an extension type or object: nothing to convert


def _declare(ctype: Any = None, value: Any = None, **kwargs: Any) -> Any:
    return value


def _same(func: Any) -> Any:
    """A decorator that only concerns the compiled function (``cython.cfunc``, ``cython.inline``)."""
    return func


def _directive(*args: Any, **kwargs: Any) -> Any:
    """A compiler directive used as a decorator (``cython.exceptval(check=False)``, ``cython.cdivision(True)``)."""
    return _same


def _module(name: str, **names: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = []  # a package, so that ``cython.cimports...`` imports resolve from sys.modules
    vars(mod).update(names)
    return mod


def build() -> types.ModuleType:
    """The stand-in module (and its ``cimports`` package), not yet installed."""
    types_ = {name: _CType(name, bool if name == "bint" else int) for name in INTEGERS}
    types_.update((name, _CType(name, convert)) for name, convert in OTHERS.items())
    libc = _module("cython.cimports.libc", math=math)
    return _module("cython", __doc__=__doc__, compiled=False, cast=_cast, declare=_declare,
                   address=lambda value: value, cimports=_module("cython.cimports", libc=libc),
                   cfunc=_same, inline=_same, exceptval=_directive, cdivision=_directive, locals=_directive,
                   boundscheck=_directive, wraparound=_directive,
                   returns=_directive, **types_)


def install() -> bool:
    """Put the stand-in in place when Cython is not importable; True if it did."""
    try:
        import cython  # noqa: F401
    except ImportError:
        pass
    else:
        return False
    mod = build()
    cimports = vars(mod)["cimports"]
    sys.modules["cython"] = mod
    sys.modules["cython.cimports"] = cimports
    sys.modules["cython.cimports.libc"] = vars(cimports)["libc"]
    sys.modules["cython.cimports.libc.math"] = math
    return True

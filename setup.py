"""Build script: always cythonizes the fast-path modules.

Every module under ``proxy/_fastpath`` is either a hand-written ``.pyx`` or a
plain ``.py`` with a ``.pxd`` beside it (Cython pure-Python mode); both are
compiled here. Set ``MESHPROXY_ANNOTATE=1`` to write ``cython -a`` HTML
reports next to the sources, to see where hot loops still touch Python.
"""

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
FASTPATH = HERE / "proxy" / "_fastpath"


def fastpath_extensions() -> list[Extension]:
    exts = []
    for pxd in sorted(FASTPATH.glob("*.pxd")):
        stem = pxd.stem
        source = FASTPATH / f"{stem}.pyx"
        if not source.exists():
            source = FASTPATH / f"{stem}.py"
        if not source.exists():
            continue
        exts.append(
            Extension(
                f"proxy._fastpath.{stem}",
                [str(source.relative_to(HERE))],
                extra_compile_args=["-O2"],
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        fastpath_extensions(),
        language_level=3,
        annotate=os.environ.get("MESHPROXY_ANNOTATE") == "1",
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
)

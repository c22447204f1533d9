"""Build script: always cythonizes the compiled modules.

Every module under ``proxy/`` that has a ``.pxd`` beside it is compiled,
wherever it lives: a plain ``.py`` (Cython pure-Python mode, one source for
compiled and uncompiled use) or a hand-written ``.pyx``. Set
``MESHPROXY_ANNOTATE=1`` to write ``cython -a`` HTML reports next to the
sources, to see where hot loops still touch Python.
"""

import os
from pathlib import Path

from Cython.Build import cythonize
from Cython.Compiler import Options
from setuptools import Extension, setup

# No docstrings in the compiled modules (the sources and the pure-Python mode keep them):
# they are data every sidecar maps and builds at import, about 120 KiB of an idle proxy's RSS
# (benchmarks/RESULTS.md, mem2). The same for the signatures embedsignature would add.
Options.docstrings = False

HERE = Path(__file__).parent
PACKAGE = HERE / "proxy"


def compiled_extensions() -> list[Extension]:
    exts = []
    for pxd in sorted(PACKAGE.rglob("*.pxd")):
        source = pxd.with_suffix(".pyx")
        if not source.exists():
            source = pxd.with_suffix(".py")
        if not source.exists():
            continue
        relative = source.relative_to(HERE)
        exts.append(
            Extension(
                ".".join(relative.with_suffix("").parts),
                [str(relative)],
                extra_compile_args=["-O2"],
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        compiled_extensions(),
        language_level=3,
        annotate=os.environ.get("MESHPROXY_ANNOTATE") == "1",
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": False,
        },
    ),
)

"""Builds the benchmarks' small C tools on first use (the open-loop generator, the handshake tool).

A binary is named by a hash of its source, the compiler and the flags, so an
edited source is rebuilt and the stale binary removed. Several builders at
once (tests in parallel, two runners) each compile to a private temporary
name and rename it into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


class BuildError(RuntimeError):
    """No C compiler, missing headers, or the tool did not compile."""


def compiler() -> str | None:
    """``$CC`` when set, else ``cc`` or ``gcc`` from PATH."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def build(cc: str | None, source: Path, build_dir: Path, stem: str, cflags: Sequence[str], libs: Sequence[str],
          *, what: str, needs: str, hint: Callable[[str], str] | None = None) -> Path:
    """``build_dir/<stem>-<hash>`` for ``source``, compiled with ``cc`` first when there is none yet.

    ``what`` and ``needs`` word the error when there is no compiler; ``hint``
    adds a cause read from the compiler's stderr.
    """
    if cc is None:
        raise BuildError(f"no C compiler (cc) for {what}: install {needs} (scripts/bootstrap.sh does)")
    digest = hashlib.sha256(source.read_bytes() + "\0".join((cc, *cflags, *libs)).encode()).hexdigest()[:16]
    binary = build_dir / f"{stem}-{digest}"
    if binary.exists():
        return binary
    build_dir.mkdir(parents=True, exist_ok=True)
    tmp = build_dir / f".{stem}-{digest}-{os.getpid()}.tmp"
    try:
        done = subprocess.run([cc, *cflags, "-o", str(tmp), str(source), *libs],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:]) or f"status {done.returncode}"
            extra = hint(done.stderr) if hint is not None else ""
            raise BuildError(f"{cc} could not build {source.name}: {tail}{extra}")
        os.replace(tmp, binary)
    finally:
        tmp.unlink(missing_ok=True)
    for old in build_dir.glob(f"{stem}-*"):
        if old != binary:
            old.unlink(missing_ok=True)  # a run still using it keeps its open inode
    return binary


def build_command(module: str, what: str, build_tool: Callable[[], Path], argv: Sequence[str]) -> int:
    """``python -m benchmarks.lib.<module> build``: print the tool's path (building it if needed)."""
    if list(argv) != ["build"]:
        print(f"usage: python -m benchmarks.lib.{module} build   (prints {what})", file=sys.stderr)
        return 2
    try:
        print(build_tool())
    except BuildError as err:
        print(f"{module}: {err}", file=sys.stderr)
        return 1
    return 0

"""Where an idle proxy's resident memory goes: RSS after each step of what ``meshproxy run`` imports.

One process imports, in order, what the run path needs (the interpreter and
site, ssl, asyncio, uvloop, the configuration, the loggers, then the app and
the data path) and prints VmRSS with the anonymous and file-backed growth of
each step, the way ``/proc/PID/status`` reports them. The running proxy adds
its listeners and objects on top (the ``memory`` scenario measures that
whole). Run it from a checkout's root, so that checkout's ``proxy`` is the
one imported:

    .venv/bin/python benchmarks/import_memory.py
"""

from __future__ import annotations

import importlib
import os
import sys

STEPS: list[tuple[str, list[str]]] = [
    ("ssl (libssl, libcrypto)", ["ssl"]),
    ("asyncio", ["asyncio"]),
    ("uvloop", ["uvloop"]),
    ("proxy.cli", ["proxy.cli"]),
    ("proxy.config", ["proxy.config"]),
    ("proxy.telemetry.logging", ["proxy.telemetry.logging"]),
    ("proxy.app and the data path", ["proxy.app"]),
]


def status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0])
    return values


def main() -> int:
    sys.path.insert(0, os.getcwd())  # this checkout's proxy, not the one an editable install points at
    before = status()
    modules = len(sys.modules)
    print(f"{'step':30s} {'VmRSS KiB':>10s} {'+anon':>7s} {'+file':>7s} {'+modules':>8s}")
    print(f"{'interpreter and site':30s} {before['VmRSS']:10d} {before['RssAnon']:7d} {before['RssFile']:7d}"
          f" {modules:8d}")
    for name, imports in STEPS:
        for module in imports:
            importlib.import_module(module)
        now = status()
        print(f"{name:30s} {now['VmRSS']:10d} {now['RssAnon'] - before['RssAnon']:+7d}"
              f" {now['RssFile'] - before['RssFile']:+7d} {len(sys.modules) - modules:+8d}")
        before, modules = now, len(sys.modules)
    return 0


if __name__ == "__main__":
    sys.exit(main())

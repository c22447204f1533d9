"""An idle ``meshproxy run``'s resident memory: VmRSS, RssAnon and RssFile, and what each mapping holds.

Starts ``python -m proxy run`` from the current directory's tree (as the
``memory`` scenario starts it: outbound, inbound, admin and tap listeners on
loopback, log level warning), waits for /ready and for the start's heap
trim, reads ``/proc/PID/status``, stops it; ``--starts`` times, medians
printed. ``--maps N`` adds the N largest mappings by Rss (from smaps,
averaged): which compiled module, library or heap holds the pages.
Arguments after ``--`` go to the interpreter (``-- -OO``). A worktree
without ``.pyc`` files compiles every module at each start, which costs
about 0.5 MiB: compare trees that both have them
(``python -m compileall -q -o 0 -o 2 proxy``).

    .venv/bin/python benchmarks/idle_rss.py --starts 3 --maps 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.lib import procs  # noqa: E402
from benchmarks.lib.servers import ENV, LOOPBACK  # noqa: E402

FIELDS = ("VmRSS", "RssAnon", "RssFile")
SETTLE_S = 0.5  # after /ready: the proxy collects its import garbage and trims the heap once started


def status(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in FIELDS:
                values[key] = int(rest.split()[0])
    return values


def mappings(pid: int) -> dict[str, int]:
    """Rss (KiB) by mapped file, ``[heap]``, ``[stack]`` or ``[anon]``."""
    out: dict[str, int] = {}
    name = "[anon]"
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if parts and "-" in parts[0] and not parts[0].endswith(":"):  # a mapping's header line
                name = parts[5] if len(parts) > 5 else "[anon]"
            elif parts and parts[0] == "Rss:":
                out[name] = out.get(name, 0) + int(parts[1])
    return out


def one_start(group: procs.ProcessGroup, python_args: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    outbound, inbound, admin, tap = procs.free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHPROXY_")}
    env.update({
        ENV["outbound"]: f"{LOOPBACK}:{outbound}", ENV["inbound"]: f"{LOOPBACK}:{inbound}",
        ENV["admin"]: f"{LOOPBACK}:{admin}", ENV["tap"]: f"{LOOPBACK}:{tap}",
        ENV["default_target"]: f"{LOOPBACK}:9", ENV["log_level"]: "warning",
    })
    proc = group.start("meshproxy", [sys.executable, *python_args, "-m", "proxy", "run"], env=env, cwd=Path.cwd())
    try:
        procs.wait_http_ok(proc, f"http://{LOOPBACK}:{admin}/ready", timeout=30)
        time.sleep(SETTLE_S)
        return status(proc.pid), mappings(proc.pid)
    finally:
        group.stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--maps", type=int, default=0, help="show the N largest mappings")
    parser.add_argument("python_args", nargs="*", help="interpreter options, after --")
    args = parser.parse_args()
    runs, maps = [], []
    with tempfile.TemporaryDirectory() as logs, procs.ProcessGroup(Path(logs)) as group:
        for _ in range(args.starts):
            st, mp = one_start(group, args.python_args)
            runs.append(st)
            maps.append(mp)
    for key in FIELDS:
        values = [r[key] for r in runs]
        print(f"{key:8s} median {statistics.median(values):8,.0f} KiB  ({', '.join(f'{v:,}' for v in values)})")
    if args.maps:
        names = {name for m in maps for name in m}
        mean = {name: sum(m.get(name, 0) for m in maps) / len(maps) for name in names}
        for name, kib in sorted(mean.items(), key=lambda kv: -kv[1])[:args.maps]:
            print(f"{kib:8,.0f} KiB  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

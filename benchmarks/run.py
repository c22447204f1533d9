"""Benchmark runner: ``.venv/bin/python benchmarks/run.py [--quick] [--scenario NAME] [--out DIR]``.

Runs the selected scenarios (all by default) with fixed parameters, prints a
plain-text table on stdout (progress on stderr) and writes Markdown and JSON
reports, with the machine and the parameters, to ``--out``. Every process it
starts is stopped on the way out, including on Ctrl-C and errors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# The runner itself must see the compiled fast path (the micro scenario
# loads the uncompiled one explicitly); meshproxy variants set their own env.
os.environ.pop("MESHPROXY_PURE", None)

from benchmarks.lib import machine, report  # noqa: E402
from benchmarks.lib.context import Context, say  # noqa: E402
from benchmarks.lib.procs import ProcessGroup  # noqa: E402
from benchmarks.lib.servers import Placement  # noqa: E402
from benchmarks.scenarios import SCENARIOS  # noqa: E402
from benchmarks.scenarios.http1 import BASELINE, TAPPED, TAPPED_VARIANTS, VARIANTS  # noqa: E402

REQUIRED_TOOLS = {
    "http1": ("nginx", "haproxy", "wrk", "taskset"),
    "latency": ("nginx", "haproxy", "cc", "taskset"),
    "h2": ("nginx", "haproxy", "h2load", "taskset"),
    "grpc": ("haproxy", "taskset"),
    "tcp": ("haproxy", "taskset"),
    "connrate": ("nginx", "haproxy", "wrk", "taskset"),
    "memory": ("nginx", "haproxy", "wrk", "taskset"),
    "balancing": ("cc",),
    "meshhop": ("nginx", "haproxy", "wrk", "taskset"),
    "handshake": ("nginx", "haproxy", "cc", "taskset"),
    "fairness": ("nginx", "haproxy", "taskset"),
    "soak": ("nginx", "taskset"),
}
# The scenarios that add a meshproxy-baseline contender with --baseline.
BASELINE_SCENARIOS = ("http1", "latency", "h2", "grpc", "meshhop", "tcp", "fairness", "connrate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Reproducible meshproxy benchmarks (see benchmarks/README.md).",
    )
    parser.add_argument("--quick", action="store_true",
                        help="1 round of short loads instead of 3 rounds of 10 s (the whole suite in under 2 minutes)")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), metavar="NAME",
                        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}; default all")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out",
                        help="directory for the reports and logs (default benchmarks/out/)")
    parser.add_argument("--variants", type=lambda s: [v.strip() for v in s.split(",") if v.strip()],
                        help=f"http1: comma-separated subset of {','.join(VARIANTS)} (and {BASELINE} with --baseline;"
                             f" {TAPPED}: meshproxy with a tap matching every request open, read by viz tap's"
                             f" client; {TAPPED_VARIANTS[1]}: the same tap read by nghttp)")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="a checkout of another revision with its compiled modules built in place: adds a"
                             f" {BASELINE} contender (python -m proxy run, cwd DIR) to the"
                             f" {', '.join(BASELINE_SCENARIOS)} scenarios and the ratio meshproxy / {BASELINE}")
    parser.add_argument("--rounds", type=int, help="override the number of rounds (recorded)")
    parser.add_argument("--duration", type=float, help="override the measured seconds per run (recorded)")
    parser.add_argument("--meshproxy-log-level", default="warning",
                        help="MESHPROXY_LOG_LEVEL for the meshproxy variants (default warning; logs in the run dir)")
    parser.add_argument("--proxy-cpu", help="CPU list for the proxy under test (default: last usable CPU)")
    parser.add_argument("--load-cpus", help="CPU list for wrk + nginx (default: the other usable CPUs)")
    args = parser.parse_args(argv)
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if not (args.baseline / "proxy" / "__init__.py").is_file():
            parser.error(f"--baseline {args.baseline}: no proxy package there (a meshproxy checkout is needed)")
        if args.baseline == REPO.resolve():
            parser.error("--baseline names this checkout itself")
    if args.variants:
        unknown = [v for v in args.variants
                   if v not in VARIANTS + TAPPED_VARIANTS + ((BASELINE,) if args.baseline else ())]
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return args


def _describe_baseline(where: Path | None) -> str:
    """'none', or the directory with its git revision (what the meshproxy-baseline rows ran)."""
    if where is None:
        return "none"
    try:
        rev = subprocess.run(["git", "-C", str(where), "log", "-1", "--format=%h %s"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{where} ({rev or 'revision unknown'})"


def _terminate_on_signal() -> None:
    # SIGTERM/SIGHUP take the same clean path as Ctrl-C: unwind, stop processes.
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    # Restore Ctrl-C even when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _terminate_on_signal()
    names = args.scenario or list(SCENARIOS)
    started = time.monotonic()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = (args.out / f"run-{stamp}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    placement = Placement.choose(args.proxy_cpu, args.load_cpus)

    rep = report.Report(
        title="meshproxy benchmarks" + (" (quick)" if args.quick else ""),
        machine=machine.collect(REPO),
        params={
            "mode": "quick" if args.quick else "full",
            "scenarios": names,
            "cpu_placement": placement.describe(),
            "baseline": _describe_baseline(args.baseline),
            "command": " ".join([Path(sys.executable).name, "benchmarks/run.py", *(argv or sys.argv[1:])]),
            "logs_and_configs": str(run_dir),
        },
    )
    say(f"meshproxy benchmarks: {', '.join(names)} ({rep.params['mode']}); logs in {run_dir}")
    interrupted = False
    for name in names:
        missing = [t for t in REQUIRED_TOOLS.get(name, ()) if shutil.which(t) is None]
        if missing:
            rep.errors.append(f"{name}: skipped, missing tools: {', '.join(missing)}")
            continue
        scenario = SCENARIOS[name]
        try:
            with ProcessGroup(run_dir) as group:
                ctx = Context(REPO, args.quick, run_dir, run_dir, group, placement, args)
                rep.scenarios.append(scenario.run(ctx))
        except KeyboardInterrupt:
            interrupted = True
            rep.errors.append(f"{name}: interrupted; all started processes were stopped")
            break
        except Exception as err:  # one broken scenario must not lose the others' results
            say(traceback.format_exc().rstrip())
            rep.errors.append(f"{name}: {type(err).__name__}: {err}")
    shutil.rmtree(run_dir / "nginx-tmp", ignore_errors=True)

    rep.params["wall_time_s"] = round(time.monotonic() - started, 1)
    # Files first: a closed stdout (``| head``) must not lose the report.
    paths = report.write(rep, args.out, stamp)
    try:
        print(report.report_text(rep), flush=True)
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    say(f"\nwrote {', '.join(str(p) for p in paths[:2])} (+ latest.md/json) in {rep.params['wall_time_s']} s")
    if interrupted:
        return 130
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())

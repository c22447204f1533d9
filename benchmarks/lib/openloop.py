"""Open-loop HTTP/1.1 load at a fixed rate: builds and runs the C generator ``benchmarks/openloop/openloop.c``.

A closed-loop client (wrk) sends a connection's next request only after the
previous answer, so a stalled server also stalls the client and the stall
shows up as a few slow requests instead of all the requests that should have
been sent meanwhile (coordinated omission). The generator schedules request
``i`` at ``start + i / rate`` whatever happened before and measures its
latency from that time; see the source's header for the details.

It is C rather than Python because its own delay is part of every latency it
reports: uvloop's millisecond timers put a floor of about 0.6 ms (p50) and
1.2 ms (p99) under every figure of the earlier Python generator. This module
compiles the source with ``cc -O2`` into ``benchmarks/openloop/build/`` (a
binary named by a hash of the source and the flags, so an edited source is
rebuilt), runs it pinned as the scenarios run wrk, and returns a typed
``LoadResult``. There is no Python fallback: without a C compiler
(``build-essential``, installed by ``scripts/bootstrap.sh``) a run fails with
that reason instead of measuring something else. ``python -m
benchmarks.lib.openloop build`` prints the binary's path, to run it by hand.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.lib import cbuild
from benchmarks.lib.procs import run_bounded

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "benchmarks" / "openloop" / "openloop.c"
BUILD_DIR = REPO / "benchmarks" / "openloop" / "build"
CFLAGS = ("-O2", "-std=c11", "-Wall", "-Wextra")
LIBS = ("-lm",)
ERROR_KINDS = ("connect", "read", "parse", "status", "timeout")


BuildError = cbuild.BuildError
compiler = cbuild.compiler


def build() -> Path:
    """The generator binary for the current source, compiled first if there is none yet."""
    return cbuild.build(compiler(), SOURCE, BUILD_DIR, "openloop", CFLAGS, LIBS,
                        what="the open-loop generator", needs="Debian's build-essential")


@dataclass(frozen=True)
class LoadParams:
    """One fixed-rate run: recorded in the report as is."""

    rate: float           # requests per second, offered whatever the answers do
    duration_s: float     # sending window; the run then waits for answers up to timeout_s
    connections: int      # keep-alive pool, all opened before the first send
    timeout_s: float = 2.0  # from the intended send time

    @property
    def total(self) -> int:
        return max(1, round(self.rate * self.duration_s))

    def describe(self) -> dict[str, Any]:
        return {"rate_rps": self.rate, "duration_s": self.duration_s,
                "connections": self.connections, "request_timeout_s": self.timeout_s}


def pool_size(rate: float, seconds_per_conn: float = 0.1, low: int = 8, high: int = 256) -> int:
    """Connections for ``rate``: rate * 0.1 s of in-flight time, within [low, high].

    Enough that a 50 ms backend taking a third of the requests (round-robin
    needs rate * 0.017 connections) never makes requests wait for a connection.
    """
    return max(low, min(high, math.ceil(rate * seconds_per_conn)))


@dataclass(frozen=True)
class Distribution:
    """One of the generator's histograms, in microseconds; None where there were no samples.

    Percentiles are nearest-rank, read from a log-linear histogram: never
    below the true value and at most 0.8% above it. ``max`` is exact.
    """

    count: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    p999: float | None = None
    max: float | None = None
    min: float | None = None
    mean: float | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Distribution:
        raw = raw or {}
        return cls(count=int(raw.get("count", 0)), p50=raw.get("p50"), p90=raw.get("p90"), p99=raw.get("p99"),
                   p999=raw.get("p99.9"), max=raw.get("max"), min=raw.get("min"), mean=raw.get("mean"))

    def ms(self, name: str) -> float | None:
        """A field in milliseconds (``p999`` for p99.9)."""
        value = getattr(self, name)
        return None if value is None else value / 1000.0


@dataclass
class LoadResult:
    ok: bool
    failure: str = ""
    target_rps: float = 0.0
    scheduled: int = 0
    sent: int = 0
    completed: int = 0                   # answered, any status
    ok_responses: int = 0                # answered with 2xx
    lost: int = 0                        # never answered: timeout, connection lost, unparseable
    errors: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0                # first due time .. last actual send, plus one interval
    sent_rps: float = 0.0                # sent / window
    achieved_rps: float = 0.0            # 2xx answers / window
    latency: Distribution = Distribution()    # due time -> last byte of the response
    service: Distribution = Distribution()    # actual send -> last byte (what a closed loop measures)
    sched_lag: Distribution = Distribution()  # when the generator noticed a request was due - its due time
    waited_for_connection: int = 0       # requests that found every connection busy
    max_queue: int = 0
    reconnects: int = 0
    command: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)   # the generator's JSON, as printed

    @property
    def failed_requests(self) -> int:
        """Requests without a good answer: never answered, or not 2xx."""
        return self.lost + self.errors.get("status", 0)

    def rate_error(self) -> float | None:
        """achieved / target - 1 (0.01 is 1% above the target)."""
        return self.achieved_rps / self.target_rps - 1 if self.target_rps else None

    def to_json(self) -> dict[str, Any]:
        return {**self.raw, "ok": self.ok, "failure": self.failure, "command": self.command}

    @classmethod
    def from_json(cls, raw: dict[str, Any], command: list[str]) -> LoadResult:
        return cls(
            ok=bool(raw["ok"]), failure=raw.get("failure", ""), target_rps=float(raw["target_rps"]),
            scheduled=raw["scheduled"], sent=raw["sent"], completed=raw["completed"],
            ok_responses=raw["ok_responses"], lost=raw["lost"],
            errors={k: int(raw["errors"].get(k, 0)) for k in ERROR_KINDS},
            window_s=raw["window_s"], sent_rps=raw["sent_rps"], achieved_rps=raw["achieved_rps"],
            latency=Distribution.from_json(raw.get("latency_us")),
            service=Distribution.from_json(raw.get("service_us")),
            sched_lag=Distribution.from_json(raw.get("sched_lag_us")),
            waited_for_connection=raw["waited_for_connection"], max_queue=raw["max_queue"],
            reconnects=raw["reconnects"], command=command, raw=raw,
        )


def command(binary: Path, url: str, params: LoadParams, *, headers: dict[str, str] | None = None,
            pin: list[str] | None = None) -> list[str]:
    argv = [*(pin or []), str(binary), f"--rate={params.rate:g}", f"--duration={params.duration_s:g}",
            f"--connections={params.connections}", f"--timeout={params.timeout_s:g}"]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    return [*argv, url]


def run(url: str, params: LoadParams, *, headers: dict[str, str] | None = None,
        pin: list[str] | None = None) -> LoadResult:
    """One load in its own (pinned) process, as the scenarios run wrk; never raises for a bad run."""
    try:
        binary = build()
    except (BuildError, OSError, subprocess.TimeoutExpired) as err:
        return LoadResult(ok=False, failure=str(err), target_rps=params.rate, scheduled=params.total)
    argv = command(binary, url, params, headers=headers, pin=pin)
    try:
        done = run_bounded(argv, timeout=params.duration_s + params.timeout_s + 20)
    except TimeoutError as err:
        return LoadResult(ok=False, failure=str(err), target_rps=params.rate, scheduled=params.total, command=argv)
    try:
        raw = json.loads(done.stdout)
        if done.returncode != 0:
            raise ValueError(f"status {done.returncode}")
        return LoadResult.from_json(raw, argv)
    except (ValueError, KeyError, TypeError) as err:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return LoadResult(ok=False, failure=f"openloop {err}: {tail[0]}", target_rps=params.rate,
                          scheduled=params.total, command=argv)


def main(argv: list[str] | None = None) -> int:
    return cbuild.build_command("openloop", "the generator's path; run it with --help", build,
                                sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())

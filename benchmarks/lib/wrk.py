"""Running wrk with fixed parameters and reading its JSON report.

wrk prints its human summary and then, from ``configs/wrk_report.lua``, one
``WRK_JSON`` line; we read only that line. A run "failed" when wrk itself
failed, or reported socket errors (connect/read/write/timeout) or error
statuses: its throughput is then not a number to compare.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.lib.procs import run_bounded

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
REPORT_SCRIPT = CONFIGS / "wrk_report.lua"
MARKER = "WRK_JSON "


@dataclass(frozen=True)
class WrkParams:
    """What every wrk run of a scenario shares; recorded in the report."""

    threads: int
    connections: int
    duration_s: float
    timeout_s: float = 2.0

    def describe(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "connections": self.connections,
            "duration_s": self.duration_s,
            "request_timeout_s": self.timeout_s,
        }


@dataclass
class WrkResult:
    ok: bool
    failure: str = ""
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failure": self.failure,
            "requests": self.requests,
            "duration_s": round(self.duration_s, 3),
            "rps": round(self.rps, 1),
            "bytes": self.bytes,
            "errors": self.errors,
            "latency_ms": self.latency_ms,
            "command": self.command,
        }


def command(
    url: str, params: WrkParams, *, headers: dict[str, str] | None = None, pin: list[str] | None = None
) -> list[str]:
    if params.duration_s < 1 or params.duration_s != int(params.duration_s):
        # wrk reads whole seconds only; "0.5s" makes it print its usage and exit.
        raise ValueError(f"wrk durations are whole seconds, got {params.duration_s:g}")
    argv = list(pin or [])
    argv += [
        "wrk",
        f"--threads={params.threads}",
        f"--connections={params.connections}",
        f"--duration={params.duration_s:g}s",
        f"--timeout={params.timeout_s:g}s",
        f"--script={REPORT_SCRIPT}",
    ]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    argv.append(url)
    return argv


def run(
    url: str, params: WrkParams, *, headers: dict[str, str] | None = None, pin: list[str] | None = None
) -> WrkResult:
    argv = command(url, params, headers=headers, pin=pin)
    # wrk stops itself after --duration; the bound only catches a wedged wrk.
    try:
        done = run_bounded(argv, timeout=params.duration_s + params.timeout_s + 15)
    except TimeoutError as err:
        return WrkResult(ok=False, failure=str(err), command=argv)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return WrkResult(ok=False, failure=f"wrk status {done.returncode}: {tail[0]}", command=argv)
    return parse(json.loads(line[len(MARKER):]), argv)


def parse(raw: dict[str, Any], argv: list[str]) -> WrkResult:
    duration_s = raw["duration_us"] / 1e6
    errors = {k: int(v) for k, v in raw["errors"].items()}
    lat = raw["latency_us"]
    latency_ms = {f"p{k}": v / 1000 for k, v in lat["percentiles"].items()}
    latency_ms.update(mean=lat["mean"] / 1000, max=lat["max"] / 1000)
    result = WrkResult(
        ok=True,
        requests=int(raw["requests"]),
        duration_s=duration_s,
        rps=raw["requests"] / duration_s if duration_s > 0 else 0.0,
        bytes=int(raw["bytes"]),
        errors=errors,
        latency_ms={k: round(v, 4) for k, v in latency_ms.items()},
        command=argv,
    )
    socket_errors = {k: v for k, v in errors.items() if k != "status" and v}
    if socket_errors:
        result.ok = False
        result.failure = "socket errors: " + ", ".join(f"{k} {v}" for k, v in socket_errors.items())
    elif errors.get("status"):
        result.ok = False
        result.failure = f"{errors['status']} responses with status >= 400"
    elif result.requests == 0:
        result.ok = False
        result.failure = "no request completed"
    return result

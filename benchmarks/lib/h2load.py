"""Running h2load (nghttp2) with fixed parameters and reading its summary.

h2load prints a human summary only; we read four lines of it: ``finished in``
(req/s), ``requests:`` (done / succeeded / failed / errored / timeout),
``status codes:`` and ``time for request:`` (min, max, mean, sd, with units).
A run fails on any failed, errored or timed-out request or any non-2xx status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from benchmarks.lib.procs import run_bounded

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class H2Result:
    ok: bool
    failure: str = ""
    rps: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "failure": self.failure, "rps": round(self.rps, 1), "counts": self.counts,
                "latency_ms": self.latency_ms, "command": self.command}


def command(url: str, *, clients: int, streams: int, duration_s: float, warmup_s: float,
            headers: dict[str, str] | None = None, pin: list[str] | None = None) -> list[str]:
    argv = list(pin or []) + [
        "h2load", "--threads=1", f"--clients={clients}", f"--max-concurrent-streams={streams}",
        # Milliseconds: h2load reads a bare number as whole seconds.
        f"--duration={duration_s * 1000:.0f}ms", f"--warm-up-time={warmup_s * 1000:.0f}ms",
    ]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    return argv + [url]


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"unexpected h2load time {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run(url: str, **kwargs: Any) -> H2Result:
    argv = command(url, **kwargs)
    try:
        done = run_bounded(argv, timeout=kwargs["duration_s"] + kwargs["warmup_s"] + 20)
    except TimeoutError as err:
        return H2Result(ok=False, failure=str(err), command=argv)
    return parse(done.stdout, done.returncode, done.stderr, argv)


def parse(out: str, returncode: int, err: str, argv: list[str]) -> H2Result:
    finished = re.search(r"^finished in [\d.]+\w+, ([\d.]+) req/s", out, re.M)
    reqs = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored, (\d+) timeout", out, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    times = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if returncode != 0 or not (finished and reqs and codes):
        tail = (err or out).strip().splitlines()[-1:] or ["no output"]
        return H2Result(ok=False, failure=f"h2load status {returncode}: {tail[0]}", command=argv)
    names = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    counts = dict(zip(names, map(int, reqs.groups())))
    counts.update(zip(("2xx", "3xx", "4xx", "5xx"), map(int, codes.groups())))
    result = H2Result(ok=True, rps=float(finished.group(1)), counts=counts, command=argv)
    if times:
        result.latency_ms = dict(zip(("min", "max", "mean", "sd"), (round(_ms(t), 4) for t in times.groups())))
    bad = {k: counts[k] for k in ("failed", "errored", "timeout", "3xx", "4xx", "5xx") if counts[k]}
    if bad:
        result.ok = False
        result.failure = "h2load: " + ", ".join(f"{v} {k}" for k, v in bad.items())
    elif counts["succeeded"] == 0:
        result.ok = False
        result.failure = "no request succeeded"
    return result

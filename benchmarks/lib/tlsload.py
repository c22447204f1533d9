"""Full TLS handshakes per second: builds and runs ``benchmarks/tlsload/handshake.c``.

The tool (C, OpenSSL, epoll) keeps a fixed number of connections busy, each
doing TCP connect, a full TLS 1.3 handshake (or, with ``resume``, one that
offers the first connection's ticket), one ``GET /``
with ``Connection: close`` and a read until the server closes; see its
header comment. It prints one JSON object, which ``parse`` turns into a
typed ``HandshakeResult``. Python's ssl module would measure itself (a few
hundred handshakes/s per core), not the server.

The binary goes to ``benchmarks/tlsload/build/`` (ignored by git), named by
a hash of the source, the compiler and the flags, so an edited source is
rebuilt. It needs a C compiler and OpenSSL's headers (Debian's
``build-essential`` and ``libssl-dev``, both in ``scripts/bootstrap.sh``).
``python -m benchmarks.lib.tlsload build`` prints the binary's path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.lib import cbuild
from benchmarks.lib.procs import run_bounded

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "benchmarks" / "tlsload" / "handshake.c"
BUILD_DIR = REPO / "benchmarks" / "tlsload" / "build"
CFLAGS = ("-O2",)
LIBS = ("-lssl", "-lcrypto")
ERROR_KINDS = ("connect", "tls", "io", "status")


BuildError = cbuild.BuildError
compiler = cbuild.compiler


def build(source: Path = SOURCE, build_dir: Path = BUILD_DIR) -> Path:
    """The tool's binary for the current source, compiled first when there is none yet."""
    return cbuild.build(compiler(), source, build_dir, "handshake", CFLAGS, LIBS,
                        what="the handshake tool", needs="Debian's build-essential and libssl-dev",
                        hint=_openssl_hint)


def _openssl_hint(stderr: str) -> str:
    return " (OpenSSL headers missing? install libssl-dev)" if "openssl/" in stderr else ""


@dataclass(frozen=True)
class HandshakeParams:
    """One run: recorded in the report as is."""

    connections: int      # connections kept busy at once
    duration_s: float
    sni: str | None = None           # the server name sent; meshproxy needs its own identity here
    host: str = "localhost"          # the request's Host header
    client_cert: Path | None = None  # a PEM with chain and key: present a client certificate
    resume: bool = False             # offer the first ticket on every later connection

    def describe(self) -> dict[str, Any]:
        return {"connections": self.connections, "duration_s": self.duration_s, "sni": self.sni or "(none)",
                "client_certificate": "yes" if self.client_cert else "no",
                "resume": "one ticket, offered by every connection" if self.resume else "never"}


@dataclass
class HandshakeResult:
    ok: bool
    failure: str = ""
    connections: int = 0
    seconds: float = 0.0
    handshakes: int = 0          # connections that completed handshake, request and a 2xx answer
    resumed: int = 0             # of the handshakes, those the server resumed
    per_second: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.raw, "ok": self.ok, "failure": self.failure, "command": self.command}


def parse(text: str, command: list[str] | None = None) -> HandshakeResult:
    """The tool's stdout -> a result; any error of any kind, or nothing done, is a failed run.

    Raises ValueError when the output is not the tool's JSON object.
    """
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        raise ValueError("no output")
    raw = json.loads(lines[-1])
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    try:
        errors = {k: int(raw["errors"].get(k, 0)) for k in ERROR_KINDS}
        result = HandshakeResult(
            ok=True, connections=int(raw["connections"]), seconds=float(raw["seconds"]),
            handshakes=int(raw["handshakes"]), per_second=float(raw["per_second"]),
            resumed=int(raw.get("resumed", 0)),
            errors=errors, command=list(command or []), raw=raw,
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"missing or malformed field: {err}") from None
    bad = {k: v for k, v in errors.items() if v}
    if bad:
        result.ok = False
        result.failure = "errors: " + ", ".join(f"{k} {v}" for k, v in bad.items())
    elif result.handshakes == 0:
        result.ok = False
        result.failure = "no handshake completed"
    return result


def command(binary: Path, host: str, port: int, params: HandshakeParams, pin: list[str] | None = None) -> list[str]:
    argv = [*(pin or []), str(binary), "-a", host, "-p", str(port), "-c", str(params.connections),
            "-d", f"{params.duration_s:g}", "-H", params.host]
    if params.sni:
        argv += ["-s", params.sni]
    if params.client_cert:
        argv += ["-cert", str(params.client_cert)]
    if params.resume:
        argv += ["-r", "1"]
    return argv


def run(host: str, port: int, params: HandshakeParams, pin: list[str] | None = None) -> HandshakeResult:
    """One run in its own (pinned) process; never raises for a bad run."""
    try:
        binary = build()
    except (BuildError, OSError, subprocess.TimeoutExpired) as err:
        return HandshakeResult(ok=False, failure=str(err))
    argv = command(binary, host, port, params, pin)
    try:
        done = run_bounded(argv, timeout=params.duration_s + 20)
    except TimeoutError as err:
        return HandshakeResult(ok=False, failure=str(err), command=argv)
    try:
        if done.returncode != 0:
            raise ValueError(f"status {done.returncode}")
        return parse(done.stdout, argv)
    except ValueError as err:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return HandshakeResult(ok=False, failure=f"handshake tool: {err}: {tail[0]}", command=argv)


def main(argv: list[str] | None = None) -> int:
    return cbuild.build_command("tlsload", "the tool's path", build, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())

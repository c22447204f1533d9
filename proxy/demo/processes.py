"""The demo's child processes (the proxies and the issuer): started with a
log file, tied to the demo's life, stopped in order.

Every child gets the parent-death signal, so a demo killed outright (SIGKILL,
a test's time-out) does not leave proxies behind; children that change their
uid through ``setpriv`` set it again after the change (the kernel clears it
when credentials change), see ``netns.proxy_prefix``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def package_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with PYTHONPATH leading to the very package this demo was
    imported from, so every child runs the same code."""
    root = str(Path(__file__).resolve().parents[2])
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return out


def meshproxy_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "proxy", *args]


def command_name() -> str:
    """How to type ``meshproxy`` for the user: the script beside this interpreter, if any."""
    script = Path(sys.executable).parent / "meshproxy"
    return str(script) if script.exists() else f"{sys.executable} -m proxy"


class Child:
    """One child process whose stdout and stderr go to ``log_path``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        # Popen from the main thread only: the death signal follows the thread that forked.
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd="/",  # readable by any uid the child may switch to
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops the children in order
                preexec_fn=_die_with_parent,
            )

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join("    " + line for line in text)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def wait(self, timeout: float) -> int | None:
        """Wait for the exit; SIGKILL after ``timeout`` seconds."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"meshproxy demo: {self.name} still running {timeout:g}s after SIGTERM; killing it",
                  file=sys.stderr)
            self.proc.kill()
            return self.proc.wait()


def stop_all(children: list[Child], timeout: float = 8.0) -> None:
    """SIGTERM every running child, then wait for each (SIGKILL past ``timeout``).
    Synchronous and idempotent, so it also runs after the event loop is gone."""
    running = [child for child in children if child.proc is not None and child.exited() is None]
    for child in running:
        child.terminate()
    for child in running:
        status = child.wait(timeout)
        if status and status != -signal.SIGTERM:
            print(f"meshproxy demo: {child.name} exited with status {status} on SIGTERM; log {child.log_path}",
                  file=sys.stderr)

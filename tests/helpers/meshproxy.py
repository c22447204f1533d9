"""Run ``meshproxy run`` as a child process for a test.

The wrapper chooses free loopback ports, starts the proxy with a clean
environment plus the test's MESHPROXY_* settings, waits (bounded) for
``/ready``, keeps every stderr/stdout line for assertions, and always kills
the process at teardown (``kill_all`` is the session-wide safety net).
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import metrics as metrics_mod
from .clients import clean_env
from .ports import free_port
from .wire import deadline_in

REPO = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "proxy", "run"]
# The installed console script, beside the interpreter running the tests.
SCRIPT = Path(sys.executable).parent / "meshproxy"
SCRIPT_COMMAND = [str(SCRIPT), "run"]
EXIT_CONFIG = 64

_running: weakref.WeakSet[MeshProxy] = weakref.WeakSet()


class ProxyFailed(AssertionError):
    """The proxy did not come up (or go down) as the test needed."""


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    return host, int(port)


class MeshProxy:
    """One proxy process. Addresses are (host, port) tuples."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        name: str = "meshproxy",
        log_path: Path | None = None,
        set_listen_env: bool = True,
        outbound: str | None = None,
        inbound: str | None = None,
        admin: str | None = None,
        tap: str | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.name = name
        self.command = list(command or COMMAND)
        self.args = list(args or [])
        self.log_path = log_path
        env = dict(env or {})
        listen = {
            "MESHPROXY_OUTBOUND_LISTEN": outbound,
            "MESHPROXY_INBOUND_LISTEN": inbound,
            "MESHPROXY_ADMIN_LISTEN": admin,
            # Every proxy its own tap port: the default (0.0.0.0:4190) is one per host.
            "MESHPROXY_TAP_LISTEN": tap,
        }
        for key, value in listen.items():
            if key in env:
                value = env[key]
            elif value is None:
                value = f"127.0.0.1:{free_port()}"
            listen[key] = value
            if set_listen_env:
                env.setdefault(key, value)
        self.outbound = split_hostport(listen["MESHPROXY_OUTBOUND_LISTEN"])
        self.inbound = split_hostport(listen["MESHPROXY_INBOUND_LISTEN"])
        self.admin = split_hostport(listen["MESHPROXY_ADMIN_LISTEN"])
        self.tap = split_hostport(listen["MESHPROXY_TAP_LISTEN"])
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._lines_changed = threading.Condition()
        self._readers: list[threading.Thread] = []
        self._log_file = None

    # -- addresses ---------------------------------------------------------------
    @property
    def outbound_hostport(self) -> str:
        return f"{self.outbound[0]}:{self.outbound[1]}"

    @property
    def inbound_hostport(self) -> str:
        return f"{self.inbound[0]}:{self.inbound[1]}"

    @property
    def tap_hostport(self) -> str:
        return f"{self.tap[0]}:{self.tap[1]}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin[0]}:{self.admin[1]}"

    @property
    def proxy_url(self) -> str:
        """For http_proxy-style clients (absolute-form requests)."""
        return f"http://{self.outbound_hostport}"

    # -- process -------------------------------------------------------------------
    def start(self, wait_ready: bool = True, timeout: float = 20.0) -> MeshProxy:
        full_env = clean_env(PYTHONUNBUFFERED="1", **self.env)
        if self.log_path is not None:
            self._log_file = open(self.log_path, "a", encoding="utf-8")
        self.proc = subprocess.Popen(
            self.command + self.args,
            cwd=REPO,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        _running.add(self)
        for pipe, lines in ((self.proc.stderr, self.stderr_lines), (self.proc.stdout, self.stdout_lines)):
            thread = threading.Thread(target=self._pump, args=(pipe, lines), name=f"{self.name}-pipe", daemon=True)
            thread.start()
            self._readers.append(thread)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def _pump(self, pipe: Any, lines: list[str]) -> None:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lines_changed:
                lines.append(line)
                self._lines_changed.notify_all()
            if self._log_file is not None:
                try:
                    self._log_file.write(line + "\n")
                    self._log_file.flush()
                except ValueError:
                    pass
        pipe.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 20.0) -> None:
        end = deadline_in(timeout)
        last = "no answer"
        while time.monotonic() < end:
            if not self.running():
                self._join_readers()
                raise ProxyFailed(
                    f"{self.name} exited with {self.returncode} before /ready;\n{self.tail()}"
                )
            try:
                status, _, body = self.admin_request("GET", "/ready", timeout=1.0)
                if status == 200:
                    return
                last = f"{status} {body[:200]!r}"
            except OSError as err:
                last = repr(err)
            time.sleep(0.05)
        raise ProxyFailed(f"{self.name} not ready within {timeout}s (last: {last});\n{self.tail()}")

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal and wait; returns the exit status. Kills and raises when the
        proxy outlives ``timeout``."""
        self.send_signal(sig)
        code = self.wait(timeout)
        if code is None:
            self.kill()
            raise ProxyFailed(f"{self.name} still running {timeout}s after signal {sig};\n{self.tail()}")
        self._join_readers()
        return code

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._join_readers()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        _running.discard(self)

    def close(self) -> None:
        """Teardown: kill if still running and print what it logged (pytest
        shows it with a failing test's output)."""
        was_running = self.running()
        self.kill()
        if was_running:
            print(f"\n{self.name} (pid {self.pid}) killed at teardown;\n{self.tail(60)}")

    def _join_readers(self) -> None:
        for thread in self._readers:
            thread.join(2)

    def __enter__(self) -> MeshProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    # -- output ----------------------------------------------------------------
    def mark(self) -> int:
        with self._lines_changed:
            return len(self.stderr_lines)

    def lines(self, since: int = 0) -> list[str]:
        with self._lines_changed:
            return list(self.stderr_lines[since:])

    def wait_line(
        self, match: str | Callable[[str], bool], since: int = 0, timeout: float = 5.0
    ) -> str | None:
        """First stderr line at or after index ``since`` that matches."""
        test = (lambda line: match in line) if isinstance(match, str) else match
        end = deadline_in(timeout)
        with self._lines_changed:
            while True:
                for line in self.stderr_lines[since:]:
                    if test(line):
                        return line
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return None
                self._lines_changed.wait(min(remaining, 0.1))

    def json_lines(self, since: int = 0) -> list[dict[str, Any]]:
        """Stderr lines parsed as JSON objects (raises on a non-JSON line)."""
        out = []
        for line in self.lines(since):
            if line.strip():
                value = json.loads(line)
                if not isinstance(value, dict):
                    raise ValueError(f"log line is JSON but not an object: {line!r}")
                out.append(value)
        return out

    def tail(self, count: int = 40) -> str:
        with self._lines_changed:
            err = self.stderr_lines[-count:]
            out = self.stdout_lines[-10:]
        text = "--- stderr ---\n" + "\n".join(err)
        if out:
            text += "\n--- stdout ---\n" + "\n".join(out)
        return text

    # -- admin -------------------------------------------------------------------
    def admin_request(
        self, method: str, path: str, body: bytes | None = None, timeout: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.admin[0], self.admin[1], timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def metrics(self) -> metrics_mod.Metrics:
        status, _, body = self.admin_request("GET", "/metrics")
        if status != 200:
            raise ProxyFailed(f"/metrics answered {status}: {body[:200]!r}")
        return metrics_mod.parse(body.decode())


def proxy_to(tmp_path_factory: Any, name: str, target: str, **env: str) -> MeshProxy:
    """A started proxy whose inbound side sends everything to ``target`` (its log in a temporary directory)."""
    mp = MeshProxy(env={"MESHPROXY_INBOUND_DEFAULT_TARGET": target, **env}, name=name,
                   log_path=tmp_path_factory.mktemp(name) / "stderr.log")
    mp.start()
    return mp


def run_once(
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
    command: list[str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``meshproxy run ARGS`` expecting it to exit by itself (bad config)."""
    proc = subprocess.Popen(
        list(command or COMMAND) + list(args or []),
        cwd=REPO,
        env=clean_env(PYTHONUNBUFFERED="1", **(env or {})),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        raise ProxyFailed(
            f"meshproxy did not exit within {timeout}s; stderr:\n{err.decode(errors='replace')}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_all() -> None:
    """Kill every proxy this test process started and has not reaped."""
    for proxy in list(_running):
        proxy.kill()

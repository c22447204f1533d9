"""Starting, watching and always stopping the processes a benchmark needs.

Every server is started through one ``ProcessGroup`` in its own session (so a
Ctrl-C in the terminal reaches only the runner, which then stops them in
order) and with a parent-death signal (so even a SIGKILLed runner leaves no
orphan behind). Ports are free loopback ports picked at run time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_SETPRIV = shutil.which("setpriv")


def _die_with_parent(argv: Sequence[str]) -> list[str]:
    """Prefix ``argv`` so the process gets SIGKILL when the runner dies.

    util-linux ``setpriv`` sets the parent-death signal and execs, so the pid
    stays the command's own (a ``preexec_fn`` would do the same but is unsafe
    while the runner has sampler threads).
    """
    if _SETPRIV is None:
        return list(argv)
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports; the sockets are held until all are picked."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Managed:
    """One started process: its name, its command and where its output goes."""

    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def exit_text(self) -> str:
        code = self.popen.poll()
        if code is None:
            return "running"
        if code < 0:
            return f"killed by signal {-code}"
        if code == 0:
            # Servers do not exit on their own: status 0 is a graceful stop,
            # i.e. someone else sent SIGTERM/SIGINT.
            return "exited with status 0 (graceful stop: SIGTERM/SIGINT from outside?)"
        return f"exited with status {code}"

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


class ProcessGroup:
    """Owns every process a run starts; ``close()`` stops them all (idempotent)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Managed] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Managed:
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")
        try:
            popen = subprocess.Popen(
                _die_with_parent(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            log.close()
        proc = Managed(name, list(argv), popen, log_path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Managed, grace: float = 3.0) -> None:
        """SIGTERM the process's group (nginx workers included), then SIGKILL."""
        if proc.popen.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # The group may outlive its leader (workers); make sure it is gone.
        _signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _signal_group(pgid: int, sig: int) -> None:
    # Each managed process leads its own session/group, whose id is its pid.
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_bounded(argv: Sequence[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run a short-lived tool (wrk, version probes); killed if it overruns."""
    with subprocess.Popen(
        _die_with_parent(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    ) as popen:
        try:
            out, err = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(popen.pid, signal.SIGKILL)
            out, err = popen.communicate()
            raise TimeoutError(f"{argv[0]} overran its {timeout:.0f} s bound") from None
        except BaseException:
            _signal_group(popen.pid, signal.SIGKILL)
            popen.wait()
            raise
        return subprocess.CompletedProcess(popen.args, popen.returncode, out, err)


class NotReady(RuntimeError):
    """A server did not become ready in time, or died while starting."""


def wait_tcp(proc: Managed, host: str, port: int, timeout: float = 10.0) -> None:
    """Until ``host:port`` accepts a connection; raise NotReady if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise NotReady(f"{proc.name} {proc.exit_text()} while starting")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise NotReady(f"{proc.name} not listening on {host}:{port} after {timeout:.0f} s")
        time.sleep(0.05)


def wait_http_ok(proc: Managed, url: str, timeout: float = 15.0) -> None:
    """Until ``GET url`` answers 200; raise NotReady if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        if not proc.alive():
            raise NotReady(f"{proc.name} {proc.exit_text()} while starting")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}"
        except (OSError, ValueError) as err:
            last = type(err).__name__
        if time.monotonic() > deadline:
            raise NotReady(f"{proc.name}: {url} not 200 after {timeout:.0f} s (last: {last})")
        time.sleep(0.1)


# ---- /proc readings ------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name.
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a proxy might fork workers)."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, ()))
    return out


def _status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib(pid: int, tree: bool = True) -> int | None:
    """Resident set size (VmRSS) of ``pid``, summed over its descendants by default."""
    pids = process_tree(pid) if tree else [pid]
    values = [_status_kib(p, "VmRSS") for p in pids]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def hwm_kib(pid: int) -> int | None:
    """Peak resident set size (VmHWM) of ``pid`` itself."""
    return _status_kib(pid, "VmHWM")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tree: bool = True) -> float | None:
    """User + system CPU time consumed so far by ``pid`` (and its descendants)."""
    total, seen = 0, False
    for p in process_tree(pid) if tree else [pid]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # After the name: state(0) ppid(1) ... utime(11) stime(12)
        total += int(fields[11]) + int(fields[12])
        seen = True
    return total / _CLK_TCK if seen else None


def cpu_jiffies() -> dict[int, tuple[int, int]]:
    """Per CPU: (busy, total) jiffies since boot, from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        nums = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        idle = nums[3] + nums[4]
        out[int(name[3:])] = (sum(nums) - idle, sum(nums))
    return out


Jiffies = dict[int, tuple[int, int]]


def cpu_busy_percent(before: Jiffies, after: Jiffies, cpus: list[int]) -> float | None:
    """Average busy share of ``cpus`` between two ``cpu_jiffies()`` readings."""
    busy = sum(after[c][0] - before[c][0] for c in cpus if c in after and c in before)
    total = sum(after[c][1] - before[c][1] for c in cpus if c in after and c in before)
    return 100.0 * busy / total if total > 0 else None


def parse_cpu_list(text: str | None) -> list[int]:
    """``"0,2-3"`` -> [0, 2, 3] (taskset's list syntax)."""
    cpus: list[int] = []
    for part in (text or "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def background_busy(seconds: float = 1.0) -> dict[int, float]:
    """Per-CPU busy percent over ``seconds``: how loaded the machine is before we start."""
    before = cpu_jiffies()
    time.sleep(seconds)
    after = cpu_jiffies()
    return {cpu: cpu_busy_percent(before, after, [cpu]) or 0.0 for cpu in after}

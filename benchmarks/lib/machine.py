"""Facts about the machine and the tools, recorded beside every result.

A number without the machine it came from cannot be compared later, so the
report carries CPU, kernel, library and tool versions, and the load average
when the run began.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import ssl
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path


def _first_line(argv: list[str]) -> str:
    """A tool's version banner (some print it to stderr), or why it is missing."""
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unknown ({type(err).__name__})"
    text = (done.stdout or "") + (done.stderr or "")
    return text.strip().splitlines()[0].strip() if text.strip() else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    return "unknown"


def _hypervisor() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    if re.search(r"^flags\s*:.*\bhypervisor\b", flags, re.M):
        return "virtual machine"
    return "bare metal (no hypervisor flag)"


def _governor() -> str:
    path = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    try:
        return path.read_text().strip()
    except OSError:
        return "n/a"


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_revision(repo: Path) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
        rev = done.stdout.strip() if done.returncode == 0 else "no commit"
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain"],
            capture_output=True, text=True, timeout=5,
        )
        if dirty.stdout.strip():
            rev += " (uncommitted changes)"
        return rev
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def collect(repo: Path) -> dict[str, str]:
    """Everything the report's 'Machine' section prints, as strings."""
    load1, load5, _ = os.getloadavg()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": platform.node(),
        "cpu_model": _cpu_model(),
        "cpus_online": str(os.cpu_count()),
        "cpus_usable": ",".join(str(c) for c in sorted(os.sched_getaffinity(0))),
        "virtualization": _hypervisor(),
        "cpu_governor": _governor(),
        "memory": _mem_total(),
        "kernel": f"{platform.system()} {platform.release()}",
        "load_average_at_start": f"{load1:.2f} (1 min), {load5:.2f} (5 min)",
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "openssl_python": ssl.OPENSSL_VERSION,
        "openssl_cli": _first_line(["openssl", "version"]),
        "uvloop": _package_version("uvloop"),
        "cython": _package_version("Cython"),
        "prometheus_client": _package_version("prometheus_client"),
        "nginx": _first_line(["nginx", "-v"]),
        "haproxy": _first_line(["haproxy", "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "h2load": _first_line(["h2load", "--version"]),
        "grpcio": _package_version("grpcio"),
        "meshproxy_revision": _git_revision(repo),
    }

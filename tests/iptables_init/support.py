"""Helpers for the meshproxy-init tests: the package importable, network namespaces, running the command.

Everything that touches iptables happens inside namespaces the fixtures in
conftest.py create and delete; the host's own tables are never read or
changed. Tests that need root say so with ``needs_root`` (CI runs as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

INIT_DIR = Path(__file__).resolve().parents[2] / "iptables-init"
TOOL = INIT_DIR / "meshproxy-init"
if str(INIT_DIR) not in sys.path:
    sys.path.insert(0, str(INIT_DIR))

# Debian's own interpreter when there is one: the closest thing here to the
# init container's python3-minimal, and runnable by any uid.
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
ENV = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:{SBIN}"}
NOBODY = 65534


def have(command: str) -> bool:
    return shutil.which(command, path=ENV["PATH"]) is not None


BACKENDS = [b for b in ("nft", "legacy")
            if all(have(f"{t}-{b}{s}") for t in ("iptables", "ip6tables") for s in ("", "-save", "-restore"))]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not have("ip") or not have("setpriv") or not BACKENDS,
    reason="needs root, iproute2, setpriv and iptables (CI runs as root with all of them)",
)


def without_comments(save_output: str) -> str:
    """iptables-save output minus its timestamped '#' lines."""
    return "\n".join(line for line in save_output.splitlines() if not line.startswith("#"))


def rule_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("-A ")]


def sections(output: str) -> dict[str, str]:
    """meshproxy-init's stdout split by family: {"ipv4": "*nat ... COMMIT", ...}."""
    found: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("# ipv4 ") or line.startswith("# ipv6 "):
            current = line[2:6]
            found[current] = []
        elif current and line.strip() and not line.startswith("#"):
            found[current].append(line)
    return {family: "\n".join(lines) for family, lines in found.items()}


def user_prefix(uid: int | None, *extra: str) -> list[str]:
    if uid is None:
        return list(extra)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", *extra]


class Netns:
    """One network namespace, with lo up; every command runs inside it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *cmd: str, check: bool = True, input: str | None = None,
            timeout: float = 20) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ip", "netns", "exec", self.name, *cmd], input=input, capture_output=True,
                              text=True, env=ENV, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr}{proc.stdout}")
        return proc

    def tool(self, *args: str, prefix: tuple[str, ...] = (), tool: Path = TOOL) -> subprocess.CompletedProcess:
        return self.run(*prefix, PYTHON, str(tool), *args, check=False)

    def apply(self, *args: str) -> subprocess.CompletedProcess:
        proc = self.tool(*args)
        assert proc.returncode == 0, proc.stderr
        return proc

    def iptables(self, backend: str, *args: str, family: str = "ipv4") -> None:
        self.run(f"{'ip6tables' if family == 'ipv6' else 'iptables'}-{backend}", "-w", "5", *args)

    def save(self, backend: str, family: str = "ipv4") -> str:
        binary = f"{'ip6tables' if family == 'ipv6' else 'iptables'}-{backend}-save"
        return without_comments(self.run(binary, "-t", "nat").stdout)



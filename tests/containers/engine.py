"""A Docker engine for the container tests: the one already running, or a
``dockerd`` of our own that leaves nothing behind.

Our own engine keeps everything in one temporary directory (data root, exec
root, socket, pid file, log) and is reached through ``DOCKER_HOST``. It does
not touch the host's firewall (``--iptables=false``) nor make the default
bridge (``--bridge=none``): the only container addresses are those of the
networks a test creates, published ports go through Docker's userland proxy,
and image builds run with ``--network=none``. Stopping it unmounts whatever
it left mounted, deletes the links it made and removes the directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# A shell line for the init image: the nat table as iptables-save prints it,
# from the backend meshproxy-init used (nft where it holds our chains, else legacy).
SAVE_NAT = ('nat="$(iptables-nft-save -t nat 2>/dev/null)"; case "$nat" in *MESHPROXY*) echo "$nat" ;; '
            '*) iptables-legacy-save -t nat 2>/dev/null ;; esac; true')
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class EngineUnavailable(Exception):
    """dockerd is installed but cannot run here (the reason is the message)."""


def docker_client() -> str:
    """A docker client that builds with BuildKit: one with the buildx plugin, or
    one older than 23.0 (Debian 12's docker.io), which does it itself."""
    candidates = [c for c in (os.environ.get("DOCKER"), shutil.which("docker"), "/usr/bin/docker") if c]
    for candidate in candidates:
        if not os.access(candidate, os.X_OK):
            continue
        if subprocess.run([candidate, "buildx", "version"], capture_output=True).returncode == 0:
            return candidate
        version = subprocess.run([candidate, "version", "--format", "{{.Client.Version}}"],
                                 capture_output=True, text=True)
        major = version.stdout.strip().split(".")[0]
        if major.isdigit() and int(major) < 23:
            return candidate
    raise FileNotFoundError("no docker client that builds with BuildKit (Debian package docker.io)")


def _answers(client: str, env: dict[str, str]) -> bool:
    result = subprocess.run([client, "version", "--format", "{{.Server.Version}}"],
                            capture_output=True, text=True, env=env, timeout=20)
    return result.returncode == 0


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


@dataclass
class Engine:
    """How to reach the engine (``env`` holds DOCKER_HOST) and, when it is ours, how to stop it."""

    client: str
    env: dict[str, str]
    own: bool
    directory: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    links_before: set[str] = field(default_factory=set)

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.client, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def log_tail(self, lines: int = 30) -> str:
        if self.directory is None:
            return ""
        log = self.directory / "dockerd.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def stop(self) -> None:
        if not self.own:
            return
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if self.directory is None:
            return
        # Mounts under our directory (overlay layers, network namespaces), deepest first.
        prefix = str(self.directory)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        # Links the engine made and did not delete (bridges and veths of networks).
        for link in _links() - self.links_before:
            if link.startswith(("br-", "veth", "docker")):
                subprocess.run(["ip", "link", "delete", link], capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def start() -> Engine:
    """The running engine if DOCKER_HOST or the default socket answers, else our own dockerd.

    Raises EngineUnavailable when dockerd cannot run here, FileNotFoundError
    when it is not installed.
    """
    client = docker_client()
    env = dict(os.environ)
    if _answers(client, env):
        return Engine(client, env, own=False)
    dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin:/sbin")
    if dockerd is None:
        raise FileNotFoundError("dockerd is not installed (Debian package docker.io)")
    if os.geteuid() != 0:
        raise EngineUnavailable("dockerd needs root, and no Docker engine is running")
    # Short: the socket path must fit a unix socket address.
    directory = Path(tempfile.mkdtemp(prefix="mpdocker-", dir="/tmp"))
    (directory / "daemon.json").write_text(json.dumps({}))
    socket = directory / "docker.sock"
    env["DOCKER_HOST"] = f"unix://{socket}"
    engine = Engine(client, env, own=True, directory=directory, links_before=_links())
    command = [
        dockerd,
        "--config-file", str(directory / "daemon.json"),  # not the host's /etc/docker/daemon.json
        "--data-root", str(directory / "data"),
        "--exec-root", str(directory / "exec"),
        "--pidfile", str(directory / "dockerd.pid"),
        "--host", f"unix://{socket}",
        "--iptables=false", "--ip-forward=false", "--ip-masq=false",
        "--bridge=none",
    ]
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    with open(directory / "dockerd.log", "wb") as log:
        engine.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, env={**os.environ, "PATH": path})
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if engine.process.poll() is not None:
            tail = engine.log_tail()
            engine.stop()
            raise EngineUnavailable(f"dockerd exited {engine.process.returncode} at start:\n{tail}")
        if socket.exists() and _answers(client, env):
            return engine
        time.sleep(0.3)
    tail = engine.log_tail()
    engine.stop()
    raise EngineUnavailable(f"dockerd did not answer within {START_TIMEOUT:.0f}s:\n{tail}")

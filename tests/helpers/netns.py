"""A network namespace a test creates, with real iptables, that the test process can step into.

``NetNs`` makes a namespace (loopback up, nothing else), applies nat rules
in it and deletes it at the end. ``with ns:`` moves the *calling thread*
into the namespace (setns(2) is per thread) and back out: a socket, a
listening server or a child process made inside stays in the namespace
for its whole life, whichever thread uses it later. So a test writes its
clients and servers as usual and wraps their creation in ``with ns:``.
``NsMeshProxy`` is the proxy process run inside the namespace under the
group id that the nat rules exempt (as iptables-init exempts the proxy's
uid), so its own connections are never redirected back into it.

gRPC's C core connects from threads of its own, which are not ours to move:
a gRPC client must run in a child process started inside the namespace.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterable
from typing import Any

from .meshproxy import COMMAND, MeshProxy

CLONE_NEWNET = 0x40000000
PROXY_GID = 2102
SBIN_PATH = f"{os.environ.get('PATH', '')}:/usr/local/sbin:/usr/sbin:/sbin"

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def require_root_tools(*tools: str) -> None:
    """Fail (never skip) when the namespace tests cannot run: CI runs as root with these installed."""
    if os.geteuid() != 0:
        raise AssertionError("these tests create network namespaces and iptables rules: they need root (CI is root)")
    missing = [tool for tool in ("ip", "iptables", "setpriv", *tools) if shutil.which(tool, path=SBIN_PATH) is None]
    if missing:
        raise AssertionError(f"missing tools {missing}: scripts/bootstrap.sh --test installs them")


class NetNs:
    def __init__(self, prefix: str = "mpm") -> None:
        require_root_tools()
        self.name = f"{prefix}-{os.getpid()}"
        self._fd: int | None = None
        self._saved: list[int] = []

    def create(self) -> NetNs:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False, env=_env())
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, env=_env())
        self._fd = os.open(f"/var/run/netns/{self.name}", os.O_RDONLY)
        self.run("ip", "link", "set", "lo", "up")
        return self

    # -- stepping in and out (this thread only) -------------------------------------
    def __enter__(self) -> NetNs:
        assert self._fd is not None, "namespace not created"
        saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(self._fd)
        except BaseException:
            os.close(saved)
            raise
        self._saved.append(saved)
        return self

    def __exit__(self, *exc: Any) -> None:
        saved = self._saved.pop()
        try:
            _setns(saved)
        finally:
            os.close(saved)

    # -- commands inside ----------------------------------------------------------------
    def run(self, *cmd: str, timeout: float = 30.0, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True,
                              timeout=timeout, check=check, env=kwargs.pop("env", _env()), **kwargs)

    def nat(self, rules: Iterable[list[str]]) -> None:
        """Append nat OUTPUT rules (each a list of iptables arguments after ``-A OUTPUT``)."""
        for rule in rules:
            self.run("iptables", "-t", "nat", "-A", "OUTPUT", *rule)

    def exempt_proxies(self) -> None:
        """The proxies' own connections (their group) go where they were addressed."""
        self.nat([["-p", "tcp", "-m", "owner", "--gid-owner", str(PROXY_GID), "-j", "RETURN"]])

    def redirect(self, dest_ip: str, to_port: int, dport: int | None = None) -> None:
        rule = ["-p", "tcp", "-d", dest_ip]
        if dport is not None:
            rule += ["--dport", str(dport)]
        self.nat([rule + ["-j", "REDIRECT", "--to-ports", str(to_port)]])

    def delete(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False, env=_env())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = SBIN_PATH
    return env


class NsMeshProxy(MeshProxy):
    """``meshproxy run`` inside ``ns``, under the exempted group; admin calls go into the namespace too."""

    def __init__(self, ns: NetNs, **kwargs: Any) -> None:
        command = ["setpriv", f"--regid={PROXY_GID}", "--clear-groups", *COMMAND]
        super().__init__(command=command, **kwargs)
        self.ns = ns

    def start(self, wait_ready: bool = True, timeout: float = 20.0) -> NsMeshProxy:
        with self.ns:
            super().start(wait_ready=wait_ready, timeout=timeout)
        return self

    def admin_request(self, *args: Any, **kwargs: Any):
        with self.ns:
            return super().admin_request(*args, **kwargs)

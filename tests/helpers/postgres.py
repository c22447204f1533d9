"""A throwaway PostgreSQL server (initdb in a temporary directory, trust auth, no fsync) for psql through the proxy.

PostgreSQL refuses to run as root, so the cluster belongs to the ``postgres``
user. Start it inside a network namespace by creating it within ``with ns:``.
The binaries come from Debian's ``postgresql`` package (scripts/bootstrap.sh
installs it with the test tools); a missing binary fails the test.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .clients import clean_env


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise AssertionError("PostgreSQL server binaries missing: scripts/bootstrap.sh --test installs postgresql")
    return Path(found[-1]).parent


def psql_path() -> str:
    path = shutil.which("psql")
    if path is None:
        raise AssertionError("psql missing: scripts/bootstrap.sh --test installs postgresql")
    return path


class Postgres:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.bin = _bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="mp-pg-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.sock = self.dir / "sock"
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "postgres.log"

    def _as_postgres(self, *cmd: str) -> list[str]:
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", *cmd]

    def start(self, timeout: float = 60.0) -> Postgres:
        self.sock.mkdir()
        shutil.chown(self.dir, "postgres", "postgres")
        shutil.chown(self.sock, "postgres", "postgres")
        subprocess.run(self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                                         "--auth=trust", "-N", "-E", "UTF8", "--locale=C"),
                       check=True, capture_output=True, timeout=timeout, env=clean_env(), cwd=self.dir)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self._as_postgres(str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                                  "-k", str(self.sock), "-c", f"listen_addresses={self.host}", "-c", "fsync=off",
                                  "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                                  "-c", "shared_buffers=16MB", "-c", "max_connections=40"),
                stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=self.dir, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            ready = subprocess.run([str(self.bin / "pg_isready"), "-h", self.host, "-p", str(self.port), "-q"],
                                   capture_output=True, env=clean_env())
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"postgres not ready within {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # smart shutdown; fast enough with no clients
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def psql_command(host: str, port: int, *args: str) -> list[str]:
    """psql as a client that knows nothing of the proxy: no ~/.psqlrc, stop at the first error."""
    return [psql_path(), "-X", "-q", "-h", host, "-p", str(port), "-U", "postgres", "-d", "postgres",
            "-v", "ON_ERROR_STOP=1", "--no-password", *args]

"""A throwaway nginx: config, files, pid and logs all in one temp directory.

One worker, loopback only, ``daemon off`` so the test owns the process.
Serves /static/hello.txt, /static/large.bin (multi-MB, deterministic),
``return 200`` endpoints under /ok and /status/*, and logs the connection
serial number and per-connection request count of every request so a test
can see how many upstream connections the proxy used.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from .clients import clean_env
from .ports import free_port
from .servers import det_bytes
from .wire import deadline_in

LARGE_SIZE = 12 * 1024 * 1024 + 321

CONFIG = """\
user root;
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    log_format conns '$connection $connection_requests $request_method $request_uri $status $body_bytes_sent';
    access_log {dir}/access.log conns;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    keepalive_timeout 60s;
    keepalive_requests 100000;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {dir}/www;
        location = /ok {{ return 200 "ok\\n"; }}
        location = /status/503 {{ return 503 "unavailable\\n"; }}
        location = /status/404 {{ return 404 "missing\\n"; }}
        location /static/ {{ }}
    }}
}}
"""


class Nginx:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        www = self.dir / "www" / "static"
        www.mkdir(parents=True, exist_ok=True)
        self.hello = b"hello from nginx\n"
        (www / "hello.txt").write_bytes(self.hello)
        self.large = det_bytes(LARGE_SIZE, 42)
        self.large_sha256 = hashlib.sha256(self.large).hexdigest()
        (www / "large.bin").write_bytes(self.large)
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(CONFIG.format(dir=self.dir, port=self.port))

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Nginx:
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(self.conf)],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        end = deadline_in(timeout)
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise RuntimeError(f"nginx exited {self.proc.returncode}: {out}\n{self.error_log()}")
            try:
                socket.create_connection(self.address, timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen within {timeout}s\n{self.error_log()}")

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_entries(self) -> list[list[str]]:
        """One list per logged request: connection serial, request number on
        that connection, method, uri, status, body bytes."""
        path = self.dir / "access.log"
        if not path.exists():
            return []
        return [line.split() for line in path.read_text().splitlines() if line.strip()]

    def wait_access_entries(self, count: int, timeout: float = 5.0) -> list[list[str]]:
        end = deadline_in(timeout)
        while True:
            entries = self.access_entries()
            if len(entries) >= count or time.monotonic() > end:
                return entries
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the master by pid (it stops its worker first); if it
        lingers, kill the process group it leads (master and worker only:
        it was started in a session of its own)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None


class NginxH2c(Nginx):
    """The same nginx with its listener speaking HTTP/2 in cleartext (h2c,
    prior knowledge only: an HTTP/1 request to it fails)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        plain = f"listen 127.0.0.1:{self.port};"
        text = self.conf.read_text()
        assert text.count(plain) == 1, "the nginx template's listen line changed"
        self.conf.write_text(text.replace(plain, f"listen 127.0.0.1:{self.port} http2;"))

"""The world of tests/integration/test_real_clients.py: one network namespace with the real apps (Node,
Go, Python's http.server, gunicorn, uvicorn, nginx, caddy) and three proxies, a client reaching each app
through a hop by dialing ``HOP_IPS[hop]:app port`` (iptables sends it to the hop's proxy).

The apps serve the routes of app.js beside this file; a tool that is missing is an AssertionError naming
the install step (a failure, never a skip).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers.clients import clean_env
from helpers.issuer import Issuer, identity_name
from helpers.netns import NetNs, NsMeshProxy
from helpers.ports import free_port

from .pyapps import pattern

LARGE = (4 << 20) + 17  # over 1 MiB: curl asks `Expect: 100-continue` on its own
STEP_TIMEOUT = 60.0
HOPS = ("out", "in", "mtls")
HOP_IPS = {"in": "127.0.0.2", "out": "127.0.0.3", "mtls": "127.0.0.5"}
WEB = identity_name("web")
API = identity_name("api")
APPS_DIR = Path(__file__).resolve().parent
REPO = Path(__file__).resolve().parents[3]
NODE_MODULES = REPO / ".test-node" / "node_modules"  # scripts/bootstrap.sh --test: npm install --prefix .test-node
INSTALL_HINT = "scripts/bootstrap.sh --test installs it"


def sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


BLOB = pattern(LARGE)
BLOB_SHA = sha(BLOB)
UPLOAD_ANSWER = f"{BLOB_SHA} {LARGE}"


def require_tool(name: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        raise AssertionError(f"{name} is not installed: {INSTALL_HINT}")
    return path


def _wait_listening(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited {proc.returncode} before listening: {_output(proc)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{name} did not listen on {port} within {timeout}s")


def _output(proc: subprocess.Popen[bytes]) -> str:
    try:
        out, _ = proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        return "(still running)"
    return (out or b"").decode(errors="replace")[-2000:]


class AppProc:
    """One app process, started inside the namespace (the calling thread must be in it)."""

    def __init__(self, name: str, cmd: list[str], port: int, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = port
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=clean_env(**(env or {})), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_listening(port, self.proc, name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)


NGINX_CONF = """\
user root;
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000;
    server {{
        listen 0.0.0.0:{port};
        root {dir}/www;
        client_max_body_size 0;
        gzip on;
        gzip_min_length 10;
        gzip_types text/plain;
        location = /small {{ default_type text/plain; }}
        location = /download {{ default_type application/octet-stream; }}
        location = /text {{ default_type text/plain; }}
        location /upload {{ dav_methods PUT; create_full_put_path on; alias {dir}/uploads; }}
    }}
}}
"""

CADDYFILE = """\
{{
    admin off
    auto_https off
}}
:{port} {{
    root * {dir}/www
    handle /upload {{
        reverse_proxy 127.0.0.1:{upload_port}
    }}
    handle {{
        file_server
    }}
}}
"""


def _www(directory: Path) -> Path:
    www = directory / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "small").write_bytes(b"ok")
    (www / "download").write_bytes(BLOB)
    (www / "text").write_bytes(b"compressible text, " * 4000)
    return www


def _go_build(tmp: Path) -> dict[str, str]:
    """Go's app and client, built from tests/helpers/realapps/go with Debian's golang.org/x/net (GOPATH mode)."""
    require_tool("go")
    gopath = Path("/usr/share/gocode")
    if not (gopath / "src/golang.org/x/net/http2/h2c").is_dir():
        raise AssertionError(f"golang.org/x/net (Debian's golang-golang-x-net-dev) is missing: {INSTALL_HINT}")
    # Go's own build cache (under HOME) keeps later runs to about a second; a fresh one takes 6 s a binary.
    env = clean_env(GOPATH=str(gopath), GO111MODULE="off", GOFLAGS="")
    built = {}
    for name in ("app", "client"):
        out = tmp / f"go-{name}"
        done = subprocess.run(["go", "build", "-o", str(out), "."], cwd=APPS_DIR / "go" / name, env=env,
                              capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, f"go build {name}: {done.stderr}"
        built[name] = str(out)
    return built


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ns = NetNs("mprc").create()
        self.apps: dict[str, AppProc] = {}
        self.proxies: dict[str, NsMeshProxy] = {}
        self.issuer: Issuer | None = None
        self.go: dict[str, str] = {}

    def start(self) -> None:
        for tool in ("node", "curl", "wget", "nginx", "caddy"):
            require_tool(tool)
        missing = [name for name in ("gunicorn", "uvicorn", "httpx", "h2", "aiohttp", "urllib3", "requests")
                   if importlib.util.find_spec(name) is None]
        assert not missing, f"Python packages {missing} are missing: {INSTALL_HINT} (the test extra)"
        if not (NODE_MODULES / "ws").is_dir():
            raise AssertionError(f"the npm package ws is missing from {NODE_MODULES}: {INSTALL_HINT}")
        self.go = _go_build(self.tmp)
        node_env = {"NODE_PATH": str(NODE_MODULES)}
        py = sys.executable
        with self.ns:
            self.issuer = Issuer(self.tmp / "issuer", [WEB, API]).start()
            apps: list[tuple[str, list[str], dict[str, Any]]] = [
                ("node-h1", ["node", "app.js", "h1"], {"env": node_env}),
                ("node-h2c", ["node", "app.js", "h2c"], {"env": node_env}),
                ("python-http10", [py, "pyapps.py", "http10"], {}),
                ("go-h1", [self.go["app"], "h1"], {}),
                ("go-h2c", [self.go["app"], "h2c"], {}),
            ]
            for name, cmd, kwargs in apps:
                port = free_port()
                self.apps[name] = AppProc(name, [*cmd, str(port)], port, cwd=APPS_DIR, **kwargs)
            port = free_port()
            self.apps["gunicorn"] = AppProc("gunicorn", [
                str(Path(py).parent / "gunicorn"), "-b", f"0.0.0.0:{port}", "-w", "1", "--chdir", str(APPS_DIR),
                "--keep-alive", "30", "pyapps:wsgi"], port)
            port = free_port()
            self.apps["uvicorn"] = AppProc("uvicorn", [
                py, "-m", "uvicorn", "--app-dir", str(APPS_DIR), "--host", "0.0.0.0", "--port", str(port),
                "--log-level", "warning", "pyapps:asgi"], port)
            self._nginx()
            self._caddy()
            self._proxies()

    def _nginx(self) -> None:
        directory = self.tmp / "nginx"
        _www(directory)
        (directory / "uploads").mkdir()
        port = free_port()
        (directory / "nginx.conf").write_text(NGINX_CONF.format(dir=directory, port=port))
        self.apps["nginx"] = AppProc("nginx", ["nginx", "-p", str(directory), "-c", str(directory / "nginx.conf")],
                                     port)
        self.nginx_uploads = directory / "uploads"

    def _caddy(self) -> None:
        directory = self.tmp / "caddy"
        _www(directory)
        port = free_port()
        conf = directory / "Caddyfile"
        conf.write_text(CADDYFILE.format(dir=directory, port=port, upload_port=self.apps["gunicorn"].port))
        self.apps["caddy"] = AppProc("caddy", ["caddy", "run", "--adapter", "caddyfile", "--config", str(conf)],
                                     port, env={"HOME": str(directory), "XDG_DATA_HOME": str(directory)})

    def _proxies(self) -> None:
        assert self.issuer is not None
        b = NsMeshProxy(self.ns, env=self.issuer.env(API), name="B", log_path=self.tmp / "b.log")
        lines = ["services:"]
        for name, app in self.apps.items():
            lines += [
                f"  {name}.mesh:{app.port}:",
                f"    addresses: [{HOP_IPS['mtls']}:{app.port}]",
                "    endpoints:",
                f"      - address: 127.0.0.1:{app.port}",
                f"        proxy: {b.inbound_hostport}",
                f"        identity: {API}",
            ]
        (self.tmp / "mtls.yaml").write_text("\n".join(lines) + "\n")
        p1 = NsMeshProxy(self.ns, name="P1", log_path=self.tmp / "p1.log")
        a_env = {**self.issuer.env(WEB), "MESHPROXY_DESTINATION": f"file://{self.tmp / 'mtls.yaml'}"}
        a = NsMeshProxy(self.ns, env=a_env, name="A", log_path=self.tmp / "a.log")
        self.proxies = {"P1": p1, "A": a, "B": b}
        for mp in self.proxies.values():
            mp.start(wait_ready=False)
        for mp in self.proxies.values():
            mp.wait_ready(30)
        self.ns.exempt_proxies()
        self.ns.redirect(HOP_IPS["in"], p1.inbound[1])
        self.ns.redirect(HOP_IPS["out"], p1.outbound[1])
        self.ns.redirect(HOP_IPS["mtls"], a.outbound[1])

    def base(self, app: str, hop: str) -> str:
        return f"http://{HOP_IPS[hop]}:{self.apps[app].port}"

    def accepted(self, hop: str) -> float:
        """Client connections the proxy that a client of ``hop`` reaches has accepted so far."""
        if hop == "in":
            return self.proxies["P1"].metrics().get("tcp_open_total", direction="inbound", peer="src")
        return self.proxies["P1" if hop == "out" else "A"].metrics().get(
            "tcp_open_total", direction="outbound", peer="src")

    def stop(self) -> None:
        for stop in [*(mp.close for mp in self.proxies.values()), *(a.stop for a in self.apps.values()),
                     getattr(self.issuer, "stop", None)]:
            if stop is None:
                continue
            try:
                stop()
            except Exception as err:  # keep tearing down; the namespace goes last
                print(f"teardown: {err!r}")
        self.ns.delete()

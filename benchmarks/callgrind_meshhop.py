"""Instructions (or system calls) per request of the meshed hop's two proxies, counted apart from load noise.

``.venv/bin/python benchmarks/callgrind_meshhop.py --repo DIR [--requests N] [--connections C]
[--plain] [--keep] [--strace]``

The ``meshhop`` scenario's pair, from checkout DIR: proxy A's outbound
listener finds its one endpoint (nginx, 64-byte answers) behind proxy B's
inbound listener, and reaches B over HTTP/2 inside mutual TLS 1.3 with
identities from one throwaway issuer (``lib/meshtls.py``, as the scenario
makes them). Both proxies run under ``valgrind --tool=callgrind`` with
instrumentation off; after a warm-up both are turned on for N keep-alive
HTTP/1 GETs sent to A over C connections (each connection one request at a
time), and the instructions per request are printed for A, B and the pair.
``--plain``: the same pair without identities (what TLS costs).
``--strace``: the proxies run as is with ``strace -c -f`` attached to each for
the measured requests: system calls per request, by name, for A and B.
``--keep``: keep the dumps (for ``callgrind_annotate``) and print where.
Run it on the revision before a change and after (the load tools do not move
the count; C > 1 lets A batch streams, so its figures move a little with
timing).
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.callgrind_requests import _port, _syscalls  # noqa: E402
from benchmarks.lib import meshtls  # noqa: E402
from benchmarks.scenarios.http1 import BODY  # noqa: E402

SERVICE = "api.mesh:80"
NGINX = """worker_processes 1; daemon off; master_process off; pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{ access_log off; server_tokens off; keepalive_requests 1000000000; keepalive_timeout 300s;
  client_body_temp_path {work}/nginx-body;
  server {{ listen 127.0.0.1:{port}; location / {{ default_type text/plain; return 200 "{body}"; }} }} }}
"""
ENDPOINTS = """services:
  {service}:
    endpoints:
      - address: 127.0.0.1:{app}
        proxy: 127.0.0.1:{peer}
        protocol: http1
{identity}
"""


def _wait(check, what: str, procs: list[subprocess.Popen], seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit(f"{what} did not come up")
        time.sleep(0.5)


def _connectable(port: int) -> bool:
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    return True


def _ready(admin: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
    conn.request("GET", "/ready")
    return conn.getresponse().status == 200


def _load(port: int, requests: int, connections: int) -> None:
    """``requests`` GETs to A over ``connections`` keep-alive connections, each one request at a time."""
    errors: list[str] = []

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            for _ in range(n):
                conn.request("GET", "/", headers={"Host": SERVICE})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200 or body != BODY.encode():
                    errors.append(f"status {resp.status}, {len(body)} bytes")
                    return
        except OSError as err:
            errors.append(repr(err))
        finally:
            conn.close()

    shares = [requests // connections + (1 if i < requests % connections else 0) for i in range(connections)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in shares if n]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"requests failed: {errors[:3]}")


def _total(work: Path, prefix: str) -> int:
    total = 0
    for part in work.glob(f"{prefix}*"):
        for line in part.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--connections", type=int, default=1, help="client connections to A (default 1)")
    parser.add_argument("--plain", action="store_true", help="no identities: a plaintext hop")
    parser.add_argument("--keep", action="store_true", help="keep the callgrind dumps and print where")
    parser.add_argument("--strace", action="store_true", help="count system calls per request instead")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="callgrind-meshhop-"))
    nginx_port = _port()
    (work / "nginx.conf").write_text(NGINX.format(work=work, port=nginx_port, body=BODY))
    procs: list[subprocess.Popen] = []
    log = open(work / "nginx.log", "wb")
    procs.append(subprocess.Popen(["nginx", "-c", str(work / "nginx.conf"), "-e", str(work / "nginx-error.log")],
                                  stdout=log, stderr=log))
    base = {k: v for k, v in os.environ.items() if not k.startswith("MESHPROXY_")}
    certs = None if args.plain else meshtls.make(work / "certs")
    names = ("a", "b")
    ports = {name: {"out": _port(), "in": _port(), "admin": _port(), "tap": _port()} for name in names}
    (work / "endpoints.yaml").write_text(ENDPOINTS.format(
        service=SERVICE, app=nginx_port, peer=ports["b"]["in"],
        identity="" if certs is None else f"        identity: {meshtls.SERVER_ID}"))
    pids: dict[str, int] = {}
    try:
        _wait(lambda: _connectable(nginx_port), "nginx", procs, 10)
        for name in ("b", "a"):
            p = ports[name]
            env = dict(base, MESHPROXY_OUTBOUND_LISTEN=f"127.0.0.1:{p['out']}",
                       MESHPROXY_INBOUND_LISTEN=f"127.0.0.1:{p['in']}",
                       MESHPROXY_ADMIN_LISTEN=f"127.0.0.1:{p['admin']}", MESHPROXY_TAP_LISTEN=f"127.0.0.1:{p['tap']}",
                       MESHPROXY_LOG_LEVEL="warning", MESHPROXY_INBOUND_DEFAULT_TARGET=f"127.0.0.1:{nginx_port}")
            if certs is not None:
                env.update(meshtls.identity_env(certs, meshtls.SERVER_ID if name == "b" else meshtls.CLIENT_ID))
            elif name == "b":
                env["MESHPROXY_CLUSTER_NETWORKS"] = "127.0.0.0/8"  # obey A's transport header in the clear
            if name == "a":
                env[meshtls.DESTINATION_ENV] = f"file://{work / 'endpoints.yaml'}"
            tool = [] if args.strace else ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                           f"--callgrind-out-file={work / f'callgrind.{name}.out'}"]
            proc = subprocess.Popen([*tool, sys.executable, "-m", "proxy", "run"], cwd=args.repo, env=env,
                                    stdout=subprocess.DEVNULL, stderr=open(work / f"proxy-{name}.log", "wb"))
            procs.append(proc)
            pids[name] = proc.pid
        for name in names:
            _wait(lambda name=name: _ready(ports[name]["admin"]), f"proxy {name.upper()}", procs)
        # A may learn its endpoint a moment after /ready; the warm-up opens the hop's connections.
        _wait(lambda: (_load(ports["a"]["out"], 1, 1), True)[1], "the hop", procs, 120)
        _load(ports["a"]["out"], args.warmup, args.connections)
        if args.strace:
            tracers = {name: subprocess.Popen(["strace", "-c", "-f", "-q", "-o", str(work / f"strace.{name}.txt"),
                                               "-p", str(pids[name])], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL) for name in names}
            time.sleep(1)  # attached to every thread
            try:
                _load(ports["a"]["out"], args.requests, args.connections)
            finally:
                for tracer in tracers.values():
                    tracer.send_signal(signal.SIGINT)
                    tracer.wait(30)
            print(f"{args.repo} meshhop{' plain' if args.plain else ''} -c {args.connections}: "
                  f"system calls per request")
            rows = {name: dict(_syscalls(work / f"strace.{name}.txt")) for name in names}
            every = sorted(set(rows["a"]) | set(rows["b"]), key=lambda s: -(rows["a"].get(s, 0) + rows["b"].get(s, 0)))
            print(f"  {'':20} {'A':>6} {'B':>6} {'pair':>6}")
            for call in [*every, "total"]:
                a = sum(rows["a"].values()) if call == "total" else rows["a"].get(call, 0)
                b = sum(rows["b"].values()) if call == "total" else rows["b"].get(call, 0)
                n = args.requests
                print(f"  {call:20} {a / n:6.2f} {b / n:6.2f} {(a + b) / n:6.2f}")
            return
        for name in names:
            subprocess.run(["callgrind_control", "-i", "on", str(pids[name])], check=True, capture_output=True)
        _load(ports["a"]["out"], args.requests, args.connections)
        for name in names:
            subprocess.run(["callgrind_control", "-i", "off", str(pids[name])], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-d", str(pids[name])], check=True, capture_output=True)
        time.sleep(2)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
    a, b = _total(work, "callgrind.a.out"), _total(work, "callgrind.b.out")
    n = args.requests
    print(f"{args.repo} meshhop{' plain' if args.plain else ' mtls'} -c {args.connections}: instructions per request: "
          f"A {a / n:.0f}, B {b / n:.0f}, pair {(a + b) / n:.0f} (over {n})")
    if args.keep:
        print(f"dumps: {work}/callgrind.[ab].out*")


if __name__ == "__main__":
    main()

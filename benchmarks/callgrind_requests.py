"""Instructions per request of one meshproxy checkout, counted by callgrind (noise-free, unlike a load test).

``.venv/bin/python benchmarks/callgrind_requests.py --repo DIR [--policy POLICY] [--requests N]
[--new-connections] [--listener outbound|inbound] [--tls] [--h2 [--streams M]] [--tap] [--keep] [--by-object]
[--strace | --perf]``

Starts the proxy of checkout DIR under ``valgrind --tool=callgrind`` with
instrumentation off, warms it up, turns instrumentation on for N sequential
keep-alive HTTP/1 GETs through its outbound listener to a discovered service,
and prints the instructions (Ir) per request. ``--policy split``: the
service has an HTTPRoute splitting it over two backends (route and
route-backend families counted per request); ``mirror``: every request is
also copied to a mirror backend (RequestMirror, ``percent: 100``; the copy's
whole cost, its answer included, is in the count); ``mirror-dead``: copied
to an address nothing listens on (the proxy soon leaves it alone: the cost
of a skipped copy); ``route``: the same route without the mirror (what a
copy is measured against); ``none``: no policy.
``--new-connections``: each request on a new connection with ``Connection:
close`` (the ``connrate`` scenario's path: accept, detection, the request,
the close); the figure is then instructions per connection.
``--listener inbound``: through the inbound listener (plaintext, to its
default target) instead. ``--tls``: new connections to the inbound
listener as the ``handshake`` scenario makes them: the proxy has a mesh
identity (the benchmarks' throwaway authority), and each connection is a
full TLS 1.3 handshake from a client without a certificate (B's identity as
SNI, no resumption), one ``GET`` with ``Connection: close``, the close.
``--env NAME=VALUE`` (repeatable): a setting for the proxy.
``--by-object``: also print the instructions per connection (request) split
by the shared object that ran them (OpenSSL's libssl and libcrypto, the
interpreter, uvloop, the proxy's compiled modules, libc), from callgrind's
self cost. ``--h2``: HTTP/2 on both sides: h2load (``-c 1 -m
--streams``) to the proxy, nginx speaking h2c behind it (both from the
benchmarks' Debian packages). ``--tap``: a match-everything tap is open the
whole time, read by nghttp (the http1 scenario's ``meshproxy-tapped-c``
reader), so the count includes recording and sending the events. ``--keep``:
print the dump's path and keep it (for ``callgrind_annotate``). A second line
gives the share of uvloop's timer callbacks apart (their runs, their
instructions each) and the figure without them: with ``--tap`` they are the
tap server's 10 ms send tick, which under callgrind carries the events of a
few requests (and more or fewer with the machine's load), where a loaded
proxy's tick carries hundreds; without a tap they are ~150 instructions per
request. Run it on the revision before a change and after,
under ``flock /tmp/bench.lock``.

``--passthrough``: the requests name the backend by its address (``Host:
127.0.0.1:PORT``), which discovery does not know: the passthrough route the
``http1`` scenario of ``benchmarks/run.py`` takes, without a balancer.

``--nginx-head``: the backend answers as the ``http1`` scenario's nginx does
(``Server``, ``Date``, ``Content-Type``, ``Content-Length``, ``Connection:
keep-alive``, a 64-byte body) instead of a bare ``content-length`` head.

``--haproxy``: HAProxy (one thread, ``configs/haproxy-http1.cfg.tmpl``) in place of
meshproxy, in front of the same backend: the target in instructions (``--repo``
is then not needed; HTTP/1 keep-alive or ``--new-connections`` only).

``--strace``: the proxy runs as is and ``strace -c -f`` is attached for the
measured requests instead: system calls per request, by name (the kernel
time callgrind does not see). ``--perf``: ``perf stat`` is attached instead: the
proxy's CPU time per request, user and kernel (task-clock), and its context
switches (each one a wait in ``epoll_wait``).
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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.lib.tapsink import nghttp_command  # noqa: E402

SPLIT = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-split, namespace: test}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 80}]
  rules:
    - backendRefs: [{name: web-v1, port: 80, weight: 1}, {name: web-v2, port: 80, weight: 1}]
"""
MIRROR = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web-mirror, namespace: test}}
spec:
  parentRefs: [{{group: core, kind: Service, name: web, port: 80}}]
  rules:
    - filters: {filters}
      backendRefs: [{{name: web, port: 80}}]
"""
MIRROR_FILTER = "[{{type: RequestMirror, requestMirror: {{backendRef: {{name: {mirror}, port: 80}}, percent: 100}}}}]"
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
# --nginx-head: the head the http1 scenario's nginx sends (its 64-byte body too).
NGINX_RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 08 Dec 2026 04:00:00 GMT\r\n"
                  b"Content-Type: text/plain\r\nContent-Length: 64\r\nConnection: keep-alive\r\n\r\n"
                  b"meshproxy benchmark: a fixed small response body, 64 bytes long.")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend() -> int:
    """A keep-alive HTTP/1.1 server answering every request head with 200 "ok" (threads: one per connection)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    conn.sendall(RESPONSE)

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


NGINX_H2C = """worker_processes 1; daemon off; master_process off; pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000000; client_body_temp_path {work}/nginx-body;
  server {{ listen 127.0.0.1:{port} http2; location / {{ return 200 "ok"; }} }} }}
"""


def _h2_backend(work: Path) -> tuple[int, subprocess.Popen]:
    """nginx answering h2c with prior knowledge: 200 "ok" to everything."""
    port = _port()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_H2C.format(work=work, port=port))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-e", str(work / "nginx-error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port, proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("nginx (h2c) did not start")


def _h2load(port: int, host: str, requests: int, streams: int) -> None:
    done = subprocess.run(["h2load", "-n", str(requests), "-c", "1", "-m", str(streams), "-H", f":authority: {host}",
                           f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=600)
    if f"{requests} succeeded" not in done.stdout:
        raise SystemExit(f"h2load: not every request succeeded:\n{done.stdout[-800:]}")


def _get(conn: http.client.HTTPConnection, host: str, close: bool = False) -> None:
    conn.request("GET", "/", headers={"Host": host, "Connection": "close"} if close else {"Host": host})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise SystemExit(f"unexpected status {resp.status}")


def _by_object(work: Path) -> dict[str, int]:
    """Self instructions by shared object (``ob=``) over the dumps: where the work ran, callees excluded."""
    objects: dict[str, str] = {}
    costs: dict[str, int] = {}
    for part in work.glob("callgrind.out*"):
        current = "?"
        skip_next = False
        for line in part.read_text(errors="replace").splitlines():
            if skip_next:  # the line after calls= is the call's inclusive cost, not the caller's own
                skip_next = False
                continue
            if line.startswith(("ob=", "cob=", "cfob=")):  # a name is given once, where its id first appears
                ident, _, name = line.partition("=")[2].partition(" ")
                if name:
                    objects[ident] = name
                if line.startswith("ob="):
                    current = ident
            elif line.startswith("calls="):
                skip_next = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                fields = line.split()
                if len(fields) > 1 and fields[1].isdigit():
                    costs[current] = costs.get(current, 0) + int(fields[1])
    return {objects.get(ident, ident): cost for ident, cost in costs.items()}


def _wait_tap_open(admin: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
        conn.request("GET", "/metrics")
        if b"\ntap_sessions_open 1" in conn.getresponse().read():
            return
        time.sleep(0.5)
    raise SystemExit("the tap did not open within 60 s")


def _attached(tool: list[str], pid: int, load: Callable[[], None]) -> None:
    """``tool`` (strace, perf stat) attached to ``pid`` while ``load()`` runs, then stopped to write its summary."""
    tracer = subprocess.Popen([*tool, "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached to every thread
    try:
        load()
        time.sleep(0.5)  # the last copies' answers
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)


def _syscalls(summary: Path) -> list[tuple[str, int]]:
    """(name, calls) rows of an ``strace -c`` summary, most called first."""
    rows = []
    for line in summary.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            rows.append((fields[-1], int(fields[3])))
    return sorted(rows, key=lambda row: -row[1])


def _timer_runs(work: Path) -> tuple[int, int]:
    """(calls, inclusive instructions) of uvloop's timer callbacks in the dumps: with ``--tap``, almost all of it is
    the tap server's send tick (the few other timers cost ~150 instructions per request without a tap)."""
    names: dict[str, str] = {}
    calls = cost = 0
    for part in work.glob("callgrind.out*"):
        target = None
        expect_cost = False
        for line in part.read_text(errors="replace").splitlines():
            if expect_cost:
                expect_cost = False
                fields = line.split()
                if target is not None and len(fields) > 1 and "TimerHandle__run" in names.get(target, ""):
                    cost += int(fields[1])
                continue
            if line.startswith(("cfn=(", "fn=(")):
                ident, _, name = line.split("=", 1)[1].partition(" ")
                if name:
                    names[ident] = name
                target = ident if line.startswith("cfn=") else None
            elif line.startswith("calls=") and target is not None:
                expect_cost = True
                if "TimerHandle__run" in names.get(target, ""):
                    calls += int(line[6:].split()[0])
    return calls, cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--policy", choices=("none", "split", "route", "mirror", "mirror-dead"), default="none")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--new-connections", action="store_true",
                        help="each request on its own new connection (Connection: close)")
    parser.add_argument("--listener", choices=("outbound", "inbound"), default="outbound")
    parser.add_argument("--tls", action="store_true",
                        help="new connections to the inbound listener, each a full TLS handshake (no client cert)")
    parser.add_argument("--by-object", action="store_true", help="split the instructions by shared object")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the proxy (e.g. MESHPROXY_TLS_SESSION_CACHE=0: no tickets issued)")
    parser.add_argument("--h2", action="store_true", help="h2load -> proxy -> nginx h2c")
    parser.add_argument("--streams", type=int, default=10, help="h2load's concurrent streams (-m) with --h2")
    parser.add_argument("--tap", action="store_true", help="a match-everything tap open, read by nghttp")
    parser.add_argument("--keep", action="store_true", help="keep the callgrind dump and print its path")
    parser.add_argument("--strace", action="store_true", help="count system calls per request instead")
    parser.add_argument("--perf", action="store_true", help="measure CPU time per request (perf stat) instead")
    parser.add_argument("--haproxy", action="store_true", help="HAProxy (1 thread) in place of meshproxy")
    parser.add_argument("--nginx-head", action="store_true",
                        help="the backend answers with the head nginx sends (Connection: keep-alive and more)")
    parser.add_argument("--passthrough", action="store_true",
                        help="Host is the backend's address (not a discovered service): the http1 scenario's route")
    args = parser.parse_args()
    if args.haproxy and (args.h2 or args.tap or args.policy != "none" or args.listener != "outbound"):
        parser.error("--haproxy measures plain HTTP/1 only")
    if args.repo is None and not args.haproxy:
        parser.error("--repo is required (unless --haproxy)")
    name = "haproxy" if args.haproxy else str(args.repo)
    if args.h2 and args.new_connections:
        parser.error("--h2 counts requests on one connection")
    if args.tls:
        if args.h2:
            parser.error("--tls is HTTP/1 over new connections")
        args.new_connections, args.listener = True, "inbound"
    if args.nginx_head:
        global RESPONSE
        RESPONSE = NGINX_RESPONSE
    work = Path(tempfile.mkdtemp(prefix="callgrind-"))
    nginx = None
    if args.h2:
        backend, nginx = _h2_backend(work)
    else:
        backend = _backend()
    endpoints = work / "endpoints.yaml"
    endpoints.write_text("services:\n" + "".join(
        f"  {name}.test.svc.cluster.local:80:\n    endpoints:\n      - address: 127.0.0.1:{port}\n"
        for name, port in (("web", backend), ("web-v1", backend), ("web-v2", backend), ("mirror", backend),
                           ("dead", _port()))))  # nothing listens on dead's port
    out, inb, admin, tap_port = _port(), _port(), _port(), _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHPROXY_")}
    env.update(MESHPROXY_OUTBOUND_LISTEN=f"127.0.0.1:{out}", MESHPROXY_INBOUND_LISTEN=f"127.0.0.1:{inb}",
               MESHPROXY_ADMIN_LISTEN=f"127.0.0.1:{admin}", MESHPROXY_TAP_LISTEN=f"127.0.0.1:{tap_port}",
               MESHPROXY_DESTINATION=f"file://{endpoints}", MESHPROXY_LOG_LEVEL="warning",
               MESHPROXY_INBOUND_DEFAULT_TARGET=f"127.0.0.1:{backend}")
    env.update(item.split("=", 1) for item in args.env)
    certs = None
    if args.tls:
        from benchmarks.lib import meshtls

        certs = meshtls.make(work / "certs", names=(meshtls.SERVER_ID,))
        env.update(meshtls.identity_env(certs, meshtls.SERVER_ID))
    if args.policy != "none":
        mirror = {"mirror": "mirror", "mirror-dead": "dead"}.get(args.policy)
        filters = "[]" if mirror is None else MIRROR_FILTER.format(mirror=mirror)
        (work / "policy.yaml").write_text(SPLIT if args.policy == "split" else MIRROR.format(filters=filters))
        env["MESHPROXY_POLICY"] = str(work / "policy.yaml")
    dump = work / "callgrind.out"
    tool = [] if args.strace or args.perf else ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                                f"--callgrind-out-file={dump}"]
    if args.haproxy:
        cfg = (Path(__file__).resolve().parent / "configs" / "haproxy-http1.cfg.tmpl").read_text()
        (work / "haproxy.cfg").write_text(cfg.replace("{{port}}", str(out)).replace("{{upstream_port}}", str(backend)))
        command = ["haproxy", "-db", "-f", str(work / "haproxy.cfg")]
    else:
        command = [sys.executable, "-m", "proxy", "run"]
    proc = subprocess.Popen([*tool, *command], cwd=args.repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(work / "proxy.log", "wb"))
    reader: subprocess.Popen | None = None
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                # HAProxy has no readiness endpoint: a request through it to the backend says it listens.
                conn = http.client.HTTPConnection("127.0.0.1", out if args.haproxy else admin, timeout=30)
                conn.request("GET", "/" if args.haproxy else "/ready")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the proxy never became ready (log: {work / 'proxy.log'})")
            time.sleep(1)
        if args.tap:
            reader = subprocess.Popen(nghttp_command(tap_port, work), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            _wait_tap_open(admin)
        port = out if args.listener == "outbound" else inb
        # --passthrough: named by the backend's address, as benchmarks/run.py's http1 scenario does (no balancer).
        host = f"127.0.0.1:{backend}" if args.passthrough else "web.test.svc.cluster.local:80"
        if args.h2:
            def run(n: int) -> None:
                _h2load(port, host, n, args.streams)
        elif certs is not None:
            from benchmarks.lib import meshtls

            def one() -> None:
                # A fresh client context each time (no session to resume), no certificate, no ALPN.
                problem = meshtls.tls_probe(port, certs.ca, meshtls.SERVER_ID, RESPONSE.rpartition(b"\r\n")[2])
                if problem:
                    raise SystemExit(problem)
        elif args.new_connections:
            def one() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                _get(conn, host, close=True)
                conn.close()
        else:
            kept = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

            def one() -> None:
                _get(kept, host)
        if not args.h2:
            def run(n: int) -> None:
                for _ in range(n):
                    one()
        run(args.warmup)
        if args.strace or args.perf:
            def load() -> None:
                run(args.requests)

            if args.perf:
                _attached(["perf", "stat", "-x", ",", "-e", "task-clock,context-switches", "-o",
                           str(work / "perf.txt")], proc.pid, load)
                values = {row[2].split(":")[0]: float(row[0]) for row in
                          (line.split(",") for line in (work / "perf.txt").read_text().splitlines())
                          if len(row) > 2 and row[0].replace(".", "").isdigit()}
                print(f"{name} policy={args.policy}: {1e3 * values['task-clock'] / args.requests:.1f} us CPU "
                      f"and {values['context-switches'] / args.requests:.2f} context switches per request")
                return
            _attached(["strace", "-c", "-f", "-q", "-o", str(work / "strace.txt")], proc.pid, load)
            print(f"{name} policy={args.policy}: system calls per request")
            for name, calls in _syscalls(work / "strace.txt"):
                print(f"  {name:20} {calls / args.requests:6.2f}")
            return
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        run(args.requests)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        time.sleep(2)
    finally:
        if reader is not None:
            reader.terminate()
            reader.wait(10)
        proc.terminate()
        proc.wait(120)
        if nginx is not None:
            nginx.terminate()
            nginx.wait(30)
    total = 0
    for part in work.glob("callgrind.out*"):
        for line in part.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    unit = "connection" if args.new_connections else "request"
    mode = f" h2 -m {args.streams}" if args.h2 else " tls" if args.tls else ""
    tapped = " tap=all" if args.tap else ""
    print(f"{name} {args.listener}{mode} policy={args.policy}{tapped}: {total / args.requests:.0f} instructions "
          f"per {unit} "
          f"({total} over {args.requests})")
    if not (args.strace or args.perf or args.haproxy):
        # Under callgrind the requests are sequential and slow, so each 10 ms tick of the tap's sender carries a
        # few requests' events; a loaded proxy (25,000 req/s) carries ~250 per tick. The timers' share is printed
        # apart so the recording cost per request can be read without the tick's overstated fixed cost.
        runs, timers = _timer_runs(work)
        print(f"  of which timer callbacks (the tap's send tick with --tap): {timers / args.requests:.0f} per {unit} "
              f"({runs} runs, {timers / max(runs, 1):.0f} each); without them: "
              f"{(total - timers) / args.requests:.0f} per {unit}")
        if args.by_object:
            costs = _by_object(work)
            print(f"  by shared object (self instructions per {unit}):")
            for name, cost in sorted(costs.items(), key=lambda row: -row[1]):
                if cost >= args.requests * 50:
                    print(f"    {cost / args.requests:9.0f}  {name}")
    if args.keep:
        print(f"dump: {work}")


if __name__ == "__main__":
    main()

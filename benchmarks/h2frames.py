"""The HTTP/2 frames, octets and system calls per request a proxy sends to each peer, and what they cost the client.

``.venv/bin/python benchmarks/h2frames.py --repo DIR [--requests N] [--haproxy] [--client-cost]``

h2load (``-c 1 -m 10``) -> the proxy (meshproxy's inbound listener with nginx as its default target, or
HAProxy with ``proto h2`` on both sides) -> nginx speaking h2c. After a warm-up, ``strace -xx`` records the
proxy's reads and writes for N requests; their payloads are decoded into frames per connection and
direction. The client's side is the connection whose first bytes were the preface. What the peers do with
these frames (parse, HPACK-decode, wake up) is CPU the load tool and the backend spend: in the h2 scenario
that CPU, not the proxy's, bounds the throughput. ``--client-cost``: instead, h2load itself runs under
callgrind (its instructions at 5N requests minus those at N, over 4N: start-up cancels out), a noise-free
measure of the client's work per request.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.callgrind_requests import _h2_backend, _port  # noqa: E402

FRAME_NAMES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS", 6: "PING", 7: "GOAWAY",
               8: "WINDOW_UPDATE", 9: "CONTINUATION"}
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HAPROXY_H2 = """global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend front
  bind 127.0.0.1:{port} proto h2
  default_backend back
backend back
  http-reuse always
  server nginx 127.0.0.1:{upstream} proto h2
"""
# One traced call with its payload: ``PID read(FD, "\x..", N) = N`` (writev's first buffer: the proxies write one).
_CALL = re.compile(r"^\d+\s+(read|write|writev|recvfrom|sendto|recvmsg|sendmsg)\((\d+), "
                   r'(?:\[\{iov_base=)?"((?:\\x[0-9a-f]{2})*)"')
_WAIT = re.compile(r"^\d+\s+(epoll_p?wait)\(")


def _start(args: argparse.Namespace, work: Path, backend: int, port: int) -> subprocess.Popen:
    if args.haproxy:
        (work / "haproxy.cfg").write_text(HAPROXY_H2.format(port=port, upstream=backend))
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(work / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        return proc
    admin = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHPROXY_")}
    env.update(MESHPROXY_OUTBOUND_LISTEN=f"127.0.0.1:{_port()}", MESHPROXY_INBOUND_LISTEN=f"127.0.0.1:{port}",
               MESHPROXY_ADMIN_LISTEN=f"127.0.0.1:{admin}", MESHPROXY_TAP_LISTEN=f"127.0.0.1:{_port()}",
               MESHPROXY_LOG_LEVEL="warning", MESHPROXY_INBOUND_DEFAULT_TARGET=f"127.0.0.1:{backend}")
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "run"], cwd=args.repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the proxy never became ready")


def _h2load(port: int, requests: int, wrap: list[str] | None = None) -> None:
    done = subprocess.run([*(wrap or []), "h2load", "-n", str(requests), "-c", "1", "-m", "10",
                           f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=600)
    if f"{requests} succeeded" not in done.stdout:
        raise SystemExit(f"h2load: not every request succeeded:\n{done.stdout[-800:]}")


def _client_cost(work: Path, port: int, requests: int) -> float:
    totals = []
    for n in (requests, 5 * requests):
        dump = work / f"h2load.{n}.callgrind"
        _h2load(port, n, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}"])
        totals.append(max(int(line.split()[1]) for line in dump.read_text(errors="replace").splitlines()
                          if line.startswith(("summary:", "totals:"))))
    return (totals[1] - totals[0]) / (4 * requests)


def _decode(trace: Path, requests: int) -> None:
    calls: collections.Counter = collections.Counter()
    octets: collections.Counter = collections.Counter()
    frames: collections.Counter = collections.Counter()
    pending: dict[tuple[int, str], bytes] = collections.defaultdict(bytes)
    client_fds = set()
    waits = 0
    for line in trace.read_text().splitlines():
        found = _CALL.match(line)
        if found is None:
            waits += 1 if _WAIT.match(line) and "resumed" not in line else 0
            continue
        call, fd, payload = found.group(1), int(found.group(2)), found.group(3)
        data = bytes.fromhex(payload.replace("\\x", ""))
        if not data:
            continue
        key = (fd, "out" if call in ("write", "writev", "sendto", "sendmsg") else "in")
        calls[key] += 1
        octets[key] += len(data)
        buf = pending[key] + data
        if buf.startswith(PREFACE):
            buf = buf[len(PREFACE):]
            if key[1] == "in":
                client_fds.add(fd)
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            flags = " END_STREAM" if buf[3] in (0, 1) and buf[4] & 1 else ""
            frames[key, FRAME_NAMES.get(buf[3], str(buf[3])) + flags] += 1
            buf = buf[9 + length:]
        pending[key] = buf
    print(f"per request ({requests}): {waits / requests:.3f} epoll waits")
    for key in sorted(calls):
        peer = "client" if key[0] in client_fds else "upstream"
        print(f"  {peer:8} {'to' if key[1] == 'out' else 'from':4} fd {key[0]}: {calls[key] / requests:.3f} "
              f"{'writes' if key[1] == 'out' else 'reads'}, {octets[key] / requests:.1f} octets")
        for (where, name), count in sorted(frames.items()):
            if where == key and count / requests >= 0.01:  # the preface's frames fall below
                print(f"      {name:24} {count / requests:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--haproxy", action="store_true", help="HAProxy (1 thread, h2 both sides) instead")
    parser.add_argument("--client-cost", action="store_true",
                        help="h2load's own instructions per request instead")
    args = parser.parse_args()
    if not args.haproxy and args.repo is None:
        parser.error("--repo is required (unless --haproxy)")
    work = Path(tempfile.mkdtemp(prefix="h2frames-"))
    backend, nginx = _h2_backend(work)
    port = _port()
    proc = _start(args, work, backend, port)
    try:
        _h2load(port, 300)
        if args.client_cost:
            print(f"{args.repo or 'haproxy'}: h2load {_client_cost(work, port, args.requests):.0f} instructions per "
                  "request")
            return
        trace = work / "strace.txt"
        tracer = subprocess.Popen(["strace", "-f", "-q", "-xx", "-s", "1000000", "-o", str(trace), "-e",
                                   "trace=read,write,writev,recvfrom,sendto,recvmsg,sendmsg,epoll_wait,epoll_pwait",
                                   "-p", str(proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)  # attached
        try:
            _h2load(port, args.requests)
            time.sleep(0.5)
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
        print(f"{args.repo or 'haproxy'}:")
        _decode(trace, args.requests)
    finally:
        proc.terminate()
        proc.wait(60)
        nginx.terminate()
        nginx.wait(30)


if __name__ == "__main__":
    main()

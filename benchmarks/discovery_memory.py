"""Idle RSS of ``meshproxy run`` by discovery source, and the k8s modules' import time.

Starts the proxy (from the current directory's tree) once with file
discovery and once with Kubernetes discovery against the test suite's mock
API server (tests/discovery/fakeapi.py, in its own process, serving the
recorded objects plus ``--services`` more Services with one EndpointSlice
each), waits for /ready and for the k8s source to be synced, lets it settle,
and reads VmRSS. Run it under the benchmark lock from a checkout's root:

    flock /tmp/bench.lock .venv/bin/python benchmarks/discovery_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path.cwd()
FAKE_API = """
import asyncio, copy, sys
sys.path.insert(0, {tests_root!r})
from tests.discovery.fakeapi import FakeApiServer, RECORDED

async def main():
    api = FakeApiServer()
    svc, slc = RECORDED["services"]["items"][0], RECORDED["endpointslices"]["items"][0]
    for i in range({services}):
        s = copy.deepcopy(svc); s["metadata"]["name"] = f"svc{{i}}"; s["metadata"]["uid"] = f"u{{i}}"
        ip = f"10.97.{{i // 250}}.{{i % 250 + 1}}"
        s["spec"]["clusterIP"] = ip; s["spec"]["clusterIPs"] = [ip]
        e = copy.deepcopy(slc); e["metadata"]["name"] = f"svc{{i}}-abcde"
        e["metadata"]["labels"]["kubernetes.io/service-name"] = f"svc{{i}}"
        api.objects["/api/v1/services"][(s["metadata"]["namespace"], s["metadata"]["name"])] = s
        api.objects["/apis/discovery.k8s.io/v1/endpointslices"][(e["metadata"]["namespace"], e["metadata"]["name"])] = e
    await api.start()
    print(api.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

FILE_SPEC = """services:
{entries}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_ready(admin: int, proc: subprocess.Popen, source: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"meshproxy exited {proc.returncode}")
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=1).read().decode()
            if f'discovery_source_up{{source="{source}"}} 1' in body:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"not ready/synced within {timeout}s")


def measure(env: dict[str, str], source: str, settle: float) -> int:
    admin = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MESHPROXY_")}, **env,
           "MESHPROXY_ADMIN_LISTEN": f"127.0.0.1:{admin}", "MESHPROXY_OUTBOUND_LISTEN": f"127.0.0.1:{free_port()}",
           "MESHPROXY_INBOUND_LISTEN": f"127.0.0.1:{free_port()}", "MESHPROXY_TAP_LISTEN": f"127.0.0.1:{free_port()}",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(admin, proc, source)
        time.sleep(settle)
        return rss_kib(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def import_ms(rounds: int) -> float:
    # What choosing k8s adds to a proxy that has loaded its config: the source's modules and the
    # client's (imported by KubeApi.open()).
    code = ("import asyncio, time; from proxy import config; "
            "s = config.load({config.DESTINATION: 'k8s', config.K8S_API: 'http://127.0.0.1:1'}).discovery; "
            "t = time.perf_counter(); from proxy.discovery.k8s import KubeApi; api = KubeApi(s); "
            "asyncio.run(api.open()); print(time.perf_counter() - t); asyncio.run(api.close())")
    times = [float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                  check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout)
             for _ in range(rounds)]
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--tests-root", default=str(Path(__file__).resolve().parents[1]),
                        help="checkout whose tests/discovery/fakeapi.py serves the API")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="discovery-memory-"))
    token = tmp / "token"
    token.write_text("bench-token\n")
    spec = tmp / "services.yaml"
    spec.write_text(FILE_SPEC.format(entries="".join(
        f"  svc{i}.default.svc.cluster.local:80:\n    endpoints: [{{address: \"10.244.1.{i % 250 + 1}:8080\"}}]\n"
        for i in range(args.services))))
    api = subprocess.Popen([sys.executable, "-c", FAKE_API.format(tests_root=args.tests_root,
                                                                   services=args.services)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert api.stdout is not None
        port = int(api.stdout.readline())
        file_env = {"MESHPROXY_DESTINATION": f"file://{spec}"}
        k8s_env = {"MESHPROXY_DESTINATION": "k8s", "MESHPROXY_K8S_API": f"http://127.0.0.1:{port}",
                   "MESHPROXY_K8S_TOKEN_FILE": str(token), "MESHPROXY_K8S_CA_FILE": str(tmp / "none.crt")}
        results: dict[str, list[int]] = {"file": [], "k8s": []}
        for _ in range(args.rounds):
            results["file"].append(measure(file_env, "file", args.settle))
            results["k8s"].append(measure(k8s_env, "k8s", args.settle))
    finally:
        api.terminate()
        api.wait(5)
    file_mib = statistics.median(results["file"]) / 1024
    k8s_mib = statistics.median(results["k8s"]) / 1024
    print(json.dumps({"tree": str(ROOT), "services": args.services, "rss_kib": results,
                      "file_mib": round(file_mib, 1), "k8s_mib": round(k8s_mib, 1),
                      "k8s_extra_mib": round(k8s_mib - file_mib, 1),
                      "import_k8s_ms": round(import_ms(args.rounds * 2), 1)}, indent=1))


if __name__ == "__main__":
    main()

"""A small real mesh under steady load, and a real Prometheus scraping it, for the tests that look at
the mesh from outside (``meshproxy viz``, the Grafana dashboards, the alert rules).

web's proxy (A) calls the api service meshed behind api's proxy (B) with mutual TLS, at ``RATE``
requests a second on one keep-alive connection, every ``FAIL_EVERY``-th one a 500; both proxies add
their workload labels (namespace ``default``, deployments ``web`` and ``api``) as the shipped scrape
configuration would. Both are context managers; a test module wraps them in its own fixtures.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .issuer import Issuer, identity_name
from .meshproxy import MeshProxy
from .ports import free_port
from .upstream import HttpUpstream

SERVICE = "api.default.svc.cluster.local:80"
WEB_ID, API_ID = identity_name("web"), identity_name("api")
RATE = 20.0  # requests per second of the load
FAIL_EVERY = 10  # every tenth request asks the app for a 500


def workload(name: str) -> dict[str, str]:
    return {"MESHPROXY_METRICS_WORKLOAD_LABELS": "true", "MESHPROXY_WORKLOAD_NAMESPACE": "default",
            "MESHPROXY_WORKLOAD_POD": f"{name}-0", "MESHPROXY_WORKLOAD_KIND": "deployment",
            "MESHPROXY_WORKLOAD_NAME": name}


class Load:
    """Requests through A's outbound listener at RATE per second, on one keep-alive connection."""

    def __init__(self, address: tuple[str, int], limit: float = 200.0) -> None:
        self.address, self.limit = address, limit
        self.sent = self.failed = 0
        self.errors: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection(*self.address, timeout=10)
        started = time.monotonic()
        i = 0
        while not self.stopped.is_set() and time.monotonic() - started < self.limit:
            path = "/status/500" if i % FAIL_EVERY == FAIL_EVERY - 1 else "/ok"
            try:
                conn.request("GET", path, headers={"Host": SERVICE})
                resp = conn.getresponse()
                resp.read()
                self.sent += 1
                self.failed += resp.status >= 500
            except (OSError, http.client.HTTPException) as err:
                self.errors.append(repr(err))
                conn.close()
                conn = http.client.HTTPConnection(*self.address, timeout=10)
            i += 1
            self.stopped.wait(max(0.0, started + i / RATE - time.monotonic()))
        conn.close()


@dataclass
class VizMesh:
    web: MeshProxy  # A: the caller's proxy
    api: MeshProxy  # B: the callee's proxy
    endpoints: Path
    load: Load


@contextlib.contextmanager
def viz_mesh(tmp: Path, api_default_policy: str | None = None) -> Iterator[VizMesh]:
    """The two proxies, the app and the issuer, with the load running once it gets through.
    ``api_default_policy``: api's proxy authorizes by that default policy, and requests sent straight
    to its inbound port (no original destination) go to the app."""
    issuer = Issuer(tmp / "issuer", [WEB_ID, API_ID]).start()
    app = HttpUpstream(name="viz-app")
    b = a = None
    try:
        policy_env = {} if api_default_policy is None else {
            "MESHPROXY_DEFAULT_POLICY": api_default_policy, "MESHPROXY_INBOUND_DEFAULT_TARGET": app.hostport}
        b = MeshProxy(env={**issuer.env(API_ID), **workload("api"), **policy_env}, name="proxy-api",
                      log_path=tmp / "b.log").start()
        endpoints = tmp / "endpoints.yaml"
        endpoints.write_text(
            "services:\n"
            f"  {SERVICE}:\n"
            "    endpoints:\n"
            f"      - address: {app.hostport}\n"
            f"        proxy: {b.inbound_hostport}\n"
            f"        identity: {API_ID}\n"
            "        protocol: http1\n"
            "        labels:\n"
            "          namespace: default\n"
            "          deployment: api\n"
            "          pod: api-0\n"
            f"          meshproxy.io/admin-port: '{b.admin[1]}'\n"
        )
        policy = tmp / "policy.yaml"  # one named route; the 500s go by the default route
        policy.write_text(f"services:\n  {SERVICE}:\n    routes:\n      - name: ok\n"
                          "        match: {pathPrefix: /ok}\n"
                          "      - name: retried\n"  # only test_retries_show_in_actual calls it
                          "        match: {pathPrefix: /status/503}\n"
                          "        isRetryable: true\n")
        a = MeshProxy(env={"MESHPROXY_DESTINATION": f"file://{endpoints}", "MESHPROXY_POLICY": str(policy),
                           **issuer.env(WEB_ID), **workload("web")},
                      name="proxy-web", log_path=tmp / "a.log").start()
        load = Load(a.outbound)
        load.thread.start()
        deadline = time.monotonic() + 15
        while load.sent < RATE and time.monotonic() < deadline:
            time.sleep(0.1)
        assert load.sent >= RATE, f"the load did not get through: {load.errors[-3:]}"
        yield VizMesh(a, b, endpoints, load)
        load.stopped.set()
        load.thread.join(15)
    finally:
        for proxy in (a, b):
            if proxy is not None:
                proxy.close()
        app.stop()
        issuer.stop()


def query(url: str, promql: str, at: float | None = None) -> list:
    """An instant query's result (raises urllib's HTTPError when Prometheus refuses the expression)."""
    params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=5) as r:
        return json.loads(r.read())["data"]["result"]


@contextlib.contextmanager
def prometheus(tmp: Path, targets: list[tuple[str, int]], rule_files: Sequence[Path] = ()) -> Iterator[str | None]:
    """Debian's Prometheus scraping ``targets`` every second as job ``meshproxy`` (the shipped scrape
    job's name), evaluating ``rule_files`` every second; yields its URL once every target is up, or
    None when the binary is not installed."""
    binary = shutil.which("prometheus")
    if binary is None:
        yield None
        return
    config = tmp / "prometheus.yml"
    listed = ", ".join(f"'{host}:{port}'" for host, port in targets)
    rules = "".join(f"  - {path}\n" for path in rule_files)
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        + (f"rule_files:\n{rules}" if rules else "")
        + f"scrape_configs:\n  - job_name: meshproxy\n    static_configs:\n      - targets: [{listed}]\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp / "prometheus.log", "wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
            try:
                if len([s for s in query(url, "up") if s["value"][1] == "1"]) == len(targets):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"Prometheus did not scrape {len(targets)} proxies within 60s"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

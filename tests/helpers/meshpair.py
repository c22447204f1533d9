"""Two proxies and an app in a row, the meshed hop of the backpressure tests.

client -> proxy A (outbound listener, file discovery) -> HTTP/2 between the
proxies (plaintext on loopback, or mutual TLS with identities from the test
issuer) -> proxy B (inbound listener) -> app. The service is ``SERVICE``;
its one endpoint is the app, meshed behind B, hinted ``http1`` or ``h2``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bulk import MIB, H1Conn, RssWatch, pattern_sha256
from .h2flow import FlowH2Client
from .meshproxy import MeshProxy

SERVICE = "web.mesh:80"
CLIENT_ID = "web.default.serviceaccount.identity.cluster.local"   # proxy A
SERVER_ID = "api.default.serviceaccount.identity.cluster.local"   # proxy B


@dataclass
class MeshPair:
    a: MeshProxy
    b: MeshProxy
    app: Any                       # BulkApp or BulkH2App
    tls: bool
    app_protocol: str              # "http1" or "h2"
    baseline_s: float = 0.0        # a 64 MiB HTTP/1 download on a fresh connection, once warm
    notes: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return SERVICE

    def h1(self, timeout: float = 120.0) -> H1Conn:
        return H1Conn(self.a.outbound, SERVICE, timeout=timeout)

    def watch(self) -> RssWatch:
        return RssWatch({"proxy A": self.a.pid, "proxy B": self.b.pid})

    def h2(self, initial_window: int | None = None, timeout: float = 30.0) -> FlowH2Client:
        return FlowH2Client(self.a.outbound, timeout=timeout, initial_window=initial_window)

    @property
    def client_kind(self) -> str:
        """The client this pair's app can be reached with: HTTP/1 for an HTTP/1 app
        (carried with ``l5d-orig-proto``), HTTP/2 for an HTTP/2 app."""
        return "http1" if self.app_protocol == "http1" else "h2"

    def get_ok(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET /ok on a fresh connection of the pair's client kind."""
        if self.client_kind == "http1":
            with self.h1(timeout=timeout) as conn:
                result = conn.get("/ok", deadline=time.monotonic() + timeout)
            return result.status, result.body
        with self.h2(timeout=timeout) as client:
            resp = client.exchange("GET", "/ok", SERVICE, timeout=timeout)
            return resp.status or 0, bytes(resp.data)

    def fetch(self, size: int, timeout: float) -> float:
        """Seconds to download ``size`` pattern bytes at full speed on a fresh connection (digest checked)."""
        started = time.monotonic()
        if self.client_kind == "http1":
            with self.h1(timeout=timeout) as conn:
                result = conn.download(size, deadline=started + timeout)
            assert (result.status, result.length, result.sha256) == (200, size, pattern_sha256(size)), \
                f"{result.status} {result.length} {result.headers}"
            return result.seconds
        with self.h2(timeout=timeout) as client:
            sid = client.open("GET", f"/download?n={size}", SERVICE, flowing=True)
            client.flow(sid, 4 * MIB)
            resp = client.response(sid, timeout)
            sink = client.sinks[sid]
            assert (resp.status, sink.received, sink.sha256) == (200, size, pattern_sha256(size)), resp.summary()
        return time.monotonic() - started

    def hop_connections(self) -> float:
        """Connections B accepted on its inbound listener (A's connections to it)."""
        return self.b.metrics().get("tcp_open_total", direction="inbound", peer="src")

    def stop(self) -> None:
        self.a.close()
        self.b.close()
        self.app.stop()


def start_pair(tmp: Path, app: Any, app_protocol: str, issuer: Any = None,
               env_a: dict[str, str] | None = None, env_b: dict[str, str] | None = None) -> MeshPair:
    """Start B, then A (discovery names the app behind B); wait until A routes to it."""
    tls = issuer is not None
    b_env = dict(issuer.env(SERVER_ID)) if tls else {"MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8"}
    b_env.update(env_b or {})
    b = MeshProxy(env=b_env, name="proxy-B", log_path=tmp / "b.log").start()
    endpoints = tmp / "endpoints.yaml"
    identity = f"        identity: {SERVER_ID}\n" if tls else ""
    endpoints.write_text(
        "services:\n"
        f"  {SERVICE}:\n"
        "    endpoints:\n"
        f"      - address: {app.hostport}\n"
        f"        proxy: {b.inbound_hostport}\n"
        f"{identity}"
        f"        protocol: {app_protocol}\n"
    )
    a_env = {"MESHPROXY_DESTINATION": f"file://{endpoints}", **(issuer.env(CLIENT_ID) if tls else {})}
    a_env.update(env_a or {})
    try:
        a = MeshProxy(env=a_env, name="proxy-A", log_path=tmp / "a.log").start()
    except BaseException:
        b.close()
        raise
    pair = MeshPair(a, b, app, tls, app_protocol)
    try:
        _warm(pair)
    except BaseException:
        pair.stop()
        raise
    return pair


def _warm(pair: MeshPair) -> None:
    """Until A routes to the app (discovery loads just after /ready), then the baseline download time."""
    deadline = time.monotonic() + 10
    last = ""
    while time.monotonic() < deadline:
        try:
            status, body = pair.get_ok(timeout=5)
            if status == 200 and body == b"ok":
                break
            last = f"{status} {body[:200]!r}"
        except (OSError, TimeoutError, ConnectionError) as err:
            last = repr(err)
        time.sleep(0.1)
    else:
        raise AssertionError(f"the meshed hop never answered /ok: {last}")
    pair.baseline_s = min(pair.fetch(BASELINE_BYTES, 30.0) for _ in range(2))


BASELINE_BYTES = 64 * MIB

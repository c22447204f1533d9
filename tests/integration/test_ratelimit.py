"""Inbound rate limits (Linkerd's HTTPLocalRateLimitPolicy) with real proxies and apps: HTTP/1 and
HTTP/2 clients, gRPC, the meshed hop with client identities and overrides, and a policy reload."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

WEB = "web.default.serviceaccount.identity.cluster.local"
API = "api.default.serviceaccount.identity.cluster.local"


def _docs(port: int, limits: str, protocol: str = "HTTP/1") -> str:
    """An open Server on the app port (accessPolicy all-unauthenticated) and its rate limit policy."""
    return (
        "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\n"
        "metadata: {name: app-http, namespace: default}\n"
        f"spec: {{podSelector: {{}}, port: {port}, proxyProtocol: {protocol}, accessPolicy: all-unauthenticated}}\n"
        "---\napiVersion: policy.linkerd.io/v1alpha1\nkind: HTTPLocalRateLimitPolicy\n"
        "metadata: {name: app-rl, namespace: default}\n"
        "spec:\n  targetRef: {group: policy.linkerd.io, kind: Server, name: app-http}\n" + limits
    )


def _burst(addr, count: int, path: str, host: str = "app.local") -> list[http.client.HTTPResponse]:
    """``count`` requests back to back on one connection (well inside one second)."""
    conn = http.client.HTTPConnection(*addr, timeout=20)
    out = []
    for i in range(count):
        conn.request("GET", f"{path}{i}", headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        out.append(resp)
    conn.close()
    return out


def _port(hostport: str) -> int:
    return int(hostport.rsplit(":", 1)[1])


def _reloaded(proxy, count: int) -> None:
    deadline = time.monotonic() + 10
    while proxy.metrics().get("policy_reload_total", result="ok") < count:
        assert time.monotonic() < deadline, "the policy was not reloaded"
        time.sleep(0.1)


def test_http1_over_the_limit_gets_429_and_never_reaches_the_app(tmp_path: Path):
    from helpers.meshproxy import MeshProxy
    from helpers.upstream import HttpUpstream

    app = HttpUpstream(name="rl-app")
    policy = tmp_path / "policy.yaml"
    policy.write_text(_docs(_port(app.hostport), "  identity: {requestsPerSecond: 3}\n"))
    try:
        with MeshProxy(env={"MESHPROXY_POLICY": str(policy), "MESHPROXY_INBOUND_DEFAULT_TARGET": app.hostport},
                       name="rl-h1", log_path=tmp_path / "p.log") as proxy:
            proxy.start()
            got = _burst(proxy.inbound, 10, "/h1-")
            ok = [r for r in got if r.status == 200]
            limited = [r for r in got if r.status == 429]
            # A burst of 3 (burst = rate), plus at most one token refilled while the burst ran.
            assert 3 <= len(ok) <= 4 and len(ok) + len(limited) == 10, [r.status for r in got]
            assert limited[0].getheader("l5d-proxy-error") == "per-identity rate limit exceeded: 3rps"
            seen = [r for r in app.requests if b" /h1-" in r.head.raw]
            assert len(seen) == len(ok), "a refused request reached the app"
            m = proxy.metrics()
            assert m.get("inbound_http_local_ratelimit_total", srv_kind="server", srv_name="app-http",
                         ratelimit_group="policy.linkerd.io", ratelimit_kind="HTTPLocalRateLimitPolicy",
                         ratelimit_name="app-rl", ratelimit_scope="identity",
                         srv_port=str(_port(app.hostport)), tls="no_identity") == len(limited)
            # Refused requests still count as authorized (Linkerd: authorization comes first).
            assert m.get("inbound_http_authz_allow_total", srv_name="app-http") == 10
            # The bucket refills at the rate: a second later requests pass again.
            time.sleep(1.1)
            assert _burst(proxy.inbound, 1, "/later-")[0].status == 200
    finally:
        app.stop()


def test_http2_and_grpc_get_429_and_resource_exhausted(tmp_path: Path):
    import grpc

    from helpers.grpc_service import EchoStub, GrpcServer, channel
    from helpers.h2client import H2Client
    from helpers.meshproxy import MeshProxy

    server = GrpcServer()
    policy = tmp_path / "policy.yaml"
    policy.write_text(_docs(_port(server.hostport), "  total: {requestsPerSecond: 2}\n", "HTTP/2"))
    try:
        with MeshProxy(env={"MESHPROXY_POLICY": str(policy), "MESHPROXY_INBOUND_DEFAULT_TARGET": server.hostport},
                       name="rl-h2", log_path=tmp_path / "p.log") as proxy:
            proxy.start()
            stub = EchoStub(channel(proxy.inbound_hostport))
            codes = []
            for i in range(6):
                try:
                    stub.unary(f"echo:{i}".encode(), timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as err:
                    codes.append(err.code())
                    last = err
            assert codes.count(grpc.StatusCode.OK) in (2, 3), codes
            assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 6 - codes.count(grpc.StatusCode.OK), codes
            assert last.details() == "total rate limit exceeded: 2rps"
            assert dict(last.trailing_metadata() or ())["l5d-proxy-error"] == "total rate limit exceeded: 2rps"
            assert len(server.calls) == codes.count(grpc.StatusCode.OK)
            time.sleep(1.1)
            # Plain HTTP/2 (not gRPC): a 429 with the error header and a one-line body. The four streams go
            # out together: one after another, a slow answer from the app (gRPC's server resets a plain
            # GET, once in a while after a second) would let the bucket refill between them.
            with H2Client(proxy.inbound) as client:
                sids = [client.request("GET", f"/plain{i}", "app.local") for i in range(4)]
                answers = [client.response(sid) for sid in sids]
            limited = [r for r in answers if r.status == 429]
            assert limited and limited[0].header("l5d-proxy-error") == "total rate limit exceeded: 2rps"
            assert proxy.metrics().get("inbound_http_local_ratelimit_total", ratelimit_scope="total") == \
                codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) + len(limited)
    finally:
        server.stop()


def test_meshed_clients_get_their_override_and_a_reload_changes_the_limits(tmp_path: Path):
    from helpers.issuer import Issuer
    from helpers.meshproxy import MeshProxy
    from helpers.upstream import HttpUpstream

    issuer = Issuer(tmp_path / "issuer", [WEB, API]).start()
    app = HttpUpstream(name="rl-mesh-app")
    port = _port(app.hostport)
    policy = tmp_path / "policy.yaml"
    override = ("  identity: {requestsPerSecond: 1}\n"
                "  overrides:\n    - requestsPerSecond: 6\n"
                "      clientRefs: [{kind: ServiceAccount, name: web, namespace: default}]\n")
    policy.write_text(_docs(port, override))
    b = a = None
    try:
        b = MeshProxy(env={**issuer.env(API), "MESHPROXY_INBOUND_DEFAULT_TARGET": app.hostport,
                           "MESHPROXY_POLICY": str(policy)}, name="rl-B", log_path=tmp_path / "b.log").start()
        endpoints = tmp_path / "endpoints.yaml"
        endpoints.write_text(
            "services:\n  api.mesh:80:\n    endpoints:\n"
            f"      - address: {app.hostport}\n        proxy: {b.inbound_hostport}\n"
            f"        identity: {API}\n        protocol: http1\n")
        a = MeshProxy(env={**issuer.env(WEB), "MESHPROXY_DESTINATION": f"file://{endpoints}"},
                      name="rl-A", log_path=tmp_path / "a.log").start()
        meshed = _burst(a.outbound, 10, "/meshed-", host="api.mesh:80")
        ok = sum(r.status == 200 for r in meshed)
        assert 6 <= ok <= 7, [r.status for r in meshed]
        limited = next(r for r in meshed if r.status == 429)
        assert limited.getheader("l5d-proxy-error") == "override rate limit exceeded: 6rps"
        # A plaintext client shares the unmeshed bucket: the per-identity limit of 1.
        plain = _burst(b.inbound, 4, "/plain-")
        assert sum(r.status == 200 for r in plain) in (1, 2), [r.status for r in plain]
        m = b.metrics()
        assert m.get("inbound_http_local_ratelimit_total", ratelimit_scope="identity", client_id=WEB) == 10 - ok

        # A reload raises the limit for everyone; requests in flight on the same connections go on.
        policy.write_text(_docs(port, "  identity: {requestsPerSecond: 50}\n"))
        _reloaded(b, 1)
        time.sleep(0.2)
        assert all(r.status == 200 for r in _burst(a.outbound, 20, "/after-", host="api.mesh:80"))
        assert all(r.status == 200 for r in _burst(b.inbound, 20, "/after-plain-"))
    finally:
        for proxy in (a, b):
            if proxy is not None:
                proxy.close()
        app.stop()
        issuer.stop()

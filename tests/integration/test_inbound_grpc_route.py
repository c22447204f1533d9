"""GRPCRoute with a Server parent, through a real proxy's inbound side and grpcio.

A Server (proxyProtocol gRPC) in front of a real grpcio app carries two
GRPCRoutes: ``echo-unary`` (Unary) authorized for loopback clients by a
NetworkAuthentication, ``echo-stream`` (ServerStream) for one mesh identity
only. A plaintext grpcio client gets its Unary answered, ServerStream denied
(route-level authorization) and BidiStream refused (no route), each as
PERMISSION_DENIED; Linkerd's inbound families carry ``route_kind="GRPCRoute"``.
"""

from __future__ import annotations

import grpc
import pytest

from helpers.grpc_service import EchoStub, GrpcServer, channel
from helpers.meshproxy import EXIT_CONFIG, MeshProxy, run_once

pytestmark = pytest.mark.timeout(120)

WEB = "web.test.serviceaccount.identity.cluster.local"


def _policy(port: int) -> str:
    return f"""
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{name: echo-grpc, namespace: test}}
spec: {{podSelector: {{matchLabels: {{app: echo}}}}, port: {port}, proxyProtocol: gRPC}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo-unary, namespace: test}}
spec:
  parentRefs: [{{name: echo-grpc, kind: Server, group: policy.linkerd.io}}]
  rules: [{{matches: [{{method: {{service: meshproxy.test.Echo, method: Unary}}}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo-stream, namespace: test}}
spec:
  parentRefs: [{{name: echo-grpc, kind: Server, group: policy.linkerd.io}}]
  rules:
    - matches: [{{method: {{type: RegularExpression, service: "meshproxy\\\\.test\\\\.Echo", method: "Server.*"}}}}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {{name: loopback, namespace: test}}
spec: {{networks: [{{cidr: 127.0.0.0/8}}]}}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: unary-local, namespace: test}}
spec:
  targetRef: {{group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo-unary}}
  requiredAuthenticationRefs: [{{group: policy.linkerd.io, kind: NetworkAuthentication, name: loopback}}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {{name: web-only, namespace: test}}
spec: {{identities: [{WEB}]}}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: stream-web, namespace: test}}
spec:
  targetRef: {{group: gateway.networking.k8s.io, kind: GRPCRoute, name: echo-stream}}
  requiredAuthenticationRefs: [{{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web-only}}]
"""


def test_grpc_calls_are_authorized_per_grpcroute_and_labelled_by_it(tmp_path):
    app = GrpcServer()
    policy = tmp_path / "policy.yaml"
    policy.write_text(_policy(app.port))
    proxy = MeshProxy(env={"MESHPROXY_INBOUND_DEFAULT_TARGET": app.hostport, "MESHPROXY_POLICY": str(policy)},
                      name="inbound-grpcroute", log_path=tmp_path / "proxy.log")
    try:
        proxy.start()
        chan = channel(f"{proxy.inbound[0]}:{proxy.inbound[1]}", authority="echo.test:80")
        try:
            stub = EchoStub(chan)
            for i in range(3):
                assert stub.unary(f"echo:{i}".encode(), timeout=10) == str(i).encode()
            with pytest.raises(grpc.RpcError) as denied:
                list(stub.server_stream(b"2:10", timeout=10))
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.RpcError) as no_route:
                list(stub.bidi(iter([b"x"]), timeout=10))
            assert no_route.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            chan.close()
        assert [c["method"] for c in app.calls] == ["Unary"] * 3  # the app saw only what was allowed
        m = proxy.metrics()
        srv = {"srv_group": "policy.linkerd.io", "srv_kind": "server", "srv_name": "echo-grpc",
               "srv_port": str(app.port)}
        unary = {"route_group": "gateway.networking.k8s.io", "route_kind": "GRPCRoute", "route_name": "echo-unary"}
        stream = {**unary, "route_name": "echo-stream"}
        authz = {"authz_group": "policy.linkerd.io", "authz_kind": "authorizationpolicy", "authz_name": "unary-local"}
        assert m.get("inbound_http_authz_allow_total", **srv, **unary, **authz) == 3
        assert m.get("inbound_http_authz_deny_total", **srv, **stream) == 1
        assert m.get("inbound_http_route_not_found_total", **srv) == 1
        inbound = {"direction": "inbound", **srv, **unary, **authz}
        assert m.get("request_total", **inbound) == 3
        assert m.get("response_total", **inbound, classification="success", grpc_status="0") == 3
        assert m.get("response_total", direction="inbound", **stream, error="unauthorized") == 1
    finally:
        proxy.close()
        app.stop()


def test_an_invalid_inbound_grpcroute_at_start_exits_64_naming_document_and_field(tmp_path):
    bad = tmp_path / "policy.yaml"
    bad.write_text(_policy(9090).replace("kind: GRPCRoute, name: echo-stream}", "kind: GRPCRoute, name: echo-nope}"))
    result = run_once(env={"MESHPROXY_POLICY": str(bad)})
    assert result.returncode == EXIT_CONFIG
    err = result.stderr.decode()
    assert "(AuthorizationPolicy stream-web): spec.targetRef.name" in err and "GRPCRoute test/echo-nope" in err, err

"""Inbound authorization with real proxies: identities from mutual TLS, networks,
the default policy, Linkerd's Server/ServerAuthorization documents, probes,
and TCP connections cut when a policy change revokes them."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

WEB = "web.default.serviceaccount.identity.cluster.local"
API = "api.default.serviceaccount.identity.cluster.local"
ROGUE = "rogue.default.serviceaccount.identity.cluster.local"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    from helpers.issuer import Issuer

    iss = Issuer(tmp_path_factory.mktemp("issuer"), [WEB, API, ROGUE]).start()
    yield iss
    iss.stop()


@pytest.fixture(scope="module")
def app():
    from helpers.upstream import HttpUpstream

    up = HttpUpstream(name="authz-app")
    yield up
    up.stop()


def _server_docs(port: int, identities: list[str]) -> str:
    """A Linkerd Server for the app port and a ServerAuthorization naming who may call it."""
    ids = "".join(f"        - {i}\n" for i in identities)
    return (
        "apiVersion: policy.linkerd.io/v1beta1\n"
        "kind: Server\n"
        "metadata:\n  name: api-http\n  namespace: default\n"
        "spec:\n  podSelector:\n    matchLabels:\n      app: api\n"
        f"  port: {port}\n  proxyProtocol: HTTP/1\n"
        "---\n"
        "apiVersion: policy.linkerd.io/v1beta1\n"
        "kind: ServerAuthorization\n"
        "metadata:\n  name: api-callers\n  namespace: default\n"
        "spec:\n  server:\n    name: api-http\n"
        "  client:\n    meshTLS:\n      identities:\n" + ids
    )


def _pair(issuer, app, tmp: Path, env_b: dict[str, str]):
    from helpers.meshproxy import MeshProxy

    b = MeshProxy(env={**issuer.env(API), "MESHPROXY_INBOUND_DEFAULT_TARGET": app.hostport, **env_b},
                  name="proxy-B", log_path=tmp / "b.log").start()
    endpoints = tmp / "endpoints.yaml"
    endpoints.write_text(
        "services:\n  api.mesh:80:\n    endpoints:\n"
        f"      - address: {app.hostport}\n        proxy: {b.inbound_hostport}\n"
        f"        identity: {API}\n        protocol: http1\n")
    a = MeshProxy(env={**issuer.env(WEB), "MESHPROXY_DESTINATION": f"file://{endpoints}"},
                  name="proxy-A", log_path=tmp / "a.log").start()
    return a, b


def _get(addr, path: str, host: str = "api.mesh:80"):
    conn = http.client.HTTPConnection(*addr, timeout=20)
    conn.request("GET", path, headers={"Host": host})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_all_authenticated_admits_meshed_clients_and_refuses_plaintext(issuer, app, tmp_path):
    a, b = _pair(issuer, app, tmp_path, {"MESHPROXY_DEFAULT_POLICY": "all-authenticated"})
    try:
        assert _get(a.outbound, "/meshed").status == 200
        # A plaintext client straight at B's inbound port: no identity.
        resp = _get(b.inbound, "/plain")
        assert resp.status == 403
        assert resp.getheader("l5d-proxy-error").startswith("unauthorized")
        assert all(b" /plain " not in r.head.raw for r in app.requests)
        m = b.metrics()
        assert m.get("inbound_http_authz_allow_total", srv_kind="default", srv_name="all-authenticated") >= 1
        assert m.get("inbound_http_authz_deny_total", srv_kind="default", srv_name="all-authenticated") >= 1
    finally:
        a.close()
        b.close()


def test_server_authorization_denies_the_wrong_identity_with_403(issuer, app, tmp_path):
    port = int(app.hostport.rsplit(":", 1)[1])
    policy = tmp_path / "policy.yaml"
    policy.write_text(_server_docs(port, [ROGUE]))
    a, b = _pair(issuer, app, tmp_path, {"MESHPROXY_POLICY": str(policy)})
    try:
        resp = _get(a.outbound, "/not-for-web")
        assert resp.status == 403
        assert "unauthorized" in resp.getheader("l5d-proxy-error")
        assert b.metrics().get("inbound_http_authz_deny_total", srv_kind="server", srv_name="api-http") == 1
        # The policy file changes: web is now allowed, on the same connections.
        policy.write_text(_server_docs(port, [WEB]))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _get(a.outbound, "/now-allowed").status == 200:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the new policy never applied")
        m = b.metrics()
        assert m.get("inbound_http_authz_allow_total", srv_kind="server", srv_name="api-http",
                     authz_kind="serverauthorization", authz_name="api-callers") >= 1
    finally:
        a.close()
        b.close()


def test_probe_paths_stay_reachable_whatever_the_policy(issuer, app, tmp_path):
    from helpers.meshproxy import MeshProxy

    env = {**issuer.env(API), "MESHPROXY_INBOUND_DEFAULT_TARGET": app.hostport,
           "MESHPROXY_DEFAULT_POLICY": "deny", "MESHPROXY_INBOUND_PROBE_PATHS": "/ready-probe"}
    with MeshProxy(env=env, name="proxy-P") as b:
        b.start()
        assert _get(b.inbound, "/ready-probe?verbose=1").status == 200
        assert _get(b.inbound, "/anything-else").status == 403
        # The proxy's own admin port is never subject to the policy.
        assert b.admin_request("GET", "/ready", timeout=2)[0] == 200


def _opaque_connect(b, port: int) -> socket.socket:
    from proxy.protocol import transport_header

    s = socket.create_connection(b.inbound, timeout=10)
    s.sendall(transport_header.encode(port, transport_header.PROTO_OPAQUE, "db"))
    return s


def test_tcp_is_judged_at_accept_and_cut_when_a_change_revokes_it(tmp_path):
    from helpers.meshproxy import MeshProxy

    echo = socket.create_server(("127.0.0.1", 0))
    port = echo.getsockname()[1]
    echo.settimeout(10)
    policy = tmp_path / "policy.yaml"
    open_doc = (
        "apiVersion: policy.linkerd.io/v1beta1\nkind: Server\n"
        "metadata:\n  name: db\n  namespace: default\n"
        f"spec:\n  podSelector: {{}}\n  port: {port}\n  proxyProtocol: opaque\n"
        "---\napiVersion: policy.linkerd.io/v1beta1\nkind: ServerAuthorization\n"
        "metadata:\n  name: db-anyone\n  namespace: default\n"
        "spec:\n  server:\n    name: db\n  client:\n    unauthenticated: true\n"
    )
    closed_doc = open_doc.split("---")[0]  # the Server alone: nobody is authorized
    policy.write_text(closed_doc)
    # The plaintext transport header below is a peer proxy's only when this proxy
    # has no identity and the client is in the cluster networks (loopback here).
    env = {"MESHPROXY_POLICY": str(policy), "MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8"}
    with MeshProxy(env=env, name="proxy-T") as b:
        b.start()
        s = _opaque_connect(b, port)
        assert s.recv(10) == b"", "a denied connection must be closed"
        s.close()
        assert b.metrics().get("inbound_tcp_authz_deny_total", srv_kind="server", srv_name="db") == 1

        policy.write_text(open_doc)
        deadline = time.monotonic() + 10
        while b.metrics().get("policy_reload_total", result="ok") < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        s = _opaque_connect(b, port)
        conn, _ = echo.accept()
        s.sendall(b"ping")
        assert conn.recv(10) == b"ping"
        assert b.metrics().get("inbound_tcp_authz_allow_total", authz_name="db-anyone") == 1

        policy.write_text(closed_doc)  # revoke: the open connection is cut
        s.settimeout(10)
        assert s.recv(10) == b""
        assert b.metrics().get("inbound_tcp_authz_terminate_total") == 1
        s.close()
        conn.close()
    echo.close()


def _route_docs(port: int) -> str:
    """A Server (protocol detected) with one HTTPRoute that only web may use."""
    return (
        "apiVersion: policy.linkerd.io/v1beta1\n"
        "kind: Server\n"
        "metadata: {name: api-http, namespace: default}\n"
        f"spec: {{podSelector: {{matchLabels: {{app: api}}}}, port: {port}}}\n"
        "---\n"
        "apiVersion: policy.linkerd.io/v1beta3\n"
        "kind: HTTPRoute\n"
        "metadata: {name: books, namespace: default}\n"
        "spec:\n"
        "  parentRefs: [{name: api-http, kind: Server, group: policy.linkerd.io}]\n"
        "  rules:\n  - matches: [{path: {type: PathPrefix, value: /books}}]\n"
        "---\n"
        "apiVersion: policy.linkerd.io/v1alpha1\n"
        "kind: MeshTLSAuthentication\n"
        "metadata: {name: web-only, namespace: default}\n"
        f"spec: {{identities: [{WEB}]}}\n"
        "---\n"
        "apiVersion: policy.linkerd.io/v1alpha1\n"
        "kind: AuthorizationPolicy\n"
        "metadata: {name: books-web, namespace: default}\n"
        "spec:\n"
        "  targetRef: {group: policy.linkerd.io, kind: HTTPRoute, name: books}\n"
        "  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web-only}]\n"
    )


def test_route_and_authz_labels_on_linkerds_inbound_families(issuer, app, tmp_path):
    """Linkerd's inbound labels: the authz families and request_total/response_total carry the server
    (with srv_port), the route and the authorization; every 403 is counted, the gRPC one too."""
    from helpers.h2client import H2Client

    port = int(app.hostport.rsplit(":", 1)[1])
    policy = tmp_path / "policy.yaml"
    policy.write_text(_route_docs(port))
    a, b = _pair(issuer, app, tmp_path, {"MESHPROXY_POLICY": str(policy)})
    try:
        assert _get(a.outbound, "/books/1").status == 200             # web, on the route
        assert _get(b.inbound, "/books/2").status == 403              # plaintext, on the route
        assert _get(a.outbound, "/authors").status == 403             # web, but no route matches
        with H2Client(b.inbound) as client:                           # a plaintext gRPC call on the route
            sid = client.request("POST", "/books/Get", authority="api.mesh:80",
                                 headers=[("content-type", "application/grpc"), ("te", "trailers")], body=b"")
            rsp = client.response(sid, timeout=20)
            assert rsp.status is not None
        m = b.metrics()
        srv = {"srv_group": "policy.linkerd.io", "srv_kind": "server", "srv_name": "api-http", "srv_port": str(port)}
        route = {"route_group": "policy.linkerd.io", "route_kind": "HTTPRoute", "route_name": "books"}
        authz = {"authz_group": "policy.linkerd.io", "authz_kind": "authorizationpolicy", "authz_name": "books-web"}
        meshed = {"tls": "true", "client_id": WEB, "target_port": str(port)}
        assert m.get("inbound_http_authz_allow_total", **srv, **route, **authz, **meshed) == 1
        assert m.get("inbound_http_authz_deny_total", **srv, **route, tls="no_identity") == 2
        assert m.get("inbound_http_route_not_found_total", **srv, **meshed) == 1
        assert m.get("inbound_http_authz_deny_total", **srv, **meshed) == 0  # no route is not a denial
        # The request families: the same labels, so Linkerd's viz queries group by them.
        inbound = {"direction": "inbound", **srv, **route}
        assert m.get("request_total", **inbound, **authz, **meshed) == 1
        assert m.get("response_total", **inbound, **authz, **meshed, status_code="200") == 1
        assert m.get("response_total", **inbound, tls="no_identity", error="unauthorized") == 2
        assert m.get("response_latency_ms_count", **inbound, **authz) == 1
    finally:
        a.close()
        b.close()


def _get_from(b, source_ip: str, path: str) -> http.client.HTTPResponse:
    """A plaintext GET on a new connection to B's inbound port, from ``source_ip`` (a loopback address)."""
    conn = http.client.HTTPConnection(*b.inbound, timeout=20, source_address=(source_ip, 0))
    conn.request("GET", path, headers={"Host": "app"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def _network_docs(port: int, cidr: str) -> str:
    """A Server for the app port and a ServerAuthorization admitting plaintext clients of ``cidr``."""
    return (
        "apiVersion: policy.linkerd.io/v1beta1\nkind: Server\n"
        "metadata:\n  name: app-http\n  namespace: default\n"
        f"spec:\n  podSelector: {{}}\n  port: {port}\n  proxyProtocol: HTTP/1\n"
        "---\napiVersion: policy.linkerd.io/v1beta1\nkind: ServerAuthorization\n"
        "metadata:\n  name: app-callers\n  namespace: default\n"
        "spec:\n  server:\n    name: app-http\n"
        f"  client:\n    unauthenticated: true\n    networks:\n      - cidr: {cidr}\n"
    )


def test_remembered_connection_authorizations_follow_the_client_and_the_policy(app, tmp_path):
    """The per-listener cache of HTTP connection authorizations (MESHPROXY_INBOUND_AUTHZ_CACHE, here 2):
    two clients on new connections each keep their own decision, every request is counted, and a policy
    change applies to the next connection of a client whose authorization was remembered."""
    from helpers.meshproxy import MeshProxy

    port = int(app.hostport.rsplit(":", 1)[1])
    policy = tmp_path / "policy.yaml"
    policy.write_text(_network_docs(port, "127.0.0.1/32"))
    env = {"MESHPROXY_POLICY": str(policy), "MESHPROXY_INBOUND_DEFAULT_TARGET": app.hostport,
           "MESHPROXY_INBOUND_AUTHZ_CACHE": "2"}
    with MeshProxy(env=env, name="proxy-C", log_path=tmp_path / "c.log") as b:
        b.start()
        # Interleaved, so that each client's second connection would find the other's decision if they shared.
        got = [_get_from(b, ip, f"/{ip}/{i}").status for i in range(3) for ip in ("127.0.0.1", "127.0.0.2")]
        assert got == [200, 403] * 3
        # More clients than the cache holds: each still judged as its own.
        assert [_get_from(b, ip, "/more").status for ip in ("127.0.0.3", "127.0.0.1", "127.0.0.4")] == [403, 200, 403]
        m = b.metrics()
        assert m.get("inbound_http_authz_allow_total", srv_name="app-http", authz_name="app-callers") == 4
        assert m.get("inbound_http_authz_deny_total", srv_name="app-http") == 5

        policy.write_text(_network_docs(port, "127.0.0.2/32"))  # the allowed client is now the other one
        deadline = time.monotonic() + 10
        while b.metrics().get("policy_reload_total", result="ok") < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [_get_from(b, ip, "/after").status for ip in ("127.0.0.1", "127.0.0.2", "127.0.0.1")] == [403, 200, 403]
        m = b.metrics()
        assert m.get("inbound_http_authz_allow_total", srv_name="app-http", authz_name="app-callers") == 5
        assert m.get("inbound_http_authz_deny_total", srv_name="app-http") == 7

"""Parsing inbound policy: Linkerd's Server/authorization documents, compact servers, linking, errors."""

from __future__ import annotations

import pytest

from proxy.policy.authz_model import ALL_NETWORKS, Network, Requirement
from proxy.policy.parse import ParseError, parse, parse_file

SERVER_WEB = """
apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata:
  name: web-http
  namespace: shop
  labels: {tier: front}
spec:
  podSelector:
    matchLabels: {app: web}
  port: 8080
  proxyProtocol: HTTP/1
"""

SERVER_GRPC = """
apiVersion: policy.linkerd.io/v1beta2
kind: Server
metadata:
  name: orders-grpc
  namespace: shop
  labels: {tier: back}
spec:
  podSelector:
    matchExpressions:
    - {key: app, operator: In, values: [orders]}
  port: grpc
  proxyProtocol: gRPC
"""

SERVER_ADMIN = """
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: admin, namespace: shop}
spec:
  podSelector: {}
  port: 9990
  accessPolicy: cluster-unauthenticated
"""

SERVER_DB = """
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  port: 5432
  proxyProtocol: opaque
"""

PORTS = "ports: {grpc: 9090}\n"

SAZ_BY_NAME = """
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: web-from-shop, namespace: shop}
spec:
  server: {name: web-http}
  client:
    meshTLS:
      identities:
      - "*.shop.serviceaccount.identity.cluster.local"
      - Gateway.Ingress.serviceaccount.identity.cluster.local
      serviceAccounts:
      - {name: prometheus, namespace: linkerd-viz}
      - {name: checkout}
"""

SAZ_BY_SELECTOR = """
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: back-from-office, namespace: shop}
spec:
  server:
    selector:
      matchExpressions:
      - {key: tier, operator: NotIn, values: [front]}
  client:
    unauthenticated: true
    networks:
    - cidr: 192.168.0.0/16
      except: [192.168.7.0/24]
    - cidr: fd00:1::/64
"""

SAZ_TLS = """
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {name: web-tls, namespace: shop}
spec:
  server: {name: web-http}
  client:
    meshTLS: {unauthenticatedTLS: true}
    networks: [{cidr: 0.0.0.0/0}, {cidr: "::/0"}]
"""

ROUTE = """
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: books-get, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs:
  - {name: web-http, kind: Server, group: policy.linkerd.io}
  hostnames: [web.shop.example]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /books}
      method: GET
"""

GATEWAY_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: metrics, namespace: shop}
spec:
  parentRefs:
  - {name: web-http, kind: Server, group: policy.linkerd.io}
  rules:
  - matches: [{path: {type: Exact, value: /metrics}}]
"""

MESH_AUTHN = """
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: shop-clients, namespace: shop}
spec:
  identities: ["*.shop.serviceaccount.identity.cluster.local"]
  identityRefs:
  - {kind: ServiceAccount, name: reporter, namespace: analytics}
  - {kind: ServiceAccount, namespace: billing}
  - {kind: Namespace, name: ops}
"""

NET_AUTHN = """
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: pod-network, namespace: shop}
spec:
  networks:
  - cidr: 10.0.0.0/8
    except: [10.9.0.0/16]
"""

POLICY_ROUTE = """
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: books-get-authz, namespace: shop}
spec:
  targetRef: {group: policy.linkerd.io, kind: HTTPRoute, name: books-get}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: shop-clients}
  - {group: policy.linkerd.io, kind: NetworkAuthentication, name: pod-network}
"""

POLICY_SERVER = """
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: orders-from-checkout, namespace: shop}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: orders-grpc}
  requiredAuthenticationRefs:
  - {kind: ServiceAccount, name: checkout}
"""

POLICY_NAMESPACE = """
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: everyone, namespace: shop}
spec:
  targetRef: {kind: Namespace, name: shop}
  requiredAuthenticationRefs: []
"""

COMPACT_SERVERS = """
ports: {http: 8080}
servers:
  web-http:
    port: http
    protocol: HTTP/2
    allow:
      - name: shop
        identities: ['*.shop.serviceaccount.identity.cluster.local']
      - unauthenticated: true
        networks: [10.0.0.0/8, {cidr: 10.1.0.0/16, except: [10.1.9.0/24]}]
  metrics:
    port: 9100
    accessPolicy: all-authenticated
"""

PROFILE = """
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: books.shop.svc.cluster.local, namespace: shop}
spec:
  routes:
  - name: books
    condition: {method: GET, pathRegex: /books}
"""


def docs(*parts: str) -> str:
    return "---\n".join(parts)


def servers(text: str, **kwargs):
    return {s.name: s for s in parse(text, **kwargs).authz.servers}


def test_servers_protocols_and_named_ports():
    found = servers(docs(SERVER_WEB, SERVER_GRPC, SERVER_ADMIN, SERVER_DB, PORTS))
    assert {n: (s.port, s.protocol, s.access_policy) for n, s in found.items()} == {
        "web-http": (8080, "http1", "deny"), "orders-grpc": (9090, "grpc", "deny"),
        "admin": (9990, None, "cluster-unauthenticated"), "db": (5432, "opaque", "deny")}
    assert all(s.namespace == "shop" and s.kind == "server" and not s.authorizations for s in found.values())


def test_server_authorizations_by_name_and_selector():
    found = servers(docs(SERVER_WEB, SERVER_GRPC, PORTS, SAZ_BY_NAME, SAZ_BY_SELECTOR, SAZ_TLS))
    web = found["web-http"].authorizations
    assert [(a.kind, a.name) for a in web] == [("serverauthorization", "web-from-shop"),
                                               ("serverauthorization", "web-tls")]
    assert web[0].requires == (Requirement("identity", identities=(
        "*.shop.serviceaccount.identity.cluster.local",
        "gateway.ingress.serviceaccount.identity.cluster.local",     # identities are DNS names: lower case
        "prometheus.linkerd-viz.serviceaccount.identity.cluster.local",
        "checkout.shop.serviceaccount.identity.cluster.local")),)
    assert web[1].requires == (Requirement("tls"),)                  # all networks: no network requirement
    (back,) = found["orders-grpc"].authorizations                      # selected by tier NotIn [front]
    assert back.name == "back-from-office" and back.requires == (Requirement("network", networks=(
        Network("192.168.0.0/16", ("192.168.7.0/24",)), Network("fd00:1::/64"))),)


def test_authorization_policies_routes_and_all_of_refs():
    text = docs(SERVER_WEB, SERVER_GRPC, PORTS, ROUTE, GATEWAY_ROUTE, MESH_AUTHN, NET_AUTHN, POLICY_ROUTE,
                POLICY_SERVER, POLICY_NAMESPACE)
    found = servers(text)
    web = found["web-http"]
    assert [a.name for a in web.authorizations] == ["everyone"]
    assert web.authorizations[0].requires == ()
    books, metrics = web.routes
    assert (books.name, books.hostnames, metrics.name) == ("books-get", ("web.shop.example",), "metrics")
    assert books.source == "HTTPRoute/shop/books-get"
    assert [r.source for r in books.rules] == ["HTTPRoute/shop/books-get"]
    assert books.rules[0].order == ("2024-01-01T00:00:00Z", "shop/books-get", 0)
    (authz,) = books.authorizations
    assert (authz.kind, authz.name) == ("authorizationpolicy", "books-get-authz")
    mesh, net = authz.requires                                         # both must hold
    assert mesh.identities == (
        "*.shop.serviceaccount.identity.cluster.local", "reporter.analytics.serviceaccount.identity.cluster.local",
        "*.billing.serviceaccount.identity.cluster.local", "*.ops.serviceaccount.identity.cluster.local")
    assert net.networks == (Network("10.0.0.0/8", ("10.9.0.0/16",)),)
    assert metrics.authorizations == ()
    orders = found["orders-grpc"]
    assert [a.name for a in orders.authorizations] == ["orders-from-checkout", "everyone"]
    assert orders.authorizations[0].requires[0].identities == ("checkout.shop.serviceaccount.identity.cluster.local",)


def test_trust_domain_names_service_accounts(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(docs(SERVER_GRPC, PORTS, POLICY_SERVER))
    (authz,) = {s.name: s for s in parse_file(str(path), trust_domain="prod.example").authz.servers}[
        "orders-grpc"].authorizations
    assert authz.requires[0].identities == ("checkout.shop.serviceaccount.identity.prod.example",)
    with pytest.raises(ValueError, match="trust domain"):
        parse(SERVER_WEB, trust_domain="Not A Domain")


def test_compact_servers():
    found = servers(COMPACT_SERVERS)
    web, metrics = found["web-http"], found["metrics"]
    assert (web.port, web.protocol, web.namespace, web.access_policy) == (8080, "h2", "default", "deny")
    shop, local = web.authorizations
    assert (shop.kind, shop.name, local.name) == ("compact", "shop", "web-http#1")
    assert shop.requires == (Requirement("identity", identities=("*.shop.serviceaccount.identity.cluster.local",)),)
    assert local.requires == (Requirement("network", networks=(
        Network("10.0.0.0/8"), Network("10.1.0.0/16", ("10.1.9.0/24",)))),)
    assert (metrics.port, metrics.access_policy, metrics.authorizations) == (9100, "all-authenticated", ())


def test_compact_server_targeted_by_a_linkerd_document():
    text = docs(COMPACT_SERVERS, POLICY_SERVER.replace("namespace: shop", "namespace: default")
                .replace("orders-grpc", "metrics"))
    assert [a.name for a in servers(text)["metrics"].authorizations] == ["orders-from-checkout"]


def test_outbound_and_inbound_documents_mix_in_one_file():
    mixed_route = ROUTE.replace(
        "  - {name: web-http, kind: Server, group: policy.linkerd.io}",
        "  - {name: web-http, kind: Server, group: policy.linkerd.io}\n  - {name: books, kind: Service, port: 80}")
    ps = parse(docs(PROFILE, SERVER_WEB, mixed_route, COMPACT_SERVERS.replace("web-http", "web2")
                    .replace("ports: {http: 8080}", "ports: {http: 8081}\nservices: {pay.shop.svc.cluster.local: {}}")))
    assert ps.get("books.shop.svc.cluster.local") is not None          # the profile
    assert ps.get("books.shop.svc.cluster.local:80").gateway_routes       # the route's Service side
    assert ps.get("pay.shop.svc.cluster.local") is not None             # compact services next to servers
    web = {s.name: s for s in ps.authz.servers}["web-http"]
    assert [r.name for r in web.routes] == ["books-get"]                  # the route's Server side
    assert not any("non-Service parents" in w for w in ps.warnings)       # the Server parent was not ignored
    assert parse(PROFILE).authz.servers == ()


def test_warnings():
    ps = parse(docs(SERVER_DB, SAZ_BY_SELECTOR.replace("NotIn", "In"),
                    ROUTE.replace("web-http", "db").replace("      method: GET", "      method: GET\n    filters:\n"
                                                            "    - {type: RequestHeaderModifier}"),
                    POLICY_NAMESPACE.replace("name: shop}", "name: elsewhere}")))
    text = "\n".join(ps.warnings)
    assert "ServerAuthorization/shop/back-from-office: spec.server.selector selects no Server" in text
    assert "HTTPRoute/shop/books-get: filters not applied on inbound routes" in text
    assert "Server/shop/db: proxyProtocol is not HTTP, its HTTPRoutes are unused" in text
    assert "namespace elsewhere has no Server" in text


def fails(text: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(text)
    return info.value


BAD = [
    # (document text, index, kind, name, field, words in the message)
    ("apiVersion: policy.linkerd.io/v1\nkind: ServerAuthorizationz\nmetadata: {name: x}\n", 0,
     "ServerAuthorizationz", "x", "kind", "unknown kind"),
    (SERVER_WEB.replace("v1beta1", "v1alpha1"), 0, "Server", "web-http", "apiVersion", "unsupported"),
    (SERVER_WEB.replace("port: 8080", "port: 0"), 0, "Server", "web-http", "spec.port", "integer"),
    (SERVER_WEB.replace("port: 8080", "port: Web_HTTP"), 0, "Server", "web-http", "spec.port", "port name"),
    (SERVER_WEB.replace("HTTP/1", "HTTP/3"), 0, "Server", "web-http", "spec.proxyProtocol", "unknown protocol"),
    (SERVER_WEB + "  accessPolicy: deny\n", 0, "Server", "web-http", "spec.accessPolicy", "v1beta3"),
    (SERVER_ADMIN.replace("cluster-unauthenticated", "allow-all"), 0, "Server", "admin", "spec.accessPolicy",
     "unknown policy"),
    (SERVER_WEB.replace("  podSelector:\n    matchLabels: {app: web}\n", ""), 0, "Server", "web-http",
     "spec.podSelector", "exactly one"),
    (SERVER_GRPC.replace("operator: In", "operator: Within"), 0, "Server", "orders-grpc",
     "spec.podSelector.matchExpressions[0].operator", "Within"),
    (SERVER_GRPC, 0, "Server", "orders-grpc", "spec.port", "named port 'grpc' is not defined"),
    (docs(SERVER_WEB, SERVER_WEB), 1, "Server", "web-http", "metadata.name", "already defined (document 0)"),
    (docs(SERVER_WEB, SERVER_ADMIN.replace("9990", "8080")), 1, "Server", "admin", "spec.port",
     "already belongs to Server shop/web-http"),
    (docs(SERVER_WEB, SAZ_BY_NAME.replace("*.shop.", "shop.*.")), 1, "ServerAuthorization", "web-from-shop",
     "spec.client.meshTLS.identities[0]", "bad identity"),
    (docs(SERVER_WEB, SAZ_BY_NAME.replace("{name: checkout}", "{name: Check_Out}")), 1, "ServerAuthorization",
     "web-from-shop", "spec.client.meshTLS.serviceAccounts[1]", "bad service account"),
    (docs(SERVER_WEB, SAZ_BY_NAME.replace("server: {name: web-http}", "server: {name: web, selector: {}}")), 1,
     "ServerAuthorization", "web-from-shop", "spec.server", "exactly one"),
    (docs(SERVER_WEB, SAZ_BY_NAME.replace("server: {name: web-http}", "server: {name: web-https}")), 1,
     "ServerAuthorization", "web-from-shop", "spec.server.name", "no Server shop/web-https"),
    (SAZ_BY_SELECTOR.replace("unauthenticated: true", "unauthenticated: true\n    meshTLS: {unauthenticatedTLS: true}"),
     0, "ServerAuthorization", "back-from-office", "spec.client", "exactly one"),
    (SAZ_BY_SELECTOR.replace("192.168.0.0/16", "192.168.0.0/33"), 0, "ServerAuthorization", "back-from-office",
     "spec.client.networks[0].cidr", "bad CIDR"),
    (SAZ_BY_SELECTOR.replace("192.168.0.0/16", "192.168.0.1/16"), 0, "ServerAuthorization", "back-from-office",
     "spec.client.networks[0].cidr", "host bits"),
    (SAZ_BY_SELECTOR.replace("192.168.7.0/24", "10.0.0.0/24"), 0, "ServerAuthorization", "back-from-office",
     "spec.client.networks[0].except[0]", "not inside 192.168.0.0/16"),
    (SAZ_TLS.replace("unauthenticatedTLS: true", "unauthenticatedTLS: true, identities: ['*']"), 0,
     "ServerAuthorization", "web-tls", "spec.client.meshTLS", "excludes"),
    (NET_AUTHN.replace("cidr: 10.0.0.0/8", "cidr: ten"), 0, "NetworkAuthentication", "pod-network",
     "spec.networks[0].cidr", "bad CIDR"),
    (MESH_AUTHN.replace("kind: Namespace", "kind: Deployment"), 0, "MeshTLSAuthentication", "shop-clients",
     "spec.identityRefs[2].kind", "ServiceAccount or Namespace"),
    (MESH_AUTHN.replace('"*.shop.', '"*shop.'), 0, "MeshTLSAuthentication", "shop-clients",
     "spec.identities[0]", "bad identity"),
    (docs(SERVER_WEB, POLICY_SERVER), 1, "AuthorizationPolicy", "orders-from-checkout", "spec.targetRef.name",
     "no Server shop/orders-grpc"),
    (docs(SERVER_WEB, POLICY_ROUTE, MESH_AUTHN, NET_AUTHN), 1, "AuthorizationPolicy", "books-get-authz",
     "spec.targetRef.name", "HTTPRoute shop/books-get is not in this policy file"),
    (docs(ROUTE.replace("{name: web-http, kind: Server, group: policy.linkerd.io}", "{name: books, kind: Service}"),
          POLICY_ROUTE, MESH_AUTHN, NET_AUTHN), 1, "AuthorizationPolicy", "books-get-authz", "spec.targetRef.name",
     "has no Server parent"),
    (docs(SERVER_WEB, ROUTE, POLICY_ROUTE, MESH_AUTHN), 2, "AuthorizationPolicy", "books-get-authz",
     "spec.requiredAuthenticationRefs[1].name", "no NetworkAuthentication shop/pod-network"),
    (docs(SERVER_WEB, GATEWAY_ROUTE, POLICY_ROUTE.replace("books-get}", "metrics}"), MESH_AUTHN, NET_AUTHN), 2,
     "AuthorizationPolicy", "books-get-authz", "spec.targetRef.group", "gateway.networking.k8s.io"),
    (POLICY_SERVER.replace("kind: Server,", "kind: Deployment,"), 0, "AuthorizationPolicy", "orders-from-checkout",
     "spec.targetRef.kind", "Server, HTTPRoute, GRPCRoute or Namespace"),
    (POLICY_ROUTE.replace("{group: policy.linkerd.io, kind: NetworkAuthentication", "{kind: NetworkAuthentication"),
     0, "AuthorizationPolicy", "books-get-authz", "spec.requiredAuthenticationRefs[1].group", "policy.linkerd.io"),
    (POLICY_NAMESPACE.replace("  requiredAuthenticationRefs: []\n", ""), 0, "AuthorizationPolicy", "everyone",
     "spec.requiredAuthenticationRefs", "empty list admits every client"),
    (ROUTE, 0, "HTTPRoute", "books-get", "spec.parentRefs", "parentRefs[0]: no Server shop/web-http"),
    (docs(SERVER_WEB, ROUTE.replace("group: policy.linkerd.io}", "group: policy.linkerd.io, namespace: web}")), 1,
     "HTTPRoute", "books-get", "spec.parentRefs", "must be in the route's namespace"),
    (docs(SERVER_WEB, ROUTE + "    backendRefs: [{name: books, port: 80}]\n"), 1, "HTTPRoute", "books-get",
     "spec.rules[0].backendRefs", "need a Service parent"),
    (ROUTE.replace("type: PathPrefix", "type: Glob"), 0, "HTTPRoute", "books-get",
     "spec.rules[0].matches[0].path.type", "unsupported type"),
    (ROUTE.replace("group: policy.linkerd.io}", "group: policy.linkerd.io, port: 8080}"), 0, "HTTPRoute",
     "books-get", "spec.parentRefs[0].port", "Server names the port"),
    (ROUTE.replace("web.shop.example", "web_shop"), 0, "HTTPRoute", "books-get", "spec.hostnames[0]", "bad hostname"),
    (COMPACT_SERVERS.replace("- unauthenticated: true", "- unauthenticated: true\n        identities: ['*']"), 0,
     "", "", "servers.web-http.allow[1]", "one of them"),
    (COMPACT_SERVERS.replace("except: [10.1.9.0/24]", "except: [10.2.9.0/24]"), 0, "", "",
     "servers.web-http.allow[1].networks[1].except[0]", "not inside"),
    (COMPACT_SERVERS.replace("    protocol: HTTP/2", "    protocl: HTTP/2"), 0, "", "", "servers.web-http.protocl",
     "unknown field"),
    (COMPACT_SERVERS.replace("port: http", "port: https"), 0, "", "", "servers.web-http.port", "'https'"),
    (COMPACT_SERVERS + "listeners: {}\n", 0, "", "", "listeners", "unknown field"),
    (docs(COMPACT_SERVERS, "ports: {http: 8081}\n"), 1, "", "", "ports.http", "already 8080 (document 0)"),
    (docs(COMPACT_SERVERS, SERVER_WEB.replace("namespace: shop", "namespace: default")), 1, "Server", "web-http",
     "metadata.name", "already defined"),
]


@pytest.mark.parametrize("text,index,kind,name,field,words", BAD, ids=[f"{b[4]}-{i}" for i, b in enumerate(BAD)])
def test_invalid_documents_name_document_and_field(text, index, kind, name, field, words):
    err = fails(text)
    assert (err.index, err.kind, err.name, err.field) == (index, kind, name, field)
    assert f"document {index}" in str(err) and field in str(err) and words in err.why, str(err)


def test_all_networks_written_out_need_no_check():
    (authz,) = servers(docs(SERVER_WEB, SAZ_TLS))["web-http"].authorizations
    assert all(r.kind != "network" for r in authz.requires) and ALL_NETWORKS == (
        Network("0.0.0.0/0"), Network("::/0"))

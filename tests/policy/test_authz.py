"""Inbound authorization decisions: default policies, identities, networks, routes, probes, labels."""

from __future__ import annotations

import pytest

from proxy.policy.authz import REASON_NO_ROUTE, REASON_UNAUTHORIZED, Client, InboundPolicy
from proxy.policy.authz_model import Authorization, AuthzSet, InboundRoute, Network, Requirement, Server
from proxy.policy.model import HeaderMatch, PathMatch, RequestMatch, Route
from proxy.policy.parse import parse

CLUSTER = ("10.0.0.0/8", "fd00::/8")
SHOP = "web.shop.serviceaccount.identity.cluster.local"
OTHER = "api.billing.serviceaccount.identity.cluster.local"
BARE = "shop.serviceaccount.identity.cluster.local"

IN_PLAIN = Client("10.1.2.3", None, False)
IN_MESHED = Client("10.1.2.3", SHOP, True)
OUT_PLAIN = Client("203.0.113.9", None, False)
OUT_MESHED = Client("203.0.113.9", OTHER, True)


def no_headers(name: str) -> str | None:
    return None


def headers(**values: str):
    return lambda name: values.get(name.replace("-", "_"))


def build(text: str | None = None, default: str = "deny", probes: tuple[str, ...] = ()) -> InboundPolicy:
    return InboundPolicy.build(parse(text).authz if text else None, default, CLUSTER, probes)


def labels(decision) -> dict[str, str]:
    return dict(decision.labels)


# ---- default policies --------------------------------------------------------------

DEFAULTS = {
    # policy: (in-cluster plain, in-cluster meshed, outside plain, outside meshed)
    "all-unauthenticated": (True, True, True, True),
    "all-authenticated": (False, True, False, True),
    "cluster-unauthenticated": (True, True, False, False),
    "cluster-authenticated": (False, True, False, False),
    "deny": (False, False, False, False),
    "audit": (True, True, True, True),
}


@pytest.mark.parametrize("policy", DEFAULTS)
def test_default_policies(policy):
    port = build(default=policy).port(8080)
    got = tuple(port.check_connection(c).allowed for c in (IN_PLAIN, IN_MESHED, OUT_PLAIN, OUT_MESHED))
    assert got == DEFAULTS[policy]
    assert port.protocol is None and not port.per_request
    allowed = port.check_connection(IN_MESHED)
    if allowed.allowed:
        assert allowed.labels == (("srv_group", ""), ("srv_kind", "default"), ("srv_name", policy),
                                  ("authz_group", ""), ("authz_kind", "default"), ("authz_name", policy))
        assert allowed.reason == ""
        http = port.check_request(IN_MESHED, "GET", "/", no_headers)
        assert labels(http)["route_kind"] == "default" and labels(http)["route_name"] == "default"
    denied = port.check_connection(OUT_PLAIN)
    if not denied.allowed:
        assert denied.labels == (("srv_group", ""), ("srv_kind", "default"), ("srv_name", policy))
        assert denied.reason == (f"unauthorized: default policy {policy} does not admit "
                                 "unauthenticated client 203.0.113.9")


def test_cluster_networks_include_ipv6_and_ipv4_mapped_clients():
    port = build(default="cluster-unauthenticated").port(80)
    assert port.check_connection(Client("fd00::1", None, False)).allowed
    assert not port.check_connection(Client("2001:db8::1", None, False)).allowed
    assert port.check_connection(Client("::ffff:10.0.0.7", None, False)).allowed   # dual-stack listener
    assert not port.check_connection(Client("not-an-ip", None, False)).allowed      # in no network


def test_bad_build_arguments():
    with pytest.raises(ValueError, match="unknown default policy"):
        build(default="allow")
    with pytest.raises(ValueError):
        InboundPolicy.build(None, "deny", ("10.0.0.0/33",), ())
    with pytest.raises(ValueError, match="must start with '/'"):
        InboundPolicy.build(None, "deny", CLUSTER, ("ready",))


# ---- servers and their authorizations ---------------------------------------------------

SERVER = """
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: web-http, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  port: 8080
  proxyProtocol: HTTP/1
"""


def authz(client: str, name: str = "web-authz") -> str:
    return f"""
apiVersion: policy.linkerd.io/v1beta1
kind: ServerAuthorization
metadata: {{name: {name}, namespace: shop}}
spec:
  server: {{name: web-http}}
  client: {client}
"""


def test_a_server_nobody_authorizes_denies_everything_whatever_the_default():
    port = build(SERVER, default="all-unauthenticated").port(8080)
    assert port.protocol == "http1" and not port.per_request
    for client in (IN_PLAIN, IN_MESHED, OUT_MESHED):
        decision = port.check_connection(client)
        assert not decision.allowed and decision.labels == (
            ("srv_group", "policy.linkerd.io"), ("srv_kind", "server"), ("srv_name", "web-http"))
    assert port.check_connection(IN_MESHED).reason == (
        f"unauthorized: Server shop/web-http does not admit identity {SHOP} from 10.1.2.3")
    assert build(SERVER, default="all-unauthenticated").port(8081).check_connection(IN_PLAIN).allowed


@pytest.mark.parametrize("identities,admitted", [
    ([SHOP], {SHOP}),                                                                # exact
    (["*.shop.serviceaccount.identity.cluster.local"], {SHOP}),                      # suffix
    (["*.serviceaccount.identity.cluster.local"], {SHOP, OTHER, BARE}),              # wider suffix
    (["*"], {SHOP, OTHER, BARE}),                                                    # any authenticated
    (["WEB.shop.serviceaccount.identity.cluster.local"], {SHOP}),                    # DNS names ignore case
])
def test_identities(identities, admitted):
    port = build(SERVER + "---" + authz(f"{{meshTLS: {{identities: {identities}}}}}")).port(8080)
    for identity in (SHOP, OTHER, BARE):
        assert port.check_connection(Client("10.1.2.3", identity, True)).allowed == (identity in admitted)
    assert not port.check_connection(Client("10.1.2.3", None, True)).allowed         # TLS without identity
    assert not port.check_connection(IN_PLAIN).allowed
    assert port.check_connection(Client("10.1.2.3", SHOP.upper(), True)).allowed == (SHOP in admitted)


def test_identity_suffix_does_not_match_a_partial_label():
    port = build(SERVER + "---" + authz("{meshTLS: {identities: ['*.shop.serviceaccount.identity.cluster.local']}}"))
    assert not port.port(8080).check_connection(
        Client("10.1.2.3", "web.myshop.serviceaccount.identity.cluster.local", True)).allowed


def test_networks_with_except_ipv4_and_ipv6():
    client = """
    unauthenticated: true
    networks:
    - {cidr: 192.168.0.0/16, except: [192.168.7.0/24, 192.168.8.0/24]}
    - {cidr: 192.168.7.0/24, except: [192.168.7.128/25]}
    - {cidr: "2001:db8::/32", except: ["2001:db8:bad::/48"]}
"""
    port = build(SERVER + "---" + authz(client)).port(8080)
    cases = {"192.168.1.1": True, "192.168.8.1": False, "192.168.7.1": True,     # re-admitted by the 2nd network
             "192.168.7.200": False, "10.1.2.3": False, "2001:db8:1::5": True, "2001:db8:bad::5": False,
             "2001:db9::1": False, "::ffff:192.168.1.1": True}
    assert {ip: port.check_connection(Client(ip, None, False)).allowed for ip in cases} == cases
    assert port.check_connection(Client("192.168.1.1", SHOP, True)).allowed         # unauthenticated admits all


def test_unauthenticated_tls_needs_tls_not_an_identity():
    port = build(SERVER + "---" + authz("{meshTLS: {unauthenticatedTLS: true}}")).port(8080)
    assert port.check_connection(Client("10.1.2.3", None, True)).allowed
    assert port.check_connection(IN_MESHED).allowed
    denied = port.check_connection(IN_PLAIN)
    assert not denied.allowed and "unauthenticated client 10.1.2.3" in denied.reason


POLICY_DOCS = """
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: shop-clients, namespace: shop}
spec:
  identityRefs: [{kind: ServiceAccount, name: web}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: pod-network, namespace: shop}
spec:
  networks: [{cidr: 10.0.0.0/8, except: [10.9.0.0/16]}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-policy, namespace: shop}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: shop-clients}
  - {group: policy.linkerd.io, kind: NetworkAuthentication, name: pod-network}
"""


def test_required_authentications_must_all_hold():
    port = build(SERVER + "---" + POLICY_DOCS).port(8080)
    assert port.check_connection(IN_MESHED).allowed
    assert labels(port.check_connection(IN_MESHED)) == {
        "srv_group": "policy.linkerd.io", "srv_kind": "server", "srv_name": "web-http",
        "authz_group": "policy.linkerd.io", "authz_kind": "authorizationpolicy", "authz_name": "web-policy"}
    assert not port.check_connection(Client("203.0.113.9", SHOP, True)).allowed   # identity, wrong network
    assert not port.check_connection(Client("10.9.0.1", SHOP, True)).allowed      # excepted network
    assert not port.check_connection(IN_PLAIN).allowed                             # network, no identity
    assert not port.check_connection(Client("10.1.2.3", OTHER, True)).allowed


def test_empty_required_authentications_admit_everyone():
    policy = POLICY_DOCS.split("---")[2]
    head = policy[: policy.index("  requiredAuthenticationRefs:")]
    text = SERVER + "---" + head + "  requiredAuthenticationRefs: []\n"
    port = build(text, probes=("/ready",)).port(8080)
    assert port.check_connection(OUT_PLAIN).allowed
    assert not port.per_request           # everyone is admitted: probes need no per-request check


def test_access_policy_decides_when_no_authorization_admits():
    text = SERVER + "  accessPolicy: cluster-authenticated\n---" + authz(
        "{unauthenticated: true, networks: [{cidr: 203.0.113.0/24}]}")
    port = build(text).port(8080)
    assert labels(port.check_connection(OUT_PLAIN))["authz_name"] == "web-authz"
    decided = port.check_connection(IN_MESHED)
    assert decided.allowed and labels(decided)["authz_kind"] == "default"
    assert labels(decided)["authz_name"] == "cluster-authenticated"
    assert not port.check_connection(IN_PLAIN).allowed
    audit = build(SERVER + "  accessPolicy: audit\n").port(8080).check_connection(OUT_PLAIN)
    assert audit.allowed and labels(audit)["authz_name"] == "audit"


def test_opaque_server_is_never_per_request():
    text = SERVER.replace("HTTP/1", "opaque")
    port = build(text, probes=("/ready",)).port(8080)
    assert port.protocol == "opaque" and not port.per_request


# ---- HTTP routes -----------------------------------------------------------------------

ROUTES = """
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: books, namespace: shop}
spec:
  parentRefs: [{name: web-http, kind: Server, group: policy.linkerd.io}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /books}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books-admin, namespace: shop}
spec:
  parentRefs: [{name: web-http, kind: Server, group: policy.linkerd.io}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /books/admin}
    - path: {type: Exact, value: /books}
      method: DELETE
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: admins, namespace: shop}
spec:
  identities: ["admin.ops.serviceaccount.identity.cluster.local"]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: books-public, namespace: shop}
spec:
  targetRef: {group: policy.linkerd.io, kind: HTTPRoute, name: books}
  requiredAuthenticationRefs: []
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: books-admin-only, namespace: shop}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: books-admin}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: admins}
"""
ADMIN = Client("10.1.2.3", "admin.ops.serviceaccount.identity.cluster.local", True)


def test_route_scoped_authorizations_follow_route_precedence():
    port = build(SERVER + "---" + ROUTES, default="all-unauthenticated").port(8080)
    assert port.per_request
    public = port.check_request(OUT_PLAIN, "GET", "/books/12", no_headers)
    assert public.allowed and labels(public) == {
        "srv_group": "policy.linkerd.io", "srv_kind": "server", "srv_name": "web-http",
        "authz_group": "policy.linkerd.io", "authz_kind": "authorizationpolicy", "authz_name": "books-public",
        "route_group": "policy.linkerd.io", "route_kind": "HTTPRoute", "route_name": "books"}
    # The longer prefix and the exact+method match belong to books-admin.
    for method, path in (("GET", "/books/admin/users"), ("DELETE", "/books")):
        denied = port.check_request(OUT_PLAIN, method, path, no_headers)
        assert not denied.allowed and labels(denied)["route_name"] == "books-admin"
        assert denied.reason.startswith(REASON_UNAUTHORIZED + ": Server shop/web-http route books-admin")
        assert port.check_request(ADMIN, method, path, no_headers).allowed
    assert port.check_request(OUT_PLAIN, "GET", "/books", no_headers).allowed      # GET /books is books'
    # Route-scoped authorizations do not open the connection level.
    assert not port.check_connection(OUT_PLAIN).allowed


def test_no_route_is_denied_with_its_own_reason():
    port = build(SERVER + "---" + ROUTES).port(8080)
    denied = port.check_request(ADMIN, "GET", "/authors", no_headers)
    assert not denied.allowed and denied.reason.startswith(REASON_NO_ROUTE + ": ")
    assert denied.labels == (("srv_group", "policy.linkerd.io"), ("srv_kind", "server"), ("srv_name", "web-http"),
                             ("route_group", ""), ("route_kind", ""), ("route_name", ""))
    assert denied.route_not_found
    assert "GET /authors" in denied.reason
    assert "s3cret" not in port.check_request(ADMIN, "GET", "/authors?token=s3cret", no_headers).reason


def test_server_wide_authorizations_cover_every_route():
    billing = authz("{meshTLS: {identities: ['*.billing.serviceaccount.identity.cluster.local']}}")
    text = SERVER + "---" + ROUTES + "---" + billing
    port = build(text).port(8080)
    decided = port.check_request(OUT_MESHED, "GET", "/books/admin", no_headers)
    assert decided.allowed and labels(decided)["authz_name"] == "web-authz"
    assert labels(decided)["route_name"] == "books-admin"
    assert port.check_connection(OUT_MESHED).allowed
    assert not port.check_request(OUT_MESHED, "GET", "/nothing", no_headers).allowed


def test_server_without_routes_has_a_default_route():
    port = build(SERVER + "---" + authz("{unauthenticated: true}")).port(8080)
    assert not port.per_request
    decided = port.check_request(OUT_PLAIN, "POST", "/anything?x=1", no_headers)
    assert decided.allowed and decided.labels[-3:] == (("route_group", ""), ("route_kind", "default"),
                                                       ("route_name", "default"))
    # Every request of such a port: the connection's judgement, under the default route.
    assert port.check_http(OUT_PLAIN) is decided


def test_header_matches_and_hostnames():
    text = SERVER + """---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: canary, namespace: shop}
spec:
  parentRefs: [{name: web-http, kind: Server, group: policy.linkerd.io}]
  hostnames: ["*.shop.example"]
  rules:
  - matches: [{headers: [{name: X-Canary, value: "1"}]}]
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: exact-host, namespace: shop}
spec:
  parentRefs: [{name: web-http, kind: Server, group: policy.linkerd.io}]
  hostnames: [web.shop.example]
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: any-host, namespace: shop}
spec:
  parentRefs: [{name: web-http, kind: Server, group: policy.linkerd.io}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: all, namespace: shop}
spec:
  targetRef: {kind: Namespace, name: shop}
  requiredAuthenticationRefs: []
"""
    port = build(text).port(8080)

    def route(path: str, **hdrs: str) -> str:
        return labels(port.check_request(IN_PLAIN, "GET", path, headers(**hdrs))).get("route_name")

    assert route("/api", host="WEB.shop.example:8080") == "exact-host"          # exact host beats wildcard
    assert route("/api", host="a.shop.example", x_canary="1") == "canary"
    assert route("/api", host="a.shop.example") == "any-host"                   # wildcard route has no match
    assert route("/x", host="a.shop.example") == ""                             # no route
    assert route("/x", host="shop.example", x_canary="1") == ""                 # wildcard needs a label
    assert route("/x", host="deep.a.shop.example", x_canary="1") == "canary"
    assert route("/api") == "any-host"


# ---- probes ----------------------------------------------------------------------------


def test_probe_paths_are_always_allowed_for_get_and_head():
    for text in (None, SERVER, SERVER + "---" + ROUTES):
        policy = build(text, default="deny", probes=("/ready", "/live"))
        for port in (policy.port(8080), policy.port(9999)):
            assert port.per_request
            for method in ("GET", "HEAD"):
                probe = port.check_request(OUT_PLAIN, method, "/ready?verbose=1", no_headers)
                assert probe.allowed and labels(probe)["authz_name"] == "probe"
                assert labels(probe)["route_name"] == "probe"
            assert not port.check_request(OUT_PLAIN, "POST", "/ready", no_headers).allowed
            assert not port.check_request(OUT_PLAIN, "GET", "/ready/x", no_headers).allowed


def test_no_probe_paths_no_per_request_work():
    assert not build(default="deny").port(1).per_request


# ---- model built by hand, compile-time work ---------------------------------------------------


def test_hand_built_authz_set_and_precomputed_decisions():
    rule = Route("r0", matches=(RequestMatch(method="GET", path=PathMatch("exact", "/x"),
                                             headers=(HeaderMatch("x-tenant", "regex", "a-[0-9]+"),)),),
                 source="HTTPRoute/ns/route-x", order=("", "ns/route-x", 0))
    net = Requirement("network", networks=(Network("10.0.0.0/8", ("10.1.0.0/16",)),))
    server = Server("srv", "ns", 7000, "h2", authorizations=(Authorization("compact", "net", (net,)),),
                    routes=(InboundRoute("route-x", "ns", (rule,)),))
    port = InboundPolicy.build(AuthzSet((server,)), "deny", CLUSTER, ()).port(7000)
    assert port.protocol == "h2" and port.per_request
    near, far = Client("10.2.0.1", None, False), Client("10.3.0.1", SHOP, True)
    first = port.check_request(near, "GET", "/x", headers(x_tenant="a-12"))
    assert first.allowed and labels(first)["route_name"] == "route-x"
    assert port.check_request(far, "GET", "/x", headers(x_tenant="a-12")) is first   # made once, at build
    assert not port.check_request(IN_PLAIN, "GET", "/x", headers(x_tenant="a-12")).allowed   # 10.1/16 excepted
    assert not port.check_request(near, "GET", "/x", headers(x_tenant="b-1")).allowed
    with pytest.raises(ValueError, match="two Servers"):
        InboundPolicy.build(AuthzSet((server, server)), "deny", CLUSTER, ())


def test_port_lookup_is_cached():
    policy = build(SERVER)
    assert policy.port(8080) is policy.port(8080) and policy.port(1) is policy.port(2)

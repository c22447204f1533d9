"""URLRewrite through the real proxy: HTTP/1, HTTP/2 and the meshed hop; backends echo what they received.

The rewrite used here is not idempotent (``/api`` -> ``/api/v2``), so a
request rewritten twice (by both proxies of the meshed hop) would show
``/api/v2/v2``.
"""

from __future__ import annotations

import http.client
import json
import time

import pytest

from helpers.echo import EchoBackend
from helpers.h2client import H2Client
from helpers.h2server import H2Origin
from helpers.meshproxy import MeshProxy
from tests.integration.test_policy import PLAIN_PEER, _write, mesh  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(120)

REWRITE_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rewrites, namespace: test}
spec:
  parentRefs:
    - {kind: Service, name: web, port: 80}
    - {kind: Service, name: meshed, port: 80}
    - {kind: Service, name: h2, port: 80}
  rules:
    - matches: [{path: {type: PathPrefix, value: /api}}]
      filters:
        - type: URLRewrite
          urlRewrite: {hostname: backend.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /api/v2}}
    - matches: [{path: {type: PathPrefix, value: /strip/}}]
      filters:
        - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}
    - matches: [{path: {type: Exact, value: /old}}]
      filters:
        - {type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /new/place}}}
"""


def _get(conn: http.client.HTTPConnection, host: str, target: str) -> dict:
    conn.request("GET", target, headers={"Host": host})
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200, body
    return json.loads(body)


# (request target, what the backend must see): Gateway API's ReplacePrefixMatch table.
CASES = [
    ("/api", "/api/v2"),
    ("/api/", "/api/v2/"),
    ("/api/users?id=7", "/api/v2/users?id=7"),
    ("/apiary", "/apiary"),  # not under the prefix element-wise: no rule, untouched
    ("/strip/a/b", "/a/b"),
    ("/strip/", "/"),
    ("/strip", "/"),
    ("/old?x=1", "/new/place?x=1"),
    ("/old/more", "/old/more"),
]


def test_url_rewrite_edits_http1_requests_per_gateway_api(mesh):  # noqa: F811
    _, proxy, endpoints, _ = mesh
    app = EchoBackend("app")
    try:
        _write(endpoints, f"services:\n  web.test.svc.cluster.local:80:\n"
                          f"    endpoints: [{{address: 127.0.0.1:{app.port}}}]\n")
        p = proxy(REWRITE_ROUTE)
        conn = http.client.HTTPConnection(*p.outbound, timeout=10)
        for target, want in CASES:
            got = _get(conn, "web.test", target)
            assert got["path"] == want, (target, got)
            rewritten_host = target.startswith("/api") and not target.startswith("/apiary")
            assert got["host"] == ("backend.internal" if rewritten_host else "web.test"), (target, got)
        # Absolute form (an http_proxy client): the path is rewritten and the URI's host replaced.
        got = _get(conn, "ignored", "http://web.test/api/x")
        assert (got["path"], got["host"]) == ("/api/v2/x", "backend.internal")
    finally:
        app.stop()


def test_url_rewrite_applies_once_across_the_meshed_hop_and_over_http2(mesh):  # noqa: F811
    _, proxy, endpoints, _ = mesh
    app = EchoBackend("app")
    origin = H2Origin(name="h2-rewrite")
    peer = MeshProxy(env=PLAIN_PEER, name="peer-proxy-rw").start()
    try:
        _write(endpoints, "services:\n"  # an HTTP/1-only app: HTTP/2 clients' requests are restored for it
               f"  web.test.svc.cluster.local:80:\n"
               f"    endpoints: [{{address: 127.0.0.1:{app.port}, protocol: http1}}]\n"
               f"  meshed.test.svc.cluster.local:80:\n    endpoints:\n"
               f"      - {{address: 127.0.0.1:{app.port}, proxy: {peer.inbound_hostport}}}\n"
               f"  h2.test.svc.cluster.local:80:\n    endpoints: [{{address: 127.0.0.1:{origin.port}}}]\n")
        p = proxy(REWRITE_ROUTE)
        conn = http.client.HTTPConnection(*p.outbound, timeout=10)
        # HTTP/1 over the meshed HTTP/2 hop: the client's proxy rewrites, the peer's inbound does not again.
        got = _get(conn, "meshed.test", "/api/orders?page=2")
        assert (got["path"], got["host"]) == ("/api/v2/orders?page=2", "backend.internal"), got
        assert peer.metrics().get("request_total", direction="inbound") == 1
        got = _get(conn, "meshed.test", "/old")
        assert got["path"] == "/new/place", got
        with H2Client(p.outbound) as client:
            # HTTP/2 client, HTTP/2 backend: :path and :authority rewritten.
            resp = client.exchange("GET", "/api/stream?x=1", authority="h2.test:80")
            assert resp.status == 200, resp.summary()
            req = origin.requests[-1]
            assert (req.path, req.header(":authority")) == ("/api/v2/stream?x=1", "backend.internal")
            resp = client.exchange("GET", "/other", authority="h2.test:80")
            assert (origin.requests[-1].path, origin.requests[-1].header(":authority")) == ("/other", "h2.test:80")
            # HTTP/2 client, HTTP/1 backend: the restored HTTP/1 head carries the rewrite.
            resp = client.exchange("GET", "/strip/deep/er", authority="web.test:80")
            assert resp.status == 200, resp.summary()
            got = json.loads(bytes(resp.data))
            assert (got["path"], got["host"]) == ("/deep/er", "web.test:80"), got
    finally:
        peer.close()
        origin.stop()
        app.stop()


def test_a_rewrite_changed_by_a_reload_applies_without_dropping_requests(mesh):  # noqa: F811
    import threading

    from tests.integration.test_policy import _load

    _, proxy, endpoints, policy = mesh
    app = EchoBackend("app")
    route = ("services:\n  web.test:80:\n    routes:\n"
             "      - {{name: moved, match: {{pathPrefix: /}}, rewrite: {{path: /{where}}}}}\n")
    try:
        _write(endpoints, f"services:\n  web.test:80:\n    endpoints: [{{address: 127.0.0.1:{app.port}}}]\n")
        p = proxy(route.format(where="one"))
        results: list = []
        worker = threading.Thread(target=lambda: results.append(_load(p.outbound[1], "web.test:80", 600, workers=3)))
        worker.start()
        time.sleep(0.5)
        _write(policy, route.format(where="two"))
        worker.join(90)
        got = results[0]
        assert sum(got.values()) == 600 and all(status == 200 for status, _ in got), got
        paths = [json.loads(body)["path"] for (_, body), n in got.items() for _ in range(n)]
        assert set(paths) == {"/one", "/two"}, set(paths)
        assert _get(http.client.HTTPConnection(*p.outbound, timeout=10), "web.test:80", "/x")["path"] == "/two"
    finally:
        app.stop()

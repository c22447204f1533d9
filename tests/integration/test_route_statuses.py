"""Recent Linkerd's route status counters count at the end of the response stream, through a real proxy.

Real backends send a response head and then fail mid-body: an HTTP/1 origin
closes its connection (UNKNOWN: Linkerd's HTTP/1 client errors carry no HTTP/2
error), an HTTP/2 origin resets the stream (RESET, CANCEL, ENHANCE_YOUR_CALM by
its code), a route's request or idle timeout cuts the stream (REQUEST_TIMEOUT,
IDLE_TIMEOUT), or the client leaves (UNKNOWN, as Linkerd labels a cancelled
stream). Each series keeps the head's HTTP status (a gRPC call its status from
the trailers, UNKNOWN when none came) and names the error, in
``outbound_{http,grpc}_route_request_statuses_total`` and
``..._backend_response_statuses_total`` alike; a clean end has ``error=""``.
An HTTP/2 origin that refuses a stream before its head (RST_STREAM
REFUSED_STREAM, or a GOAWAY below its id) ends that attempt on the backend as
REFUSED or GO_AWAY; the proxy sends it once more, and the route counts the
final outcome. The older ``response_total`` classifies at the end of the
stream too: a response cut short after a 200 head is a failure there, its
``error`` label the HTTP/2 reason (``h2(CANCEL)``) or ``unclassified``.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import struct
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.h2client import H2Client
from helpers.h2server import H2Origin
from helpers.meshproxy import MeshProxy
from helpers.routeproxy import http_route, start_route_proxy
from helpers.upstream import HttpUpstream

pytestmark = pytest.mark.timeout(120)


IDLE = ", annotations: {timeout.linkerd.io/idle: 400ms}"
POLICY = "".join((
    http_route("h1-cut", "h1", "h1-backend", "/truncated"),
    http_route("h1-clean", "h1", "h1-backend", "/bytes"),
    http_route("h1-gone", "h1", "h1-backend", "/head-first"),
    http_route("h2-reset", "h2", "h2-backend", "/reset-after"),
    http_route("h2-idle", "h2", "h2-backend", "/stall", IDLE),
    http_route("h2-refused", "h2", "h2-backend", "/reset-before"),
    http_route("h2-refuse-once", "h2", "h2-backend", "/refuse-once"),
    http_route("h2-goaway", "h2", "h2-backend", "/goaway-before"),
    http_route("h2-goaway-once", "h2", "h2-backend", "/goaway-once"),
)) + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h1-timeout, namespace: test}
spec:
  parentRefs: [{group: core, kind: Service, name: h1, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /slow-body}}]
      backendRefs: [{name: h1-backend, port: 80}]
      timeouts: {request: 400ms}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc-route, namespace: test}
spec:
  parentRefs: [{group: core, kind: Service, name: grpc, port: 80}]
  rules: [{backendRefs: [{name: grpc-backend, port: 80}]}]
"""
GRPC_HEAD = [("content-type", "application/grpc"), ("te", "trailers")]
# promtool's lint objects to the "_ms" of Linkerd's own names, kept on purpose.
LINKERD_MS_NAMES = {"response_latency_ms", "tcp_connection_duration_ms", "route_response_latency_ms"}


@pytest.fixture(scope="module", params=["compiled", "pure"])
def proxy(request, tmp_path_factory):
    """One proxy, compiled and then uncompiled (MESHPROXY_PURE): the counting is the exchange's, in both."""
    tmp = tmp_path_factory.mktemp("route-statuses")
    h1, origin = HttpUpstream(name="h1-backend"), H2Origin(name="h2-backend")
    mp = None
    try:
        backends = (("h1-backend", h1.hostport, "http1"), ("h2-backend", origin.hostport, "h2"),
                    ("grpc-backend", origin.hostport, "h2"))
        mp = start_route_proxy(tmp, "route-statuses", POLICY, backends,
                               {"MESHPROXY_FAILURE_ACCRUAL_CONSECUTIVE": "1000000",
                                **({"MESHPROXY_PURE": "1"} if request.param == "pure" else {})})
        yield mp
    finally:
        if mp is not None:
            mp.close()
        h1.stop()
        origin.stop()


def _statuses(proxy: MeshProxy, route: str, backend: str, grpc: bool = False,
              expect: int = 1) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """(status label, error) -> count of the route's request statuses and of its backend's response statuses,
    once ``expect`` requests were counted on both (a stream is counted when the proxy has ended it)."""
    protocol = "grpc" if grpc else "http"
    status = f"{protocol}_status"
    deadline = time.monotonic() + 5.0
    while True:
        m = proxy.metrics()
        got = tuple({(labels[status], labels["error"]): value
                     for labels, value in m.series(name, route_name=route, **extra) if value}
                    for name, extra in ((f"outbound_{protocol}_route_request_statuses_total", {"hostname": ""}),
                                        (f"outbound_{protocol}_route_backend_response_statuses_total",
                                         {"backend_name": backend})))
        if all(sum(counts.values()) >= expect for counts in got) or time.monotonic() > deadline:
            return got[0], got[1]
        time.sleep(0.05)


def _legacy(proxy: MeshProxy) -> tuple[float, float]:
    """The outbound ``response_total`` of 200 heads: (successes, failures)."""
    m = proxy.metrics()
    return tuple(m.get("response_total", direction="outbound", status_code="200", classification=klass)
                 for klass in ("success", "failure"))  # type: ignore[return-value]


def _legacy_errors(proxy: MeshProxy) -> dict[str, float]:
    """The outbound ``response_total`` failures of 200 heads by their ``error`` label ("": none)."""
    got: dict[str, float] = {}
    for labels, value in proxy.metrics().series("response_total", direction="outbound", status_code="200",
                                                classification="failure"):
        got[labels.get("error", "")] = got.get(labels.get("error", ""), 0) + value
    return got


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def _h1(proxy: MeshProxy, path: str) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=20)
    conn.request("GET", path, headers={"Host": "h1.test.svc.cluster.local:80"})
    return conn


def test_http1_backend_closing_mid_body_is_its_heads_status_with_unknown(proxy):
    before, errors_before = _legacy(proxy), _legacy_errors(proxy)
    conn = _h1(proxy, "/truncated")
    try:
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()
    want = {("200", "UNKNOWN"): 1}
    assert _statuses(proxy, "h1-cut", "h1-backend") == (want, want)
    after = _legacy(proxy)
    assert (after[0] - before[0], after[1] - before[1]) == (0, 1)
    assert _delta(errors_before, _legacy_errors(proxy)) == {"unclassified": 1}


def test_a_clean_end_has_no_error(proxy):
    before = _legacy(proxy)
    conn = _h1(proxy, "/bytes/3000")
    try:
        resp = conn.getresponse()
        assert resp.status == 200 and len(resp.read()) == 3000
    finally:
        conn.close()
    want = {("200", ""): 1}
    assert _statuses(proxy, "h1-clean", "h1-backend") == (want, want)
    after = _legacy(proxy)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 0)


def test_a_route_request_timeout_after_the_head_is_request_timeout(proxy):
    conn = _h1(proxy, "/slow-body?delay=3")
    try:
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()
    want = {("200", "REQUEST_TIMEOUT"): 1}
    assert _statuses(proxy, "h1-timeout", "h1-backend") == (want, want)


def test_a_client_leaving_mid_body_is_unknown(proxy):
    conn = _h1(proxy, "/head-first?delay=2")
    try:
        resp = conn.getresponse()
        assert resp.status == 200  # the head came; its body is 2 s away
        before = _statuses(proxy, "h1-gone", "h1-backend", expect=0)
        assert before == ({}, {})  # nothing is counted until the stream ends
    finally:
        # A reset, not a FIN: an HTTP/1 client may half-close and still read its response.
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    want = {("200", "UNKNOWN"): 1}
    assert _statuses(proxy, "h1-gone", "h1-backend") == (want, want)


def test_http2_resets_mid_body_are_labelled_by_their_code(proxy):
    before, errors_before = _legacy(proxy), _legacy_errors(proxy)
    with H2Client(proxy.outbound) as client:
        for code in (2, 8, 11):  # INTERNAL_ERROR, CANCEL, ENHANCE_YOUR_CALM
            resp = client.exchange("GET", f"/reset-after?code={code}", authority="h2.test.svc.cluster.local:80")
            assert resp.status == 200 and resp.reset_code is not None, resp.summary()
    want = {("200", "RESET"): 1, ("200", "CANCEL"): 1, ("200", "ENHANCE_YOUR_CALM"): 1}
    assert _statuses(proxy, "h2-reset", "h2-backend", expect=3) == (want, want)
    after = _legacy(proxy)
    assert (after[0] - before[0], after[1] - before[1]) == (0, 3)
    assert _delta(errors_before, _legacy_errors(proxy)) == {
        "h2(INTERNAL_ERROR)": 1, "h2(CANCEL)": 1, "h2(ENHANCE_YOUR_CALM)": 1}


@pytest.mark.parametrize("path,route,error", [("/reset-before?code=7", "h2-refused", "REFUSED"),
                                              ("/goaway-before", "h2-goaway", "GO_AWAY")])
def test_a_stream_refused_before_its_head_every_time_is_refused_or_go_away(proxy, path, route, error):
    with H2Client(proxy.outbound) as client:
        resp = client.exchange("GET", path, authority="h2.test.svc.cluster.local:80")
        assert resp.status == 502, resp.summary()
    # Both attempts (the request and its resend) ended on the backend; the route counts the outcome once.
    assert _statuses(proxy, route, "h2-backend", expect=1) == ({("", error): 1}, {("", error): 2})


@pytest.mark.parametrize("path,route,error", [("/refuse-once?key=statuses", "h2-refuse-once", "REFUSED"),
                                              ("/goaway-once?key=statuses", "h2-goaway-once", "GO_AWAY")])
def test_a_stream_refused_before_its_head_then_answered_counts_both_attempts_on_the_backend(
        proxy, path, route, error):
    with H2Client(proxy.outbound) as client:
        resp = client.exchange("GET", path, authority="h2.test.svc.cluster.local:80")
        assert resp.status == 200 and resp.data == b"second try", resp.summary()
    # The refused attempt is counted when it is resent, the answered one with the route's outcome.
    assert _statuses(proxy, route, "h2-backend") == ({("200", ""): 1}, {("", error): 1, ("200", ""): 1})
    m = proxy.metrics()
    assert m.get("outbound_http_route_backend_requests_total", route_name=route, backend_name="h2-backend") == 2


def test_an_idle_timeout_after_the_head_is_idle_timeout(proxy):
    with H2Client(proxy.outbound) as client:
        resp = client.exchange("GET", "/stall", authority="h2.test.svc.cluster.local:80")
        assert resp.status == 200 and resp.reset_code == 8 and len(resp.data) == 1000, resp.summary()
    want = {("200", "IDLE_TIMEOUT"): 1}
    assert _statuses(proxy, "h2-idle", "h2-backend") == (want, want)


def test_grpc_calls_count_their_trailers_status_or_how_the_stream_failed(proxy):
    authority = "grpc.test.svc.cluster.local:80"
    with H2Client(proxy.outbound) as client:
        resp = client.exchange("POST", "/grpc-trailers?grpc=0&message=1", authority=authority, headers=GRPC_HEAD,
                               body=b"")
        assert resp.status == 200 and resp.trailer("grpc-status") == "0", resp.summary()
        # A message, then the origin resets the stream: no gRPC status ever came from it (the client gets
        # the proxy's UNAVAILABLE in trailers; the route counts how the backend's stream ended).
        resp = client.exchange("POST", "/reset-after?grpc=1&code=2", authority=authority, headers=GRPC_HEAD,
                               body=b"")
        assert resp.status == 200 and resp.trailer("grpc-status") == "14", resp.summary()
        # The head and a message came; the client gives up before the status.
        sid = client.request("POST", "/stall?grpc=1", authority=authority, headers=GRPC_HEAD, body=b"")
        assert client.head(sid).status == 200
        client.wait(lambda: len(client.responses[sid].data) == 1000, 10, "the stalled stream's first bytes")
        client.reset(sid)
    want = {("OK", ""): 1, ("UNKNOWN", "RESET"): 1, ("UNKNOWN", "UNKNOWN"): 1}
    assert _statuses(proxy, "grpc-route", "grpc-backend", grpc=True, expect=3) == (want, want)


def test_the_exposition_with_every_label_above_stays_valid(proxy):
    # Last in the module: the scrape holds each error label the tests above produced (GO_AWAY, h2(CANCEL)...).
    _, _, body = proxy.admin_request("GET", "/metrics")
    text = body.decode()
    assert 'error="GO_AWAY"' in text and 'error="h2(CANCEL)"' in text and 'error="unclassified"' in text
    legacy = [s for f in text_string_to_metric_families(text) if f.name == "response" for s in f.samples]
    assert {s.labels.get("error") for s in legacy} >= {"h2(CANCEL)", "h2(ENHANCE_YOUR_CALM)", "unclassified"}
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: ./scripts/bootstrap.sh --test installs Debian's prometheus package"
    run = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    report = (run.stdout + run.stderr).decode()
    assert run.returncode in (0, 3), report  # 3: lint findings, allowed only for Linkerd's own "_ms" names
    for line in report.splitlines():
        assert not line.strip() or line.split()[0] in LINKERD_MS_NAMES, line

"""proxy/viz/embedded.py over canned scrapes: increases summed by labels, counter resets, series that
appear between scrapes, quantiles of the window's buckets, gauges, and a proxy that did not answer."""

from __future__ import annotations

import asyncio

import pytest

from proxy.viz import query as q
from proxy.viz.embedded import Embedded, Scrape, series
from proxy.viz.query import Query
from proxy.viz.targets import Target

WEB = Target("127.0.0.1", 4191, (("deployment", "web"), ("namespace", "shop")))
API = Target("127.0.0.1", 4192, (("deployment", "api"), ("namespace", "shop")))


def _text(ok: int, failed: int, buckets: dict[str, int], conns: int = 1) -> str:
    lines = [f'response_total{{direction="inbound",classification="success",status_code="200"}} {ok}',
             f'response_total{{direction="inbound",classification="failure",status_code="500"}} {failed}',
             f'tcp_open_connections{{direction="inbound",peer="src"}} {conns}']
    lines += [f'response_latency_ms_bucket{{direction="inbound",le="{le}"}} {n}' for le, n in buckets.items()]
    return "\n".join(lines) + "\n"


def _mesh(*scrapes: tuple[Target, float, str | None]) -> Embedded:
    mesh = Embedded([WEB, API])
    for target, at, text in scrapes:
        window = next(w for w in mesh.windows if w.target.port == target.port)
        window.scrapes.append(Scrape(at, series(text, window.target.labels) if text is not None else None,
                                     None if text is not None else "connection refused"))
    return mesh


def _eval(mesh: Embedded, query: Query) -> dict[tuple[str, ...], float]:
    return {tuple(sorted(labels.items())): value for labels, value in asyncio.run(mesh.evaluate(query, 60.0))}


def test_increase_sums_by_workload_and_handles_a_reset():
    mesh = _mesh(
        (WEB, 100.0, _text(100, 10, {"10": 100, "+Inf": 110})),
        (WEB, 110.0, _text(150, 10, {"10": 150, "+Inf": 160})),
        (API, 100.0, _text(500, 0, {"10": 500, "+Inf": 500})),
        (API, 110.0, _text(20, 5, {"10": 25, "+Inf": 25})),  # restarted: counts from zero again
    )
    got = _eval(mesh, Query("increase", "response_total", (("direction", "=", "inbound"),),
                            ("deployment", "classification")))
    assert got == {(("classification", "success"), ("deployment", "web")): 50.0,
                   (("classification", "failure"), ("deployment", "web")): 0.0,
                   (("classification", "success"), ("deployment", "api")): 20.0,
                   (("classification", "failure"), ("deployment", "api")): 5.0}
    assert mesh.window_seconds(60.0) == pytest.approx(10.0)


def test_a_series_new_since_the_first_scrape_started_at_zero():
    first = 'request_total{direction="inbound",client_id="a"} 4\n'
    later = first + 'request_total{direction="inbound",client_id="b"} 7\n'
    mesh = _mesh((WEB, 0.0, first), (WEB, 5.0, later))
    got = _eval(mesh, Query("increase", "request_total", (), ("client_id",)))
    assert got == {(("client_id", "a"),): 0.0, (("client_id", "b"),): 7.0}


def test_quantile_over_the_window_buckets():
    # In the window: 10 more requests under 10 ms... of 20 (the other 10 between 10 and 20 ms).
    mesh = _mesh(
        (WEB, 0.0, _text(0, 0, {"10": 5, "20": 5, "+Inf": 5})),
        (WEB, 10.0, _text(20, 0, {"10": 15, "20": 25, "+Inf": 25})),
    )
    by = ("deployment",)
    p50 = _eval(mesh, Query("quantile", "response_latency_ms", (), by, 0.5))
    p99 = _eval(mesh, Query("quantile", "response_latency_ms", (), by, 0.99))
    assert p50 == {(("deployment", "web"),): pytest.approx(10.0)}  # rank 10 of 20: the top of (0, 10]
    assert p99 == {(("deployment", "web"),): pytest.approx(10 + 10 * (19.8 - 10) / 10)}


def test_an_empty_window_gives_no_numbers():
    mesh = _mesh((WEB, 0.0, _text(5, 0, {"10": 5, "+Inf": 5})), (WEB, 10.0, _text(5, 0, {"10": 5, "+Inf": 5})))
    assert _eval(mesh, Query("quantile", "response_latency_ms", (), ("deployment",), 0.5)) == {}
    assert _eval(mesh, Query("increase", "response_total", (("classification", "=", "success"),),
                             ("deployment",))) == {(("deployment", "web"),): 0.0}
    # One scrape only: no rate at all (as PromQL needs two points).
    single = _mesh((WEB, 0.0, _text(5, 0, {"10": 5, "+Inf": 5})))
    assert _eval(single, Query("increase", "response_total", (), ("deployment",))) == {}


def test_gauges_and_proxies_answering():
    mesh = _mesh((WEB, 0.0, _text(1, 0, {}, conns=3)), (WEB, 1.0, _text(1, 0, {}, conns=4)), (API, 0.0, None))
    got = _eval(mesh, Query("gauge", "tcp_open_connections", (("peer", "=", "src"),), ("deployment",)))
    assert got == {(("deployment", "web"),): 4.0}
    [(target, why)] = mesh.unreachable()
    assert target.port == 4192 and why == "connection refused"
    counts = asyncio.run(mesh.proxies(("namespace", "deployment"), 60.0))
    assert counts == {("shop", "web"): (1, 1), ("shop", "api"): (0, 1)}


def test_matchers_and_promql_text():
    assert q.matches({"a": "1"}, (("a", "=", "1"), ("b", "!=", "x")))
    assert not q.matches({"a": "1"}, (("b", "=", "x"),))
    assert q.matches({}, (("b", "=", ""),))  # a missing label is the empty string, as in PromQL
    text = Query("quantile", "response_latency_ms", (("direction", "=", "inbound"),), ("namespace", "deployment"),
                 0.95).promql("1m")
    assert text == ('histogram_quantile(0.95, sum(irate(response_latency_ms_bucket{direction="inbound"}[1m]))'
                    ' by (le, namespace, deployment))')
    assert Query("increase", "response_total", (("deployment", "=", 'we"b'),), ("namespace",)).promql("30s") == \
        'sum(increase(response_total{deployment="we\\"b"}[30s])) by (namespace)'
    assert q.window_text(60) == "1m" and q.window_text(90) == "90s" and q.window_text(1.5) == "1500ms"


def test_a_window_keeps_one_key_per_series_and_forgets_series_that_went_away():
    from proxy.viz.embedded import MAX_SCRAPES, ProxyWindow

    window = ProxyWindow(Target("127.0.0.1", 4191, ()))
    text = 'request_total{direction="outbound",authority="web:80"} 1\nrequest_total{direction="inbound"} 2\n'
    for n in range(MAX_SCRAPES + 4):
        window.add(Scrape(float(n), series(text.replace(" 1\n", f" {n}\n"))))
    first, last = window.scrapes[0].values, window.scrapes[-1].values
    assert first is not None and last is not None and len(window.scrapes) == MAX_SCRAPES
    # The same series is the same key object in every scrape (parsed anew each time).
    assert all(a is b for a, b in zip(first, last, strict=True))
    assert last[("request_total", (("authority", "web:80"), ("direction", "outbound")))] == MAX_SCRAPES + 3
    # Series that come and go (a label per scrape) do not grow the key map past the window's.
    for n in range(3000):
        window.add(Scrape(100.0 + n, series(f'request_total{{authority="a{n}:80"}} 1\n')))
    assert len(window.keys) <= 2 * 1 + 1024 + 1

"""Snapshots, diffs and the metrics text."""

from __future__ import annotations

import pytest

from proxy.discovery.metrics import DiscoveryMetrics
from proxy.discovery.model import AccrualSettings, Endpoint, diff, parse_ip_port, snapshot
from proxy.discovery.resolver import NameIndex, Watch


def ep(ip, port=80, **kw):
    return Endpoint((ip, port), **kw)


def test_diff_by_address():
    old = snapshot("s:80", [ep("10.0.0.1"), ep("10.0.0.2"), ep("10.0.0.3", weight=1)])
    new = snapshot("s:80", [ep("10.0.0.3", weight=5), ep("10.0.0.4"), ep("10.0.0.1")])
    update = diff(old, new)
    assert update.added == (ep("10.0.0.4"),)
    assert update.removed == (ep("10.0.0.2"),)
    assert update.changed == (ep("10.0.0.3", weight=5),)
    assert update.snapshot is new
    assert diff(new, snapshot("s:80", list(reversed(new.endpoints)))) is None


def test_accrual_change_alone_is_an_update():
    old = snapshot("s:80", [ep("10.0.0.1")])
    new = snapshot("s:80", [ep("10.0.0.1")], AccrualSettings(3, None, None))
    update = diff(old, new)
    assert update is not None and not (update.added or update.removed or update.changed)


def test_snapshot_sorts_numerically_and_endpoints_hash():
    snap = snapshot("s:80", [ep("10.0.0.10"), ep("10.0.0.9"), ep("fd00::1"), ep("10.0.0.9", 79)])
    assert [e.address for e in snap.endpoints] == [
        ("10.0.0.9", 79), ("10.0.0.9", 80), ("10.0.0.10", 80), ("fd00::1", 80)]
    assert len({*snap.endpoints, ep("10.0.0.9", 79, labels=(("a", "b"),))}) == 5
    assert ep("1.1.1.1", labels=(("zone", "a"),)).label("zone") == "a"


@pytest.mark.parametrize("text", ["10.0.0.1", "10.0.0.1:0", "10.0.0.1:x", "web:80", "fd00::1:80", 80, None])
def test_parse_ip_port_rejects(text):
    with pytest.raises(ValueError):
        parse_ip_port(text)


def test_parse_ip_port_normalizes():
    assert parse_ip_port("[FD00:0::1]:443") == ("fd00::1", 443)
    assert parse_ip_port(" 10.1.2.3:8080 ") == ("10.1.2.3", 8080)


def test_watch_isolates_failing_subscribers():
    metrics = DiscoveryMetrics()
    watch = Watch("s:80", metrics)
    seen = []

    def bad(update):
        raise RuntimeError("subscriber bug")

    watch.subscribe(bad)
    unsubscribe = watch.subscribe(seen.append)
    watch.publish(snapshot("s:80", [ep("10.0.0.1")]))
    assert len(seen) == 1 and seen[0].added == (ep("10.0.0.1"),)
    assert watch.publish(snapshot("s:80", [ep("10.0.0.1")])) is None  # no change, no update
    unsubscribe()
    unsubscribe()  # idempotent
    watch.publish(snapshot("s:80", []))
    assert len(seen) == 1 and watch.snapshot.endpoints == ()
    assert metrics.updates == 2 and metrics.endpoints == {"s:80": 0}


def test_name_index_short_forms_and_ips():
    index = NameIndex("cluster.local")
    index.add("web.default.svc.cluster.local", 80, "web")
    index.add("10.96.0.10", 80, "web")
    index.add("web.default", 80, "literal")  # an exact name wins over a short form
    assert index.get("WEB.default.svc.cluster.local.", 80) == "web"
    assert index.get("web.default.svc", 80) == "web"
    assert index.get("web.default", 80) == "literal"
    assert index.get("10.96.0.10", 80) == "web"
    assert index.get("web.default.svc", 81) is None
    assert index.get("web", 80) is None


def test_metrics_render_caps_services():
    metrics = DiscoveryMetrics(source="file", max_services=2)
    metrics.reload_errors = 3
    for name in ("c:80", "a:80", "b:80"):
        metrics.set_endpoints(name, 2)
    out: list[str] = []
    metrics.render(out)
    assert 'discovery_reload_errors_total{source="file"} 3' in out
    assert 'discovery_services{source="file"} 3' in out
    listed = [line for line in out if line.startswith("discovery_endpoints{")]
    assert listed == ['discovery_endpoints{source="file",service="a:80"} 2',
                      'discovery_endpoints{source="file",service="b:80"} 2']

"""Failover through the real proxy: the primary's endpoints go away under load, the secondary takes over, and back.

Backends are real HTTP/1.1 servers (killed with every connection closed);
discovery is the endpoints file the proxy watches. Each load loop is bounded
in requests and in time, and records every answer in order.
"""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import pytest

from helpers.echo import EchoBackend
from tests.integration.test_policy import NO_ACCRUAL, _write, mesh  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(120)

SPLIT = """
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata:
  name: web
  namespace: test
  annotations: {failover.linkerd.io/primary-service: web-east}
  labels: {app.kubernetes.io/managed-by: linkerd-failover}
spec:
  service: web
  backends:
    - {service: web-east, weight: 1}
    - {service: web-west, weight: 0}
    - {service: web-dr, weight: 0}
"""
DST = "web.test.svc.cluster.local"
EAST, WEST = "web-east.test.svc.cluster.local", "web-west.test.svc.cluster.local"


def _discovery(path: Path, **ports: int | None) -> None:
    lines = ["services:"]
    for name, port in ports.items():
        eps = f"[{{address: 127.0.0.1:{port}}}]" if port else "[]"
        lines.append(f"  {name.replace('_', '-')}.test.svc.cluster.local:80:\n    endpoints: {eps}")
    _write(path, "\n".join(lines) + "\n")


class Load:
    """``workers`` keep-alive clients sending GETs until stopped (at most ``limit`` each, ``deadline`` s)."""

    def __init__(self, port: int, workers: int = 2, limit: int = 20000, deadline: float = 60.0) -> None:
        self.port, self.limit, self.stop_at = port, limit, time.monotonic() + deadline
        self.lock = threading.Lock()
        self.answers: list[tuple[float, str]] = []  # (when, backend name or "error <status>")
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        for _ in range(self.limit):
            if self.stopping.is_set() or time.monotonic() > self.stop_at:
                break
            try:
                conn.request("GET", "/", headers={"Host": "web.test:80"})
                resp = conn.getresponse()
                body = resp.read()
                who = body.split(b'"name": "')[1].split(b'"')[0].decode() if resp.status == 200 else \
                    f"error {resp.status}"
            except (OSError, http.client.HTTPException, IndexError) as err:
                who = f"error {type(err).__name__}"
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            with self.lock:
                self.answers.append((time.monotonic(), who))
            time.sleep(0.002)
        conn.close()

    def since(self, t: float) -> list[str]:
        with self.lock:
            return [who for when, who in self.answers if when >= t]

    def wait_for(self, name: str, timeout: float = 15.0) -> float:
        """When ``name`` first answered after now (fails the test after ``timeout``)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            with self.lock:
                for when, who in self.answers:
                    if when >= start and who == name:
                        return when
            time.sleep(0.02)
        raise AssertionError(f"{name} never answered; last: {self.since(start)[-10:]}")

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(30)


def test_the_secondary_takes_over_when_the_primary_loses_its_endpoints_and_hands_back(mesh):  # noqa: F811
    _, proxy, endpoints, _ = mesh
    east, west, dr = EchoBackend("east"), EchoBackend("west"), EchoBackend("dr")
    backends = [east, west, dr]
    try:
        _discovery(endpoints, web_east=east.port, web_west=west.port, web_dr=dr.port)
        p = proxy(SPLIT, MESHPROXY_FAILURE_ACCRUAL_CONSECUTIVE="7")  # the default
        load = Load(p.outbound[1])
        try:
            load.wait_for("east")
            # The primary's pods die and their endpoints go: killed first, as a crash would.
            killed = time.monotonic()
            east.stop()
            _discovery(endpoints, web_east=None, web_west=west.port, web_dr=dr.port)
            took_over = load.wait_for("west")
            time.sleep(1.0)
            during = load.since(killed)
            failed = [w for w in during if w.startswith("error")]
            # Bounded by the accrual threshold (7 failed attempts eject the dead endpoint, before discovery
            # even says so; each request tries 3 times); a connection killed mid-request fails too.
            assert len(failed) <= 7, during[:40]
            after = load.since(took_over)
            assert after and set(after) == {"west"}, after[:40]  # none lost once the secondary serves
            assert "dr" not in during  # the secondaries in order: the first ready one
            # The primary comes back (a new pod): traffic returns to it.
            east = EchoBackend("east")
            backends.append(east)
            _discovery(endpoints, web_east=east.port, web_west=west.port, web_dr=dr.port)
            back = load.wait_for("east")
            time.sleep(0.5)
            assert set(load.since(back + 0.1)) == {"east"}
        finally:
            load.stop()
        m = p.metrics()
        assert m.get("outbound_failover_switches_total", dst=DST, **{"from": EAST}, to=WEST, reason="not_ready") == 1
        assert m.get("outbound_failover_switches_total", dst=DST, **{"from": WEST}, to=EAST, reason="recovered") == 1
        assert m.get("outbound_failover_active", dst=DST, backend=EAST) == 1
        assert any("failover: traffic moved" in line for line in p.lines())
    finally:
        for b in backends:
            b.stop()


def test_a_killed_primary_still_listed_fails_over_through_failure_accrual(mesh):  # noqa: F811
    _, proxy, endpoints, _ = mesh
    east, west = EchoBackend("east"), EchoBackend("west")
    backends = [east, west]
    try:
        _discovery(endpoints, web_east=east.port, web_west=west.port, web_dr=None)
        p = proxy(SPLIT, MESHPROXY_FAILURE_ACCRUAL_CONSECUTIVE="3", MESHPROXY_FAILURE_ACCRUAL_MIN_BACKOFF="500ms",
                  MESHPROXY_FAILURE_ACCRUAL_MAX_BACKOFF="1s")
        load = Load(p.outbound[1])
        try:
            load.wait_for("east")
            killed = time.monotonic()
            east.stop()  # connections refused; discovery still lists it
            took_over = load.wait_for("west")
            time.sleep(1.5)  # a few probes of the dead primary meanwhile
            failed = [w for w in load.since(killed) if w.startswith("error")]
            # Bounded by the accrual threshold: a connect error is asked again of the failover group.
            assert len(failed) <= 3, load.since(killed)[:40]
            assert set(load.since(took_over)) == {"west"}
            east = EchoBackend("east", port=east.port)  # restarted on the same address: the probe finds it
            backends.append(east)
            back = load.wait_for("east")
            time.sleep(0.5)
            assert set(load.since(back + 0.1)) == {"east"}
        finally:
            load.stop()
    finally:
        for b in backends:
            b.stop()


COMPACT = """
services:
  web.test:80:
    failover:
      primary: web-east.test.svc.cluster.local:80
      secondaries: [web-west.test.svc.cluster.local:80]
      minSuccessRate: 0.8
      minRequests: 10
      window: 3s
"""


def test_a_primary_under_its_success_rate_loses_its_traffic_compact_format(mesh):  # noqa: F811
    _, proxy, endpoints, _ = mesh
    east, west = EchoBackend("east", status=503), EchoBackend("west")
    try:
        _discovery(endpoints, web_east=east.port, web_west=west.port)
        p = proxy(COMPACT)
        load = Load(p.outbound[1], workers=1)
        try:
            took_over = load.wait_for("west")
            time.sleep(1.0)
            assert set(load.since(took_over)) == {"west"}
            # Until the window forgets the failures: at most minRequests 503s (one client).
            assert 10 <= len(east.seen) <= 11, len(east.seen)
        finally:
            load.stop()
        m = p.metrics()
        assert m.get("outbound_failover_switches_total", dst="web.test:80", **{"from": f"{EAST}:80"},
                     to=f"{WEST}:80", reason="success_rate") >= 1
    finally:
        east.stop()
        west.stop()


def test_a_primary_that_starts_failing_under_load_hands_over_and_gets_its_traffic_back(mesh):  # noqa: F811
    _, proxy, endpoints, _ = mesh
    east, west = EchoBackend("east"), EchoBackend("west")
    workers = 4
    try:
        _discovery(endpoints, web_east=east.port, web_west=west.port)
        # Failure accrual off: the success rate alone decides (7 consecutive 500s would eject the endpoint).
        p = proxy(COMPACT, **NO_ACCRUAL)
        load = Load(p.outbound[1], workers=workers)
        try:
            load.wait_for("east")
            time.sleep(1.0)
            # A bad release: every answer of the primary is now a 500 (its endpoints stay ready).
            flipped = time.monotonic()
            with load.lock:
                # The window (3 s) is kept in slices of 0.3 s: up to 3.3 s of answers may count.
                healthy = sum(1 for when, who in load.answers if who == "east" and when >= flipped - 3.3)
            east.server.status = 500
            took_over = load.wait_for("west")
            time.sleep(1.0)  # less than the window: the failures are still remembered
            failed = [w for w in load.since(flipped) if w.startswith("error")]
            # The primary keeps its traffic until its successes over the window fall under 80 %: the 500s
            # are bounded by a quarter of the window's successes, plus the requests already on their way.
            assert failed and set(failed) == {"error 500"}, load.since(flipped)[:40]
            assert len(failed) <= max(10, healthy // 4 + 1) + workers, (len(failed), healthy)
            # Requests sent to the primary before the switch may still answer 500 after it (one per other
            # client at most); none sent after it does.
            assert len([w for w in load.since(took_over) if w.startswith("error")]) <= workers - 1
            after = load.since(took_over + 0.5)
            assert after and set(after) == {"west"}, after[:40]
            # Fixed: once the window has forgotten the 500s the primary is tried again, and keeps the traffic.
            east.server.status = 200
            back = load.wait_for("east", timeout=20)
            time.sleep(0.5)
            assert set(load.since(back + 0.1)) == {"east"}
        finally:
            load.stop()
        m = p.metrics()
        group = {"dst": "web.test:80"}
        assert m.get("outbound_failover_switches_total", **group, **{"from": f"{EAST}:80"}, to=f"{WEST}:80",
                     reason="success_rate") >= 1
        assert m.get("outbound_failover_switches_total", **group, **{"from": f"{WEST}:80"}, to=f"{EAST}:80",
                     reason="recovered") >= 1
        assert m.get("outbound_failover_active", **group, backend=f"{EAST}:80") == 1
    finally:
        east.stop()
        west.stop()


def test_a_reload_turns_a_plain_split_into_failover_without_dropping_requests(mesh):  # noqa: F811
    _, proxy, endpoints, policy = mesh
    east, west = EchoBackend("east"), EchoBackend("west")
    try:
        _discovery(endpoints, web_east=east.port, web_west=west.port, web_dr=None)
        unmanaged = SPLIT.replace("  labels: {app.kubernetes.io/managed-by: linkerd-failover}\n", "")
        p = proxy(unmanaged)  # the operator's label missing: a plain split, weights 1/0/0
        load = Load(p.outbound[1])
        try:
            load.wait_for("east")
            start = time.monotonic()
            # Now managed, with web-west as the primary: it takes the traffic at once (it is ready).
            _write(policy, SPLIT.replace("primary-service: web-east", "primary-service: web-west"))
            moved = load.wait_for("west")
            time.sleep(0.5)
            assert not [w for w in load.since(start) if w.startswith("error")]
            assert set(load.since(moved + 0.1)) == {"west"}
            _write(policy, "services:\n  web.test:80:\n    routes: [{name: x, match: {path: /], bad: 1}]\n")
            time.sleep(1.5)  # an invalid edit: refused, the last good policy kept
            assert set(load.since(moved + 0.1)) == {"west"}
        finally:
            load.stop()
        assert p.metrics().get("policy_reload_total", result="invalid") == 1
    finally:
        east.stop()
        west.stop()


ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: test
  annotations: {failover.linkerd.io/primary-service: web-east}
  labels: {app.kubernetes.io/managed-by: linkerd-failover}
spec:
  parentRefs: [{kind: Service, name: web, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /pinned}}]
      backendRefs: [{name: web-dr, port: 80}]
    - backendRefs: [{name: web-east, port: 80, weight: 1}, {name: web-west, port: 80, weight: 0}]
"""


def test_an_httproute_rule_fails_over_for_http2_clients(mesh):  # noqa: F811
    from helpers.h2client import H2Client

    _, proxy, endpoints, _ = mesh
    east, west, dr = EchoBackend("east"), EchoBackend("west"), EchoBackend("dr")
    try:
        def discovery(east_port: int | None) -> None:  # HTTP/1 apps: HTTP/2 requests are restored for them
            _write(endpoints, "services:\n" + "".join(
                f"  web-{name}.test.svc.cluster.local:80:\n    endpoints: "
                + (f"[{{address: 127.0.0.1:{port}, protocol: http1}}]\n" if port else "[]\n")
                for name, port in (("east", east_port), ("west", west.port), ("dr", dr.port))))

        discovery(east.port)
        p = proxy(ROUTE)
        with H2Client(p.outbound) as client:
            def who(path: str) -> str:
                resp = client.exchange("GET", path, authority="web.test:80")
                assert resp.status == 200, resp.summary()
                return bytes(resp.data).split(b'"name": "')[1].split(b'"')[0].decode()

            assert [who("/"), who("/pinned")] == ["east", "dr"]
            discovery(None)
            deadline = time.monotonic() + 10
            while who("/") != "west" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [who("/") for _ in range(5)] == ["west"] * 5
            assert who("/pinned/x") == "dr"  # the rule without the primary is not a failover group
            discovery(east.port)
            while who("/") != "east" and time.monotonic() < deadline + 10:
                time.sleep(0.05)
            assert who("/") == "east"
        m = p.metrics()
        group = {"dst": "web.test.svc.cluster.local:80", "from": f"{EAST}:80", "to": f"{WEST}:80"}
        assert m.get("outbound_failover_switches_total", **group, reason="not_ready") == 1
    finally:
        for b in (east, west, dr):
            b.stop()

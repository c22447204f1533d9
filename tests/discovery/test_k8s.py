"""The Kubernetes source against a mock API server replaying recorded-shape responses (see fakeapi.py)."""

from __future__ import annotations

import copy
import time

import pytest

from proxy import config
from proxy.discovery.k8s import K8sResolver
from proxy.discovery.metrics import DiscoveryMetrics
from proxy.discovery.model import AccrualSettings
from proxy.discovery.resolver import build_resolver

from .conftest import eventually
from .fakeapi import RECORDED, FakeApiServer

SERVICES = "/api/v1/services"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
WEB = "web.default.svc.cluster.local"
IDENTITY = "web.default.serviceaccount.identity.cluster.local"


def settings(url: str, token_file: str = "/nonexistent/token"):
    return config.load({config.DESTINATION: "k8s", config.K8S_API: url, config.K8S_TOKEN_FILE: token_file,
                        config.K8S_CA_FILE: "/nonexistent/ca.crt"}).discovery


@pytest.fixture
def k8s_env(run, tmp_path):
    """``k8s_env(test)``: run ``await test(api, resolver)`` against a started mock API server."""

    def runner(test, **resolver_kw):
        async def main():
            api = await FakeApiServer().start()
            token = tmp_path / "token"
            token.write_text("recorded-token\n")
            resolver = build_resolver(settings(api.url, str(token)), DiscoveryMetrics())
            assert isinstance(resolver, K8sResolver)
            for key, value in {"backoff_base": 0.1, "backoff_cap": 0.8, "watch_timeout": 2, **resolver_kw}.items():
                setattr(resolver, key, value)
            resolver.api.request_timeout = 1.0
            await resolver.start()
            for informer in resolver._informers:
                informer.page_size = 1  # exercise list pagination (continue tokens)
            try:
                await test(api, resolver)
            finally:
                await resolver.stop()
                await api.stop()

        run(main())

    return runner


def addresses(watch):
    return sorted(e.address for e in watch.snapshot.endpoints)


def web_slice(api):
    return copy.deepcopy(api.objects[SLICES][("default", "web-x7k2p")])


def test_initial_list_and_lookups(k8s_env):
    async def test(api, resolver):
        assert resolver.synced and resolver.metrics.up == 1 and resolver.metrics.source == "k8s"
        assert all(auth == "Bearer recorded-token" for _, _, auth in api.requests)
        watch = await resolver.resolve(WEB, 80)
        assert watch is not None and watch.name == f"{WEB}:80"
        for host in ("web.default", "web.default.svc", "10.96.0.10", WEB.upper() + "."):
            assert resolver.lookup(host, 80) is watch, host
        assert addresses(watch) == [("10.244.1.5", 8080), ("10.244.2.7", 8080)]  # not the terminating one
        meshed, plain = watch.snapshot.endpoints
        assert meshed.proxy == ("10.244.1.5", 4143) and meshed.identity == IDENTITY
        assert dict(meshed.labels) == {"namespace": "default", "service": "web", "pod": "web-5d8f7c9b4-abcde",
                                       "zone": "zone-a", "node": "node-a", "serviceaccount": "web"}
        assert plain.proxy is None and plain.identity is None and plain.protocol is None
        assert watch.snapshot.accrual == AccrualSettings(5, 2.0, 60.0)
        admin = await resolver.resolve("web.default", 9990)  # named targetPort, h2c appProtocol
        assert addresses(admin) == [("10.244.1.5", 9990), ("10.244.2.7", 9990)]
        assert {e.protocol for e in admin.snapshot.endpoints} == {"h2"}
        db = await resolver.resolve("db.data.svc.cluster.local", 5432)  # headless, hand-made slice, no pods
        assert [(e.address, e.identity, e.protocol) for e in db.snapshot.endpoints] == [
            (("192.0.2.10", 5432), None, "opaque")]
        for host, port in (("ext.default", 80), ("web.default", 53), ("web.default", 81), ("web.other", 80),
                           ("10.96.0.11", 80), ("web", 80)):
            assert resolver.lookup(host, port) is None, (host, port)
        pod_reads = [p for p, _, _ in api.requests if "/pods/" in p]
        assert sorted(set(pod_reads)) == ["/api/v1/namespaces/default/pods/web-5d8f7c9b4-abcde",
                                          "/api/v1/namespaces/default/pods/web-5d8f7c9b4-fghij"]
        assert len(pod_reads) == 2  # cached: one read per pod, not per service port

    k8s_env(test)


def test_lookup_holds_back_endpoints_until_pods_are_read(k8s_env):
    async def test(api, resolver):
        watch = resolver.lookup(WEB, 80)
        assert watch is not None and watch.snapshot.endpoints == ()  # pods not read yet: nothing unverified
        updates = []
        watch.subscribe(updates.append)
        await eventually(lambda: len(watch.snapshot.endpoints) == 2)
        assert sum(len(u.added) for u in updates) == 2

    k8s_env(test)


def test_watch_adds_and_removes_endpoints(k8s_env):
    async def test(api, resolver):
        watch = await resolver.resolve(WEB, 80)
        updates = []
        watch.subscribe(updates.append)
        slice_ = web_slice(api)
        slice_["endpoints"].append(RECORDED["newEndpoint"])
        await api.put(SLICES, slice_)
        await eventually(lambda: ("10.244.3.4", 8080) in addresses(watch))
        added = [e for u in updates for e in u.added]
        assert [(e.address, e.identity, e.proxy) for e in added] == [
            (("10.244.3.4", 8080), IDENTITY, ("10.244.3.4", 4143))]
        slice_["endpoints"] = [e for e in slice_["endpoints"] if e["addresses"] != ["10.244.2.7"]]
        await api.put(SLICES, slice_)
        await eventually(lambda: ("10.244.2.7", 8080) not in addresses(watch))
        assert [e.address for e in updates[-1].removed] == [("10.244.2.7", 8080)]
        # A pod turning unready leaves; the Service going away empties the set and the name.
        slice_["endpoints"][0]["conditions"]["ready"] = False
        await api.put(SLICES, slice_)
        await eventually(lambda: addresses(watch) == [("10.244.3.4", 8080)])
        await api.delete(SERVICES, "default", "web")
        await eventually(lambda: watch.snapshot.endpoints == ())
        assert resolver.lookup(WEB, 80) is None and resolver.lookup("10.96.0.10", 80) is None

    k8s_env(test)


def test_stream_end_and_bookmarks_resume_from_the_last_version(k8s_env):
    async def test(api, resolver):
        watch = await resolver.resolve(WEB, 80)
        version = await api.bookmark(SLICES)
        await api.end_watches()  # the server ends every stream, as at timeoutSeconds
        await eventually(lambda: str(version) in api.watch_versions(SLICES))
        relists = [i.relists for i in resolver._informers]
        slice_ = web_slice(api)
        slice_["endpoints"].append(RECORDED["newEndpoint"])
        await api.put(SLICES, slice_)
        await eventually(lambda: ("10.244.3.4", 8080) in addresses(watch))
        assert [i.relists for i in resolver._informers] == relists == [1, 1]  # resumed, never relisted
        assert resolver.metrics.source_errors == 0

    k8s_env(test)


def test_relist_after_410_gone(k8s_env):
    async def test(api, resolver):
        watch = await resolver.resolve(WEB, 80)
        updates = []
        watch.subscribe(updates.append)
        await api.stop()  # the client loses its watches...
        slice_ = web_slice(api)
        slice_["endpoints"] = slice_["endpoints"][:1] + [RECORDED["newEndpoint"]]
        await api.put(SLICES, slice_)
        await api.delete(SERVICES, "data", "db")
        await api.compact()  # ...and its resourceVersion is compacted away meanwhile
        await api.start()
        await eventually(lambda: ("10.244.3.4", 8080) in addresses(watch), timeout=6)
        assert addresses(watch) == [("10.244.1.5", 8080), ("10.244.3.4", 8080)]
        assert {tuple(sorted(e.address for e in u.removed)) for u in updates} >= {(("10.244.2.7", 8080),)}
        await eventually(lambda: [i.relists for i in resolver._informers] == [2, 2], timeout=6)
        assert resolver.lookup("db.data", 5432) is None  # deleted while unwatched: seen by the relist
        await eventually(lambda: resolver.metrics.up == 1)

    k8s_env(test)


def test_lookup_sees_a_service_event_in_the_same_tick(k8s_env):
    # Endpoint recomputation is coalesced to the next loop iteration; name lookups must not be:
    # a lookup between an informer event and that flush answered from the old index once (CI).
    async def test(api, resolver):
        assert resolver.lookup("db.data", 5432) is not None
        resolver._on_service("DELETED", ("data", "db"), None)
        assert resolver.lookup("db.data", 5432) is None

    k8s_env(test)


def test_api_down_keeps_endpoints_and_backs_off(k8s_env):
    async def test(api, resolver):
        watch = await resolver.resolve(WEB, 80)
        before = watch.snapshot
        await api.stop()
        started = time.monotonic()
        await eventually(lambda: resolver.metrics.up == 0)
        await eventually(lambda: sum(i.errors for i in resolver._informers) >= 6, timeout=5)
        elapsed = time.monotonic() - started
        errors = sum(i.errors for i in resolver._informers)
        # Two informers retrying with delays doubling from 0.1 s: a few attempts, not a busy loop.
        assert elapsed > 0.3 and errors < 20, (elapsed, errors)
        assert watch.snapshot is before and resolver.lookup(WEB, 80) is watch
        assert resolver.metrics.source_errors >= errors
        await api.start()
        slice_ = web_slice(api)
        slice_["endpoints"].append(RECORDED["newEndpoint"])
        await api.put(SLICES, slice_)
        await eventually(lambda: ("10.244.3.4", 8080) in addresses(watch), timeout=6)
        await eventually(lambda: resolver.metrics.up == 1)

    k8s_env(test)


def test_pod_read_failure_is_retried(k8s_env):
    async def test(api, resolver):
        api.pod_status = 500
        watch = await resolver.resolve(WEB, 80, timeout=0.3)
        assert watch.snapshot.endpoints == ()
        await eventually(lambda: len([p for p, _, _ in api.requests if "/pods/" in p]) >= 4)
        assert resolver.metrics.source_errors >= 2
        api.pod_status = 200
        await eventually(lambda: len(watch.snapshot.endpoints) == 2, timeout=5)

    k8s_env(test)


def test_pod_gone_endpoint_skipped(k8s_env):
    async def test(api, resolver):
        del api.pods[("default", "web-5d8f7c9b4-fghij")]
        watch = await resolver.resolve(WEB, 80)
        assert addresses(watch) == [("10.244.1.5", 8080)]

    k8s_env(test)


def test_dual_stack_pods_keep_their_ipv4_address(k8s_env):
    async def test(api, resolver):
        watch = await resolver.resolve(WEB, 80)
        v6 = web_slice(api)
        v6["metadata"]["name"] = "web-v6abc"
        v6["addressType"] = "IPv6"
        v6["endpoints"] = [{**v6["endpoints"][0], "addresses": ["fd00:10:244:1::5"]},
                           {"addresses": ["fd00:10:244:9::9"], "conditions": {"ready": True}}]
        await api.put(SLICES, v6)
        await eventually(lambda: len(watch.snapshot.endpoints) == 3)
        assert addresses(watch) == [("10.244.1.5", 8080), ("10.244.2.7", 8080), ("fd00:10:244:9::9", 8080)]

    k8s_env(test)


def test_an_event_over_the_limit_relists(k8s_env):
    async def test(api, resolver):
        watch = await resolver.resolve(WEB, 80)
        for informer in resolver._informers:
            informer.page_size = 500
        resolver.api.max_event_bytes = 6000  # the recorded slices are about 2 KB
        slice_ = web_slice(api)
        slice_["metadata"]["annotations"] = {"note": "x" * 8000}
        slice_["endpoints"].append(RECORDED["newEndpoint"])
        await api.put(SLICES, slice_)
        # Too large to watch, so skipped by the watch: the relist (a list response may be larger) brings it.
        await eventually(lambda: ("10.244.3.4", 8080) in addresses(watch), timeout=6)
        assert [i.relists for i in resolver._informers] == [1, 2]
        assert resolver.metrics.source_errors >= 1


def test_the_whole_source_over_tls_with_a_checked_token(run, tmp_path):
    from .test_k8s_client import make_pki

    ca_file, server_tls = make_pki(tmp_path)
    token = tmp_path / "token"
    token.write_text("sa-token\n")

    async def main():
        api = await FakeApiServer(tls=server_tls).start()
        api.token = "sa-token"
        cfg = config.load({config.DESTINATION: "k8s", config.K8S_API: api.url, config.K8S_TOKEN_FILE: str(token),
                           config.K8S_CA_FILE: str(ca_file)}).discovery
        resolver = build_resolver(cfg, DiscoveryMetrics())
        await resolver.start()
        try:
            assert resolver.synced
            watch = await resolver.resolve(WEB, 80)
            assert addresses(watch) == [("10.244.1.5", 8080), ("10.244.2.7", 8080)]
            slice_ = web_slice(api)
            slice_["endpoints"].append(RECORDED["newEndpoint"])
            await api.put(SLICES, slice_)
            await eventually(lambda: ("10.244.3.4", 8080) in addresses(watch))
        finally:
            await resolver.stop()
            await api.stop()

    run(main())

"""The DNS source against a local DNS server: A/AAAA, SRV, TTL refresh, NXDOMAIN, server trouble."""

from __future__ import annotations

import pytest

from proxy import config
from proxy.discovery.dns import DnsResolver
from proxy.discovery.metrics import DiscoveryMetrics
from proxy.discovery.resolver import build_resolver

from .conftest import eventually
from .dnsserver import FakeDns


def settings(port: int, min_ttl: str = "500ms", max_ttl: str = "2s"):
    return config.load({config.DESTINATION: "dns", config.DNS_NAMESERVERS: f"127.0.0.1:{port}",
                        config.DNS_MIN_TTL: min_ttl, config.DNS_MAX_TTL: max_ttl}).discovery


@pytest.fixture
def dns_env(run):
    """``dns_env(test)``: run ``await test(server, resolver)`` with both started and cleaned up."""

    def runner(test, **resolver_kw):
        async def main():
            server = await FakeDns().start()
            resolver = build_resolver(settings(server.port), DiscoveryMetrics())
            assert isinstance(resolver, DnsResolver)
            for key, value in {"query_timeout": 0.3, **resolver_kw}.items():
                setattr(resolver, key, value)
            await resolver.start()
            try:
                await test(server, resolver)
            finally:
                await resolver.stop()
                server.close()

        run(main())

    return runner


def addresses(watch):
    return sorted(e.address for e in watch.snapshot.endpoints)


def test_a_and_aaaa(dns_env):
    async def test(server, resolver):
        server.set("web.test.", "A", ["127.0.0.1", "127.0.0.2"])
        server.set("web.test.", "AAAA", ["::1"])
        server.set("v4only.test.", "A", ["127.0.0.9"])
        assert resolver.lookup("web.test", 8080) is None  # first sight: resolving in the background
        watch = await resolver.resolve("web.test", 8080, timeout=10)
        assert watch is not None and watch.name == "web.test:8080"
        assert addresses(watch) == [("127.0.0.1", 8080), ("127.0.0.2", 8080), ("::1", 8080)]
        assert resolver.lookup("WEB.test.", 8080) is watch
        assert all(e.weight == 1 and e.proxy is None and e.identity is None for e in watch.snapshot.endpoints)
        assert addresses(await resolver.resolve("v4only.test", 80, timeout=10)) == [("127.0.0.9", 80)]
        assert resolver.lookup("127.0.0.1", 80) is None  # IPs pass through
        assert resolver.metrics.up == 1 and resolver.metrics.source == "dns"

    dns_env(test, query_timeout=2.0)  # answers expected: room for a loaded machine


def test_ttl_refresh_picks_up_a_change(dns_env):
    async def test(server, resolver):
        server.set("web.test.", "A", ["127.0.0.1", "127.0.0.2"])
        watch = await resolver.resolve("web.test", 80, timeout=10)
        updates = []
        watch.subscribe(updates.append)
        server.set("web.test.", "A", ["127.0.0.2", "127.0.0.3"])
        await eventually(lambda: updates, timeout=4)
        assert [e.address for e in updates[0].added] == [("127.0.0.3", 80)]
        assert [e.address for e in updates[0].removed] == [("127.0.0.1", 80)]
        assert resolver.metrics.updates >= 2

    dns_env(test, query_timeout=2.0)  # answers expected: room for a loaded machine


def test_srv(dns_env):
    async def test(server, resolver):
        name = "_http._tcp.web.default.svc.cluster.test."
        server.set(name, "SRV", ["10 5 8081 a.test.", "10 0 8082 b.test.", "20 1 9999 c.test."])
        server.set("a.test.", "A", ["127.0.1.1"])
        server.set("b.test.", "AAAA", ["::2"])
        server.set("c.test.", "A", ["127.0.1.3"])
        watch = await resolver.resolve(name.rstrip("."), 80, timeout=10)
        assert watch is not None and watch.name == name.rstrip(".")
        assert sorted((e.address, e.weight) for e in watch.snapshot.endpoints) == [
            (("127.0.1.1", 8081), 5), (("::2", 8082), 1)]  # priority 20 is a fallback; weight 0 counts as 1
        assert resolver.lookup(name, 443) is watch  # the SRV records give the ports
        server.set(name, "SRV", ["10 5 8081 a.test."])
        await eventually(lambda: len(watch.snapshot.endpoints) == 1, timeout=4)

    dns_env(test, query_timeout=2.0)  # answers expected: room for a loaded machine


def test_nxdomain_passes_through_until_the_name_appears(dns_env):
    async def test(server, resolver):
        assert await resolver.resolve("missing.test", 80) is None
        assert resolver.lookup("missing.test", 80) is None
        server.set("missing.test.", "A", ["127.0.0.5"])
        watch = await eventually(lambda: resolver.lookup("missing.test", 80), timeout=4)
        assert addresses(watch) == [("127.0.0.5", 80)]
        assert resolver.metrics.source_errors == 0

    dns_env(test)


def test_nodata_is_not_an_endpoint_set(dns_env):
    async def test(server, resolver):
        server.set("mail.test.", "MX", ["10 mx.test."])
        assert await resolver.resolve("mail.test", 25) is None

    dns_env(test)


@pytest.mark.parametrize("trouble", ["drop", "servfail", "nxdomain"])
def test_trouble_keeps_last_known_endpoints(dns_env, trouble):
    async def test(server, resolver):
        server.set("web.test.", "A", ["127.0.0.1"])
        watch = await resolver.resolve("web.test", 80, timeout=10)
        before = watch.snapshot
        if trouble == "nxdomain":
            server.remove("web.test.")
        else:
            server.mode = trouble
        queries = server.queries
        await eventually(lambda: server.queries >= queries + 4, timeout=6)  # retried with backoff
        assert watch.snapshot is before and resolver.lookup("web.test", 80) is watch
        if trouble == "nxdomain":
            assert resolver.metrics.up == 1 and resolver.metrics.source_errors == 0
        else:
            assert resolver.metrics.up == 0 and resolver.metrics.source_errors >= 1
        server.mode = "ok"
        server.set("web.test.", "A", ["127.0.0.7"])
        await eventually(lambda: addresses(watch) == [("127.0.0.7", 80)], timeout=6)
        assert resolver.metrics.up == 1

    dns_env(test)


def test_first_resolution_during_an_outage_passes_through(dns_env):
    async def test(server, resolver):
        server.mode = "drop"
        assert await resolver.resolve("web.test", 80, timeout=2) is None
        server.mode = "ok"
        server.set("web.test.", "A", ["127.0.0.1"])
        await eventually(lambda: resolver.lookup("web.test", 80), timeout=6)

    dns_env(test)


def test_idle_names_are_forgotten_and_the_name_cap_holds(dns_env):
    async def test(server, resolver):
        server.set("web.test.", "A", ["127.0.0.1"])
        server.set("other.test.", "A", ["127.0.0.2"])
        watch = await resolver.resolve("web.test", 80, timeout=10)
        assert await resolver.resolve("other.test", 80) is None  # over max_names: passthrough
        unsubscribe = watch.subscribe(lambda update: None)
        queries = server.queries
        await eventually(lambda: server.queries >= queries + 2, timeout=4)
        assert resolver.lookup("web.test", 80) is watch  # subscribed: kept
        unsubscribe()
        await eventually(lambda: "web.test:80" not in resolver.metrics.endpoints, timeout=4)

    dns_env(test, idle_timeout=0.0, max_names=1)

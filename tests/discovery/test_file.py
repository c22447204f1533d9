"""The static-file source: loading, lookups, hot reload, invalid edits, atomic replace, deletion."""

from __future__ import annotations

import os
import textwrap

import pytest

from proxy import config
from proxy.discovery.file import FileResolver
from proxy.discovery.filespec import SpecError, parse_document
from proxy.discovery.metrics import DiscoveryMetrics
from proxy.discovery.model import AccrualSettings, Endpoint
from proxy.discovery.resolver import build_resolver
from proxy.telemetry.logging import capture as capture_logs

from .conftest import eventually

WEB = "web.default.svc.cluster.local:80"

GOOD = textwrap.dedent("""\
    services:
      web.default.svc.cluster.local:80:
        addresses: [10.96.0.10:80, "[fd00::10]:80"]
        failureAccrual: {consecutiveFailures: 7, minBackoff: 1s, maxBackoff: 60s}
        endpoints:
          - address: 127.0.0.1:8081
            proxy: 127.0.0.1:24143
            identity: web.default.serviceaccount.identity.cluster.local
            weight: 1
            protocol: http1
            labels: {zone: a}
          - address: 127.0.0.1:8082
          - address: 127.0.0.1:8083
            weight: 3
      db.example.com:5432:
        endpoints: []
    """)

EDITED = textwrap.dedent("""\
    services:
      web.default.svc.cluster.local:80:
        addresses: [10.96.0.10:80]
        endpoints:
          - address: 127.0.0.1:8081
            proxy: 127.0.0.1:24143
            identity: web.default.serviceaccount.identity.cluster.local
            protocol: http1
            labels: {zone: b}
          - address: 127.0.0.1:8083
            weight: 3
          - address: 127.0.0.1:8084
    """)


def write(path, text):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write(path, text):
    tmp = f"{path}.tmp"
    write(tmp, text)
    os.replace(tmp, path)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "endpoints.yaml"
    write(path, GOOD)
    return FileResolver(str(path), "cluster.local", DiscoveryMetrics(), poll_interval=0.05)


def addresses(watch):
    return [e.address for e in watch.snapshot.endpoints]


def test_load_and_lookup_forms(run, source):
    async def main():
        await source.start()
        try:
            watch = source.lookup("web.default.svc.cluster.local", 80)
            assert watch is not None and watch.name == WEB
            for host, port in (("web.default", 80), ("web.default.svc", 80), ("WEB.default.svc.cluster.local.", 80),
                               ("10.96.0.10", 80), ("fd00::10", 80), ("[fd00:0::10]", 80)):
                assert source.lookup(host, port) is watch, (host, port)
            for host, port in (("web.default", 81), ("web", 80), ("10.96.0.11", 80), ("other.default", 80)):
                assert source.lookup(host, port) is None, (host, port)
            assert addresses(watch) == [("127.0.0.1", 8081), ("127.0.0.1", 8082), ("127.0.0.1", 8083)]
            first = watch.snapshot.endpoints[0]
            assert first == Endpoint(("127.0.0.1", 8081), ("127.0.0.1", 24143),
                                     "web.default.serviceaccount.identity.cluster.local", 1, "http1", (("zone", "a"),))
            assert watch.snapshot.accrual == AccrualSettings(7, 1.0, 60.0)
            assert source.lookup("db.example.com", 5432).snapshot.endpoints == ()
            assert source.metrics.up == 1 and source.metrics.source == "file"
        finally:
            await source.stop()

    run(main())


def test_valid_edit_publishes_added_removed_changed(run, source):
    async def main():
        await source.start()
        try:
            watch = source.lookup("web.default", 80)
            updates = []
            watch.subscribe(updates.append)
            write(source.path, EDITED)
            await eventually(lambda: updates)
            update = updates[0]
            assert [e.address for e in update.added] == [("127.0.0.1", 8084)]
            assert [e.address for e in update.removed] == [("127.0.0.1", 8082)]
            assert [(e.address, e.labels) for e in update.changed] == [(("127.0.0.1", 8081), (("zone", "b"),))]
            assert update.snapshot.accrual == AccrualSettings()
            assert update.snapshot is watch.snapshot
            # The removed cluster IP and the removed service no longer resolve.
            assert source.lookup("fd00::10", 80) is None
            assert source.lookup("db.example.com", 5432) is None
            assert source.services() == (WEB,)
            assert source.metrics.updates >= 2 and source.metrics.reload_errors == 0
        finally:
            await source.stop()

    run(main())


BAD_EDITS = {
    "bad address": (GOOD.replace("address: 127.0.0.1:8083", "address: web:8083"),
                    f'services["{WEB}"].endpoints[2].address'),
    "unknown endpoint key": (GOOD.replace("weight: 3", "wieght: 3"), f'services["{WEB}"].endpoints[2].wieght'),
    "unknown top key": (GOOD + "extra: 1\n", "extra"),
    "bad protocol": (GOOD.replace("protocol: http1", "protocol: http3"), f'services["{WEB}"].endpoints[0].protocol'),
    "bad duration": (GOOD.replace("maxBackoff: 60s", "maxBackoff: soon"),
                     f'services["{WEB}"].failureAccrual.maxBackoff'),
    "min above max": (GOOD.replace("minBackoff: 1s", "minBackoff: 2m"), f'services["{WEB}"].failureAccrual.minBackoff'),
    "bad weight": (GOOD.replace("weight: 3", "weight: -1"), f'services["{WEB}"].endpoints[2].weight'),
    "duplicate endpoint": (GOOD.replace("127.0.0.1:8083", "127.0.0.1:8082"), f'services["{WEB}"].endpoints[2].address'),
    "bad service name": (GOOD.replace("db.example.com:5432", "db.example.com"), 'services["db.example.com"]'),
    "missing endpoints": (GOOD.replace("    endpoints: []\n", "    addresses: []\n"),
                          'services["db.example.com:5432"].endpoints'),
    "cluster IP claimed twice": (GOOD.replace("    endpoints: []\n",
                                              "    addresses: [10.96.0.10:80]\n    endpoints: []\n"),
                                 'services["db.example.com:5432"].addresses[0]'),
    "not yaml": (GOOD.replace("labels: {zone: a}", "labels: {zone: a"), ""),
    "duplicate key": (GOOD + "services: {}\n", ""),
    "empty file": ("", ""),
    "not a mapping": ("- services\n", ""),
}


@pytest.mark.parametrize("kind", sorted(BAD_EDITS))
def test_invalid_edit_keeps_last_good(run, source, kind):
    text, field = BAD_EDITS[kind]

    async def main():
        await source.start()
        try:
            watch = source.lookup(WEB.split(":")[0], 80)
            before = watch.snapshot
            with capture_logs() as logs:
                write(source.path, text)
                await eventually(lambda: source.metrics.reload_errors == 1)
                await eventually(lambda: source.check() is False and source.metrics.reload_errors == 1)
            errors = [entry for entry in logs if entry["log_level"] == "error"]
            assert len(errors) == 1, errors  # one error per bad edit, not one per poll
            assert errors[0]["file"] == source.path
            assert errors[0]["event"] == "endpoints file rejected, keeping the last good endpoints"
            if field:
                assert errors[0]["error"].startswith(field + ": "), errors[0]["error"]
            assert watch.snapshot is before
            assert source.lookup("db.example.com", 5432) is not None
            assert source.metrics.up == 0
            # A good edit afterwards is applied.
            write(source.path, EDITED)
            await eventually(lambda: ("127.0.0.1", 8084) in addresses(watch))
            assert source.metrics.up == 1
        finally:
            await source.stop()

    run(main())


def test_atomic_replace_and_configmap_symlink_swap(run, tmp_path):
    data1, data2 = tmp_path / "data1", tmp_path / "data2"
    data1.mkdir()
    data2.mkdir()
    write(data1 / "endpoints.yaml", GOOD)
    write(data2 / "endpoints.yaml", GOOD.replace("127.0.0.1:8082", "127.0.0.1:9092"))
    os.symlink("data1", tmp_path / "..data")
    os.symlink("..data/endpoints.yaml", tmp_path / "endpoints.yaml")
    source = FileResolver(str(tmp_path / "endpoints.yaml"), poll_interval=0.05)

    async def main():
        await source.start()
        try:
            watch = source.lookup("web.default", 80)
            assert ("127.0.0.1", 8082) in addresses(watch)
            # Kubernetes updates a ConfigMap volume by swapping the ..data symlink.
            os.symlink("data2", tmp_path / "..data_tmp")
            os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
            await eventually(lambda: ("127.0.0.1", 9092) in addresses(watch))
            # An editor writes a temporary file and renames it over the original;
            # same size, and the mtime may well be the same too.
            os.remove(tmp_path / "endpoints.yaml")
            write(tmp_path / "endpoints.yaml", GOOD)
            await eventually(lambda: ("127.0.0.1", 8082) in addresses(watch))
            stat = os.stat(tmp_path / "endpoints.yaml")
            atomic_write(tmp_path / "endpoints.yaml", GOOD.replace("127.0.0.1:8082", "127.0.0.1:7082"))
            os.utime(tmp_path / "endpoints.yaml", ns=(stat.st_atime_ns, stat.st_mtime_ns))
            await eventually(lambda: ("127.0.0.1", 7082) in addresses(watch))
        finally:
            await source.stop()

    run(main())


def test_deleted_then_restored(run, source):
    async def main():
        await source.start()
        try:
            watch = source.lookup("web.default", 80)
            before = watch.snapshot
            with capture_logs() as logs:
                os.remove(source.path)
                await eventually(lambda: source.metrics.up == 0)
                await eventually(lambda: source.check() is False)
            assert [e["event"] for e in logs if e["log_level"] == "error"] == [
                "endpoints file unreadable, keeping the last endpoints"]
            assert source.metrics.source_errors == 1
            assert watch.snapshot is before and source.lookup("web.default", 80) is watch
            write(source.path, EDITED)
            await eventually(lambda: ("127.0.0.1", 8084) in addresses(watch))
            assert source.metrics.up == 1
        finally:
            await source.stop()

    run(main())


def test_missing_file_at_start_then_created(run, tmp_path):
    source = FileResolver(str(tmp_path / "later.yaml"), poll_interval=0.05)

    async def main():
        await source.start()
        try:
            assert source.lookup("web.default", 80) is None and source.metrics.up == 0
            write(tmp_path / "later.yaml", GOOD)
            await eventually(lambda: source.lookup("web.default", 80))
        finally:
            await source.stop()

    run(main())


def test_removed_service_empties_its_subscribed_watch_and_returns(run, source):
    async def main():
        await source.start()
        try:
            watch = source.lookup("db.example.com", 5432)
            updates = []
            watch.subscribe(updates.append)
            write(source.path, GOOD.replace("    endpoints: []\n", "    endpoints: [{address: 10.1.0.1:5432}]\n"))
            await eventually(lambda: updates)
            write(source.path, EDITED)
            await eventually(lambda: len(updates) == 2)
            assert updates[1].snapshot.endpoints == () and source.lookup("db.example.com", 5432) is None
            write(source.path, GOOD)
            await eventually(lambda: source.lookup("db.example.com", 5432) is watch)
        finally:
            await source.stop()

    run(main())


def test_build_resolver_file_and_none(tmp_path):
    path = tmp_path / "e.yaml"
    settings = config.load({config.DESTINATION: f"file://{path}"}).discovery
    metrics = DiscoveryMetrics()
    resolver = build_resolver(settings, metrics)
    assert isinstance(resolver, FileResolver) and resolver.path == str(path) and metrics.source == "file"
    assert build_resolver(config.load({}).discovery, metrics) is None


def test_spec_error_messages():
    with pytest.raises(SpecError) as err:
        parse_document(BAD_EDITS["bad address"][0])
    assert str(err.value) == (f'services["{WEB}"].endpoints[2].address: '
                              "expected ip:port, the host must be an IP address, got 'web:8083'")
    assert parse_document("services: {}\n") == {}

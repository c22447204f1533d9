"""Tracing settings: the collector address and its protocol, the resource attributes and their precedence."""

from __future__ import annotations

import pytest

from proxy import config


def test_tracing_off_by_default():
    cfg = config.load({})
    assert cfg.tracing.collector is None
    assert cfg.tracing.resource == (("service.name", "meshproxy"),)
    assert cfg.tracing.batch_size == 512 and cfg.tracing.max_buffered_spans == 2048


@pytest.mark.parametrize("text,expected", [
    ("collector:4317", config.Collector("grpc", "collector", 4317)),
    ("grpc://10.0.0.1:4317", config.Collector("grpc", "10.0.0.1", 4317)),
    ("http://otel:4318", config.Collector("http/protobuf", "otel", 4318, "/v1/traces")),
    ("http://[::1]:4318/otlp/v1/traces", config.Collector("http/protobuf", "::1", 4318, "/otlp/v1/traces")),
])
def test_collector(text, expected):
    assert config.load({config.TRACE_COLLECTOR: text}).tracing.collector == expected


@pytest.mark.parametrize("text", ["collector", "https://otel:4318", "udp://x:1", "grpc://x:4317/path", "x:0"])
def test_bad_collector_names_the_setting(text):
    with pytest.raises(config.ConfigError) as err:
        config.load({config.TRACE_COLLECTOR: text})
    assert err.value.name == config.TRACE_COLLECTOR


def test_resource_precedence_as_linkerd():
    cfg = config.load({
        config.TRACE_SERVICE_NAME: "web-proxy",
        config.TRACE_EXTRA_ATTRIBUTES: 'k8s.pod.name="web-1"\nzone=a,team=shop',
        config.OTEL_RESOURCE_ATTRIBUTES: "zone=b,note=a%2Cb",
    })
    assert dict(cfg.tracing.resource) == {"service.name": "web-proxy", "k8s.pod.name": "web-1", "zone": "b",
                                          "team": "shop", "note": "a,b"}
    cfg = config.load({config.OTEL_RESOURCE_ATTRIBUTES: "service.name=from-otel",
                       config.OTEL_SERVICE_NAME: "wins"})
    assert dict(cfg.tracing.resource)["service.name"] == "wins"


def test_bad_attributes():
    with pytest.raises(config.ConfigError) as err:
        config.load({config.TRACE_EXTRA_ATTRIBUTES: "novalue"})
    assert err.value.name == config.TRACE_EXTRA_ATTRIBUTES
    with pytest.raises(config.ConfigError) as err:
        config.load({config.OTEL_RESOURCE_ATTRIBUTES: "=x"})
    assert err.value.name == config.OTEL_RESOURCE_ATTRIBUTES


def test_describe_shows_the_collector():
    described = config.load({config.TRACE_COLLECTOR: "http://otel:4318"}).describe()
    assert described["trace_collector"] == "http://otel:4318/v1/traces"


def test_collector_identity_needs_an_identity_of_our_own():
    collector = {config.TRACE_COLLECTOR: "grpc://otel:4317",
                 config.TRACE_COLLECTOR_IDENTITY: "Otel.Tracing.serviceaccount.identity.cluster.local"}
    with pytest.raises(config.ConfigError) as err:
        config.load(collector)
    assert err.value.name == config.TRACE_COLLECTOR_IDENTITY and config.IDENTITY_NAME in str(err.value)
    own = {config.IDENTITY_NAME: "web.shop.serviceaccount.identity.cluster.local",
           config.IDENTITY_TRUST_ANCHORS: "/ca.crt", config.IDENTITY_CERT_FILE: "/tls.crt",
           config.IDENTITY_KEY_FILE: "/tls.key"}
    loaded = config.load({**collector, **own})
    assert loaded.tracing.collector_identity == "otel.tracing.serviceaccount.identity.cluster.local"
    assert loaded.describe()["trace_collector_identity"] == "otel.tracing.serviceaccount.identity.cluster.local"
    over_http = config.load({**collector, **own, config.TRACE_COLLECTOR: "http://otel:4318"}).tracing
    assert over_http.collector.protocol == "http/protobuf" and over_http.collector_identity is not None
    with pytest.raises(config.ConfigError) as err:
        config.load({**own, config.TRACE_COLLECTOR_IDENTITY: "not a name"})
    assert err.value.name == config.TRACE_COLLECTOR_IDENTITY
    assert config.load({}).tracing.collector_identity is None


def test_collector_identity_round_trips_through_a_config_file(tmp_path):
    own = {config.IDENTITY_NAME: "web.shop.serviceaccount.identity.cluster.local",
           config.IDENTITY_TRUST_ANCHORS: "/ca.crt", config.IDENTITY_CERT_FILE: "/tls.crt",
           config.IDENTITY_KEY_FILE: "/tls.key", config.TRACE_COLLECTOR: "grpc://otel:4317",
           config.TRACE_COLLECTOR_IDENTITY: "otel.tracing.serviceaccount.identity.cluster.local"}
    described = config.load(own).describe()
    path = tmp_path / "proxy.yaml"
    path.write_text("".join(f"{key}: '{value}'\n" for key, value in described.items()))
    assert config.load({}, str(path)).describe() == described

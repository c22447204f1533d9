"""Tests of proxy/config.py: defaults, every parser, file + environment precedence, errors naming the setting."""

import pytest

from proxy import config
from proxy.config import ConfigError, HostPort


def test_defaults_match_the_documented_ones():
    cfg = config.load({})
    assert cfg.outbound_listen == HostPort("127.0.0.1", 4140)
    assert cfg.inbound_listen == HostPort("0.0.0.0", 4143)
    assert cfg.admin_listen == HostPort("0.0.0.0", 4191)
    assert cfg.inbound_forward_host == "127.0.0.1"
    assert cfg.inbound_default_target is None
    assert cfg.limits.detect_timeout == 10.0
    assert cfg.limits.max_header_bytes == 65536
    assert [p for p in (25, 587, 3306, 4444, 5432, 6379, 9300, 11211) if p not in cfg.opaque_ports] == []
    assert 80 not in cfg.opaque_ports
    assert cfg.log_format == "plain" and cfg.log_level == "info"


@pytest.mark.parametrize(
    "text,expected",
    [("10s", 10.0), ("250ms", 0.25), ("2m", 120.0), ("1h", 3600.0), ("1.5", 1.5), ("0", 0.0)],
)
def test_durations(text, expected):
    assert config.parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["-1s", "abc", "", "inf", "nan", "1x"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        config.parse_duration(text)


@pytest.mark.parametrize("text,expected", [("65536", 65536), ("64KiB", 65536), ("1MiB", 1 << 20), ("64k", 65536)])
def test_sizes(text, expected):
    assert config.parse_size(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [("127.0.0.1:80", HostPort("127.0.0.1", 80)), ("[::1]:4143", HostPort("::1", 4143)),
     ("web.default:8080", HostPort("web.default", 8080))],
)
def test_host_ports(text, expected):
    assert config.parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":80", "::1:80", "[::1]80", "host:99999", "host:-1", "[nope]:1"])
def test_bad_host_ports(text):
    with pytest.raises(ValueError):
        config.parse_host_port(text)


def test_port_sets_with_ranges():
    ports = config.parse_port_set("25, 1000-1002,6379")
    assert 25 in ports and 1001 in ports and 6379 in ports and 1003 not in ports
    for bad in ("0", "5-3", "70000", "a"):
        with pytest.raises(ValueError):
            config.parse_port_set(bad)


@pytest.mark.parametrize(
    "name,value",
    [
        (config.OUTBOUND_LISTEN, "nonsense"),
        (config.DETECT_TIMEOUT, "soon"),
        (config.MAX_HEADER_BYTES, "0"),
        (config.OPAQUE_PORTS, "1-0"),
        (config.LOG_FORMAT, "xml"),
        (config.LOG_LEVEL, "loud"),
        (config.CONNECT_TIMEOUT, "0"),
        (config.INBOUND_DEFAULT_TARGET, "just-a-host"),
    ],
)
def test_errors_name_the_setting(name, value):
    with pytest.raises(ConfigError) as info:
        config.load({name: value})
    assert info.value.name == name
    assert name in str(info.value)


def test_unknown_meshproxy_variable_is_an_error():
    with pytest.raises(ConfigError) as info:
        config.load({"MESHPROXY_OUTBOND_LISTEN": "127.0.0.1:1"})
    assert info.value.name == "MESHPROXY_OUTBOND_LISTEN"


def test_file_settings_and_environment_precedence(tmp_path):
    path = tmp_path / "proxy.yaml"
    path.write_text("outbound_listen: 127.0.0.1:5000\nlog_level: debug\ndetect_timeout: 2s\n")
    cfg = config.load({config.LOG_LEVEL: "warning"}, file_path=str(path))
    assert cfg.outbound_listen.port == 5000
    assert cfg.limits.detect_timeout == 2.0
    assert cfg.log_level == "warning"  # the environment wins over the file


def test_file_errors(tmp_path):
    bad_key = tmp_path / "a.yaml"
    bad_key.write_text("no_such_setting: 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        config.load({}, file_path=str(bad_key))
    not_mapping = tmp_path / "b.yaml"
    not_mapping.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        config.load({}, file_path=str(not_mapping))
    broken = tmp_path / "c.yaml"
    broken.write_text("a: [\n")
    with pytest.raises(ConfigError, match="YAML"):
        config.load({}, file_path=str(broken))
    with pytest.raises(ConfigError, match="--config"):
        config.load({}, file_path=str(tmp_path / "missing.yaml"))


def test_every_setting_is_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [name for name in config.SETTINGS if f"`{name}`" not in readme]
    assert missing == [], f"README configuration table lacks {missing}"


# ---- identity and policy settings -------------------------------------------------

_ID = "web.default.serviceaccount.identity.cluster.local"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MESHPROXY_IDENTITY_NAME": _ID}, "MESHPROXY_IDENTITY_TRUST_ANCHORS"),
        ({"MESHPROXY_IDENTITY_NAME": _ID, "MESHPROXY_IDENTITY_TRUST_ANCHORS": "/ca.crt"}, "MESHPROXY_IDENTITY_SERVICE"),
        ({"MESHPROXY_IDENTITY_NAME": _ID, "MESHPROXY_IDENTITY_TRUST_ANCHORS": "/ca.crt",
          "MESHPROXY_IDENTITY_SERVICE": "https://issuer:8080"}, "MESHPROXY_IDENTITY_TOKEN_FILE"),
        ({"MESHPROXY_IDENTITY_NAME": _ID, "MESHPROXY_IDENTITY_TRUST_ANCHORS": "/ca.crt",
          "MESHPROXY_IDENTITY_CERT_FILE": "/tls.crt"}, "MESHPROXY_IDENTITY_KEY_FILE"),
        ({"MESHPROXY_IDENTITY_NAME": _ID, "MESHPROXY_IDENTITY_TRUST_ANCHORS": "/ca.crt",
          "MESHPROXY_IDENTITY_CERT_FILE": "/tls.crt", "MESHPROXY_IDENTITY_KEY_FILE": "/tls.key",
          "MESHPROXY_IDENTITY_SERVICE": "https://issuer:8080"}, "MESHPROXY_IDENTITY_SERVICE"),
        ({"MESHPROXY_IDENTITY_SERVICE": "http://issuer:8080"}, "MESHPROXY_IDENTITY_SERVICE"),
        ({"MESHPROXY_IDENTITY_RENEW_FRACTION": "0.99"}, "MESHPROXY_IDENTITY_RENEW_FRACTION"),
        ({"MESHPROXY_DEFAULT_POLICY": "allow-everyone"}, "MESHPROXY_DEFAULT_POLICY"),
        ({"MESHPROXY_CLUSTER_NETWORKS": "10.0.0.0/33"}, "MESHPROXY_CLUSTER_NETWORKS"),
        ({"MESHPROXY_INBOUND_PROBE_PATHS": "/ready,healthz"}, "MESHPROXY_INBOUND_PROBE_PATHS"),
    ],
)
def test_identity_and_policy_settings_are_checked_together(env, named):
    with pytest.raises(config.ConfigError) as err:
        config.load(env)
    assert err.value.name == named


def test_identity_settings_in_either_mode():
    issuer = config.load({"MESHPROXY_IDENTITY_NAME": _ID, "MESHPROXY_IDENTITY_TRUST_ANCHORS": "/ca.crt",
                          "MESHPROXY_IDENTITY_SERVICE": "https://issuer:8080",
                          "MESHPROXY_IDENTITY_TOKEN_FILE": "/token"}).identity
    assert (issuer.name, issuer.service, issuer.cert_file, issuer.renew_fraction) == (
        _ID, "https://issuer:8080", None, 0.7)
    files = config.load({"MESHPROXY_IDENTITY_NAME": _ID, "MESHPROXY_IDENTITY_TRUST_ANCHORS": "/ca.crt",
                         "MESHPROXY_IDENTITY_CERT_FILE": "/tls.crt",
                         "MESHPROXY_IDENTITY_KEY_FILE": "/tls.key"}).identity
    assert (files.service, files.cert_file, files.key_file) == (None, "/tls.crt", "/tls.key")
    off = config.load({}).identity
    assert off.name is None
    policy = config.load({"MESHPROXY_INBOUND_PROBE_PATHS": "/ready, /live"}).policy
    assert policy.probe_paths == ("/ready", "/live") and policy.default_policy == "all-unauthenticated"


def test_the_shutdown_endpoint_is_off_unless_enabled():
    assert config.load({}).shutdown_endpoint_enabled is False
    assert config.load({config.SHUTDOWN_ENDPOINT_ENABLED: "true"}).shutdown_endpoint_enabled is True
    assert config.load({config.SHUTDOWN_ENDPOINT_ENABLED: "False"}).shutdown_endpoint_enabled is False
    with pytest.raises(ConfigError, match=config.SHUTDOWN_ENDPOINT_ENABLED):
        config.load({config.SHUTDOWN_ENDPOINT_ENABLED: "yes"})


@pytest.mark.parametrize("text,expected", [
    ("https://user:pass@k8s.example:6443", "https://***@k8s.example:6443"),
    ("https://user:p@ss@k8s.example:6443/api", "https://***@k8s.example:6443/api"),
    ("https://k8s.example:6443/api?token=abc#frag", "https://k8s.example:6443/api?***#***"),
    ("https://issuer.example:8080", "https://issuer.example:8080"),
    ("file:///etc/meshproxy/endpoints.yaml", "file:///etc/meshproxy/endpoints.yaml"),
    ("/var/run/secrets/kubernetes.io/serviceaccount/token", "/var/run/secrets/kubernetes.io/serviceaccount/token"),
])
def test_credentials_in_url_settings_are_redacted(text, expected):
    assert config.redact(text) == expected


def test_describe_never_shows_userinfo():
    cfg = config.load({config.K8S_API: "https://admin:s3cret@10.0.0.1:6443", config.DESTINATION: "k8s"})
    described = cfg.describe()
    assert described["k8s_api"] == "https://***@10.0.0.1:6443"
    assert "s3cret" not in repr(described)
    assert described["k8s_token_file"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"


# ---- /config round-trips through run --config -------------------------------------

_NON_DEFAULT = {
    config.OUTBOUND_LISTEN: "127.0.0.1:5140",
    config.INBOUND_DEFAULT_TARGET: "[::1]:8080",
    config.DETECT_TIMEOUT: "2500ms",
    config.SERVER_FIRST_PROBE: "0",
    config.DNS_MAX_TTL: "2m",
    config.RESPONSE_TIMEOUT: "1.25",
    config.OPAQUE_PORTS: "25, 9000-9100",
    config.MAX_HEADER_BYTES: "32KiB",
    config.H2_INITIAL_WINDOW: "2MiB",
    config.SHUTDOWN_ENDPOINT_ENABLED: "TRUE",
    config.DESTINATION: "dns",
    config.DNS_NAMESERVERS: "127.0.0.1:53,[::1]:5353",
    config.CLUSTER_NETWORKS: "10.0.0.0/8,fd00::/8",
    config.INBOUND_PROBE_PATHS: "/ready,/live",
    config.LOG_LEVEL: "WARN,proxy.outbound=Debug",
    config.ACCESS_LOG: "JSON",
    config.IDENTITY_RENEW_FRACTION: "0.5",
}


def _round_trip(described: dict[str, str], path) -> dict[str, str]:
    import yaml

    path.write_text(yaml.safe_dump(described))
    return config.load({}, file_path=str(path)).describe()


def test_describe_uses_the_file_names_and_syntax(tmp_path):
    described = config.load(_NON_DEFAULT).describe()
    assert set(described) == {config.file_key(name) for name in config.SETTINGS}
    assert described["detect_timeout"] == "2500ms"
    assert described["server_first_probe"] == "0"
    assert described["dns_max_ttl"] == "120s"
    assert described["response_timeout"] == "1250ms"
    assert described["opaque_ports"] == "25,9000-9100"
    assert described["max_header_bytes"] == "32768"
    assert described["shutdown_endpoint_enabled"] == "true"
    assert described["dns_nameservers"] == "127.0.0.1:53,[::1]:5353"
    assert described["inbound_default_target"] == "[::1]:8080"
    assert described["log_level"] == "warn,proxy.outbound=debug"
    assert described["access_log"] == "json"
    assert described["k8s_api"] == ""  # unset
    assert _round_trip(described, tmp_path / "again.yaml") == described


def test_defaults_round_trip(tmp_path):
    described = config.load({}).describe()
    assert _round_trip(described, tmp_path / "defaults.yaml") == described


@pytest.mark.parametrize("seconds", [0.001, 0.05, 0.3, 1.0, 1.5, 10.0, 86400.0, 0.0001, 2.345678])
def test_durations_render_to_what_parses_back(seconds):
    text = config.render(config.DETECT_TIMEOUT, seconds)
    assert config.parse_duration(text) == pytest.approx(seconds)
    assert config.render(config.DETECT_TIMEOUT, config.parse_duration(text)) == text


def test_a_redacted_value_round_trips_as_shown_and_the_environment_restores_it(tmp_path):
    secret = "https://admin:s3cret@k8s.example:6443/?token=t0ken"
    described = config.load({config.K8S_API: secret}).describe()
    assert described["k8s_api"] == "https://***@k8s.example:6443/?***"
    assert _round_trip(described, tmp_path / "redacted.yaml") == described
    cfg = config.load({config.K8S_API: secret}, file_path=str(tmp_path / "redacted.yaml"))
    assert cfg.discovery.k8s_api == secret  # supplied again: the environment wins over the file

"""Log levels with Linkerd's spellings and per-target directives, against the real process:
MESHPROXY_LOG_LEVEL at start, GET/PUT /proxy-log-level at runtime, identity serve --log-level;
and /config, whose output fed to ``run --config`` makes a proxy with the same /config."""

from __future__ import annotations

import json
import sys

import pytest

from helpers.clients import RawClient
from helpers.meshproxy import EXIT_CONFIG, run_once
from helpers.ports import free_port

pytestmark = pytest.mark.timeout(60)


def _events(mp, since: int = 0) -> list[dict]:
    out = []
    for line in mp.lines(since):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "logger" in value:
            out.append(value)
    return out


def _shutdown_probe(mp) -> None:
    """A debug line of proxy.admin: POST /shutdown while the endpoint is disabled (404)."""
    assert mp.admin_request("POST", "/shutdown")[0] == 404


def _malformed(mp) -> str:
    """An info line of proxy.http: a malformed request answered 400; returns its reason."""
    with RawClient(mp.outbound) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        resp = client.final()
    assert resp.status == 400
    return resp.header("l5d-proxy-error")


def _refused(mp) -> str:
    """A warning line of proxy.http: a refused upstream answered 502; returns its reason."""
    with RawClient(mp.outbound) as client:
        resp = client.exchange("GET", "/", [("Host", f"127.0.0.1:{free_port()}")])
    assert resp.status == 502
    return resp.header("l5d-proxy-error")


def test_targets_get_their_own_level_and_a_put_changes_them(make_proxy):
    mp = make_proxy({"MESHPROXY_LOG_LEVEL": "WARN,proxy.admin=debug", "MESHPROXY_LOG_FORMAT": "json"})
    status, _, body = mp.admin_request("GET", "/proxy-log-level")
    assert status == 200 and body == b"warn,proxy.admin=debug\n"
    _shutdown_probe(mp)
    reason_400 = _malformed(mp)
    reason_502 = _refused(mp)
    assert mp.wait_line(reason_502, timeout=5), "the warning of proxy.http is missing"
    assert mp.wait_line("shutdown endpoint disabled", timeout=5), "proxy.admin's debug line is missing"
    events = _events(mp)
    assert not [e for e in events if reason_400 in json.dumps(e)], "an info line of proxy.http was logged at warn"
    assert not [e for e in events if e["event"] == "meshproxy ready"], "proxy.app's info line was logged at warn"
    below_warn = {(e["logger"], e["level"]) for e in events if e["level"] in ("debug", "info")}
    assert below_warn and {logger for logger, _ in below_warn} == {"proxy.admin"}, below_warn

    status, _, body = mp.admin_request("PUT", "/proxy-log-level", body=b"info,proxy.admin=warn,proxy.http=error")
    assert status == 204, body
    assert mp.admin_request("GET", "/proxy-log-level")[2] == b"info,proxy.admin=warn,proxy.http=error\n"
    mark = mp.mark()
    _shutdown_probe(mp)
    reason_502 = _refused(mp)
    status, _, body = mp.admin_request("PUT", "/proxy-log-level", body=b"info,proxy.http=debug")
    assert status == 204, body
    reason_400 = _malformed(mp)
    assert mp.wait_line(reason_400, since=mark, timeout=5), "proxy.http's info line is missing at debug"
    after = json.dumps(_events(mp, mark))
    assert "shutdown endpoint disabled" not in after, "proxy.admin logged debug at warn"
    assert reason_502 not in after, "proxy.http logged a warning at error"


def test_invalid_put_is_refused_with_the_reason_and_changes_nothing(make_proxy):
    mp = make_proxy({"MESHPROXY_LOG_LEVEL": "info"})
    status, _, body = mp.admin_request("PUT", "/proxy-log-level", body=b"warn,proxy.outbound=loud")
    assert status == 400 and b"'loud'" in body, (status, body)
    status, _, body = mp.admin_request("PUT", "/proxy-log-level", body=b"proxy outbound=debug")
    assert status == 400 and b"'proxy outbound'" in body, (status, body)
    assert mp.admin_request("GET", "/proxy-log-level")[2] == b"info\n"


@pytest.mark.parametrize("value", ["trace", "WARN", "Warning", "off", "error,proxy.outbound=trace"])
def test_every_linkerd_spelling_starts(make_proxy, value):
    mp = make_proxy({"MESHPROXY_LOG_LEVEL": value})
    assert mp.admin_request("GET", "/proxy-log-level")[2] == value.lower().encode() + b"\n"


@pytest.mark.parametrize(("value", "named"), [("loud", "'loud'"), ("warn,proxy.outbound=loud", "'loud'"),
                                              ("warn,=debug", "''")])
def test_invalid_level_at_start_exits_64_naming_it(value, named):
    res = run_once(env={"MESHPROXY_LOG_LEVEL": value, "MESHPROXY_ADMIN_LISTEN": f"127.0.0.1:{free_port()}"})
    stderr = res.stderr.decode(errors="replace")
    assert res.returncode == EXIT_CONFIG, stderr
    assert "MESHPROXY_LOG_LEVEL" in stderr and named in stderr, stderr


def test_identity_serve_reads_the_same_directives(tmp_path):
    command = [sys.executable, "-m", "proxy", "identity"]
    base = ["serve", "--issuer", str(tmp_path / "no-issuer"), "--tokens", str(tmp_path / "no-tokens"),
            "--listen", f"127.0.0.1:{free_port()}"]
    res = run_once(base + ["--log-level", "warn,proxy.identity=loud"], command=command)
    stderr = res.stderr.decode(errors="replace")
    assert res.returncode == EXIT_CONFIG and "--log-level" in stderr and "'loud'" in stderr, stderr
    # A valid directive passes; the missing issuer is what stops it then.
    res = run_once(base + ["--log-level", "WARN,proxy.identity=debug"], command=command)
    stderr = res.stderr.decode(errors="replace")
    assert res.returncode == EXIT_CONFIG and "--log-level" not in stderr and "no-issuer" in stderr, stderr


def test_config_output_fed_to_run_config_gives_the_same_config(make_proxy, tmp_path):
    secret = "https://admin:hunter2@k8s.example.invalid:6443/?token=t0ken"
    first = make_proxy({
        "MESHPROXY_K8S_API": secret,
        "MESHPROXY_LOG_LEVEL": "WARN,proxy.admin=Debug",
        "MESHPROXY_ACCESS_LOG": "apache",
        "MESHPROXY_DETECT_TIMEOUT": "2500ms",
        "MESHPROXY_RESPONSE_TIMEOUT": "1.5",
        "MESHPROXY_MAX_HEADER_BYTES": "32KiB",
        "MESHPROXY_OPAQUE_PORTS": "25,9000-9100",
        "MESHPROXY_INBOUND_DEFAULT_TARGET": f"127.0.0.1:{free_port()}",
        "MESHPROXY_INBOUND_PROBE_PATHS": "/ready,/live",
        "MESHPROXY_SHUTDOWN_ENDPOINT_ENABLED": "true",
    })
    status, _, body = first.admin_request("GET", "/config")
    assert status == 200
    described = json.loads(body)
    assert described["log_level"] == "warn,proxy.admin=debug" and described["detect_timeout"] == "2500ms"
    assert described["k8s_api"] == "https://***@k8s.example.invalid:6443/?***" and b"hunter2" not in body
    listen = {key: described[key] for key in ("outbound_listen", "inbound_listen", "admin_listen")}
    assert first.stop() == 0  # its ports are the second proxy's, from the file
    conf = tmp_path / "proxy.yaml"
    conf.write_bytes(body)  # JSON is YAML: the output as it is
    second = make_proxy({}, args=["--config", str(conf)], set_listen_env=False,
                        outbound=listen["outbound_listen"], inbound=listen["inbound_listen"],
                        admin=listen["admin_listen"])
    status, _, again = second.admin_request("GET", "/config")
    assert status == 200 and json.loads(again) == described
    assert second.admin_request("GET", "/proxy-log-level")[2] == b"warn,proxy.admin=debug\n"

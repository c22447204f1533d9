"""The command line: settings from MESHPROXY_* variables and from
``--config FILE``; invalid settings exit 64 naming the setting, before
anything is bound."""

from __future__ import annotations

import json
import socket

import pytest

from helpers.checks import assert_proxy_error
from helpers.clients import RawClient
from helpers.meshproxy import EXIT_CONFIG, SCRIPT, SCRIPT_COMMAND, run_once
from helpers.ports import free_port

pytestmark = pytest.mark.timeout(60)

INVALID = [
    ("MESHPROXY_OUTBOUND_LISTEN", "not-an-address"),
    ("MESHPROXY_INBOUND_LISTEN", "127.0.0.1:99999"),
    ("MESHPROXY_ADMIN_LISTEN", "127.0.0.1"),
    ("MESHPROXY_INBOUND_DEFAULT_TARGET", "nowhere"),
    ("MESHPROXY_CONNECT_TIMEOUT", "-1s"),
    ("MESHPROXY_CONNECT_TIMEOUT", "0"),
    ("MESHPROXY_RESPONSE_TIMEOUT", "soon"),
    ("MESHPROXY_DETECT_TIMEOUT", "abc"),
    ("MESHPROXY_DRAIN_TIMEOUT", "-5"),
    ("MESHPROXY_MAX_HEADER_BYTES", "0"),
    ("MESHPROXY_MAX_HEADER_BYTES", "lots"),
    ("MESHPROXY_OPAQUE_PORTS", "70000"),
    ("MESHPROXY_OPAQUE_PORTS", "25,9-3"),
    ("MESHPROXY_LOG_LEVEL", "loud"),
    ("MESHPROXY_LOG_FORMAT", "xml"),
    ("MESHPROXY_NOT_A_SETTING", "1"),
]


def _listen_env() -> dict[str, str]:
    return {
        "MESHPROXY_OUTBOUND_LISTEN": f"127.0.0.1:{free_port()}",
        "MESHPROXY_INBOUND_LISTEN": f"127.0.0.1:{free_port()}",
        "MESHPROXY_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
    }


@pytest.mark.parametrize(("name", "value"), INVALID, ids=[f"{n}={v}" for n, v in INVALID])
def test_invalid_setting_exits_64_naming_it(name, value):
    env = _listen_env()
    env[name] = value
    # Hold the admin port: a proxy that bound before validating would fail
    # on it with something other than the config error we expect.
    admin_port = int(env["MESHPROXY_ADMIN_LISTEN"].rsplit(":", 1)[1]) if name != "MESHPROXY_ADMIN_LISTEN" else None
    holder = None
    if admin_port:
        holder = socket.socket()
        holder.bind(("127.0.0.1", admin_port))
        holder.listen(1)
    try:
        res = run_once(env=env)
    finally:
        if holder:
            holder.close()
    stderr = res.stderr.decode(errors="replace")
    assert res.returncode == EXIT_CONFIG, f"exit {res.returncode}; stderr:\n{stderr}"
    assert name in stderr, f"stderr does not name {name}:\n{stderr}"


def _write_config(path, settings: dict[str, object]) -> None:
    path.write_text("".join(f"{key}: {json.dumps(value) if isinstance(value, str) else value}\n"
                            for key, value in settings.items()))


def _file_listen() -> dict[str, str]:
    return {
        "outbound_listen": f"127.0.0.1:{free_port()}",
        "inbound_listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
    }


def test_config_file_settings_apply(make_proxy, fresh_upstream, tmp_path):
    listen = _file_listen()
    conf = tmp_path / "proxy.yaml"
    _write_config(conf, {**listen, "max_header_bytes": 4096, "log_format": "json", "response_timeout": "5s"})
    mp = make_proxy(args=["--config", str(conf)], set_listen_env=False,
                    outbound=listen["outbound_listen"], inbound=listen["inbound_listen"], admin=listen["admin_listen"])
    with RawClient(mp.outbound) as client:
        resp = client.exchange("GET", "/echo", [("Host", fresh_upstream.hostport)])
        assert resp.status == 200
    with RawClient(mp.outbound) as client:
        client.send(f"GET /echo HTTP/1.1\r\nHost: {fresh_upstream.hostport}\r\nX-Big: {'b' * 5000}\r\n\r\n".encode())
        assert_proxy_error(client.final(), 431)  # the file's max_header_bytes is in force
    for line in mp.lines():
        if line.strip():
            assert isinstance(json.loads(line), dict), line  # the file's log_format too


def test_environment_wins_over_config_file(make_proxy, fresh_upstream, tmp_path):
    listen = _file_listen()
    conf = tmp_path / "proxy.yaml"
    _write_config(conf, {**listen, "max_header_bytes": 4096})
    mp = make_proxy({"MESHPROXY_MAX_HEADER_BYTES": "65536"}, args=["--config", str(conf)], set_listen_env=False,
                    outbound=listen["outbound_listen"], inbound=listen["inbound_listen"], admin=listen["admin_listen"])
    with RawClient(mp.outbound) as client:
        client.send(f"GET /echo HTTP/1.1\r\nHost: {fresh_upstream.hostport}\r\nX-Big: {'b' * 5000}\r\n\r\n".encode())
        assert client.final().status == 200


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"log_level": "loud"}, "log_level"),
        ({"connect_timeout": "-3s"}, "connect_timeout"),
        ({"no_such_key": 1}, "no_such_key"),
    ],
)
def test_invalid_config_file_exits_64(tmp_path, settings, named):
    conf = tmp_path / "bad.yaml"
    _write_config(conf, {**_file_listen(), **settings})
    res = run_once(["--config", str(conf)])
    stderr = res.stderr.decode(errors="replace")
    assert res.returncode == EXIT_CONFIG, f"exit {res.returncode}; stderr:\n{stderr}"
    assert named in stderr.lower(), f"stderr does not name {named}:\n{stderr}"


def test_missing_config_file_exits_64(tmp_path):
    missing = tmp_path / "absent.yaml"
    res = run_once(["--config", str(missing)])
    stderr = res.stderr.decode(errors="replace")
    assert res.returncode == EXIT_CONFIG, f"exit {res.returncode}; stderr:\n{stderr}"
    assert "--config" in stderr or str(missing) in stderr, stderr


def test_config_file_not_yaml_mapping_exits_64(tmp_path):
    conf = tmp_path / "list.yaml"
    conf.write_text("- just\n- a list\n")
    res = run_once(["--config", str(conf)])
    assert res.returncode == EXIT_CONFIG, res.stderr.decode(errors="replace")


def test_console_script_runs_and_validates(make_proxy, fresh_upstream):
    """The installed ``meshproxy`` command is the same program."""
    assert SCRIPT.exists(), f"{SCRIPT} missing: install the package (pip install -e .)"
    res = run_once(env={"MESHPROXY_LOG_LEVEL": "loud"}, command=SCRIPT_COMMAND)
    assert res.returncode == EXIT_CONFIG and b"MESHPROXY_LOG_LEVEL" in res.stderr, res.stderr
    mp = make_proxy(command=SCRIPT_COMMAND)
    with RawClient(mp.outbound) as client:
        assert client.exchange("GET", "/echo", [("Host", fresh_upstream.hostport)]).status == 200

"""Tests of proxy/admin/server.py request handling (the live port is tested in tests/integration/test_admin.py)."""

import pytest

from proxy.admin.server import AdminHooks, AdminProtocol, AdminSettings, is_loopback
from proxy.telemetry import logging as plog


@pytest.mark.parametrize("host,expected", [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True),
                                           ("::ffff:127.0.0.1", True), ("10.0.0.1", False), ("::", False),
                                           ("", False), ("fe80::1%eth0", False)])
def test_loopback(host, expected):
    assert is_loopback(host) is expected


def _protocol(client: str, ready: bool = True, shutdown_enabled: bool = False):
    calls = []
    hooks = AdminHooks(is_ready=lambda: ready, metrics=lambda: b"m 1\n", shutdown=lambda: calls.append("down"),
                       config=lambda: {"a": "b"})
    proto = AdminProtocol(hooks, AdminSettings(shutdown_enabled=shutdown_enabled))
    proto.client = client
    return proto, calls


def test_routes_and_statuses():
    proto, _ = _protocol("10.0.0.9", ready=False)
    assert proto.handle(b"GET", b"/live", b"", False).startswith(b"HTTP/1.1 200")
    assert proto.handle(b"GET", b"/ready", b"", False).startswith(b"HTTP/1.1 503")
    assert proto.handle(b"GET", b"/metrics", b"", False).endswith(b"m 1\n")
    assert proto.handle(b"GET", b"/nope", b"", False).startswith(b"HTTP/1.1 404")
    assert b'"a": "b"' in proto.handle(b"GET", b"/config", b"", False)


def test_shutdown_is_an_unknown_path_unless_enabled():
    for client in ("127.0.0.1", "10.0.0.9"):
        proto, calls = _protocol(client)
        assert proto.handle(b"POST", b"/shutdown", b"", False).startswith(b"HTTP/1.1 404")
        assert proto.handle(b"GET", b"/shutdown", b"", False).startswith(b"HTTP/1.1 404")
        assert calls == []
    proto, calls = _protocol("10.0.0.9", shutdown_enabled=True)
    assert proto.handle(b"GET", b"/shutdown", b"", False).startswith(b"HTTP/1.1 405")
    assert proto.handle(b"POST", b"/shutdown", b"", False).startswith(b"HTTP/1.1 403")


def test_log_level_round_trip():
    proto, _ = _protocol("127.0.0.1")
    before = plog.current_level()
    try:
        assert proto.handle(b"PUT", b"/proxy-log-level", b"debug", False).startswith(b"HTTP/1.1 204")
        assert proto.handle(b"GET", b"/proxy-log-level", b"", False).endswith(b"debug\n")
        assert proto.handle(b"PUT", b"/proxy-log-level", b"chatty", False).startswith(b"HTTP/1.1 400")
    finally:
        plog.set_level(before)

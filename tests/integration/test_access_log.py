"""The HTTP access log (MESHPROXY_ACCESS_LOG=apache|json) against the real process: one line per
request on both listeners, HTTP/1 (curl) and HTTP/2 (nghttp, h2load), Linkerd's fields; off by
default; overflow of MESHPROXY_ACCESS_LOG_BUFFER dropped and counted on /metrics."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import UTC, datetime

import pytest

from helpers.clients import clean_env
from helpers.h2server import H2Origin
from helpers.ports import free_port

pytestmark = pytest.mark.timeout(90)

# Linkerd's apache (common log) line: addr id - [timestamp] "method uri version" status
APACHE = re.compile(r'^(?P<addr>\S+) (?P<id>\S+) - \[(?P<ts>[0-9T:.\-]+Z)\] '
                    r'"(?P<method>\S+) (?P<uri>\S+) (?P<version>HTTP/[0-9.]+)" (?P<status>\d{3}|-)$')
JSON_KEYS = ["client.addr", "client.id", "timestamp", "method", "uri", "version", "trace_id", "request_bytes",
             "status", "response_bytes", "total_ns", "processing_ns", "user_agent", "host"]


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, timeout=30, env=clean_env(), check=False)
    assert done.returncode == 0, (cmd, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout.decode(errors="replace")


def _curl(url: str, *args: str) -> None:
    _run(["curl", "-sS", "-o", "/dev/null", "--max-time", "10", *args, url])


def _wait_lines(mp, since: int, pick, count: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        found = [item for item in (pick(line) for line in mp.lines(since)) if item is not None]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _apache(line: str):
    return APACHE.match(line)


def _json(line: str):
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "client.addr" in value else None


@pytest.fixture
def h2_origin():
    """HTTP/2 requests go upstream as HTTP/2 (prior knowledge): they need an origin that speaks it."""
    server = H2Origin(name="h2-origin")
    yield server
    server.stop()


def _recent(ts: str) -> bool:
    when = datetime.strptime(ts[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    return abs((datetime.now(UTC) - when).total_seconds()) < 60 and re.fullmatch(r".*\.\d{9}Z", ts)


def test_apache_format_on_both_listeners_http1_and_http2(make_proxy, fresh_upstream, h2_origin):
    mp = make_proxy({"MESHPROXY_ACCESS_LOG": "apache", "MESHPROXY_INBOUND_DEFAULT_TARGET": fresh_upstream.hostport})
    # The inbound listener forwards to one default target: an HTTP/2 one for the HTTP/2 client.
    mp2 = make_proxy({"MESHPROXY_ACCESS_LOG": "apache", "MESHPROXY_INBOUND_DEFAULT_TARGET": h2_origin.hostport})
    mark = mp.mark()
    _curl(f"http://{mp.outbound_hostport}/echo?via=outbound", "-H", f"Host: {fresh_upstream.hostport}")
    _curl(f"http://{mp.inbound_hostport}/echo?via=inbound", "-X", "POST", "-d", "abc")
    _run(["nghttp", "-n", "-H", f":authority: {h2_origin.hostport}", f"http://{mp.outbound_hostport}/echo?h2=1"])
    closed = f"127.0.0.1:{free_port()}"
    _curl(f"http://{mp.outbound_hostport}/nowhere", "-H", f"Host: {closed}")  # answered 502 by the proxy
    mark2 = mp2.mark()
    _run(["nghttp", "-n", f"http://{mp2.inbound_hostport}/echo?h2=in"])
    lines = _wait_lines(mp, mark, _apache, 4) + _wait_lines(mp2, mark2, _apache, 1)
    got = [(m["method"], m["uri"], m["version"], m["status"]) for m in lines]
    assert got == [
        ("GET", "/echo?via=outbound", "HTTP/1.1", "200"),
        ("POST", "/echo?via=inbound", "HTTP/1.1", "200"),
        ("GET", f"http://{h2_origin.hostport}/echo?h2=1", "HTTP/2.0", "200"),
        ("GET", "/nowhere", "HTTP/1.1", "502"),
        ("GET", f"http://{mp2.inbound_hostport}/echo?h2=in", "HTTP/2.0", "200"),
    ], "\n".join(mp.lines(mark) + mp2.lines(mark2))
    for m in lines:
        assert re.fullmatch(r"127\.0\.0\.1:\d+", m["addr"]) and m["id"] == "-", m.group()
        assert _recent(m["ts"]), m.group()


def test_json_format_fields(make_proxy, fresh_upstream, h2_origin):
    mp = make_proxy({"MESHPROXY_ACCESS_LOG": "json", "MESHPROXY_LOG_FORMAT": "json",
                     "MESHPROXY_INBOUND_DEFAULT_TARGET": fresh_upstream.hostport})
    mark = mp.mark()
    _curl(f"http://{mp.outbound_hostport}/echo?a=1", "-H", f"Host: {fresh_upstream.hostport}",
          "-A", "access-test/1.0", "-H", "x-request-id: rid-42", "-d", "0123456789")
    _run(["nghttp", "-n", "-H", f":authority: {h2_origin.hostport}", "-H", "user-agent: nghttp-test",
          "-H", "x-b3-traceid: 80f198ee56343ba8", "-H", "x-request-id: not-this-one",
          f"http://{mp.outbound_hostport}/echo?b=2"])
    _curl(f"http://{mp.inbound_hostport}/echo-head", "-A", "inbound-test")
    lines = _wait_lines(mp, mark, _json, 3)
    assert len(lines) == 3, "\n".join(mp.lines(mark))
    h1, h2, inbound = lines
    for entry in lines:
        assert list(entry) == [key for key in JSON_KEYS if key in entry], entry  # Linkerd's order
        assert set(JSON_KEYS) - set(entry) <= {"response_bytes"}, entry  # absent: no content-length
        assert re.fullmatch(r"127\.0\.0\.1:\d+", entry["client.addr"]) and entry["client.id"] == "-", entry
        assert _recent(entry["timestamp"]), entry
        assert entry["status"] == 200 and re.fullmatch(r"\d*", entry.get("response_bytes", "")), entry
        assert 0 < entry["processing_ns"] <= entry["total_ns"] < 10**10, entry
    assert (h1["method"], h1["uri"], h1["version"], h1["host"]) == ("POST", "/echo?a=1", "HTTP/1.1",
                                                                     fresh_upstream.hostport)
    assert (h1["user_agent"], h1["trace_id"], h1["request_bytes"], h1["response_bytes"]) == (
        "access-test/1.0", "rid-42", "10", "10")
    assert (h2["method"], h2["uri"], h2["version"], h2["host"]) == (
        "GET", f"http://{h2_origin.hostport}/echo?b=2", "HTTP/2.0", h2_origin.hostport)
    # No body: its length is known, 0 (a chunked request, whose length is not, shows "").
    assert (h2["user_agent"], h2["trace_id"], h2["request_bytes"]) == ("nghttp-test", "80f198ee56343ba8", "0")
    assert (inbound["uri"], inbound["user_agent"], inbound["host"]) == (
        "/echo-head", "inbound-test", mp.inbound_hostport)


def test_off_by_default(make_proxy, fresh_upstream):
    mp = make_proxy({"MESHPROXY_INBOUND_DEFAULT_TARGET": fresh_upstream.hostport, "MESHPROXY_LOG_LEVEL": "debug"})
    mark = mp.mark()
    for _ in range(3):
        _curl(f"http://{mp.inbound_hostport}/echo")
    time.sleep(0.5)
    assert not [line for line in mp.lines(mark) if _apache(line) or _json(line)], mp.lines(mark)
    assert "access_log_dropped_total" not in mp.metrics()


def test_overflow_is_dropped_and_counted(make_proxy, h2_origin):
    """One line may wait: the streams h2load finishes together overflow it. Every request is
    either a line or a count."""
    mp = make_proxy({"MESHPROXY_ACCESS_LOG": "apache", "MESHPROXY_ACCESS_LOG_BUFFER": "1"})
    status, _, body = mp.admin_request("GET", "/metrics")
    assert b"# TYPE access_log_dropped_total counter" in body and b"# HELP access_log_dropped_total " in body
    mark = mp.mark()
    requests = 400
    out = _run(["h2load", "-n", str(requests), "-c", "2", "-m", "50", "-T", "20",
                "-H", f":authority: {h2_origin.hostport}", f"http://{mp.outbound_hostport}/echo"])
    assert f"{requests} succeeded" in out, out

    def settled():
        dropped = mp.metrics().get("access_log_dropped_total")
        lines = [line for line in mp.lines(mark) if _apache(line)]
        return dropped, len(lines)

    deadline = time.monotonic() + 10
    dropped, logged = settled()
    while dropped + logged < requests and time.monotonic() < deadline:
        time.sleep(0.1)
        dropped, logged = settled()
    assert dropped + logged == requests, (dropped, logged)
    assert dropped > 0 and logged > 0, (dropped, logged)

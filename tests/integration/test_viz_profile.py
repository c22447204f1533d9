"""``meshproxy viz profile SERVICE --tap RESOURCE`` against a real proxy: the routes its workload received, live,
as a ServiceProfile (inbound requests only, ``/`` skipped, sorted, escaped), the route limit ending the tap
early, and bad names or unreachable proxies refused with Linkerd's reasons and exit statuses."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from helpers.clients import clean_env
from helpers.meshproxy import REPO
from helpers.ports import free_port

pytestmark = pytest.mark.timeout(90)

WEB = {"MESHPROXY_WORKLOAD_KIND": "deployment", "MESHPROXY_WORKLOAD_NAME": "web",
       "MESHPROXY_WORKLOAD_NAMESPACE": "default", "MESHPROXY_WORKLOAD_POD": "web-5d8f7-abcde"}


def _profile(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "proxy", "viz", "profile", *args], cwd=REPO, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _curl(url: str, method: str = "GET", host: str | None = None) -> None:
    cmd = ["curl", "-sS", "-o", "/dev/null", "--max-time", "10", "-X", method, url]
    if host is not None:
        cmd[1:1] = ["-H", f"Host: {host}"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=30, env=clean_env())


def _wait_open(mp) -> None:
    deadline = time.monotonic() + 10
    while mp.metrics().get("tap_sessions_open") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mp.metrics().get("tap_sessions_open") >= 1


def test_routes_the_workload_received(make_proxy, fresh_upstream):
    mp = make_proxy(env={**WEB, "MESHPROXY_INBOUND_DEFAULT_TARGET": fresh_upstream.hostport})
    proc = _profile("web-svc", "--tap", "deploy/web", "--tap-address", mp.tap_hostport, "--tap-duration", "4s",
                    "-n", "default")
    try:
        _wait_open(mp)
        inbound = f"http://{mp.inbound_hostport}"
        for path, method in (("/books/1", "GET"), ("/books", "POST"), ("/books/1.json", "GET"), ("/", "GET"),
                             ("/authors?page=2", "GET"), ("/books/1", "GET")):
            _curl(inbound + path, method)
        # The same proxy's outbound side: not a request the workload received.
        _curl(f"http://{mp.outbound_hostport}/outbound-only", host=fresh_upstream.hostport)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    doc = yaml.safe_load(out)
    assert doc["apiVersion"] == "linkerd.io/v1alpha2" and doc["kind"] == "ServiceProfile"
    assert doc["metadata"] == {"name": "web-svc.default.svc.cluster.local", "namespace": "default"}
    assert doc["spec"]["routes"] == [
        {"name": "GET /authors", "condition": {"method": "GET", "pathRegex": "/authors"}},
        {"name": "GET /books/1", "condition": {"method": "GET", "pathRegex": "/books/1"}},
        {"name": "GET /books/1.json", "condition": {"method": "GET", "pathRegex": "/books/1\\.json"}},
        {"name": "POST /books", "condition": {"method": "POST", "pathRegex": "/books"}},
    ]


def test_the_route_limit_ends_the_tap_early(make_proxy, fresh_upstream):
    mp = make_proxy(env={**WEB, "MESHPROXY_INBOUND_DEFAULT_TARGET": fresh_upstream.hostport})
    proc = _profile("web-svc", "--tap", "deploy/web", "--tap-address", mp.tap_hostport, "--tap-duration", "60s",
                    "--tap-route-limit", "2", "-n", "shop")
    try:
        _wait_open(mp)
        started = time.monotonic()
        for path in ("/a", "/b", "/c"):
            _curl(f"http://{mp.inbound_hostport}{path}")
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    doc = yaml.safe_load(out)
    assert doc["metadata"]["name"] == "web-svc.shop.svc.cluster.local"
    assert [r["name"] for r in doc["spec"]["routes"]] == ["GET /a", "GET /b"]
    assert elapsed < 20  # stopped at the limit, not after --tap-duration


def test_another_workload_is_not_seen(make_proxy, fresh_upstream):
    mp = make_proxy(env={**WEB, "MESHPROXY_INBOUND_DEFAULT_TARGET": fresh_upstream.hostport})
    proc = _profile("api", "--tap", "deploy/api", "--tap-address", mp.tap_hostport, "--tap-duration", "2s")
    try:
        _wait_open(mp)
        _curl(f"http://{mp.inbound_hostport}/books/1")
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert yaml.safe_load(out)["spec"]["routes"] == []


@pytest.mark.parametrize(("args", "reason"), [
    (("Web_Svc", "--tap", "deploy/web"), "invalid service 'Web_Svc'"),
    (("web", "--tap", "deploy/web", "-n", "Shop!"), "invalid namespace 'Shop!'"),
    (("web", "--tap", "svc/web"), "name the workload"),
    (("web", "--tap", "web"), "expected KIND/NAME"),
    (("web", "--tap", "deploy/web", "--tap-route-limit", "0"), "--tap-route-limit"),
])
def test_bad_arguments_exit_64(args, reason):
    proc = _profile(*args, "--tap-address", f"127.0.0.1:{free_port()}")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 64 and reason in err and out == "", (proc.returncode, err)


def test_no_proxy_to_tap_exits_69():
    port = free_port()
    proc = _profile("web", "--tap", "deploy/web", "--tap-address", f"127.0.0.1:{port}", "--tap-duration", "5s",
                    "--timeout", "1")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 69 and f"tap 127.0.0.1:{port}: cannot connect" in err and out == "", err

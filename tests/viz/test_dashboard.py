"""proxy/viz/dashboard.py and web.py: the JSON API over canned scrapes of two proxies (web calls api
over mutual TLS), served by the dashboard's real server on a loopback port: the overview, a
workload's page with callers, callees and routes, the charts' history, the page and its vendored
assets, the snapshot stream, the tap stream's bad filter, and hostile requests."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from proxy.viz import web
from proxy.viz.dashboard import Dashboard, parse_address, url
from proxy.viz.embedded import Embedded, Scrape, series
from proxy.viz.targets import Target
from tests.helpers.ports import free_port

WEB = Target("127.0.0.1", 4191, (("deployment", "web"), ("namespace", "default"), ("pod", "web-0")))
API = Target("127.0.0.1", 4192, (("deployment", "api"), ("namespace", "default"), ("pod", "api-0")))
WEB_ID = "web.default.serviceaccount.identity.cluster.local"
API_ID = "api.default.serviceaccount.identity.cluster.local"
DST = "api.default.svc.cluster.local:80"


def _api(n: int) -> str:
    """api's inbound side after 10*n requests from web, every tenth a failure."""
    tls = f'tls="true",client_id="{WEB_ID}"'
    return "\n".join([
        f'request_total{{direction="inbound",{tls}}} {10 * n}',
        f'response_total{{direction="inbound",{tls},classification="success",status_code="200"}} {9 * n}',
        f'response_total{{direction="inbound",{tls},classification="failure",status_code="500"}} {n}',
        f'response_latency_ms_bucket{{direction="inbound",le="10"}} {5 * n}',
        f'response_latency_ms_bucket{{direction="inbound",le="100"}} {10 * n}',
        f'response_latency_ms_bucket{{direction="inbound",le="+Inf"}} {10 * n}',
        'process_start_time_seconds{} 1', ""])


def _web(n: int) -> str:
    """web's outbound side: the same requests, to api, on route ``ok``."""
    dst = (f'dst_namespace="default",dst_deployment="api",dst_service="api",authority="{DST}",tls="true",'
           f'server_id="{API_ID}"')
    return "\n".join([
        f'request_total{{direction="outbound",{dst}}} {10 * n}',
        f'response_total{{direction="outbound",{dst},classification="success",status_code="200"}} {9 * n}',
        f'response_total{{direction="outbound",{dst},classification="failure",status_code="500"}} {n}',
        f'route_response_total{{direction="outbound",dst="{DST}",rt_route="ok",classification="success"}} {9 * n}',
        f'route_response_total{{direction="outbound",dst="{DST}",rt_route="ok",classification="failure"}} {n}',
        'process_start_time_seconds{} 1', ""])


def _board() -> Dashboard:
    mesh = Embedded([WEB, API])
    for window in mesh.windows:
        text = _web if window.target.port == WEB.port else _api
        for at, n in ((100.0, 10), (110.0, 20)):  # 100 requests in 10 seconds
            window.scrapes.append(Scrape(at, series(text(n), window.target.labels)))
    # Not scraped again by the refresh (embedded=None): the canned window stays as it is.
    return Dashboard(mesh, None, window=60.0, interval=0.2, tap_targets=[("127.0.0.1", 1)])


class Client:
    """An HTTP client of the server under test (aiohttp's, an independent implementation)."""

    def __init__(self, session: aiohttp.ClientSession, board: Dashboard, port: int) -> None:
        self.session, self.board, self.port = session, board, port

    async def get(self, path: str, **kwargs) -> aiohttp.ClientResponse:
        return await self.session.get(path, **kwargs)


async def _with_client(check) -> None:
    board = _board()
    await board.refresh()
    server = web.Server(board)
    port = free_port()
    server.start("127.0.0.1", port)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            await check(Client(session, board, port))
    finally:
        await server.stop()


def _run(check) -> None:
    asyncio.run(_with_client(check))


def test_overview_has_each_workload_with_golden_metrics_and_tls_share():
    async def check(client: Client) -> None:
        resp = await client.get("/api/overview")
        assert resp.status == 200
        data = await resp.json()
        rows = {w["name"]: w for w in data["workloads"]}
        assert set(rows) == {"api", "web"}
        api = rows["api"]
        assert api["meshed"] == "1/1" and api["success"] == 0.9 and api["rps"] == 10.0
        assert api["tls_share"] == 1.0
        assert 0 < api["latency_ms_p50"] <= 10 < api["latency_ms_p99"] <= 100
        assert rows["web"]["rps"] is None and rows["web"]["tls_share"] is None  # nobody calls web
        [edge] = data["edges"]
        assert (edge["src"], edge["dst"], edge["secured"]) == ("web", "api", True)
        assert edge["server_id"] == API_ID and edge["client_id"] == WEB_ID and edge["rps"] == 10.0
        assert data["unreachable"] == [] and data["error"] is None

    _run(check)


def test_workload_page_has_callers_callees_routes_and_charts():
    async def check(client: Client) -> None:
        api = await (await client.get("/api/workloads/default/api")).json()
        assert [e["src"] for e in api["callers"]] == ["web"] and api["callees"] == []
        success = api["charts"]["default/api"]["success"]
        assert success and set(success) == {0.9}  # a point per refresh (the app refreshes too)
        web_page = await (await client.get("/api/workloads/default/web")).json()
        assert [e["dst"] for e in web_page["callees"]] == ["api"] and web_page["callers"] == []
        [route] = web_page["routes"]
        assert (route["route"], route["service"], route["effective_success"], route["effective_rps"]) == (
            "ok", "api", 0.9, 10.0)
        assert (await client.get("/api/workloads/default/nope")).status == 404

    _run(check)


def test_charts_keep_a_point_per_refresh():
    async def check(client: Client) -> None:
        board = client.board
        before = len(board.history["default/api"])
        await board.refresh()
        charts = await (await client.get("/api/charts")).json()
        assert set(charts) == {"default/api", "default/web"}
        api = charts["default/api"]
        assert len(api["t"]) >= before + 1 and set(api["rps"]) == {10.0} and api["t"] == sorted(api["t"])

    _run(check)


def test_page_and_vendored_assets_are_served_locally():
    async def check(client: Client) -> None:
        page = await (await client.get("/")).text()
        assert '<table id="workloads">' in page and "http" not in page.replace('charset="utf-8"', "")
        for asset in ("uPlot.iife.min.js", "uPlot.min.css", "dashboard.js", "dashboard.css", "uPlot.LICENSE"):
            assert (await client.get(f"/static/{asset}")).status == 200, asset

    _run(check)


def test_stream_sends_the_current_snapshot_first():
    async def check(client: Client) -> None:
        resp = await client.get("/api/stream")
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        event = data = None
        async with asyncio.timeout(5):
            while data is None:
                line = (await resp.content.readline()).decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    data = json.loads(line.split(":", 1)[1])
        assert event == "snapshot" and {w["name"] for w in data["workloads"]} == {"api", "web"}
        resp.close()

    _run(check)


def test_tap_stream_rejects_a_bad_filter():
    async def check(client: Client) -> None:
        resp = await client.get("/api/tap", params={"to": "nonsense"})
        assert resp.status == 400 and "--to" in await resp.text()

    _run(check)


def test_address_and_url():
    assert parse_address("127.0.0.1:50750") == ("127.0.0.1", 50750)
    assert parse_address(":8084") == ("127.0.0.1", 8084)
    assert url("0.0.0.0:50750") == "http://0.0.0.0:50750/"


def test_only_the_dashboard_imports_the_web_server():
    """The other viz commands and ``meshproxy run`` (its idle RSS matters) never load the web server."""
    import subprocess
    import sys

    code = ("import sys, proxy.cli, proxy.app; run = [m for m in sys.modules if m.startswith('proxy.viz')]; "
            "import proxy.viz.command; "
            "print(run, sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'tornado') "
            "or m == 'proxy.viz.web'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[] []", out.stdout


def test_without_the_viz_extra_the_dashboard_says_what_to_install(tmp_path):
    """The image installs meshproxy without [viz]: the dashboard explains, the other viz commands still work."""
    import subprocess
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    (tmp_path / "tornado").mkdir()
    (tmp_path / "tornado" / "__init__.py").write_text("raise ImportError(\"No module named 'tornado'\")\n")
    out = subprocess.run([sys.executable, "-m", "proxy", "viz", "dashboard", "--proxy", "127.0.0.1:9"],
                         capture_output=True, text=True, timeout=60, env={"PYTHONPATH": f"{tmp_path}:{repo}"},
                         cwd=repo)
    assert out.returncode == 69, out
    assert "pip install 'meshproxy[viz]'" in out.stderr and "tornado" in out.stderr


def test_proxies_known_by_address_are_pods():
    """Without deployment labels (proxies named by address, as in the demo) the workloads are pods."""
    mesh = Embedded([Target("127.0.0.1", 4192)])
    for at, n in ((100.0, 10), (110.0, 20)):
        mesh.windows[0].scrapes.append(Scrape(at, series(_api(n), mesh.windows[0].target.labels)))
    board = Dashboard(mesh, None, window=60.0, interval=1.0)

    async def check() -> None:
        snap = await board.refresh()
        [row] = snap.workloads
        assert (row["kind"], row["namespace"], row["name"], row["rps"], row["tls_share"]) == (
            "pod", "default", "127.0.0.1:4192", 10.0, 1.0)
        page = await board.workload("default", "127.0.0.1:4192")
        assert page is not None and [e["src"] for e in page["callers"]] == ["web"]

    asyncio.run(check())


def test_hostile_requests_are_refused_without_harm():
    """A head past MAX_HEAD is cut off (the connection closed), a body (the page sends none) and garbage
    are answered 400, and the server still answers the page afterwards."""

    async def raw(port: int, data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        await writer.drain()
        try:
            async with asyncio.timeout(5):
                return await reader.read()
        finally:
            writer.close()

    async def check(client: Client) -> None:
        port = client.port
        big = b"GET /api/overview HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * web.MAX_HEAD + b"\r\n\r\n"
        assert await raw(port, big) == b""
        body = b"GET /api/overview HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
        assert (await raw(port, body)).startswith(b"HTTP/1.1 400 ")
        assert (await raw(port, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        assert (await client.get("/api/overview")).status == 200

    _run(check)

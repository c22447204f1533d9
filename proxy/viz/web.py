"""The dashboard's web server (aiohttp): the page and its static files, the JSON API, and two
Server-Sent Event streams (aiohttp-sse): snapshots as they are refreshed, and live tap events.

Everything the page loads is served from ``proxy/viz/static/`` (uPlot for the charts is vendored
there with its license), so the dashboard works with no internet access.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

# frozenlist's C++ extension (which aiohttp loads) maps libstdc++, 0.9 MiB resident, for the few lists the
# dashboard's server builds: its pure-Python twin does, so this process stays within its memory bar.
os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")

from aiohttp import web  # noqa: E402
from aiohttp_sse import sse_response  # noqa: E402

from proxy.viz import tap
from proxy.viz.dashboard import Dashboard, url
from proxy.viz.tapevent import TapEvent

STATIC = Path(__file__).with_name("static")
BOARD = web.AppKey("board", Dashboard)
TAP_QUEUE = 1000  # events waiting for a slow browser; past it the newest are dropped (and counted)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def overview(request: web.Request) -> web.Response:
    """The latest snapshot: workloads with their golden metrics and TLS share, edges, failed proxies."""
    return web.json_response(request.app[BOARD].snapshot.json())


async def charts(request: web.Request) -> web.Response:
    """Every workload's history over the window, as column arrays."""
    return web.json_response(request.app[BOARD].charts())


async def workload(request: web.Request) -> web.Response:
    """One workload's page: its row, callers and callees (with mTLS status), routes and charts."""
    found = await request.app[BOARD].workload(request.match_info["namespace"], request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such workload"}), content_type="application/json")
    return web.json_response(found)


async def stream(request: web.Request) -> web.StreamResponse:
    """``event: snapshot`` with the overview's JSON at every refresh, the current one first."""
    board = request.app[BOARD]
    async with sse_response(request) as resp:
        with contextlib.suppress(ConnectionResetError):  # the page went away
            while resp.is_connected():
                changed = board.changed
                await resp.send(json.dumps(board.snapshot.json()), event="snapshot")
                await changed.wait()
    return resp


async def tap_stream(request: web.Request) -> web.StreamResponse:
    """Live tap: ``event: tap`` per TapEvent (Linkerd's JSON), from every tap target at once, filtered
    by the query's ``to``, ``method``, ``path`` and ``authority``; ``event: stopped`` when a proxy's tap
    ends (why). The taps stop when the browser goes away."""
    board = request.app[BOARD]
    try:
        observe = board.tap_request(dict(request.query))
    except tap.TapError as err:
        raise web.HTTPBadRequest(text=str(err)) from None
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(TAP_QUEUE)

    def on_event(event: TapEvent) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(("tap", event.json()))

    async def one(target: tap.Tapped) -> None:
        why = await tap.tap_proxy(target, board.tap_share(), observe, on_event, board.timeout, board.tap_tls)
        await queue.put(("stopped", json.dumps({"proxy": f"{target[0]}:{target[1]}", "error": why})))

    async with sse_response(request) as resp:
        tasks = [asyncio.create_task(one(target)) for target in board.tap_targets]
        try:
            await resp.send(json.dumps({"proxies": [f"{h}:{p}" for h, p, _ in board.tap_targets]}),
                            event="started")
            while resp.is_connected():
                try:  # bounded, so a browser gone while no request passes is noticed
                    kind, data = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    continue
                await resp.send(data, event=kind)
        except ConnectionResetError:
            pass  # the page went away: stop tapping
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return resp


def make_app(board: Dashboard) -> web.Application:
    app = web.Application()
    app[BOARD] = board
    app.router.add_get("/", index)
    app.router.add_get("/api/overview", overview)
    app.router.add_get("/api/charts", charts)
    app.router.add_get("/api/workloads/{namespace}/{name}", workload)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/api/tap", tap_stream)
    app.router.add_static("/static/", STATIC)

    async def refresher(app: web.Application):
        task = asyncio.create_task(board.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(refresher)
    return app


def serve(board: Dashboard, host: str, port: int) -> int:
    def ready(_: object) -> None:
        print(f"meshproxy viz dashboard: {url(f'{host}:{port}')}", flush=True)

    web.run_app(make_app(board), host=host, port=port, print=ready, handle_signals=True, shutdown_timeout=1.0)
    return 0

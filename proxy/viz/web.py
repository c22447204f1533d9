"""The dashboard's web server (tornado): the page and its static files, the JSON API, and two
Server-Sent Event streams: snapshots as they are refreshed, and live tap events.

Everything the page loads is served from ``proxy/viz/static/`` (uPlot for the charts is vendored
there with its license), so the dashboard works with no internet access. Tornado, not aiohttp:
the issue's bar is 20 MB of RSS for the whole embedded dashboard, and aiohttp with what it imports
(its HTTP client, cookie jar and TLS contexts come with the server) took 16 MiB of it; tornado's
server takes 8 (``benchmarks/RESULTS.md``, "viz memory").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

from tornado import httpserver, iostream, web

from proxy.viz import tap
from proxy.viz.dashboard import Dashboard, url
from proxy.viz.tapevent import TapEvent

STATIC = Path(__file__).with_name("static")
TAP_QUEUE = 1000  # events waiting for a slow browser; past it the newest are dropped (and counted)
# The page sends only GETs: no body is accepted, and a head larger than this is refused with 431.
MAX_HEAD = 16 << 10
IDLE_SECONDS = 75.0  # a kept-alive connection with no request is closed after this long (aiohttp's default)
# Headers of an event stream: not cached, not buffered by a proxy in front.
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Handler(web.RequestHandler):
    """A JSON API handler over the dashboard's state."""

    board: Dashboard

    def initialize(self, board: Dashboard) -> None:
        self.board = board

    def set_default_headers(self) -> None:
        self.clear_header("Server")

    def send_json(self, data: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data))


class Overview(Handler):
    """The latest snapshot: workloads with their golden metrics and TLS share, edges, failed proxies."""

    def get(self) -> None:
        self.send_json(self.board.snapshot.json())


class Charts(Handler):
    """Every workload's history over the window, as column arrays."""

    def get(self) -> None:
        self.send_json(self.board.charts())


class Workload(Handler):
    """One workload's page: its row, callers and callees (with mTLS status), routes and charts."""

    async def get(self, namespace: str, name: str) -> None:
        found = await self.board.workload(namespace, name)
        if found is None:
            self.send_json({"error": "no such workload"}, 404)
        else:
            self.send_json(found)


class EventStream(Handler):
    """Server-Sent Events: ``event: KIND`` and one ``data:`` line (JSON has no newline) per event, each
    flushed to the socket before the next; ``gone`` is set when the browser goes away."""

    def prepare(self) -> None:
        self.gone = asyncio.Event()

    def on_connection_close(self) -> None:
        self.gone.set()

    def start_stream(self) -> None:
        for name, value in SSE_HEADERS.items():
            self.set_header(name, value)

    async def send(self, kind: str, data: str) -> None:
        self.write(f"event: {kind}\ndata: {data}\n\n")
        await self.flush()  # waits for the socket: a slow browser holds its own stream, nothing piles up

    async def until_gone(self, waiting: asyncio.Future | asyncio.Task) -> bool:
        """Wait for ``waiting`` or the browser's going away, whichever first; True when gone."""
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        return self.gone.is_set()


class Stream(EventStream):
    """``event: snapshot`` with the overview's JSON at every refresh, the current one first."""

    async def get(self) -> None:
        self.start_stream()
        with contextlib.suppress(iostream.StreamClosedError):  # the page went away
            while not self.gone.is_set():
                changed = self.board.changed
                await self.send("snapshot", json.dumps(self.board.snapshot.json()))
                waiting = asyncio.ensure_future(changed.wait())
                if await self.until_gone(waiting):
                    waiting.cancel()


class TapStream(EventStream):
    """Live tap: ``event: tap`` per TapEvent (Linkerd's JSON), from every tap target at once, filtered
    by the query's ``to``, ``method``, ``path`` and ``authority``; ``event: stopped`` when a proxy's tap
    ends (why). The taps stop when the browser goes away."""

    async def get(self) -> None:
        board = self.board
        params = {name: self.get_query_argument(name) for name in self.request.query_arguments}
        try:
            observe = board.tap_request(params)
        except tap.TapError as err:
            self.set_status(400)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(str(err))
            return
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(TAP_QUEUE)

        def on_event(event: TapEvent) -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(("tap", event.json()))

        async def one(target: tap.Tapped) -> None:
            why = await tap.tap_proxy(target, board.tap_share(), observe, on_event, board.timeout, board.tap_tls)
            await queue.put(("stopped", json.dumps({"proxy": f"{target[0]}:{target[1]}", "error": why})))

        self.start_stream()
        tasks = [asyncio.create_task(one(target)) for target in board.tap_targets]
        try:
            await self.send("started", json.dumps({"proxies": [f"{h}:{p}" for h, p, _ in board.tap_targets]}))
            while not self.gone.is_set():
                waiting = asyncio.ensure_future(queue.get())
                if await self.until_gone(waiting):
                    waiting.cancel()
                    break
                kind, data = waiting.result()
                await self.send(kind, data)
        except iostream.StreamClosedError:
            pass  # the page went away: stop tapping
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class Static(web.StaticFileHandler):
    def set_default_headers(self) -> None:
        self.clear_header("Server")


def make_app(board: Dashboard) -> web.Application:
    api = {"board": board}
    return web.Application([
        (r"/()", Static, {"path": str(STATIC), "default_filename": "index.html"}),
        (r"/api/overview", Overview, api),
        (r"/api/charts", Charts, api),
        (r"/api/workloads/([^/]+)/([^/]+)", Workload, api),
        (r"/api/stream", Stream, api),
        (r"/api/tap", TapStream, api),
        (r"/static/(.*)", Static, {"path": str(STATIC)}),
    ], compress_response=False)


class Server:
    """The dashboard's server on ``host:port`` with its refresher, in the running loop."""

    def __init__(self, board: Dashboard) -> None:
        self.board = board
        self.http = httpserver.HTTPServer(make_app(board), max_header_size=MAX_HEAD, max_body_size=0,
                                          idle_connection_timeout=IDLE_SECONDS)
        self.refresher: asyncio.Task | None = None

    def start(self, host: str, port: int) -> None:
        """Listen (``OSError`` when the address is taken) and start refreshing."""
        self.http.listen(port, host)
        self.refresher = asyncio.create_task(self.board.run())

    async def stop(self, grace: float = 1.0) -> None:
        """Stop listening and refreshing; close open connections (event streams too) within ``grace``."""
        self.http.stop()
        if self.refresher is not None:
            self.refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.refresher
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.http.close_all_connections(), grace)


def serve(board: Dashboard, host: str, port: int) -> int:
    async def main() -> int:
        server = Server(board)
        try:
            server.start(host, port)
        except OSError as err:
            print(f"meshproxy viz dashboard: cannot listen on {host}:{port}: {err.strerror or err}", file=sys.stderr)
            return 69
        print(f"meshproxy viz dashboard: {url(f'{host}:{port}')}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()
        return 0

    return asyncio.run(main())

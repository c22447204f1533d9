"""``meshproxy viz top``: the most requested paths right now, from the proxies' tap streams.

As ``linkerd viz top``: every request the taps report (``viz tap``'s targets, filters and
``--max-rps``) is counted by source, destination, method and path, with the best, worst and last
latency (request to response head) and the success rate (a 5xx, a gRPC status other than OK or a
reset is a failure). On a terminal the table fills the screen (the terminal's alternate screen, as a
full-screen program) and is redrawn every ``--refresh`` seconds until ``q`` or Ctrl-C, which leave the
terminal as it was; otherwise, or with ``--duration``, it is printed at the end (and every
``--refresh`` when not a terminal).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import Any

from proxy.viz import tap
from proxy.viz.resources import duration
from proxy.viz.tapevent import TapEvent, observe_request

COLUMNS = ("Source", "Destination", "Method", "Path", "Count", "Best", "Worst", "Last", "Success Rate")


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("top", help="the most requested paths right now, from the proxies' taps")
    tap.add_arguments(t)
    t.add_argument("--refresh", type=duration, default=1.0, metavar="DURATION",
                   help="time between two tables (default 1s)")
    t.add_argument("--duration", type=duration, default=0.0, metavar="DURATION",
                   help="stop after this long and print the table (default: run until interrupted)")
    t.add_argument("--max-rows", type=int, default=20, help="rows shown, most requested first (default 20)")


@dataclass
class Row:
    source: str
    destination: str
    method: str
    path: str
    count: int = 0
    successes: int = 0
    best_us: int = 0
    worst_us: int = 0
    last_us: int = 0


class Table:
    """Requests aggregated as their events come: the request_init says who and what, the response_init the
    latency and status, the response_end whether it succeeded."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str, str], Row] = {}
        self.pending: dict[str, tuple[tuple[str, str, str, str], int]] = {}  # id -> (key, status)

    def add(self, event: TapEvent) -> None:
        if event.kind == "request_init":
            key = (_host(event.source), _host(event.destination), event.method, event.path)
            self.pending[event.id] = (key, 0)
            if len(self.pending) > 100_000:  # ends that never came (a dropped event): forget the oldest
                self.pending.pop(next(iter(self.pending)))
            return
        found = self.pending.get(event.id)
        if found is None:
            return
        key, status = found
        if event.kind == "response_init":
            self.pending[event.id] = (key, event.status)
            row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = Row(*key)
            latency = event.since_request_us
            row.best_us = latency if row.count == 0 else min(row.best_us, latency)
            row.worst_us = max(row.worst_us, latency)
            row.last_us = latency
            row.count += 1
            return
        del self.pending[event.id]
        row = self.rows.get(key)
        if row is None:  # ended before a response head (the proxy or the client cut it)
            row = self.rows[key] = Row(*key)
            row.count += 1
            return
        failed = status >= 500 or (event.grpc_status is not None and event.grpc_status != 0) \
            or event.reset_code is not None
        if not failed:
            row.successes += 1

    def render(self, max_rows: int) -> str:
        rows = sorted(self.rows.values(), key=lambda r: (-r.count, r.path))[:max_rows]
        cells = [list(COLUMNS)] + [[r.source, r.destination, r.method, r.path, str(r.count), _ms(r.best_us),
                                    _ms(r.worst_us), _ms(r.last_us),
                                    f"{100.0 * r.successes / r.count:.2f}%" if r.count else "-"] for r in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
        return "\n".join(lines) if rows else "No requests yet."


def _host(address: str) -> str:
    """An address without its port: the source's port is ephemeral, grouping by it would split every client."""
    return address.rpartition(":")[0] or address


def _ms(us: int) -> str:
    return f"{us / 1000:.0f}ms" if us >= 1000 else f"{us}µs"


class Screen:
    """The terminal while the live table is shown: the alternate screen, no cursor, keys read one by one
    (Ctrl-C still interrupts); ``close`` puts everything back."""

    ENTER = "\x1b[?1049h\x1b[?25l"
    LEAVE = "\x1b[?25h\x1b[?1049l"

    def __init__(self, quit_: asyncio.Event) -> None:
        import termios
        import tty

        self.fd = sys.stdin.fileno()
        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        self.quit = quit_
        asyncio.get_running_loop().add_reader(self.fd, self._key)
        sys.stdout.write(self.ENTER)
        sys.stdout.flush()

    def _key(self) -> None:
        import os

        keys = os.read(self.fd, 64)
        if not keys or b"q" in keys or b"Q" in keys:  # q, or the terminal went away
            self.quit.set()

    def show(self, text: str) -> None:
        rows = text.split("\n")[: max(1, _lines() - 1)]
        sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(rows) + "\n\n(q to quit)")
        sys.stdout.flush()

    def close(self) -> None:
        import termios

        asyncio.get_running_loop().remove_reader(self.fd)
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        sys.stdout.write(self.LEAVE)
        sys.stdout.flush()


def _lines() -> int:
    import shutil

    return shutil.get_terminal_size().lines


async def run(args: argparse.Namespace) -> int:
    found = tap.targets(args)
    labels = tap.to_labels(args.to)
    tls = tap.tls_context(args.identity_dir)
    table = Table()
    live = not args.duration and sys.stdout.isatty() and sys.stdin.isatty()
    quit_ = asyncio.Event()

    def request(limit: int) -> bytes:
        return observe_request(limit, args.method, args.path, args.authority, labels)

    async def show(screen: Screen | None) -> None:
        while True:
            if screen is not None:
                screen.show(table.render(args.max_rows))
            await asyncio.sleep(args.refresh)
            if screen is None:
                print(table.render(args.max_rows) + "\n", flush=True)

    taps = tap.Taps(found, args.max_rps, request, table.add, args.timeout, tls)
    screen = Screen(quit_) if live else None
    painter = asyncio.ensure_future(show(screen)) if not args.duration else None
    quitting: asyncio.Future[Any] = asyncio.ensure_future(quit_.wait())
    try:
        if not await taps.until(quitting, args.duration or None):
            if args.duration:
                print(table.render(args.max_rows), flush=True)
            return tap.EX_OK  # the time was up, or q
    finally:
        quitting.cancel()
        if painter is not None:
            painter.cancel()
        if screen is not None:
            screen.close()
        await taps.stop()
    return taps.report()


def main(args: argparse.Namespace) -> int:
    return tap.run_command("top", run, args)

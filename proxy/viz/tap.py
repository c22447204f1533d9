"""``meshproxy viz tap``: watch live requests through every matching proxy's tap server at once.

Each proxy's tap port (``--tap HOST:PORT``, or every meshed endpoint of the endpoints file, port 4190 or
the endpoint's ``meshproxy.io/tap-port`` label) gets one ``Observe`` call at a time over HTTP/2: plaintext
(a tap server serves plaintext to loopback clients only), or mutual TLS with ``--identity-dir`` (the tap
identity's ``tls.crt``/``tls.key`` and the trust anchors ``ca.crt``; the proxy's own identity, from the
endpoints file or ``--tap HOST:PORT=IDENTITY``, checked as the server's name). As Linkerd's tap API
does, ``--max-rps`` bounds the requests reported: each second every proxy may report its share, and
its stream is opened again for the next second once that share is spent.
Events are printed as Linkerd prints them (``req``, ``rsp``, ``end`` lines; ``-o wide`` adds the
labels; ``-o json`` one object per event), streams merged as they come.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from proxy.telemetry.pbwire import DecodeError, grpc_frame, grpc_status
from proxy.viz.resources import duration
from proxy.viz.tapevent import TapEvent, decode_event, observe_request
from proxy.viz.targets import add_kube_arguments, kube_wanted

TAP_PORT = 4190
TAP_PORT_LABEL = "meshproxy.io/tap-port"
OBSERVE_PATH = "/io.linkerd.proxy.tap.Tap/Observe"
EX_OK, EX_USAGE, EX_UNAVAILABLE = 0, 64, 69


class TapError(Exception):
    """A proxy's tap could not be used; the message says why, ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 64) -> None:
        super().__init__(message)
        self.code = code


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tap", help="live requests through the proxies (Linkerd's req/rsp/end lines)")
    add_arguments(t)
    t.add_argument("-o", "--output", choices=("line", "wide", "json"), default="line")


def add_arguments(t: argparse.ArgumentParser) -> None:
    """Which proxies to tap and which requests: shared by ``viz tap`` and ``viz top``."""
    t.add_argument("--tap", action="append", default=[], metavar="HOST:PORT",
                   help="a proxy's tap address (repeatable; default: every meshed endpoint of --endpoints or "
                        "MESHPROXY_DESTINATION's file on port 4190, else 127.0.0.1:4190)")
    t.add_argument("--endpoints", metavar="FILE", help="tap every meshed endpoint of this discovery endpoints file")
    add_kube_arguments(t)
    t.add_argument("--to", metavar="KIND/NAME", help="only requests to this destination (deploy/NAME, po/NAME, "
                                                     "svc/NAME, ns/NAME: matched on the destination's labels)")
    t.add_argument("--method", help="only requests with this HTTP method")
    t.add_argument("--path", help="only requests whose path starts with this")
    t.add_argument("--authority", help="only requests to this authority (exact)")
    t.add_argument("--max-rps", type=float, default=100.0, help="most requests reported per second, over all "
                                                                "proxies (default 100)")
    t.add_argument("--timeout", type=duration, default=5.0, metavar="DURATION",
                   help="give up connecting to a proxy after this long (default 5s)")
    t.add_argument("--identity-dir", metavar="DIR", help="tap over mutual TLS as the identity whose tls.crt and "
                                                          "tls.key are in DIR, trusting DIR/ca.crt (the proxies' "
                                                          "MESHPROXY_TAP_IDENTITY)")


_TO_LABELS = {"deploy": "deployment", "deployment": "deployment", "po": "pod", "pod": "pod", "svc": "service",
              "service": "service", "ns": "namespace", "namespace": "namespace", "sts": "statefulset",
              "ds": "daemonset"}


def to_labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    kind, sep, name = text.partition("/")
    if not sep or not name or kind not in _TO_LABELS:
        raise TapError(f"--to {text!r}: expected KIND/NAME with KIND one of deploy, po, svc, ns, sts, ds")
    return {_TO_LABELS[kind]: name}


Tapped = tuple[str, int, str | None]  # a proxy's tap host, port, and its mesh identity (for mutual TLS)


def targets(args: argparse.Namespace) -> list[Tapped]:
    import os

    found: list[Tapped] = []
    for text in args.tap:
        address, _, identity = text.strip().partition("=")
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
            raise TapError(f"--tap {text!r}: expected HOST:PORT (or HOST:PORT=IDENTITY) of a proxy's tap server")
        found.append((host.strip("[]"), int(port), identity or None))
    if kube_wanted(args):
        from proxy.viz import kube

        try:
            found += [(pod.ip, pod.tap_port, pod.identity) for pod in kube.pods(args)]
        except kube.KubeError as err:
            raise TapError(str(err), err.code) from None
    path = args.endpoints
    if path is None and not found:
        destination = os.environ.get("MESHPROXY_DESTINATION", "")
        path = destination[len("file://"):] if destination.startswith("file://") else None
    if path is not None:
        found += _from_endpoints(path)
    return found or [("127.0.0.1", TAP_PORT, None)]


def _from_endpoints(path: str) -> list[Tapped]:
    """Every meshed endpoint's proxy: its host, tap port (4190, or the meshproxy.io/tap-port label), identity."""
    from proxy.discovery.filespec import SpecError, parse_document

    try:
        with open(path, encoding="utf-8") as handle:
            services = parse_document(handle.read())
    except OSError as err:
        raise TapError(f"cannot read the endpoints file {path}: {err.strerror or err}") from None
    except SpecError as err:
        raise TapError(f"invalid endpoints file {path}: {err}") from None
    found: dict[tuple[str, int], Tapped] = {}
    for spec in services.values():
        for endpoint in spec.snapshot.endpoints:
            if endpoint.proxy is None:
                continue
            port = endpoint.label(TAP_PORT_LABEL, str(TAP_PORT)) or ""
            if not port.isdigit() or not 0 < int(port) <= 65535:
                raise TapError(f"invalid endpoints file {path}: label {TAP_PORT_LABEL} must be a port, got {port!r}")
            key = (endpoint.proxy[0], int(port))
            found.setdefault(key, (key[0], key[1], endpoint.identity))
    return list(found.values())


def tls_context(directory: str | None) -> ssl.SSLContext | None:
    """The client side of mesh TLS for ``viz tap``: the tap identity's certificate, the trust anchors."""
    if directory is None:
        return None
    base = Path(directory)
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(base / "ca.crt"))
        ctx.load_cert_chain(str(base / "tls.crt"), str(base / "tls.key"))
    except (OSError, ssl.SSLError) as err:
        raise TapError(f"--identity-dir {directory}: {err}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    return ctx


class ObserveCall(asyncio.Protocol):
    """One Observe call on its own HTTP/2 connection (the proxy's own compiled HTTP/2 code, client side):
    events handed to ``on_event`` as they arrive."""

    # A large stream window: the tap server never holds events back for want of credit.
    WINDOW = 16 << 20

    def __init__(self, request: bytes, on_event: Callable[[TapEvent], None]) -> None:
        # Imported on the first call: the dashboard loads this module whether or not its tap view is opened.
        from proxy.protocol import h2conn

        self.h2 = h2conn
        self.request = request
        self.on_event = on_event
        self.conn = h2conn.H2Connection(True, h2conn.H2Settings(initial_window_size=self.WINDOW))
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.done: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.status = -1
        self.message = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        conn = self.conn
        conn.initiate()
        sid = conn.send_request([(b":method", b"POST"), (b":scheme", b"http"), (b":path", OBSERVE_PATH.encode()),
                                 (b":authority", b"tap"), (b"content-type", b"application/grpc"),
                                 (b"te", b"trailers"), (b"user-agent", b"meshproxy-viz-tap")], False)
        conn.send_data(sid, grpc_frame(self.request), True)
        self.transport.write(conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        conn, h2conn = self.conn, self.h2
        for event in conn.receive_data(data, int(time.monotonic() * 1000)):
            if isinstance(event, h2conn.DataReceived):
                conn.acknowledge_received(event.stream_id, event.flow_controlled_length)
                self._messages(event.data)
            elif isinstance(event, h2conn.ResponseReceived | h2conn.TrailersReceived):
                code, message = grpc_status(event.headers)
                if code >= 0:
                    self.status, self.message = code, message
            elif isinstance(event, h2conn.StreamReset | h2conn.ConnectionTerminated):
                self._finish(-1, "the tap server ended the stream")
            # The stream's end: trailers, or the end_stream flag of a trailers-only head or of the last data.
            if isinstance(event, h2conn.TrailersReceived) or getattr(event, "end_stream", False):
                self._finish(self.status, self.message)
        if self.transport is not None:
            out = conn.data_to_send()
            if out:
                self.transport.write(out)

    def _messages(self, data: bytes) -> None:
        buf = self.buffer + data
        while len(buf) >= 5:
            size = int.from_bytes(buf[1:5], "big")
            if len(buf) < 5 + size:
                break
            try:
                self.on_event(decode_event(buf[5:5 + size]))
            except DecodeError as err:
                self._finish(-1, f"undecodable tap event: {err}")
                return
            buf = buf[5 + size:]
        self.buffer = buf

    def _finish(self, code: int, message: str) -> None:
        if not self.done.done():
            self.done.set_result((code, message))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(self.status if self.status >= 0 else -1, self.message or "connection closed")


async def tap_proxy(target: Tapped, share: int, request: Callable[[int], bytes],
                    on_event: Callable[[TapEvent], None], timeout: float, tls: ssl.SSLContext | None = None) -> str:
    """Tap one proxy forever, ``share`` requests per second at most; returns why it stopped."""
    loop = asyncio.get_running_loop()
    host, port, identity = target
    if tls is not None and identity is None:
        return "its mesh identity is unknown (name it: --tap HOST:PORT=IDENTITY)"
    while True:
        started = time.monotonic()
        try:
            transport, call = await asyncio.wait_for(
                loop.create_connection(lambda: ObserveCall(request(share), on_event), host, port, ssl=tls,
                                       server_hostname=identity if tls is not None else None), timeout)
        except (OSError, TimeoutError) as err:
            return f"cannot connect: {err or type(err).__name__}"
        code, message = await call.done
        transport.close()
        if code != 0:
            return f"tap ended: {message or 'status ' + str(code)} (grpc-status {code})"
        left = 1.0 - (time.monotonic() - started)
        if left > 0:
            await asyncio.sleep(left)  # this second's share is spent


class Taps:
    """One tap stream per proxy found, all open at once, every event to ``on_event``; ``--max-rps`` shared out
    among them. What tap, top and profile do alike: wait, stop, and say why a stream ended on its own."""

    def __init__(self, found: list[Tapped], max_rps: int, request: Callable[[int], bytes],
                 on_event: Callable[[TapEvent], Any], timeout: float, tls: ssl.SSLContext | None) -> None:
        share = max(1, math.ceil(max_rps / len(found)))
        self.found = found
        self.streams = asyncio.gather(*(tap_proxy(target, share, request, on_event, timeout, tls)
                                        for target in found))

    async def until(self, other: asyncio.Future[Any] | None = None, timeout: float | None = None) -> bool:
        """Wait until every stream ended (True: none could be tapped any longer), ``other`` is done or
        ``timeout`` seconds passed (False)."""
        waiting: list[asyncio.Future[Any]] = [self.streams] if other is None else [self.streams, other]
        try:
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # Ctrl-C: the streams end with the command, their outcome taken
            await self.stop()
            raise
        return self.streams.done()

    async def stop(self) -> None:
        if not self.streams.done():
            self.streams.cancel()
            try:
                await self.streams
            except asyncio.CancelledError:
                pass

    def report(self) -> int:
        """Why each stream ended, on stderr; the exit status when they all did."""
        for (host, port, _), why in zip(self.found, self.streams.result(), strict=True):
            print(f"tap {host}:{port}: {why}", file=sys.stderr)
        return EX_UNAVAILABLE


async def run(args: argparse.Namespace, out=sys.stdout) -> int:
    found = targets(args)
    labels = to_labels(args.to)

    def request(limit: int) -> bytes:
        return observe_request(limit, args.method, args.path, args.authority, labels)

    def show(event: TapEvent) -> None:
        text = event.json() if args.output == "json" else event.line(args.output == "wide")
        print(text, file=out, flush=True)

    taps = Taps(found, args.max_rps, request, show, args.timeout, tls_context(args.identity_dir))
    await taps.until()
    return taps.report()


def run_command(name: str, run_: Callable[[argparse.Namespace], Any], args: argparse.Namespace,
                interrupted: int = EX_OK) -> int:
    """A tap-based command (tap, top, profile) to its end: its errors printed under its name, Ctrl-C ``interrupted``."""
    # SIGINT is how these commands end (they run until interrupted): one started by a parent that ignores or
    # blocks it for its children (a script's background job, a test harness) would never stop otherwise.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return asyncio.run(run_(args))
    except TapError as err:
        print(f"meshproxy viz {name}: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        return interrupted


def main(args: argparse.Namespace) -> int:
    return run_command("tap", run, args)

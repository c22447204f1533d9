"""``meshproxy demo``: a small local mesh under steady load, with its golden metrics.

Four pods, each an app beside its own ``meshproxy run``: a load generator
calling web, web calling api, api calling backend. The issuer
(``meshproxy identity serve``) gives every proxy a certificate, so the hops
between proxies are mutual TLS; discovery is an endpoints file the demo
writes. As root on Linux the pods are network namespaces with iptables
interception (``netns``); otherwise they are ports on 127.0.0.1 and apps
address their proxy themselves (``loopback``).

Modules: ``spec`` (the mesh as data), ``http`` and ``apps`` (the sample apps
and the load generator), ``mesh`` (what both modes share), ``loopback`` and
``netns`` (the two modes), ``identity`` (the CA and the issuer),
``processes`` (children), ``metrics`` and ``summary`` (reading /metrics and
printing the table), ``run`` (the demo's life).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.demo.spec import SERVICES, TRUST_DOMAIN, DemoError

if TYPE_CHECKING:
    from proxy.demo.mesh import Mesh

MODES = ("auto", "netns", "loopback")


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not value > 0 or math.isinf(value):
            raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
        return value
    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="meshproxy demo",
        description="Run a small local mesh (load -> web -> api -> backend, each behind its own meshproxy, "
                    "mutual TLS between the proxies) under steady load and print its golden metrics.",
    )
    parser.add_argument("--mode", choices=MODES, default="auto",
                        help="netns: pods are network namespaces with iptables interception (root, Linux); "
                             "loopback: ports on 127.0.0.1; auto (default): netns when possible")
    parser.add_argument("--duration", type=_positive(float), metavar="SECONDS",
                        help="stop after this long (default: run until Ctrl-C)")
    parser.add_argument("--rps", type=_positive(float), default=50.0, help="requests per second into web (default 50)")
    parser.add_argument("--concurrency", type=_positive(int), default=8, help="load generator connections (default 8)")
    parser.add_argument("--interval", type=_positive(float), default=2.0, help="seconds between summaries (default 2)")
    parser.add_argument("--failure-rate", type=float, help="share of backend's answers that are 500 (default 0.01)")
    parser.add_argument("--no-identity", action="store_true",
                        help="run without the issuer: the hops between proxies are plaintext")
    parser.add_argument("--log-dir", type=Path,
                        help="where logs and the demo's files go (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true",
                        help="after --duration, keep the mesh and its load running (until Ctrl-C) to try meshproxy viz")
    parser.add_argument("--ready-timeout", type=_positive(float), default=30.0, help="seconds to wait for the proxies")
    opts = parser.parse_args(argv)
    if opts.rps > 5000:
        parser.error("--rps is at most 5000")
    if opts.failure_rate is not None and not 0.0 <= opts.failure_rate <= 1.0:
        parser.error("--failure-rate must be between 0 and 1")
    return opts


def _choose_mode(requested: str, log_dir: Path) -> str:
    if requested == "loopback":
        return "loopback"
    from proxy.demo import netns

    why = netns.unavailable(log_dir)
    if why is None:
        stale = netns.stale_namespaces()
        if stale:
            print(f"meshproxy demo: namespaces left by a demo that was killed: {', '.join(stale)} "
                  f"(remove with: ip netns del NAME)", file=sys.stderr)
        return "netns"
    if requested == "netns":
        raise DemoError(f"namespace mode is not available: {why}")
    print(f"meshproxy demo: namespace mode not available ({why}); running on loopback", flush=True)
    return "loopback"


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM outside the event loop: unwind through the finally blocks


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    log_dir = opts.log_dir
    if log_dir is None:
        log_dir = Path(tempfile.mkdtemp(prefix="meshproxy-demo-"))
        # In namespace mode the proxies (uid 2102) read their settings, the
        # endpoints file and their tokens here; the CA keys stay in a 0700 subdirectory.
        log_dir.chmod(0o755)
    log_dir.mkdir(parents=True, exist_ok=True)
    services = SERVICES
    if opts.failure_rate is not None:
        services = tuple(s if s.calls or not s.serves else dataclasses.replace(s, failure_rate=opts.failure_rate)
                         for s in services)
    previous = signal.signal(signal.SIGTERM, _terminate)
    mesh: Mesh | None = None
    try:
        try:
            mode = _choose_mode(opts.mode, log_dir)
        except DemoError as err:
            print(f"meshproxy demo: {err}", file=sys.stderr)
            return 1
        if mode == "netns":
            from proxy.demo.netns import NetnsMesh

            mesh = NetnsMesh(services, log_dir, not opts.no_identity, TRUST_DOMAIN)
        else:
            from proxy.demo.loopback import LoopbackMesh

            mesh = LoopbackMesh(services, log_dir, not opts.no_identity, TRUST_DOMAIN)
        from proxy.demo.run import run

        return asyncio.run(run(mesh, opts))
    except DemoError as err:
        print(f"meshproxy demo: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if mesh is not None:
            close_shielded(mesh)
            print(f"meshproxy demo: stopped; everything it started is gone; logs in {log_dir}", flush=True)
        signal.signal(signal.SIGTERM, previous)


def close_shielded(mesh: Mesh) -> None:
    """Stop everything ``mesh`` started with SIGINT and SIGTERM ignored (a second Ctrl-C must not cut the
    cleanup short), then give both their handlers back: whatever this process starts later (main() called
    in-process, by a test) would otherwise inherit SIGINT ignored and outlive its Ctrl-C."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        mesh.close()
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])

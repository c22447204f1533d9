"""The demo's life: start the mesh, put load on it, print the golden metrics
every few seconds and at the end, and take everything down again however it
ends (duration, Ctrl-C, SIGTERM, a failing proxy)."""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys

from proxy.demo.apps import LoadGenerator
from proxy.demo.mesh import Mesh
from proxy.demo.processes import command_name
from proxy.demo.spec import ENTRY, NAMESPACE, Interrupted
from proxy.demo.summary import format_edges, format_table


def viz_commands(mesh: Mesh) -> str:
    """What to try against the running mesh, from another terminal."""
    files = f"--endpoints {mesh.endpoints_path}"
    # Off loopback, a proxy's tap admits only the tap identity over mutual TLS.
    tls = f" --identity-dir {mesh.viz_dir}" if mesh.viz_dir is not None and mesh.mode != "loopback" else ""
    viz = f"{mesh.viz_prefix()}{command_name()} viz"
    return ("see the mesh from another terminal:\n"
            f"  {viz} stat deploy -n {NAMESPACE} {files}\n"
            f"  {viz} edges deploy -n {NAMESPACE} {files} -o wide\n"
            f"  {viz} top {files}{tls}\n"
            f"  {viz} tap --to deploy/{ENTRY} {files}{tls}")


async def run(mesh: Mesh, opts: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    load: LoadGenerator | None = None
    try:
        print(f"meshproxy demo: starting {', '.join(s.name for s in mesh.services)}; logs in {mesh.log_dir}",
              flush=True)
        await mesh.start(stop)
        print(mesh.banner(), flush=True)
        if mesh.issuer is not None and mesh.identity is not None:
            (host, port), _, _, _ = mesh.issuer_place()
            print(f"  issuer   https://{host}:{port}  pid {mesh.issuer.pid}  trust domain "
                  f"{mesh.identity.trust_domain}; each proxy requests its certificate with its pod's token", flush=True)
        else:
            print("  identity off (--no-identity): the hops between proxies are plaintext", flush=True)
        print("\n".join(mesh.describe_pod(pod) for pod in mesh.pods.values()), flush=True)
        await mesh.wait_ready(opts.ready_timeout, stop)
        print(f"check a proxy: {mesh.check_command(mesh.pods[ENTRY])}", flush=True)
        print(viz_commands(mesh), flush=True)
        source = next(pod for pod in mesh.pods.values() if not pod.spec.serves)
        until = f"for {opts.duration:g}s" if opts.duration else "Ctrl-C to stop"
        callee = mesh.callee(source, ENTRY)
        print(f"load: {opts.rps:g} rps from {source.name} to {ENTRY} ({callee.authority}); {until}", flush=True)
        earlier = await mesh.scrape()
        load = LoadGenerator(callee, opts.rps, opts.concurrency)
        started = last = loop.time()
        load.start()
        end = started + opts.duration if opts.duration else math.inf
        while not stop.is_set():
            tick = min(last + opts.interval, end)
            try:
                async with asyncio.timeout(max(0.0, tick - loop.time())):
                    await stop.wait()
            except TimeoutError:
                pass
            mesh.check_alive()
            now = loop.time()
            if stop.is_set() or now >= end:
                break
            snapshot = await mesh.scrape()
            print(f"\n[{now - started:6.1f}s] last {now - last:.1f}s\n{format_table(snapshot, earlier, now - last)}",
                  flush=True)
            earlier, last = snapshot, now
        elapsed = loop.time() - started
        keep = opts.keep and not stop.is_set()
        if not keep:
            await load.stop()
        mesh.check_alive()
        final = await mesh.scrape()
        print(f"\nsummary: {elapsed:.1f}s of load, totals per service\n{format_table(final, None, elapsed)}\n"
              f"\nedges: who called each service (inbound requests by the caller's identity)\n"
              f"{format_edges(final)}\n\nload generator: {load.counts.describe()}", flush=True)
        if keep:
            # --keep: the mesh (and its load) stays for the user to look at with meshproxy viz.
            print(f"\nthe mesh keeps running (--keep) under load; Ctrl-C to stop it.\n{viz_commands(mesh)}",
                  flush=True)
            while not stop.is_set():
                try:
                    async with asyncio.timeout(1.0):
                        await stop.wait()
                except TimeoutError:
                    mesh.check_alive()
            await load.stop()
        return 0
    except Interrupted:
        print("meshproxy demo: interrupted while starting", file=sys.stderr)
        return 130
    finally:
        if load is not None:
            load.cancel()
        await mesh.stop_apps()

"""Scenario ``tcp``: opaque TCP bulk throughput through each relay.

One sender writes 1 MiB chunks for a fixed time over one connection to a
receiver that discards them (``lib/tcpbulk.py``; both on the load CPUs).
Variants, alternating: direct; HAProxy ``mode tcp``; nginx ``stream`` when
Debian's dynamic stream module is installed (libnginx-mod-stream), otherwise
skipped with a note; meshproxy's inbound listener with the receiver as the
default target and its port in MESHPROXY_OPAQUE_PORTS, so the bytes are
relayed without protocol detection.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.lib import compare
from benchmarks.lib.compare import Contender, Sample
from benchmarks.lib.context import Context
from benchmarks.lib.procs import NotReady, free_ports, run_bounded, wait_tcp
from benchmarks.lib.report import ScenarioResult
from benchmarks.lib.servers import ENV, LOOPBACK, Server, start_meshproxy, start_templated
from benchmarks.lib.tcpbulk import MARKER

NAME = "tcp"
DESCRIPTION = "opaque TCP bulk transfer, 1 connection, 1 MiB writes: sender -> [relay] -> receiver"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def _params(ctx: Context) -> tuple[float, int]:
    duration = ctx.run_seconds(2.0)
    rounds = ctx.round_count()
    return duration, rounds


def run(ctx: Context) -> ScenarioResult:
    duration, rounds = _params(ctx)
    ctx.progress(f"[{NAME}] starting servers ({ctx.placement.describe()})")
    (port,) = free_ports(1)
    proc = ctx.group.start("tcp-receiver", ctx.placement.pin_load()
                           + [sys.executable, "-m", "benchmarks.lib.tcpbulk", "serve", str(port)], cwd=ctx.repo)
    try:
        wait_tcp(proc, LOOPBACK, port, timeout=15)
    except NotReady as err:
        raise NotReady(f"{err}; log: {proc.log_tail(3)}") from None
    receiver = Server("tcp-receiver", proc, port)
    log_level = getattr(ctx.options, "meshproxy_log_level", None) or "warning"

    def direct() -> Contender:
        return Contender("direct", target=receiver.address)

    def haproxy() -> Contender:
        s = start_templated(ctx.group, ctx.placement, ctx.run_dir, "haproxy", "haproxy-tcp.cfg.tmpl",
                            "tcp-haproxy", upstream_port=receiver.port)
        return Contender("haproxy", servers=[s], target=s.address)

    def nginx() -> Contender:
        s = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-stream.conf.tmpl",
                            "tcp-nginx", upstream_port=receiver.port, module=STREAM_MODULE)
        return Contender("nginx", servers=[s], target=s.address)

    def meshproxy(repo: Path | None = None, name: str = "tcp-meshproxy") -> Contender:
        s = start_meshproxy(ctx.group, ctx.placement, repo or ctx.repo, receiver, pure=False, name=name,
                            log_level=log_level,
                            extra_env={ENV["opaque_ports"]: str(receiver.port)})
        return Contender("meshproxy", servers=[s], target=f"{LOOPBACK}:{s.info['ports']['inbound']}")

    contenders = [
        compare.start(ctx, NAME, "direct", "sender -> receiver", direct),
        compare.start(ctx, NAME, "haproxy", "HAProxy mode tcp", haproxy),
    ]
    notes = []
    if STREAM_MODULE.exists():
        contenders.append(compare.start(ctx, NAME, "nginx", "nginx stream proxy_pass", nginx))
    else:
        notes.append(f"nginx skipped: Debian's nginx builds the stream module as a dynamic module"
                     f" ({STREAM_MODULE} from the libnginx-mod-stream package), which is not installed here.")
    contenders.append(compare.start(ctx, NAME, "meshproxy", "inbound, opaque port -> receiver", meshproxy))
    contenders += compare.with_baseline(ctx, NAME, "inbound, opaque port -> receiver",
                                        lambda where: meshproxy(where, f"tcp-{compare.BASELINE}"))

    def measure(c: Contender, index: int) -> Sample:
        argv = ctx.placement.pin_load() + [sys.executable, "-m", "benchmarks.lib.tcpbulk", "send", c.target,
                                           f"--duration={duration:g}"]
        try:
            done = run_bounded(argv, timeout=duration + 30, cwd=ctx.repo)
        except TimeoutError as err:
            return Sample(index, False, str(err))
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
        if line is None:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return Sample(index, False, f"sender status {done.returncode}: {tail[0]}")
        raw = json.loads(line[len(MARKER):])
        metrics = {"gbps": raw["gbit_per_s"], "gib": raw["received"] / 2**30} if raw.get("ok") else {}
        return Sample(index, bool(raw.get("ok")), raw.get("failure", ""), metrics=metrics, raw={"sender": raw})

    compare.alternate(ctx, NAME, contenders, rounds, measure, [receiver],
                      unit=lambda s: f"{s.metrics['gbps']:.2f} Gbit/s")
    table, data = compare.table(
        f"Opaque TCP throughput (median of {rounds} round{'s' if rounds != 1 else ''})",
        contenders,
        ("Gbit/s", "gbps", ".2f"),
        [("GiB moved", "gib", ".1f")],
        [
            "Gbit/s: bytes the receiver counted / time from the first write to the receiver's count"
            " (after the sender's half-close), so nothing still buffered is counted.",
            "The sender and receiver are Python (large writes and recv_into, a few syscalls per MiB) and share"
            " the load CPU: direct is their own ceiling, not loopback's.",
            "FAILED: a byte count different from what was sent, no count after the half-close, a socket error,"
            " or a process that died.",
            *notes,
        ],
    )
    base = compare.baseline_note(contenders, "gbps", label="Gbit/s")
    return ScenarioResult(
        name=NAME,
        description=DESCRIPTION,
        notes=[base] if base else [],
        params={
            "transfer": f"1 connection, 1 MiB writes for {duration:g} s, then half-close",
            "rounds": rounds, "order": "rotated each round",
            "cpu_placement": ctx.placement.describe() + " (sender and receiver on the load CPUs)",
            "haproxy": "nbthread 1, mode tcp",
            "nginx": "1 worker, stream { proxy_pass }" if STREAM_MODULE.exists() else "skipped (no stream module)",
            "meshproxy": "inbound listener, MESHPROXY_OPAQUE_PORTS = receiver port, default target = receiver",
        },
        tables=[table],
        data={"variants": {c.name: c.to_json() for c in contenders}, "summary": data},
    )

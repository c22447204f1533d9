"""Scenario ``handshake``: full TLS handshakes per second on a proxy's inbound side.

The C tool ``tlsload/handshake.c`` (``lib/tlsload.py``) keeps 20 connections
busy, each a full TLS 1.3 handshake (no resumption on either side), one
``GET /`` with ``Connection: close`` forwarded to nginx, and the close.
HAProxy and nginx terminate TLS with the same kind of certificate as
meshproxy's inbound listener (ECDSA P-256 leaf + issuer from one run CA), no
session cache, no tickets, a client certificate asked for but optional. The
tool sends B's identity as SNI (meshproxy would otherwise take the TLS for the
app's own and pass it through) and no client certificate.

Two more meshproxy rows price session resumption (proxy/transport/sessions.py):
``meshproxy-no-tickets`` with resumption off (the issued ticket's cost is the
difference to ``meshproxy``), and ``meshproxy-resumed``, where the tool offers
the first connection's ticket on every connection, as a peer proxy does.
"""

from __future__ import annotations

import dataclasses
import urllib.request

from benchmarks.lib import bound, compare, meshtls, tlsload
from benchmarks.lib.compare import Contender, Sample
from benchmarks.lib.context import Context
from benchmarks.lib.report import ScenarioResult, Table
from benchmarks.lib.servers import LOOPBACK, start_meshproxy, start_templated
from benchmarks.scenarios.http1 import BODY

NAME = "handshake"
DESCRIPTION = "full TLS 1.3 handshakes per second (ECDSA P-256, no resumption), one request per connection"
CONNECTIONS = 20
# The bar for meshproxy / HAProxy handshakes per second.
RATIO_DONE = 0.7


def _params(ctx: Context) -> tuple[tlsload.HandshakeParams, float, int]:
    duration = ctx.run_seconds(1.0)
    rounds = ctx.round_count()
    warmup = 0.3 if ctx.quick else 2.0
    return tlsload.HandshakeParams(CONNECTIONS, duration, sni=meshtls.SERVER_ID), warmup, rounds


def run(ctx: Context) -> ScenarioResult:
    params, warmup, rounds = _params(ctx)
    ctx.progress(f"[{NAME}] building the handshake tool and starting servers ({ctx.placement.describe()})")
    tlsload.build()  # a missing compiler or libssl-dev is the scenario's error, not each variant's
    certs = meshtls.make(ctx.run_dir / "handshake-certs", names=(meshtls.SERVER_ID,))
    leaf = certs[meshtls.SERVER_ID]
    backend = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-http1.conf.tmpl",
                              "handshake-backend", under_test=False, body=BODY)
    log_level = getattr(ctx.options, "meshproxy_log_level", None) or "warning"

    def haproxy() -> Contender:
        s = start_templated(ctx.group, ctx.placement, ctx.run_dir, "haproxy", "haproxy-handshake.cfg.tmpl",
                            "handshake-haproxy", upstream_port=backend.port, server_pem=leaf.pem,
                            ca_file=certs.ca)
        return Contender("haproxy", servers=[s], target=s.address)

    def nginx() -> Contender:
        s = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-handshake.conf.tmpl",
                            "handshake-nginx", upstream_port=backend.port, server_chain=leaf.chain,
                            server_key=leaf.key, ca_file=certs.ca)
        return Contender("nginx", servers=[s], target=s.address)

    def meshproxy(name: str = "meshproxy", env: dict | None = None, resume: bool = False):
        def start() -> Contender:
            # start_meshproxy makes the backend the inbound default target.
            s = start_meshproxy(ctx.group, ctx.placement, ctx.repo, backend, pure=False, name=f"handshake-{name}",
                                log_level=log_level,
                                extra_env={**meshtls.identity_env(certs, meshtls.SERVER_ID), **(env or {})})
            return Contender(name, servers=[s], target=f"{LOOPBACK}:{s.info['ports']['inbound']}",
                             extra={"metrics": f"http://{LOOPBACK}:{s.admin_port}/metrics",
                                    "fastpath": s.info.get("fastpath", {}), "resume": resume})
        return start

    contenders = [
        compare.start(ctx, NAME, "haproxy", "HAProxy bind ssl -> nginx", haproxy),
        compare.start(ctx, NAME, "nginx", "nginx listen ssl -> nginx", nginx),
        compare.start(ctx, NAME, "meshproxy", "inbound, mesh TLS -> nginx (issues a ticket)", meshproxy()),
        compare.start(ctx, NAME, "meshproxy-no-tickets", "the same, MESHPROXY_TLS_SESSION_CACHE=0",
                      meshproxy("meshproxy-no-tickets", {"MESHPROXY_TLS_SESSION_CACHE": "0"})),
        compare.start(ctx, NAME, "meshproxy-resumed", "the same, every connection resumes a ticket",
                      meshproxy("meshproxy-resumed", resume=True)),
    ]
    pin = ctx.placement.pin_load()

    def measure(c: Contender, index: int) -> Sample:
        port = int(c.target.rpartition(":")[2])
        problem = meshtls.tls_probe(port, certs.ca, meshtls.SERVER_ID, BODY.encode())
        if not problem and "metrics" in c.extra:
            problem = _check_terminated(c.extra["metrics"])
        if problem:
            return Sample(index, False, problem)
        run_params = dataclasses.replace(params, resume=bool(c.extra.get("resume")))
        if warmup:
            tlsload.run(LOOPBACK, port, dataclasses.replace(run_params, duration_s=warmup), pin)
        with bound.Window([s.proc.pid for s in c.servers], ctx.placement) as window:
            res = tlsload.run(LOOPBACK, port, run_params, pin)
        if res.ok and run_params.resume and res.resumed < 0.9 * res.handshakes:
            res.ok, res.failure = False, f"only {res.resumed} of {res.handshakes} handshakes resumed"
        metrics = {"hps": res.per_second, "handshakes": float(res.handshakes), "resumed": float(res.resumed),
                   **window.metrics,
                   **bound.cost(window.metrics, res.per_second)}
        return Sample(index, res.ok, res.failure, metrics=metrics, raw={"tool": res.to_json()})

    compare.alternate(ctx, NAME, contenders, rounds, measure, [backend],
                      unit=lambda s: f"{s.metrics['hps']:,.0f} handshakes/s")
    table, summary = compare.table(
        f"Full TLS handshakes per second (median of {rounds} round{'s' if rounds != 1 else ''})",
        contenders,
        ("handshakes/s", "hps", ",.0f"),
        [("in run", "handshakes", ",.0f"), ("proxy us/hs", bound.COST_KEY, ".0f"), bound.PROXY_COLUMN,
         bound.LOAD_COLUMN],
        [
            f"Target: meshproxy / haproxy >= {RATIO_DONE:.1f}x.",
            "proxy us/hs: the proxy's own CPU time per handshake (with its request) in the measured run. When the"
            " rows are load-bound, the handshakes/s cannot separate the proxies; the per-CPU ratio"
            " (HAProxy's us/hs / meshproxy's, in the scenario notes) says how they would compare on a full core.",
            "handshakes/s: connections that completed a full TLS 1.3 handshake, the request and a 2xx answer,"
            " per second; in run: their count in the measured run.",
            "Each server: ECDSA P-256 leaf + issuer chain from the run's CA, no session cache, no tickets, client"
            " certificate requested but optional (the tool sends none); X25519 key exchange (OpenSSL's default).",
            "FAILED: any connect, TLS, I/O or status error in the tool's counts, a failed probe (which verifies"
            " the server's chain for B's identity), meshproxy not terminating the TLS itself, or a process that"
            " died.",
        ],
    )
    _drop_column(table, "/ direct")  # there is no direct variant: TLS ends at the proxy
    bound.mark(table, contenders, summary)
    by_name = {c.name: c for c in contenders}
    per_cpu = bound.cost_ratio(by_name.get("meshproxy"), by_name.get("haproxy"))
    ratios = {"meshproxy / haproxy": summary.get("meshproxy", {}).get("ratios", {}).get("vs_haproxy"),
              "meshproxy / haproxy per CPU": None if per_cpu is None else round(per_cpu, 3)}
    notes = []
    value = ratios["meshproxy / haproxy"]
    if value and value.endswith("x"):
        met = float(value[:-1]) >= RATIO_DONE
        notes.append(f"meshproxy / haproxy = {value} (handshakes/s): target >= {RATIO_DONE:.1f}x"
                     f" {'met' if met else 'NOT met'}")
    if per_cpu is not None:
        met = per_cpu >= RATIO_DONE
        bound_rows = [c.name for c in contenders if c.name in ("meshproxy", "haproxy") and bound.load_bound(c)]
        notes.append(f"meshproxy / haproxy per CPU = {per_cpu:.2f}x (HAProxy's CPU per handshake / meshproxy's):"
                     f" target >= {RATIO_DONE:.1f}x {'met' if met else 'NOT met'}"
                     + (f"; read this one: {' and '.join(bound_rows)} load-bound" if bound_rows else ""))
    mesh_fastpath = next((c.extra.get("fastpath") for c in contenders if c.name == "meshproxy"), None) or {}
    if mesh_fastpath.get("all") is False:
        notes.append(f"WARNING: meshproxy ran WITHOUT the full compiled fast path: {mesh_fastpath.get('compiled')}")
    return ScenarioResult(
        name=NAME,
        description=DESCRIPTION,
        params={
            **params.describe(), "warmup_s": warmup, "rounds": rounds, "order": "rotated each round",
            "tool": "benchmarks/tlsload/handshake.c (OpenSSL, epoll), pinned to the load CPUs",
            "request": "GET / HTTP/1.1, Connection: close, 64-byte answer from nginx",
            "cpu_placement": ctx.placement.describe(),
            "certificate": "ECDSA P-256 leaf + issuer (proxy.identity.ca), DNS SAN = " + meshtls.SERVER_ID,
            "haproxy": "nbthread 1, tune.ssl.cachesize 0, bind ssl ... verify optional no-tls-tickets"
                       " ssl-min-ver TLSv1.3, http-reuse always",
            "nginx": "1 worker, ssl_protocols TLSv1.3, ssl_session_cache off, ssl_session_tickets off,"
                     " ssl_verify_client optional, upstream keepalive",
            "meshproxy": "inbound listener, identity from cert files, default target nginx",
        },
        tables=[table],
        data={"variants": {c.name: c.to_json() for c in contenders}, "summary": summary, "ratios": ratios},
        notes=notes,
    )


def _check_terminated(metrics_url: str) -> str:
    """'' when meshproxy counted an inbound mesh TLS connection without a client certificate (the probe's)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as resp:
            text = resp.read().decode("utf-8", "replace")
    except OSError as err:
        return f"cannot read meshproxy's metrics: {err}"
    if meshtls.inbound_tls_connections(text, "") <= 0:
        return "meshproxy did not terminate the TLS (no inbound mesh TLS connection counted)"
    return ""


def _drop_column(table: Table, header: str) -> None:
    if header not in table.headers:
        return
    i = table.headers.index(header)
    del table.headers[i]
    for row in table.rows:
        del row[i]
    table.numeric.discard(header)
    table.notes[0] = "/ haproxy: median handshakes/s divided by HAProxy's; n/a when either FAILED."

"""Scenario ``meshhop``: the meshed hop, two proxies with mutual TLS between them.

wrk -> proxy A (plain HTTP in) -> mutual TLS 1.3 -> proxy B -> nginx, for
meshproxy (A's outbound listener, which finds B through file discovery, ->
B's inbound listener), HAProxy and nginx, each pair with ECDSA P-256
certificates from one CA made for the run (``lib/meshtls.py``), both sides
presenting and verifying a certificate, SNI = B's identity. A plaintext
meshproxy pair shows what TLS costs, direct (wrk -> nginx) the ceiling.
Both proxies of a pair run on the proxy CPU; the variants alternate.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.lib import bound, compare, meshtls, wrk
from benchmarks.lib.compare import Contender, Sample
from benchmarks.lib.context import Context
from benchmarks.lib.report import ScenarioResult, Table
from benchmarks.lib.servers import LOOPBACK, render, start_meshproxy, start_templated
from benchmarks.scenarios.http1 import BODY, probe

try:
    from proxy.config import CLUSTER_NETWORKS as CLUSTER_NETWORKS_ENV
except Exception:  # the proxy is being rebuilt; the documented name
    CLUSTER_NETWORKS_ENV = "MESHPROXY_CLUSTER_NETWORKS"

NAME = "meshhop"
DESCRIPTION = "the meshed hop: wrk -> proxy A -> mutual TLS 1.3 -> proxy B -> nginx, 64-byte responses"
SERVICE = "api.mesh:80"        # what wrk asks A for (Host); A's discovery names B as its endpoint's proxy
CONNECTIONS = 50
# The bar for meshproxy (mTLS pair) / HAProxy (mTLS pair), median req/s.
RATIO_DONE, RATIO_NOT_DONE = 1.0, 0.5
DISCOVERY_PATIENCE_S = 5.0


def _params(ctx: Context) -> tuple[wrk.WrkParams, float, int]:
    duration = ctx.run_seconds(1.0)
    rounds = ctx.round_count()
    # wrk takes whole seconds only; --quick skips the warm-up (the probe opens the hop's connections).
    warmup = 0.0 if ctx.quick else 2.0
    return wrk.WrkParams(threads=1, connections=CONNECTIONS, duration_s=duration), warmup, rounds


def endpoints_values(app_port: int, peer_port: int, tls: bool) -> dict[str, Any]:
    """The placeholders of ``endpoints-meshhop.yaml.tmpl``; no identity line means a plaintext hop."""
    identity = f"        identity: {meshtls.SERVER_ID}" if tls else ""
    return {"service": SERVICE, "app_port": app_port, "peer_port": peer_port, "identity_line": identity}


def run(ctx: Context) -> ScenarioResult:
    params, warmup, rounds = _params(ctx)
    ctx.progress(f"[{NAME}] starting servers ({ctx.placement.describe()})")
    certs = meshtls.make(ctx.run_dir / "meshhop-certs")
    client, server = certs[meshtls.CLIENT_ID], certs[meshtls.SERVER_ID]
    backend = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-http1.conf.tmpl",
                              "meshhop-backend", under_test=False, body=BODY)
    log_level = getattr(ctx.options, "meshproxy_log_level", None) or "warning"

    def direct() -> Contender:
        return Contender("direct", target=backend.address)

    def haproxy() -> Contender:
        b = start_templated(ctx.group, ctx.placement, ctx.run_dir, "haproxy", "haproxy-meshhop-server.cfg.tmpl",
                            "meshhop-haproxy-b", upstream_port=backend.port, server_pem=server.pem,
                            ca_file=certs.ca)
        a = start_templated(ctx.group, ctx.placement, ctx.run_dir, "haproxy", "haproxy-meshhop-client.cfg.tmpl",
                            "meshhop-haproxy-a", peer_port=b.port, client_pem=client.pem, ca_file=certs.ca,
                            server_id=meshtls.SERVER_ID)
        return Contender("haproxy", servers=[a, b], target=a.address)

    def nginx() -> Contender:
        b = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-meshhop-server.conf.tmpl",
                            "meshhop-nginx-b", upstream_port=backend.port, server_chain=server.chain,
                            server_key=server.key, ca_file=certs.ca)
        a = start_templated(ctx.group, ctx.placement, ctx.run_dir, "nginx", "nginx-meshhop-client.conf.tmpl",
                            "meshhop-nginx-a", peer_port=b.port, client_chain=client.chain,
                            client_key=client.key, ca_file=certs.ca, server_id=meshtls.SERVER_ID)
        return Contender("nginx", servers=[a, b], target=a.address)

    def mesh(tls: bool, repo: Path | None = None) -> Contender:
        tag = ("meshproxy" if tls else "meshproxy-plain") if repo is None else compare.BASELINE
        repo = repo or ctx.repo
        # Plaintext: B has no identity, so it obeys A's transport header only from
        # MESHPROXY_CLUSTER_NETWORKS, and A is on loopback here.
        env_b = meshtls.identity_env(certs, meshtls.SERVER_ID) if tls else {CLUSTER_NETWORKS_ENV: "127.0.0.0/8"}
        b = start_meshproxy(ctx.group, ctx.placement, repo, backend, pure=False, name=f"meshhop-{tag}-b",
                            log_level=log_level, extra_env=env_b)
        endpoints = render("endpoints-meshhop.yaml.tmpl", ctx.run_dir / f"endpoints-meshhop-{tag}.yaml",
                           **endpoints_values(backend.port, b.info["ports"]["inbound"], tls))
        env_a = {meshtls.DESTINATION_ENV: f"file://{endpoints}"}
        if tls:
            env_a.update(meshtls.identity_env(certs, meshtls.CLIENT_ID))
        a = start_meshproxy(ctx.group, ctx.placement, repo, backend, pure=False, name=f"meshhop-{tag}-a",
                            log_level=log_level, extra_env=env_a)
        return Contender(tag, servers=[a, b], target=a.address,
                         extra={"tls": tls, "b_metrics": f"http://{LOOPBACK}:{b.admin_port}/metrics",
                                "fastpath": a.info.get("fastpath", {})})

    contenders = [
        compare.start(ctx, NAME, "direct", "wrk -> nginx", direct),
        compare.start(ctx, NAME, "haproxy", "HAProxy A -> mTLS -> HAProxy B", haproxy),
        compare.start(ctx, NAME, "nginx", "nginx A -> mTLS -> nginx B", nginx),
        compare.start(ctx, NAME, "meshproxy", "A outbound -> mTLS -> B inbound", lambda: mesh(True)),
        compare.start(ctx, NAME, "meshproxy-plain", "A outbound -> plaintext -> B inbound", lambda: mesh(False)),
        *compare.with_baseline(ctx, NAME, "A outbound -> mTLS -> B inbound", lambda where: mesh(True, where)),
    ]
    headers = {"Host": SERVICE}
    pin = ctx.placement.pin_load()

    def measure(c: Contender, index: int) -> Sample:
        port = int(c.target.rpartition(":")[2])
        # meshproxy A may learn its endpoint a moment after /ready: the first probe waits for it.
        problem = _probe(port, patience=DISCOVERY_PATIENCE_S if index == 1 else 0.0)
        if not problem and "b_metrics" in c.extra:
            problem = _check_hop(c.extra["b_metrics"], c.extra["tls"])
        if problem:
            return Sample(index, False, problem)
        url = f"http://{c.target}/"
        if warmup:
            wrk.run(url, wrk.WrkParams(params.threads, params.connections, warmup), headers=headers, pin=pin)
        with bound.Window([s.proc.pid for s in c.servers], ctx.placement) as window:
            res = wrk.run(url, params, headers=headers, pin=pin)
        metrics = {"rps": res.rps, "p50_ms": res.latency_ms.get("p50", 0.0), "p99_ms": res.latency_ms.get("p99", 0.0),
                   **window.metrics, **bound.cost(window.metrics, res.rps)}
        return Sample(index, res.ok, res.failure, metrics=metrics, raw={"wrk": res.to_json()})

    compare.alternate(ctx, NAME, contenders, rounds, measure, [backend],
                      unit=lambda s: f"{s.metrics['rps']:,.0f} req/s")
    table, summary = compare.table(
        f"Meshed hop throughput (median of {rounds} round{'s' if rounds != 1 else ''})",
        contenders,
        ("req/s", "rps", ",.0f"),
        [("p50 ms", "p50_ms", ".3f"), ("p99 ms", "p99_ms", ".3f"), ("pair us/req", bound.COST_KEY, ".1f"),
         bound.PROXY_COLUMN, bound.LOAD_COLUMN],
        [
            f"Target: meshproxy (mTLS pair) / haproxy (mTLS pair) >= {RATIO_DONE:.1f}x;"
            f" below {RATIO_NOT_DONE:.1f}x it is not done.",
            "Every pair runs both proxies on the proxy CPU: 'proxy' is the pair's sum. The hop between A and B"
            " is TLS 1.3 with ECDSA P-256 certificates from one CA, a client certificate presented and verified"
            " both ways, SNI = B's identity, kept alive (one handshake per upstream connection).",
            "meshproxy: checked before each run that B counted inbound mutual-TLS connections from A's identity"
            " (tls_connections_total); meshproxy-plain is the same pair without identities (checked: B counts"
            " inbound requests).",
            "pair us/req: the pair's own CPU time per request in the measured run. Unlike req/s it does not"
            " depend on other processes sharing the proxy CPU; the ratio table compares it too (per CPU).",
            "FAILED: socket errors, status >= 400, a failed probe or TLS check, or a process that died.",
        ],
    )
    bound.mark(table, contenders, summary)
    ratios, ratio_table = _ratio_table(contenders)
    notes = []
    mesh_fastpath = next((c.extra.get("fastpath") for c in contenders if c.name == "meshproxy"), None) or {}
    if mesh_fastpath.get("all") is False:
        notes.append(f"WARNING: meshproxy ran WITHOUT the full compiled fast path: {mesh_fastpath.get('compiled')}")
    return ScenarioResult(
        name=NAME,
        description=DESCRIPTION,
        params={
            **params.describe(), "host_header": SERVICE, "warmup_s": warmup, "rounds": rounds,
            "order": "rotated each round", "cpu_placement": ctx.placement.describe() + " (both proxies of a pair)",
            "certificates": "ECDSA P-256 leaves + issuer from one root (proxy.identity.ca), DNS SAN = identity",
            "identities": f"A {meshtls.CLIENT_ID}, B {meshtls.SERVER_ID}",
            "haproxy": "nbthread 1 each, http-reuse always; A: ssl crt, ca-file, verify required, sni, verifyhost,"
                       " ssl-min-ver TLSv1.3; B: bind ssl ... verify required",
            "nginx": "1 worker each, upstream keepalive 1024; A: proxy_ssl_certificate, proxy_ssl_verify on,"
                     " proxy_ssl_name + server_name on, session reuse; B: ssl_verify_client on, TLSv1.3",
            "meshproxy": "A outbound, MESHPROXY_DESTINATION=file://.../endpoints-meshhop-*.yaml (endpoint nginx"
                         " via proxy: B inbound, identity: B); identities from cert files; B inbound default"
                         " target nginx",
        },
        tables=[table, ratio_table],
        data={"variants": {c.name: c.to_json() for c in contenders}, "summary": summary, "ratios": ratios},
        notes=notes,
    )


def _probe(port: int, patience: float) -> str:
    deadline = time.monotonic() + patience
    while True:
        problem = probe(port, SERVICE)
        if not problem or time.monotonic() >= deadline:
            return problem
        time.sleep(0.2)


def _check_hop(metrics_url: str, tls: bool) -> str:
    """'' when B served the probe: over mutual TLS from A's identity, or (plaintext) at all."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as resp:
            text = resp.read().decode("utf-8", "replace")
    except OSError as err:
        return f"cannot read B's metrics: {err}"
    if tls and meshtls.inbound_tls_connections(text, meshtls.CLIENT_ID) <= 0:
        return f"the hop is not mutual TLS: B counts no inbound TLS connection from {meshtls.CLIENT_ID}"
    if not tls and meshtls.inbound_requests(text) <= 0:
        return "the hop bypasses B: B counts no inbound request"
    return ""


def _ratio_table(contenders: list[Contender]) -> tuple[dict[str, float | None], Table]:
    by_name = {c.name: c for c in contenders}
    specs = [
        ("meshproxy / haproxy", "meshproxy", "haproxy", "the issue's bar"),
        ("meshproxy / nginx", "meshproxy", "nginx", "against nginx pairs (one worker each)"),
        ("meshproxy / meshproxy-plain", "meshproxy", "meshproxy-plain", "what mutual TLS costs meshproxy"),
        ("meshproxy / meshproxy-baseline", "meshproxy", compare.BASELINE,
         "against the --baseline checkout's mTLS pair; the issue's bar: >= 0.95 (no more than 5% slower)"),
        ("haproxy / direct", "haproxy", "direct", "reference: HAProxy's pair against nginx alone"),
    ]
    rows, data = [], {}
    if compare.BASELINE not in by_name:
        specs = [spec for spec in specs if spec[2] != compare.BASELINE]
    for label, num, den, meaning in specs:
        value, why = _ratio(by_name.get(num), by_name.get(den))
        data[label] = None if value is None else round(value, 3)
        if label == "meshproxy / haproxy" and value is not None:
            meaning = verdict(value)
        rows.append([label, why or f"{value:.2f}x", meaning])
    per_cpu = bound.cost_ratio(by_name.get("meshproxy"), by_name.get("haproxy"))
    data["meshproxy / haproxy per CPU"] = None if per_cpu is None else round(per_cpu, 3)
    rows.insert(1, ["meshproxy / haproxy per CPU", "n/a" if per_cpu is None else f"{per_cpu:.2f}x",
                    "HAProxy's pair us/req / meshproxy's: the same bar, free of CPU sharing"
                    + ("" if per_cpu is None else f"; {verdict(per_cpu)}")])
    return data, Table("Meshed hop ratios (median req/s)", ["ratio", "value", "meaning"], rows, numeric={"value"})


def verdict(value: float) -> str:
    if value >= RATIO_DONE:
        return f"meets the bar (>= {RATIO_DONE:.1f})"
    if value < RATIO_NOT_DONE:
        return f"below {RATIO_NOT_DONE:.1f}: not done"
    return f"between {RATIO_NOT_DONE:.1f} and {RATIO_DONE:.1f}: progress"


def _ratio(num: Contender | None, den: Contender | None) -> tuple[float | None, str]:
    if num is None or den is None:
        return None, "n/a (not run)"
    for c in (num, den):
        if c.failure():
            return None, f"n/a ({c.name} FAILED)"
    a, b = num.median("rps"), den.median("rps")
    if a is None or not b:
        return None, "n/a"
    return a / b, ""


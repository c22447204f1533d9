"""``meshproxy check``: is this network namespace set up for the mesh, and is
the proxy in it healthy? Each check prints one line, passed or failed (with a
hint), or skipped when it does not apply; any failure makes the exit status 1.
``--pre`` and ``--proxy`` check the cluster instead, through its API
(``cluster``), printed as ``linkerd check`` prints.

The settings are the proxy's own (``MESHPROXY_*`` and ``--config FILE``, read
by ``proxy.config.load``), so the check looks where the proxy listens.
Modules: ``host`` (iptables, listening sockets), ``proxy_state`` (admin,
certificate, inbound TLS), ``remote`` (issuer, discovery), ``results``
(printing), ``kube`` (the API client).
"""

from __future__ import annotations

import argparse
import os

from proxy.check import host, proxy_state, remote
from proxy.check.results import FAIL, Result, fail, render_json, render_text

EX_FAILED = 1
INIT_PREFIX = "MESHPROXY_INIT_"  # iptables-init's own settings, not the proxy's


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meshproxy check",
                                     description="Check the environment and the running proxy; exit 1 on any failure.")
    parser.add_argument("--admin", metavar="ADDR", help="the proxy's admin address (default: MESHPROXY_ADMIN_LISTEN)")
    parser.add_argument("--config", metavar="FILE", help="the YAML settings file the proxy runs with")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    cluster = parser.add_argument_group("cluster checks, through the Kubernetes API")
    cluster.add_argument("--pre", action="store_true", help="can meshproxy install work in this cluster?")
    cluster.add_argument("--proxy", action="store_true",
                         help="are the meshed pods' proxies ready, with certificates valid for a day, and current?")
    cluster.add_argument("--api", metavar="URL",
                         help="the API server (default MESHPROXY_K8S_API, else in-cluster); e.g. kubectl proxy's "
                              "http://127.0.0.1:8001")
    cluster.add_argument("-n", "--namespace", help="--proxy: only this namespace's pods (default: all)")
    parser.add_argument("--no-iptables", action="store_true",
                        help="the proxy runs without interception: skip the iptables checks")
    parser.add_argument("--inbound-chain", default=os.environ.get(INIT_PREFIX + "INBOUND_CHAIN") or "MESHPROXY_INBOUND")
    parser.add_argument("--outbound-chain",
                        default=os.environ.get(INIT_PREFIX + "OUTBOUND_CHAIN") or "MESHPROXY_OUTBOUND")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per network check (default 3)")
    return parser.parse_args(argv)


def run_checks(args: argparse.Namespace) -> tuple[list[Result], str]:
    from proxy import config

    env = {k: v for k, v in os.environ.items() if not k.startswith(INIT_PREFIX)}
    try:
        cfg = config.load(env=env, file_path=args.config)
    except config.ConfigError as err:
        return [fail("settings", "settings", str(err), "fix the setting; the proxy refuses to start with it too")], ""
    try:
        admin = proxy_state.reachable(config.parse_host_port(args.admin) if args.admin else cfg.admin_listen)
    except ValueError as err:
        return [fail("settings", "--admin", f"{args.admin!r}: {err}", "give host:port")], ""
    results: list[Result] = []
    if not args.no_iptables:
        results.append(host.iptables_present())
        results.append(host.iptables_rules(cfg, args.inbound_chain, args.outbound_chain))
    sockets = host.listening()
    results += [
        host.port_bound("outbound", cfg.outbound_listen, sockets),
        host.port_bound("inbound", cfg.inbound_listen, sockets),
        host.port_bound("admin", admin, sockets),
        proxy_state.admin_ready(admin, args.timeout),
        proxy_state.certificate(cfg, admin, args.timeout),
        proxy_state.inbound_tls(cfg, args.timeout),
        remote.token_file(cfg),
        remote.issuer(cfg, args.timeout),
        remote.discovery(cfg, args.timeout),
    ]
    return results, f"meshproxy check: admin {admin}, inbound {cfg.inbound_listen}, outbound {cfg.outbound_listen}"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.pre or args.proxy:
        from proxy.check import cluster
        from proxy.check.results import render_sections_json, render_sections_text, sections_ok

        sections = cluster.run(args)
        (render_sections_json if args.output == "json" else render_sections_text)(sections)
        return 0 if sections_ok(sections) else EX_FAILED
    results, heading = run_checks(args)
    if args.output == "json":
        render_json(results)
    else:
        render_text(results, heading or "meshproxy check")
    return EX_FAILED if any(r.status == FAIL for r in results) else 0

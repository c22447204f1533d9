"""``meshproxy viz stat|routes|edges|tap|top``: the arguments, the source of numbers, the output.

Where numbers come from: ``--prometheus URL`` asks that server (Linkerd viz's
queries over the ``-t`` window); otherwise the proxies are scraped directly
(``--proxy`` admin addresses, every meshed pod of a cluster with ``--kubernetes``, or every meshed
endpoint of ``--endpoints`` / ``MESHPROXY_DESTINATION=file://...``, or the local proxy at 127.0.0.1:4191).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from proxy.viz import dashboard, edges, profile, resources, routes, stat, tap, top
from proxy.viz.embedded import Embedded
from proxy.viz.prometheus import Prometheus, PrometheusError
from proxy.viz.resources import duration
from proxy.viz.source import Source
from proxy.viz.targets import (
    Target,
    TargetError,
    add_kube_arguments,
    from_endpoints_file,
    from_kubernetes,
    kube_wanted,
    parse_proxy,
)

EX_OK = 0
EX_USAGE = 64  # sysexits.h: bad arguments or an unusable endpoints file
EX_UNAVAILABLE = 69  # no proxy answered, or Prometheus did not


SOURCES_HELP = """\
numbers come from the proxies themselves unless --prometheus is given: each proxy's admin /metrics
is scraped twice, --interval apart (at most the -t window), and rates, success and latency
percentiles are taken over those seconds as PromQL's increase and histogram_quantile would (the
proxies keep no history, so a one-shot command does not see the whole window). With --prometheus,
Linkerd viz's queries run over the whole -t window."""


class UsageError(Exception):
    pass


def _sources(parser: argparse.ArgumentParser, outputs: bool = True) -> None:
    group = parser.add_argument_group("where the numbers come from")
    group.add_argument("--proxy", action="append", default=[], metavar="HOST:PORT",
                       help="a proxy's admin address to scrape (repeatable)")
    group.add_argument("--endpoints", metavar="FILE",
                       help="scrape every meshed endpoint of this discovery endpoints file (default: the file "
                            "of MESHPROXY_DESTINATION=file://...; admin port 4191, or the endpoint's "
                            "meshproxy.io/admin-port label)")
    add_kube_arguments(group)
    group.add_argument("--prometheus", metavar="URL", help="ask this Prometheus server instead of the proxies")
    group.add_argument("--interval", type=duration, default=2.0, metavar="DURATION",
                       help="embedded: seconds between the two scrapes (default 2s, at most the window)")
    group.add_argument("--timeout", type=duration, default=2.0, metavar="DURATION",
                       help="give up on a proxy (or a Prometheus query) after this long (default 2s)")
    parser.add_argument("-t", "--time-window", type=duration, default=60.0, metavar="DURATION",
                        help="the window rates and percentiles are taken over (default 1m)")
    if not outputs:
        return  # the dashboard: every namespace, in a web page
    parser.add_argument("-o", "--output", choices=("table", "wide", "json"), default="table")
    parser.add_argument("-n", "--namespace", default=None, help="the namespace of the resources (default: default)")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="resources in every namespace")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshproxy viz", description="See the mesh: golden metrics per "
                                     "workload, per route and per edge, as linkerd viz shows them.",
                                     epilog=SOURCES_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stat", help="success rate, requests/s, latency percentiles, TCP per resource",
                       epilog=SOURCES_HELP)
    s.add_argument("resource", nargs="?", default="deploy",
                   help="deploy, po, svc, au (authority), ns, sts, ds, job, or all; KIND/NAME for one (default deploy)")
    s.add_argument("--to", metavar="RESOURCE", help="only the requests the resource sends to this one")
    s.add_argument("--to-namespace", metavar="NS", help="the namespace of --to (default: -n)")
    s.add_argument("--from", dest="from_", metavar="RESOURCE", help="only the requests from this resource")
    s.add_argument("--from-namespace", metavar="NS", help="the namespace of --from (default: -n)")
    _sources(s)
    r = sub.add_parser("routes", help="per route of the services a workload calls", epilog=SOURCES_HELP)
    r.add_argument("resource", nargs="?", help="the calling workload (deploy/web); default: every proxy")
    r.add_argument("--to", metavar="AUTHORITY", help="only this service (host:port, as the proxy names it)")
    _sources(r)
    e = sub.add_parser("edges", help="who calls whom, with mutual TLS identities", epilog=SOURCES_HELP)
    e.add_argument("resource", nargs="?", default="deploy", help="the kind of resource (deploy, po, ns...)")
    _sources(e)
    tap.add_parser(sub)
    top.add_parser(sub)
    dashboard.add_parser(sub, _sources)
    profile.add_parser(sub)
    return parser


def targets(args: argparse.Namespace) -> list[Target]:
    found = [parse_proxy(text) for text in args.proxy]
    if kube_wanted(args):
        found += from_kubernetes(args)
    path = args.endpoints
    if path is None and not found:
        destination = os.environ.get("MESHPROXY_DESTINATION", "")
        path = destination[len("file://"):] if destination.startswith("file://") else None
    if path is not None:
        found += from_endpoints_file(path)
        if not found:
            raise TargetError(f"the endpoints file {path} lists no meshed endpoint (one with a proxy address)")
    return found or [parse_proxy("127.0.0.1:4191")]


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "tap":
        return tap.main(args)
    if args.command == "top":
        return top.main(args)
    if args.command == "dashboard":
        return dashboard.main(args, targets)
    if args.command == "profile":
        return profile.main(args)
    namespace = None if args.all_namespaces else (args.namespace or "default")
    try:
        return asyncio.run(_main(args, namespace))
    except (UsageError, TargetError, resources.ResourceError) as err:
        print(f"meshproxy viz: {err}", file=sys.stderr)
        return getattr(err, "code", EX_USAGE)
    except PrometheusError as err:
        print(f"meshproxy viz: {err}", file=sys.stderr)
        return EX_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


async def _main(args: argparse.Namespace, namespace: str | None) -> int:
    window = args.time_window
    source: Source
    embedded: Embedded | None = None
    if args.prometheus:
        if args.proxy or args.endpoints or kube_wanted(args):
            raise UsageError("--prometheus asks Prometheus: --proxy, --endpoints and --kubernetes do not apply")
        source = Prometheus(args.prometheus, timeout=max(args.timeout, 10.0))
    else:
        embedded = Embedded(targets(args), timeout=args.timeout)
        source = embedded
    text, data = await _run(args, source, namespace, window, embedded)
    code = EX_OK
    if embedded is not None:
        down = embedded.unreachable()
        lines = [f"proxy {t.name()} unreachable: {why}" for t, why in down]
        if len(down) == len(embedded.windows):
            code = EX_UNAVAILABLE
        if args.output == "json":
            if lines:
                print("\n".join(lines), file=sys.stderr)
        elif lines:
            text += "\n\n" + "\n".join(lines)
    print(json.dumps(data, indent=2) if args.output == "json" else text)
    return code


async def _run(args: argparse.Namespace, source: Source, namespace: str | None, window: float,
               embedded: Embedded | None) -> tuple[str, object]:
    wide = args.output == "wide"
    if args.command == "stat":
        kinds = resources.ALL if args.resource == "all" else None
        reqs = [stat.StatRequest(resources.parse(k), namespace, window=window) for k in kinds] if kinds else [
            stat.StatRequest(resources.parse(args.resource), namespace,
                             to=resources.parse(args.to) if args.to else None,
                             to_namespace=args.to_namespace,
                             from_=resources.parse(args.from_) if args.from_ else None,
                             from_namespace=args.from_namespace or namespace, window=window)]
        if args.to and args.from_:
            raise UsageError("--to and --from cannot be used together")
    if embedded is not None:
        await embedded.sample(min(args.interval, window))
    if args.command == "stat":
        tables = [await stat.stat(source, req) for req in reqs]
        rows = [row for t in tables for row in t]
        if kinds:
            text = "\n\n".join(stat.render(t, wide, namespace is None, prefix=True) for t in tables if t)
            text = text or "No traffic found."
        else:
            text = stat.render(rows, wide, namespace is None)
        return text, [row.json() for row in rows]
    if args.command == "routes":
        resource = resources.parse(args.resource) if args.resource else None
        m = routes.matchers(resource, namespace if resource is not None else None, args.to)
        route_rows = await routes.routes(source, m, window)
        return routes.render(route_rows, wide), [row.json() for row in route_rows]
    edge_rows = await edges.edges(source, resources.parse(args.resource), namespace, window)
    return edges.render(edge_rows, wide), [edge.json() for edge in edge_rows]

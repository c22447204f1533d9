"""``meshproxy viz profile SERVICE --tap RESOURCE``: a ServiceProfile built from the routes seen live.

As ``linkerd viz profile --tap``: the proxies (``viz tap``'s targets) are tapped for
``--tap-duration`` for the requests RESOURCE receives (the inbound side of its proxies, matched
on the workload labels they report of themselves), and each method and path seen becomes a
route named ``METHOD /path`` whose ``pathRegex`` is the path with its regular-expression
characters escaped (no consolidation of ids, as Linkerd). ``/`` is skipped, at most
``--tap-route-limit`` routes are kept (the tap stops at the limit), and the routes are printed
sorted by name in a ServiceProfile named ``SERVICE.NAMESPACE.svc.CLUSTER_DOMAIN``. Unlike
Linkerd's, a path's query never becomes part of its route (Linkerd's routes would not match it).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any

import yaml

from proxy.policy.openapi import path_regex
from proxy.viz import tap
from proxy.viz.resources import duration
from proxy.viz.tapevent import TapEvent, observe_request
from proxy.viz.targets import add_kube_arguments

# Kubernetes' name rules, as Linkerd checks them: a Service is a DNS-1035 label, a namespace a DNS-1123 one.
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="a ServiceProfile from the routes a workload receives, seen live by tap",
                       description="Print a ServiceProfile for SERVICE with one route per method and path the "
                                   "tapped workload received during --tap-duration.")
    p.add_argument("service", metavar="SERVICE", help="the Service the profile is for (its name, without namespace)")
    p.add_argument("--tap", required=True, metavar="RESOURCE",
                   help="the workload whose inbound requests are watched: deploy/NAME, po/NAME, sts/NAME, ds/NAME")
    p.add_argument("--tap-duration", type=duration, default=5.0, metavar="DURATION",
                   help="how long the requests are collected (default 5s)")
    p.add_argument("--tap-route-limit", type=int, default=20, metavar="N",
                   help="most routes in the profile; collection stops when reached (default 20)")
    p.add_argument("-n", "--namespace", default="default", help="the Service's namespace (default: default)")
    p.add_argument("--cluster-domain", default="cluster.local", help="the cluster's DNS domain (default cluster.local)")
    g = p.add_argument_group("which proxies are tapped (as viz tap)")
    g.add_argument("--tap-address", action="append", default=[], metavar="HOST:PORT",
                   help="a proxy's tap address (repeatable; default: every meshed endpoint of --endpoints or "
                        "MESHPROXY_DESTINATION's file on port 4190, else 127.0.0.1:4190)")
    g.add_argument("--endpoints", metavar="FILE", help="tap every meshed endpoint of this discovery endpoints file")
    add_kube_arguments(g)
    g.add_argument("--max-rps", type=float, default=100.0, help="most requests reported per second (default 100)")
    g.add_argument("--timeout", type=duration, default=5.0, metavar="DURATION",
                   help="give up connecting to a proxy after this long (default 5s)")
    g.add_argument("--identity-dir", metavar="DIR", help="tap over mutual TLS as the identity in DIR (as viz tap)")


class Routes:
    """The routes seen so far: one per ``METHOD path`` of an inbound request, up to ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.routes: dict[str, dict[str, Any]] = {}
        self.full = asyncio.Event()

    def add(self, event: TapEvent) -> None:
        if event.kind != "request_init" or event.direction != "in" or self.full.is_set():
            return
        path = event.path.partition("?")[0]
        if not path or path == "/" or not event.method:
            return
        name = f"{event.method} {path}"
        self.routes[name] = {"name": name, "condition": {"method": event.method, "pathRegex": path_regex(path)}}
        if len(self.routes) >= self.limit:
            self.full.set()

    def profile(self, service: str, namespace: str, domain: str) -> dict[str, Any]:
        return {"apiVersion": "linkerd.io/v1alpha2", "kind": "ServiceProfile",
                "metadata": {"name": f"{service}.{namespace}.svc.{domain}", "namespace": namespace},
                "spec": {"routes": [self.routes[name] for name in sorted(self.routes)]}}


def check_names(service: str, namespace: str, limit: int) -> None:
    if not _DNS1035.match(service) or len(service) > 63:
        raise tap.TapError(f"invalid service {service!r}: a DNS-1035 label (lower-case letters, digits and '-', "
                           f"starting with a letter, at most 63 characters)")
    if not _DNS1123.match(namespace) or len(namespace) > 63:
        raise tap.TapError(f"invalid namespace {namespace!r}: a DNS-1123 label (lower-case letters, digits and '-', "
                           f"at most 63 characters)")
    if limit < 1:
        raise tap.TapError("--tap-route-limit must be at least 1")


async def run(args: argparse.Namespace) -> int:
    check_names(args.service, args.namespace, args.tap_route_limit)
    if args.tap.partition("/")[0] in ("svc", "service", "ns", "namespace"):
        raise tap.TapError(f"--tap {args.tap!r}: name the workload that receives the requests "
                           f"(deploy/NAME, po/NAME...)")
    labels = tap.to_labels(args.tap)
    found = tap.targets(argparse.Namespace(tap=args.tap_address, endpoints=args.endpoints, kubernetes=args.kubernetes,
                                           kubeconfig=args.kubeconfig, context=args.context,
                                           namespace=args.namespace, timeout=args.timeout))
    routes = Routes(args.tap_route_limit)

    def request(limit: int) -> bytes:
        return observe_request(limit, to_labels=labels)

    taps = tap.Taps(found, args.max_rps, request, routes.add, args.timeout, tap.tls_context(args.identity_dir))
    full: asyncio.Future[Any] = asyncio.ensure_future(routes.full.wait())
    try:
        ended = await taps.until(full, args.tap_duration)
    finally:
        full.cancel()
        await taps.stop()
    if ended:  # every tap ended before the time was up: none could be tapped (or kept)
        status = taps.report()
        if not routes.routes:
            return status
    sys.stdout.write(yaml.safe_dump(routes.profile(args.service, args.namespace, args.cluster_domain),
                                    sort_keys=False))
    return tap.EX_OK


def main(args: argparse.Namespace) -> int:
    return tap.run_command("profile", run, args, interrupted=130)

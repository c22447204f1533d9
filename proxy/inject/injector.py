"""``meshproxy injector serve``: the mutating admission webhook that meshes pods as they are created.

The API server POSTs an AdmissionReview to ``/inject`` over HTTPS for every
pod created (``meshproxy install`` registers it with ``failurePolicy:
Ignore``); the answer is the pod's JSONPatch, made by the code of ``inject
--manual`` (see admission.py). The pod's namespace annotations are read from
the API (cached briefly, since a rollout creates many pods in one namespace).
A second, plain-HTTP listener serves ``/metrics``, ``/ready`` and ``/live``.

Exit statuses: 64 bad flags or certificate files, 69 a listener cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from proxy.inject import admission, command
from proxy.inject.stream import Options
from proxy.telemetry.logging import get_logger

EX_USAGE = 64
EX_UNAVAILABLE = 69
TLS_DIR = "/var/run/meshproxy/injector"
MAX_REQUEST_BYTES = 4 << 20  # the API server's own limit on an object is 3 MiB, plus the review around it
MAX_HEADER_BYTES = 8190  # per header line (aiohttp's limit, also on the request line)
MAX_HEADERS = 64
REQUEST_TIMEOUT = 10.0  # the API server gives up on a webhook after its timeoutSeconds (10 s at most)
NAMESPACE_TIMEOUT = 5.0
NAMESPACE_CACHE_SECONDS = 10.0
NAMESPACE_CACHE_SIZE = 1024
CERT_CHECK_SECONDS = 30.0  # the Secret volume is updated in place when the certificate is renewed

log = get_logger("proxy.inject.injector")

NamespaceLookup = Callable[[str], Awaitable[Mapping[str, str]]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshproxy injector", description="the automatic-injection webhook")
    sub = parser.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="serve the mutating admission webhook (AdmissionReview v1) on /inject")
    serve.add_argument("--listen", default="0.0.0.0:8443", metavar="ADDR", help="HTTPS listener (default %(default)s)")
    serve.add_argument("--tls-cert", default=f"{TLS_DIR}/tls.crt", metavar="FILE",
                       help="serving certificate chain, reloaded when it changes (default %(default)s)")
    serve.add_argument("--tls-key", default=f"{TLS_DIR}/tls.key", metavar="FILE", help="default %(default)s")
    serve.add_argument("--admin-listen", default="0.0.0.0:9995", metavar="ADDR",
                       help="plain HTTP: /metrics, /ready, /live (default %(default)s)")
    serve.add_argument("--cert-check-interval", type=float, default=CERT_CHECK_SECONDS, metavar="SECONDS",
                       help="how often the certificate files are checked for a change (default %(default)s)")
    serve.add_argument("--max-request-bytes", type=int, default=MAX_REQUEST_BYTES, metavar="N",
                       help="largest AdmissionReview accepted; larger ones get 413 (default %(default)s)")
    serve.add_argument("--namespace-timeout", type=float, default=NAMESPACE_TIMEOUT, metavar="SECONDS",
                       help="time limit of a namespace lookup; past it the pod is let through uninjected "
                       "(default %(default)s)")
    serve.add_argument("--k8s-api", metavar="URL", help="API server for namespace lookups (default: in-cluster)")
    serve.add_argument("--k8s-token-file", default="/var/run/secrets/kubernetes.io/serviceaccount/token")
    serve.add_argument("--k8s-ca-file", default="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
    command.add_image_arguments(serve)
    command.add_identity_arguments(serve)
    serve.add_argument("--log-format", choices=("plain", "json"), default="plain")
    serve.add_argument("--log-level", default="info", help="log level directives (default %(default)s)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return serve_main(args)


def _err(message: str) -> None:
    print(f"meshproxy injector: {message}", file=sys.stderr)


class Metrics:
    """``injector_requests_total{result, reason}`` in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("injector_requests", "admission requests answered, by outcome",
                                ["result", "reason"], registry=self.registry)
        self.duration = Histogram("injector_request_duration_seconds", "time to answer an admission request",
                                  registry=self.registry, buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10))

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class NamespaceCache:
    """Namespace annotations from the API, kept NAMESPACE_CACHE_SECONDS, at most NAMESPACE_CACHE_SIZE names."""

    def __init__(self, fetch: NamespaceLookup, timeout: float = NAMESPACE_TIMEOUT) -> None:
        self._fetch = fetch
        self._timeout = timeout
        self._entries: OrderedDict[str, tuple[float, Mapping[str, str]]] = OrderedDict()

    async def get(self, name: str) -> Mapping[str, str]:
        now = time.monotonic()
        hit = self._entries.get(name)
        if hit is not None and now - hit[0] < NAMESPACE_CACHE_SECONDS:
            return hit[1]
        async with asyncio.timeout(self._timeout):
            annotations = await self._fetch(name)
        self._entries[name] = (now, annotations)
        self._entries.move_to_end(name)
        while len(self._entries) > NAMESPACE_CACHE_SIZE:
            self._entries.popitem(last=False)
        return annotations


def api_lookup(api: Any) -> NamespaceLookup:
    """Namespace annotations through a KubeApi (proxy/discovery/k8s_api.py)."""

    async def lookup(name: str) -> Mapping[str, str]:
        namespace = await api.get(f"/api/v1/namespaces/{name}")
        annotations = (namespace.get("metadata") or {}).get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ValueError(f"namespace {name}: metadata.annotations is not a mapping")
        return {str(k): str(v) for k, v in annotations.items()}

    return lookup


class Injector:
    """The two listeners' handlers; ``namespaces`` answers a namespace's annotations."""

    def __init__(self, options: Options, namespaces: NamespaceLookup, max_request_bytes: int = MAX_REQUEST_BYTES,
                 namespace_timeout: float = NAMESPACE_TIMEOUT) -> None:
        self.options = options
        self.namespaces = NamespaceCache(namespaces, namespace_timeout)
        self.max_request_bytes = max_request_bytes
        self.metrics = Metrics()
        self.serving = False

    def app(self) -> Any:
        from aiohttp import web

        app = web.Application(client_max_size=self.max_request_bytes)
        app.router.add_route("*", "/inject", self.handle)
        return app

    def admin_app(self) -> Any:
        from aiohttp import web

        app = web.Application(client_max_size=1024)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/live", self._live)
        return app

    async def _metrics(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def _ready(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(text="ready\n" if self.serving else "not serving\n", status=200 if self.serving else 503)

    async def _live(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(text="live\n")

    def _count(self, result: str, reason: str, started: float) -> None:
        self.metrics.requests.labels(result, reason).inc()
        self.metrics.duration.observe(time.monotonic() - started)

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        started = time.monotonic()
        if request.method != "POST":
            self._count("error", "bad_request", started)
            return _plain(405, "POST an AdmissionReview (admission.k8s.io/v1)\n", {"Allow": "POST"})
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._count("error", "too_large", started)
            log.warning("admission request refused", reason="too_large", limit=self.max_request_bytes)
            return _plain(413, f"the AdmissionReview is larger than {self.max_request_bytes} bytes\n")
        except TimeoutError:
            self._count("error", "timeout", started)
            return _plain(408, "the request body did not arrive in time\n")
        try:
            review = admission.parse(body)
        except admission.ReviewError as err:
            self._count("error", "bad_request", started)
            log.warning("admission request refused", reason="bad_request", error=str(err))
            return _plain(400, f"{err}\n")
        mutation = await self._mutate(review)
        outcome = mutation.outcome
        self._count(mutation.result, outcome.reason, started)
        log_fields = {"uid": review.uid, "namespace": review.namespace, "result": mutation.result,
                      "reason": outcome.reason, "detail": outcome.line}
        if mutation.result == "error":
            log.warning("pod not injected", **log_fields)
        else:
            log.info("admission request", **log_fields)
        answer = admission.response(review.uid, mutation.patch, mutation.warning)
        return web.Response(body=json.dumps(answer).encode(), content_type="application/json")

    async def _mutate(self, review: admission.Review) -> admission.Mutation:
        if review.pod is None:
            assert review.unusable is not None
            return review.unusable
        try:
            annotations = await self.namespaces.get(review.namespace)
        except Exception as err:  # any failure of the lookup: the pod is created uninjected, never blocked
            return admission.failure("namespace_lookup", f"namespace {review.namespace} could not be read: "
                                                         f"{type(err).__name__}: {err}")
        try:
            return admission.mutate(review, annotations, self.options)
        except Exception as err:  # a bug must not block pod creation either
            log.exception("injection failed", uid=review.uid)
            return admission.failure("internal", f"internal error: {type(err).__name__}: {err}")


def _plain(status: int, text: str, headers: dict[str, str] | None = None) -> Any:
    from aiohttp import web

    return web.Response(status=status, text=text, headers=headers)


async def _reload_certificate(ctx: ssl.SSLContext, cert_file: str, key_file: str, interval: float) -> None:
    """Load the files again when they change; new handshakes use the new certificate."""
    def stamp() -> tuple[float, float]:
        return os.stat(cert_file).st_mtime, os.stat(key_file).st_mtime

    seen = stamp()
    while True:
        await asyncio.sleep(interval)
        try:
            now = stamp()
            if now != seen:
                ctx.load_cert_chain(cert_file, key_file)
                seen = now
                log.info("serving certificate reloaded", cert=cert_file)
        except (OSError, ssl.SSLError) as err:  # half-written during an update: the old one stays
            log.warning("serving certificate not reloaded", cert=cert_file, error=str(err))


async def start(injector: Injector, listen: tuple[str, int], admin: tuple[str, int], ctx: ssl.SSLContext
                ) -> tuple[Any, Any]:
    """Both listeners; returns their runners (``cleanup()`` stops them)."""
    from aiohttp import web

    limits: dict[str, Any] = {"max_line_size": MAX_HEADER_BYTES, "max_field_size": MAX_HEADER_BYTES,
                              "max_headers": MAX_HEADERS, "auto_decompress": False, "keepalive_timeout": 75.0}
    runner = web.AppRunner(injector.app(), handle_signals=False, access_log=None, shutdown_timeout=1.0,
                           **limits)
    admin_runner = web.AppRunner(injector.admin_app(), handle_signals=False, access_log=None,
                                 shutdown_timeout=1.0, **limits)
    await runner.setup()
    await admin_runner.setup()
    try:
        await web.TCPSite(runner, listen[0], listen[1], ssl_context=ctx, reuse_address=True).start()
        await web.TCPSite(admin_runner, admin[0], admin[1], reuse_address=True).start()
    except OSError:
        await runner.cleanup()
        await admin_runner.cleanup()
        raise
    injector.serving = True
    return runner, admin_runner


def serve_main(args: argparse.Namespace) -> int:
    from proxy.config import DiscoverySettings, parse_host_port
    from proxy.telemetry import logging as plog
    from proxy.telemetry import loglevel

    try:
        listen = parse_host_port(args.listen)
        admin = parse_host_port(args.admin_listen)
        loglevel.parse(args.log_level)
        if args.max_request_bytes < 1024:
            raise ValueError("--max-request-bytes must be at least 1024")
        if not args.cert_check_interval > 0:
            raise ValueError("--cert-check-interval must be above 0")
        if not 0 < args.namespace_timeout <= REQUEST_TIMEOUT:
            raise ValueError(f"--namespace-timeout must be above 0 and at most {REQUEST_TIMEOUT:g}")
    except ValueError as err:
        _err(str(err))
        return EX_USAGE
    try:  # the webhook's web server is the extra meshproxy[injector]: the proxy's image goes without it
        import aiohttp  # noqa: F401
    except ImportError as err:
        _err(f"the web server's package is not installed ({err}); install it with: pip install 'meshproxy[injector]'")
        return EX_UNAVAILABLE
    from proxy.identity.server import server_ssl_context

    try:
        # TLS 1.3 like the issuer's listener; kube-apiserver's client speaks it.
        ctx = server_ssl_context(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as err:
        _err(f"serving certificate {args.tls_cert} / {args.tls_key}: {err}")
        return EX_USAGE
    plog.configure(args.log_format, args.log_level)
    proxy_image, init_image = command.images(args)
    options = Options(proxy_image=proxy_image, init_image=init_image, manual=True, unannotated=False,
                      identity=command.identity_defaults(args))
    settings = DiscoverySettings(destination="k8s", dns_nameservers=None, dns_min_ttl=1.0, dns_max_ttl=300.0,
                                 k8s_api=args.k8s_api, k8s_token_file=args.k8s_token_file,
                                 k8s_ca_file=args.k8s_ca_file, cluster_domain="cluster.local",
                                 trust_domain=options.identity.trust_domain)

    async def run() -> int:
        from proxy.discovery.k8s_api import KubeApi

        api = KubeApi(settings)
        try:
            await api.open()
        except Exception as err:  # no in-cluster configuration, unreadable token: a setup error
            _err(f"Kubernetes API: {type(err).__name__}: {err}")
            return EX_USAGE
        injector = Injector(options, api_lookup(api), args.max_request_bytes, args.namespace_timeout)
        try:
            runners = await start(injector, (listen.host, listen.port), (admin.host, admin.port), ctx)
        except OSError as err:
            await api.close()
            _err(f"cannot listen: {err}")
            return EX_UNAVAILABLE
        log.info("injector serving", listen=args.listen, admin=args.admin_listen, proxy_image=proxy_image,
                 init_image=init_image)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloader = asyncio.ensure_future(_reload_certificate(ctx, args.tls_cert, args.tls_key,
                                                          args.cert_check_interval))
        await stop.wait()
        injector.serving = False
        reloader.cancel()
        for runner in runners:
            await runner.cleanup()
        await api.close()
        return 0

    import uvloop

    return uvloop.run(run())

"""``meshproxy identity init`` and ``meshproxy identity serve``.

Exit codes follow the rest of the command (sysexits): 64 bad arguments or
unusable files, 69 the service cannot run (issuer outside its validity, a
listener that cannot be bound), 73 ``init`` would overwrite files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
from pathlib import Path

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshproxy identity", description="The mesh's certificate authority.")
    sub = parser.add_subparsers(dest="action", required=True)
    init = sub.add_parser("init", help="create a trust anchor (root CA) and an issuer (intermediate CA)")
    init.add_argument("--trust-domain", default="cluster.local", help="default %(default)s")
    init.add_argument("--out", required=True, metavar="DIR", help="where ca.crt, ca.key, issuer.crt, issuer.key go")
    init.add_argument("--root-lifetime", default="87600h", help="trust anchor lifetime (default %(default)s)")
    init.add_argument("--issuer-lifetime", default="8760h", help="issuer lifetime (default %(default)s)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    serve = sub.add_parser("serve", help="run the issuer service (POST /v1/certify over TLS 1.3)")
    serve.add_argument("--issuer", required=True, metavar="DIR",
                       help="directory with issuer.crt, issuer.key (and ca.crt)")
    serve.add_argument("--listen", default="0.0.0.0:8080", metavar="ADDR", help="default %(default)s")
    serve.add_argument("--trust-domain", help="default: from the issuer's CN (identity.<trust-domain>)")
    who = serve.add_mutually_exclusive_group(required=True)
    who.add_argument("--tokens", metavar="FILE", help="token file: 'TOKEN IDENTITY' per line; reloaded on change")
    who.add_argument("--token-review", action="store_true", help="check tokens with Kubernetes TokenReview")
    serve.add_argument("--k8s-api", metavar="URL", help="API server for --token-review (default: in-cluster)")
    serve.add_argument("--k8s-token-file", default="/var/run/secrets/kubernetes.io/serviceaccount/token")
    serve.add_argument("--k8s-ca-file", default="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
    serve.add_argument("--token-audience", action="append", default=[], metavar="AUD",
                       help="audiences the reviewed token must hold (repeatable)")
    serve.add_argument("--leaf-lifetime", default="24h", help="default %(default)s; never beyond the issuer")
    serve.add_argument("--tls-cert", metavar="FILE", help="serving certificate chain (default: issued at start)")
    serve.add_argument("--tls-key", metavar="FILE")
    serve.add_argument("--server-name", action="append", default=[], metavar="NAME",
                       help="extra DNS name of the default serving certificate (repeatable)")
    serve.add_argument("--log-format", choices=("plain", "json"), default="plain")
    serve.add_argument("--log-level", default="info",
                       help="a level (trace, debug, info, warn, error, off) and target=level pairs, "
                            "e.g. warn,proxy.identity=debug (default %(default)s)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return init_main(args) if args.action == "init" else serve_main(args)


def _err(message: str) -> None:
    print(f"meshproxy identity: {message}", file=sys.stderr)


def _lifetime(text: str, what: str) -> dt.timedelta:
    from proxy.config import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as err:
        raise ValueError(f"{what} {text!r}: {err}") from None
    if seconds <= 0:
        raise ValueError(f"{what} {text!r}: must be greater than zero")
    return dt.timedelta(seconds=seconds)


def init_main(args: argparse.Namespace) -> int:
    from proxy.identity import ca, names

    try:
        names.check_trust_domain(args.trust_domain)
        root_life = _lifetime(args.root_lifetime, "--root-lifetime")
        issuer_life = _lifetime(args.issuer_lifetime, "--issuer-lifetime")
    except ValueError as err:
        _err(str(err))
        return EX_USAGE
    if issuer_life > root_life:
        _err("--issuer-lifetime must not exceed --root-lifetime")
        return EX_USAGE
    root = ca.create_root(args.trust_domain, root_life)
    issuer = ca.create_issuer(root, args.trust_domain, issuer_life)
    try:
        paths = ca.write_authorities(Path(args.out), root, issuer, force=args.force)
    except ca.FilesExist as err:
        _err(f"refusing to overwrite {err} (use --force)")
        return EX_CANTCREAT
    except OSError as err:
        _err(f"cannot write {err.filename}: {err.strerror}")
        return EX_CANTCREAT
    for path in paths:
        print(path)
    print(f"trust anchor root.{args.trust_domain} valid until {root.not_after.isoformat()}; "
          f"issuer identity.{args.trust_domain} valid until {issuer.not_after.isoformat()}", file=sys.stderr)
    return 0


def _trust_domain_of(issuer) -> str:
    from cryptography.x509.oid import NameOID

    cns = issuer.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    if not cn.startswith("identity."):
        raise ValueError(f"the issuer CN {cn!r} is not identity.<trust-domain>; give --trust-domain")
    return cn[len("identity.") :]


def serve_main(args: argparse.Namespace) -> int:
    from proxy.config import parse_host_port
    from proxy.identity import ca, names, tokens
    from proxy.identity.server import rfc3339
    from proxy.telemetry import logging as plog
    from proxy.telemetry import loglevel

    try:
        listen = parse_host_port(args.listen)
        try:
            loglevel.parse(args.log_level)
        except ValueError as err:
            raise ValueError(f"--log-level: {err}") from None
        leaf_life = _lifetime(args.leaf_lifetime, "--leaf-lifetime")
        issuer, _anchors = ca.load_issuer(Path(args.issuer))
        trust_domain = names.check_trust_domain(args.trust_domain or _trust_domain_of(issuer))
        if bool(args.tls_cert) != bool(args.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
    except (ValueError, ca.BadIssuer) as err:
        _err(str(err))
        return EX_USAGE
    now = ca.utcnow()
    if not issuer.not_before <= now < issuer.not_after:
        state = "expired" if now >= issuer.not_after else "not yet valid"
        _err(f"the issuer certificate {Path(args.issuer) / ca.ISSUER_CERT} is {state}: valid from "
             f"{rfc3339(issuer.not_before)} to {rfc3339(issuer.not_after)}, now {rfc3339(now)}")
        return EX_UNAVAILABLE
    checker: tokens.TokenChecker
    try:
        if args.tokens:
            checker = tokens.TokenFile(args.tokens, trust_domain)
        else:
            checker = tokens.TokenReview(trust_domain, args.k8s_api, args.k8s_token_file, args.k8s_ca_file,
                                         tuple(args.token_audience))
    except (OSError, ValueError) as err:
        _err(str(err))
        return EX_USAGE
    plog.configure(args.log_format, args.log_level)
    return _run(args, issuer, checker, trust_domain, leaf_life, listen)


def _serving_context(args, issuer, host: str):
    """The listener's TLS context: the given files, or a certificate issued
    now by the issuer for the listen host (plus --server-name)."""
    from cryptography import x509

    from proxy.identity import ca, server

    if args.tls_cert:
        return server.server_ssl_context(args.tls_cert, args.tls_key)
    return server.issued_ssl_context(issuer, ca.host_sans(host) + [x509.DNSName(n) for n in args.server_name])


def _run(args, issuer, checker, trust_domain: str, leaf_life: dt.timedelta, listen) -> int:
    import asyncio

    import uvloop

    from proxy.identity import ca, server
    from proxy.telemetry.logging import get_logger

    log = get_logger("proxy.identity")

    async def run() -> int:
        service = server.IssuerService(issuer, checker, trust_domain, leaf_life)
        try:
            ctx = _serving_context(args, issuer, listen.host)
        except (OSError, ValueError) as err:
            _err(f"serving certificate: {err}")
            return EX_USAGE
        try:
            srv = await server.start(service, listen.host, listen.port, ctx)
        except OSError as err:
            _err(f"cannot listen on {args.listen}: {err}")
            return EX_UNAVAILABLE
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        bound = srv.sockets[0].getsockname()
        log.info("identity issuer serving", listen=f"{bound[0]}:{bound[1]}", trust_domain=trust_domain,
                 issuer_valid_until=server.rfc3339(issuer.not_after),
                 tokens="file" if args.tokens else "tokenreview")
        stopper = asyncio.ensure_future(stop.wait())
        expiry = asyncio.ensure_future(asyncio.sleep(max(0.0, (issuer.not_after - ca.utcnow()).total_seconds())))
        await asyncio.wait({stopper, expiry}, return_when=asyncio.FIRST_COMPLETED)
        srv.close()
        code = 0
        if expiry.done():
            _err("the issuer certificate expired; stopping")
            code = EX_UNAVAILABLE
        stopper.cancel()
        expiry.cancel()
        return code

    return uvloop.run(run())


"""``meshproxy install [--crds] [--ha]`` and ``meshproxy uninstall``: print manifests for kubectl.

As with Linkerd, nothing is applied here: ``meshproxy install --crds | kubectl
apply -f -`` first, then ``meshproxy install | kubectl apply -f -``;
``meshproxy uninstall | kubectl delete -f -`` removes both. Modules:
``crds`` (the CustomResourceDefinitions), ``controlplane`` (namespace,
issuer, injector webhook, RBAC, trust anchors), ``pki`` (the certificates).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

import proxy

EX_USAGE = 64


class _Dumper(yaml.SafeDumper):
    """Block style, PEM as literal blocks, and no anchors (CRD versions share one schema object)."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(docs: list[dict], heading: str) -> str:
    body = "---\n".join(yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False) for doc in docs)
    return f"# {heading}\n---\n{body}"


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    from proxy.inject import names

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--crds", action="store_true", help="only the CustomResourceDefinitions (apply these first)")
    parser.add_argument("--meshed-namespace", action="append", default=[], metavar="NS",
                        help=f"also put the trust anchors ConfigMap ({names.TRUST_ANCHORS_CONFIGMAP}) in NS, "
                             "where injected pods mount it from (repeatable)")
    return parser


def build_install_parser() -> argparse.ArgumentParser:
    from proxy.install import controlplane

    parser = _parser("meshproxy install", "Print the control plane's manifests (or the CRDs) for kubectl apply -f -.")
    parser.add_argument("--ha", action="store_true",
                        help=f"high availability: {controlplane.HA_REPLICAS} replicas, pod anti-affinity, "
                             "PodDisruptionBudgets")
    parser.add_argument("--image", default=controlplane.inject_names.DEFAULT_CONTROLLER_IMAGE,
                        help="image of the identity issuer and the injector: the proxy's, with the webhook's "
                             "libraries (default %(default)s, built by scripts/images.sh)")
    parser.add_argument("--proxy-image", default=controlplane.inject_names.DEFAULT_PROXY_IMAGE,
                        help="proxy image the injector adds (default %(default)s)")
    parser.add_argument("--init-image", default=controlplane.inject_names.DEFAULT_INIT_IMAGE,
                        help="iptables init image the injector adds (default %(default)s)")
    parser.add_argument("--trust-domain", default=controlplane.inject_names.DEFAULT_TRUST_DOMAIN,
                        help="trust domain of a freshly made trust anchor (default %(default)s)")
    parser.add_argument("--identity-dir", metavar="DIR",
                        help="use this issuer (issuer.crt, issuer.key, ca.crt from `meshproxy identity init --out DIR`)"
                             " instead of making a new trust anchor and issuer")
    return parser


def _documents(args: argparse.Namespace, crds_only: bool) -> list[dict]:
    from proxy.install import controlplane, crds, pki

    if crds_only:
        return crds.definitions()
    identity = pki.load(Path(args.identity_dir)) if args.identity_dir else pki.generate(args.trust_domain)
    options = controlplane.Options(image=args.image, proxy_image=args.proxy_image, init_image=args.init_image,
                                   ha=args.ha, meshed_namespaces=tuple(args.meshed_namespace))
    return controlplane.documents(options, identity)


def main(argv: list[str]) -> int:
    from proxy.identity import ca, names

    args = build_install_parser().parse_args(argv)
    try:
        names.check_trust_domain(args.trust_domain)
        docs = _documents(args, args.crds)
    except (ValueError, ca.BadIssuer) as err:
        print(f"meshproxy install: {err}", file=sys.stderr)
        return EX_USAGE
    what = "CRDs" if args.crds else "control plane"
    sys.stdout.write(render(docs, f"meshproxy {proxy.__version__} {what}: pipe into kubectl apply -f -"))
    return 0


def everything(meshed_namespaces: tuple[str, ...] = ()) -> list[dict]:
    """Every object ``install --crds`` and ``install --ha`` can print (a throwaway identity: for names only)."""
    from proxy.install import controlplane, crds, pki

    options = controlplane.Options(ha=True, meshed_namespaces=meshed_namespaces)
    return crds.definitions() + controlplane.documents(options, pki.generate("cluster.local"))

"""``meshproxy inject`` / ``meshproxy uninject``: files in, stream out, a report on stderr.

``inject`` annotates each workload's pod template for the injector webhook
(``meshproxy injector serve``); ``inject --manual`` adds the containers itself.

Exit statuses (sysexits.h): 0 done (also when nothing needed injecting), 65 a
document injection cannot handle (invalid YAML, unsupported shape, a bad
annotation), 66 an input file that cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import yaml

from proxy.config import parse_service_url
from proxy.identity.names import check_trust_domain
from proxy.inject import names
from proxy.inject.policy import IdentityDefaults
from proxy.inject.stream import InjectError, Options, Result, inject_text, uninject_text

EX_DATAERR = 65
EX_NOINPUT = 66


def _argument_type(check: Callable[[str], object]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text

    return parse


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """Which images the injected containers run (annotations on a pod override them)."""
    parser.add_argument("--registry", metavar="REGISTRY", default="",
                        help="where the images were pushed (e.g. registry.example.com/mesh): the defaults become "
                        f"REGISTRY/{names.DEFAULT_PROXY_IMAGE} and REGISTRY/{names.DEFAULT_INIT_IMAGE}")
    parser.add_argument("--proxy-image", metavar="IMAGE",
                        help=f"proxy image (default [REGISTRY/]{names.DEFAULT_PROXY_IMAGE}, as scripts/images.sh "
                        f"builds it); per pod: {names.PROXY_IMAGE}")
    parser.add_argument("--init-image", metavar="IMAGE",
                        help=f"iptables init image (default [REGISTRY/]{names.DEFAULT_INIT_IMAGE}); per pod: "
                        f"{names.INIT_IMAGE}")


def images(args: argparse.Namespace) -> tuple[str, str]:
    """(proxy image, init image) from the flags of add_image_arguments."""
    registry = (getattr(args, "registry", None) or "").rstrip("/")
    prefix = f"{registry}/" if registry else ""
    return (getattr(args, "proxy_image", None) or prefix + names.DEFAULT_PROXY_IMAGE,
            getattr(args, "init_image", None) or prefix + names.DEFAULT_INIT_IMAGE)


def add_identity_arguments(parser: argparse.ArgumentParser) -> None:
    """The identity flags of ``meshproxy inject`` (annotations on a pod override them)."""
    parser.add_argument("--disable-identity", action="store_true",
                        help="inject without identity (the pods' hops stay plaintext); "
                        f"per pod: {names.DISABLE_IDENTITY}")
    parser.add_argument("--trust-domain", type=_argument_type(check_trust_domain), default=names.DEFAULT_TRUST_DOMAIN,
                        help=f"identity trust domain (default %(default)s); per pod: {names.TRUST_DOMAIN}")
    parser.add_argument("--identity-service", type=_argument_type(parse_service_url),
                        default=names.DEFAULT_IDENTITY_SERVICE, metavar="URL",
                        help=f"the issuer (default %(default)s); per pod: {names.IDENTITY_SERVICE}")


def identity_defaults(args: argparse.Namespace) -> IdentityDefaults:
    # getattr: a parser without add_identity_arguments gives the defaults.
    return IdentityDefaults(
        trust_domain=getattr(args, "trust_domain", None) or names.DEFAULT_TRUST_DOMAIN,
        service=getattr(args, "identity_service", None) or names.DEFAULT_IDENTITY_SERVICE,
        disabled=bool(getattr(args, "disable_identity", False)),
    )


def _read(path: str, stdin: TextIO) -> str:
    if path == "-":
        return stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def namespace_file(text: str) -> tuple[dict[str, str], dict[str, Mapping[str, str]]]:
    """A ``--namespace-annotations-file``: Namespace document(s), or a plain mapping of annotations.

    Returns (annotations for manifests whose namespace no document names,
    annotations by namespace name). A single Namespace serves both.
    """
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    plain: dict[str, str] = {}
    named: dict[str, Mapping[str, str]] = {}
    for doc in docs:
        if not isinstance(doc, dict):
            raise ValueError("expected Namespace documents or a mapping of annotations")
        if doc.get("kind") == "Namespace":
            metadata: Any = doc.get("metadata") or {}
            annotations = metadata.get("annotations") or {}
            if metadata.get("name"):
                named[str(metadata["name"])] = annotations
            if len(docs) == 1:
                plain = dict(annotations)
        else:
            plain.update({str(k): str(v) for k, v in doc.items()})
    return plain, named


def _finish(result: Result, verb: str, stdout: TextIO, stderr: TextIO) -> int:
    stdout.write(result.text)
    for line in result.report:
        print(line, file=stderr)
    if result.changed == 0:
        print(f"meshproxy {verb}: nothing to {verb}; the stream was written back unchanged", file=stderr)
    return 0


def inject_main(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None,
                stderr: TextIO | None = None) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        text = _read(args.file, stdin)
        plain: dict[str, str] = {}
        named: dict[str, Mapping[str, str]] = {}
        if args.namespace_annotations_file:
            plain, named = namespace_file(_read(args.namespace_annotations_file, stdin))
    except OSError as err:
        print(f"meshproxy inject: cannot read {err.filename}: {err.strerror}", file=stderr)
        return EX_NOINPUT
    except (yaml.YAMLError, ValueError) as err:
        print(f"meshproxy inject: --namespace-annotations-file: {err}", file=stderr)
        return EX_DATAERR
    if getattr(args, "force", False):
        print("meshproxy inject: --force is no longer needed: every workload not annotated disabled is injected",
              file=stderr)
    proxy_image, init_image = images(args)
    options = Options(
        proxy_image=proxy_image,
        init_image=init_image,
        manual=bool(getattr(args, "manual", False)),
        namespace_annotations=plain,
        namespaces=named,
        identity=identity_defaults(args),
    )
    try:
        result = inject_text(text, options)
    except InjectError as err:
        print(f"meshproxy inject: {err}", file=stderr)
        return EX_DATAERR
    return _finish(result, "inject", stdout, stderr)


def uninject_main(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None,
                  stderr: TextIO | None = None) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        text = _read(args.file, stdin)
    except OSError as err:
        print(f"meshproxy uninject: cannot read {err.filename}: {err.strerror}", file=stderr)
        return EX_NOINPUT
    try:
        result = uninject_text(text)
    except InjectError as err:
        print(f"meshproxy uninject: {err}", file=stderr)
        return EX_DATAERR
    return _finish(result, "uninject", stdout, stderr)

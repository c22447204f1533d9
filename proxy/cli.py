"""The ``meshproxy`` command: parses arguments and hands off; every subcommand lives in its own module."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import proxy

if TYPE_CHECKING:
    import argparse

EX_CONFIG = 64  # sysexits.h EX_USAGE: bad configuration, nothing was bound
EX_UNAVAILABLE = 69  # a listener could not be bound


def _run(config_path: str | None) -> int:
    from proxy import config as cfgmod

    try:
        cfg = cfgmod.load(file_path=config_path)
    except cfgmod.ConfigError as err:
        print(f"meshproxy: invalid configuration: {err}", file=sys.stderr)
        return EX_CONFIG

    import uvloop

    from proxy.telemetry import logging as plog

    plog.configure(cfg.log_format, cfg.log_level)

    async def main() -> int:
        from proxy.app import App

        app = App(cfg)
        try:
            await app.start()
        except cfgmod.ConfigError as err:  # the policy file is read at start
            print(f"meshproxy: invalid configuration: {err}", file=sys.stderr)
            return EX_CONFIG
        except OSError as err:
            print(f"meshproxy: cannot listen: {err}", file=sys.stderr)
            return EX_UNAVAILABLE
        from proxy.telemetry.memory import settle_after_start

        settle_after_start()
        await app.run()
        return 0

    return uvloop.run(main())


# Subcommands that parse their own arguments: name -> (module, help). Each
# module has main(argv) -> int and is imported only when used.
DELEGATED = {
    "demo": ("proxy.demo", "run a small local mesh and print its golden metrics"),
    "check": ("proxy.check", "check the environment and the running proxy: check [--admin ADDR] [--output json]; "
                             "the cluster: check --pre|--proxy [--api URL]"),
    "identity": ("proxy.identity.command", "the certificate authority: identity init, identity serve"),
    "viz": ("proxy.viz.command", "see the mesh: viz stat|routes|edges|tap|top|dashboard|profile (golden metrics)"),
    "injector": ("proxy.inject.injector", "the automatic-injection webhook: injector serve"),
    "install": ("proxy.install", "print the control plane's manifests: install [--crds] [--ha] | kubectl apply -f -"),
    "uninstall": ("proxy.install.uninstall", "print what install created: uninstall | kubectl delete -f -"),
    "profile": ("proxy.policy.openapi", "print a ServiceProfile for an API: profile --open-api SPEC SERVICE"),
}


def _delegate(name: str, rest: list[str]) -> int:
    import importlib

    return importlib.import_module(DELEGATED[name][0]).main(rest)


def _inject(args: argparse.Namespace) -> int:
    from proxy.inject import command

    return command.inject_main(args)


def _uninject(args: argparse.Namespace) -> int:
    from proxy.inject import command

    return command.uninject_main(args)


def _plain_run(argv: list[str]) -> tuple[bool, str | None]:
    """``run``, ``run --config FILE`` or ``run --config=FILE``: (True, FILE or None) without argparse.

    argparse and the gettext and locale modules it imports would stay resident in
    every sidecar (about 0.6 MiB) for one parse; anything else goes to argparse."""
    if argv == ["run"]:
        return True, None
    if len(argv) == 3 and argv[:2] == ["run", "--config"] and not argv[2].startswith("-"):
        return True, argv[2]
    if len(argv) == 2 and argv[0] == "run" and argv[1].startswith("--config="):
        return True, argv[1].removeprefix("--config=")
    return False, None


def build_parser(for_command: str | None = None) -> argparse.ArgumentParser:
    """The command line; ``for_command`` adds what only that subcommand needs (and imports)."""
    import argparse

    parser = argparse.ArgumentParser(prog="meshproxy", description="A Linkerd-style service-mesh sidecar proxy.")
    parser.add_argument("--version", action="version", version=f"meshproxy {proxy.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the proxy (configured by MESHPROXY_* environment variables)")
    run.add_argument("--config", metavar="FILE", help="YAML file of settings (lower-case names without MESHPROXY_)")
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    sub.add_parser("version", help="print the version and whether the compiled fast path is in use")
    inject = sub.add_parser("inject", help="mesh Kubernetes manifests: annotate them for the injector, "
                                           "or with --manual add the init container and sidecar")
    inject.add_argument("file", metavar="FILE|-", help="multi-document YAML; - reads stdin")
    inject.add_argument("--manual", action="store_true",
                        help="add the containers here instead of annotating the pods for the injector webhook")
    inject.add_argument("--force", action="store_true", help=argparse.SUPPRESS)  # no longer needed; says so
    inject.add_argument(
        "--namespace-annotations-file",
        metavar="FILE",
        help="the target namespace's annotations: a Namespace document or a YAML mapping",
    )
    if for_command == "inject":
        # Imported only for inject: the module pulls in YAML, which `run` never needs.
        from proxy.inject import command as inject_command

        inject_command.add_image_arguments(inject)
        inject_command.add_identity_arguments(inject)
    uninject = sub.add_parser("uninject", help="remove what meshproxy inject added")
    uninject.add_argument("file", metavar="FILE|-", help="multi-document YAML; - reads stdin")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plain, config_path = _plain_run(argv)
    if plain:
        return _run(config_path)
    parser = build_parser(argv[0] if argv else None)
    if argv[:1] and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args.config)
    if args.command == "inject":
        return _inject(args)
    if args.command == "uninject":
        return _uninject(args)
    if args.command == "version":
        import proxy.compiled as fp

        print(f"meshproxy {proxy.__version__} (fast path {'compiled' if fp.COMPILED else 'NOT compiled'})")
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``meshproxy profile --open-api SPEC SERVICE``: a ServiceProfile with one route per OpenAPI operation.

Routes are named ``METHOD /path`` and match on the method and a ``pathRegex``
built from the templated path (``/books/{id}`` -> ``/books/[^/]*``), with
Swagger 2 ``basePath`` prepended. Linkerd's operation extensions
``x-linkerd-retryable`` and ``x-linkerd-timeout`` are honoured. Pure apart
from reading the spec file and printing the YAML.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import yaml

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_SPECIAL = set(".^$*+?()[]{}|\\")


def path_regex(template: str) -> str:
    """Escape the literal parts; each ``{param}`` matches one path segment."""
    out = []
    for literal, param in re.findall(r"([^{]*)(\{[^}]*\})?", template):
        out.append("".join("\\" + ch if ch in _SPECIAL else ch for ch in literal))
        if param:
            out.append("[^/]*")
    return "".join(out)


def profile_from_spec(spec: dict[str, Any], service: str) -> dict[str, Any]:
    if not isinstance(spec, dict) or not isinstance(spec.get("paths"), dict):
        raise ValueError("not an OpenAPI/Swagger document: no 'paths' mapping")
    base = str(spec.get("basePath") or "").rstrip("/")
    routes = []
    for template, item in spec["paths"].items():
        if not isinstance(item, dict):
            continue
        full = base + str(template)
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            route: dict[str, Any] = {
                "name": f"{method.upper()} {full}",
                "condition": {"method": method.upper(), "pathRegex": path_regex(full)},
            }
            if op.get("x-linkerd-retryable") is True:
                route["isRetryable"] = True
            if op.get("x-linkerd-timeout"):
                route["timeout"] = str(op["x-linkerd-timeout"])
            routes.append(route)
    labels = service.split(".")
    metadata: dict[str, Any] = {"name": service}
    if len(labels) > 2 and labels[2] == "svc":
        metadata["namespace"] = labels[1]
    return {"apiVersion": "linkerd.io/v1alpha2", "kind": "ServiceProfile",
            "metadata": metadata, "spec": {"routes": routes}}


def _load(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if path.endswith(".json"):
        return json.loads(text)
    return yaml.safe_load(text)  # YAML is a superset of JSON for other names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meshproxy profile",
                                     description="Print a ServiceProfile generated from an OpenAPI spec.")
    parser.add_argument("--open-api", required=True, metavar="SPEC", help="OpenAPI/Swagger file (.json or .yaml)")
    parser.add_argument("service", metavar="SERVICE", help="service FQDN, e.g. books.default.svc.cluster.local")
    args = parser.parse_args(argv)
    try:
        profile = profile_from_spec(_load(args.open_api), args.service)
    except OSError as err:
        print(f"meshproxy profile: {args.open_api}: {err.strerror or err}", file=sys.stderr)
        return 66  # EX_NOINPUT
    except (ValueError, yaml.YAMLError) as err:
        print(f"meshproxy profile: {args.open_api}: {err}", file=sys.stderr)
        return 65  # EX_DATAERR
    sys.stdout.write(yaml.safe_dump(profile, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

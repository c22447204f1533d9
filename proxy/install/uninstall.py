"""``meshproxy uninstall``: the objects ``meshproxy install`` (and ``--crds``) create, for ``kubectl delete -f -``.

Offline, like the rest of install: every object install can make is listed
(HA's PodDisruptionBudgets too), so pipe it into ``kubectl delete
--ignore-not-found -f -``.
"""

from __future__ import annotations

import sys

import proxy
from proxy.install import _parser, render

# Besides name and namespace, what the API schema requires of an object (kubectl
# validates what it is given, even to delete it).
REQUIRED = {"ClusterRoleBinding": ("roleRef",), "RoleBinding": ("roleRef",), "CustomResourceDefinition": ("spec",)}


def _slim(doc: dict) -> dict:
    out = {"apiVersion": doc["apiVersion"], "kind": doc["kind"],
           "metadata": {k: doc["metadata"][k] for k in ("name", "namespace") if k in doc["metadata"]}}
    for key in REQUIRED.get(doc["kind"], ()):
        out[key] = doc[key]
    if doc["kind"] == "CustomResourceDefinition":  # the schemas are not needed to delete
        spec = doc["spec"]
        out["spec"] = {**spec, "versions": [{k: v[k] for k in ("name", "served", "storage")} for v in spec["versions"]]}
    return out


def removal(docs: list[dict]) -> list[dict]:
    """What ``kubectl delete -f -`` needs of each object, last created first."""
    return [_slim(doc) for doc in reversed(docs)]


def main(argv: list[str]) -> int:
    """Both sets of objects ``install`` makes (the identity is a throwaway: only names are printed)."""
    from proxy.install import crds, everything

    parser = _parser("meshproxy uninstall", "Print what meshproxy install created, for kubectl delete -f -.")
    parser.add_argument("--keep-crds", action="store_true",
                        help="keep the CRDs (and with them every ServiceProfile, Server, ... in the cluster)")
    args = parser.parse_args(argv)
    if args.crds:
        docs = crds.definitions()
    else:
        docs = everything(tuple(args.meshed_namespace))
        if args.keep_crds:
            docs = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    sys.stdout.write(render(removal(docs), f"meshproxy {proxy.__version__}: pipe into kubectl delete -f -"))
    return 0

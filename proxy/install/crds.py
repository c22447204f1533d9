"""The CustomResourceDefinitions of every Linkerd kind meshproxy reads (``meshproxy install --crds``).

Group, kind, plural, short names, scope and served versions are Linkerd's
(TrafficSplit: the SMI spec's, as the linkerd-smi extension installs it), so
documents written for Linkerd apply unchanged, and a cluster that already has
Linkerd's CRDs can keep them (``meshproxy check --pre`` says whether they are
compatible). The schemas type the fields meshproxy reads (proxy/policy/) and
keep everything else (``x-kubernetes-preserve-unknown-fields``): the API
server prunes nothing Linkerd's own schemas would accept, and meshproxy's
parser, not the CRD, is the strict reader. Every version has the same schema,
so no conversion webhook is needed (strategy None, as Linkerd's).
"""

from __future__ import annotations

from dataclasses import dataclass

import proxy

LINKERD_GROUP = "linkerd.io"
POLICY_GROUP = "policy.linkerd.io"
SPLIT_GROUP = "split.smi-spec.io"
PART_OF = {"app.kubernetes.io/part-of": "meshproxy"}
CREATED_BY = "meshproxy.io/created-by"


def _obj(properties: dict | None = None, required: tuple[str, ...] = ()) -> dict:
    """An object schema that types ``properties`` and keeps any other field."""
    schema: dict = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if properties:
        schema["properties"] = properties
    if required:
        schema["required"] = list(required)
    return schema


def _array(items: dict) -> dict:
    return {"type": "array", "items": items}


STRING = {"type": "string"}
INT_OR_STRING = {"x-kubernetes-int-or-string": True}
STRINGS = _array(STRING)
LABEL_SELECTOR = _obj({
    "matchLabels": {"type": "object", "additionalProperties": STRING},
    "matchExpressions": _array(_obj({
        "key": STRING,
        "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
        "values": STRINGS,
    }, required=("key", "operator"))),
})
OBJECT_REF = _obj({"group": STRING, "kind": STRING, "name": STRING, "namespace": STRING}, required=("kind",))
NETWORK = _obj({"cidr": STRING, "except": STRINGS}, required=("cidr",))

SERVICE_PROFILE = _obj({
    "routes": _array(_obj({"name": STRING, "condition": _obj(), "responseClasses": _array(_obj()),
                           "isRetryable": {"type": "boolean"}, "timeout": STRING},
                          required=("name", "condition"))),
    "retryBudget": _obj({"retryRatio": {"type": "number"}, "minRetriesPerSecond": {"type": "integer"},
                         "ttl": STRING}),
    "dstOverrides": _array(_obj({"authority": STRING, "weight": INT_OR_STRING}, required=("authority", "weight"))),
    "opaquePorts": STRINGS,
})
SERVER = _obj({
    "podSelector": LABEL_SELECTOR,
    "externalWorkloadSelector": LABEL_SELECTOR,
    "port": INT_OR_STRING,
    "proxyProtocol": STRING,
    "accessPolicy": STRING,
}, required=("port",))
SERVER_AUTHORIZATION = _obj({
    "server": _obj({"name": STRING, "selector": LABEL_SELECTOR}),
    "client": _obj({
        "meshTLS": _obj({"unauthenticatedTLS": {"type": "boolean"}, "identities": STRINGS,
                         "serviceAccounts": _array(_obj({"name": STRING, "namespace": STRING}, required=("name",)))}),
        "unauthenticated": {"type": "boolean"},
        "networks": _array(NETWORK),
    }),
}, required=("server", "client"))
AUTHORIZATION_POLICY = _obj({"targetRef": OBJECT_REF, "requiredAuthenticationRefs": _array(OBJECT_REF)},
                            required=("targetRef", "requiredAuthenticationRefs"))
MESH_TLS_AUTHENTICATION = _obj({"identities": STRINGS, "identityRefs": _array(OBJECT_REF)})
NETWORK_AUTHENTICATION = _obj({"networks": _array(NETWORK)}, required=("networks",))
HTTP_ROUTE = _obj({
    "parentRefs": _array(_obj({"group": STRING, "kind": STRING, "name": STRING, "namespace": STRING,
                               "port": {"type": "integer"}, "sectionName": STRING}, required=("name",))),
    "hostnames": STRINGS,
    "rules": _array(_obj()),
})
TRAFFIC_SPLIT = _obj({
    "service": STRING,
    "backends": _array(_obj({"service": STRING, "weight": INT_OR_STRING}, required=("service", "weight"))),
    "matches": _array(_obj()),
}, required=("service", "backends"))


@dataclass(frozen=True, slots=True)
class Kind:
    """One CRD: its names, served versions and the one stored (Linkerd's choice)."""

    group: str
    kind: str
    plural: str
    short_names: tuple[str, ...]
    versions: tuple[str, ...]
    storage: str
    spec: dict

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"


KINDS = (
    Kind(LINKERD_GROUP, "ServiceProfile", "serviceprofiles", ("sp",), ("v1alpha1", "v1alpha2"), "v1alpha2",
         SERVICE_PROFILE),
    Kind(POLICY_GROUP, "Server", "servers", ("srv",), ("v1alpha1", "v1beta1", "v1beta2", "v1beta3"), "v1beta3",
         SERVER),
    Kind(POLICY_GROUP, "ServerAuthorization", "serverauthorizations", ("saz", "serverauthz", "srvauthz"),
         ("v1alpha1", "v1beta1"), "v1beta1", SERVER_AUTHORIZATION),
    Kind(POLICY_GROUP, "AuthorizationPolicy", "authorizationpolicies", ("authzpolicy",), ("v1alpha1",), "v1alpha1",
         AUTHORIZATION_POLICY),
    Kind(POLICY_GROUP, "MeshTLSAuthentication", "meshtlsauthentications", ("meshtlsauthn",), ("v1alpha1",),
         "v1alpha1", MESH_TLS_AUTHENTICATION),
    Kind(POLICY_GROUP, "NetworkAuthentication", "networkauthentications", ("netauthn", "networkauthn"),
         ("v1alpha1",), "v1alpha1", NETWORK_AUTHENTICATION),
    Kind(POLICY_GROUP, "HTTPRoute", "httproutes", (), ("v1alpha1", "v1beta1", "v1beta2", "v1beta3"), "v1beta3",
         HTTP_ROUTE),
    # The SMI spec's versions; the linkerd-smi extension stores v1alpha2.
    Kind(SPLIT_GROUP, "TrafficSplit", "trafficsplits", ("ts",), ("v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"),
         "v1alpha2", TRAFFIC_SPLIT),
)


def definition(kind: Kind) -> dict:
    """The CustomResourceDefinition object of one kind."""
    schema = {"openAPIV3Schema": {"type": "object", "required": ["spec"], "properties": {"spec": kind.spec}}}
    versions = [{"name": v, "served": True, "storage": v == kind.storage, "schema": schema} for v in kind.versions]
    names: dict[str, str | list[str]] = {"kind": kind.kind, "listKind": f"{kind.kind}List", "plural": kind.plural,
             "singular": kind.kind.lower()}
    if kind.short_names:
        names["shortNames"] = list(kind.short_names)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.name, "labels": dict(PART_OF),
                     "annotations": {CREATED_BY: f"meshproxy {proxy.__version__}"}},
        "spec": {"group": kind.group, "names": names, "scope": "Namespaced", "versions": versions},
    }


def definitions() -> list[dict]:
    return [definition(kind) for kind in KINDS]

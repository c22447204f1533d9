"""Identity names and their SPIFFE IDs."""

from __future__ import annotations

import pytest

from proxy.identity import names


def test_identity_name_and_spiffe_id():
    ident = names.make("web", "default", "cluster.local")
    assert ident.name == "web.default.serviceaccount.identity.cluster.local"
    assert ident.spiffe_id == "spiffe://cluster.local/ns/default/sa/web"
    assert names.parse(ident.name, "cluster.local") == ident
    # A ServiceAccount name may hold dots; a namespace may not.
    dotted = names.parse("api.v2.prod.serviceaccount.identity.cluster.local", "cluster.local")
    assert (dotted.service_account, dotted.namespace) == ("api.v2", "prod")


def test_from_tokenreview_username():
    ident = names.from_username("system:serviceaccount:prod:db", "example.org")
    assert ident.name == "db.prod.serviceaccount.identity.example.org"
    for bad in ("alice", "system:serviceaccount:prod", "system:node:n1", "system:serviceaccount:Prod:db"):
        with pytest.raises(ValueError):
            names.from_username(bad, "example.org")


@pytest.mark.parametrize("name", [
    "web.default.serviceaccount.identity.other.domain",
    "default.serviceaccount.identity.cluster.local",
    "web.default.svc.cluster.local",
    "WEB.default.serviceaccount.identity.cluster.local",
])
def test_parse_refuses(name):
    with pytest.raises(ValueError):
        names.parse(name, "cluster.local")

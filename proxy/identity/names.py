"""Identity names: ``<sa>.<ns>.serviceaccount.identity.<trust-domain>`` and
the matching SPIFFE ID ``spiffe://<trust-domain>/ns/<ns>/sa/<sa>``.

A namespace is a DNS label (no dots) while a ServiceAccount name may be a DNS
subdomain, so a name is split from the right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True, slots=True)
class Identity:
    service_account: str
    namespace: str
    trust_domain: str

    @property
    def name(self) -> str:
        return f"{self.service_account}.{self.namespace}.serviceaccount.identity.{self.trust_domain}"

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


def make(service_account: str, namespace: str, trust_domain: str) -> Identity:
    """Validated Identity; raises ValueError."""
    if not _SUBDOMAIN.match(service_account) or ".." in service_account:
        raise ValueError(f"bad service account name {service_account!r}")
    if not _LABEL.match(namespace):
        raise ValueError(f"bad namespace {namespace!r}")
    check_trust_domain(trust_domain)
    return Identity(service_account, namespace, trust_domain)


def check_trust_domain(trust_domain: str) -> str:
    if not _SUBDOMAIN.match(trust_domain) or ".." in trust_domain:
        raise ValueError(f"bad trust domain {trust_domain!r}")
    return trust_domain


def parse(name: str, trust_domain: str) -> Identity:
    """``web.default.serviceaccount.identity.cluster.local`` -> Identity; raises ValueError."""
    suffix = f".serviceaccount.identity.{trust_domain}"
    if not name.endswith(suffix):
        raise ValueError(f"{name!r} is not an identity in trust domain {trust_domain!r} (*{suffix})")
    sa, dot, ns = name[: -len(suffix)].rpartition(".")
    if not dot:
        raise ValueError(f"{name!r} lacks <serviceaccount>.<namespace>")
    return make(sa, ns, trust_domain)


def from_username(username: str, trust_domain: str) -> Identity:
    """``system:serviceaccount:<ns>:<sa>`` (a TokenReview username) -> Identity; raises ValueError."""
    if not username.startswith(SA_PREFIX):
        raise ValueError(f"{username!r} is not a service account")
    ns, colon, sa = username[len(SA_PREFIX) :].partition(":")
    if not colon:
        raise ValueError(f"{username!r} is not a service account")
    return make(sa, ns, trust_domain)

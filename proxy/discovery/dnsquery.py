"""One round of DNS resolution for a discovery name: A+AAAA for ``host:port``, SRV for ``_svc._proto.host``.

Returns endpoints and the TTL to wait before asking again, or raises
``NoAddresses`` (the name does not resolve: NXDOMAIN or no records) or
``Unavailable`` (timeouts, SERVFAIL, refused: the DNS service is down).
"""

from __future__ import annotations

import asyncio

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from proxy.discovery.model import Endpoint


class NoAddresses(Exception):
    """The name has no addresses; ``ttl`` is the negative-caching time from the SOA, if any."""

    def __init__(self, why: str, ttl: float | None = None) -> None:
        super().__init__(why)
        self.ttl = ttl


class Unavailable(Exception):
    """The DNS servers did not give a usable answer (timeout, SERVFAIL, REFUSED)."""


def valid_name(host: str) -> bool:
    try:
        dns.name.from_text(host)
    except dns.exception.DNSException:
        return False
    return bool(host)


async def resolve_addresses(resolver: dns.asyncresolver.Resolver, host: str, port: int,
                            weight: int = 1) -> tuple[list[Endpoint], float]:
    """A and AAAA of ``host``, each address at ``port``; TTL = the smaller record TTL."""
    results = await asyncio.gather(_query(resolver, host, "A"), _query(resolver, host, "AAAA"),
                                   return_exceptions=True)
    endpoints: list[Endpoint] = []
    ttls: list[float] = []
    negative: list[NoAddresses] = []
    failure: BaseException | None = None
    for result in results:
        if isinstance(result, NoAddresses):
            negative.append(result)
        elif isinstance(result, Unavailable):
            failure = result
        elif isinstance(result, BaseException):
            raise result
        else:
            ttls.append(result.ttl)
            endpoints.extend(Endpoint((rdata.address, port), weight=weight) for rdata in result)
    if endpoints:  # one family failing does not hide the other's addresses
        return endpoints, float(min(ttls))
    if failure is not None:
        raise failure
    ttl = min((n.ttl for n in negative if n.ttl is not None), default=None)
    raise NoAddresses(str(negative[0]), ttl)


async def resolve_srv(resolver: dns.asyncresolver.Resolver, host: str) -> tuple[list[Endpoint], float]:
    """SRV records of ``host`` (lowest priority only, as RFC 2782 prescribes), targets resolved.

    The SRV weight becomes the endpoint weight (a weight of 0 counts as 1: the
    balancer's weights are positive). TTL = the smallest of all records read.
    """
    rrset = await _query(resolver, host, "SRV")
    records = [r for r in rrset if r.target != dns.name.root]
    if not records:
        raise NoAddresses(f"{host}: SRV says the service is not available here")
    best = min(r.priority for r in records)
    records = [r for r in records if r.priority == best]
    results = await asyncio.gather(
        *(resolve_addresses(resolver, r.target.to_text(), r.port, max(r.weight, 1)) for r in records),
        return_exceptions=True)
    endpoints: list[Endpoint] = []
    ttls = [float(rrset.ttl)]
    for result in results:
        if isinstance(result, NoAddresses):
            continue  # a target without addresses is skipped, not fatal
        if isinstance(result, BaseException):
            raise result
        endpoints.extend(result[0])
        ttls.append(result[1])
    if not endpoints:
        raise NoAddresses(f"{host}: no SRV target has an address")
    return endpoints, min(ttls)


async def _query(resolver: dns.asyncresolver.Resolver, host: str, rdtype: str):
    try:
        answer = await resolver.resolve(host, rdtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN as err:
        responses = list(err.responses().values()) if hasattr(err, "responses") else []
        raise NoAddresses(f"{host}: NXDOMAIN", _negative_ttl(responses[0] if responses else None)) from None
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as err:
        raise Unavailable(f"{host} {rdtype}: {err}") from None
    except dns.exception.DNSException as err:  # YXDOMAIN, malformed answers
        raise Unavailable(f"{host} {rdtype}: {err}") from None
    if answer.rrset is None:
        raise NoAddresses(f"{host}: no {rdtype} records", _negative_ttl(answer.response))
    return answer.rrset


def _negative_ttl(response) -> float | None:
    """RFC 2308: a negative answer is cached for min(SOA TTL, SOA MINIMUM)."""
    if response is None:
        return None
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return float(min(rrset.ttl, rrset[0].minimum))
    return None

"""What discovery produces: endpoints, a service's snapshot, and the difference between two snapshots.

Every value is frozen and hashable, so sources can compare snapshots cheaply
and the outbound path can key pools and balancers by them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

PROTOCOLS = ("http1", "h2", "opaque")

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One backend of a service.

    ``address`` is where the workload listens (an IP literal, normalized, and a
    port). When ``proxy`` is set the endpoint is meshed: connect there (the
    peer's inbound proxy) with mTLS and expect ``identity``. ``labels`` is a
    sorted tuple of ``(key, value)`` pairs (hashable, unlike a dict); read it
    with ``label()`` or ``dict(labels)``.
    """

    address: Address
    proxy: Address | None = None
    identity: str | None = None
    weight: int = 1
    protocol: str | None = None  # "http1" | "h2" | "opaque" | None (detect)
    labels: tuple[tuple[str, str], ...] = ()

    def label(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.labels:
            if k == key:
                return v
        return default


def make_labels(mapping: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(mapping.items())) if mapping else ()


@dataclass(frozen=True, slots=True)
class AccrualSettings:
    """A service's failure-accrual override; None in a field = the proxy's default."""

    consecutive_failures: int | None = None
    min_backoff: float | None = None
    max_backoff: float | None = None


DEFAULT_ACCRUAL = AccrualSettings()


@dataclass(frozen=True, slots=True)
class ServiceSnapshot:
    """Everything known about a logical name at one moment; endpoints sorted by address."""

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    accrual: AccrualSettings = field(default=DEFAULT_ACCRUAL)


def snapshot(name: str, endpoints, accrual: AccrualSettings = DEFAULT_ACCRUAL) -> ServiceSnapshot:
    """A snapshot with endpoints de-duplicated by address (last wins) and sorted."""
    by_address = {e.address: e for e in endpoints}
    return ServiceSnapshot(name, tuple(by_address[a] for a in sorted(by_address, key=_address_key)), accrual)


def _address_key(address: Address) -> tuple[int, int, int]:
    ip = ipaddress.ip_address(address[0])
    return (ip.version, int(ip), address[1])


@dataclass(frozen=True, slots=True)
class Update:
    """A new snapshot and how its endpoints differ from the previous one, by address.

    ``changed`` holds endpoints whose address was there before but whose other
    fields (proxy, identity, weight, protocol, labels) differ; they carry the
    new values.
    """

    snapshot: ServiceSnapshot
    added: tuple[Endpoint, ...] = ()
    removed: tuple[Endpoint, ...] = ()
    changed: tuple[Endpoint, ...] = ()


def diff(old: ServiceSnapshot, new: ServiceSnapshot) -> Update | None:
    """The update from ``old`` to ``new``, or None when nothing differs."""
    if old.endpoints == new.endpoints and old.accrual == new.accrual:
        return None
    before = {e.address: e for e in old.endpoints}
    after = {e.address: e for e in new.endpoints}
    added = tuple(e for a, e in after.items() if a not in before)
    removed = tuple(e for a, e in before.items() if a not in after)
    changed = tuple(e for a, e in after.items() if a in before and before[a] != e)
    return Update(new, added, removed, changed)


def parse_ip_port(text: object) -> Address:
    """``10.0.0.1:80`` or ``[fd00::1]:80`` -> (normalized ip, port); raises ValueError."""
    if not isinstance(text, str):
        raise ValueError("expected ip:port")
    text = text.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError("expected [ipv6]:port")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError("expected ip:port (IPv6 as [addr]:port)")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("expected ip:port, the host must be an IP address") from None
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError("expected ip:port, the port must be 1-65535")
    return (str(ip), int(port_text))


def normalize_ip(text: str) -> str | None:
    """The canonical form of an IP literal, or None when ``text`` is not one."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None

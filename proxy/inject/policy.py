"""Whether and how to inject one pod, from annotations at three levels.

The most specific level that sets an annotation wins: the pod template, then
the workload's own metadata, then its namespace (like ``linkerd.io/inject``).
So a pod-level ``disabled`` beats a namespace-level ``enabled``. ``--force``
only stands in for an ``enabled`` that no level gives; an explicit
``disabled`` still wins over it. The identity settings work the same way over
the command's flags: an annotation at any level beats the flag.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from proxy.config import ACCESS_LOG_FORMATS, DEFAULT_POLICIES, parse_collector, parse_port_set, parse_service_url
from proxy.identity.names import check_trust_domain
from proxy.inject import names

LEVELS = ("pod template", "workload", "namespace")


class AnnotationError(ValueError):
    """An annotation has a value injection cannot use."""


@dataclass(frozen=True, slots=True)
class Decision:
    inject: bool
    why: str


@dataclass(frozen=True, slots=True)
class IdentityDefaults:
    """The command's flags for identity, before annotations are looked at."""

    trust_domain: str = names.DEFAULT_TRUST_DOMAIN
    service: str = names.DEFAULT_IDENTITY_SERVICE
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class PodIdentity:
    """Where the proxy gets its certificate (the name itself comes from the pod at run time)."""

    trust_domain: str
    service: str


@dataclass(frozen=True, slots=True)
class PodSettings:
    """What goes into the two containers (strings, as they land in the manifest)."""

    proxy_image: str
    init_image: str
    skip_inbound_ports: str | None
    skip_outbound_ports: str | None
    skip_subnets: str | None
    opaque_ports: str | None
    identity: PodIdentity | None = None  # None: no identity, the proxy's hops stay plaintext
    default_policy: str | None = None
    probe_paths: str | None = None
    access_log: str | None = None  # apache or json; None: the proxy's default (off)
    trace_collector: str | None = None
    # The workload that owns the pod (kind in lower case, name), for the metrics' owner label.
    workload_kind: str | None = None
    workload_name: str | None = None


class Annotations:
    """The annotations of one pod, looked up most specific level first."""

    def __init__(self, pod: Mapping[str, str], workload: Mapping[str, str], namespace: Mapping[str, str]) -> None:
        self._levels = tuple(zip(LEVELS, (pod, workload, namespace)))

    def get(self, key: str) -> tuple[str, str] | None:
        """``(value, level)`` of the most specific level that sets ``key``."""
        for level, values in self._levels:
            if key in values and values[key] is not None:
                return str(values[key]).strip(), level
        return None

    def decide(self, force: bool) -> Decision:
        found = self.get(names.INJECT)
        if found is None:
            if force:
                return Decision(True, "--force")
            return Decision(False, f"no {names.INJECT}: {names.ENABLED} on the pod template, workload or namespace "
                                   "(use --force)")
        value, level = found
        if value == names.ENABLED:
            return Decision(True, f"{names.INJECT}: {value} on the {level}")
        if value == names.DISABLED:
            return Decision(False, f"{names.INJECT}: {value} on the {level}")
        raise AnnotationError(f"{names.INJECT}: {value!r} on the {level}: expected {names.ENABLED} or {names.DISABLED}")

    def settings(self, proxy_image: str, init_image: str, identity: IdentityDefaults = IdentityDefaults(),
                 probe_paths: str | None = None) -> PodSettings:
        return PodSettings(
            proxy_image=self._text(names.PROXY_IMAGE) or proxy_image,
            init_image=self._text(names.INIT_IMAGE) or init_image,
            skip_inbound_ports=self._ports(names.SKIP_INBOUND_PORTS),
            skip_outbound_ports=self._ports(names.SKIP_OUTBOUND_PORTS),
            skip_subnets=self._subnets(names.SKIP_SUBNETS),
            opaque_ports=self._ports(names.OPAQUE_PORTS),
            identity=self._identity(identity),
            default_policy=self._choice(names.DEFAULT_INBOUND_POLICY, DEFAULT_POLICIES),
            probe_paths=probe_paths,
            access_log=self._choice(names.ACCESS_LOG, ACCESS_LOG_FORMATS),
            trace_collector=(self._checked(names.TRACE_COLLECTOR, parse_collector)
                             or self._checked(names.LINKERD_TRACE_COLLECTOR, parse_collector)),
        )

    def _identity(self, defaults: IdentityDefaults) -> PodIdentity | None:
        if self._flag(names.DISABLE_IDENTITY, defaults.disabled):
            return None
        return PodIdentity(
            trust_domain=self._checked(names.TRUST_DOMAIN, check_trust_domain) or defaults.trust_domain,
            service=self._checked(names.IDENTITY_SERVICE, parse_service_url) or defaults.service,
        )

    def _flag(self, key: str, default: bool) -> bool:
        found = self.get(key)
        if found is None or not found[0]:
            return default
        value, level = found
        if value.lower() not in ("true", "false"):
            raise AnnotationError(f"{key}: {value!r} on the {level}: expected \"true\" or \"false\"")
        return value.lower() == "true"

    def _choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        found = self.get(key)
        if found is None or not found[0]:
            return None
        value, level = found
        if value not in choices:
            raise AnnotationError(f"{key}: {value!r} on the {level}: expected one of {', '.join(choices)}")
        return value

    def _checked(self, key: str, check: Callable[[str], object]) -> str | None:
        found = self.get(key)
        if found is None or not found[0]:
            return None
        value, level = found
        try:
            check(value)
        except ValueError as err:
            raise AnnotationError(f"{key}: {value!r} on the {level}: {err}") from None
        return value

    def _text(self, key: str) -> str | None:
        found = self.get(key)
        return found[0] if found and found[0] else None

    def _ports(self, key: str) -> str | None:
        """A comma list of ports and ``a-b`` ranges, normalised (no spaces)."""
        found = self.get(key)
        if found is None or not found[0]:
            return None
        value, level = found
        try:
            parse_port_set(value)
        except ValueError as err:
            reason = err or "expected ports and ranges like 22,8000-8100"
            raise AnnotationError(f"{key}: {value!r} on the {level}: {reason}") from None
        return ",".join(part for part in value.replace(" ", "").split(",") if part)

    def _subnets(self, key: str) -> str | None:
        found = self.get(key)
        if found is None or not found[0]:
            return None
        value, level = found
        parts = [part for part in value.replace(" ", "").split(",") if part]
        for part in parts:
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError as err:
                raise AnnotationError(f"{key}: {value!r} on the {level}: {err}") from None
        return ",".join(parts)

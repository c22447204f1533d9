"""Whether and how to inject one pod, from annotations at three levels.

The most specific level that sets an annotation wins: the pod template, then
the workload's own metadata, then its namespace (like ``linkerd.io/inject``).
So a pod-level ``disabled`` beats a namespace-level ``enabled``. Each
annotation is read under meshproxy's name and Linkerd's (``names.ALIASES``);
at one level meshproxy's wins. Whether a pod no level annotates is injected
is the caller's choice: ``meshproxy inject`` does (as ``linkerd inject``),
the webhook does not. The identity settings work the same way over the
command's flags: an annotation at any level beats the flag.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from proxy import config as cfg
from proxy.config import ACCESS_LOG_FORMATS, DEFAULT_POLICIES, parse_collector, parse_port_set, parse_service_url
from proxy.identity.names import check_trust_domain
from proxy.inject import names
from proxy.telemetry import loglevel

LEVELS = ("pod template", "workload", "namespace")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
# A Kubernetes resource.Quantity: 100m, 0.5, 64Mi, 1G, 1e3.
_QUANTITY = re.compile(r"[+]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?")


class AnnotationError(ValueError):
    """An annotation has a value injection cannot use."""


class Found(NamedTuple):
    value: str
    level: str  # one of LEVELS
    name: str  # the annotation as spelt where it was found (meshproxy's or Linkerd's)


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
    # More MESHPROXY_* settings for the proxy (log level and format, timeouts, tap).
    extra_env: tuple[tuple[str, str], ...] = ()
    # requests/limits of the proxy container, over the defaults.
    resources: tuple[tuple[str, str, str], ...] = ()  # (requests|limits, resource, quantity)
    await_proxy: bool = True  # the app starts once the proxy is ready (a startup probe)
    pull_policy: str | None = None
    # The workload that owns the pod (kind in lower case, name), for the metrics' owner label.
    workload_kind: str | None = None
    workload_name: str | None = None


class Annotations:
    """The annotations of one pod, looked up most specific level first."""

    def __init__(self, pod: Mapping[str, str], workload: Mapping[str, str], namespace: Mapping[str, str]) -> None:
        self._levels = tuple(zip(LEVELS, (pod, workload, namespace)))

    def get(self, key: str) -> Found | None:
        """The most specific level that sets ``key`` (under any of its names)."""
        for level, values in self._levels:
            for name in names.ALIASES.get(key, (key,)):
                if name in values and values[name] is not None:
                    return Found(str(values[name]).strip(), level, name)
        return None

    def ignored(self) -> list[str]:
        """Linkerd's config annotations meshproxy has no setting for (its images, ports, debug sidecar)."""
        return sorted({key for _, values in self._levels for key in values
                       if key.startswith(names.LINKERD_PREFIXES) and key not in names.LINKERD})

    def decide(self, unannotated: bool) -> Decision:
        """Inject or not; ``unannotated`` is the answer for a pod no level annotates."""
        found = self.get(names.INJECT)
        if found is None:
            if unannotated:
                return Decision(True, "not annotated")
            return Decision(False, f"no {names.INJECT} or linkerd.io/inject annotation on the pod or its namespace")
        value, level, name = found
        if value == names.ENABLED:
            return Decision(True, f"{name}: {value} on the {level}")
        if value == names.INGRESS:
            return Decision(True, f"{name}: {value} on the {level}; meshproxy has no ingress mode, so as for "
                                  f"{names.ENABLED} (l5d-dst-override is obeyed only for traffic not redirected)")
        if value == names.DISABLED:
            return Decision(False, f"{name}: {value} on the {level}")
        raise AnnotationError(f"{name}: {value!r} on the {level}: expected {names.ENABLED}, {names.DISABLED} "
                              f"or {names.INGRESS}")

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
            trace_collector=self._checked(names.TRACE_COLLECTOR, parse_collector),
            extra_env=self._extra_env(),
            resources=tuple((section, resource, value) for key, (section, resource) in names.RESOURCES.items()
                            if (value := self._checked(key, _quantity)) is not None),
            await_proxy=self._choice(names.PROXY_AWAIT, (names.ENABLED, names.DISABLED)) != names.DISABLED,
            pull_policy=self._choice(names.IMAGE_PULL_POLICY, PULL_POLICIES),
        )

    def _extra_env(self) -> tuple[tuple[str, str], ...]:
        env = []
        for key, setting, check in (
            (names.PROXY_LOG_LEVEL, cfg.LOG_LEVEL, loglevel.parse),
            (names.PROXY_LOG_FORMAT, cfg.LOG_FORMAT, _one_of(("plain", "json"))),
            (names.OUTBOUND_CONNECT_TIMEOUT, cfg.CONNECT_TIMEOUT, cfg.parse_duration),
            (names.SHUTDOWN_GRACE_PERIOD, cfg.DRAIN_TIMEOUT, cfg.parse_duration),
        ):
            value = self._checked(key, check)
            if value is not None:
                env.append((setting, value))
        if self._flag(names.DISABLE_TAP, False):
            env.append((cfg.TAP_DISABLED, "true"))
        return tuple(env)

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
        value, level, key = found
        if value.lower() not in ("true", "false"):
            raise AnnotationError(f"{key}: {value!r} on the {level}: expected \"true\" or \"false\"")
        return value.lower() == "true"

    def _choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        found = self.get(key)
        if found is None or not found[0]:
            return None
        value, level, key = found
        if value not in choices:
            raise AnnotationError(f"{key}: {value!r} on the {level}: expected one of {', '.join(choices)}")
        return value

    def _checked(self, key: str, check: Callable[[str], object]) -> str | None:
        found = self.get(key)
        if found is None or not found[0]:
            return None
        value, level, key = found
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
        value, level, key = found
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
        value, level, key = found
        parts = [part for part in value.replace(" ", "").split(",") if part]
        for part in parts:
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError as err:
                raise AnnotationError(f"{key}: {value!r} on the {level}: {err}") from None
        return ",".join(parts)


def _quantity(text: str) -> None:
    if not _QUANTITY.fullmatch(text):
        raise ValueError("expected a Kubernetes quantity like 100m, 0.5, 64Mi or 1G")


def _one_of(choices: tuple[str, ...]) -> Callable[[str], None]:
    def check(text: str) -> None:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")

    return check

"""Discovery's counters and gauges, rendered as Prometheus text when /metrics is scraped.

Plain integers bumped by the sources; nothing here runs per request. The
per-service gauge lists at most ``max_services`` names (alphabetically first)
so a cluster with thousands of services cannot blow up the scrape;
``discovery_services`` always gives the full count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.telemetry.metrics import label_set

MAX_SERVICES = 100



@dataclass(slots=True)
class DiscoveryMetrics:
    source: str = "none"  # set by build_resolver: file, dns or k8s
    reload_errors: int = 0  # file: an edit that failed to parse or validate
    source_errors: int = 0  # unreadable file, DNS timeout/SERVFAIL, API errors
    updates: int = 0  # endpoint-set updates published to watches
    up: int = 0  # 1 while the source is reachable and its last read succeeded
    max_services: int = MAX_SERVICES
    endpoints: dict[str, int] = field(default_factory=dict)  # service -> endpoint count

    def set_endpoints(self, service: str, count: int) -> None:
        self.endpoints[service] = count

    def drop_service(self, service: str) -> None:
        self.endpoints.pop(service, None)

    def render(self, out: list[str]) -> None:
        src = label_set((("source", self.source),))
        for name, kind, help_text, value in (
            ("discovery_reload_errors_total", "counter", "Endpoint file edits rejected as invalid.",
             self.reload_errors),
            ("discovery_source_errors_total", "counter", "Errors reading the discovery source.", self.source_errors),
            ("discovery_updates_total", "counter", "Endpoint-set updates published.", self.updates),
            ("discovery_source_up", "gauge", "1 when the discovery source is reachable.", self.up),
            ("discovery_services", "gauge", "Services with a watched endpoint set.", len(self.endpoints)),
        ):
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.append(f"{name}{src} {value}")
        out.append("# HELP discovery_endpoints Endpoints currently known for a service.")
        out.append("# TYPE discovery_endpoints gauge")
        for service in sorted(self.endpoints)[: self.max_services]:
            out.append(f"discovery_endpoints{label_set((('source', self.source), ('service', service)))} "
                       f"{self.endpoints[service]}")

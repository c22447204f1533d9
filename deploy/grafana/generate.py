"""Writes the Grafana dashboards of deploy/grafana/dashboards/ (run: python deploy/grafana/generate.py).

The JSON files are what users import; this script is their source, so a panel's layout, units and
template variables are written once. Every query uses the proxy's own metric names and labels (see
the README's Metrics section) plus the workload labels (namespace, deployment, pod) that
deploy/prometheus/prometheus.yml adds while scraping; tests/integration/test_grafana.py runs each
one against a real Prometheus scraping real proxies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
RATE = "$__rate_interval"

# Selectors: the workload a dashboard looks at, as the caller (outbound) or the callee (inbound).
NS = 'namespace=~"$namespace"'
WL = 'namespace=~"$namespace",deployment=~"$deployment"'
IN = f'direction="inbound",{WL}'
OUT_ = f'direction="outbound",{WL}'


def _quantiles(metric: str, selector: str, by: str, legend: str) -> list[tuple[str, str]]:
    grouping = f"{by}, le" if by else "le"
    return [(f"histogram_quantile({q}, sum by ({grouping}) (rate({metric}{{{selector}}}[{RATE}])))",
             f"p{int(q * 100)} {legend}".strip()) for q in (0.5, 0.95, 0.99)]


def success(selector: str, by: str) -> str:
    """Linkerd's success rate: successful responses over all responses, by ``by``."""
    return (f'sum by ({by}) (rate(response_total{{{selector},classification="success"}}[{RATE}]))'
            f" / sum by ({by}) (rate(response_total{{{selector}}}[{RATE}]))")


def rps(selector: str, by: str, metric: str = "request_total") -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RATE}]))"


class Board:
    """One dashboard: panels placed left to right, top to bottom, on Grafana's 24-column grid."""

    def __init__(self, uid: str, title: str, description: str, variables: list[str]) -> None:
        self.uid, self.title, self.description, self.variables = uid, title, description, variables
        self.panels: list[dict] = []
        self.x = self.y = self.row_height = 0

    def _place(self, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        grid = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return grid

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        self.panels.append({"id": len(self.panels) + 1, "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _panel(self, kind: str, title: str, description: str, queries: list[tuple[str, str]], unit: str,
               w: int, h: int, **extra) -> dict:
        targets = []
        for i, (expr, legend) in enumerate(queries):
            target = {"datasource": DATASOURCE, "refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                      "range": kind != "table", "instant": kind == "table"}
            if kind == "table":
                target["format"] = "table"
            targets.append(target)
        defaults: dict = {"unit": unit}
        if unit == "percentunit":
            defaults.update(min=0, max=1)
        panel = {"id": len(self.panels) + 1, "type": kind, "title": title, "description": description,
                 "datasource": DATASOURCE, "gridPos": self._place(w, h), "targets": targets,
                 "fieldConfig": {"defaults": defaults, "overrides": []}, **extra}
        self.panels.append(panel)
        return panel

    def graph(self, title: str, description: str, queries: list[tuple[str, str]], unit: str = "short",
              w: int = 8, h: int = 8) -> None:
        self._panel("timeseries", title, description, queries, unit, w, h,
                    options={"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
                             "tooltip": {"mode": "multi", "sort": "desc"}})

    def stat(self, title: str, description: str, expr: str, unit: str = "short", w: int = 4, h: int = 4,
             thresholds: list[tuple[str, float | None]] | None = None) -> None:
        panel = self._panel("stat", title, description, [(expr, "")], unit, w, h,
                            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                                     "colorMode": "value", "graphMode": "area", "textMode": "auto"})
        if thresholds:
            panel["fieldConfig"]["defaults"]["thresholds"] = {
                "mode": "absolute", "steps": [{"color": color, "value": value} for color, value in thresholds]}

    def table(self, title: str, description: str, queries: list[tuple[str, str]], w: int = 24, h: int = 8) -> None:
        self._panel("table", title, description, queries, "short", w, h,
                    transformations=[{"id": "merge", "options": {}},
                                     {"id": "organize", "options": {"excludeByName": {"Time": True}}}])

    def json(self) -> dict:
        templating = [{"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                       "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []}]
        queries = {
            "namespace": "label_values(request_total, namespace)",
            "deployment": 'label_values(request_total{namespace=~"$namespace"}, deployment)',
            "authority": 'label_values(request_total{namespace=~"$namespace",deployment=~"$deployment"}, authority)',
        }
        for name in self.variables:
            templating.append({
                "name": name, "label": name.capitalize(), "type": "query", "datasource": DATASOURCE,
                "definition": queries[name], "query": {"query": queries[name], "refId": f"{name}-values"},
                "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0,
                "regex": ""})
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["meshproxy", "service-mesh"], "editable": True, "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": "30s", "timezone": "",
            "time": {"from": "now-1h", "to": "now"}, "timepicker": {},
            "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                      "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                      "name": "Annotations & Alerts", "type": "dashboard"}]},
            "links": [{"title": "meshproxy", "type": "dashboards", "tags": ["meshproxy"], "asDropdown": True,
                       "includeVars": True, "keepTime": True}],
            "templating": {"list": templating}, "panels": self.panels,
        }


SR_STEPS = [("red", None), ("orange", 0.95), ("green", 0.99)]


def top_line() -> Board:
    b = Board("meshproxy-top-line", "meshproxy / Top line",
              "Mesh-wide golden metrics: success rate, requests per second and latency of every meshed "
              "workload, as its own proxy serves them (inbound).", ["namespace"])
    sel = f'direction="inbound",{NS}'
    b.stat("Success rate", "Successful inbound responses over all inbound responses, mesh-wide.",
           success(sel, "direction"), "percentunit", thresholds=SR_STEPS)
    b.stat("Requests per second", "Inbound requests per second, mesh-wide.", rps(sel, "direction"), "reqps")
    for q, legend in _quantiles("response_latency_ms_bucket", sel, "", ""):
        b.stat(f"Latency {legend}", "Inbound request head to response head, from the proxies' histograms.",
               q, "ms")
    b.stat("Meshed pods", "Pods whose proxy Prometheus scrapes.",
           f"count(count by (namespace, pod) (process_start_time_seconds{{{NS}}}))", "short", w=4)
    b.stat("Mutual TLS", "Share of inbound requests that arrived over mutual TLS.",
           f'sum(rate(request_total{{{sel},tls="true"}}[{RATE}])) / sum(rate(request_total{{{sel}}}[{RATE}]))',
           "percentunit", thresholds=SR_STEPS)
    b.row("By deployment")
    b.graph("Success rate by deployment", "Inbound.",
            [(success(sel, "namespace, deployment"), "{{namespace}}/{{deployment}}")], "percentunit")
    b.graph("Requests per second by deployment", "Inbound.",
            [(rps(sel, "namespace, deployment"), "{{namespace}}/{{deployment}}")], "reqps")
    b.graph("Latency p99 by deployment", "Inbound.",
            [(_quantiles("response_latency_ms_bucket", sel, "namespace, deployment", "")[2][0],
              "{{namespace}}/{{deployment}}")], "ms")
    b.row("Mesh-wide")
    b.graph("Responses by class", "Inbound responses per second, by Linkerd's classification.",
            [(rps(sel, "classification", "response_total"), "{{classification}}")], "reqps")
    b.graph("Latency", "Inbound latency quantiles, mesh-wide.",
            _quantiles("response_latency_ms_bucket", sel, "", ""), "ms")
    b.graph("Responses by status", "Inbound responses per second, by HTTP status.",
            [(rps(sel, "status_code", "response_total"), "{{status_code}}")], "reqps")
    return b


def deployment() -> Board:
    b = Board("meshproxy-deployment", "meshproxy / Deployment",
              "One workload: what it serves (inbound, per caller), what it calls (outbound, per service and "
              "deployment) and its TCP connections.", ["namespace", "deployment"])
    b.row("Served (inbound)")
    b.stat("Success rate", "Inbound.", success(IN, "direction"), "percentunit", thresholds=SR_STEPS)
    b.stat("Requests per second", "Inbound.", rps(IN, "direction"), "reqps")
    for q, legend in _quantiles("response_latency_ms_bucket", IN, "", ""):
        b.stat(f"Latency {legend}", "Inbound.", q, "ms")
    b.stat("TCP connections", "Open inbound connections from callers.",
           f'sum(tcp_open_connections{{{IN},peer="src"}})', "short")
    b.graph("Success rate by caller", "Inbound, by the identity the caller proved.",
            [(success(IN, "client_id"), "{{client_id}}")], "percentunit")
    b.graph("Requests per second by caller", "Inbound, by caller identity and TLS.",
            [(rps(IN, "client_id, tls"), "{{client_id}} tls={{tls}}")], "reqps")
    b.graph("Latency", "Inbound.", _quantiles("response_latency_ms_bucket", IN, "", ""), "ms")
    b.row("Calls (outbound)")
    b.graph("Success rate by destination", "Outbound, by the destination deployment discovery names.",
            [(success(OUT_, "dst_namespace, dst_deployment"), "{{dst_namespace}}/{{dst_deployment}}")],
            "percentunit")
    b.graph("Requests per second by destination", "Outbound.",
            [(rps(OUT_, "dst_namespace, dst_deployment"), "{{dst_namespace}}/{{dst_deployment}}")], "reqps")
    b.graph("Latency p99 by destination", "Outbound.",
            [(_quantiles("response_latency_ms_bucket", OUT_, "dst_namespace, dst_deployment", "")[2][0],
              "{{dst_namespace}}/{{dst_deployment}}")], "ms")
    b.row("Services (every caller's view)")
    dst = 'direction="outbound",dst_namespace=~"$namespace"'
    b.graph("Success rate by service", "Outbound responses from any meshed caller, by destination service.",
            [(success(dst, "dst_namespace, dst_service"), "{{dst_namespace}}/{{dst_service}}")], "percentunit")
    b.graph("Requests per second by service", "Outbound, by destination service.",
            [(rps(dst, "dst_namespace, dst_service"), "{{dst_namespace}}/{{dst_service}}")], "reqps")
    b.graph("Latency p99 by service", "Outbound, by destination service.",
            [(_quantiles("response_latency_ms_bucket", dst, "dst_namespace, dst_service", "")[2][0],
              "{{dst_namespace}}/{{dst_service}}")], "ms")
    b.row("TCP")
    b.graph("Open connections", "By direction and peer (src: accepted, dst: opened by the proxy).",
            [(f"sum by (direction, peer) (tcp_open_connections{{{WL}}})", "{{direction}} {{peer}}")])
    b.graph("Bytes read per second", "By direction and peer.",
            [(rps(WL, "direction, peer", "tcp_read_bytes_total"), "{{direction}} {{peer}}")], "Bps")
    b.graph("Bytes written per second", "By direction and peer.",
            [(rps(WL, "direction, peer", "tcp_write_bytes_total"), "{{direction}} {{peer}}")], "Bps")
    return b


def routes() -> Board:
    b = Board("meshproxy-routes", "meshproxy / Routes",
              "Per route: the outbound policy's routes (ServiceProfile / HTTPRoute, [DEFAULT] otherwise) as "
              "the caller sees them, with retries and budgets, and the inbound routes of each server.",
              ["namespace", "deployment"])
    b.row("Outbound routes (route_* families)")
    rsel = f'direction="outbound",{WL}'
    b.graph("Effective success rate", "Per route: responses the caller got, after retries.",
            [(f'sum by (dst, rt_route) (rate(route_response_total{{{rsel},classification="success"}}[{RATE}]))'
              f" / sum by (dst, rt_route) (rate(route_response_total{{{rsel}}}[{RATE}]))", "{{dst}} {{rt_route}}")],
            "percentunit")
    b.graph("Effective and actual requests per second",
            "Effective: requests; actual: requests plus the retries sent for them.",
            [(rps(rsel, "dst, rt_route", "route_request_total"), "effective {{dst}} {{rt_route}}"),
             (rps(rsel, "dst, rt_route", "route_request_total") + " + "
              + rps(rsel, "dst, rt_route", "route_retry_total"), "actual {{dst}} {{rt_route}}")], "reqps")
    b.graph("Latency p99", "Per route, retries included.",
            [(_quantiles("route_response_latency_ms_bucket", rsel, "dst, rt_route", "")[2][0],
              "{{dst}} {{rt_route}}")], "ms")
    b.row("Outbound routes (outbound_http_route_* families)")
    b.graph("Responses by status", "Per parent service and route, by HTTP status and how the stream failed "
            "(the proxy's own answers have only the error).",
            [(rps(WL, "parent_namespace, parent_name, route_name, http_status, error",
                  "outbound_http_route_request_statuses_total"),
              "{{parent_name}} {{route_name}} {{http_status}} {{error}}")], "reqps")
    b.graph("Request duration p50 / p99", "Per parent service and route.",
            [(f"histogram_quantile({q}, sum by (parent_namespace, parent_name, route_name, le) "
              f"(rate(outbound_http_route_request_duration_seconds_bucket{{{WL}}}[{RATE}])))",
              f"p{int(q * 100)} {{{{parent_name}}}} {{{{route_name}}}}") for q in (0.5, 0.99)], "s")
    b.graph("Retries", "Retries sent and the ones that succeeded; overflow: wanted but refused by the budget; "
            "limit: wanted but past the route's limit.",
            [(rps(WL, "parent_name, route_name", f"outbound_http_route_retry_{kind}_total"),
              f"{kind} {{{{parent_name}}}} {{{{route_name}}}}")
             for kind in ("requests", "successes", "overflow", "limit_exceeded")], "reqps")
    b.graph("Retry budget available", "Retries each service's budget allows now.",
            [(f"sum by (dst) (route_retry_budget_available{{{rsel}}})", "{{dst}}")])
    b.row("Inbound routes")
    b.graph("Success rate by route", "Inbound, by the server and route that matched.",
            [(success(IN, "srv_name, route_name"), "{{srv_name}} {{route_name}}")], "percentunit")
    b.graph("Requests per second by route", "Inbound.",
            [(rps(IN, "srv_name, route_name"), "{{srv_name}} {{route_name}}")], "reqps")
    return b


def authority() -> Board:
    b = Board("meshproxy-authority", "meshproxy / Authority",
              "Per authority: outbound, the service (or host:port) a request went to; inbound, its Host.",
              ["namespace", "deployment", "authority"])
    sel = f'{WL},authority=~"$authority"'
    b.graph("Success rate", "By authority and direction.",
            [(success(sel, "direction, authority"), "{{direction}} {{authority}}")], "percentunit")
    b.graph("Requests per second", "By authority and direction.",
            [(rps(sel, "direction, authority"), "{{direction}} {{authority}}")], "reqps")
    b.graph("Latency p99", "By authority and direction.",
            [(_quantiles("response_latency_ms_bucket", sel, "direction, authority", "")[2][0],
              "{{direction}} {{authority}}")], "ms")
    b.graph("Responses by status", "By authority and HTTP status.",
            [(rps(sel, "authority, status_code", "response_total"), "{{authority}} {{status_code}}")], "reqps", w=12)
    b.graph("Proxy errors", "Responses the proxy made itself (no ready endpoints, load shed, timeouts, I/O), "
            "by Linkerd's error.",
            [(rps(f'{sel},error!=""', "authority, error, errno", "response_total"),
              "{{authority}} {{error}} {{errno}}")], "reqps", w=12)
    return b


def edges() -> Board:
    b = Board("meshproxy-edges", "meshproxy / Edges",
              "Caller to callee: each edge's traffic and whether it is mutual TLS, with both identities.",
              ["namespace", "deployment"])
    by = "deployment, dst_namespace, dst_deployment, tls, server_id"
    b.table("Edges", "Outbound edges over the dashboard's range: requests per second, success, identities.",
            [(f"sum by ({by}) (rate(request_total{{{OUT_}}}[$__range]))", "rps"),
             (f'sum by ({by}) (rate(response_total{{{OUT_},classification="success"}}[$__range]))'
              f" / sum by ({by}) (rate(response_total{{{OUT_}}}[$__range]))", "success")])
    legend = "{{deployment}} -> {{dst_namespace}}/{{dst_deployment}} tls={{tls}}"
    b.graph("Requests per second by edge", "Outbound, caller to callee.", [(rps(OUT_, by), legend)], "reqps")
    b.graph("Success rate by edge", "Outbound.", [(success(OUT_, by), legend)], "percentunit")
    b.graph("Latency p99 by edge", "Outbound.",
            [(_quantiles("response_latency_ms_bucket", OUT_, by, "")[2][0], legend)], "ms")
    b.graph("Inbound edges", "Requests per second this workload serves, by caller identity and TLS.",
            [(rps(IN, "deployment, client_id, tls"), "{{client_id}} -> {{deployment}} tls={{tls}}")], "reqps",
            w=12)
    b.graph("Edges without mutual TLS", "Outbound requests not over mutual TLS, by Linkerd's reason.",
            [(rps(f'{OUT_},tls!="true"', "deployment, dst_deployment, authority, no_tls_reason"),
              "{{deployment}} -> {{authority}} {{no_tls_reason}}")], "reqps", w=12)
    return b


def proxy_resources() -> Board:
    b = Board("meshproxy-proxy", "meshproxy / Proxy resources",
              "What each proxy costs: CPU, memory, file descriptors, connections, and its balancers.",
              ["namespace", "deployment"])
    b.graph("CPU", "CPU seconds per second (cores) per proxy.",
            [(f"sum by (namespace, pod) (rate(process_cpu_seconds_total{{{WL}}}[{RATE}]))", "{{namespace}}/{{pod}}")])
    b.graph("Resident memory", "Per proxy.",
            [(f"sum by (namespace, pod) (process_resident_memory_bytes{{{WL}}})", "{{namespace}}/{{pod}}")], "bytes")
    b.graph("Open file descriptors", "Per proxy.",
            [(f"sum by (namespace, pod) (process_open_fds{{{WL}}})", "{{namespace}}/{{pod}}")])
    b.graph("Open connections", "Per proxy, by direction and peer.",
            [(f"sum by (pod, direction, peer) (tcp_open_connections{{{WL}}})", "{{pod}} {{direction}} {{peer}}")])
    b.graph("Connections opened per second", "Per proxy, by direction and peer.",
            [(rps(WL, "pod, direction, peer", "tcp_open_total"), "{{pod}} {{direction}} {{peer}}")], "cps")
    b.graph("Connections closed by failure", "Per second, by the errno that ended them.",
            [(rps(f'{WL},classification="failure"', "pod, direction, errno", "tcp_close_total"),
              "{{pod}} {{direction}} {{errno}}")], "cps")
    b.graph("Uptime", "Since the proxy process started.",
            [(f"time() - max by (namespace, pod) (process_start_time_seconds{{{WL}}})", "{{namespace}}/{{pod}}")], "s")
    b.graph("Balancer endpoints", "Outbound, per parent service: ready and pending (ejected or probed).",
            [(f"sum by (parent_name, endpoint_state) (outbound_http_balancer_endpoints{{{WL}}})",
              "{{parent_name}} {{endpoint_state}}")])
    b.graph("Balancer queue", "Requests waiting for an endpoint, per parent service.",
            [(f"sum by (parent_name) (outbound_http_balancer_queue_length{{{WL}}})", "{{parent_name}}")])
    return b


def identity() -> Board:
    b = Board("meshproxy-identity", "meshproxy / TLS and identity",
              "Mesh identity and mutual TLS: certificate lifetimes, handshakes, identities of peers, and what "
              "authorization policy refuses.", ["namespace", "deployment"])
    b.stat("Soonest certificate expiry", "Time left on the proxy certificate closest to expiring.",
           f"min(identity_cert_expiration_timestamp_seconds{{{WL}}}) - time()", "s", w=6,
           thresholds=[("red", None), ("orange", 3600), ("green", 6 * 3600)])
    b.stat("Inbound requests over mutual TLS", "Share of inbound requests.",
           f'sum(rate(request_total{{{IN},tls="true"}}[{RATE}])) / sum(rate(request_total{{{IN}}}[{RATE}]))',
           "percentunit", w=6, thresholds=SR_STEPS)
    b.stat("Outbound requests over mutual TLS", "Share of outbound requests.",
           f'sum(rate(request_total{{{OUT_},tls="true"}}[{RATE}])) / sum(rate(request_total{{{OUT_}}}[{RATE}]))',
           "percentunit", w=6, thresholds=SR_STEPS)
    b.stat("TLS handshake errors", "Failed mesh TLS handshakes per second.",
           f"sum(rate(tls_handshake_errors_total{{{WL}}}[{RATE}])) or vector(0)", "short", w=6,
           thresholds=[("green", None), ("red", 0.01)])
    b.graph("Certificate time left", "Per proxy.",
            [(f"min by (namespace, pod) (identity_cert_expiration_timestamp_seconds{{{WL}}}) - time()",
              "{{namespace}}/{{pod}}")], "s")
    b.graph("Mutual TLS connections by peer", "Per second; inbound by client identity, outbound by server.",
            [(rps(f'{WL},direction="inbound"', "direction, client_id", "tls_connections_total"),
              "{{direction}} {{client_id}}"),
             (rps(f'{WL},direction="outbound"', "direction, server_id", "tls_connections_total"),
              "{{direction}} {{server_id}}")], "cps")
    b.graph("Certificate refreshes", "Per second, by result (failed: the issuer refused or did not answer).",
            [(rps(WL, "pod, result", "identity_cert_refresh_total"), "{{pod}} {{result}}")], "short")
    b.graph("TLS handshake errors", "Per second, by direction and reason.",
            [(rps(WL, "direction, reason", "tls_handshake_errors_total"), "{{direction}} {{reason}}")], "cps")
    b.graph("Connections without TLS", "Per second, by Linkerd's reason (loopback: the app and its own proxy).",
            [(rps(f'{WL},tls!="true"', "direction, peer, no_tls_reason", "tcp_open_total"),
              "{{direction}} {{peer}} {{no_tls_reason}}")], "cps")
    b.row("Authorization")
    b.graph("HTTP requests authorized", "Per second, by server and authorization.",
            [(rps(WL, "srv_name, authz_name", "inbound_http_authz_allow_total"), "{{srv_name}} {{authz_name}}")],
            "reqps")
    b.graph("HTTP requests denied", "Per second (403), by server and route.",
            [(rps(WL, "srv_name, route_name", "inbound_http_authz_deny_total"), "{{srv_name}} {{route_name}}"),
             (rps(WL, "srv_name", "inbound_http_route_not_found_total"), "{{srv_name}} no route")], "reqps")
    b.graph("Connections denied", "Per second, by server.",
            [(rps(WL, "srv_name", "inbound_tcp_authz_deny_total"), "{{srv_name}}")], "cps")
    return b


BOARDS = (top_line, deployment, routes, authority, edges, proxy_resources, identity)


def render() -> dict[str, str]:
    """File name -> JSON text, for every dashboard."""
    out = {}
    for make in BOARDS:
        board = make().json()
        out[f"{board['uid']}.json"] = json.dumps(board, indent=2) + "\n"
    return out


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

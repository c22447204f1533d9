"""A meshed pair of meshproxies for the fairness and soak scenarios: A's outbound -> B's inbound -> an app.

A finds its services in an endpoints file whose endpoints are meshed behind
B (``proxy:`` = B's inbound listener); with ``certs`` the hop is mutual TLS
(A = the client identity, B = the server identity, from ``lib/meshtls``),
otherwise plaintext (B then obeys A's transport header because loopback is
in its cluster networks). ``repo`` picks the checkout that runs (a
``--baseline`` one, for instance).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.lib import meshtls
from benchmarks.lib.context import Context
from benchmarks.lib.servers import LOOPBACK, Server, start_meshproxy

try:
    from proxy.config import CLUSTER_NETWORKS as CLUSTER_NETWORKS_ENV
except Exception:  # the proxy is being rebuilt; the documented name
    CLUSTER_NETWORKS_ENV = "MESHPROXY_CLUSTER_NETWORKS"


@dataclass(frozen=True)
class Service:
    name: str          # host:port clients ask A for (Host / :authority)
    app_port: int
    protocol: str      # the endpoint's hint: http1 or h2


@dataclass
class Pair:
    a: Server
    b: Server
    services: list[Service]

    @property
    def outbound(self) -> tuple[str, int]:
        return (LOOPBACK, self.a.port)

    @property
    def servers(self) -> list[Server]:
        return [self.a, self.b]

    @property
    def b_metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.b.admin_port}/metrics"


def endpoints_yaml(services: list[Service], peer_port: int, identity: str | None) -> str:
    lines = ["services:"]
    for svc in services:
        lines += [f"  {svc.name}:", "    endpoints:", f"      - address: {LOOPBACK}:{svc.app_port}",
                  f"        proxy: {LOOPBACK}:{peer_port}", f"        protocol: {svc.protocol}"]
        if identity:
            lines.append(f"        identity: {identity}")
    return "\n".join(lines) + "\n"


def start(ctx: Context, tag: str, services: list[Service], default_target: Server,
          certs: meshtls.MeshCerts | None = None, repo: Path | None = None,
          extra_env: dict[str, str] | None = None) -> Pair:
    """B first, then A with the endpoints file; both on the proxy CPU, logs as ``<tag>-a`` / ``<tag>-b``."""
    repo = repo or ctx.repo
    log_level = getattr(ctx.options, "meshproxy_log_level", None) or "warning"
    env_b = meshtls.identity_env(certs, meshtls.SERVER_ID) if certs else {CLUSTER_NETWORKS_ENV: "127.0.0.0/8"}
    b = start_meshproxy(ctx.group, ctx.placement, repo, default_target, pure=False, name=f"{tag}-b",
                        log_level=log_level, extra_env={**env_b, **(extra_env or {})})
    path = ctx.run_dir / f"endpoints-{tag}.yaml"
    path.write_text(endpoints_yaml(services, b.info["ports"]["inbound"], meshtls.SERVER_ID if certs else None))
    env_a = {meshtls.DESTINATION_ENV: f"file://{path}", **(extra_env or {})}
    if certs:
        env_a.update(meshtls.identity_env(certs, meshtls.CLIENT_ID))
    a = start_meshproxy(ctx.group, ctx.placement, repo, default_target, pure=False, name=f"{tag}-a",
                        log_level=log_level, extra_env=env_a)
    return Pair(a, b, services)

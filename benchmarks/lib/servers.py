"""Starting the servers under test: nginx (upstream), HAProxy and meshproxy.

Each starter renders its config from ``configs/`` into the run directory,
picks free loopback ports, pins the process with ``taskset`` per the run's
``Placement`` and waits until it is ready. A server that does not come up
raises ``NotReady`` with the reason and the tail of its log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.lib.procs import Managed, NotReady, ProcessGroup, free_ports, wait_http_ok, wait_tcp

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
LOOPBACK = "127.0.0.1"


# ---- CPU placement -------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Which CPU the proxy under test gets and which the load (wrk + nginx) gets.

    The same placement is used for every variant, so "direct" runs wrk and
    nginx on the load CPU while the proxy CPU idles.
    """

    proxy_cpus: str | None
    load_cpus: str | None

    @classmethod
    def choose(cls, proxy: str | None = None, load: str | None = None) -> Placement:
        usable = sorted(os.sched_getaffinity(0))
        if proxy is not None or load is not None:
            return cls(proxy, load)
        if len(usable) < 2:
            return cls(None, None)
        return cls(str(usable[-1]), ",".join(str(c) for c in usable[:-1]))

    def pin_proxy(self) -> list[str]:
        return ["taskset", "-c", self.proxy_cpus] if self.proxy_cpus else []

    def pin_load(self) -> list[str]:
        return ["taskset", "-c", self.load_cpus] if self.load_cpus else []

    def describe(self) -> str:
        if not self.proxy_cpus and not self.load_cpus:
            return "not pinned (fewer than 2 usable CPUs)"
        return f"proxy under test on CPU {self.proxy_cpus or 'any'}; wrk + nginx on CPU {self.load_cpus or 'any'}"


# ---- config templates ------------------------------------------------------------


def render(template: str, out: Path, **values: Any) -> Path:
    """Fill ``{{name}}`` placeholders (not ``$``: nginx uses that itself)."""
    text = (CONFIGS / template).read_text()

    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"{template}: no value for {{{{{key}}}}}")
        return str(values[key])

    out.write_text(re.sub(r"\{\{(\w+)\}\}", fill, text))
    return out


@dataclass
class Server:
    name: str
    proc: Managed
    port: int
    admin_port: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/"


def _fail(proc: Managed, err: Exception) -> NotReady:
    # The last log lines usually say why (haproxy's ALERT, a Python traceback's end).
    tail = " | ".join(ln.strip() for ln in proc.log_tail(3).splitlines() if ln.strip())
    return NotReady(f"{err}" + (f"; log: {tail}" if tail else "") + f" (full log: {proc.log_path})")


# ---- nginx -----------------------------------------------------------------------


def start_nginx(group: ProcessGroup, placement: Placement, run_dir: Path, body: str) -> Server:
    if any(c in body for c in '"$\\;{}\n'):
        raise ValueError("the nginx body must be plain text without quotes or $")
    (run_dir / "nginx-tmp").mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    conf = render("nginx-http1.conf.tmpl", run_dir / "nginx.conf", run_dir=run_dir, port=port, body=body)
    argv = placement.pin_load() + [
        "nginx", "-p", str(run_dir), "-e", str(run_dir / "nginx-error.log"), "-c", str(conf),
    ]
    proc = group.start("nginx", argv)
    try:
        wait_tcp(proc, LOOPBACK, port)
    except NotReady as err:
        raise _fail(proc, err) from None
    return Server("nginx", proc, port)


# ---- HAProxy -----------------------------------------------------------------------


def start_haproxy(group: ProcessGroup, placement: Placement, run_dir: Path, upstream: Server) -> Server:
    (port,) = free_ports(1)
    conf = render("haproxy-http1.cfg.tmpl", run_dir / "haproxy.cfg", port=port, upstream_port=upstream.port)
    # -db: stay in the foreground, no daemon.
    argv = placement.pin_proxy() + ["haproxy", "-db", "-f", str(conf)]
    proc = group.start("haproxy", argv)
    try:
        wait_tcp(proc, LOOPBACK, port)
    except NotReady as err:
        raise _fail(proc, err) from None
    return Server("haproxy", proc, port)


# ---- meshproxy -----------------------------------------------------------------------

# Environment names, read from the proxy's own config module when it imports
# (so a rename there cannot silently leave us setting a dead variable).
try:
    from proxy import config as _cfg

    ENV = {
        "outbound": _cfg.OUTBOUND_LISTEN,
        "inbound": _cfg.INBOUND_LISTEN,
        "admin": _cfg.ADMIN_LISTEN,
        "default_target": _cfg.INBOUND_DEFAULT_TARGET,
        "log_level": _cfg.LOG_LEVEL,
        "opaque_ports": _cfg.OPAQUE_PORTS,
        "tap": _cfg.TAP_LISTEN,
    }
except Exception:  # the proxy is being built; fall back to the documented names
    ENV = {
        "outbound": "MESHPROXY_OUTBOUND_LISTEN",
        "inbound": "MESHPROXY_INBOUND_LISTEN",
        "admin": "MESHPROXY_ADMIN_LISTEN",
        "default_target": "MESHPROXY_INBOUND_DEFAULT_TARGET",
        "log_level": "MESHPROXY_LOG_LEVEL",
        "opaque_ports": "MESHPROXY_OPAQUE_PORTS",
        "tap": "MESHPROXY_TAP_LISTEN",
    }
PURE_ENV = "MESHPROXY_PURE"


def meshproxy_argv(repo: Path) -> list[str]:
    """``python -m proxy run``, started with cwd = ``repo`` so that checkout's package is the one imported.

    Not the installed console script: it imports whichever checkout the
    virtualenv was installed from (an editable install points at one tree),
    so a worktree or a baseline checkout would silently run another revision.
    """
    return [sys.executable, "-m", "proxy", "run"]


def meshproxy_env(
    pure: bool, ports: dict[str, int], upstream: Server, log_level: str = "warning"
) -> dict[str, str]:
    # Drop the caller's MESHPROXY_* settings: a run must not depend on the shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHPROXY_")}
    env[ENV["outbound"]] = f"{LOOPBACK}:{ports['outbound']}"
    env[ENV["inbound"]] = f"{LOOPBACK}:{ports['inbound']}"
    env[ENV["admin"]] = f"{LOOPBACK}:{ports['admin']}"
    env[ENV["default_target"]] = upstream.address
    env[ENV["log_level"]] = log_level
    if "tap" in ports:  # revisions with a tap server: each proxy its own port (two run side by side)
        env[ENV["tap"]] = f"{LOOPBACK}:{ports['tap']}"
    if pure:
        env[PURE_ENV] = "1"
    return env


def has_setting(repo: Path, name: str) -> bool:
    """Whether the revision in ``repo`` knows the setting ``name`` (older ones exit 64 on unknown settings)."""
    try:
        return name in (repo / "proxy" / "config.py").read_text(encoding="utf-8")
    except OSError:
        return False


def fastpath_status(repo: Path, env: dict[str, str]) -> dict[str, Any]:
    """Ask a fresh interpreter (same env) which fast-path modules are compiled."""
    # proxy.compiled today; proxy._fastpath in revisions before the data-path layout (a --baseline).
    # Chosen by file: an editable install would find a missing proxy.compiled in another checkout.
    code = (
        "import json, os\n"
        "if os.path.exists(os.path.join('proxy', 'compiled.py')):\n"
        "    import proxy.compiled as f\n"
        "else:\n"
        "    import proxy._fastpath as f\n"
        "print(json.dumps({'compiled': f.compiled_status(), 'all': f.COMPILED,"
        " 'proxy': __import__('proxy').__file__}))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return {"error": "timed out importing proxy.compiled"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last}
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_meshproxy(
    group: ProcessGroup,
    placement: Placement,
    repo: Path,
    upstream: Server,
    *,
    pure: bool,
    name: str,
    log_level: str = "warning",
    extra_env: dict[str, str] | None = None,
) -> Server:
    """meshproxy with ``upstream`` as the inbound default target; ``port`` is the outbound listener.

    ``info["ports"]`` has all three listeners (scenarios that load the inbound
    side use ``ports["inbound"]``); ``extra_env`` adds MESHPROXY_* settings
    such as the opaque ports.
    """
    outbound, inbound, admin, tap = free_ports(4)
    ports = {"outbound": outbound, "inbound": inbound, "admin": admin}
    if has_setting(repo, ENV["tap"]):
        ports["tap"] = tap
    env = meshproxy_env(pure, ports, upstream, log_level)
    env.update(extra_env or {})
    status = fastpath_status(repo, env)
    proc = group.start(name, placement.pin_proxy() + meshproxy_argv(repo), env=env, cwd=repo)
    try:
        wait_http_ok(proc, f"http://{LOOPBACK}:{admin}/ready", timeout=20)
        wait_tcp(proc, LOOPBACK, outbound, timeout=5)
        wait_tcp(proc, LOOPBACK, inbound, timeout=5)
    except NotReady as err:
        raise _fail(proc, err) from None
    return Server(name, proc, outbound, admin_port=admin, info={"fastpath": status, "ports": ports})


# ---- any server from a template --------------------------------------------------------


def start_templated(
    group: ProcessGroup,
    placement: Placement,
    run_dir: Path,
    kind: str,
    template: str,
    name: str,
    *,
    under_test: bool = True,
    extra_ports: int = 0,
    **values: Any,
) -> Server:
    """nginx or HAProxy (``kind``) from ``template``, on a fresh port, ready when it listens.

    The template gets ``{{port}}``, ``{{run_dir}}``, ``{{name}}`` and
    ``{{port2}}``... for ``extra_ports`` more listeners (in ``info["ports"]``).
    ``under_test`` pins it to the proxy CPU; otherwise (a backend) to the load CPUs.
    """
    port, *more = free_ports(1 + extra_ports)
    extra = {f"port{i + 2}": p for i, p in enumerate(more)}
    suffix = "conf" if kind == "nginx" else "cfg"
    conf = render(template, run_dir / f"{name}.{suffix}", run_dir=run_dir, port=port, name=name, **extra, **values)
    pin = placement.pin_proxy() if under_test else placement.pin_load()
    if kind == "nginx":
        (run_dir / "nginx-tmp").mkdir(parents=True, exist_ok=True)
        argv = pin + ["nginx", "-p", str(run_dir), "-e", str(run_dir / f"{name}-error.log"), "-c", str(conf)]
    elif kind == "haproxy":
        argv = pin + ["haproxy", "-db", "-f", str(conf)]
    else:
        raise ValueError(f"unknown server kind {kind!r}")
    proc = group.start(name, argv)
    try:
        for p in (port, *more):
            wait_tcp(proc, LOOPBACK, p)
    except NotReady as err:
        raise _fail(proc, err) from None
    return Server(name, proc, port, info={"ports": {"main": port, **extra}})

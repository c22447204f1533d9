"""Fixtures shared by the whole-proxy tests.

A module that needs settings of its own sets ``PROXY_ENV`` (a dict of
MESHPROXY_* values) and gets one proxy for the whole module from ``proxy``;
tests that change a proxy's settings or lifecycle use ``make_proxy``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers.meshproxy import MeshProxy
from helpers.nginx import Nginx
from helpers.servers import TcpEchoServer, WsEchoServer
from helpers.upstream import HttpUpstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[HttpUpstream]:
    server = HttpUpstream(name="upstream")
    yield server
    server.stop()


@pytest.fixture
def make_upstream() -> Iterator[Callable[..., HttpUpstream]]:
    """Fresh upstreams for one test (counts and bytes start at zero)."""
    servers: list[HttpUpstream] = []

    def make(**kwargs: Any) -> HttpUpstream:
        server = HttpUpstream(**kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def fresh_upstream(make_upstream: Callable[..., HttpUpstream]) -> HttpUpstream:
    return make_upstream(name="fresh")


@pytest.fixture(scope="module")
def proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProxy]:
    """One proxy for the module, configured by the module's ``PROXY_ENV``."""
    env = dict(getattr(request.module, "PROXY_ENV", {}))
    log = tmp_path_factory.mktemp("proxy") / "stderr.log"
    mp = MeshProxy(env=env, name=f"proxy[{request.module.__name__}]", log_path=log)
    try:
        mp.start()
        yield mp
    finally:
        mp.close()


@pytest.fixture
def make_proxy(tmp_path: Any) -> Iterator[Callable[..., MeshProxy]]:
    """Start proxies with test-specific settings; all killed at teardown."""
    started: list[MeshProxy] = []

    def make(env: dict[str, str] | None = None, start: bool = True, wait_ready: bool = True,
             **kwargs: Any) -> MeshProxy:
        index = len(started)
        mp = MeshProxy(env=env, name=f"proxy#{index}", log_path=tmp_path / f"proxy{index}.log", **kwargs)
        started.append(mp)
        if start:
            mp.start(wait_ready=wait_ready)
        return mp

    yield make
    for mp in started:
        mp.close()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    server = Nginx(tmp_path_factory.mktemp("nginx"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tcp_echo() -> Iterator[TcpEchoServer]:
    server = TcpEchoServer(name="tcp-echo")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ws_echo() -> Iterator[WsEchoServer]:
    server = WsEchoServer()
    yield server
    server.stop()

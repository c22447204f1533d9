"""Fixtures of the hostile-input corpus: one raw backend and one proxy per test module.

The proxy's outbound listener reaches the backend by the ``Host`` of each
request; its inbound listener sends every connection to the backend (the
default target). A module may set ``PROXY_ENV`` for extra settings.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.meshproxy import MeshProxy
from helpers.rawbackend import RawBackend


@pytest.fixture(scope="module")
def backend() -> Iterator[RawBackend]:
    server = RawBackend(name="hostile-backend")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(request: pytest.FixtureRequest, backend: RawBackend,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProxy]:
    env = {"MESHPROXY_INBOUND_DEFAULT_TARGET": backend.hostport}
    env.update(getattr(request.module, "PROXY_ENV", {}))
    log = tmp_path_factory.mktemp("hostile") / "proxy.log"
    mp = MeshProxy(env=env, name=f"proxy[{request.module.__name__}]", log_path=log)
    try:
        mp.start()
        yield mp
    finally:
        mp.close()

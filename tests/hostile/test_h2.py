"""Every hostile HTTP/2 stream of the corpus: h2c to both listeners, and peer-proxy streams to the inbound one.

h2c requests are addressed to an HTTP/2 origin behind a recording tap (the
inbound listener's default target is the tap too), so the bytes the proxy
forwarded can be decoded and judged. Peer-proxy streams name the raw HTTP/1
backend's port in their transport header; the inbound proxy trusts such
plaintext peers only from the cluster networks, loopback here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.h2server import H2Origin
from helpers.meshproxy import MeshProxy
from helpers.tcptap import RecordingTap

from .findings import assert_clean
from .harness_h2 import run_h2, run_meshed
from .listeners import cases
from .vectors_h2 import MESHED, VECTORS

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(scope="module")
def tap() -> Iterator[RecordingTap]:
    origin = H2Origin(name="hostile-h2-origin")
    relay = RecordingTap(origin.address, name="hostile-h2-tap")
    yield relay
    relay.stop()
    origin.stop()


@pytest.fixture(scope="module")
def proxy(tap, backend, tmp_path_factory) -> Iterator[MeshProxy]:
    env = {"MESHPROXY_INBOUND_DEFAULT_TARGET": tap.hostport, "MESHPROXY_CLUSTER_NETWORKS": "127.0.0.0/8"}
    mp = MeshProxy(env=env, name="proxy[hostile-h2]", log_path=tmp_path_factory.mktemp("hostile-h2") / "proxy.log")
    try:
        mp.start()
        yield mp
    finally:
        mp.close()


@pytest.mark.parametrize("listener, vector", cases(VECTORS))
def test_h2_request(proxy, tap, listener, vector):
    assert_clean(run_h2(proxy, getattr(proxy, listener), tap, vector))


@pytest.mark.parametrize("vector", [pytest.param(v, id=f"inbound-peer-{v.id}") for v in MESHED])
def test_meshed_stream(proxy, backend, vector):
    assert_clean(run_meshed(proxy, backend, vector))

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

from helpers import h2 as H
from helpers.h2 import RawH2, hpack_str
from helpers.h2server import H2Origin
from helpers.meshproxy import MeshProxy
from helpers.strict_h2 import decode_requests
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


@pytest.mark.parametrize("listener", ["outbound", "inbound"])
def test_never_indexed_field_is_forwarded_never_indexed(proxy, tap, listener):
    # RFC 7541 7.1.3: an intermediary keeps a never-indexed field's representation, so a secret the
    # client kept out of compression contexts stays out of the next hop's (this name is not one the
    # proxy treats as sensitive on its own).
    mark = tap.mark()
    request = ((b":method", b"GET"), (b":scheme", b"http"), (b":authority", tap.hostport.encode()),
               (b":path", b"/kept-secret"), (b"x-plain", b"visible"))
    block = b"".join(b"\x00" + hpack_str(n) + hpack_str(v) for n, v in request)
    block += b"\x10" + hpack_str(b"x-session-token") + hpack_str(b"s3cr3t-value-0123456789")
    with RawH2(getattr(proxy, listener)) as conn:
        conn.send(H.headers(1, block))
        got = conn.wait_frame(lambda f: f.stream_id == 1 and f.type == H.HEADERS, 3)
    assert got is not None and got.header(":status") == "200", conn.frames
    tap.wait_quiet(0.03, 0.5)
    streams = [s for t in tap.connections() for s in decode_requests(t.sent()).streams.values()
               if s.offset >= mark.get(t.id, 0) and s.get(b":path") == b"/kept-secret"]
    assert len(streams) == 1, streams
    assert streams[0].get(b"x-session-token") == b"s3cr3t-value-0123456789"
    assert streams[0].never_indexed == [b"x-session-token"]

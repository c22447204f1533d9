"""proxy/transport/listen.py: a listener's own address, which its connections' local address then is."""

import asyncio

import pytest

from proxy.config import HostPort
from proxy.transport.listen import listen, listener_address


@pytest.mark.parametrize(("host", "own"), [("127.0.0.1", True), ("::1", True), ("0.0.0.0", False), ("::", False)])
def test_a_listener_bound_to_one_address_has_it(host, own):
    async def main():
        loop = asyncio.get_running_loop()
        server = await listen(loop, HostPort(host, 0), asyncio.Protocol)
        try:
            port = server.sockets[0].getsockname()[1]
            return port, listener_address(server)
        finally:
            server.close()

    port, got = asyncio.run(main())
    assert got == ((host, port) if own else None)

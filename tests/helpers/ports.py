"""Free TCP ports on loopback for processes that bind after we choose.

Ports are picked outside the kernel's ephemeral range, so the client side of
some other connection cannot grab a port between our check and the child's
bind, and never handed out twice in one test run.
"""

from __future__ import annotations

import random
import socket
import threading

_LOW, _HIGH = 20000, 32000  # below net.ipv4.ip_local_port_range (32768-60999)
_given: set[int] = set()
_lock = threading.Lock()


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now and that this run has not handed out."""
    with _lock:
        for _ in range(500):
            port = random.randrange(_LOW, _HIGH)
            if port not in _given and _bindable(host, port):
                _given.add(port)
                return port
    raise RuntimeError("no free port found in 500 tries")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    return [free_port(host) for _ in range(count)]


def hostport(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"

"""Public API of proxy.transport.sockopt (compiled from sockopt.pyx)."""

def getsockopt_bytes(fd: int, level: int, optname: int, size: int) -> bytes | None:
    """The option's raw value (at most ``size`` <= 128 bytes), or None when the kernel refuses."""

def original_destination(fd: int, v6: bool) -> tuple[str, int] | None:
    """``SO_ORIGINAL_DST`` of an accepted TCP socket as ``(host, port)``; None when the kernel has none."""

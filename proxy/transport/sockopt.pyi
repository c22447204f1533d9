"""Public API of proxy.transport.sockopt (compiled from sockopt.pyx)."""

def getsockopt_bytes(fd: int, level: int, optname: int, size: int) -> bytes | None:
    """The option's raw value (at most ``size`` <= 128 bytes), or None when the kernel refuses."""

def accepted_addresses(fd: int, ask_local: bool) -> tuple[tuple[str, int], tuple[str, int] | None,
                                                           tuple[str, int] | None] | None:
    """An accepted TCP connection's (client, local, original destination); None when not answerable here."""

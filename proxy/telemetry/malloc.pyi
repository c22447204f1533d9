"""Public API of proxy.telemetry.malloc (compiled from malloc.pyx)."""

AVAILABLE: bool

def malloc_trim(pad: int) -> int:
    """Give free heap memory above ``pad`` bytes back to the kernel; 1 if any was released (0 without glibc)."""

"""NEED_MORE: what the sans-IO parsers return when the bytes so far are not enough to decide.

One object for every parser (HTTP/1 heads, HTTP/2 frames), distinct from None,
from any parsed result and from an error, and compared by identity.
"""


class NeedMore:
    """Type of NEED_MORE: nothing complete is buffered yet, feed more bytes."""

    __slots__ = ()

    def __repr__(self):
        return "NEED_MORE"

    def __reduce__(self):
        return "NEED_MORE"  # unpickles to this module's singleton


NEED_MORE = NeedMore()

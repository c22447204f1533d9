"""What the exchange core calls of a tap, as compiled base classes the tap implements (proxy/telemetry/tap.py).

The core holds a ``TapHook`` on its context while a tap is open and a
``TapEvents`` per observed request; typed as these bases, its calls are C
calls, and the core never imports the tap itself (which loads only when a
tap client first connects).
"""


class TapHook:
    """The tap hub as a request sees it."""

    def observe(self, ex):
        """The request has its destination: its events' recorder, or None when no tap wants it."""
        return None


class TapEvents:
    """One observed request's events after its start."""

    def response_init(self, status, h1head, fields):
        pass

    def end(self, trailers):
        pass

    def reset(self, code):
        pass

    def add_bytes(self, n):
        pass

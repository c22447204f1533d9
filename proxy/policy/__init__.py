"""Reliability policy, sans-IO: routes, response classes, retry budget, timeouts and traffic split.

Nothing here touches a socket, a loop or a clock: callers pass ``now``
(monotonic seconds) and random numbers in. ``parse`` builds a ``PolicySet``
from a policy file; ``routes``, ``classify``, ``budget`` and ``split`` answer
the per-request questions.
"""

"""What a hostile HTTP/1 request vector may and must lead to, as data the harness reads.

Four shapes cover the corpus. ``refused``: the proxy answers with one of the
given error statuses (with ``l5d-proxy-error``), closes, and not one byte
reaches the backend. ``refused_body``: the head was fine but the body is not, so
the head and whole chunks may already have gone out, never a complete message.
``either``: the input is legal but odd (or the RFC lets a server choose), so the
proxy may refuse it or forward exactly one request, and what it forwards must
pass the strict reading. ``forwarded``: legal input the proxy must pass on
(cleaned: hop-by-hop and h2c-upgrade fields gone). ``host`` names the
Host a forwarded request must carry, when it differs from what the client sent. ``pipelined(n)``: ``n``
valid requests ahead of a refused one must each be answered by the backend,
and nothing after them reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass

BAD_REQUEST = 400


@dataclass(frozen=True)
class Expect:
    statuses: frozenset[int]  # error statuses the proxy may answer with; empty: it must not refuse
    forward: str  # "never", "prefix", "may" or "must"
    answered: int = 0  # valid requests ahead of the hostile one that the backend must answer
    host: bytes | None = None  # the Host a forwarded request must carry (an absolute-form URI's authority)

    @property
    def may_refuse(self) -> bool:
        return bool(self.statuses)


def refused(*statuses: int) -> Expect:
    return Expect(frozenset(statuses or (BAD_REQUEST,)), "never")


def refused_body(*statuses: int) -> Expect:
    return Expect(frozenset(statuses or (BAD_REQUEST,)), "prefix")


def either(*statuses: int, host: bytes | None = None) -> Expect:
    return Expect(frozenset(statuses or (BAD_REQUEST,)), "may", host=host)


def forwarded() -> Expect:
    return Expect(frozenset(), "must")


def pipelined(count: int, *statuses: int) -> Expect:
    return Expect(frozenset(statuses or (BAD_REQUEST,)), "never", answered=count)

"""What the proxy did wrong with one hostile input, named so failures group by kind.

A runner collects ``Finding``s instead of stopping at the first assert, so a
failing test says everything that went wrong; ``assert_clean`` turns them
into one failure whose message starts with the kinds in brackets, which is
what the corpus report groups by. The checks every vector shares live here:
the proxy is alive, logged no traceback, and still serves a good request.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from helpers.meshproxy import MeshProxy
from helpers.strict_h1 import read_responses

# The kinds, worded as what the proxy did.
FORWARDED_MALFORMED = "forwarded malformed bytes"
FORWARDED_INSTEAD = "forwarded instead of refusing"
SMUGGLED = "smuggled request reached the other side"
HOST_MISMATCH = "forwarded with a Host other than the URI's authority"
NO_ANSWER = "no answer within the deadline"
CLOSED_SILENTLY = "closed without a status"
WRONG_STATUS = "wrong status"
NO_ERROR_HEADER = "no l5d-proxy-error header"
KEPT_OPEN = "kept the connection open after refusing"
BAD_TO_CLIENT = "sent malformed bytes to the client"
REFUSED_LEGAL = "refused a legal request"
AHEAD_UNANSWERED = "valid request ahead not answered"
STRAY_REUSED = "answered a later request with stray bytes"
TRACEBACK = "traceback in log"
DIED = "proxy died"
NOT_SERVING = "good request failed afterwards"

PROXY_ERROR = b"l5d-proxy-error"


@dataclass(frozen=True)
class Finding:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.detail}"


def assert_clean(findings: list[Finding], context: str = "") -> None:
    if not findings:
        return
    kinds = []
    for f in findings:
        if f.kind not in kinds:
            kinds.append(f.kind)
    lines = "\n  ".join(str(f)[:600] for f in findings)
    raise AssertionError(f"[{' | '.join(kinds)}]{' ' + context if context else ''}\n  {lines}")


def log_findings(proxy: MeshProxy, mark: int) -> list[Finding]:
    out = []
    if not proxy.running():
        out.append(Finding(DIED, f"exit status {proxy.returncode}"))
    lines = proxy.lines(mark)
    for i, line in enumerate(lines):
        if "Traceback" in line:
            out.append(Finding(TRACEBACK, "\n".join(lines[i : i + 12])[-1200:]))
            break
    return out


def good_h1_request(addr: tuple[str, int], hostport: str, timeout: float = 3.0) -> list[Finding]:
    """A well-formed request on a new connection is answered by the backend."""
    data = b"GET /good HTTP/1.1\r\nHost: " + hostport.encode() + b"\r\n\r\n"
    got = b""
    try:
        with socket.create_connection(addr, timeout=timeout) as sock:
            sock.sendall(data)
            while True:
                reading = read_responses(got)
                finals = [m for m in reading.complete_messages() if m.status >= 200]
                if finals or reading.problems:
                    break
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
    except OSError as err:
        return [Finding(NOT_SERVING, f"{type(err).__name__}: {err}; got {got[:200]!r}")]
    reading = read_responses(got)
    finals = [m for m in reading.complete_messages() if m.status >= 200]
    if not finals or finals[0].status != 200 or not finals[0].body.startswith(b"ok c"):
        return [Finding(NOT_SERVING, f"got {got[:300]!r}")]
    return []

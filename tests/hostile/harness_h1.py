"""Runs one hostile HTTP/1 input through a real proxy listener and lists what went wrong.

``run_request`` sends a request vector (whole, one byte at a time, cut at
every CR and LF, or its first byte alone and the rest late), reads what the
client gets back, then reads what reached the backend in the same window;
``run_response`` has the backend answer a valid request with a crafted
response. Both end with the shared checks (no
traceback, proxy alive, a good request still served) and leave the backend
with no half-sent connection for the next vector to trip on.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from helpers.meshproxy import MeshProxy
from helpers.rawbackend import RawBackend, Script
from helpers.strict_h1 import Message, Reading, h11_problems, read_requests, read_responses

from . import findings as F
from .expect import Expect
from .findings import Finding
from .vectors_h1 import Vector
from .vectors_h1_responses import ResponseVector

ANSWER_TIMEOUT = 1.5  # a refusal takes milliseconds; a forwarded request, one backend round trip
CLOSE_TIMEOUT = 1.0  # after a refusal the connection must close
BYTE_GAP = 0.001  # between single bytes: each arrives as its own read
LINE_GAP = 0.005  # between pieces cut at CR and LF
LATE_PAUSE = 1.3  # "late" mode: after the first byte, past a 1 s detect timeout


@dataclass
class ClientView:
    """What the client received, read strictly as responses."""

    data: bytes = b""
    eof: bool = False
    reading: Reading = field(default_factory=Reading)

    @property
    def finals(self) -> list[Message]:
        return [m for m in self.reading.complete_messages() if m.status >= 200]


def _pieces(data: bytes, mode: str) -> list[bytes]:
    if mode == "whole":
        return [data]
    if mode == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted({i + 1 for i, c in enumerate(data) if c in (10, 13)} | {0, len(data)})
    return [data[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def _send(sock: socket.socket, data: bytes, mode: str) -> bool:
    gap = BYTE_GAP if mode == "bytes" else LATE_PAUSE if mode == "late" else LINE_GAP
    pieces = [data[:1], data[1:]] if mode == "late" else _pieces(data, mode)
    try:
        for i, piece in enumerate(pieces):
            sock.sendall(piece)
            if i + 1 < len(pieces):
                time.sleep(gap)
    except OSError:
        return False  # the proxy closed early; what it answered is still read
    return True


def read_client(sock: socket.socket, finals_wanted: int, methods: list[str], timeout: float) -> ClientView:
    """Read until ``finals_wanted`` final responses, EOF, or ``timeout``; after
    an error status, keep reading (briefly) to see the connection close."""
    view = ClientView()
    end = time.monotonic() + timeout
    close_by = None
    while True:
        view.reading = read_responses(view.data, methods, eof=view.eof)
        finals = view.finals
        if view.eof or view.reading.problems or view.reading.switched:
            return view
        if len(finals) >= finals_wanted:
            if finals[-1].status < 400:
                return view
            close_by = close_by or time.monotonic() + CLOSE_TIMEOUT
        deadline = close_by or end
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return view
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            chunk = b""
        if chunk:
            view.data += chunk
        else:
            view.eof = True


def client_findings(view: ClientView, methods: list[str], asked: int) -> list[Finding]:
    """Strict and h11 problems in what the client got, and answers it never asked for."""
    out = [Finding(F.BAD_TO_CLIENT, p) for p in view.reading.problems]
    if len(view.finals) > asked:
        extra = [m.start_line for m in view.finals[asked:]]
        out.append(Finding(F.BAD_TO_CLIENT, f"{len(view.finals)} responses to {asked} requests: extra {extra!r}"))
    out += [Finding(F.BAD_TO_CLIENT, p) for p in h11_problems(view.data, "client", methods, eof=view.eof)]
    return out


def _is_refusal(msg: Message, expect: Expect) -> bool:
    return msg.status in expect.statuses and msg.get(F.PROXY_ERROR) is not None


def _genuine(msg: Message) -> bool:
    """An answer the backend made (not the proxy, not leftover bytes)."""
    return msg.status == 200 and msg.body.startswith(b"ok c") and msg.get(F.PROXY_ERROR) is None


def backend_findings(backend: RawBackend, mark: dict[int, int], expect: Expect, refused: bool) -> list[Finding]:
    """Judge what reached the backend since ``mark``."""
    out: list[Finding] = []
    complete: list[Message] = []
    partial = False
    for cid, data in backend.since(mark).new_bytes().items():
        reading = read_requests(data)
        problems = reading.problems + h11_problems(data, "server")
        for p in problems:
            out.append(Finding(F.FORWARDED_MALFORMED, f"conn {cid}: {p}; bytes {data[:300]!r}"))
        complete += reading.complete_messages()
        partial = partial or reading.incomplete
        for msg in reading.messages:
            if b"smuggled" in msg.target:
                out.append(Finding(F.SMUGGLED, f"conn {cid}: {msg.start_line!r}"))
    if expect.host is not None:
        want = expect.host.replace(b"@H@", backend.hostport.encode())
        for msg in complete[expect.answered :]:
            if msg.get_all("host") != [want]:
                out.append(Finding(F.HOST_MISMATCH, f"Host {msg.get_all('host')!r}, URI authority {want!r}"))
    allowed = expect.answered
    if expect.forward == "must" or (expect.forward == "may" and not refused):
        allowed += 1
    if len(complete) > allowed:
        shown = [m.start_line for m in complete]
        out.append(Finding(F.FORWARDED_INSTEAD, f"{len(complete)} requests reached the backend, "
                                                f"{allowed} allowed: {shown!r}"))
    elif partial and expect.forward == "never":
        out.append(Finding(F.FORWARDED_INSTEAD, "part of a request reached the backend"))
    return out


def run_request(proxy: MeshProxy, addr: tuple[str, int], backend: RawBackend, vector: Vector,
                mode: str = "whole") -> list[Finding]:
    expect = vector.expect
    data = vector.render(backend.hostport)
    methods: list[str] = []  # no vector uses HEAD: every response is read as one to GET
    log_mark, mark = proxy.mark(), backend.mark()
    out: list[Finding] = []
    with socket.create_connection(addr, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _send(sock, data, mode)
        view = read_client(sock, expect.answered + 1, methods, ANSWER_TIMEOUT)
    out += client_findings(view, methods, expect.answered + 1)
    finals = view.finals
    for i, msg in enumerate(finals[: expect.answered]):
        if not _genuine(msg):
            out.append(Finding(F.AHEAD_UNANSWERED, f"response {i + 1}: {msg.start_line!r}"))
    if len(finals) < expect.answered:
        out.append(Finding(F.AHEAD_UNANSWERED, f"{len(finals)} of {expect.answered} answered; got {view.data[:300]!r}"))
    refused = False
    if len(finals) > expect.answered:
        msg = finals[expect.answered]
        if _is_refusal(msg, expect):
            refused = True
            if expect.forward == "must":
                out.append(Finding(F.REFUSED_LEGAL, f"{msg.start_line!r} {msg.get(F.PROXY_ERROR)!r}"))
            if not view.eof:
                out.append(Finding(F.KEPT_OPEN, f"open {CLOSE_TIMEOUT}s after {msg.start_line!r}"))
        elif _genuine(msg):
            if expect.forward in ("never", "prefix"):
                out.append(Finding(F.FORWARDED_INSTEAD, f"the backend answered: {msg.start_line!r}"))
        elif msg.get(F.PROXY_ERROR) is None:
            out.append(Finding(F.NO_ERROR_HEADER, f"{msg.start_line!r}: {view.data[:300]!r}"))
        else:
            wanted = sorted(expect.statuses) or "a forward"
            out.append(Finding(F.WRONG_STATUS, f"{msg.status} ({msg.get(F.PROXY_ERROR)!r}), wanted {wanted}"))
    elif not view.reading.problems:
        if view.eof:
            out.append(Finding(F.CLOSED_SILENTLY, f"got {view.data[:300]!r}"))
        else:
            out.append(Finding(F.NO_ANSWER, f"{ANSWER_TIMEOUT}s; got {view.data[:300]!r}"))
    backend.wait_quiet(0.03, 0.5)
    out += backend_findings(backend, mark, expect, refused)
    backend.close_unsettled()
    out += F.log_findings(proxy, log_mark)
    if proxy.running():
        out += F.good_h1_request(addr, backend.hostport)
    return out


# ---------------------------------------------------------------------------
# hostile responses


def run_response(proxy: MeshProxy, addr: tuple[str, int], backend: RawBackend,
                 vector: ResponseVector) -> list[Finding]:
    backend.scripts[vector.id] = Script(list(vector.steps), close=vector.close)
    log_mark = proxy.mark()
    out: list[Finding] = []
    methods = [vector.method, "GET"]
    request = f"{vector.method} /r/{vector.id} HTTP/1.1\r\nHost: {backend.hostport}\r\n\r\n".encode()
    wait = ANSWER_TIMEOUT + sum(s for s in vector.steps if isinstance(s, float))
    with socket.create_connection(addr, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        view = read_client(sock, 1, methods, wait)
        out += client_findings(view, methods, 1)
        if vector.kind == "stray" and b"STRAY" in view.data:
            out.append(Finding(F.STRAY_REUSED, f"to the client that caused them: {view.data[:300]!r}"))
        out += _judge_response(view, vector)
        if vector.kind == "stray" and not view.eof and view.finals:
            # The same client asks again: the leftover bytes must not be its answer.
            time.sleep(0.1)
            try:
                sock.sendall(f"GET /good HTTP/1.1\r\nHost: {backend.hostport}\r\n\r\n".encode())
                again = read_client(sock, 1, ["GET"], ANSWER_TIMEOUT)
            except OSError:
                again = ClientView(eof=True)
            out += _judge_followup(again.finals, again, "the same connection")
    if vector.kind == "stray":
        time.sleep(0.1)  # the stray bytes have reached the proxy's idle upstream connection
        with socket.create_connection(addr, timeout=5) as sock:
            sock.sendall(f"GET /good HTTP/1.1\r\nHost: {backend.hostport}\r\n\r\n".encode())
            other = read_client(sock, 1, ["GET"], ANSWER_TIMEOUT)
        out += _judge_followup(other.finals, other, "a new connection", must_answer=True)
    # Start the next vector from fresh upstream connections, then give the
    # proxy a moment to see the FINs before the good request picks one.
    backend.close_all()
    time.sleep(0.05)
    out += F.log_findings(proxy, log_mark)
    if proxy.running():
        out += F.good_h1_request(addr, backend.hostport)
    return out


def _judge_response(view: ClientView, vector: ResponseVector) -> list[Finding]:
    finals = view.finals
    if finals:
        msg = finals[0]
        if msg.status == 502 and msg.get(F.PROXY_ERROR) is not None:
            return []
        if vector.kind == "bad-head":
            return [Finding(F.BAD_TO_CLIENT, f"passed on a response it had to refuse: {view.data[:300]!r}")]
        if msg.status >= 400 and msg.get(F.PROXY_ERROR) is not None:
            return [Finding(F.WRONG_STATUS, f"{msg.status} ({msg.get(F.PROXY_ERROR)!r}), wanted 502")]
        return []  # strictly valid (client_findings has judged the bytes)
    if view.reading.problems:
        return []  # already reported as malformed bytes to the client
    heads = [m for m in view.reading.messages if m.status >= 200]
    if heads and view.eof and vector.kind == "bad-body":
        return []  # a valid head, a valid prefix, then the cut
    if view.eof and heads:
        return [Finding(F.BAD_TO_CLIENT, f"a head, then the connection cut: {view.data[:300]!r}")]
    if view.eof:
        return [Finding(F.CLOSED_SILENTLY, f"EOF after {view.data[:300]!r}")]
    return [Finding(F.NO_ANSWER, f"got {view.data[:300]!r}")]


def _judge_followup(finals: list[Message], view: ClientView, where: str, must_answer: bool = False) -> list[Finding]:
    if b"STRAY" in view.data:
        return [Finding(F.STRAY_REUSED, f"on {where}: {view.data[:300]!r}")]
    if finals and not _genuine(finals[0]) and not (finals[0].status == 502 and not must_answer):
        return [Finding(F.STRAY_REUSED, f"on {where}, not the backend's answer: {view.data[:300]!r}")]
    if must_answer and not finals:
        return [Finding(F.NOT_SERVING, f"on {where}: {view.data[:300]!r}")]
    return []

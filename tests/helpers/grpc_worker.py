"""A gRPC client in a process of its own, driven by JSON lines on stdin (one answer line each on stdout).

grpcio connects from threads of its C core that a test cannot move into a
network namespace; started inside one (``with ns:`` around the spawn), this
whole process lives there. ``GrpcWorker`` is the parent's handle.

Ops (every call bounded by ``timeout``; ``target`` is host:port, ``authority`` optional):
  bidi      count, size: send count slices of the blob while reading the echo;
            answers sent_sha, recv_sha, recv_len, code
  down      count, size, slow (read slowly), cancel_after (messages, then cancel);
            answers recv_sha, recv_len, messages, code, details
  slow_up   count, size: the server reads slowly; answers reply, sent_sha, code
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.matrix_apps import BLOB_SIZE, GRPC_OPTIONS, GRPC_SERVICE, SLOW_EVERY, SLOW_PAUSE, piece  # noqa: E402


def _channel(op: dict[str, Any]):
    import grpc

    options = list(GRPC_OPTIONS)
    if op.get("authority"):
        options.append(("grpc.default_authority", op["authority"]))
    return grpc.insecure_channel(op["target"], options=options)


def _slices(count: int, size: int):
    for i in range(count):
        yield bytes(piece(size, (i * size) % (BLOB_SIZE - size)))


def _code(err: Exception) -> tuple[str, str]:
    code = getattr(err, "code", None)
    details = getattr(err, "details", None)
    return (code().name if callable(code) else type(err).__name__,
            details() if callable(details) else str(err))


def run(op: dict[str, Any]) -> dict[str, Any]:
    import grpc

    timeout = float(op.get("timeout", 30))
    count, size = int(op.get("count", 1)), int(op.get("size", 1))
    with _channel(op) as chan:
        grpc.channel_ready_future(chan).result(timeout=timeout)
        if op["op"] == "bidi":
            call = chan.stream_stream(f"/{GRPC_SERVICE}/Bidi")
            sent = hashlib.sha256()

            def requests():
                for message in _slices(count, size):
                    sent.update(message)
                    yield message

            got, length = hashlib.sha256(), 0
            try:
                for message in call(requests(), timeout=timeout):
                    got.update(message)
                    length += len(message)
                code, details = "OK", ""
            except grpc.RpcError as err:
                code, details = _code(err)
            return {"sent_sha": sent.hexdigest(), "recv_sha": got.hexdigest(), "recv_len": length,
                    "code": code, "details": details}
        if op["op"] == "down":
            call = chan.unary_stream(f"/{GRPC_SERVICE}/Down")
            responses = call(f"{count}:{size}".encode(), timeout=timeout)
            got, length, messages = hashlib.sha256(), 0, 0
            cancel_after = op.get("cancel_after")
            try:
                for message in responses:
                    got.update(message)
                    before = length
                    length += len(message)
                    messages += 1
                    if op.get("slow"):
                        # A slow reader: a pause for every SLOW_EVERY bytes taken.
                        time.sleep(SLOW_PAUSE * max(1, (length - before) // SLOW_EVERY))
                    if cancel_after is not None and messages >= cancel_after:
                        responses.cancel()
                code, details = "OK", ""
            except grpc.RpcError as err:
                code, details = _code(err)
            return {"recv_sha": got.hexdigest(), "recv_len": length, "messages": messages, "code": code,
                    "details": details}
        if op["op"] == "slow_up":
            call = chan.stream_unary(f"/{GRPC_SERVICE}/SlowUp")
            sent = hashlib.sha256()

            def requests():
                for message in _slices(count, size):
                    sent.update(message)
                    yield message

            try:
                reply = call(requests(), timeout=timeout).decode()
                code, details = "OK", ""
            except grpc.RpcError as err:
                reply = ""
                code, details = _code(err)
            return {"reply": reply, "sent_sha": sent.hexdigest(), "code": code, "details": details}
    raise ValueError(f"unknown op {op['op']!r}")


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            result = run(json.loads(line))
        except Exception as err:  # reported to the parent, which fails the test
            result = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(result), flush=True)


class GrpcWorker:
    """The parent's side: start it inside the namespace, ``call(op)`` per operation."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-u", __file__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        first = self._line(60)
        assert first.get("ready"), first

    def _line(self, timeout: float) -> dict[str, Any]:
        import select

        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not readable:
            raise TimeoutError(f"gRPC worker silent for {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"gRPC worker exited: {err[-2000:]}")
        return json.loads(line)

    def call(self, **op: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(op) + "\n")
        self.proc.stdin.flush()
        result = self._line(float(op.get("timeout", 30)) + 30)
        assert "error" not in result, result["error"]
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


if __name__ == "__main__":
    main()

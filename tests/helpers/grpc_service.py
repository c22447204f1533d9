"""A gRPC test service on grpcio's generic handlers (bytes in, bytes out: no protoc).

``GrpcServer`` serves ``meshproxy.test.Echo`` on loopback with four methods,
one per call shape, and records what a test needs to see from the server's
side: the metadata each call carried, the deadline it saw, and which calls
ended cancelled. A unary request is a small command:

    b"echo:..."          answers the bytes after "echo:"
    b"big:N"             answers N deterministic bytes
    b"fail:CODE:details" aborts with status CODE (a grpc.StatusCode name),
                         trailing metadata x-error-detail and x-error-bin
    b"sleep:S:key"       sleeps up to S seconds, watching for cancellation
                         (recorded under ``key`` in ``cancelled``)
    b"meta"              answers b"meta" and echoes every x-* metadata entry
                         as initial (x-initial-*) and trailing (x-trailing-*)
                         metadata

ServerStream takes b"N:SIZE" and streams N messages of SIZE bytes (b"trickle:N:S": N short ones over S seconds);
ClientStream answers b"<count>:<sha256 of all bytes>"; BidiStream echoes
each message as it comes, b"upper:" first making it uppercase.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent import futures
from typing import Any

import grpc

from .servers import det_bytes

SERVICE = "meshproxy.test.Echo"
MAX_MESSAGE = 64 * 1024 * 1024
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.enable_http_proxy", 0),
]


class GrpcServer:
    def __init__(self, workers: int = 16) -> None:
        self.calls: list[dict[str, Any]] = []  # one per call: method, metadata, time_remaining
        self.cancelled: dict[str, threading.Event] = {}
        self.finished: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream),
            "BidiStream": grpc.stream_stream_rpc_method_handler(self._bidi),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=OPTIONS)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=0).wait(5)

    # -- bookkeeping ------------------------------------------------------------
    def _record(self, method: str, context: grpc.ServicerContext) -> dict[str, Any]:
        call = {
            "method": method,
            "metadata": list(context.invocation_metadata()),
            "time_remaining": context.time_remaining(),
        }
        with self._lock:
            self.calls.append(call)
        return call

    def event(self, table: dict[str, threading.Event], key: str) -> threading.Event:
        with self._lock:
            return table.setdefault(key, threading.Event())

    # -- methods ----------------------------------------------------------------
    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        call = self._record("Unary", context)
        if request.startswith(b"echo:"):
            return request[5:]
        if request.startswith(b"big:"):
            return det_bytes(int(request[4:]), 3)
        if request.startswith(b"fail:"):
            _, code, details = request.decode().split(":", 2)
            context.set_trailing_metadata((("x-error-detail", "missing-thing"), ("x-error-bin", b"\x00\x01\xfe\xff")))
            context.abort(grpc.StatusCode[code], details)
        if request.startswith(b"sleep:"):
            _, seconds, key = request.decode().split(":", 2)
            cancelled = self.event(self.cancelled, key)
            context.add_callback(cancelled.set)
            call["key"] = key
            end = time.monotonic() + float(seconds)
            while time.monotonic() < end and context.is_active():
                time.sleep(0.01)
            self.event(self.finished, key).set()
            return b"slept"
        if request == b"meta":
            pairs = [(k, v) for k, v in context.invocation_metadata() if k.startswith("x-")]
            context.send_initial_metadata([(k.replace("x-", "x-initial-", 1), v) for k, v in pairs])
            context.set_trailing_metadata([(k.replace("x-", "x-trailing-", 1), v) for k, v in pairs])
            return b"meta"
        return request

    def _server_stream(self, request: bytes, context: grpc.ServicerContext):
        self._record("ServerStream", context)
        if request.startswith(b"trickle:"):
            # b"trickle:<count>:<seconds>": one message at once, the other count-1 spread over the seconds.
            _, count, seconds = request.decode().split(":")
            for i in range(int(count)):
                if i:
                    time.sleep(float(seconds) / (int(count) - 1))
                yield f"part {i}".encode()
            return
        count, size = (int(x) for x in request.split(b":"))
        for i in range(count):
            yield det_bytes(size, i)

    def _client_stream(self, requests, context: grpc.ServicerContext) -> bytes:
        self._record("ClientStream", context)
        digest = hashlib.sha256()
        count = 0
        for message in requests:
            digest.update(message)
            count += 1
        return f"{count}:{digest.hexdigest()}".encode()

    def _bidi(self, requests, context: grpc.ServicerContext):
        self._record("BidiStream", context)
        for message in requests:
            if message.startswith(b"upper:"):
                yield message[6:].upper()
            else:
                yield message


class EchoStub:
    """The four methods as multicallables on a channel (bytes pass through)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.unary = channel.unary_unary(f"/{SERVICE}/Unary")
        self.server_stream = channel.unary_stream(f"/{SERVICE}/ServerStream")
        self.client_stream = channel.stream_unary(f"/{SERVICE}/ClientStream")
        self.bidi = channel.stream_stream(f"/{SERVICE}/BidiStream")


def channel(address: str, authority: str | None = None) -> grpc.Channel:
    """An insecure (h2c) channel to ``address``; ``authority`` sets :authority."""
    options = list(OPTIONS)
    if authority is not None:
        options.append(("grpc.default_authority", authority))
    return grpc.insecure_channel(address, options=options)

"""A tap client for the benchmarks: one match-everything tap on a proxy's tap port, its events read and
counted as fast as they come (what ``meshproxy viz tap`` or Linkerd's tap API would do), until killed.

Usage: python -m benchmarks.lib.tapsink HOST:PORT. Prints ``events N`` every second on stdout. The request
is written by hand (the proxy's tap API takes protobuf bytes; a generic gRPC call needs no generated code):
ObserveRequest{limit: 2**32-1, match: {all: {}}}.
"""

from __future__ import annotations

import sys
import threading
import time

import grpc

OBSERVE = "/io.linkerd.proxy.tap.Tap/Observe"
REQUEST = b"\x08\xff\xff\xff\xff\x0f" + b"\x12\x02\x0a\x00"


def main(target: str) -> int:
    channel = grpc.insecure_channel(target)
    call = channel.unary_stream(OBSERVE, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    count = [0]

    def report() -> None:
        while True:
            time.sleep(1.0)
            print(f"events {count[0]}", flush=True)

    threading.Thread(target=report, daemon=True).start()
    try:
        for _event in call(REQUEST):
            count[0] += 1
    except grpc.RpcError as err:
        print(f"tap ended: {err.code().name} {err.details()}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

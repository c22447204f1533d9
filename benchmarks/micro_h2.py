"""Micro-benchmark of the HTTP/2 codec: HPACK encode/decode and frame reading, compiled vs uncompiled vs reference.

Standalone: ``.venv/bin/python benchmarks/micro_h2.py [--quick] [--cpu N]``.
HPACK cases time a typical gRPC request head, response head and trailers
through ``proxy.protocol.hpack`` compiled, the same ``hpack.py`` loaded
uncompiled, and the pure-Python reference package ``hpack``. "warm" means
the context already saw the same list once (every field is then one table
reference); "cold" builds a fresh context per operation, so every field is a
Huffman literal. Frame reading feeds 64 KiB chunks of a recorded-shape gRPC
exchange (and of 16 KiB DATA frames) to ``FrameReader``, compiled and
uncompiled, and to h2's ``FrameBuffer`` (hyperframe) for scale.
Figures are the minimum over repeats of the mean per operation, including
the Python call itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import hpack as ref_hpack  # noqa: E402  (the reference package, not ours)

from proxy.protocol import h2frame, hpack  # noqa: E402

GRPC_REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/helloworld.Greeter/SayHello"),
    (b":authority", b"greeter.default.svc.cluster.local:8080"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"grpc-accept-encoding", b"identity,deflate,gzip"),
    (b"user-agent", b"grpc-go/1.62.1"),
]
GRPC_RESPONSE = [
    (b":status", b"200"),
    (b"content-type", b"application/grpc"),
    (b"grpc-encoding", b"identity"),
    (b"grpc-accept-encoding", b"identity,deflate,gzip"),
]
GRPC_TRAILERS = [(b"grpc-status", b"0"), (b"grpc-message", b"")]
HEAD_LISTS = [("grpc request (8 fields)", GRPC_REQUEST), ("grpc response (4)", GRPC_RESPONSE),
              ("grpc trailers (2)", GRPC_TRAILERS)]


def load_pure(name: str):
    """The same source, loaded uncompiled under another module name."""
    source = ROOT / "proxy" / "protocol" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"micro_h2_pure_{name}", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_op_ns(func, number: int, repeat: int) -> float:
    timeit.timeit(func, number=max(number // 10, 1))  # warm caches and branch predictors first
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e9


def machine() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    import Cython

    return (
        f"{platform.node()} | {cpu} x{os.cpu_count()} | {platform.system()} {platform.release()} | "
        f"Python {platform.python_version()} | Cython {Cython.__version__} | hpack {ref_hpack.__version__}"
    )


def hpack_rows(pure_hpack, number: int, repeat: int):
    builds = [("compiled", hpack), ("uncompiled", pure_hpack)]
    rows = []
    for label, headers in HEAD_LISTS:
        cold_block = hpack.Encoder().encode(headers)
        warm_enc = hpack.Encoder()
        warm_enc.encode(headers)
        warm_block = warm_enc.encode(headers)
        ref_cold_block = ref_hpack.Encoder().encode(headers)
        for op in ("decode warm", "decode cold", "encode warm", "encode cold"):
            cells = []
            for _, mod in builds:
                if op == "decode warm":
                    dec = mod.Decoder()
                    dec.decode(cold_block)
                    assert dec.decode(warm_block) == headers
                    func = lambda dec=dec, warm_block=warm_block: dec.decode(warm_block)  # noqa: E731
                elif op == "decode cold":
                    func = lambda mod=mod, cold_block=cold_block: mod.Decoder().decode(cold_block)  # noqa: E731
                elif op == "encode warm":
                    enc = mod.Encoder()
                    enc.encode(headers)
                    func = lambda enc=enc, headers=headers: enc.encode(headers)  # noqa: E731
                else:
                    func = lambda mod=mod, headers=headers: mod.Encoder().encode(headers)  # noqa: E731
                cells.append(per_op_ns(func, number, repeat))
            # The reference package, on its own blocks (same fields, its own choices).
            if op == "decode warm":
                rdec = ref_hpack.Decoder()
                rdec.decode(ref_cold_block, raw=True)
                renc = ref_hpack.Encoder()
                renc.encode(headers)
                ref_warm = renc.encode(headers)
                rdec2 = ref_hpack.Decoder()
                rdec2.decode(ref_cold_block, raw=True)
                func = lambda rdec2=rdec2, ref_warm=ref_warm: rdec2.decode(ref_warm, raw=True)  # noqa: E731
            elif op == "decode cold":
                func = lambda block=ref_cold_block: ref_hpack.Decoder().decode(block, raw=True)  # noqa: E731
            elif op == "encode warm":
                renc2 = ref_hpack.Encoder()
                renc2.encode(headers)
                func = lambda renc2=renc2, headers=headers: renc2.encode(headers)  # noqa: E731
            else:
                func = lambda headers=headers: ref_hpack.Encoder().encode(headers)  # noqa: E731
            cells.append(per_op_ns(func, max(number // 10, 1), repeat))
            rows.append((label, op, *cells))
    return rows


def other_rows(pure_hpack, pure_frame, number: int, repeat: int):
    """Field validation and frame writers, compiled vs uncompiled."""
    block = hpack.Encoder().encode(GRPC_REQUEST)
    cases = [
        ("validate_headers request", lambda m: lambda: m.validate_headers(GRPC_REQUEST, True, False), "hpack"),
        ("validate_headers response", lambda m: lambda: m.validate_headers(GRPC_RESPONSE, False, False), "hpack"),
        ("window_update", lambda m: lambda: m.window_update(1, 65535), "h2frame"),
        ("data_frame 100 B", lambda m: lambda: m.data_frame(1, b"x" * 100, True), "h2frame"),
        ("headers_frames", lambda m: lambda: m.headers_frames(1, block, False), "h2frame"),
        ("settings_frame 3 pairs", lambda m: lambda: m.settings_frame([(1, 4096), (3, 100), (4, 1 << 20)]), "h2frame"),
    ]
    rows = []
    for label, make, which in cases:
        compiled = hpack if which == "hpack" else h2frame
        uncompiled = pure_hpack if which == "hpack" else pure_frame
        rows.append((label, per_op_ns(make(compiled), number, repeat), per_op_ns(make(uncompiled), number, repeat)))
    return rows


def grpc_exchange(mod) -> bytes:
    """One unary gRPC call as the proxy's server side reads it, warm HPACK tables."""
    enc = hpack.Encoder()
    enc.encode(GRPC_REQUEST)
    request = enc.encode(GRPC_REQUEST)
    return (
        mod.headers_frames(1, request, False)
        + mod.data_frame(1, b"\x00\x00\x00\x00\x20" + b"m" * 32, True)
        + mod.window_update(0, 37)
        + mod.ping(b"12345678")
        + mod.rst_stream(1, 0)
        + mod.settings_frame(ack=True)
    )


def chunks_of(data: bytes, size: int = 65536) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def read_with(mod, chunks):
    reader = mod.FrameReader(max_frame_size=16384)
    need_more = mod.NEED_MORE
    frames = 0
    for chunk in chunks:
        reader.feed(chunk)
        while reader.next_frame() is not need_more:
            frames += 1
    return frames


def read_with_h2(chunks):
    from h2.frame_buffer import FrameBuffer

    buf = FrameBuffer(server=False)
    buf.max_frame_size = 16384
    frames = 0
    for chunk in chunks:
        buf.add_data(chunk)
        for _ in buf:
            frames += 1
    return frames


def frame_rows(pure_frame, repeat: int, quick: bool):
    exchange = grpc_exchange(h2frame)
    small = exchange * (200 if quick else 1000)
    big = h2frame.data_frame(1, b"d" * 16384) * (64 if quick else 256)
    rows = []
    for label, wire in (("grpc exchange frames", small), ("16 KiB DATA frames", big)):
        chunks = chunks_of(wire)
        count = read_with(h2frame, chunks)
        assert read_with(pure_frame, chunks) == count
        cells = []
        for func in (lambda chunks=chunks: read_with(h2frame, chunks),
                     lambda chunks=chunks: read_with(pure_frame, chunks),
                     lambda chunks=chunks: read_with_h2(chunks)):
            seconds = min(timeit.repeat(func, number=1, repeat=repeat))
            cells.append((seconds / count * 1e9, len(wire) / seconds / 1e6))
        rows.append((label, count, len(wire), cells))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (about 2 s instead of about 25 s)")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if not (hpack.__file__.endswith(".so") and h2frame.__file__.endswith(".so")):
        print("compiled modules not found; build them first", file=sys.stderr)
        return 1
    number, repeat = (2000, 3) if args.quick else (20000, 5)
    pure_hpack = load_pure("hpack")
    pure_frame = load_pure("h2frame")

    print(f"machine: {machine()}")
    print(f"settings: number={number} repeat={repeat} (reference: number/10)\n")
    print("HPACK, ns per operation (min over repeats)")
    print(f"{'header list':<26}{'operation':<14}{'compiled':>10}{'uncompiled':>12}"
          f"{'ref hpack':>12}{'ref/compiled':>14}")
    for label, op, compiled, uncompiled, ref in hpack_rows(pure_hpack, number, repeat):
        print(f"{label:<26}{op:<14}{compiled:>10.0f}{uncompiled:>12.0f}{ref:>12.0f}{ref / compiled:>13.1f}x")

    print("\nValidation and frame writers, ns per call")
    print(f"{'call':<40}{'compiled':>10}{'uncompiled':>12}")
    for label, compiled, uncompiled in other_rows(pure_hpack, pure_frame, number, repeat):
        print(f"{label:<40}{compiled:>10.0f}{uncompiled:>12.0f}")

    print("\nFrame reading (64 KiB feeds), ns per frame and MB/s")
    print(f"{'stream':<24}{'frames':>8}{'bytes':>10}{'compiled':>20}{'uncompiled':>20}{'h2 FrameBuffer':>20}")
    for label, count, size, cells in frame_rows(pure_frame, repeat, args.quick):
        text = "".join(f"{ns:>9.0f} ns {mbs:>6.0f} MB/s" for ns, mbs in cells)
        print(f"{label:<24}{count:>8}{size:>10}{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

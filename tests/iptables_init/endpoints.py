"""Tiny TCP endpoints for the traffic tests, run inside the tests' network namespaces.

Standard library only and runnable by any uid (the tests copy it somewhere
world-readable), because the stand-in proxy runs as the proxy uid:

    endpoints.py serve PORT=ROLE:LABEL ...      listen on each PORT (IPv4 and IPv6), print "ready"
    endpoints.py connect HOST,PORT[,SOURCE] ...  for each, print the line the server sends (or "error ...")

Roles: ``here`` answers "LABEL <local address> <local port>"; ``orig``
answers "LABEL <original destination>" from SO_ORIGINAL_DST (the inbound
stand-in); ``forward`` connects to the original destination and answers
"LABEL <original destination> via <what that server said>" (the outbound
stand-in, which must not be redirected back into itself).
"""

import socket
import struct
import sys
import threading

SO_ORIGINAL_DST = 80  # the same number for IPv4 (SOL_IP) and IPv6 (SOL_IPV6)


def original_dst(conn):
    if conn.family == socket.AF_INET6:
        raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack_from("!H", raw, 2)[0]
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    return socket.inet_ntoa(raw[4:8]), struct.unpack_from("!H", raw, 2)[0]


def answer(role, label, conn):
    if role == "here":
        host, port = conn.getsockname()[:2]
        return f"{label} {host} {port}"
    host, port = original_dst(conn)
    if role == "orig":
        return f"{label} {host} {port}"
    with socket.create_connection((host, port), timeout=3) as upstream:
        said = upstream.makefile().readline().strip()
    return f"{label} {host} {port} via {said}"


def serve(listener, role, label):
    while True:
        conn, _ = listener.accept()
        with conn:
            try:
                text = answer(role, label, conn)
            except OSError as err:
                text = f"error {err}"
            conn.sendall(text.encode() + b"\n")


def main(argv):
    if argv[0] == "connect":
        for spec in argv[1:]:
            host, port, *source = spec.split(",")
            try:
                bind = (source[0], 0) if source else None
                with socket.create_connection((host, int(port)), timeout=3, source_address=bind) as conn:
                    print(conn.makefile().readline().strip() or "error: closed without a word", flush=True)
            except OSError as err:
                print(f"error: {err!r}", flush=True)
        return
    for spec in argv[1:]:
        port, _, what = spec.partition("=")
        role, _, label = what.partition(":")
        for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind((host, int(port)))
            listener.listen(16)
            threading.Thread(target=serve, args=(listener, role, label), daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or kills us)


if __name__ == "__main__":
    main(sys.argv[1:])

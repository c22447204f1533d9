"""Reusable parts of the whole-proxy tests.

``ports`` hands out free loopback ports; ``wire`` reads HTTP/1 messages off
a socket without hiding a byte; ``servers`` and ``upstream`` are the peers a
test points the proxy at (each records exactly what it received);
``clients`` drives the proxy with raw sockets, curl and requests;
``meshproxy`` runs the proxy as a child process; ``nginx`` runs a throwaway
nginx; ``metrics`` reads Prometheus text; ``checks`` holds shared asserts.
For hostile input: ``rawbackend`` is an HTTP/1 origin with scripted answers
and windowed recordings, ``tcptap`` records what a client sent a server,
``strict_h1`` and ``strict_h2`` judge captured bytes by strict rules.
"""

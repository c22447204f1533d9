"""Sans-IO protocol codecs: HTTP/1, HTTP/2 frames, HPACK, stream states, detection, the transport header.

Bytes in, events out; no socket, no loop, no clock. Nothing here imports from
the layers above (exchange, http, inbound, outbound).
"""

"""Every ``l5d-*`` header name the proxy reads or writes, spelled once (lower case, as HTTP/2 sends them)."""

# Set on synthesized error responses: why the proxy answered itself.
PROXY_ERROR = b"l5d-proxy-error"
# Outbound: the authority to route to instead of Host / :authority.
DST_OVERRIDE = b"l5d-dst-override"
# Inbound: the verified identity of the client proxy (only this proxy sets it).
CLIENT_ID = b"l5d-client-id"
# Between proxies: the HTTP/1 version (and form) a request had before it crossed the hop as HTTP/2.
ORIG_PROTO = b"l5d-orig-proto"

# Every l5d-* field the proxy gives meaning to (a route's header filter may edit none of them).
ALL = (PROXY_ERROR, DST_OVERRIDE, CLIENT_ID, ORIG_PROTO)

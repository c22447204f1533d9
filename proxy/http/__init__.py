"""The relays that frame exchanges onto connections: HTTP/1 and HTTP/2, server and client side, pools, tunnels."""

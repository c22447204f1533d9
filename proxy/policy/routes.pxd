# Typed declarations for routes.py: none; the .pxd only has the module compiled, so RouteTable.match
# (every request of a service with routes, outbound and inbound) runs as C, not interpreted bytecode.

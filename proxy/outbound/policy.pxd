# Typed declarations for policy.py: none; the .pxd only has the module compiled, so the per-request
# calls (ServiceRuntime.match, backend_for, RoutePolicy.picked) run as C, not interpreted bytecode.

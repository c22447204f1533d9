# Typed declarations for split.py: none; the .pxd only has the module compiled, so a traffic split's
# pick (WeightedBackends.index, every request of a split service) runs as C, not interpreted bytecode.

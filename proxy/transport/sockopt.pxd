# sockopt.pyx: a hand-written .pyx (a C call on a raw buffer); nothing to share.

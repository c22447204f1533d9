# sockopt.pyx: a hand-written .pyx (C calls on raw buffers and sockaddrs); nothing to share.

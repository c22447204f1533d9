# malloc.pyx: a hand-written .pyx (one C call); nothing to share.

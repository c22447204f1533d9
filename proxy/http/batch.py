"""Write coalescing: many frames or responses produced while one read is processed leave in one write per connection.

While a read is being processed (``batch_begin``..``batch_end``), a connection's
``flush`` only marks it dirty (``batch_defer``); every dirty connection writes
once (``write_out``) when the outermost read callback returns. One read
carrying ten requests then costs one write upstream instead of ten
(profiling showed 88% of the time in write()).

The meshed hop's HTTP/1 side feeds one HTTP/2 connection from many sockets:
fifty HTTP/1 clients read in one loop iteration would otherwise mean fifty
writes to the one connection to the peer proxy. Callbacks of such sockets
close their batch with ``batch_end_at_tick``: what they marked is written at the
end of the loop iteration (one ``call_soon`` per iteration, not per request).
"""

# Module globals (C globals compiled: a list cell cost a list index and a boxed int per read callback).
_depth = 0
_dirty: list = []  # connections marked for a write when the outermost batch ends
_tick = False


def batch_begin():
    global _depth
    _depth += 1


def batch_defer(conn):
    """While a read is being processed, mark ``conn`` (``.dirty``, ``.write_out()``) for one write at its end.

    True if deferred.
    """
    if _depth == 0:
        return False
    if not conn.dirty:
        conn.dirty = True
        _dirty.append(conn)
    return True


def batch_end():
    global _depth
    _depth -= 1
    if _depth == 0:
        _write_dirty()


def batch_end_at_tick(loop):
    """Like ``batch_end``, but what the batch marked is written at the end of the loop iteration."""
    global _depth, _tick
    _depth -= 1
    if _depth == 0 and _dirty and not _tick:
        _tick = True
        loop.call_soon(_tick_done)


def _tick_done():
    global _tick
    _tick = False
    if _depth == 0:
        _write_dirty()


def _write_dirty():
    while _dirty:
        conns = list(_dirty)
        del _dirty[:]
        for conn in conns:
            conn.dirty = False
            conn.write_out()

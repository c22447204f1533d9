"""One request's life, the same for every protocol (compiled).

``core.Exchange`` routes, authorizes, sheds, picks, attempts, retries,
times out, classifies, settles the balancer, counts, and turns errors into
responses; the relays in ``proxy.http`` only frame bytes and call into it
through the two interfaces in ``ends``. Nothing here touches a socket or a
byte of a message, so the core is driven in tests by in-memory ends and a
fake clock.
"""

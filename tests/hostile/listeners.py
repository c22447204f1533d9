"""The two listeners every vector goes through, and the readable test ids built from them."""

from __future__ import annotations

import pytest

LISTENERS = ("outbound", "inbound")


def cases(vectors, listeners=LISTENERS) -> list:
    """(listener, vector) pairs with readable ids: ``outbound-smuggle-cl-te.plain``."""
    return [pytest.param(listener, v, id=f"{listener}-{v.id}") for v in vectors for listener in listeners]

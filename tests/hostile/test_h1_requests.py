"""Every hostile HTTP/1 request of the corpus, sent whole to both listeners."""

from __future__ import annotations

import pytest

from .findings import assert_clean
from .harness_h1 import run_request
from .listeners import cases
from .vectors_h1 import VECTORS

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize("listener, vector", cases(VECTORS))
def test_request(proxy, backend, listener, vector):
    assert_clean(run_request(proxy, getattr(proxy, listener), backend, vector))

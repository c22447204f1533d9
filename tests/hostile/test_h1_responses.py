"""Every hostile HTTP/1 response of the corpus, answered by the backend through both listeners."""

from __future__ import annotations

import pytest

from .findings import assert_clean
from .harness_h1 import run_response
from .listeners import cases
from .vectors_h1_responses import RESPONSES

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize("listener, vector", cases(RESPONSES))
def test_response(proxy, backend, listener, vector):
    assert_clean(run_response(proxy, getattr(proxy, listener), backend, vector))

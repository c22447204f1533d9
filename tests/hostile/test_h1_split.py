"""Part of the HTTP/1 request corpus again, sent one byte per read and cut at every CR and LF.

A parser that only judges what one read brings (a CR at the end of one
segment, the LF at the start of the next; a header name cut before its
colon) decides differently than on the whole input; the verdict must not change.
"""

from __future__ import annotations

import pytest

from .findings import assert_clean
from .harness_h1 import run_request
from .listeners import LISTENERS
from .vectors_h1 import BY_ID, SPLIT_IDS

pytestmark = pytest.mark.timeout(20)

CASES = [pytest.param(listener, mode, BY_ID[vid], id=f"{listener}-{mode}-{vid}")
         for vid in SPLIT_IDS for mode in ("bytes", "lines") for listener in LISTENERS]


@pytest.mark.parametrize("listener, mode, vector", CASES)
def test_request_split(proxy, backend, listener, mode, vector):
    assert_clean(run_request(proxy, getattr(proxy, listener), backend, vector, mode=mode))

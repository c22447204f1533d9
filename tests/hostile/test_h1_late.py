"""An HTTP request whose first byte comes alone, the rest after the detect timeout: still parsed as HTTP.

Protocol detection gives up after ``MESHPROXY_DETECT_TIMEOUT`` (1 s here);
a connection whose first bytes look like HTTP must not then be relayed as
opaque bytes, or a request smuggled in it reaches the app unparsed.
"""

from __future__ import annotations

import pytest

from .findings import assert_clean
from .harness_h1 import run_request
from .listeners import LISTENERS
from .vectors_h1 import BY_ID

pytestmark = pytest.mark.timeout(20)

PROXY_ENV = {"MESHPROXY_DETECT_TIMEOUT": "1s"}
LATE_IDS = ["smuggle-cl-te.plain", "smuggle-te-cl.plain", "crlf.lf-after-request-line", "method.at-sign"]


CASES = [pytest.param(listener, BY_ID[vid], id=f"{listener}-late-{vid}") for vid in LATE_IDS for listener in LISTENERS]


@pytest.mark.parametrize("listener, vector", CASES)
def test_request_after_detect_timeout(proxy, backend, listener, vector):
    assert_clean(run_request(proxy, getattr(proxy, listener), backend, vector, mode="late"))

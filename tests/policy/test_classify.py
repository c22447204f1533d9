"""Response classification (status ranges, gRPC codes, Linkerd's default) and retry decisions."""

from __future__ import annotations

import pytest

from proxy.policy.classify import classify, should_retry
from proxy.policy.model import DEFAULT_ROUTE, ResponseClass, RetryPolicy, Route


@pytest.mark.parametrize("status,failure",
                         [(200, False), (404, False), (499, False), (500, True), (503, True), (599, True)])
def test_default_5xx_is_failure(status, failure):
    assert classify(DEFAULT_ROUTE, status) is failure


def test_default_grpc_non_ok_is_failure():
    assert classify(DEFAULT_ROUTE, 200, 0) is False
    assert classify(DEFAULT_ROUTE, 200, 14) is True


def test_route_classes_first_match_wins():
    route = Route("r", response_classes=(
        ResponseClass(False, 503, 503),          # 503 is "success" here (e.g. load shedding is expected)
        ResponseClass(True, 400, 499),
        ResponseClass(True, None, None, frozenset({14, 4})),
    ))
    assert classify(route, 503) is False
    assert classify(route, 500) is True          # no class: default
    assert classify(route, 404) is True
    assert classify(route, 200, 14) is True
    assert classify(route, 200, 4) is True
    assert classify(route, 200, 5) is True       # non-OK gRPC by default
    assert classify(route, 200, 0) is False


def test_open_ended_range_and_catch_all():
    assert classify(Route("r", response_classes=(ResponseClass(True, 400, None),)), 404) is True
    assert classify(Route("r", response_classes=(ResponseClass(False),)), 500) is False


def test_grpc_class_ignores_plain_http():
    route = Route("r", response_classes=(ResponseClass(False, None, None, frozenset({14})),))
    assert classify(route, 200, 14) is False
    assert classify(route, 200, None) is False


def test_should_retry_with_annotation_policy():
    route = Route("r", retry=RetryPolicy(2, ((500, 599),), frozenset({14})), is_retryable=True)
    assert should_retry(route, 503)
    assert not should_retry(route, 429)
    assert should_retry(route, 200, 14)
    assert not should_retry(route, 200, 13)


def test_should_retry_profile_style():
    assert should_retry(Route("r", is_retryable=True), 500)
    assert not should_retry(Route("r", is_retryable=True), 404)
    assert not should_retry(Route("r"), 500)

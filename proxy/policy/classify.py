"""Response classification: is a response a failure (for metrics, accrual) and is it worth a retry.

Linkerd's default when no response class matches: HTTP 5xx is a failure,
and for gRPC any ``grpc-status`` other than 0 (OK) is a failure.
"""

from __future__ import annotations

from proxy.policy.model import Route


def classify(route: Route, status: int, grpc_status: int | None = None) -> bool:
    """True when the response is a failure; the route's first matching response class decides."""
    for rc in route.response_classes:
        has_range = rc.status_min is not None or rc.status_max is not None
        if has_range:
            lo = 100 if rc.status_min is None else rc.status_min
            hi = 599 if rc.status_max is None else rc.status_max
            if lo <= status <= hi:
                return rc.is_failure
        if rc.grpc_codes is not None and grpc_status is not None and grpc_status in rc.grpc_codes:
            return rc.is_failure
        if not has_range and rc.grpc_codes is None:
            return rc.is_failure
    if status >= 500:
        return True
    return grpc_status is not None and grpc_status != 0


def should_retry(route: Route, status: int, grpc_status: int | None = None) -> bool:
    """Whether this response may be retried (the budget and attempt limit are checked elsewhere).

    A Linkerd retry annotation policy retries exactly its listed statuses / gRPC
    codes; a ServiceProfile ``isRetryable`` route retries what ``classify`` calls a failure.
    """
    policy = route.retry
    if policy is not None:
        if grpc_status is not None and grpc_status in policy.grpc_codes:
            return True
        return any(lo <= status <= hi for lo, hi in policy.http_statuses)
    return route.is_retryable and classify(route, status, grpc_status)

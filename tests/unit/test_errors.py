"""The failure policy table."""

from __future__ import annotations

import pytest
from modelyard.errors import (
    DeadlineExceededError,
    DecodeError,
    Disposition,
    ModelError,
    OverloadedError,
    PayloadTooLargeError,
    UnavailableError,
    ValidationError,
    policy_for,
)


@pytest.mark.parametrize(
    ("error", "disposition", "status"),
    [
        (DecodeError("x"), Disposition.DEAD_LETTER, "INVALID_ARGUMENT"),
        (ValidationError("x"), Disposition.DEAD_LETTER, "INVALID_ARGUMENT"),
        (PayloadTooLargeError("x"), Disposition.DEAD_LETTER, "RESOURCE_EXHAUSTED"),
        (ModelError("x"), Disposition.DEAD_LETTER, "INTERNAL"),
        (UnavailableError("x"), Disposition.RETRY, "UNAVAILABLE"),
        (OverloadedError("x"), Disposition.RETRY, "RESOURCE_EXHAUSTED"),
        (DeadlineExceededError("x"), Disposition.REPLY_ERROR, "DEADLINE_EXCEEDED"),
        (ZeroDivisionError("x"), Disposition.DEAD_LETTER, "INTERNAL"),
    ],
)
def test_policy_for_each_kind(error: BaseException, disposition: Disposition, status: str) -> None:
    policy = policy_for(error)
    assert (policy.disposition, policy.grpc_status) == (disposition, status)

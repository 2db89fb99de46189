"""The gateway's transport-neutral parts: matching replies to waiters, trace headers, errors."""

from __future__ import annotations

import asyncio

import pytest
from modelyard.errors import (
    DeadlineExceededError,
    ModelError,
    ModelyardError,
    RetryableError,
    UnavailableError,
    ValidationError,
    error_class,
    policy_for,
)
from modelyard.gateway.carrier import request_carrier, trace_id_of
from modelyard.gateway.pending import RESULT, STAGE, Pending
from modelyard.wire import Envelope
from opentelemetry.sdk.trace import TracerProvider

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_results_reach_their_waiters_and_strays_are_dropped() -> None:
    async def main() -> None:
        pending = Pending()
        a, b = pending.expect_result("a"), pending.expect_result("b")
        queue = pending.expect_events("s")
        pending.deliver([
            (RESULT, Envelope("b", {"n": 2})),
            (STAGE, Envelope("a", {"ignored": 1})),  # unary waiters want the result only
            (RESULT, Envelope("nobody")),
            (STAGE, Envelope("s", stage="ocr")),
            (RESULT, Envelope("s")),
            (RESULT, Envelope("a", {"n": 1})),
            (RESULT, Envelope("a", {"n": "duplicate"})),
        ])  # fmt: skip
        assert (await a).fields == {"n": 1}
        assert (await b).fields == {"n": 2}
        assert [await queue.get(), await queue.get()] == [
            (STAGE, Envelope("s", stage="ocr")),
            (RESULT, Envelope("s")),
        ]
        for rid in ("a", "b", "s"):
            pending.forget(rid)
        assert len(pending) == 0

    asyncio.run(main())


def test_failures_end_the_wait_of_one_or_all() -> None:
    async def main() -> None:
        pending = Pending()
        one, other = pending.expect_result("one"), pending.expect_result("other")
        queue = pending.expect_events("s")
        pending.fail("one", UnavailableError("not delivered"))
        with pytest.raises(UnavailableError):
            await one
        pending.fail_all(UnavailableError("closing"))
        with pytest.raises(UnavailableError, match="closing"):
            await other
        assert isinstance(await queue.get(), UnavailableError)
        with pytest.raises(ValidationError, match="already in flight"):
            pending.expect_events("s")

    asyncio.run(main())


def test_a_carrier_keeps_the_callers_trace_or_starts_one() -> None:
    given = [("traceparent", TRACEPARENT.encode())]
    assert request_carrier(carrier=given) == (given, "0af7651916cd43dd8448eb211c80319c")
    fresh, trace_id = request_carrier()
    assert trace_id_of(fresh) == trace_id
    assert fresh[0][1].decode().endswith("-01")  # sampled: the router's sampler decides
    assert request_carrier()[1] != trace_id


def test_a_carrier_continues_the_current_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("caller") as span:
        carrier, trace_id = request_carrier()
    assert trace_id == f"{span.get_span_context().trace_id:032x}"
    assert trace_id_of(carrier) == trace_id


@pytest.mark.parametrize(
    "value", ["", "00-abc-def-01", f"00-{'0' * 32}-b7ad6b7169203331-01", f"00-{'z' * 32}-x-01"]
)
def test_malformed_traceparents_have_no_trace_id(value: str) -> None:
    assert trace_id_of([("traceparent", value.encode())]) is None


@pytest.mark.parametrize(
    ("code", "cls", "status"),
    [
        ("validation", ValidationError, "INVALID_ARGUMENT"),
        ("model", ModelError, "INTERNAL"),
        ("deadline", DeadlineExceededError, "DEADLINE_EXCEEDED"),
        ("unavailable", RetryableError, "UNAVAILABLE"),
        ("too_large", None, "RESOURCE_EXHAUSTED"),
        ("unauthenticated", None, "UNAUTHENTICATED"),
        ("something-new", ModelyardError, "INTERNAL"),
    ],
)
def test_error_codes_from_the_wire_map_to_classes_and_statuses(
    code: str, cls: type[ModelyardError] | None, status: str
) -> None:
    found = error_class(code)
    if cls is not None:
        assert found is cls
    assert found.code == code or found is ModelyardError
    assert policy_for(found("x")).grpc_status == status

"""The router's gRPC servicer on requests and results it cannot pass on: refused with a status
and an error code, never an exception that escapes as UNKNOWN."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import pytest
from modelyard.api.pipeline.v1 import pipeline_pb2 as pb
from modelyard.auth import Authenticator
from modelyard.gateway.servicer import ERROR_CODE_KEY, PipelineServicer
from modelyard.wire import Envelope


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, trailing: Sequence[tuple[str, str]]) -> None:
        super().__init__(code)
        self.code, self.trailing = code, dict(trailing)


class Context:
    def __init__(self, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self.metadata = tuple(metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}  # no TLS: no peer certificate

    async def abort(
        self, code: grpc.StatusCode, details: str, trailing_metadata: Sequence[Any] = ()
    ) -> None:
        raise Aborted(code, trailing_metadata)


class Gateway:
    """Answers every request with ``fields`` as its result."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields, self.calls = fields, 0

    async def submit(self, pipeline: str, fields: Mapping[str, Any], **options: Any) -> Envelope:
        self.calls += 1
        return Envelope(options["request_id"], self.fields, pipeline, served_by={})


def _infer(
    gateway: Gateway,
    metadata: Sequence[tuple[str, str]] = (),
    auth: Authenticator | None = None,
) -> Aborted:
    servicer = PipelineServicer(gateway, auth=auth)  # type: ignore[arg-type]
    request = pb.InferRequest(id="r-1", pipeline="docs")
    with pytest.raises(Aborted) as info:
        asyncio.run(servicer.Infer(request, Context(metadata)))  # type: ignore[arg-type]
    return info.value


def test_a_caller_the_router_would_refuse_is_refused_here() -> None:
    gateway = Gateway({})
    # the header names the caller only on a trusted network; elsewhere it is ignored
    aborted = _infer(
        gateway, [("x-modelyard-caller", "c" * 1025)], Authenticator("trusted-network")
    )
    assert aborted.code == grpc.StatusCode.INVALID_ARGUMENT
    assert aborted.trailing[ERROR_CODE_KEY] == "validation"
    assert gateway.calls == 0  # never sent: the router could not have decoded it


def test_a_result_field_that_is_no_tensor_is_a_model_error() -> None:
    # a stage answered a ragged list; building the response raised out of Infer (UNKNOWN)
    aborted = _infer(Gateway({"text": [[1, 2], [3]]}))
    assert aborted.code == grpc.StatusCode.INTERNAL
    assert aborted.trailing[ERROR_CODE_KEY] == "model"

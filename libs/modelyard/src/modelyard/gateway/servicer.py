"""``modelyard.pipeline.v1.PipelineService`` for ``grpc.aio``: a thin adapter over the gateway.

It names the caller, decodes the request, opens a SERVER span continuing the caller's trace,
calls :class:`PipelineGateway` and encodes what comes back. A failed request ends the call with
the gRPC status ``errors.POLICY`` gives its error code, and the code, stage and request id in
the trailing metadata.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import grpc.aio
import numpy as np
import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from modelyard.errors import ModelyardError, ValidationError, error_class, policy_for
from modelyard.gateway.carrier import request_carrier
from modelyard.gateway.core import PipelineGateway
from modelyard.gateway.pending import STAGE
from modelyard.gateway.principal import Metadata, PrincipalResolver, TokenPrincipals
from modelyard.gateway.tensors import inputs_from_proto, outputs_to_proto
from modelyard.pipeline.v1 import pipeline_pb2 as pb
from modelyard.pipeline.v1 import pipeline_pb2_grpc as pb_grpc
from modelyard.telemetry.hooks import Carrier
from modelyard.telemetry.tracing import extract, inject_current
from modelyard.wire import Envelope, ErrorInfo
from modelyard.wire.headers import H

__all__ = ["ERROR_CODE_KEY", "ERROR_STAGE_KEY", "REQUEST_ID_KEY", "PipelineServicer"]

REQUEST_ID_KEY = "x-modelyard-request-id"
ERROR_CODE_KEY = "x-modelyard-error-code"
ERROR_STAGE_KEY = "x-modelyard-error-stage"
Context = grpc.aio.ServicerContext[Any, Any]

log = structlog.get_logger(__name__)
_tracer = trace.get_tracer("modelyard.gateway")


@dataclass(frozen=True, slots=True)
class _Call:
    """One decoded request, ready for the gateway."""

    request_id: str
    pipeline: str
    fields: dict[str, np.ndarray[Any, Any]]
    caller: str
    deadline_ms: int | None
    carrier: Carrier
    trace_id: str

    def options(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "caller": self.caller,
            "deadline_ms": self.deadline_ms,
            "carrier": self.carrier,
        }


class PipelineServicer(pb_grpc.PipelineServiceServicer):
    """Serves every pipeline the routers behind ``gateway``'s broker run."""

    def __init__(self, gateway: PipelineGateway, principal: PrincipalResolver | None = None):
        self.gateway = gateway
        self.principal = principal or TokenPrincipals()

    async def Infer(self, request: pb.InferRequest, context: Context) -> pb.InferResponse:
        with _server_span("Infer", request, context) as span:
            call = await self._decode(request, context)
            try:
                result = await self.gateway.submit(call.pipeline, call.fields, **call.options())
            except ModelyardError as exc:
                await _abort_error(context, span, call.request_id, _info(exc))
            except Exception as exc:
                await _abort_crash(context, span, call.request_id, exc)
            if result.error is not None:
                await _abort_result(context, span, result)
            return response(result, call.trace_id)

    async def InferStream(
        self, request: pb.InferRequest, context: Context
    ) -> AsyncIterator[pb.InferEvent]:
        with _server_span("InferStream", request, context) as span:
            call = await self._decode(request, context)
            events = self.gateway.stream(call.pipeline, call.fields, **call.options())
            try:
                async for kind, envelope in events:
                    if kind == STAGE:
                        yield pb.InferEvent(stage=stage_result(envelope))
                        continue
                    yield pb.InferEvent(result=response(envelope, call.trace_id))
                    if envelope.error is not None:
                        await _abort_result(context, span, envelope)
            except ModelyardError as exc:
                await _abort_error(context, span, call.request_id, _info(exc))
            except Exception as exc:
                await _abort_crash(context, span, call.request_id, exc)
            finally:
                await events.aclose()  # stop waiting now, not when the generator is collected

    async def _decode(self, request: pb.InferRequest, context: Context) -> _Call:
        request_id = request.id or uuid.uuid4().hex
        try:
            return self._call(request, request_id, context)
        except ModelyardError as exc:
            span = trace.get_current_span()
            await _abort_error(context, span, request_id, _info(exc))

    def _call(self, request: pb.InferRequest, request_id: str, context: Context) -> _Call:
        metadata: Metadata = tuple(context.invocation_metadata() or ())
        caller = self.principal(metadata)
        if not request.pipeline:
            raise ValidationError("the request names no pipeline")
        carrier, trace_id = request_carrier(carrier=_trace_headers(metadata))
        return _Call(
            request_id=request_id,
            pipeline=request.pipeline,
            fields=inputs_from_proto(request.inputs),
            caller=caller,
            deadline_ms=_deadline_ms(request.timeout_ms, context.time_remaining()),
            carrier=carrier,
            trace_id=trace_id,
        )


def response(envelope: Envelope, trace_id: str = "") -> pb.InferResponse:
    """A final result envelope as an InferResponse."""
    return pb.InferResponse(
        id=envelope.request_id,
        pipeline=envelope.pipeline or "",
        outputs=outputs_to_proto(envelope.fields),
        served_by=dict(envelope.served_by or {}),
        error=_error(envelope.error),
        trace_id=trace_id,
    )


def stage_result(envelope: Envelope) -> pb.StageResult:
    """One stage's reply envelope as a StageResult."""
    return pb.StageResult(
        id=envelope.request_id,
        stage=envelope.stage or "",
        model=envelope.model or "",
        version=envelope.version or "",
        outputs=outputs_to_proto(envelope.fields),
        error=_error(envelope.error),
    )


def _error(error: ErrorInfo | None) -> pb.Error | None:
    if error is None:
        return None
    return pb.Error(code=error.code, message=error.message, stage=error.stage or "")


def _trace_headers(metadata: Metadata) -> Carrier:
    """The trace to continue: the server span when tracing is on, else the caller's headers."""
    if trace.get_current_span().get_span_context().is_valid:
        return inject_current([])
    wanted = (H.TRACEPARENT, H.TRACESTATE)
    return [(k, v if isinstance(v, bytes) else v.encode()) for k, v in metadata if k in wanted]


def _deadline_ms(timeout_ms: int, remaining_s: float | None) -> int | None:
    """The shorter of the request's timeout and the call's gRPC deadline, as epoch ms."""
    limits = [t for t in (timeout_ms / 1000 if timeout_ms else None, remaining_s) if t is not None]
    return int((time.time() + min(limits)) * 1000) if limits else None


@contextmanager
def _server_span(method: str, request: pb.InferRequest, context: Context) -> Iterator[trace.Span]:
    metadata = [
        (k, v if isinstance(v, bytes) else v.encode())
        for k, v in context.invocation_metadata() or ()
    ]
    attributes = {"rpc.system": "grpc", "rpc.service": "modelyard.pipeline.v1.PipelineService",
                  "rpc.method": method, "modelyard.pipeline": request.pipeline}  # fmt: skip
    with _tracer.start_as_current_span(
        f"PipelineService/{method}",
        context=extract(metadata),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,  # aborts are expected outcomes, recorded as status below
        set_status_on_exception=False,
    ) as span:
        yield span


async def _abort_result(context: Context, span: trace.Span, result: Envelope) -> NoReturn:
    assert result.error is not None
    await _abort_error(context, span, result.request_id, result.error)


async def _abort_error(
    context: Context, span: trace.Span, request_id: str, error: ErrorInfo
) -> NoReturn:
    status = getattr(
        grpc.StatusCode, policy_for(error_class(error.code)(error.message)).grpc_status
    )
    span.set_attribute("modelyard.outcome", error.code)
    span.set_status(Status(StatusCode.ERROR, error.code))
    trailing = [(REQUEST_ID_KEY, request_id), (ERROR_CODE_KEY, error.code)]
    message = error.message
    if error.stage:
        trailing.append((ERROR_STAGE_KEY, error.stage))
        message = f"stage {error.stage}: {message}"
    await context.abort(status, message, trailing_metadata=tuple(trailing))
    raise AssertionError("unreachable: abort raises")  # grpc stubs do not say NoReturn


def _info(exc: ModelyardError) -> ErrorInfo:
    return ErrorInfo(exc.code, exc.message)


async def _abort_crash(
    context: Context, span: trace.Span, request_id: str, exc: Exception
) -> NoReturn:
    """A bug: INTERNAL with a readable line; the traceback goes to the log."""
    log.exception("pipeline_grpc_crashed", request_id=request_id)
    message = f"internal error ({type(exc).__name__}) in request {request_id}"
    await _abort_error(context, span, request_id, ErrorInfo("internal", message))

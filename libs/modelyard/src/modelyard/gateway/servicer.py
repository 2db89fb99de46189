"""``modelyard.pipeline.v1.PipelineService`` for ``grpc.aio``: a thin adapter over the gateway.

It authenticates the caller (``modelyard.auth.Authenticator``, per the port's auth mode) and
checks it may call the pipeline, decodes the request, opens a SERVER span continuing the
caller's trace, calls :class:`PipelineGateway` and encodes what comes back. A refused call
(UNAUTHENTICATED, PERMISSION_DENIED) is audited by the gateway: no router ever sees it. A failed
request ends the call with the gRPC status ``errors.POLICY`` gives its error code, and the code,
stage and request id in the trailing metadata.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import grpc.aio
import numpy as np
import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from modelyard.api.pipeline.v1 import pipeline_pb2 as pb
from modelyard.api.pipeline.v1 import pipeline_pb2_grpc as pb_grpc
from modelyard.audit import digest_fields
from modelyard.auth import Authenticator, AuthMethod, Principal, credentials_of
from modelyard.errors import (
    ModelyardError,
    PermissionDeniedError,
    UnauthenticatedError,
    ValidationError,
    error_class,
    policy_for,
)
from modelyard.gateway.carrier import request_carrier
from modelyard.gateway.core import PipelineGateway
from modelyard.gateway.messages import response, stage_result
from modelyard.gateway.pending import STAGE
from modelyard.gateway.principal import Metadata, PrincipalResolver
from modelyard.gateway.refusal import Refusal
from modelyard.gateway.tensors import inputs_from_proto
from modelyard.telemetry.hooks import Carrier
from modelyard.telemetry.tracing import extract, inject_current
from modelyard.wire import ErrorInfo
from modelyard.wire.envelope import MAX_CALLER_LENGTH
from modelyard.wire.headers import H

__all__ = ["ERROR_CODE_KEY", "ERROR_STAGE_KEY", "REQUEST_ID_KEY", "PipelineServicer"]

REQUEST_ID_KEY = "x-modelyard-request-id"
ERROR_CODE_KEY = "x-modelyard-error-code"
ERROR_STAGE_KEY = "x-modelyard-error-stage"
Context = grpc.aio.ServicerContext[Any, Any]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Call:
    """One decoded request, ready for the gateway."""

    request_id: str
    pipeline: str
    fields: dict[str, np.ndarray[Any, Any]]
    caller: str
    auth: AuthMethod
    deadline_ms: int | None
    carrier: Carrier
    trace_id: str

    def options(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "caller": self.caller,
            "auth": self.auth,
            "deadline_ms": self.deadline_ms,
            "carrier": self.carrier,
        }


class PipelineServicer(pb_grpc.PipelineServiceServicer):
    """Serves every pipeline the routers behind ``gateway``'s broker run.

    ``auth`` authenticates and authorizes each call (default: mode ``none``, everyone is
    anonymous); ``principal`` is a legacy resolver instead (see ``gateway/principal.py``).
    """

    def __init__(
        self,
        gateway: PipelineGateway,
        principal: PrincipalResolver | None = None,
        *,
        auth: Authenticator | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        if principal is not None and auth is not None:
            raise ValueError("pass auth or a legacy principal resolver, not both")
        self.gateway = gateway
        self.principal = principal
        self.auth = auth or Authenticator()
        self._tracer = trace.get_tracer("modelyard.gateway", tracer_provider=tracer_provider)

    async def Infer(self, request: pb.InferRequest, context: Context) -> pb.InferResponse:
        try:
            return await self._infer(request, context)
        except _CallFailed as failed:  # aborted here, after the span has ended
            await _abort(context, failed)

    async def InferStream(
        self, request: pb.InferRequest, context: Context
    ) -> AsyncIterator[pb.InferEvent]:
        try:
            async for event in self._stream(request, context):
                yield event
        except _CallFailed as failed:
            await _abort(context, failed)

    async def _infer(self, request: pb.InferRequest, context: Context) -> pb.InferResponse:
        with _server_span(self._tracer, "Infer", request, context) as span:
            call = self._decode(request, context, span)
            try:
                result = await self.gateway.submit(call.pipeline, call.fields, **call.options())
            except Exception as exc:
                raise _failure(span, call.request_id, exc) from None
            if result.error is not None:
                raise _failed(span, result.request_id, result.error)
            try:
                answer = response(result, call.trace_id)
            except ModelyardError as exc:  # a result field that is no tensor (a stage's output)
                raise _failed(span, result.request_id, _info(exc)) from None
            _done(result.request_id, "ok")
            return answer

    async def _stream(
        self, request: pb.InferRequest, context: Context
    ) -> AsyncGenerator[pb.InferEvent, None]:
        with _server_span(self._tracer, "InferStream", request, context) as span:
            call = self._decode(request, context, span)
            events = self.gateway.stream(call.pipeline, call.fields, **call.options())
            try:
                async for kind, envelope in events:
                    if kind == STAGE:
                        yield pb.InferEvent(stage=stage_result(envelope))
                        continue
                    yield pb.InferEvent(result=response(envelope, call.trace_id))
                    if envelope.error is not None:
                        raise _failed(span, envelope.request_id, envelope.error)
                    _done(envelope.request_id, "ok")
            except _CallFailed:
                raise
            except Exception as exc:
                raise _failure(span, call.request_id, exc) from None
            finally:
                await events.aclose()  # stop waiting now, not when the generator is collected

    def _decode(self, request: pb.InferRequest, context: Context, span: trace.Span) -> _Call:
        request_id = request.id or uuid.uuid4().hex
        try:
            return self._call(request, request_id, context)
        except ModelyardError as exc:
            raise _failed(span, request_id, _info(exc)) from None

    def _call(self, request: pb.InferRequest, request_id: str, context: Context) -> _Call:
        metadata: Metadata = tuple(context.invocation_metadata() or ())
        carrier, trace_id = request_carrier(carrier=_trace_headers(metadata))
        refused = _Refused(self.gateway, request, request_id, trace_id)
        with refused.audited(None):
            who = self._principal(metadata, context)
        caller = who.name
        if len(caller) > MAX_CALLER_LENGTH:  # the router refuses envelopes naming such a caller
            raise ValidationError(
                f"caller is {len(caller)} characters; the limit is {MAX_CALLER_LENGTH}"
            )
        structlog.contextvars.bind_contextvars(request_id=request_id, caller=caller, auth=who.auth)
        span = trace.get_current_span()
        span.set_attribute("modelyard.request_id", request_id)
        span.set_attribute("modelyard.caller", caller)
        if not request.pipeline:
            raise ValidationError("the request names no pipeline")
        with refused.audited(who):
            self.auth.authorize_pipeline(who, request.pipeline)
        return _Call(
            request_id=request_id,
            pipeline=request.pipeline,
            fields=inputs_from_proto(request.inputs),
            caller=caller,
            auth=who.auth,
            deadline_ms=_deadline_ms(request.timeout_ms, context.time_remaining()),
            carrier=carrier,
            trace_id=trace_id,
        )

    def _principal(self, metadata: Metadata, context: Context) -> Principal:
        if self.principal is not None:  # legacy: a name, proven by nothing this port checks
            return Principal(self.principal(metadata), "none")
        if not self.auth.enabled:
            return Principal.anonymous()
        return self.auth.authenticate(credentials_of(metadata, context.auth_context()))


@dataclass(frozen=True, slots=True)
class _Refused:
    """Audits a call refused for its credentials or rights, then lets the refusal go on."""

    gateway: PipelineGateway
    request: pb.InferRequest
    request_id: str
    trace_id: str

    @contextmanager
    def audited(self, principal: Principal | None) -> Iterator[None]:
        try:
            yield
        except (UnauthenticatedError, PermissionDeniedError) as exc:
            self._record(exc, principal)
            raise

    def _record(self, error: ModelyardError, principal: Principal | None) -> None:
        refusal = Refusal(
            request_id=self.request_id,
            pipeline=self.request.pipeline,
            error=error,
            principal=principal,
            trace_id=self.trace_id,
            input_digest=_input_digest(self.request),
            received_at=time.time(),
        )
        try:
            self.gateway.record_refusal(refusal)
        except Exception:  # the caller's answer stands; the missing record is logged loudly
            log.exception("refusal_not_audited", request_id=self.request_id)


def _input_digest(request: pb.InferRequest) -> str:
    """The refused request's input digest, as the router's records take it ("" if unreadable)."""
    try:
        return digest_fields(inputs_from_proto(request.inputs))
    except Exception:
        return ""


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


def _done(request_id: str, outcome: str) -> None:
    """The one summary line per call (pipeline, method and caller are bound in contextvars)."""
    log.info("pipeline_call", request_id=request_id, outcome=outcome)


@contextmanager
def _server_span(
    tracer: trace.Tracer, method: str, request: pb.InferRequest, context: Context
) -> Iterator[trace.Span]:
    metadata = [
        (k, v if isinstance(v, bytes) else v.encode())
        for k, v in context.invocation_metadata() or ()
    ]
    attributes = {"rpc.system": "grpc", "rpc.service": "modelyard.pipeline.v1.PipelineService",
                  "rpc.method": method, "modelyard.pipeline": request.pipeline}  # fmt: skip
    with (
        tracer.start_as_current_span(
            f"PipelineService/{method}",
            context=extract(metadata),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,  # aborts are expected outcomes, recorded as status below
            set_status_on_exception=False,
        ) as span,
        structlog.contextvars.bound_contextvars(pipeline=request.pipeline, rpc=method),
    ):
        yield span


class _CallFailed(Exception):
    """A call that ends with a non-OK status; raised through the span, aborted outside it."""

    def __init__(self, request_id: str, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.request_id = request_id
        self.error = error


def _failed(span: trace.Span, request_id: str, error: ErrorInfo) -> _CallFailed:
    """Record ``error`` on the span and the log; the exception that ends the call."""
    _done(request_id, error.code)
    span.set_attribute("modelyard.outcome", error.code)
    span.set_status(Status(StatusCode.ERROR, error.code))
    return _CallFailed(request_id, error)


def _failure(span: trace.Span, request_id: str, exc: Exception) -> _CallFailed:
    """The gateway's own failure (a ModelyardError), or a bug: INTERNAL, traceback to the log."""
    if isinstance(exc, ModelyardError):
        return _failed(span, request_id, _info(exc))
    log.exception("pipeline_grpc_crashed", request_id=request_id)
    span.record_exception(exc)
    message = f"internal error ({type(exc).__name__}) in request {request_id}"
    return _failed(span, request_id, ErrorInfo("internal", message))


async def _abort(context: Context, failed: _CallFailed) -> NoReturn:
    """End the call with the status of the error's code, and its details as trailing metadata."""
    error = failed.error
    status = getattr(
        grpc.StatusCode, policy_for(error_class(error.code)(error.message)).grpc_status
    )
    trailing = [(REQUEST_ID_KEY, failed.request_id), (ERROR_CODE_KEY, error.code)]
    message = error.message
    if error.stage:
        trailing.append((ERROR_STAGE_KEY, error.stage))
        message = f"stage {error.stage}: {message}"
    await context.abort(status, message, trailing_metadata=tuple(trailing))
    raise AssertionError("unreachable: abort raises")  # grpc stubs do not say NoReturn


def _info(exc: ModelyardError) -> ErrorInfo:
    return ErrorInfo(exc.code, exc.message)

"""Result envelopes as ``modelyard.pipeline.v1`` messages (InferResponse, StageResult)."""

from __future__ import annotations

from modelyard.api.pipeline.v1 import pipeline_pb2 as pb
from modelyard.gateway.tensors import outputs_to_proto
from modelyard.wire import Envelope, ErrorInfo

__all__ = ["response", "stage_result"]


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

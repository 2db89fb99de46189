"""What the router service holds per request and per dispatched hop, beside the pure flow."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from modelyard.audit import digest_fields, encode_hop_record, encode_request_record
from modelyard.audit.observe import Observed
from modelyard.graph.flow import Dispatch, RequestFlow
from modelyard.kafka.codec import Incoming
from modelyard.kafka.handler import OutRecord, Ticket
from modelyard.wire.headers import H, header_value

__all__ = ["Hop", "LiveRequest", "trace_id_of"]


def trace_id_of(headers: list[tuple[str, bytes]]) -> str | None:
    """The trace id in a W3C ``traceparent`` header (``00-<trace>-<span>-<flags>``), if any."""
    parent = header_value(headers, H.TRACEPARENT)
    parts = parent.split("-") if parent else []
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


@dataclass(slots=True)
class Hop:
    """One dispatch in flight: its timing, its input digest, and per-hook state (the span)."""

    dispatch: Dispatch
    request_id: str
    pipeline: str
    caller: str | None
    trace_id: str | None
    dispatched_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    input_digest: str = ""
    input_packed: bytes = b""  # what was sent, for a capture policy that keeps it
    scratch: dict[str, Any] = field(default_factory=dict)

    # the RoutedHop view hooks read
    @property
    def stage(self) -> str:
        return self.dispatch.stage

    @property
    def model(self) -> str:
        return self.dispatch.model

    @property
    def version(self) -> str:
        return self.dispatch.version

    @property
    def role(self) -> str:
        return self.dispatch.role

    @property
    def shadow(self) -> bool:
        return self.dispatch.shadow

    def record(
        self,
        outcome: str,
        error: str | None,
        output_digest: str | None,
        captured: tuple[bytes | None, bytes | None] = (None, None),
        observed: Observed | None = None,
    ) -> bytes:
        """The audit record (JSON) of this hop, ending now; ``output_digest`` is the reply's
        fields' (None: no outputs); ``captured`` its input and output payloads, if kept;
        ``observed`` its monitored values."""
        d = self.dispatch
        return encode_hop_record(
            request_id=self.request_id, pipeline=self.pipeline, caller=self.caller,
            trace_id=self.trace_id, outcome=outcome, error=error,
            stage=d.stage, model=d.model, version=d.version, role=d.role,
            shadow=d.shadow, attempt=d.attempt, span_id=self.scratch.get("span_id"),
            dispatched_at=self.dispatched_at, finished_at=time.time(),
            latency_ms=(time.monotonic() - self.started) * 1000,
            input_digest=self.input_digest,
            output_digest=output_digest, input=captured[0], output=captured[1],
            observed=observed,
        )  # fmt: skip


@dataclass(slots=True)
class LiveRequest:
    """A request being routed: its flow, ingress message (and the ticket that holds its offset
    until the result is acknowledged) and hops in flight."""

    flow: RequestFlow
    incoming: Incoming
    ticket: Ticket
    partition: int
    deadline_at: float  # monotonic
    progress: bool = False  # the caller asked for every stage's reply on reply-to
    received_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    hops: dict[str, Hop] = field(default_factory=dict)
    shadowed: dict[str, Hop] = field(default_factory=dict)  # stage -> its shadow copy
    finished_hops: list[OutRecord] = field(default_factory=list)  # audit, sent with the result
    trace_id: str | None = None
    scratch: dict[str, Any] = field(default_factory=dict)
    # the request fields' digest, taken by the first dispatch that sent them unchanged
    request_digest: str | None = None
    auth: str = "none"  # how the caller (the envelope's, once verified) was authenticated
    seen_as: str = ""  # what it is de-duplicated by (its id; with the letter a replay resends)

    # the RoutedRequest view hooks read
    @property
    def request_id(self) -> str:
        return self.flow.request_id

    @property
    def pipeline(self) -> str:
        return self.flow.spec.pipeline

    @property
    def caller(self) -> str | None:
        return self.flow.request.caller

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return self.incoming.headers

    @property
    def served_by(self) -> dict[str, str]:
        return self.flow.served_by

    @property
    def error(self) -> tuple[str, str | None] | None:
        error = self.flow.error
        return None if error is None else (error.message, error.stage)

    def hop(self, dispatch: Dispatch, input_digest: str, packed: bytes) -> Hop:
        """A new hop of this request for ``dispatch`` (its input packed and digested once)."""
        request = self.flow.request
        return Hop(
            dispatch,
            request.request_id,
            self.flow.spec.pipeline,
            request.caller,
            self.trace_id,
            input_digest=input_digest,
            input_packed=packed,
        )

    def record(self, outcome: str, error: str | None, result: bytes | None) -> bytes:
        """The audit record (JSON) of this request, ending now; ``result`` the payload of its
        result's fields."""
        flow = self.flow
        return encode_request_record(
            request_id=self.request_id, pipeline=flow.spec.pipeline,
            caller=flow.request.caller, trace_id=self.trace_id, outcome=outcome,
            error=error, spec_version=flow.spec.version, received_at=self.received_at,
            finished_at=time.time(), latency_ms=(time.monotonic() - self.started) * 1000,
            served_by=flow.served_by, skipped=sorted(flow.skipped),
            input_digest=self.request_digest or digest_fields(flow.request.fields),
            principal=flow.request.caller, auth=self.auth, result=result,
        )  # fmt: skip

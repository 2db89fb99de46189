"""The audit record of a call the gateway refused before it reached a router.

A refused call (no credentials, or a principal not allowed the pipeline) never becomes a Kafka
request, so no router audits it: the gateway writes its request record itself, with the outcome
``unauthenticated`` or ``permission_denied`` and nothing served.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from modelyard.audit import encode_audit_values
from modelyard.auth import Principal
from modelyard.errors import ModelyardError

__all__ = ["Refusal", "refusal_record"]

REFUSED_SPEC_VERSION = 0  # no router saw it, so no spec version applied


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused call, as the gRPC adapter saw it."""

    request_id: str
    pipeline: str
    error: ModelyardError
    principal: Principal | None  # None: nobody was authenticated
    trace_id: str | None
    input_digest: str
    received_at: float


def refusal_record(refusal: Refusal) -> bytes:
    """The request record (JSON) of ``refusal``."""
    finished_at = time.time()
    who = refusal.principal
    return encode_audit_values(
        "request",
        {
            "request_id": refusal.request_id,
            "pipeline": refusal.pipeline,
            "caller": who.name if who else None,
            "principal": who.name if who else None,
            "auth": who.auth if who else "none",
            "trace_id": refusal.trace_id,
            "outcome": refusal.error.code,
            "error": refusal.error.message,
            "spec_version": REFUSED_SPEC_VERSION,
            "received_at": refusal.received_at,
            "finished_at": finished_at,
            "latency_ms": max(0.0, (finished_at - refusal.received_at) * 1000),
            "served_by": {},
            "skipped": [],
            "input_digest": refusal.input_digest,
        },
    )

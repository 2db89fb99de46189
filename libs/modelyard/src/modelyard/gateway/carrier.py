"""Trace headers for a new pipeline request, and the trace id a person can look up.

A request continues the caller's trace when there is one (a ``traceparent`` it passes, or the
current span). When there is none (tracing off, a
CLI), the gateway still starts the request with a fresh sampled W3C ``traceparent``, so the
router's spans and audit records share one trace id that ``modelyard send`` can print.
"""

from __future__ import annotations

import secrets

from opentelemetry import context as otel_context
from opentelemetry import trace

from modelyard.telemetry.hooks import Carrier
from modelyard.telemetry.tracing import GETTER, SETTER, inject_current
from modelyard.wire.headers import H

__all__ = ["request_carrier", "trace_id_of"]


def request_carrier(
    ctx: otel_context.Context | None = None, carrier: Carrier | None = None
) -> tuple[Carrier, str]:
    """Trace headers for a new request, and their trace id.

    The trace continued is, in order: the ``traceparent`` already in ``carrier`` (e.g. a gRPC
    caller's), the span of ``ctx`` (default: the current context), else a fresh trace.
    """
    out = list(carrier or [])
    if (trace_id := trace_id_of(out)) is not None:
        return out, trace_id
    if trace.get_current_span(ctx).get_span_context().is_valid:
        inject_current(out, ctx)
    if (trace_id := trace_id_of(out)) is None:
        trace_id = secrets.token_hex(16)
        # sampled (01): the router's sampler, not this unrecorded root, decides what is kept
        SETTER.set(out, H.TRACEPARENT, f"00-{trace_id}-{secrets.token_hex(8)}-01")
    return out, trace_id


def trace_id_of(carrier: Carrier) -> str | None:
    """The trace id of a well-formed ``traceparent`` in ``carrier``, else None."""
    values = GETTER.get(carrier, H.TRACEPARENT)
    parts = values[0].split("-") if values else []
    if len(parts) != 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    return parts[1].lower()

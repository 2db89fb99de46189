"""What the audit store holds and hands back: one frozen row type per table, and query filters.

The field names are the column names (``tables.py`` derives its SQL from them). Every chained
row keeps its position (``chain_writer``, ``chain_partition``, ``chain_seq``), the link it
claims (``chain_prev``), its own hash and the record's exact bytes (``raw``), so
``modelyard audit verify`` can recompute every chain and compare every column with its record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

__all__ = [
    "CheckpointRow",
    "ControlChangeRow",
    "Filters",
    "HopPayload",
    "HopRow",
    "PayloadRow",
    "RequestRow",
    "Verdict",
]


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One request, from its request record (``id`` is the store's row id; 0 before insert)."""

    id: int
    request_id: str
    pipeline: str
    principal: str | None
    auth: str | None
    received_at: datetime
    finished_at: datetime
    served_by: dict[str, str]
    skipped: tuple[str, ...]
    outcome: str
    error: str | None
    latency_ms: float
    trace_id: str | None
    input_digest: str
    result_digest: str | None
    result_fields: bytes | None  # msgpack of the result's fields (redacted values replaced)
    result_bytes: int | None
    spec_version: int
    chain_writer: str | None
    chain_partition: int | None
    chain_seq: int | None
    chain_prev: str | None
    chain_hash: str
    raw: bytes

    kind: Literal["request"] = "request"


@dataclass(frozen=True, slots=True)
class HopRow:
    """One stage execution, from its hop record."""

    id: int
    request_id: str
    pipeline: str
    principal: str | None
    stage: str
    model: str
    version: str
    role: str
    attempt: int
    shadow: bool
    dispatched_at: datetime
    finished_at: datetime
    latency_ms: float
    outcome: str
    error: str | None
    input_digest: str
    output_digest: str | None
    agrees: bool | None
    span_id: str | None
    trace_id: str | None
    chain_writer: str | None
    chain_partition: int | None
    chain_seq: int | None
    chain_prev: str | None
    chain_hash: str
    raw: bytes

    kind: Literal["hop"] = "hop"


@dataclass(frozen=True, slots=True)
class PayloadRow:
    """A hop's captured input or output: its digest and size, and its fields when kept."""

    id: int
    request_id: str
    stage: str
    attempt: int
    role: str
    direction: Literal["input", "output"]
    digest: str
    fields: bytes | None  # msgpack of the fields (redacted values replaced); None: digest only
    bytes: int
    chain_writer: str | None
    chain_partition: int | None
    chain_seq: int | None


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """A writer's signed chain head."""

    id: int
    writer: str
    chain_partition: int
    seq: int
    head: str
    at: datetime
    key_id: str
    signature: str
    raw: bytes


Verdict = Literal["accepted", "rejected", "ignored", "unverified"]


@dataclass(frozen=True, slots=True)
class ControlChangeRow:
    """One record of the control topic: who changed what, why, signed how, and what routers
    did with it (``verdict``; ``reason`` says why, for all but accepted):

    - ``accepted``: signed by a key of the keyring, allowed, consistent: routers apply it;
    - ``rejected``: routers refuse it (``reason``: ``unsigned``, ``unknown_key``,
      ``bad_signature``, ``actor_mismatch``, ``not_authorised``, ``inconsistent``, or
      ``invalid`` for a value that is not a control record, then the detail);
    - ``ignored``: built on an older state than routers hold (its writer lost a race);
    - ``unverified``: the sink has no keyring, so nobody here checked who signed it.
    """

    id: int
    pipeline: str
    seq: int | None
    who: str | None
    key_id: str | None
    what: dict[str, Any] | None
    why: str | None
    at: datetime | None
    signature: str | None
    verdict: Verdict
    reason: str | None
    topic_partition: int
    topic_offset: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class Filters:
    """What ``AuditStore.query`` selects; every given filter must match (None: any).

    ``stage``, ``model``, ``version`` and ``role`` describe hops: when one is given, only hop
    rows are returned. ``since``/``until`` bound a request's ``received_at`` and a hop's
    ``dispatched_at`` (since inclusive, until exclusive). ``kinds`` limits the row kinds.
    """

    request_id: str | None = None
    principal: str | None = None
    pipeline: str | None = None
    stage: str | None = None
    model: str | None = None
    version: str | None = None
    role: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    kinds: tuple[Literal["request", "hop"], ...] = ("request", "hop")

    @property
    def hop_only(self) -> bool:
        """Whether a hop-level filter is given (requests have no stage, model or role)."""
        return any(v is not None for v in (self.stage, self.model, self.version, self.role))


class HopPayload(NamedTuple):
    """A hop's captured fields, decoded (what ``modelyard replay`` re-runs); unpacks as
    ``(request_id, input_fields, output_fields, model, version)``."""

    request_id: str
    input_fields: dict[str, Any]
    output_fields: dict[str, Any] | None  # None: the output was not captured (or failed)
    model: str
    version: str

"""Control records and the routing state every router rebuilds from them.

A control record is one JSON document on the control topic, keyed by pipeline name::

    {"schema": 1, "key": "docs", "seq": 7, "actor": "alice", "at": "2025-01-02T03:04:05Z",
     "reason": "bad BLEU", "change": {"type": "rollback", "stage": "translate"},
     "state": {"pipeline": "docs", "seq": 7, "stages": {...}, "releases": {...}},
     "key_id": "3f0c...", "signature": "base64..."}

``key_id`` and ``signature`` (Ed25519, :mod:`modelyard.control.signing`) say which key of the
keyring made the change; ``actor`` is that key's name. Readers verify both
(:mod:`modelyard.control.verify`) and ignore, and report, a record that fails.

Why one key per pipeline, and the full state in every record: the embedded broker does not
compact, and a real one compacts at its leisure, so correctness may not depend on compaction
*or* on seeing every record. "The last record of each key" is therefore the whole truth, and a
pipeline-wide release rollback is one record that flips every stage at once (per-stage keys could
not be applied atomically, nor ordered against each other: they may sit on different partitions).
``change`` says what the operator asked for, for audit and for replay checks.

Concurrent writers: the last record wins, the same way on every router (one key, one
partition, one order). Writers build records from the state they read and compare ``seq``
afterwards to detect a lost race.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from modelyard.control.canary import choose_version, should_shadow
from modelyard.control.changes import Change, ControlError, apply
from modelyard.control.routing import PipelineRouting, StageRouting
from modelyard.errors import DecodeError, UnavailableError
from modelyard.graph.flow import Route

__all__ = [
    "ControlRecord",
    "ControlState",
    "decode_record",
    "encode_record",
    "make_record",
]


class ControlRecord(BaseModel):
    """One audited change to a pipeline's routing, carrying the full resulting state."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    schema_: Literal[1] = Field(default=1, alias="schema", description="Record format version.")
    key: str = Field(description="Kafka key: the pipeline name.")
    seq: int = Field(ge=1, description="The state's seq after this change.")
    actor: str = Field(min_length=1, description="The signing key's name.")
    at: AwareDatetime = Field(description="When the change was made (UTC).")
    reason: str = ""
    change: Change
    state: PipelineRouting
    key_id: str | None = Field(default=None, description="Keyring id of the signing key.")
    signature: str | None = Field(
        default=None, description="Ed25519 over the record's canonical JSON without this field."
    )
    anchor: ControlRecord | None = Field(
        default=None,
        description="On a writer key's record: the latest record of the pipeline an operator "
        "signed, whole (control/anchor.py). Left out of the JSON when None.",
    )

    @model_validator(mode="after")
    def _flat_anchor(self) -> Self:
        if self.anchor is not None and self.anchor.anchor is not None:
            raise ValueError("an anchor is an operator's record: it carries no anchor")
        return self

    @model_serializer(mode="wrap")
    def _without_absent_anchor(self, handler: SerializerFunctionWrapHandler) -> Any:
        # records without an anchor read, and are signed, exactly as before anchors existed
        data = handler(self)
        if isinstance(data, dict) and data.get("anchor", 0) is None:
            data.pop("anchor")
        return data


def make_record(
    current: PipelineRouting,
    change: Change,
    *,
    actor: str,
    at: datetime | None = None,
    reason: str = "",
    anchor: ControlRecord | None = None,
) -> ControlRecord:
    """The record of applying ``change`` to ``current`` (ControlError if it does not apply),
    unsigned: :func:`modelyard.control.signing.sign_record` signs it. ``anchor``: see
    :mod:`modelyard.control.anchor`."""
    state = apply(current, change)
    return ControlRecord(
        key=current.pipeline,
        seq=state.seq,
        actor=actor,
        at=at or datetime.now(UTC),
        reason=reason,
        change=change,
        state=state,
        anchor=anchor,
    )


def encode_record(record: ControlRecord) -> bytes:
    """The record's JSON value (UTF-8), as written to the control topic."""
    return record.model_dump_json(by_alias=True).encode()


def decode_record(value: bytes) -> ControlRecord:
    """Parse a control-topic value; DecodeError if it is not a valid record.

    Parsed by pydantic's JSON reader, which refuses what ``json.loads`` would let through to
    break later: lone surrogates (text no writer can encode again) and nesting past its limit.
    """
    try:
        return ControlRecord.model_validate_json(value)
    except PydanticValidationError as exc:
        raise DecodeError(f"invalid control record: {exc}") from None


@dataclass(frozen=True)
class ControlState:
    """The routing of every pipeline, as the last record per key says."""

    pipelines: Mapping[str, PipelineRouting] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[ControlRecord]) -> ControlState:
        """The state a router reaches by reading ``records`` in topic order."""
        state = cls()
        for record in records:
            state = state.update(record)
        return state

    @classmethod
    def replay(cls, records: Iterable[ControlRecord]) -> ControlState:
        """The state reached by folding every record's *change* from empty (an audit check)."""
        pipelines: dict[str, PipelineRouting] = {}
        for record in records:
            current = pipelines.get(record.key, PipelineRouting(pipeline=record.key))
            pipelines[record.key] = apply(current, record.change)
        return cls(pipelines)

    def update(self, record: ControlRecord) -> ControlState:
        """This state with ``record``'s key replaced by its state: the last record wins."""
        return ControlState({**self.pipelines, record.key: record.state})

    def pipeline(self, name: str) -> PipelineRouting:
        """The routing of pipeline ``name`` (empty if it has no records yet)."""
        found = self.pipelines.get(name)  # not get(name, default): that builds a model per call
        return found if found is not None else PipelineRouting(pipeline=name)

    def stage(self, pipeline: str, stage: str) -> StageRouting:
        """The routing of one stage."""
        return self.pipeline(pipeline).stage(stage)

    def route(self, pipeline: str, stage: str, *, sticky_key: str, request_id: str) -> Route:
        """Where this request goes at this stage: the canary draw by ``sticky_key``, the shadow
        draw by ``request_id`` (the :class:`~modelyard.graph.flow.Routes` a flow walks with)."""
        state = self.stage(pipeline, stage)
        scope = f"{pipeline}/{stage}"
        try:
            version, role = choose_version(state, sticky_key, scope=scope)
        except ControlError as exc:
            raise UnavailableError(exc.message) from None
        shadowed = state.shadow is not None and should_shadow(state, request_id, scope=scope)
        return Route(version, role, state.shadow.version if shadowed and state.shadow else None)

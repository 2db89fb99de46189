"""Offline shadow: re-run a stage's captured inputs through another version, compare outputs.

The audit store keeps each hop's input and output fields when the pipeline's capture policy
says ``payloads: full``. ``replay_stage`` takes those of one stage (an audit query's filters),
runs each input through a ``Runner`` (the version over Kafka, or loaded in this process) and
counts agreement with the recorded output, keeping a sample of the differences.

A field is equal when it packs to the same bytes (``pack_fields``, the wire's encoding), or,
with a tolerance, when both are numeric arrays of one shape within it. A redacted recorded
value (``redacted:sha256:<hex>``) is compared by digest, so equality stays provable without
the data; an input with a redacted field cannot be replayed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from modelyard.audit.capture import REDACTED_PREFIX, redacted_value
from modelyard.audit.store import AuditStore, Filters, HopPayload
from modelyard.errors import ModelError, ModelyardError
from modelyard.model import Model, Outcome
from modelyard.repository.store import ModelRepository
from modelyard.tensors import InputValidator
from modelyard.wire.envelope import pack_fields

__all__ = [
    "Agreement",
    "Difference",
    "InProcessRunner",
    "Runner",
    "abbreviate",
    "compare",
    "replay_stage",
]

log = structlog.get_logger(__name__)

_SHOWN = 48  # characters of a value shown in a difference


class Runner(Protocol):
    """Runs inputs through the version under test: one outcome per input, in order."""

    def run(self, inputs: Sequence[Mapping[str, Any]]) -> list[Outcome]: ...


@dataclass(frozen=True, slots=True)
class Difference:
    request_id: str
    field: str  # the first field that differs ("" for an error)
    recorded: str  # abbreviated
    replayed: str


@dataclass
class Agreement:
    """What a replay found."""

    hops: int = 0  # hops of the stage that matched the filters
    digest_only: int = 0  # of those, inputs kept as digests only: cannot be replayed
    redacted: int = 0  # inputs with a redacted field: cannot be replayed
    unrecorded: int = 0  # replayed, but no output was recorded to compare with
    agree: int = 0
    disagree: int = 0
    samples: list[Difference] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return self.agree + self.disagree

    @property
    def rate(self) -> float | None:
        """Share of compared hops that agree (None: nothing compared)."""
        return self.agree / self.compared if self.compared else None


def replay_stage(
    store: AuditStore,
    filters: Filters,
    stage: str,
    runner: Runner,
    *,
    tolerance: float | None = None,
    sample: int = 10,
    batch: int = 32,
) -> Agreement:
    """Replay the captured inputs of ``stage``'s hops that match ``filters`` (at most
    ``filters.limit`` of them) through ``runner``."""
    result = Agreement()
    everything = replace(filters, limit=None)
    result.hops = _count(store.query(replace(everything, stage=stage, kinds=("hop",))))
    kept, left = 0, filters.limit  # every kept input is counted; at most `limit` replayed
    for chunk in _chunks(store.hop_payloads(everything, stage), batch):
        kept += len(chunk)
        taken = chunk if left is None else chunk[:left]
        left = None if left is None else left - len(taken)
        _replay_chunk(result, taken, runner, tolerance, sample)
    result.digest_only = result.hops - kept
    return result


def _replay_chunk(
    result: Agreement,
    chunk: list[HopPayload],
    runner: Runner,
    tolerance: float | None,
    sample: int,
) -> None:
    runnable = [hop for hop in chunk if not _has_redacted(hop.input_fields)]
    result.redacted += len(chunk) - len(runnable)
    if not runnable:
        return
    outcomes = runner.run([hop.input_fields for hop in runnable])
    for hop, outcome in zip(runnable, outcomes, strict=True):
        if hop.output_fields is None:
            result.unrecorded += 1
            continue
        difference = compare(hop.request_id, hop.output_fields, outcome, tolerance)
        if difference is None:
            result.agree += 1
            continue
        result.disagree += 1
        if len(result.samples) < sample:
            result.samples.append(difference)


def compare(
    request_id: str,
    recorded: Mapping[str, Any],
    replayed: Outcome,
    tolerance: float | None = None,
) -> Difference | None:
    """The first difference between a recorded output and a replayed outcome, or None."""
    if isinstance(replayed, ModelyardError):
        shown = abbreviate(dict(recorded))
        return Difference(request_id, "", shown, f"error {replayed.code}: {replayed.message}")
    for name, value in recorded.items():
        if name not in replayed:
            return Difference(request_id, name, _shown(value), "(missing)")
        if not _equal(name, value, replayed[name], tolerance):
            return Difference(request_id, name, _shown(value), _shown(replayed[name]))
    return None


def _equal(name: str, recorded: Any, replayed: Any, tolerance: float | None) -> bool:
    if isinstance(recorded, str) and recorded.startswith(REDACTED_PREFIX):
        return redacted_value(name, replayed) == recorded
    if tolerance is not None and _numeric(recorded) and _numeric(replayed):
        same_shape = np.shape(recorded) == np.shape(replayed)
        return same_shape and bool(np.allclose(recorded, replayed, rtol=0.0, atol=tolerance))
    return pack_fields({name: recorded}) == pack_fields({name: replayed})


def _numeric(value: Any) -> bool:
    return isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.number)


def _has_redacted(fields: Mapping[str, Any]) -> bool:
    return any(isinstance(v, str) and v.startswith(REDACTED_PREFIX) for v in fields.values())


def abbreviate(fields: Mapping[str, Any]) -> str:
    """``{name: value, ...}`` with each value cut short, for one line of output."""
    return "{" + ", ".join(f"{name}: {_shown(value)}" for name, value in fields.items()) + "}"


def _shown(value: Any) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _count(rows: Iterable[Any]) -> int:
    return sum(1 for _ in rows)


def _chunks(items: Iterable[HopPayload], size: int) -> Iterator[list[HopPayload]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class InProcessRunner:
    """The version loaded from a model repository into this process, as `modelyard serve`
    loads it (artifacts verified); batches up to its manifest's ``max_batch_size``."""

    def __init__(self, repository: Path, ref: str) -> None:
        self.model: Model = ModelRepository(repository).load(ref)
        manifest = self.model.manifest
        self._validate = InputValidator(manifest.inputs)
        self._batch = max(1, manifest.batching.max_batch_size)

    def run(self, inputs: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for start in range(0, len(inputs), self._batch):
            outcomes += self._predict(inputs[start : start + self._batch])
        return outcomes

    def close(self) -> None:
        self.model.unload()

    def _predict(self, inputs: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        valid: list[tuple[int, Any]] = []
        outcomes: list[Outcome | None] = [None] * len(inputs)
        for i, fields in enumerate(inputs):
            try:
                valid.append((i, self._validate(fields)))
            except ModelyardError as exc:  # a version whose contract changed refuses it
                outcomes[i] = exc
        for (i, _), outcome in zip(valid, self._guarded([t for _, t in valid]), strict=True):
            outcomes[i] = outcome
        return [o if o is not None else ModelError("no outcome") for o in outcomes]

    def _guarded(self, batch: list[Any]) -> list[Outcome]:
        """The batch's outcomes; when the model raises, each input alone, as a stage does."""
        if not batch:
            return []
        try:
            return self.model.predict(batch)
        except ModelyardError as exc:
            if len(batch) == 1:
                return [exc]
        except Exception as exc:  # the model's own failure, reported as a stage reports it
            if len(batch) == 1:
                return [ModelError(f"{type(exc).__name__}: {exc}")]
        return [outcome for one in batch for outcome in self._guarded([one])]

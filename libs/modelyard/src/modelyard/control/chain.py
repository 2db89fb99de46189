"""Optimistic concurrency on the control topic: which records a reader applies.

A writer builds a record on the pipeline state it read (``seq`` N) and names that base in the
record's ``modelyard-base-seq`` header (N; the record's own ``seq`` is N + 1). Every reader (each
router's follower, ``read_state``, the writer checking its own record) folds the topic in order
with one rule, per pipeline:

- built on the state it holds (``base == head.seq``): applied;
- built on a *later* state (``base > head.seq``): applied. Records under it were compacted away
  (before or while this reader read); the record carries the full state, so nothing is lost,
  and :attr:`Positioned.compacted` says how many changes the reader never read. A writer key's
  record is then judged by its anchor (:mod:`modelyard.control.anchor`);
- built on an *older* state (``base < head.seq``): ignored and logged. Its writer read the state
  before another change landed; applying it would silently undo that change. The writer reads
  back to its own record, sees it ignored, and is told it lost (``ConcurrentChangeError``);
- no header (written before this rule existed): applied, the last one wins, as it always did.

Every reader sees the same records in the same order, so every reader ignores the same ones.

Before the race rule, a chain with a :class:`~modelyard.control.verify.ControlVerifier` checks
each record's signature, role, consistency and deployability; a record that fails is
*rejected*: marked with the reason, reported (a warning, and ``on_reject`` for metrics), never
applied. Readers with the same keyring reject the same records. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from modelyard.control.anchor import authorised_seq
from modelyard.control.describe import describe_change
from modelyard.control.routing import PipelineRouting
from modelyard.control.state import ControlRecord, ControlState
from modelyard.control.verify import ControlVerifier, RejectedRecord, RejectReason

__all__ = ["BASE_HEADER", "Chain", "Positioned", "follows"]

log = structlog.get_logger(__name__)

BASE_HEADER = "modelyard-base-seq"  # the seq of the state a record was built on (ASCII)


@dataclass(frozen=True)
class Positioned:
    """A decoded control record, its offset, the seq it was built on (None: a record written
    before bases were named) and whether readers apply it (see :class:`Chain`): when a verifier
    rejected it, ``rejected`` is the reason (``control/verify.py``) and ``detail`` says why.
    ``compacted``: how many changes of its pipeline, just before it, the reader never read
    (compaction removed them; their result is in this record's state)."""

    offset: int
    record: ControlRecord
    base: int | None = None
    applied: bool = True
    rejected: RejectReason | None = None
    detail: str = ""
    compacted: int = 0  # changes of its pipeline under it that this reader never read

    @property
    def compacted_seqs(self) -> range:
        """The seqs of its pipeline that were compacted away under this record (empty: none)."""
        return range(self.record.seq - self.compacted, self.record.seq)


def follows(head: PipelineRouting, record: ControlRecord, base: int | None) -> bool:
    """Whether a reader whose routing of ``record.key`` is ``head`` applies ``record``."""
    return base is None or base >= head.seq


class Chain:
    """One reader's fold over the control topic, in topic order: the state its applied records
    give, and each record marked applied or ignored.

    An ignored or rejected record is logged as a warning, or at debug level when ``quiet``
    (one-shot reads that fold the whole topic again each time: the follower reports each one
    once). ``verifier`` None: records are not verified (tests, or an insecure reader).
    """

    def __init__(
        self,
        verifier: ControlVerifier | None = None,
        *,
        quiet: bool = False,
        on_reject: Callable[[Positioned], None] | None = None,
    ) -> None:
        self.state = ControlState()
        self._floors: dict[str, int] = {}  # per pipeline: control/anchor.py authorised_seq
        self._verifier = verifier
        self._quiet = quiet
        self._on_reject = on_reject

    def offer(self, got: Positioned) -> Positioned:
        """``got``, marked; the state moves on when it is applied."""
        record = got.record
        head = self.state.pipeline(record.key)
        floor = self._floors.get(record.key, 0)
        if self._verifier is not None:
            try:
                self._verifier.verify(head, record, got.base, floor=floor)
            except RejectedRecord as exc:
                return self._reject(got, exc)
        if not follows(head, record, got.base):
            _report_ignored(head, got, quiet=self._quiet)
            return replace(got, applied=False)
        unseen = (got.base if got.base is not None else record.seq - 1) - head.seq
        self.state = self.state.update(record)
        self._floors[record.key] = authorised_seq(record, unseen_base=unseen > 0, floor=floor)
        return replace(got, applied=True, compacted=max(unseen, 0))

    def _reject(self, got: Positioned, exc: RejectedRecord) -> Positioned:
        rejected = replace(got, applied=False, rejected=exc.reason, detail=exc.message)
        record = got.record
        (log.debug if self._quiet else log.warning)(
            "control record rejected", offset=got.offset, pipeline=record.key, seq=record.seq,
            reason=exc.reason, detail=exc.message, claimed_actor=record.actor,
            key_id=record.key_id, change=describe_change(record.change),
        )  # fmt: skip
        if self._on_reject is not None:
            self._on_reject(rejected)
        return rejected


def _report_ignored(head: PipelineRouting, got: Positioned, *, quiet: bool) -> None:
    record = got.record
    if record.state == head:  # the same record again (a producer's retry)
        log.debug("control record ignored: a copy of the current state", offset=got.offset)
        return
    (log.debug if quiet else log.warning)(
        "control record ignored: built on an older state (its writer lost a race)",
        offset=got.offset, pipeline=record.key, base=got.base, head_seq=head.seq,
        actor=record.actor, change=describe_change(record.change),
    )  # fmt: skip

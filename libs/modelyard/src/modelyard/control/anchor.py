"""Anchors: how a record signed by a writer key stays verifiable once compaction removed the
records under it.

A writer key (a router's or monitor's guard) may only take traffic away, and only from the
state the reader holds (``control/verify.py``). Compaction keeps the last record of each
pipeline, which after a guard trip is the writer's: a reader started later meets it with
nothing under it, cannot judge it against the state it changed, and would reject it, leaving
the pipeline with no routing at all. So a writer's record carries its **anchor**: the latest
record of the pipeline signed by a key that may change it (an operator's or admin's), whole and
signed. A reader that never saw the state the writer's record was built on applies it when the
anchor verifies and the record's state is the anchor's with guard retreats only
(:func:`retreat_of`): the same stages, versions, rollback stacks, guards and releases, and each
canary or shadow kept or, on a guarded stage, cleared. The anchor may not be older than the
newest authorised state the reader already holds (:func:`authorised_seq`), so an old anchor
cannot bring back what an operator changed since. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelyard.control.routing import PipelineRouting, StageRouting
from modelyard.control.state import ControlRecord

__all__ = ["anchor_for", "authorised_seq", "retreat_of"]


def retreat_of(before: PipelineRouting, after: PipelineRouting) -> bool:
    """Whether ``after`` is ``before`` with guard retreats only (any number, ``seq`` aside)."""
    if (after.pipeline, after.releases) != (before.pipeline, before.releases):
        return False
    if after.stages.keys() != before.stages.keys():
        return False
    return all(_stage_retreat(before.stages[s], after.stages[s]) for s in before.stages)


def _stage_retreat(before: StageRouting, after: StageRouting) -> bool:
    kept = (after.active, after.previous, after.guards)
    if kept != (before.active, before.previous, before.guards):
        return False
    # only a guarded stage's canary or shadow may be taken away
    cleared: tuple[None, ...] = (None,) if before.guards else ()
    return after.canary in (before.canary, *cleared) and after.shadow in (before.shadow, *cleared)


def anchor_for(applied: Sequence[ControlRecord]) -> ControlRecord | None:
    """The anchor of a writer's record built on ``applied``, the applied records of one
    pipeline in topic order: the last one's anchor when it has one (a writer's record), else the
    last one itself (an operator's); None when there are none."""
    if not applied:
        return None
    last = applied[-1]
    return last.anchor if last.anchor is not None else last


def authorised_seq(record: ControlRecord, *, unseen_base: bool, floor: int) -> int:
    """The seq of the newest authorised state a reader holds once it applied ``record``, when
    it held ``floor`` before: the record's own seq for a record without an anchor (an
    operator's), its anchor's seq when it was applied on the anchor's word (``unseen_base``),
    else ``floor`` (a writer's record judged against the state the reader held)."""
    if record.anchor is None:
        return record.seq
    return record.anchor.seq if unseen_base else floor

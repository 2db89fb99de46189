"""The rule every control-topic reader folds records with (``control/chain.py``)."""

from __future__ import annotations

from collections.abc import Iterable

from modelyard.control import (
    Change,
    ControlState,
    PipelineRouting,
    Reassert,
    Rollout,
    make_record,
)
from modelyard.control.chain import Chain, Positioned, follows

EMPTY = PipelineRouting(pipeline="docs")


def _on(state: PipelineRouting, change: Change, offset: int, *, legacy: bool = False) -> Positioned:
    record = make_record(state, change, actor="t")
    return Positioned(offset, record, None if legacy else state.seq)


def _fold(records: Iterable[Positioned]) -> tuple[ControlState, list[bool]]:
    chain = Chain()
    marks = [chain.offer(p).applied for p in records]
    return chain.state, marks


def _compacted(records: list[Positioned]) -> list[Positioned]:
    """What a compacted topic keeps: the last record of each key."""
    last = {p.record.key: p for p in records}
    return sorted(last.values(), key=lambda p: p.offset)


def test_a_record_is_applied_on_its_head_or_a_later_state_and_ignored_on_an_older_one() -> None:
    head = EMPTY.model_copy(update={"seq": 5})
    record = make_record(head, Rollout(stage="ocr", version="1"), actor="t")
    assert follows(head, record, 5)  # built on what the reader holds
    assert follows(head, record, 7)  # built on records compacted away under the reader
    assert not follows(head, record, 4)  # built on a state another change replaced
    assert follows(head, record, None)  # written before bases: the last one wins


def test_the_second_of_two_writers_on_the_same_state_is_ignored_everywhere() -> None:
    first = _on(EMPTY, Rollout(stage="ocr", version="1"), 0)
    second = _on(EMPTY, Rollout(stage="ocr", version="2"), 1)
    later = _on(first.record.state, Rollout(stage="ocr", version="3"), 2)
    state, marks = _fold([first, second, later])
    assert marks == [True, False, True]
    ocr = state.stage("docs", "ocr")
    assert (ocr.active, ocr.previous) == ("3", ("1",))  # version 2 never routed


def test_a_copy_of_the_head_and_other_pipelines_are_independent() -> None:
    docs = _on(EMPTY, Rollout(stage="ocr", version="1"), 0)
    chat = _on(PipelineRouting(pipeline="chat"), Rollout(stage="ocr", version="9"), 1)
    copy = Positioned(2, docs.record, docs.base)  # a producer's retry wrote it twice
    state, marks = _fold([docs, chat, copy])
    assert marks == [True, True, False]
    assert (state.pipeline("docs").seq, state.pipeline("chat").seq) == (1, 1)


def test_records_without_a_base_are_applied_in_order() -> None:
    first = _on(EMPTY, Rollout(stage="ocr", version="1"), 0, legacy=True)
    second = _on(EMPTY, Rollout(stage="ocr", version="2"), 1, legacy=True)
    state, marks = _fold([first, second])
    assert marks == [True, True]
    assert state.stage("docs", "ocr").active == "2"


def test_a_reassert_after_a_lost_race_makes_the_compacted_topic_agree() -> None:
    winner = _on(EMPTY, Rollout(stage="ocr", version="1"), 0)
    loser = _on(EMPTY, Rollout(stage="ocr", version="2"), 1)
    full, _ = _fold([winner, loser])
    alone, _ = _fold(_compacted([winner, loser]))
    assert full.stage("docs", "ocr").active == "1"
    assert alone.stage("docs", "ocr").active == "2"  # the hazard the reassert is written for
    heal = _on(full.pipeline("docs"), Reassert(), 2)
    log = [winner, loser, heal]
    assert _fold(log)[0] == _fold(_compacted(log))[0] == _fold(log[1:])[0]
    assert _fold(log)[0].stage("docs", "ocr").active == "1"

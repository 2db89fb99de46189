"""A writer key's records after compaction: verified by their anchor (``control/anchor.py``)."""

from __future__ import annotations

import json

import pytest
from modelyard.cli.control_view import history_table
from modelyard.control import (
    CanaryChange,
    Change,
    ControlRecord,
    GuardRule,
    GuardsChange,
    PipelineRouting,
    Reassert,
    ReleaseSave,
    Rollout,
    ShadowChange,
    Withdraw,
    decode_record,
    encode_record,
)
from modelyard.control.anchor import anchor_for, authorised_seq, retreat_of
from modelyard.control.chain import Chain, Positioned
from modelyard.control.signing import record_payload, signed_record
from modelyard.control.verify import ControlVerifier
from modelyard.errors import DecodeError
from modelyard.keys import Keyring, SigningKey

ADMIN = SigningKey.generate("admin")
ROUTER = SigningKey.generate("router")  # writer
VERIFIER = ControlVerifier(Keyring([ADMIN.public_entry("admin"), ROUTER.public_entry("writer")]))
GUARDS = GuardsChange(stage="a", rules=(GuardRule(metric="error_rate", max=0.5),))
OPERATOR_WORK: list[Change] = [
    Rollout(stage="a", version="1"),
    Rollout(stage="b", version="1"),
    Rollout(stage="a", version="2"),
    GUARDS,
    ReleaseSave(release="good"),
    CanaryChange(stage="a", version="3", weight=0.1),
    ShadowChange(stage="a", version="4", sample_rate=1.0),
]


class _Log:
    """A control topic as writers build it: each record on the state the fold holds."""

    def __init__(self) -> None:
        self.records: list[Positioned] = []
        self.chain = Chain(VERIFIER)

    def write(self, change: Change, key: SigningKey = ADMIN) -> Positioned:
        pipeline = self.chain.state.pipeline("docs")
        anchor = None
        if key is ROUTER:  # what write_change does for a writer key
            applied = [p.record for p in self.records if p.applied]
            anchor = anchor_for(applied)
        record = signed_record(pipeline, change, signer=key, anchor=anchor)
        got = self.chain.offer(Positioned(len(self.records), record, pipeline.seq))
        assert got.applied, got.detail
        self.records.append(got)
        return got


def _fresh_fold(records: list[Positioned]) -> tuple[Chain, list[Positioned]]:
    chain = Chain(VERIFIER)
    return chain, [chain.offer(Positioned(p.offset, p.record, p.base)) for p in records]


def _guard_trip() -> _Log:
    log = _Log()
    for change in OPERATOR_WORK:
        log.write(change)
    log.write(Withdraw(stage="a", version="4"), ROUTER)
    log.write(CanaryChange(stage="a", version=None), ROUTER)
    return log


def test_a_compacted_guard_retreat_applies_on_its_anchor_and_says_what_was_compacted() -> None:
    log = _guard_trip()
    last = log.records[-1]
    assert last.record.anchor == log.records[len(OPERATOR_WORK) - 1].record  # the operator's
    chain, marks = _fresh_fold([last])  # all compaction keeps of the pipeline
    assert [(m.applied, m.rejected, m.compacted) for m in marks] == [(True, None, 8)]
    assert marks[0].compacted_seqs == range(1, 9)
    assert chain.state == log.chain.state
    stage = chain.state.stage("docs", "a")
    assert (stage.active, stage.canary, stage.shadow) == ("2", None, None)


def test_a_reader_that_saw_everything_marks_nothing_compacted() -> None:
    log = _guard_trip()
    chain, marks = _fresh_fold(log.records)
    assert [m.compacted for m in marks] == [0] * len(log.records)
    assert chain.state == log.chain.state


def test_without_an_anchor_a_compacted_writer_record_is_still_rejected() -> None:
    log = _guard_trip()
    bare = signed_record(
        log.records[-2].record.state, CanaryChange(stage="a", version=None), signer=ROUTER
    )
    _, marks = _fresh_fold([Positioned(0, bare, bare.seq - 1)])
    assert (marks[0].applied, marks[0].rejected) == (False, "not_authorised")


def _forged(anchor: ControlRecord, state: PipelineRouting, key: SigningKey = ROUTER) -> Positioned:
    """A writer record claiming ``state`` on ``anchor``, built on a seq nobody saw."""
    seq = state.seq + 5
    base = state.model_copy(update={"seq": seq - 1})
    record = signed_record(base, ShadowChange(stage="a", version=None), signer=key, anchor=anchor)
    return Positioned(10, record, seq - 1)


def test_an_anchor_cannot_vouch_for_more_than_a_guard_retreat() -> None:
    log = _guard_trip()
    anchor = log.records[len(OPERATOR_WORK) - 1].record
    rolled = anchor.state.model_copy(
        update={"stages": {**anchor.state.stages, "b": anchor.state.stage("a")}}
    )
    _, marks = _fresh_fold([_forged(anchor, rolled)])
    assert marks[0].rejected == "not_authorised"
    assert "guard retreats only" in marks[0].detail
    operator_state = log.records[len(OPERATOR_WORK) - 2].record.state
    by_writer = signed_record(operator_state, Reassert(), signer=ROUTER)  # no anchor of its own
    _, marks = _fresh_fold([_forged(by_writer, by_writer.state)])
    assert marks[0].rejected == "not_authorised"
    assert "not by a key that may change" in marks[0].detail


def test_an_anchor_older_than_the_state_a_reader_holds_is_rejected() -> None:
    log = _guard_trip()
    old_anchor = log.records[len(OPERATOR_WORK) - 1].record
    newer = log.write(CanaryChange(stage="a", version="3", weight=0.1))  # the operator again
    chain, _ = _fresh_fold([newer])
    stale = chain.offer(_forged(old_anchor, old_anchor.state))
    assert stale.rejected == "not_authorised"
    assert "older than the state this reader holds" in stale.detail
    assert chain.state == log.chain.state


def test_retreat_of_allows_clearing_only_on_guarded_stages() -> None:
    log = _guard_trip()
    before = log.records[len(OPERATOR_WORK) - 1].record.state
    assert retreat_of(before, log.chain.state.pipeline("docs"))
    assert retreat_of(before, before)
    unguarded = before.model_copy(update={"stages": {**before.stages, "a": before.stage("a")
                                  .model_copy(update={"guards": ()})}})  # fmt: skip
    cleared = unguarded.stage("a").model_copy(update={"canary": None})
    assert not retreat_of(unguarded, unguarded.model_copy(update={"stages": {"a": cleared}}))
    assert not retreat_of(before, before.model_copy(update={"releases": {}}))
    assert not retreat_of(before, before.model_copy(update={"pipeline": "other"}))


def test_the_floor_moves_with_operator_records_and_anchors() -> None:
    log = _guard_trip()
    operator, writer = log.records[len(OPERATOR_WORK) - 1].record, log.records[-1].record
    assert authorised_seq(operator, unseen_base=False, floor=2) == operator.seq
    assert authorised_seq(writer, unseen_base=True, floor=0) == operator.seq
    assert authorised_seq(writer, unseen_base=False, floor=3) == 3
    assert anchor_for([]) is None
    assert anchor_for([operator]) is operator
    assert anchor_for([operator, writer]) == operator


def test_an_anchor_round_trips_signed_and_a_record_without_one_reads_as_before() -> None:
    log = _guard_trip()
    writer = log.records[-1].record
    assert decode_record(encode_record(writer)) == writer
    assert b'"anchor"' not in encode_record(log.records[0].record)
    assert b'"anchor"' not in record_payload(log.records[0].record)
    nested = writer.model_dump(mode="json", by_alias=True)
    nested["anchor"]["anchor"] = dict(nested["anchor"])  # an anchor under an anchor
    with pytest.raises(DecodeError, match="carries no anchor"):
        decode_record(json.dumps(nested).encode())


def test_history_shows_what_compaction_removed_under_a_record() -> None:
    log = _guard_trip()
    _, marks = _fresh_fold([log.records[-1]])
    lines = history_table(marks).splitlines()
    assert len(lines) == 3  # header, the compacted span, the record
    assert lines[1].split()[:4] == ["1-8", "-", "-", "compacted"]
    assert "their result is in seq 9" in lines[1]
    assert lines[2].split()[0] == "9"

"""Control plane core: the reducer, records, last-record-per-key replay, canary and shadow draws."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from modelyard.control import (
    CanaryChange,
    Change,
    ControlError,
    ControlRecord,
    ControlState,
    GuardRule,
    GuardsChange,
    PipelineRouting,
    Promote,
    ReleaseRollback,
    ReleaseSave,
    Rollback,
    Rollout,
    ShadowChange,
    StageRouting,
    apply,
    choose_version,
    decode_record,
    encode_record,
    make_record,
    should_shadow,
)
from modelyard.control.routing import MAX_PREVIOUS, Canary, Shadow
from modelyard.errors import DecodeError
from pydantic import ValidationError as PydanticValidationError

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _run(*changes: Change, pipeline: str = "docs") -> list[ControlRecord]:
    records, state = [], PipelineRouting(pipeline=pipeline)
    for change in changes:
        record = make_record(state, change, actor="alice", at=AT)
        records.append(record)
        state = record.state
    return records


def _state(*changes: Change) -> PipelineRouting:
    return _run(*changes)[-1].state


def test_rollout_pushes_previous_and_rollback_pops() -> None:
    state = _state(Rollout(stage="translate", version="1"), Rollout(stage="translate", version="2"))
    assert state.stage("translate") == StageRouting(active="2", previous=("1",))
    state = apply(state, Rollback(stage="translate"))
    assert state.stage("translate") == StageRouting(active="1", previous=())
    with pytest.raises(ControlError, match="no previous version"):
        apply(state, Rollback(stage="translate"))
    with pytest.raises(ControlError, match="already active"):
        apply(state, Rollout(stage="translate", version="1"))


def test_rollback_touches_only_its_stage() -> None:
    state = _state(
        Rollout(stage="ocr", version="1"),
        Rollout(stage="ocr", version="2"),
        Rollout(stage="translate", version="1"),
        Rollout(stage="translate", version="2"),
    )
    after = apply(state, Rollback(stage="translate"))
    assert after.stage("ocr") == state.stage("ocr")
    assert after.stage("translate").active == "1"
    assert after.seq == state.seq + 1


def test_rollback_stack_is_bounded() -> None:
    state = _state(*(Rollout(stage="s", version=str(v)) for v in range(MAX_PREVIOUS + 5)))
    assert len(state.stage("s").previous) == MAX_PREVIOUS
    assert state.stage("s").previous[-1] == str(MAX_PREVIOUS + 3)


def test_canary_and_promote() -> None:
    state = _state(
        Rollout(stage="s", version="1"), CanaryChange(stage="s", version="2", weight=0.1)
    )
    assert state.stage("s").canary == Canary(version="2", weight=0.1)
    promoted = apply(state, Promote(stage="s"))
    assert promoted.stage("s") == StageRouting(active="2", previous=("1",))
    cleared = apply(state, CanaryChange(stage="s", version=None))
    assert cleared.stage("s").canary is None
    with pytest.raises(ControlError, match="no canary to promote"):
        apply(cleared, Promote(stage="s"))
    with pytest.raises(ControlError, match="no canary to clear"):
        apply(cleared, CanaryChange(stage="s"))
    with pytest.raises(ControlError, match="different active version"):
        apply(cleared, CanaryChange(stage="s", version="1", weight=0.5))


def test_canary_weight_is_validated() -> None:
    state = _state(Rollout(stage="s", version="1"))
    with pytest.raises(ControlError, match=r"weight must be in \(0, 1\]"):
        apply(state, CanaryChange(stage="s", version="2", weight=0.0))
    with pytest.raises(ValueError, match="less than or equal to 1"):
        CanaryChange(stage="s", version="2", weight=1.5)


def test_shadow_set_and_clear_and_guards() -> None:
    state = _state(
        Rollout(stage="s", version="1"), ShadowChange(stage="s", version="2", sample_rate=0.25)
    )
    assert state.stage("s").shadow == Shadow(version="2", sample_rate=0.25)
    assert apply(state, ShadowChange(stage="s")).stage("s").shadow is None
    with pytest.raises(ControlError, match="cannot shadow the active"):
        apply(state, ShadowChange(stage="s", version="1"))
    rules = (GuardRule(metric="error_rate", max=0.05),)
    assert apply(state, GuardsChange(stage="s", rules=rules)).stage("s").guards == rules


def test_release_save_and_atomic_rollback_in_one_record() -> None:
    records = _run(
        Rollout(stage="ocr", version="1"),
        Rollout(stage="translate", version="1"),
        ReleaseSave(release="r1"),
        Rollout(stage="ocr", version="2"),
        Rollout(stage="translate", version="2"),
        CanaryChange(stage="translate", version="3", weight=0.5),
        ShadowChange(stage="ocr", version="3", sample_rate=0.1),
        Rollout(stage="sentiment", version="7"),
        ReleaseRollback(release="r1"),
    )
    state = records[-1].state
    assert state.releases["r1"].stages == {"ocr": "1", "translate": "1"}
    assert state.stage("ocr") == StageRouting(
        active="1", previous=("1", "2"), shadow=Shadow(version="3", sample_rate=0.1)
    )
    assert state.stage("translate").canary is None  # a release is a known-good state
    assert state.stage("sentiment").active == "7"  # not in the release: untouched
    assert ControlState.from_records(records[-1:]).pipeline("docs") == state  # one record
    with pytest.raises(ControlError, match=r"no release 'r9' \(releases: r1\)"):
        apply(state, ReleaseRollback(release="r9"))
    with pytest.raises(ControlError, match="no active versions"):
        apply(PipelineRouting(pipeline="docs"), ReleaseSave(release="r0"))


def test_last_record_per_key_equals_full_fold() -> None:
    docs = _run(
        Rollout(stage="ocr", version="1"),
        Rollout(stage="ocr", version="2"),
        CanaryChange(stage="ocr", version="3", weight=0.2),
        ReleaseSave(release="good"),
        Promote(stage="ocr"),
        Rollback(stage="ocr"),
        ShadowChange(stage="ocr", version="3", sample_rate=0.5),
        ReleaseRollback(release="good"),
    )
    other = _run(Rollout(stage="a", version="1"), Rollout(stage="a", version="2"), pipeline="other")
    interleaved = [docs[0], other[0], docs[1], other[1], *docs[2:]]
    full = ControlState.replay(interleaved)
    last_only = ControlState.from_records([docs[-1], other[-1]])
    assert last_only == full
    assert ControlState.from_records(interleaved) == full
    assert [r.seq for r in docs] == list(range(1, len(docs) + 1))


def test_record_json_round_trip_and_shape() -> None:
    [record] = _run(Rollout(stage="ocr", version="1"))
    value = encode_record(record)
    assert decode_record(value) == record
    text = value.decode()
    for part in ('"schema":1', '"type":"rollout"', '"actor":"alice"'):
        assert part in text
    assert '"at":"2025-01-02T03:04:05Z"' in text


@pytest.mark.parametrize(
    "value",
    [b"not json", b"{}", b'{"schema": 2}', b"[1]"],
)
def test_bad_records_are_decode_errors(value: bytes) -> None:
    with pytest.raises(DecodeError, match="invalid control record"):
        decode_record(value)


def test_make_record_refuses_invalid_changes() -> None:
    with pytest.raises(ControlError):
        make_record(PipelineRouting(pipeline="docs"), Rollback(stage="ocr"), actor="bob")


def _stage(weight: float) -> StageRouting:
    return StageRouting(active="1", canary=Canary(version="2", weight=weight))


@pytest.mark.parametrize("weight", [0.05, 0.25, 0.5, 0.9])
def test_canary_split_matches_weight(weight: float) -> None:
    keys = [f"caller-{i}" for i in range(10_000)]
    chosen = [choose_version(_stage(weight), k, scope="docs/translate") for k in keys]
    share = sum(role == "canary" for _, role in chosen) / len(keys)
    assert abs(share - weight) < 0.02
    assert {v for v, role in chosen if role == "canary"} == {"2"}


def test_canary_is_sticky_and_monotone_in_weight() -> None:
    keys = [f"k{i}" for i in range(2_000)]
    low = {k for k in keys if choose_version(_stage(0.1), k, scope="p/s")[1] == "canary"}
    again = {k for k in keys if choose_version(_stage(0.1), k, scope="p/s")[1] == "canary"}
    high = {k for k in keys if choose_version(_stage(0.4), k, scope="p/s")[1] == "canary"}
    assert low == again
    assert low < high  # raising the weight keeps everyone already on the canary there
    other_stage = {k for k in keys if choose_version(_stage(0.1), k, scope="p/t")[1] == "canary"}
    assert other_stage != low  # draws are independent per stage


def test_choose_without_canary_or_active() -> None:
    assert choose_version(StageRouting(active="1"), "k", scope="p/s") == ("1", "active")
    with pytest.raises(ControlError, match="no active version"):
        choose_version(StageRouting(), "k", scope="p/s")


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5])
def test_shadow_sampling_rate(rate: float) -> None:
    state = StageRouting(active="1", shadow=Shadow(version="2", sample_rate=rate))
    ids = [f"req-{i}" for i in range(10_000)]
    sampled = [should_shadow(state, i, scope="docs/ocr") for i in ids]
    assert abs(sum(sampled) / len(ids) - rate) < 0.02
    assert sampled == [should_shadow(state, i, scope="docs/ocr") for i in ids]  # stable
    assert not should_shadow(StageRouting(active="1"), "req-1", scope="docs/ocr")


def _record_json(**state_a: object) -> bytes:
    record = make_record(
        PipelineRouting(pipeline="docs"),
        Rollout(stage="a", version="1"),
        actor="alice",
        at=datetime(2025, 1, 2, tzinfo=UTC),
    )
    data = json.loads(encode_record(record))
    data["state"]["stages"]["a"].update(state_a)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "value",
    [
        b"[" * 100_000,  # json.loads raised RecursionError
        _record_json(guards=[{"metric": "error_rate", "max": float("inf")}]),  # dumps as null
        _record_json(active="../x y"),  # routed to: a topic name is made of it
        _record_json(previous=["v 1"]),
        _record_json(active="1").replace(b'"alice"', b'"\\ud800"'),  # no writer can encode it
    ],
)
def test_values_that_are_no_usable_record_are_decode_errors(value: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_record(value)


def test_a_release_must_name_versions() -> None:
    with pytest.raises(PydanticValidationError):
        PipelineRouting.model_validate(
            {"pipeline": "docs", "releases": {"r": {"name": "r", "stages": {"a": "x/y"}}}}
        )

"""Control-plane I/O on the real embedded broker: read, write, races, the follower."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import Producer
from modelyard.control import (
    Change,
    ControlError,
    ControlRecord,
    PipelineRouting,
    Rollback,
    Rollout,
    encode_record,
    make_record,
    topic,
)
from modelyard.control.topic import (
    ConcurrentChangeError,
    ControlFollower,
    confirm_record,
    ensure_control_topic,
    produce_record,
    read_records,
    read_state,
    write_change,
)
from modelyard.topics import control_topic

from tests.integration.conftest import kafka_config

pytestmark = pytest.mark.integration


def test_missing_topic_reads_as_empty_state(broker: str, unique: str) -> None:
    assert read_state(broker, prefix=unique).pipelines == {}


def test_write_then_read_round_trip(broker: str, unique: str) -> None:
    record = write_change(
        broker,
        "docs",
        Rollout(stage="ocr", version="1"),
        actor="alice",
        reason="first",
        prefix=unique,
    )
    assert (record.seq, record.actor, record.reason) == (1, "alice", "first")
    state = read_state(broker, prefix=unique)
    assert state.stage("docs", "ocr").active == "1"
    assert [p.record for p in read_records(broker, prefix=unique)] == [record]


def test_last_record_per_key_wins_without_compaction(broker: str, unique: str) -> None:
    for version in ("1", "2", "3"):
        write_change(
            broker, "docs", Rollout(stage="ocr", version=version), actor="a", prefix=unique
        )
    write_change(broker, "other", Rollout(stage="ocr", version="9"), actor="b", prefix=unique)
    write_change(broker, "docs", Rollback(stage="ocr"), actor="a", prefix=unique)
    assert len(read_records(broker, prefix=unique)) == 5  # nothing compacted away
    state = read_state(broker, prefix=unique)
    docs = state.pipeline("docs")
    assert (docs.seq, docs.stage("ocr").active, docs.stage("ocr").previous) == (4, "2", ("1",))
    assert state.stage("other", "ocr").active == "9"


def test_a_change_that_does_not_apply_writes_nothing(broker: str, unique: str) -> None:
    write_change(broker, "docs", Rollout(stage="ocr", version="1"), actor="a", prefix=unique)
    with pytest.raises(ControlError, match="no previous version to roll back to"):
        write_change(broker, "docs", Rollback(stage="ocr"), actor="a", prefix=unique)
    assert len(read_records(broker, prefix=unique)) == 1


def test_a_lost_race_is_detected(broker: str, unique: str) -> None:
    ensure_control_topic(broker, unique)
    base = PipelineRouting(pipeline="docs")  # both writers read the same (empty) state
    mine = make_record(base, Rollout(stage="ocr", version="1"), actor="alice")
    theirs = make_record(base, Rollout(stage="ocr", version="2"), actor="bob")
    offset = produce_record(broker, mine, prefix=unique)
    their_offset = produce_record(broker, theirs, prefix=unique)
    confirm_record(broker, mine, offset, prefix=unique)  # the first one stands
    with pytest.raises(ConcurrentChangeError, match="another change won: alice's 'rollout ocr"):
        confirm_record(broker, theirs, their_offset, prefix=unique)
    assert [p.applied for p in read_records(broker, prefix=unique)] == [True, False]
    assert read_state(broker, prefix=unique).stage("docs", "ocr").active == "1"
    # a writer that re-reads builds on the winner, and a later record does not change that
    write_change(broker, "docs", Rollout(stage="ocr", version="3"), actor="bob", prefix=unique)
    confirm_record(broker, mine, offset, prefix=unique)
    ocr = read_state(broker, prefix=unique).stage("docs", "ocr")
    assert (ocr.active, ocr.previous) == ("3", ("1",))


def test_a_writer_that_lost_puts_the_truth_last(
    broker: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The losing record would be the one compaction keeps: the loser writes a reassert."""
    write_change(broker, "docs", Rollout(stage="ocr", version="1"), actor="a", prefix=unique)
    real = topic.make_record

    def bob_lands_first(current: PipelineRouting, change: Change, **kw: Any) -> ControlRecord:
        monkeypatch.setattr(topic, "make_record", real)  # once, between slow's read and write
        write_change(broker, "docs", Rollout(stage="ocr", version="2"), actor="bob", prefix=unique)
        return real(current, change, **kw)

    monkeypatch.setattr(topic, "make_record", bob_lands_first)
    with pytest.raises(ConcurrentChangeError, match="bob's 'rollout ocr -> 2' \\(seq 2\\)"):
        write_change(broker, "docs", Rollout(stage="ocr", version="3"), actor="slow", prefix=unique)
    records = read_records(broker, prefix=unique)
    assert [(p.record.actor, p.record.change.type, p.applied) for p in records] == [
        ("a", "rollout", True),
        ("bob", "rollout", True),
        ("slow", "rollout", False),
        ("slow", "reassert", True),
    ]
    truth = read_state(broker, prefix=unique).pipeline("docs")
    assert (truth.seq, truth.stage("ocr").active) == (3, "2")
    assert records[-1].record.state == truth  # the last record of the key: what compaction keeps


def test_records_without_a_base_are_applied_as_before(broker: str, unique: str) -> None:
    """Records written before bases were named: the last one wins, even on the same seq."""
    topic_name = ensure_control_topic(broker, unique)
    base = PipelineRouting(pipeline="docs")
    old = [make_record(base, Rollout(stage="ocr", version=v), actor="old") for v in "12"]
    producer = Producer(kafka_config(broker, producer=True))
    for record in old:
        producer.produce(topic_name, encode_record(record), key=b"docs", partition=0)
    assert producer.flush(10) == 0
    assert [p.applied for p in read_records(broker, prefix=unique)] == [True, True]
    assert read_state(broker, prefix=unique).stage("docs", "ocr").active == "2"
    after = write_change(
        broker, "docs", Rollout(stage="ocr", version="3"), actor="new", prefix=unique
    )
    assert (after.seq, after.state.stage("ocr").previous) == (2, ("2",))


def test_bad_records_are_skipped(broker: str, unique: str) -> None:
    topic = ensure_control_topic(broker, unique)
    good = make_record(
        PipelineRouting(pipeline="docs"), Rollout(stage="ocr", version="1"), actor="a"
    )
    producer = Producer(kafka_config(broker, producer=True))
    producer.produce(topic, b"not json", key=b"docs", partition=0)
    producer.produce(topic, encode_record(good), key=b"docs", partition=0)
    producer.produce(topic, b'{"schema": 1, "key": "docs"}', key=b"docs", partition=0)
    producer.produce(topic, encode_record(good), key=b"elsewhere", partition=0)  # key mismatch
    producer.produce(topic, None, key=b"docs", partition=0)  # a tombstone
    assert producer.flush(10) == 0
    assert [p.record for p in read_records(broker, prefix=unique)] == [good]
    assert read_state(broker, prefix=unique).stage("docs", "ocr").active == "1"
    # writers build on the valid records only
    after = write_change(
        broker, "docs", Rollout(stage="ocr", version="2"), actor="b", prefix=unique
    )
    assert after.seq == 2


def test_follower_catches_up_sees_changes_and_stops(broker: str, unique: str) -> None:
    write_change(broker, "docs", Rollout(stage="ocr", version="1"), actor="a", prefix=unique)
    seen: list[ControlRecord] = []
    with ControlFollower(broker, prefix=unique, on_change=seen.append) as follower:
        assert follower.wait_caught_up(10)
        assert follower.state.stage("docs", "ocr").active == "1"
        snapshot = follower.state
        write_change(broker, "docs", Rollout(stage="ocr", version="2"), actor="a", prefix=unique)
        assert follower.wait_until(lambda s: s.pipeline("docs").seq == 2, 10)
        assert follower.state.stage("docs", "ocr").active == "2"
        assert snapshot.stage("docs", "ocr").active == "1"  # snapshots never change
    assert [r.seq for r in seen] == [1, 2]
    assert follower.failure is None


def test_follower_waits_for_the_topic_to_exist(broker: str, unique: str) -> None:
    with ControlFollower(broker, prefix=unique) as follower:
        assert not follower.caught_up
        write_change(broker, "docs", Rollout(stage="ocr", version="1"), actor="a", prefix=unique)
        assert follower.wait_until(lambda s: s.stage("docs", "ocr").active == "1", 30)
        assert follower.wait_caught_up(10)
    assert control_topic(unique) == follower.topic


def test_follower_sees_a_topic_created_long_after_it_started_looking(
    broker: str, unique: str
) -> None:
    # a client that was told the topic does not exist for ~6 s or more kept believing it for
    # over 40 s on the embedded broker: the follower must look with fresh eyes
    with ControlFollower(broker, prefix=unique) as follower:
        assert not follower.wait_caught_up(8)  # eight seconds of looking for a missing topic
        ensure_control_topic(broker, unique)  # created empty, as `modelyard up` creates it
        assert follower.wait_caught_up(10)
        write_change(broker, "docs", Rollout(stage="ocr", version="1"), actor="a", prefix=unique)
        assert follower.wait_until(lambda s: s.stage("docs", "ocr").active == "1", 10)


def test_follower_survives_a_failing_callback(broker: str, unique: str) -> None:
    def boom(record: ControlRecord) -> None:
        raise RuntimeError("callback bug")

    with ControlFollower(broker, prefix=unique, on_change=boom) as follower:
        write_change(broker, "docs", Rollout(stage="ocr", version="1"), actor="a", prefix=unique)
        write_change(broker, "docs", Rollout(stage="ocr", version="2"), actor="a", prefix=unique)
        assert follower.wait_until(lambda s: s.pipeline("docs").seq == 2, 10)
    assert follower.failure is None


def test_followers_restarted_while_changes_are_written_converge(broker: str, unique: str) -> None:
    """Followers started before the topic exists, and others stopped and restarted while
    changes are being written, all end with the state the topic holds."""
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(8):
                pipeline = ("docs", "chat")[i % 2]
                change = Rollout(stage="ocr", version=str(i))
                write_change(broker, pipeline, change, actor="w", prefix=unique)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    writer = threading.Thread(target=write, name="control-writer")
    first = ControlFollower(broker, prefix=unique).start()  # the topic does not exist yet
    try:
        assert not first.caught_up
        writer.start()
        for seq in (1, 2, 3):  # each restarted follower stops mid-stream, then the next starts
            with ControlFollower(broker, prefix=unique) as restarted:
                assert restarted.wait_until(lambda s, n=seq: s.pipeline("docs").seq >= n, 60)
            assert restarted.failure is None
        writer.join(120)
        assert not errors, errors
        truth = read_state(broker, prefix=unique)
        assert (truth.pipeline("docs").seq, truth.pipeline("chat").seq) == (4, 4)
        with ControlFollower(broker, prefix=unique) as last:
            assert last.wait_caught_up(30)
            assert last.state == truth
        assert first.wait_until(lambda s: s == truth, 30)
    finally:
        first.stop()
        writer.join(120)
    assert first.failure is None
    assert first.caught_up


def test_concurrent_writers_are_told_the_truth(broker: str, unique: str) -> None:
    """Two writers race on one pipeline: every change reported written is in the final state,
    every change reported lost is not (races may or may not happen; the reports must be true)."""
    ensure_control_topic(broker, unique)
    outcomes: dict[str, list[tuple[str, bool]]] = {"a": [], "b": []}

    def writer(stage: str) -> None:
        for i in range(8):  # fewer than the rollback depth: every version stays in the history
            try:
                change = Rollout(stage=stage, version=str(i))
                write_change(broker, "docs", change, actor=stage, prefix=unique)
                outcomes[stage].append((str(i), True))
            except ConcurrentChangeError:
                outcomes[stage].append((str(i), False))

    threads = [threading.Thread(target=writer, args=(s,), name=f"writer-{s}") for s in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = read_state(broker, prefix=unique).pipeline("docs")
    for stage, results in outcomes.items():
        routing = final.stage(stage)
        history = {*routing.previous, routing.active}
        assert [v for v, ok in results if ok and v not in history] == [], stage
        assert [v for v, ok in results if not ok and v in history] == [], stage

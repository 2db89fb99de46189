"""Offsets advance only over a gap-free prefix of finished messages."""

from __future__ import annotations

from modelyard.kafka.offsets import OffsetTracker

TP = ("t", 0)


def test_commits_only_the_gap_free_prefix() -> None:
    tracker = OffsetTracker()
    tracker.assign([TP])
    pending = [tracker.begin(TP, o) for o in range(5)]
    for p in pending:
        tracker.expect(p, 1)
    tracker.ack(pending[1])
    tracker.ack(pending[2])
    assert tracker.to_commit() == []  # offset 0 still outstanding
    tracker.ack(pending[0])
    assert tracker.to_commit() == [("t", 0, 3)]
    assert tracker.to_commit() == []  # nothing new
    assert tracker.inflight == 2


def test_message_needing_two_acks_waits_for_both() -> None:
    tracker = OffsetTracker()
    p = tracker.begin(TP, 10)
    tracker.expect(p, 2)  # reply + dead letter
    tracker.ack(p)
    assert tracker.to_commit() == []
    tracker.ack(p)
    assert tracker.to_commit() == [("t", 0, 11)]


def test_zero_acks_finishes_at_once_and_revoke_forgets() -> None:
    tracker = OffsetTracker()
    tracker.expect(tracker.begin(TP, 0), 0)
    assert tracker.to_commit() == [("t", 0, 1)]
    late = tracker.begin(TP, 1)
    tracker.revoke([TP])
    tracker.expect(late, 1)
    tracker.ack(late)  # finished after revoke: ignored, the new owner redoes it
    assert tracker.to_commit() == []
    assert tracker.inflight == 0


def test_rollback_makes_offsets_committable_again() -> None:
    tracker = OffsetTracker()
    tracker.expect(tracker.begin(TP, 0), 0)
    offsets = tracker.to_commit()
    tracker.rollback(offsets)
    assert tracker.to_commit() == offsets


def test_begin_many_keeps_the_order_of_each_partition() -> None:
    tracker = OffsetTracker()
    other = ("t", 1)
    pending = tracker.begin_many([(TP, 0), (other, 7), (TP, 1)])
    assert [(p.tp, p.offset) for p in pending] == [(TP, 0), (other, 7), (TP, 1)]
    assert tracker.inflight == 3
    for p in reversed(pending):
        tracker.expect(p, 0)
    assert sorted(tracker.to_commit()) == [("t", 0, 2), ("t", 1, 8)]


def test_a_held_message_waits_for_records_added_over_time() -> None:
    # the router: a request holds its offset while hop records go out, then its result
    tracker = OffsetTracker()
    tracker.assign([TP])
    p = tracker.begin(TP, 0)
    tracker.add(p, 1)  # the hold
    tracker.add(p, 1)  # a hop record
    tracker.ack(p)  # ... acknowledged: the hold keeps the offset back
    assert tracker.to_commit() == []
    tracker.add(p, 2)  # the result and its audit record
    tracker.ack(p)  # the hold released
    tracker.ack(p)
    assert tracker.to_commit() == []  # one record still unacknowledged
    tracker.ack(p)
    assert tracker.to_commit() == [("t", 0, 1)]


def test_a_message_finishing_after_its_partition_came_back_does_not_count() -> None:
    tracker = OffsetTracker()
    tracker.assign([TP])
    stale = tracker.begin(TP, 0)
    tracker.expect(stale, 1)
    tracker.revoke([TP])  # revoked, or rewound after an aborted transaction ...
    tracker.assign([TP])  # ... and assigned again: offset 0 is read and begun anew
    again = tracker.begin(TP, 0)
    tracker.expect(again, 1)
    tracker.ack(stale)  # the old claim finishing must not finish the new one
    assert tracker.to_commit() == []
    assert tracker.inflight == 1
    tracker.ack(again)
    assert tracker.to_commit() == [("t", 0, 1)]

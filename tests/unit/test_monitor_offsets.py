"""What the monitor remembers of the offsets it counted: every record counted once, whatever
order the consumer hands them over in."""

from __future__ import annotations

import json
import random

from modelyard.monitor.offsets import MAX_HOLES, CountedOffsets


def _counted(offsets: list[int], start: CountedOffsets | None = None) -> list[int]:
    counted = start or CountedOffsets()
    return [offset for offset in offsets if counted.first_reading(offset)]


def test_in_order_each_offset_is_counted_once_and_a_reread_is_skipped() -> None:
    counted = CountedOffsets()
    assert _counted([0, 1, 2, 3], counted) == [0, 1, 2, 3]
    assert _counted([1, 2, 3, 4], counted) == [4]  # read again from a committed offset
    assert counted == CountedOffsets(5)


def test_a_record_handed_over_ahead_of_lower_ones_loses_none_of_them() -> None:
    # faust after a rebalance: 7 fetched before it comes first, then 3.. again from the commit
    counted = CountedOffsets(3)
    assert _counted([7, 3, 4, 5, 6, 7, 8], counted) == [7, 3, 4, 5, 6, 8]
    assert counted == CountedOffsets(9)  # the hole is filled


def test_any_order_with_rereads_counts_every_offset_exactly_once() -> None:
    rng = random.Random(7)
    for _ in range(200):
        offsets = list(range(40))
        rng.shuffle(offsets)
        offsets += rng.sample(range(40), 15)  # read again
        assert sorted(_counted(offsets)) == list(range(40))


def test_a_gap_no_record_fills_stays_a_hole_and_holes_are_bounded() -> None:
    counted = CountedOffsets()
    offsets = list(range(0, 3 * (MAX_HOLES + 10), 3))  # two offsets no record has after each
    assert _counted(offsets, counted) == offsets
    assert len(counted.holes) == MAX_HOLES  # the oldest forgotten
    assert counted.holes[-1] == (offsets[-1] - 2, offsets[-1])
    assert not counted.first_reading(1)  # a hole long forgotten: taken as counted


def test_it_round_trips_through_json_and_reads_a_bare_number_saved_before_holes() -> None:
    counted = CountedOffsets(3)
    _counted([9, 4], counted)
    assert CountedOffsets.from_json(json.loads(json.dumps(counted.to_json()))) == counted
    assert CountedOffsets.from_json(12) == CountedOffsets(12)

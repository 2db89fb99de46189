"""The monitor's faust consumer hands a fetched batch over as faust would, message by message."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP
from modelyard.monitor.draining import BatchDrainingConsumer

AUDIT = TP("p.audit", 0)


def _consumer(commit_every: int | None = None) -> tuple[Any, list[Any]]:
    """A ``BatchDrainingConsumer`` with just what ``_deliver`` touches, recording its calls."""
    calls: list[Any] = []
    consumer: Any = BatchDrainingConsumer.__new__(BatchDrainingConsumer)

    async def callback(message: Any) -> None:
        calls.append(("deliver", message.offset))

    async def add_gap(tp: TP, first: int, last: int) -> None:
        calls.append(("gap", first, last))

    async def commit() -> None:
        calls.append(("commit",))

    consumer.__dict__.update(
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True)),
        _read_offset=defaultdict(lambda: None), callback=callback, _add_gap=add_gap,
        commit=commit, _commit_every=commit_every, _n_acked=0,
    )  # fmt: skip
    return consumer, calls


def _batch(*offsets: int) -> list[tuple[TP, Any]]:
    return [(AUDIT, SimpleNamespace(offset=o, topic=AUDIT.topic)) for o in offsets]


def test_every_message_is_delivered_in_order_and_its_offset_read() -> None:
    consumer, calls = _consumer()
    asyncio.run(consumer._deliver(_batch(*range(250))))
    assert calls == [("deliver", o) for o in range(250)]
    assert consumer._read_offset[AUDIT] == 249


def test_messages_read_before_are_not_delivered_again() -> None:
    consumer, calls = _consumer()
    consumer._read_offset[AUDIT] = 5
    asyncio.run(consumer._deliver(_batch(3, 4, 5, 6)))
    assert calls == [("deliver", 5), ("deliver", 6)]


def test_a_hole_in_the_offsets_is_recorded_as_a_gap_to_ack() -> None:
    consumer, calls = _consumer()
    asyncio.run(consumer._deliver(_batch(1, 2, 7)))
    assert calls == [("deliver", 1), ("deliver", 2), ("gap", 3, 7), ("deliver", 7)]


def test_it_commits_once_enough_messages_were_acked() -> None:
    consumer, calls = _consumer(commit_every=10)
    consumer._n_acked = 10
    asyncio.run(consumer._deliver(_batch(0, 1)))
    assert calls == [("commit",), ("deliver", 0), ("deliver", 1)]
    assert consumer._n_acked == 0

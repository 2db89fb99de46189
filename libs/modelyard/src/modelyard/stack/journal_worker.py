"""The journal's worker: a handler on the one worker loop that copies into the journal.

It reads, from their first offset and without a consumer group (the embedded broker starts
empty on every run, and nothing is committed), the control topic, every pipeline's ingress
topic and every pipeline's results topic. Each batch is written in one SQLite transaction
before its messages are answered: control records are kept, ingress requests are kept until a
result with their request id (the results' key) is read.

What is not covered: a request the broker acknowledged to its producer but this worker had not
yet read and written when the broker died hard. The worker fetches with a 10 ms wait, so that is
the last few milliseconds of traffic (docs/brokers.md gives the figures measured).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from modelyard.kafka.codec import decode_message
from modelyard.kafka.config import MAX_MESSAGE_BYTES
from modelyard.kafka.handler import Handler, Outbox, Ticket
from modelyard.kafka.worker import AssignedIntake, ConsumerLike, LoopOptions, WorkerLoop
from modelyard.stack.journal import Copy, Journal

__all__ = ["JournalHandler", "JournalTopics", "journal_worker"]

log = structlog.get_logger(__name__)

_LIST_TIMEOUT_S = 5.0


class JournalTopics:
    """Which topics the journal reads, and what each one is."""

    def __init__(self, control: str, ingress: Sequence[str], results: Sequence[str]) -> None:
        self.control, self.ingress, self.results = control, frozenset(ingress), frozenset(results)

    @property
    def all(self) -> list[str]:
        return [self.control, *sorted(self.ingress), *sorted(self.results)]


class JournalHandler(Handler):
    def __init__(self, outbox: Outbox, journal: Journal, topics: JournalTopics) -> None:
        super().__init__(outbox)
        self._journal, self._topics = journal, topics
        self._next: dict[tuple[str, int], int] = {}  # the next offset to read, per partition

    def caught_up(self, ends: Mapping[tuple[str, int], int]) -> bool:
        """Whether every partition in ``ends`` (partition -> end offset) is read to its end."""
        return all(self._next.get(tp, 0) >= end for tp, end in ends.items())

    def handle(self, batch: Sequence[Ticket]) -> None:
        control: list[Copy] = []
        requests: list[Copy] = []
        answered: list[str] = []
        for ticket in batch:
            msg = ticket.message
            topic = msg.topic() or ""
            self._next[ticket.tp] = ticket.offset + 1
            if topic == self._topics.control:
                control.append(_copy(msg))
            elif topic in self._topics.ingress:
                copy = _request(msg)
                if copy is not None:
                    requests.append(copy)
            elif topic in self._topics.results and msg.key():
                answered.append(msg.key().decode("utf-8", "replace"))
        self._journal.record(control, requests, answered)  # on disk before they count as done
        self.outbox.close(batch)


def _copy(msg: Any, request_id: str = "") -> Copy:
    headers = [(k, v) for k, v in (msg.headers() or [])]
    return Copy(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), headers,
                msg.timestamp()[1], request_id)  # fmt: skip


def _request(msg: Any) -> Copy | None:
    """A copy of an ingress request; None when it names no request id (it can never be
    answered: the router dead-letters it)."""
    incoming = decode_message(msg.key(), msg.value(), msg.headers(), MAX_MESSAGE_BYTES)
    if not incoming.request_id:
        return None
    return _copy(msg, incoming.request_id)


def journal_worker(
    bootstrap: str, journal: Journal, topics: JournalTopics
) -> tuple[WorkerLoop, JournalHandler]:
    """A started worker copying ``topics`` into ``journal`` (``wait_ready``: it reads)."""

    def open_all(consumer: ConsumerLike) -> list[Any] | None:
        listed = consumer.list_topics(timeout=_LIST_TIMEOUT_S).topics  # type: ignore[attr-defined]
        positions = []
        for name in topics.all:
            meta = listed.get(name)
            if meta is None or meta.error is not None or not meta.partitions:
                return None  # not created yet: up creates every topic before it starts this
            positions += [TopicPartition(name, p, OFFSET_BEGINNING) for p in meta.partitions]
        return positions

    options = LoopOptions(bootstrap=bootstrap, poll_timeout_s=0.05, drain_timeout_s=5.0)
    loop = WorkerLoop(AssignedIntake(open=open_all), options, name="journal", produces=False)
    handler = JournalHandler(loop.outbox, journal, topics)
    loop.start(handler)
    return loop, handler

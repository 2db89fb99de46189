"""Re-submitting a dead-letter topic's letters to where they came from, each exactly once.

Each DLQ partition is read from where the last replay stopped, in batches. Every letter is
either re-submitted (its original key, value and headers, plus ``modelyard-replay-of``) or
skipped with a reason (``dlq.plan_letter``); either way it is handled, and is not offered again.

What was handled is kept in two consumer groups, as offsets only (some brokers drop commit
metadata; the embedded one does):

- *done*, ``<prefix>.g.dlq-replay.<dlq topic>``: per DLQ partition, the first letter not yet
  handled. It moves only after every re-submission before it is acknowledged.
- *intent*, ``<done>.intent``: before a batch is produced, the DLQ offset past the batch and,
  for every partition of each topic it goes to, that partition's end offset then.

A run that dies between producing a batch and moving *done* leaves intent > done. The next run
reads the target partitions from the recorded end offsets, finds the ``modelyard-replay-of``
headers of what was sent, and re-submits only the rest of that batch: no letter twice, no
letter lost, however often a run is killed. Runs on one topic must not overlap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from modelyard.broker.dlq import REPLAY_OF, DeadLetter, Plan, plan_letter, resubmission
from modelyard.errors import UnavailableError
from modelyard.kafka.config import consumer_config, producer_config
from modelyard.wire.headers import header_value

__all__ = [
    "ReplayOptions",
    "ReplaySummary",
    "done_group",
    "intent_group",
    "replay_dead_letters",
]

log = structlog.get_logger(__name__)


def done_group(prefix: str, topic: str) -> str:
    """The consumer group whose offsets say which letters of ``topic`` were handled."""
    return f"{prefix}.g.dlq-replay.{topic}"


def intent_group(prefix: str, topic: str) -> str:
    """The consumer group whose offsets say what a batch in flight was about to send."""
    return f"{done_group(prefix, topic)}.intent"


@dataclass(frozen=True)
class ReplayOptions:
    bootstrap: str
    prefix: str = "yard"
    kafka: Mapping[str, Any] = field(default_factory=dict, repr=False)  # may hold secrets
    since_ms: int | None = None  # older letters are passed over (and not offered again)
    until_ms: int | None = None  # a partition stops at a later letter; None: the run's start
    dry_run: bool = False
    batch: int = 100
    timeout_s: float = 30.0  # longest wait for the broker to answer anything


@dataclass
class ReplaySummary:
    resubmitted: list[Plan] = field(default_factory=list)
    skipped: list[Plan] = field(default_factory=list)  # with ``skip`` set
    already: list[Plan] = field(default_factory=list)  # sent by a run that died recording it
    passed_over: int = 0  # older than --since


def replay_dead_letters(topic: str, options: ReplayOptions) -> ReplaySummary:
    """Replay ``topic`` (a dead-letter topic); with ``dry_run``, only say what would be."""
    replayer = _Replayer(topic, options)
    try:
        return replayer.run()
    finally:
        replayer.close()


@dataclass
class _Batch:
    partition: int
    letters: list[DeadLetter]
    recovering: bool  # a dead run's batch: some of it may be out already

    @property
    def end(self) -> int:
        return self.letters[-1].offset + 1


class _Replayer:
    def __init__(self, topic: str, opts: ReplayOptions) -> None:
        self.topic, self.opts = topic, opts
        self.summary = ReplaySummary()
        self._until = opts.until_ms if opts.until_ms is not None else int(time.time() * 1000)
        self._log = log.bind(topic=topic, dry_run=opts.dry_run)
        group = done_group(opts.prefix, topic)
        extra = dict(opts.kafka)
        self._done = Consumer(consumer_config(opts.bootstrap, group, extra, **_READ_TO_END))
        self._intent = Consumer(
            consumer_config(opts.bootstrap, intent_group(opts.prefix, topic), extra)
        )
        self._producer = None if opts.dry_run else Producer(producer_config(opts.bootstrap, extra))
        self._partition_counts: dict[str, list[int]] = {}

    def run(self) -> ReplaySummary:
        partitions = self._partitions(self.topic)
        if not partitions:
            raise UnavailableError(f"topic {self.topic} does not exist")
        for partition in partitions:
            for batch in self._batches(partition):
                self._handle(batch)
        return self.summary

    def close(self) -> None:
        self._done.close()
        self._intent.close()

    # reading -----------------------------------------------------------------------------
    def _batches(self, partition: int) -> Iterator[_Batch]:
        done, pending_end = self._positions(partition)
        batch: list[DeadLetter] = []
        for letter in self._letters(partition, done):
            batch.append(letter)
            if pending_end is not None and letter.offset + 1 >= pending_end:
                yield _Batch(partition, batch, recovering=True)
                batch, pending_end = [], None
            elif pending_end is None and len(batch) >= self.opts.batch:
                yield _Batch(partition, batch, recovering=False)
                batch = []
        if batch:  # a dead run's batch is whole unless its letters were deleted since
            yield _Batch(partition, batch, recovering=pending_end is not None)

    def _positions(self, partition: int) -> tuple[int, int | None]:
        """Where replay resumes, and the end of a dead run's batch when one is pending."""
        tp = TopicPartition(self.topic, partition)
        [done] = self._done.committed([tp], timeout=self.opts.timeout_s)
        [intent] = self._intent.committed([tp], timeout=self.opts.timeout_s)
        start = done.offset if done.offset >= 0 else OFFSET_BEGINNING
        pending = intent.offset if intent.offset > max(done.offset, 0) else None
        return start, pending

    def _letters(self, partition: int, start: int) -> Iterator[DeadLetter]:
        """The partition's letters from ``start`` to its end (or the first after --until)."""
        self._done.assign([TopicPartition(self.topic, partition, start)])
        for msg in _to_end(self._done, self.opts.timeout_s):
            letter = _letter(msg)
            if letter.timestamp_ms > self._until:
                return  # newer ones, re-dead-lettered by this run among them, wait for a later run
            yield letter

    # handling ----------------------------------------------------------------------------
    def _handle(self, batch: _Batch) -> None:
        plans = self._plans(batch.letters)
        sendable = [plan for plan in plans if plan.target is not None]
        if batch.recovering and sendable:
            sent = self._already_sent(batch, sendable)
            self.summary.already += [plan for plan in sendable if plan.letter.position in sent]
            sendable = [plan for plan in sendable if plan.letter.position not in sent]
        self.summary.skipped += [plan for plan in plans if plan.skip is not None]
        self.summary.resubmitted += sendable
        self._log.info(
            "batch", partition=batch.partition, letters=len(batch.letters), send=len(sendable)
        )
        if self.opts.dry_run:
            return
        if sendable and not batch.recovering:
            self._record_intent(batch, sendable)
        self._produce(sendable)
        tp = TopicPartition(self.topic, batch.partition, batch.end)
        self._done.commit(offsets=[tp], asynchronous=False)

    def _plans(self, letters: list[DeadLetter]) -> list[Plan]:
        plans = []
        for letter in letters:
            if self.opts.since_ms is not None and letter.timestamp_ms < self.opts.since_ms:
                self.summary.passed_over += 1
                continue
            plan = plan_letter(letter, self.opts.prefix)
            if plan.target is not None and not self._partitions(plan.target):
                plan = Plan(letter, None, f"its topic {plan.target} does not exist")
            plans.append(plan)
        return plans

    def _record_intent(self, batch: _Batch, sendable: list[Plan]) -> None:
        marks = [TopicPartition(self.topic, batch.partition, batch.end)]
        for target in sorted({plan.target for plan in sendable if plan.target}):
            for partition in self._partitions(target):
                _, high = self._intent.get_watermark_offsets(
                    TopicPartition(target, partition), timeout=self.opts.timeout_s
                )  # a low answer only makes a recovery read more
                marks.append(TopicPartition(target, partition, high))
        self._intent.commit(offsets=marks, asynchronous=False)

    def _already_sent(self, batch: _Batch, sendable: list[Plan]) -> set[str]:
        """Positions of this batch's letters that a dead run re-submitted."""
        targets = sorted({plan.target for plan in sendable if plan.target})
        tps = [TopicPartition(t, p) for t in targets for p in self._partitions(t)]
        marks = self._intent.committed(tps, timeout=self.opts.timeout_s)
        starts = [TopicPartition(m.topic, m.partition, max(m.offset, 0)) for m in marks]
        wanted = {plan.letter.position for plan in sendable}
        return _replays_found(self.opts, starts, wanted)

    def _produce(self, plans: list[Plan]) -> None:
        if not plans:
            return
        assert self._producer is not None  # not a dry run
        failures: list[str] = []
        on_delivery = _collect_failures(failures)
        for plan in plans:
            key, value, headers = resubmission(plan.letter)
            self._producer.produce(
                plan.target, value, key, headers=headers, on_delivery=on_delivery
            )
            self._producer.poll(0)
        left = self._producer.flush(self.opts.timeout_s)
        if left or failures:
            reason = failures[0] if failures else f"{left} not acknowledged in time"
            raise UnavailableError(
                f"re-submitting failed ({reason}); run again: what was sent is recognised"
            )

    def _partitions(self, topic: str) -> list[int]:
        if topic not in self._partition_counts:
            self._partition_counts[topic] = _partitions_of(self._done, topic, self.opts.timeout_s)
        return self._partition_counts[topic]


_READ_TO_END = {"enable.partition.eof": True, "auto.offset.reset": "earliest"}


def _to_end(consumer: Consumer, timeout_s: float) -> Iterator[Message]:
    """Messages of the assigned partitions until each reports its end."""
    unfinished = {tp.partition for tp in consumer.assignment()}
    deadline = time.monotonic() + timeout_s
    while unfinished:
        msg = consumer.poll(0.1)
        if msg is None:
            if time.monotonic() > deadline:
                raise UnavailableError(f"the broker sent nothing for {timeout_s:.0f}s")
            continue
        deadline = time.monotonic() + timeout_s
        error = msg.error()
        if error is None:
            yield msg
        elif error.code() == KafkaError._PARTITION_EOF:
            unfinished.discard(msg.partition())
        else:
            raise UnavailableError(f"reading {msg.topic()}: {error.str()}")


def _replays_found(opts: ReplayOptions, starts: list[TopicPartition], wanted: set[str]) -> set[str]:
    """Which of ``wanted`` the target partitions name in ``REPLAY_OF``, from ``starts``."""
    reader = Consumer(
        consumer_config(opts.bootstrap, "modelyard-dlq-recovery", dict(opts.kafka), **_READ_TO_END)
    )  # assigned, never joined nor committed: the group id is only required
    found: set[str] = set()
    try:
        reader.assign(starts)
        for msg in _to_end(reader, opts.timeout_s):
            replay_of = header_value(msg.headers(), REPLAY_OF)
            if replay_of in wanted:
                found.add(replay_of)
    finally:
        reader.close()
    return found


def _letter(msg: Message) -> DeadLetter:
    _, timestamp = msg.timestamp()
    headers = [(k, v) for k, v in msg.headers() or [] if v is not None]
    return DeadLetter(
        msg.topic(), msg.partition(), msg.offset(), timestamp, msg.key(), msg.value() or b"",
        headers,
    )  # fmt: skip


def _partitions_of(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
    except KafkaException as exc:
        raise UnavailableError(f"cannot reach the broker: {exc.args[0].str()}") from None
    return [] if metadata.error is not None else sorted(metadata.partitions)


def _collect_failures(failures: list[str]) -> Callable[[KafkaError | None, Message], None]:
    def on_delivery(error: KafkaError | None, msg: Message) -> None:
        if error is not None:
            failures.append(f"{msg.topic()}: {error.str()}")

    return on_delivery

"""Exactly-once on the worker loop, with fakes: answers are held until their offset is committed,
then produced into the transaction that commits it; a failed transaction commits nothing."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from modelyard.kafka.handler import Outbox, OutRecord
from modelyard.kafka.offsets import OffsetTracker
from modelyard.kafka.transactions import TransactionSlot
from modelyard.kafka.worker import AssignedIntake, CommitStuckError, WorkerLoop

from tests.unit.test_worker_loop import (
    TP0,
    TP1,
    Copy,
    FakeClients,
    FakeConsumer,
    FakeMessage,
    FakeProducer,
    Holding,
    Hooks,
    assigned,
    make_loop,
)


# fakes -------------------------------------------------------------------------------------
class TransactionalProducer(FakeProducer):
    """Records each transaction: what was produced in it and the offsets it committed."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []
        self.committed: list[tuple[list[Any], dict[tuple[str, int], int]]] = []
        self._records: list[Any] = []
        self._offsets: dict[tuple[str, int], int] = {}
        self.fail_commit: KafkaError | None = None
        self.offsets_failures: list[KafkaError] = []  # raised by the next offset adds, in turn

    def produce(self, topic: str, value: Any = None, key: Any = None, partition: int = -1,
                on_delivery: Any = None, headers: Any = None) -> None:  # fmt: skip
        assert self.log[-1] == "begin", "produced outside a transaction"
        super().produce(topic, value, key, partition, on_delivery, headers)
        self._records.append(key)

    def init_transactions(self, timeout: float = 0) -> None:
        self.log.append("init")

    def begin_transaction(self) -> None:
        self.log.append("begin")

    def send_offsets_to_transaction(self, positions: list[TopicPartition], meta: Any,
                                    timeout: float = 0) -> None:  # fmt: skip
        assert meta == "generation-1"
        if self.offsets_failures:
            self.log.append("offsets failed")
            raise KafkaException(self.offsets_failures.pop(0))
        self._offsets = {(tp.topic, tp.partition): tp.offset for tp in positions}

    def commit_transaction(self, timeout: float = 0) -> None:
        self.flush()
        if self.fail_commit is not None:
            raise KafkaException(self.fail_commit)
        self.log.append("commit")
        if self._records or self._offsets:
            self.committed.append((self._records, self._offsets))
        self._records, self._offsets = [], {}

    def abort_transaction(self, timeout: float = 0) -> None:
        self.log.append("abort")
        self._records, self._offsets = [], {}


class GroupConsumer(FakeConsumer):
    """A group member whose offsets are the ones the transactions committed; it can seek."""

    def __init__(self, producer: TransactionalProducer) -> None:
        super().__init__()
        self.producer = producer
        self.history: dict[tuple[str, int], list[FakeMessage]] = {}
        self.seeks: list[tuple[str, int, int]] = []

    def consumer_group_metadata(self) -> str:
        return "generation-1"

    def add(self, tp: tuple[str, int], values: Iterable[bytes], eof: bool = False) -> None:
        super().add(tp, values, eof)
        self.history[tp] = list(self.queues[tp])

    def committed(self, partitions: Any, timeout: float = 0) -> Any:  # the Consumer API's
        offsets: dict[tuple[str, int], int] = {}
        for _, committed in self.producer.committed:
            offsets.update(committed)
        return [TopicPartition(tp.topic, tp.partition, offsets.get((tp.topic, tp.partition),
                -1001)) for tp in partitions]  # fmt: skip

    def seek(self, partition: TopicPartition) -> None:
        tp = (partition.topic, partition.partition)
        start = max(partition.offset, 0)  # OFFSET_BEGINNING is negative
        self.seeks.append((*tp, partition.offset))
        self.queues[tp] = deque(m for m in self.history.get(tp, []) if m.offset() >= start)


def transactional_clients() -> FakeClients:
    clients = FakeClients()
    clients.kafka_producer = TransactionalProducer()
    clients.consumers = [GroupConsumer(clients.kafka_producer)]
    return clients


def producer_of(clients: FakeClients) -> TransactionalProducer:
    producer = clients.kafka_producer
    assert isinstance(producer, TransactionalProducer)
    return producer


def loop_with(clients: FakeClients, **options: Any) -> WorkerLoop:
    return make_loop(clients, exactly_once=True, transactional_id="t-1", **options)


# the outbox --------------------------------------------------------------------------------
def test_held_answers_go_out_only_with_their_committable_offsets() -> None:
    producer, tracker = FakeProducer(), OffsetTracker()
    outbox = Outbox(producer, tracker, Hooks(), hold_answers=True)
    outbox.assign([TP0])
    first, second = outbox.admit([FakeMessage("in", 0, 0), FakeMessage("in", 0, 1)])
    outbox.answer([second], [OutRecord("out", b"", "k1")])
    assert producer.queued == []  # held: offset 0 is not answered
    assert outbox.release_held(tracker.to_commit()) == 0
    outbox.answer_each([(first, [OutRecord("out", b"", "k0")])])
    offsets = tracker.to_commit()
    assert offsets == [("in", 0, 2)]
    assert outbox.release_held(offsets) == 2
    assert [m.key() for m, _ in producer.queued] == ["k0", "k1"]  # in offset order


def test_a_replaced_held_answer_is_never_produced() -> None:
    producer, tracker = FakeProducer(), OffsetTracker()
    outbox = Outbox(producer, tracker, Hooks(), hold_answers=True)
    outbox.assign([TP0])
    (ticket,) = outbox.admit([FakeMessage("in", 0, 0)])
    outbox.send(ticket, [OutRecord("out", b"", "first try")])
    outbox.replace_answer(ticket, [OutRecord("dlq", b"", "dead letter")])
    outbox.release_held(tracker.to_commit())
    assert [m.key() for m, _ in producer.queued] == ["dead letter"]


def test_held_answers_of_a_revoked_partition_are_dropped() -> None:
    producer, tracker = FakeProducer(), OffsetTracker()
    outbox = Outbox(producer, tracker, Hooks(), hold_answers=True)
    outbox.assign([TP0])
    first, second = outbox.admit([FakeMessage("in", 0, 0), FakeMessage("in", 0, 1)])
    outbox.answer([second], [OutRecord("out", b"", "k1")])
    outbox.revoke([TP0])
    outbox.answer([first], [OutRecord("out", b"", "k0")])  # late: the new owner redoes it
    outbox.assign([TP0])
    assert outbox.release_held([("in", 0, 2)]) == 0


def test_holding_answers_one_answer_with_records_takes_one_ticket() -> None:
    outbox = Outbox(FakeProducer(), OffsetTracker(), Hooks(), hold_answers=True)
    outbox.assign([TP0])
    tickets = outbox.admit([FakeMessage("in", 0, 0), FakeMessage("in", 0, 1)])
    with pytest.raises(ValueError, match="one at a time"):
        outbox.answer(tickets, [OutRecord("out", b"", "k")])
    outbox.close(tickets)  # with nothing to send, several at once are fine


# the loop ----------------------------------------------------------------------------------
def test_each_commit_is_a_transaction_of_the_records_and_their_offsets() -> None:
    clients = transactional_clients()
    consumer = assigned(clients, TP0, TP1)
    consumer.add(TP0, [b"a", b"b"])
    consumer.add(TP1, [b"c"])
    loop = loop_with(clients)
    loop.run(Copy(loop.outbox))
    producer = producer_of(clients)
    assert loop.failure is None
    assert consumer.commits == []  # offsets go through the transaction only
    assert producer.log[:2] == ["init", "begin"]
    records = [key for keys, _ in producer.committed for key in keys]
    offsets: dict[tuple[str, int], int] = {}
    for _, committed in producer.committed:
        offsets.update(committed)
    assert sorted(records) == ["k0", "k0", "k1"]
    assert offsets == {TP0: 2, TP1: 1}


def test_an_answer_waits_for_the_offsets_before_it() -> None:
    clients = transactional_clients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b""] * 2)
    loop = loop_with(clients)
    producer = producer_of(clients)

    def script(h: Holding) -> None:
        if h.phase == 0 and len(h.handled) == 2:
            h.answer(TP0, 1)
        elif h.phase == 1:  # a commit or more later: offset 1 waits for offset 0
            assert producer.committed == []
            h.answer(TP0, 0)
        else:
            return
        h.phase += 1

    loop.run(Holding(loop.outbox, script))
    assert producer.committed == [(["('in', 0)0", "('in', 0)1"], {TP0: 2})]


def test_a_transaction_that_cannot_commit_stops_the_worker_and_is_aborted() -> None:
    clients = transactional_clients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a"])
    producer = producer_of(clients)
    producer.fail_commit = KafkaError(KafkaError._FENCED, "fenced")
    loop = loop_with(clients)
    loop.run(Copy(loop.outbox))
    assert isinstance(loop.failure, KafkaException)
    assert producer.committed == []
    assert "abort" in producer.log


def _retriable(code: int) -> KafkaError:
    return KafkaError(code, "a coordinator is moving", retriable=True)


def test_a_retriable_failure_to_add_offsets_is_retried_and_the_transaction_commits() -> None:
    clients = transactional_clients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a"])
    producer = producer_of(clients)
    producer.offsets_failures = [_retriable(KafkaError.CONCURRENT_TRANSACTIONS)] * 2
    loop = loop_with(clients)
    loop.run(Copy(loop.outbox))
    assert loop.failure is None
    assert producer.log.count("offsets failed") == 2
    assert producer.committed == [(["k0"], {TP0: 1})]  # the copy of offset 0, with its offset


def test_offsets_that_keep_failing_stop_the_worker_and_abort() -> None:
    clients = transactional_clients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a"])
    producer = producer_of(clients)
    producer.offsets_failures = [_retriable(KafkaError._TIMED_OUT)] * 3
    loop = loop_with(clients)
    loop.run(Copy(loop.outbox))
    assert isinstance(loop.failure, KafkaException)
    assert producer.committed == []
    assert "abort" in producer.log


def test_an_aborted_transaction_rewinds_to_the_committed_offsets_and_redoes_the_rest() -> None:
    clients = transactional_clients()
    consumer = clients.consumers[0]
    assert isinstance(consumer, GroupConsumer)
    assigned(clients, TP0)
    consumer.add(TP0, [b"a", b"b", b"c"])
    producer = producer_of(clients)
    # the first commit fails as a transaction does when a record timed out on a dead broker
    producer.fail_commit = KafkaError(KafkaError._TIMED_OUT, "a record timed out",
                                      txn_requires_abort=True)  # fmt: skip
    fail_once = producer.commit_transaction

    def commit_transaction(timeout: float = 0) -> None:
        try:
            fail_once(timeout)
        finally:
            producer.fail_commit = None

    producer.commit_transaction = commit_transaction  # type: ignore[method-assign]
    loop = loop_with(clients)
    loop.run(Copy(loop.outbox))
    assert loop.failure is None
    assert producer.log.count("abort") >= 1
    assert consumer.seeks  # back to where nothing was committed
    assert consumer.seeks[0][:2] == TP0
    # every message once, in a transaction with its offset: the aborted one left nothing
    records = [key for committed, _ in producer.committed for key in committed]
    assert records == ["k0", "k1", "k2"]
    assert producer.committed[-1][1] == {TP0: 3}


def test_a_transaction_that_aborts_again_and_again_stops_the_worker() -> None:
    clients = transactional_clients()
    consumer = clients.consumers[0]
    assert isinstance(consumer, GroupConsumer)
    assigned(clients, TP0)
    consumer.add(TP0, [b"a"])
    producer = producer_of(clients)
    # e.g. a record to a caller's reply-to that does not exist: every try fails the same way
    producer.fail_commit = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "no such topic",
                                      txn_requires_abort=True)  # fmt: skip
    loop = loop_with(clients)
    loop.run(Copy(loop.outbox))
    assert isinstance(loop.failure, KafkaException)
    assert len(consumer.seeks) == 3  # rewound three times, then stopped for the ledger
    assert producer.committed == []


def test_exactly_once_needs_a_consumer_group() -> None:
    intake = AssignedIntake(open=lambda consumer: [])
    with pytest.raises(ValueError, match="consumer group"):
        loop_with(transactional_clients(), intake=intake)


# the transactional id ----------------------------------------------------------------------
def test_a_slot_is_held_until_released_and_then_taken_again(tmp_path: Path) -> None:
    first, second = TransactionSlot("g", tmp_path), TransactionSlot("g", tmp_path)
    assert first.transactional_id.endswith(".0")
    assert second.transactional_id.endswith(".1")
    first.release()  # as a killed process's lock goes with it
    again = TransactionSlot("g", tmp_path)
    assert again.transactional_id == first.transactional_id
    for slot in (second, again):
        slot.release()


def test_an_idle_worker_commits_at_once_not_after_the_interval() -> None:
    clients = transactional_clients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a"])
    loop = loop_with(clients, commit_interval_s=3600.0, stop_when_idle=False)
    producer = producer_of(clients)

    idle: list[bool] = []  # per idle poll: whether something was committed by then

    def stop_once_committed() -> None:
        idle.append(bool(producer.committed))
        if idle[-1] or len(idle) > 100:  # without the idle commit: never, so stop anyway
            loop.stop()

    consumer.on_idle = stop_once_committed
    loop.run(Copy(loop.outbox))
    assert idle[-1], "nothing was committed before the loop stopped"
    assert producer.committed[0] == (["k0"], {TP0: 1})


def test_a_commit_stuck_past_every_timeout_fails_the_worker_for_good() -> None:
    """librdkafka's send_offsets_to_transaction can block past its timeout for good (#5456):
    the worker fails (its process exits, for a supervisor to restart it), is not ready, and
    ``stop`` does not wait for the blocked thread. Should the call return after all, the
    worker stays failed (what that transaction then commits is whole: records and offsets)."""
    clients = transactional_clients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a"])
    loop = loop_with(clients, stuck_commit_s=0.05, stop_when_idle=False)
    producer = producer_of(clients)
    blocked, release = threading.Event(), threading.Event()
    send_offsets = producer.send_offsets_to_transaction

    def block_then_send(positions: list[TopicPartition], meta: Any, timeout: float = 0) -> None:
        blocked.set()
        release.wait(10)
        send_offsets(positions, meta, timeout)

    producer.send_offsets_to_transaction = block_then_send  # type: ignore[method-assign]
    runner = threading.Thread(target=loop.run, args=(Copy(loop.outbox),))
    runner.start()
    try:
        assert blocked.wait(10)
        assert loop.failure is None  # under way, not stuck yet
        time.sleep(0.1)  # past stuck_commit_s
        assert isinstance(loop.failure, CommitStuckError)
        assert "blocked for" in str(loop.failure)
        assert loop.health()["commit"] is False
        assert loop.health()["kafka"] is False
        started = time.monotonic()
        loop.stop(timeout_s=5)
        assert time.monotonic() - started < 1  # not joined: the thread cannot end
    finally:
        release.set()
        runner.join(10)
    assert not runner.is_alive()
    assert isinstance(loop.failure, CommitStuckError)  # for good, though the call returned

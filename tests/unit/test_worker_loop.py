"""The worker loop with a fake consumer and producer: what it commits, when it pauses, how it
stops. Each test runs the loop on the test's thread and ends it from the handler or when idle."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from modelyard.kafka.handler import Handler, OutRecord, SyncHandler, Ticket
from modelyard.kafka.process import WorkerSettings
from modelyard.kafka.worker import AssignedIntake, GroupIntake, LoopOptions, WorkerLoop
from pydantic_settings import SettingsConfigDict

TP0, TP1 = ("in", 0), ("in", 1)


# fakes -------------------------------------------------------------------------------------
class FakeMessage:
    def __init__(
        self, topic: str, partition: int, offset: int, value: bytes = b"", key: Any = None,
        error: KafkaError | None = None,
    ) -> None:  # fmt: skip
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value, self._key, self._error = value, key, error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> Any:
        return self._key

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def error(self) -> KafkaError | None:
        return self._error


class FakeConsumer:
    """Partitions are queues; rebalances scheduled by a test happen inside the next poll, as
    librdkafka runs its callbacks."""

    def __init__(self) -> None:
        self.queues: dict[tuple[str, int], deque[FakeMessage]] = {}
        self.assigned: list[tuple[str, int]] = []
        self.paused: set[tuple[str, int]] = set()
        self.commits: list[dict[tuple[str, int], int]] = []
        self.rebalances: deque[tuple[str, list[tuple[str, int]]]] = deque()
        self.on_assign: Callable[..., None] | None = None
        self.on_revoke: Callable[..., None] | None = None
        self.on_idle: Callable[[], None] | None = None
        self.largest_batch = 0
        self.idle_calls = 0
        self.closed = False

    # the test's side
    def add(self, tp: tuple[str, int], values: Iterable[bytes], eof: bool = False) -> None:
        queue = self.queues.setdefault(tp, deque())
        start = queue[-1].offset() + 1 if queue else 0
        for offset, value in enumerate(values, start):
            queue.append(FakeMessage(tp[0], tp[1], offset, value, key=f"k{offset}"))
        if eof:
            end = queue[-1].offset() + 1
            queue.append(
                FakeMessage(tp[0], tp[1], end, error=KafkaError(KafkaError._PARTITION_EOF))
            )

    def committed(self, tp: tuple[str, int]) -> list[int]:
        return [c[tp] for c in self.commits if tp in c]

    # the Consumer API the loop uses
    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None) -> None:
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = [(tp.topic, tp.partition) for tp in partitions]

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.assigned]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        if self.rebalances:  # a call that serves a rebalance returns before fetching
            self._rebalance()
            return []
        out: list[FakeMessage] = []
        for tp in self.assigned:
            queue = self.queues.get(tp, deque())
            while queue and tp not in self.paused and len(out) < num_messages:
                out.append(queue.popleft())
        self.largest_batch = max(self.largest_batch, len(out))
        if not out:
            self.idle_calls += 1
            if self.on_idle is not None:
                self.on_idle()
        return out

    def poll(self, timeout: float | None = None) -> FakeMessage | None:
        got = self.consume(1)
        return got[0] if got else None

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def get_watermark_offsets(self, partition: TopicPartition, **_: Any) -> tuple[int, int]:
        return (0, -1)

    def close(self) -> None:
        if self.on_revoke is not None and self.assigned:  # librdkafka revokes on close
            self.on_revoke(self, self.assignment())
        self.assigned, self.closed = [], True

    def _rebalance(self) -> None:
        while self.rebalances:
            kind, tps = self.rebalances.popleft()
            partitions = [TopicPartition(t, p) for t, p in tps]
            if kind == "assign":
                self.assigned += tps
                assert self.on_assign is not None
                self.on_assign(self, partitions)
            else:
                assert self.on_revoke is not None
                self.on_revoke(self, partitions)
                self.assigned = [tp for tp in self.assigned if tp not in tps]


class FakeProducer:
    """Delivers what was produced when polled or flushed, unless ``holding``."""

    def __init__(self) -> None:
        self.queued: list[tuple[FakeMessage, Callable[..., None]]] = []
        self.delivered: list[FakeMessage] = []
        self.buffer_full_for = 0  # the next produce calls that raise BufferError
        self.polls_while_full = 0
        self.awaiting_poll = False
        self.lose_keys: set[Any] = set()  # delivery fails for good (after librdkafka's retries)
        self.refuse_topics: dict[str, KafkaError] = {}  # produce() raises before sending
        self.holding = False

    def produce(self, topic: str, value: Any = None, key: Any = None, partition: int = -1,
                on_delivery: Any = None, headers: Any = None) -> None:  # fmt: skip
        assert not self.awaiting_poll, "retried a full queue without serving callbacks"
        if self.buffer_full_for:
            self.buffer_full_for -= 1
            self.awaiting_poll = True
            raise BufferError("queue full")
        if topic in self.refuse_topics:
            raise KafkaException(self.refuse_topics[topic])
        self.queued.append((FakeMessage(topic, partition, -1, value, key), on_delivery))

    def poll(self, timeout: float = 0) -> int:
        if self.awaiting_poll:
            self.polls_while_full += 1
            self.awaiting_poll = False
        return self._deliver()

    def flush(self, timeout: float = 0) -> int:
        self._deliver()
        return len(self.queued)

    def __len__(self) -> int:
        return len(self.queued)

    def _deliver(self) -> int:
        if self.holding:
            return 0
        queued, self.queued = self.queued, []
        for msg, on_delivery in queued:
            lost = msg.key() in self.lose_keys
            on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT) if lost else None, msg)
            if not lost:
                self.delivered.append(msg)
        return len(queued)


class FakeClients:
    def __init__(self) -> None:
        self.consumers: list[FakeConsumer] = [FakeConsumer()]
        self.kafka_producer = FakeProducer()
        self.configs: list[dict[str, Any]] = []
        self.fresh = 0

    @property
    def kafka_consumer(self) -> FakeConsumer:
        return self.consumers[-1]

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        self.configs.append(config)
        if len(self.configs) > len(self.consumers):  # a fresh client after the first
            self.consumers.append(FakeConsumer())
        return self.consumers[-1]

    def producer(self, config: dict[str, Any]) -> FakeProducer:
        return self.kafka_producer


class Hooks:
    def __init__(self) -> None:
        self.pauses: list[bool] = []
        self.sends_failed: list[str] = []
        self.commits: list[Sequence[tuple[str, int, int]]] = []

    def committed(self, offsets: Sequence[tuple[str, int, int]]) -> None:
        self.commits.append(offsets)

    def paused(self, paused: bool) -> None:
        self.pauses.append(paused)

    def lag(self, topic: str, partition: int, lag: int) -> None: ...

    def send_failed(self, topic: str, error: BaseException) -> None:
        self.sends_failed.append(topic)


def make_loop(
    clients: FakeClients, *, stop_when_idle: bool = True, hooks: Hooks | None = None,
    intake: GroupIntake | AssignedIntake | None = None, **options: Any,
) -> WorkerLoop:  # fmt: skip
    defaults: dict[str, Any] = {"commit_interval_s": 0.0, "drain_timeout_s": 5.0}
    loop = WorkerLoop(
        intake or GroupIntake(topics=("in",), group_id="g"),
        LoopOptions(bootstrap="fake:9092", **{**defaults, **options}),
        hooks=hooks, clients=clients,
    )  # fmt: skip
    if stop_when_idle:
        clients.kafka_consumer.on_idle = loop.stop
    return loop


def assigned(clients: FakeClients, *tps: tuple[str, int]) -> FakeConsumer:
    consumer = clients.kafka_consumer
    consumer.rebalances.append(("assign", list(tps)))
    return consumer


class Copy(SyncHandler):
    """Copies each message to ``out``; raises on the value ``boom``."""

    def records_for(self, message: Any) -> list[OutRecord]:
        if message.value() == b"boom":
            raise RuntimeError("the handler broke")
        return [OutRecord("out", message.value(), message.key())]


class Holding(Handler):
    """Keeps every ticket; a test's ``on_tick`` decides when to answer which."""

    def __init__(self, outbox: Any, on_tick: Callable[[Holding], None] | None = None) -> None:
        super().__init__(outbox)
        self.held: list[Ticket] = []
        self.handled: list[int] = []
        self.revoked_tps: list[tuple[str, int]] = []
        self.ticks = 0
        self.phase = 0  # where a test's script is
        self._on_tick = on_tick

    def handle(self, batch: Sequence[Ticket]) -> None:
        self.held += batch
        self.handled += [t.offset for t in batch]

    def tick(self, now: float) -> None:
        self.ticks += 1
        if self._on_tick is not None:
            self._on_tick(self)

    def revoked(self, tps: Sequence[tuple[str, int]]) -> None:
        self.revoked_tps += tps

    def answer(self, tp: tuple[str, int], *offsets: int) -> None:
        tickets = [t for t in self.held if t.tp == tp and t.offset in offsets]
        for ticket in tickets:
            self.held.remove(ticket)
        self.outbox.answer(tickets, [OutRecord("out", b"", f"{tp}{t.offset}") for t in tickets])


# commits -----------------------------------------------------------------------------------
def test_commits_only_the_gap_free_prefix_of_each_partition() -> None:
    clients = FakeClients()
    consumer = assigned(clients, TP0, TP1)
    consumer.add(TP0, [b""] * 5)
    consumer.add(TP1, [b""] * 2)
    loop = make_loop(clients)

    def script(h: Holding) -> None:
        if h.phase == 0 and len(h.handled) == 7:
            h.answer(TP0, 1, 2)  # finished after a gap: nothing of TP0 is committable yet
            h.answer(TP1, 0, 1)
        elif h.phase == 1:  # their acks are in
            assert consumer.committed(TP0) == []
            h.answer(TP0, 0)
        elif h.phase == 2:
            h.answer(TP0, 3, 4)
        else:
            return
        h.phase += 1

    loop.run(Holding(loop.outbox, script))
    assert consumer.committed(TP0) == [3, 5]
    assert consumer.committed(TP1) == [2]
    assert loop.failure is None


def test_a_handler_failure_stops_without_committing_it_or_anything_after() -> None:
    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a", b"b", b"c", b"boom", b"e", b"f"])
    loop = make_loop(clients, poll_batch_size=2)  # batches [0, 1], [2, 3], ...
    loop.run(Copy(loop.outbox))
    assert isinstance(loop.failure, RuntimeError)
    assert consumer.committed(TP0)  # the first batch was committed before the failure
    assert max(consumer.committed(TP0)) <= 3  # the next owner starts at the failed message
    assert [m.value() for m in clients.kafka_producer.delivered if m.value() in (b"e", b"f")] == []
    assert consumer.closed
    assert not loop.running


def test_a_lost_record_stops_the_worker_without_committing_its_message() -> None:
    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a", b"b", b"c"])
    clients.kafka_producer.lose_keys = {"k1"}
    hooks = Hooks()
    loop = make_loop(clients, hooks=hooks)
    loop.run(Copy(loop.outbox))
    assert isinstance(loop.failure, KafkaException)
    assert all(offset <= 1 for offset in consumer.committed(TP0))
    assert hooks.sends_failed == ["out"]


def test_a_caller_named_destination_that_cannot_take_a_record_does_not_stop_the_worker() -> None:
    class ReplyTo(SyncHandler):
        def records_for(self, message: Any) -> list[OutRecord]:
            return [OutRecord("bad topic", b"", message.key(), caller_named=True)]

    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a", b"b"])
    clients.kafka_producer.refuse_topics = {"bad topic": KafkaError(KafkaError._INVALID_ARG)}
    loop = make_loop(clients)
    loop.run(ReplyTo(loop.outbox))
    assert loop.failure is None
    assert consumer.committed(TP0)[-1] == 2


def test_a_refused_answer_can_be_replaced_by_a_dead_letter() -> None:
    class TooLarge(Handler):
        def handle(self, batch: Sequence[Ticket]) -> None:
            for ticket in batch:
                try:
                    self.outbox.answer([ticket], [OutRecord("out", b"x"), OutRecord("huge", b"")])
                except KafkaException:
                    self.outbox.replace_answer(ticket, [OutRecord("dlq", b"refused")])

    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a"])
    clients.kafka_producer.refuse_topics = {"huge": KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)}
    loop = make_loop(clients)
    loop.run(TooLarge(loop.outbox))
    assert loop.failure is None
    assert consumer.committed(TP0)[-1] == 1
    assert [m.topic() for m in clients.kafka_producer.delivered] == ["out", "dlq"]


def test_records_sent_over_time_hold_the_message_until_it_is_answered() -> None:
    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a"])
    loop = make_loop(clients)

    def script(h: Holding) -> None:
        if h.phase == 0 and h.held:
            h.outbox.send(h.held[0], [OutRecord("audit", b"hop 1")])
        elif h.phase == 1:
            assert clients.kafka_producer.delivered  # sent and acked...
            assert consumer.committed(TP0) == []  # ...but not answered yet
            h.answer(TP0, 0)
        else:
            return
        h.phase += 1

    loop.run(Holding(loop.outbox, script))
    assert consumer.committed(TP0) == [1]


# backpressure ------------------------------------------------------------------------------
def test_intake_pauses_at_the_in_flight_limit_and_resumes_below_half() -> None:
    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b""] * 10)
    hooks = Hooks()
    loop = make_loop(clients, stop_when_idle=False, hooks=hooks, max_inflight=4)
    most_unanswered = 0

    def script(h: Holding) -> None:
        nonlocal most_unanswered
        most_unanswered = max(most_unanswered, h.outbox.unanswered)
        if TP0 in consumer.paused:  # answer all but one: 1 <= 4 // 2, so intake resumes
            h.answer(TP0, *[t.offset for t in h.held[:-1]])
        if len(h.handled) == 10:
            h.answer(TP0, *[t.offset for t in h.held])
            loop.stop()

    loop.run(Holding(loop.outbox, script))
    assert most_unanswered == 4  # never more than the limit taken
    assert consumer.largest_batch <= 4
    assert hooks.pauses[:2] == [True, False]
    assert consumer.committed(TP0)[-1] == 10


def test_only_pausable_topics_pause() -> None:
    clients = FakeClients()
    consumer = assigned(clients, ("ingress", 0), ("inbox", 0))
    consumer.add(("ingress", 0), [b""] * 3)
    consumer.add(("inbox", 0), [b""] * 3)
    intake = GroupIntake(topics=("ingress", "inbox"), group_id="g", pausable=frozenset({"ingress"}))
    loop = make_loop(clients, intake=intake, max_inflight=1, stop_when_idle=False)

    def script(h: Holding) -> None:
        if ("ingress", 0) in consumer.paused and not consumer.queues[("inbox", 0)]:
            h.answer(("ingress", 0), *[t.offset for t in h.held if t.tp == ("ingress", 0)])
            h.answer(("inbox", 0), *[t.offset for t in h.held if t.tp == ("inbox", 0)])
            loop.stop()

    handler = Holding(loop.outbox, script)
    loop.run(handler)
    assert ("inbox", 0) not in consumer.paused
    assert handler.handled.count(0) == 2  # each topic's first message
    assert consumer.committed(("inbox", 0))[-1] == 3  # the inbox kept flowing while paused


# rebalance ---------------------------------------------------------------------------------
def test_revoke_commits_what_is_finished_and_drops_the_rest() -> None:
    clients = FakeClients()
    consumer = assigned(clients, TP0, TP1)
    consumer.add(TP0, [b""] * 3)
    consumer.add(TP1, [b""] * 2)
    loop = make_loop(clients, commit_interval_s=3600)  # only the revoke and the close commit

    def script(h: Holding) -> None:
        if h.phase == 0 and len(h.handled) == 5:
            h.answer(TP0, 0, 1)  # offset 2 stays unanswered
            consumer.rebalances.append(("revoke", [TP0]))
        elif h.phase == 1 and h.revoked_tps:
            assert h.revoked_tps == [TP0]
            assert h.outbox.unanswered == 2  # TP1's two; TP0's dropped ticket no longer counts
            h.answer(TP0, 2)  # late: the new owner redoes it, nothing more is committed here
            h.answer(TP1, 0, 1)
        else:
            return
        h.phase += 1

    handler = Holding(loop.outbox, script)
    loop.run(handler)
    assert consumer.commits[0] == {TP0: 2}  # at the revoke: the finished prefix only
    assert consumer.committed(TP0) == [2]
    assert consumer.committed(TP1) == [2]  # at the close
    assert loop.failure is None


# stopping ----------------------------------------------------------------------------------
def test_drain_finishes_in_flight_work_then_commits() -> None:
    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b""] * 3)
    loop = make_loop(clients, drain_timeout_s=30)

    def script(h: Holding) -> None:
        if consumer.idle_calls and h.held:  # after the stop: answered during the drain
            h.answer(TP0, *[t.offset for t in h.held])

    started = time.monotonic()
    loop.run(Holding(loop.outbox, script))
    assert time.monotonic() - started < 5  # did not wait for the bound
    assert consumer.committed(TP0) == [3]


def test_drain_is_bounded_and_commits_nothing_unfinished() -> None:
    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"", b""])
    loop = make_loop(clients, drain_timeout_s=0.3)

    def script(h: Holding) -> None:
        if h.phase == 0 and len(h.handled) == 2:
            h.answer(TP0, 0)  # offset 1 never is
            h.phase = 1

    started = time.monotonic()
    loop.run(Holding(loop.outbox, script))
    # it waited for the unfinished message up to the bound (returning at all shows the bound)
    assert time.monotonic() - started >= 0.3
    assert consumer.committed(TP0)[-1] == 1
    assert loop.failure is None
    assert consumer.closed


# producing ---------------------------------------------------------------------------------
def test_a_full_local_queue_is_retried_while_serving_callbacks() -> None:
    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a", b"b", b"c"])
    clients.kafka_producer.buffer_full_for = 3
    loop = make_loop(clients)
    loop.run(Copy(loop.outbox))
    assert clients.kafka_producer.polls_while_full == 3
    assert [m.value() for m in clients.kafka_producer.delivered] == [b"a", b"b", b"c"]
    assert consumer.committed(TP0)[-1] == 3


def test_an_unowned_record_that_is_lost_is_reported_on_the_loop_thread() -> None:
    lost: list[tuple[str, int]] = []

    class Dispatch(SyncHandler):
        def records_for(self, message: Any) -> list[OutRecord]:
            record = OutRecord("stage", b"", message.key())
            self.outbox.send_unowned([record], lambda r, e: lost.append((r.key, e.code())))
            return []

    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a", b"b"])
    clients.kafka_producer.lose_keys = {"k1"}
    loop = make_loop(clients)
    loop.run(Dispatch(loop.outbox))
    assert loop.failure is None  # nobody waits for it: the handler decides
    assert lost == [("k1", KafkaError._MSG_TIMED_OUT)]


def test_answering_a_ticket_twice_is_refused() -> None:
    clients = FakeClients()
    assigned(clients, TP0).add(TP0, [b"a"])

    class Twice(Handler):
        def handle(self, batch: Sequence[Ticket]) -> None:
            self.outbox.close(batch)
            self.outbox.close(batch)

    loop = make_loop(clients)
    loop.run(Twice(loop.outbox))
    assert isinstance(loop.failure, RuntimeError)


# poison ledger, assigned intake, readiness, settings ---------------------------------------
def test_after_a_crash_messages_go_one_at_a_time_and_a_poison_one_is_set_aside(
    tmp_path: Path,
) -> None:
    # what a predecessor that died twice with offset 2 in hand left behind
    claims = tmp_path / "poison" / "g"
    claims.mkdir(parents=True)
    (claims / "in.0.json").write_text(json.dumps({"in_hand": 2, "crashes": {"2": 1}}))
    poisoned: list[tuple[int, int]] = []

    class Recording(Holding):
        def poisoned(self, ticket: Ticket, deaths: int) -> None:
            poisoned.append((ticket.offset, deaths))
            self.outbox.answer([ticket], [OutRecord("dlq", b"")])

    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b""] * 4)
    loop = make_loop(clients, state_dir=tmp_path)
    handler = Recording(loop.outbox, lambda h: h.answer(TP0, *[t.offset for t in h.held]))
    loop.run(handler)
    assert poisoned == [(2, 2)]
    assert handler.handled == [0, 1, 3]
    assert consumer.largest_batch == 1
    assert consumer.committed(TP0)[-1] == 4
    assert not (claims / "in.0.json").exists()  # released on a clean stop


def test_an_assigned_intake_retries_with_fresh_clients_and_commits_nothing() -> None:
    clients = FakeClients()
    looks: list[int] = []

    def open_partitions(consumer: Any) -> list[TopicPartition] | None:
        looks.append(id(consumer))
        if len(looks) < 3:
            return None  # the topic does not exist yet
        consumer.add(("control", 0), [b"a", b"b"], eof=True)
        return [TopicPartition("control", 0, 0)]

    ends: list[int] = []

    class Follow(SyncHandler):
        def records_for(self, message: Any) -> list[OutRecord]:
            return []

        def reached_end(self, topic: str, partition: int, offset: int) -> None:
            ends.append(offset)
            loop.stop()

    intake = AssignedIntake(open=open_partitions, report_partition_end=True, reopen_s=0)
    loop = WorkerLoop(intake, LoopOptions(bootstrap="fake:9092"), clients=clients, produces=False)
    loop.run(Follow(loop.outbox))
    assert len(set(looks)) == 3  # a fresh client for each look
    assert ends == [2]
    assert clients.configs[-1]["enable.partition.eof"] is True
    assert all(c.commits == [] for c in clients.consumers)
    assert loop.failure is None


def test_readiness_follows_assignment_and_failure() -> None:
    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"boom"])
    loop = make_loop(clients, stop_when_idle=False)
    seen: list[bool] = []

    class Probe(Copy):
        def handle(self, batch: Sequence[Ticket]) -> None:
            seen.append(loop.ready)
            super().handle(batch)

    assert not loop.ready
    loop.run(Probe(loop.outbox))
    assert seen == [True]
    assert loop.health() == {"kafka": False, "fetch": True, "commit": True}
    assert not loop.wait_ready(0)


def test_worker_settings_give_the_loop_its_options() -> None:
    class Service(WorkerSettings):
        model_config = SettingsConfigDict(env_prefix="TEST_WORKER_", frozen=True)

    settings = Service(bootstrap="b:1", max_inflight=7, kafka_config={"a": 1})
    options = settings.loop_options(drain_timeout_s=1.5)
    assert (options.bootstrap, options.max_inflight, options.drain_timeout_s) == ("b:1", 7, 1.5)
    assert options.kafka == {"a": 1}


@pytest.mark.parametrize("caller_named", [False, True])
def test_only_caller_named_destinations_are_forgiven_at_delivery(caller_named: bool) -> None:
    class Reply(SyncHandler):
        def records_for(self, message: Any) -> list[OutRecord]:
            return [OutRecord("reply", b"", message.key(), caller_named=caller_named)]

    clients = FakeClients()
    consumer = assigned(clients, TP0)
    consumer.add(TP0, [b"a"])
    loop = make_loop(clients)
    original = clients.kafka_producer._deliver

    def deliver_unknown_partition() -> int:
        queued, clients.kafka_producer.queued = clients.kafka_producer.queued, []
        for msg, on_delivery in queued:
            on_delivery(KafkaError(KafkaError._UNKNOWN_PARTITION), msg)
        return original()

    clients.kafka_producer._deliver = deliver_unknown_partition  # type: ignore[method-assign]
    loop.run(Reply(loop.outbox))
    assert (loop.failure is None) is caller_named
    assert consumer.committed(TP0) == ([1] if caller_named else [])

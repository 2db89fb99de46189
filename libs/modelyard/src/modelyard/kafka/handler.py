"""What a role plugs into the worker loop (``kafka/worker.py``) and what it may do with a message.

The loop hands a handler a batch of ``Ticket`` s, one per consumed message. A ticket is the
message's claim on its offset: the offset is committed only once the ticket is answered and every
record sent for it is acknowledged by the broker, over the gap-free prefix of its partition. A
handler answers whenever it can: at once (``SyncHandler``), from another thread (a stage's
batcher), or much later after records sent over time (a router's request, a shadow half waiting
for its pair); messages may finish out of order.

Records go out through the ``Outbox``; a handler never touches a producer. The outbox retries a
full local queue while serving delivery callbacks, and decides what a failed delivery means: a
record sent for a ticket that is lost stops the worker without committing (a restart redelivers
the message), unless its destination was named by the caller (``reply-to``) and can never take it.

Exactly-once (``hold_answers``): a ticket's records are held instead of produced, and its offset
counts as finished once it is answered; the loop releases the held records of each partition's
committable prefix into the transaction that commits those offsets (``release_held``,
``kafka/transactions.py``), so a record never outlives an aborted commit of its message's offset.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, Message

from modelyard.kafka.delivery import is_permanent
from modelyard.kafka.offsets import OffsetTracker, Pending

__all__ = [
    "Handler",
    "OnUndelivered",
    "OutRecord",
    "Outbox",
    "ProducerLike",
    "SendHooks",
    "SyncHandler",
    "Ticket",
]

log = structlog.get_logger(__name__)

TopicPartition = tuple[str, int]
OnUndelivered = Callable[["OutRecord", KafkaError], None]
_BUFFER_FULL_WAIT_S = 0.05  # serving callbacks this long frees room in a full local queue


class ProducerLike(Protocol):
    """The part of ``confluent_kafka.Producer`` the outbox uses (tests pass a fake)."""

    def produce(self, topic: str, value: Any = ..., key: Any = ..., **kwargs: Any) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...

    def __len__(self) -> int: ...


class SendHooks(Protocol):
    """The observability hook the outbox calls (``StageHooks`` has it)."""

    def send_failed(self, topic: str, error: BaseException) -> None: ...


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~0.5 us more; several per message
class OutRecord:
    """One record to produce (never changed once built). ``partition`` -1: the key decides."""

    topic: str
    value: bytes | None
    key: str | bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int = -1
    # a destination the caller named (reply-to): a permanent failure to deliver there is the
    # destination's fault, not the message's, so it is logged and counted as sent; losing any
    # other record (a dead letter, an audit record) would lose data, so that stops the worker
    caller_named: bool = False


class _OpenCount:
    """Tickets of one partition assignment not answered yet; dead once the partition is revoked,
    so a late answer of a dropped ticket does not count against the next assignment."""

    __slots__ = ("live", "n")

    def __init__(self) -> None:
        self.live, self.n = True, 0


class Ticket:
    """One consumed message and its claim on its offset (see the module docstring)."""

    __slots__ = ("_count", "_pending", "answered", "message")

    def __init__(self, message: Message, pending: Pending, count: _OpenCount) -> None:
        self.message = message
        self.answered = False
        self._pending, self._count = pending, count

    @property
    def tp(self) -> TopicPartition:
        return self._pending.tp

    @property
    def offset(self) -> int:
        return self._pending.offset


class Handler:
    """A role's processing, run by the worker loop. Every method runs on the loop's thread.

    ``handle`` must answer each ticket eventually (``outbox.answer`` / ``outbox.close``), or
    call ``outbox.fail``. A message it refuses (undecodable, invalid) is answered with the
    records that say so (a dead letter, an error reply): that is the handler's business. An
    exception out of any method stops the loop without committing what was not finished.
    """

    # True when work on a message goes on after ``handle`` returns (in a thread of the
    # handler's): after a crash, while a partition is handled one message at a time, the loop
    # then waits for that message's answer before taking the next (kafka/poison.py)
    runs_after_handle: ClassVar[bool] = False

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def handle(self, batch: Sequence[Ticket]) -> None:
        """Take consumed messages (in partition order); answer them now or later."""
        raise NotImplementedError

    def poisoned(self, ticket: Ticket, deaths: int) -> None:
        """A message that workers died on ``deaths`` times: answer it without handling it.
        The default skips it; roles that answer callers dead-letter it instead."""
        log.error("skipping a message that workers died on", topic=ticket.tp[0],
                  partition=ticket.tp[1], offset=ticket.offset, deaths=deaths)  # fmt: skip
        self.outbox.close([ticket])

    def tick(self, now: float) -> None:
        """Called once per loop step with ``time.monotonic()``: timers (deadlines, TTLs)."""

    def assigned(self, tps: Sequence[TopicPartition]) -> None:
        """Partitions given to this worker (group rebalance, or the assigned intake opened)."""

    def revoked(self, tps: Sequence[TopicPartition]) -> None:
        """Partitions taken away: drop what is held for them. What was finished is committed
        already; their unanswered tickets no longer count, and the new owner redoes them."""

    def committed(self, offsets: Sequence[tuple[str, int, int]]) -> None:
        """Offsets committed (topic, partition, next offset to read); exactly-once: the
        transaction that carried them, and the records held for them, committed."""

    def reached_end(self, topic: str, partition: int, offset: int) -> None:
        """The end of a partition was read (only with ``report_partition_end`` on the intake)."""

    def rewound(self) -> None:
        """Exactly-once: a transaction was aborted and every partition revoked, assigned back
        and read again from its committed offset; whatever the aborted records advanced (an
        audit chain's heads) must not be built on."""


class SyncHandler(Handler):
    """A handler whose answer to a message is known at once: the records it returns."""

    def records_for(self, message: Message) -> Iterable[OutRecord]:
        raise NotImplementedError

    def handle(self, batch: Sequence[Ticket]) -> None:
        for ticket in batch:
            self.outbox.answer([ticket], list(self.records_for(ticket.message)))


class Outbox:
    """Where handlers send records and answer tickets; thread-safe.

    ``answer`` and ``send`` raise ``KafkaException`` when the producer refuses a record before
    sending it (an invalid topic, a record over the size limit) and its destination is not
    caller-named: the records produced so far for that call can no longer finish its tickets,
    which stay unanswered, so the handler may refuse the message instead (``replace_answer``)
    or let the exception stop the worker.
    """

    def __init__(
        self,
        producer: ProducerLike,
        tracker: OffsetTracker,
        hooks: SendHooks,
        *,
        hold_answers: bool = False,
    ) -> None:
        self._producer, self._tracker, self._hooks = producer, tracker, hooks
        self._lock = threading.Lock()
        self._open: dict[TopicPartition, _OpenCount] = {}
        # exactly-once: records held per partition and offset until their offset is committed
        self._held: dict[TopicPartition, dict[int, list[OutRecord]]] | None = (
            {} if hold_answers else None
        )
        self._open_total = 0
        self._undelivered: deque[tuple[OutRecord, KafkaError, OnUndelivered | None]] = deque()
        self.failure: BaseException | None = None
        self.sent_unowned = False  # since the loop last cleared it (exactly-once: uncommitted)

    # what handlers call ------------------------------------------------------------------
    def answer(self, tickets: Sequence[Ticket], records: Sequence[OutRecord]) -> None:
        """Answer ``tickets`` with ``records``: they finish together once all are acknowledged
        (at once when there are none). One delivery countdown for all: cheap for a batch.
        Holding answers, only one ticket may be answered with records (see ``answer_each``)."""
        self._check_open(tickets)
        if self._held is not None:
            self._hold_answer(tickets, records)
            return
        pending = [t._pending for t in tickets]
        group = _Group(self, records, lambda: self._release(pending))
        self._produce_group(group, records)
        self._mark_answered(tickets)

    def answer_each(self, answers: Sequence[tuple[Ticket, Sequence[OutRecord]]]) -> None:
        """Answer each ticket with its own records: one ``answer`` for all when records are
        produced at once, one per ticket when they are held (each waits for its own offset)."""
        if self._held is None:
            self.answer([t for t, _ in answers], [r for _, records in answers for r in records])
            return
        self._check_open([t for t, _ in answers])
        for ticket, records in answers:
            self._hold_answer([ticket], records)

    def close(self, tickets: Sequence[Ticket]) -> None:
        """Answer ``tickets`` with nothing more: each finishes once what it sent is acked."""
        self.answer(tickets, [])

    def send(self, ticket: Ticket, records: Sequence[OutRecord]) -> None:
        """Send records that ``ticket`` waits for, and keep it open (answer it later)."""
        self._check_open([ticket])
        if self._held is not None:  # the ticket's own hold keeps its offset until it is answered
            self._hold(ticket, records, replace=False)
            return
        pending = ticket._pending
        self._tracker.add(pending, 1)  # this group's hold on the ticket
        self._produce_group(_Group(self, records, lambda: self._tracker.ack(pending)), records)

    def replace_answer(self, ticket: Ticket, records: Sequence[OutRecord]) -> None:
        """Answer ``ticket`` with ``records`` instead of whatever was sent for it before (e.g.
        after ``answer`` or ``send`` raised): its offset now finishes once these are acked."""
        self._check_open([ticket])
        if self._held is not None:  # nothing held for it was produced: replaced exactly
            self._hold(ticket, records, replace=True)
            self._finish_held([ticket])
            return
        self._tracker.add(ticket._pending, 1 << 62)  # the old claim can never finish the offset
        fresh = Pending(ticket.tp, ticket.offset, acks=1, part=ticket._pending.part)
        group = _Group(self, records, lambda: self._tracker.ack(fresh))
        self._produce_group(group, records)
        ticket._pending = fresh
        self._mark_answered([ticket])

    def send_unowned(
        self, records: Iterable[OutRecord], on_undelivered: OnUndelivered | None = None
    ) -> None:
        """Send records no message waits for (a dispatch, a copy). A failed delivery is passed
        to ``on_undelivered`` on the loop's thread (default: logged); it never stops the loop."""
        self.sent_unowned = True
        for record in records:
            callback = _Unowned(self, record, on_undelivered)
            self._produce(record, callback)

    def fail(self, error: BaseException) -> None:
        """Stop the worker without committing anything not finished (first failure wins)."""
        with self._lock:
            if self.failure is None:
                self.failure = error

    # what the loop calls -----------------------------------------------------------------
    @property
    def unanswered(self) -> int:
        """Tickets handed out and not answered yet: what backpressure bounds."""
        return self._open_total

    def admit(self, messages: Sequence[Message]) -> list[Ticket]:
        """Tickets for consumed messages, each holding its offset until answered."""
        positions = [((m.topic(), m.partition()), m.offset()) for m in messages]
        pending = self._tracker.begin_many(positions)
        tickets = []
        with self._lock:
            for message, one in zip(messages, pending, strict=True):
                one.acks = 1  # the ticket's own hold, released when it is answered
                count = self._open.get(one.tp) or self._open.setdefault(one.tp, _OpenCount())
                count.n += 1
                tickets.append(Ticket(message, one, count))
            self._open_total += len(tickets)
        return tickets

    def assign(self, tps: Sequence[TopicPartition]) -> None:
        self._tracker.assign(list(tps))
        with self._lock:
            for tp in tps:
                self._open.setdefault(tp, _OpenCount())

    def revoke(self, tps: Sequence[TopicPartition]) -> None:
        """Forget the partitions' unfinished messages: their tickets no longer count."""
        with self._lock:
            for tp in tps:
                count = self._open.pop(tp, None)
                if count is not None:
                    count.live = False
                    self._open_total -= count.n
                if self._held is not None:
                    self._held.pop(tp, None)
        self._tracker.revoke(list(tps))

    def release_held(self, offsets: Sequence[tuple[str, int, int]]) -> int:
        """Produce the held records of each partition's offsets below ``offsets`` (the next
        offset to commit), in offset order; how many were produced. On the loop's thread, into
        the transaction that commits those offsets."""
        released = self._take_held(offsets)
        callback = _HeldDelivery(self)
        for record in released:
            self._produce(record, callback)
        return len(released)

    def settle_undelivered(self) -> None:
        """Hand failed unowned deliveries to their callbacks, on the loop's thread (a delivery
        callback runs inside a poll and must not produce)."""
        while self._undelivered:
            record, error, on_undelivered = self._undelivered.popleft()
            if on_undelivered is None:
                log.warning("record not delivered", topic=record.topic, error=error.str())
            else:
                on_undelivered(record, error)

    # internals ---------------------------------------------------------------------------
    def _hold_answer(self, tickets: Sequence[Ticket], records: Sequence[OutRecord]) -> None:
        if records:
            if len(tickets) != 1:
                raise ValueError("holding answers, answer tickets with records one at a time")
            self._hold(tickets[0], records, replace=False)
        self._finish_held(tickets)

    def _hold(self, ticket: Ticket, records: Sequence[OutRecord], *, replace: bool) -> None:
        with self._lock:
            if self._held is None or not ticket._count.live:  # revoked: the new owner redoes it
                return
            held = self._held.setdefault(ticket.tp, {})
            if replace or ticket.offset not in held:
                held[ticket.offset] = list(records)
            else:
                held[ticket.offset].extend(records)

    def _finish_held(self, tickets: Sequence[Ticket]) -> None:
        """Answered: the offsets may be committed (their held records go with them)."""
        self._tracker.finish([t._pending for t in tickets])
        self._mark_answered(tickets)

    def _take_held(self, offsets: Sequence[tuple[str, int, int]]) -> list[OutRecord]:
        taken: list[OutRecord] = []
        with self._lock:
            for topic, partition, below in offsets:
                held = self._held.get((topic, partition)) if self._held is not None else None
                if held:
                    for offset in sorted(o for o in held if o < below):
                        taken += held.pop(offset)
        return taken

    def _check_open(self, tickets: Sequence[Ticket]) -> None:
        if any(t.answered for t in tickets):  # its offset may be committed already
            raise RuntimeError("a ticket was answered twice")

    def _mark_answered(self, tickets: Sequence[Ticket]) -> None:
        with self._lock:
            for ticket in tickets:
                ticket.answered = True
                if ticket._count.live:
                    ticket._count.n -= 1
                    self._open_total -= 1

    def _release(self, pending: list[Pending]) -> None:
        """Release the tickets' holds: those holding nothing else finish under one lock."""
        only_held = [p for p in pending if p.acks == 1]
        self._tracker.finish(only_held)
        for one in pending:
            if one.acks != 1:  # records sent earlier are still unacknowledged
                self._tracker.ack(one)

    def _produce_group(self, group: _Group, records: Sequence[OutRecord]) -> None:
        for record in records:
            self._produce(record, group)
        group(None, None)  # the group's own hold: released once every record is produced

    def _produce(self, record: OutRecord, on_delivery: Callable[[Any, Any], None]) -> None:
        while True:
            try:
                self._producer.produce(
                    record.topic, record.value, record.key, partition=record.partition,
                    on_delivery=on_delivery, headers=record.headers,
                )  # fmt: skip
                return
            except BufferError:  # local queue full: serve delivery callbacks, then retry
                if self.failure is not None:
                    raise  # nothing will drain it: do not spin for ever
                self._producer.poll(_BUFFER_FULL_WAIT_S)
            except KafkaException as exc:  # refused before sending: e.g. an invalid topic
                if not self._forgiven(exc.args[0], record.topic, record.caller_named):
                    raise
                on_delivery(None, None)  # counted as sent: nothing will ever deliver it
                return

    def _delivery_failed(self, error: KafkaError, topic: str, caller_named: bool) -> bool:
        """True when the failure is forgiven; else (librdkafka already retried) the worker
        stops: committing past the lost record would lose it."""
        self._hooks.send_failed(topic, KafkaException(error))
        if self._forgiven(error, topic, caller_named):
            return True
        self.fail(KafkaException(error))
        return False

    def _forgiven(self, error: KafkaError, topic: str, caller_named: bool) -> bool:
        if not caller_named or not is_permanent(error):
            return False
        log.warning("record cannot be delivered to the caller's destination; dropped",
                    topic=topic, error=error.str())  # fmt: skip
        return True


class _Group:
    """The delivery callback of records sent together: ``on_all`` runs once each is acked
    (or forgiven) and the group's own hold is released; a lost record keeps it from running.

    One object per group instead of a closure per record; ``next`` on a count is atomic, so
    whichever thread serves delivery reports may call it.
    """

    __slots__ = ("_acked", "_caller_named", "_on_all", "_outbox", "_total")

    def __init__(
        self, outbox: Outbox, records: Sequence[OutRecord], on_all: Callable[[], None]
    ) -> None:
        self._outbox, self._on_all = outbox, on_all
        self._total = len(records) + 1  # + the hold
        self._caller_named = frozenset(r.topic for r in records if r.caller_named)
        self._acked = itertools.count(1)

    def __call__(self, error: Any, msg: Any) -> None:
        if error is not None:
            topic = msg.topic() or ""
            if not self._outbox._delivery_failed(error, topic, topic in self._caller_named):
                return
        if next(self._acked) == self._total:
            self._on_all()


class _HeldDelivery:
    """Delivery callback of released held records: a transaction with a lost record cannot
    commit, so its commit fails and the worker aborts and rewinds (``kafka/transactions.py``);
    a fatal error stops the worker at once."""

    __slots__ = ("_outbox",)

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def __call__(self, error: Any, msg: Any) -> None:
        if error is not None:
            self._outbox._hooks.send_failed(msg.topic() or "", KafkaException(error))
            if error.fatal():
                self._outbox.fail(KafkaException(error))


class _Unowned:
    """Delivery callback of one unowned record: failures are queued for the loop's thread."""

    __slots__ = ("_on_undelivered", "_outbox", "_record")

    def __init__(self, outbox: Outbox, record: OutRecord, on_undelivered: OnUndelivered | None):
        self._outbox, self._record, self._on_undelivered = outbox, record, on_undelivered

    def __call__(self, error: Any, msg: Any) -> None:
        if error is None:
            return
        self._outbox._hooks.send_failed(self._record.topic, KafkaException(error))
        self._outbox._undelivered.append((self._record, error, self._on_undelivered))

"""The one Kafka worker loop: consume → handle → produce → ack → commit, for every role.

A role (stage, router, shadow auditor, control follower) is a ``Handler`` (``kafka/handler.py``)
plugged into a ``WorkerLoop``. The loop owns everything around it:

- intake: a consumer group (``GroupIntake``) whose offsets it commits, or partitions read
  without a group (``AssignedIntake``), e.g. a topic read from its beginning on every start;
- commits: every ``commit_interval_s``, each partition's gap-free prefix of finished messages
  (``OffsetTracker``); never after a failure, so a failed message and all after it come back;
- backpressure: pausing (only the ``pausable`` topics) while too many messages are unanswered
  or unacknowledged, resuming below half: what stays in Kafka is lag, not a buffer;
- rebalance: on revoke, commit what is finished and drop what is not (the new owner redoes it);
  partition claims of the poison ledger (``kafka/poison.py``) on assign and clean release;
- drain: on ``stop()``, pause intake and let what is in flight finish within
  ``drain_timeout_s`` (replies on unpaused topics keep flowing), then commit and close;
- readiness: assigned, running, not failed, and able to fetch (``FetchHealth``);
- exactly-once (``exactly_once``, group intakes only): each commit is a producer transaction
  holding the records released for the committed offsets (``kafka/transactions.py``).

Threads: the loop runs on one thread (``start``) or the caller's (``run``); delivery callbacks
run on whichever thread polls the producer; a handler may answer from its own threads.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)

from modelyard.errors import FatalError
from modelyard.kafka.commit import commit_finished
from modelyard.kafka.config import consumer_config, producer_config
from modelyard.kafka.delivery import producer_partition_count
from modelyard.kafka.fetch_health import FetchHealth
from modelyard.kafka.handler import Handler, Outbox, ProducerLike
from modelyard.kafka.offsets import OffsetTracker
from modelyard.kafka.poison import PoisonLedger
from modelyard.kafka.transactions import (
    IdSlot,
    TransactionalProducer,
    Transactions,
    requires_abort,
    transactional_config,
    transactional_id_slot,
)

__all__ = [
    "AssignedIntake",
    "CommitStuckError",
    "ConfluentClients",
    "ConsumerLike",
    "GroupIntake",
    "KafkaClients",
    "LoopHooks",
    "LoopOptions",
    "WorkerLoop",
]

log = structlog.get_logger(__name__)


class CommitStuckError(FatalError):
    """A commit has been under way past ``LoopOptions.stuck_commit_s``."""


TopicPartition = tuple[str, int]
_REVOKE_FLUSH_S = 5.0  # acks that finish answered messages before their partition goes
# exactly-once: aborted transactions in a row that the worker rewinds before it stops; a record
# that can never be delivered (a caller's reply-to that does not exist) fails every retry, and
# a stop lets the poison ledger count it (kafka/poison.py) instead of rewinding for ever
_MAX_REWINDS = 3
_CLOSE_FLUSH_S = 5.0  # the same on the way out, after the drain
_JOIN_MARGIN_S = _CLOSE_FLUSH_S + 10.0  # stop() waits the drain plus this


# settings ----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LoopOptions:
    """The loop's knobs (``kafka.process.WorkerSettings.loop_options`` builds them from a
    service's settings)."""

    bootstrap: str
    # SASL/SSL, tuning: wins over defaults; out of the repr, since it may hold secrets
    kafka: Mapping[str, Any] = field(default_factory=dict, repr=False)
    state_dir: Path | None = None  # poison-ledger claims; None: no crash-loop rule
    poll_batch_size: int = 500
    poll_timeout_s: float = 0.05
    paused_poll_s: float = 0.005  # short: intake resumes as soon as the handler catches up
    max_inflight: int = 1024  # unanswered messages before intake pauses
    max_unacked_factor: int = 16  # answered but not yet acknowledged: a looser bound
    commit_interval_s: float = 0.2
    lag_interval_s: float = 0.5  # cheap: cached watermarks, no broker round trip
    drain_timeout_s: float = 30.0
    revoke_grace_s: float = 0.0  # how long revoked partitions' unanswered messages may finish
    idle_flush_s: float = 0.01  # idle: send lingering records now, not after linger.ms (0: off)
    # records and offsets committed in one transaction when idle, under load every
    # commit_interval_s (group intakes only)
    exactly_once: bool = False
    transactional_id: str | None = None  # exactly-once: this instance's stable id; None: a slot
    # a commit in progress longer than this fails the worker (its process exits 1, for its
    # supervisor to restart): every step of one has a timeout (at most 3 tries of 30 s each),
    # but librdkafka's send_offsets_to_transaction can block past it for good
    # (confluentinc/librdkafka#5456, #5511) and nothing inside the process can end that call
    stuck_commit_s: float = 300.0


# intakes -----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class GroupIntake:
    """Subscribe to ``topics`` in consumer group ``group_id``; finished offsets are committed."""

    topics: tuple[str, ...]
    group_id: str
    # the topics backpressure and drain pause (None: all); a router pauses its ingress only,
    # since the replies on its inbox are what lets requests finish
    pausable: frozenset[str] | None = None
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)
    report_partition_end: bool = False  # Handler.reached_end at each partition's end


@dataclass(frozen=True, kw_only=True)
class AssignedIntake:
    """Read the partitions ``open`` chooses, without joining a group; nothing is committed.

    ``open(consumer)`` returns where to start reading, or None when it cannot yet (the topic
    does not exist): the loop then closes that client and tries a fresh one after
    ``reopen_s`` (a client told that a topic does not exist can keep believing it long after
    it is created). No group: no commits, no poison-ledger claims.
    """

    open: Callable[[ConsumerLike], list[Any] | None]  # confluent TopicPartitions with offsets
    consumer_overrides: Mapping[str, Any] = field(default_factory=dict)
    report_partition_end: bool = False
    reopen_s: float = 0.2


Intake = GroupIntake | AssignedIntake


# clients and hooks -------------------------------------------------------------------------
class ConsumerLike(Protocol):
    """The part of ``confluent_kafka.Consumer`` the loop uses (tests pass a fake)."""

    def subscribe(self, topics: list[str], **callbacks: Any) -> None: ...
    def assign(self, partitions: list[Any]) -> None: ...
    def assignment(self) -> list[Any]: ...
    def pause(self, partitions: list[Any]) -> None: ...
    def resume(self, partitions: list[Any]) -> None: ...
    def consume(self, num_messages: int = ..., timeout: float = ...) -> list[Message]: ...
    def poll(self, timeout: float = ...) -> Message | None: ...
    def commit(self, **kwargs: Any) -> Any: ...
    def committed(self, partitions: list[Any], timeout: float = ...) -> list[Any]: ...
    def seek(self, partition: Any) -> None: ...
    def position(self, partitions: list[Any]) -> list[Any]: ...
    def get_watermark_offsets(self, partition: Any, **kwargs: Any) -> tuple[int, int]: ...
    def close(self) -> None: ...


class KafkaClients(Protocol):
    """Makes the loop's clients from librdkafka configs."""

    def consumer(self, config: dict[str, Any]) -> ConsumerLike: ...
    def producer(self, config: dict[str, Any]) -> ProducerLike: ...


class ConfluentClients:
    def consumer(self, config: dict[str, Any]) -> ConsumerLike:
        consumer: ConsumerLike = Consumer(config)
        return consumer

    def producer(self, config: dict[str, Any]) -> ProducerLike:
        producer: ProducerLike = Producer(config)
        return producer


class LoopHooks(Protocol):
    """What the loop reports (``telemetry.Hooks`` has each); a hook must not raise."""

    def committed(self, offsets: Sequence[tuple[str, int, int]]) -> None: ...
    def paused(self, paused: bool) -> None: ...
    def lag(self, topic: str, partition: int, lag: int) -> None: ...
    def send_failed(self, topic: str, error: BaseException) -> None: ...


class _GroupMember(Protocol):
    """What a transaction's offsets are checked against (``confluent_kafka.Consumer`` has it)."""

    def consumer_group_metadata(self) -> Any: ...


class _NoHooks:
    def committed(self, offsets: Sequence[tuple[str, int, int]]) -> None: ...
    def paused(self, paused: bool) -> None: ...
    def lag(self, topic: str, partition: int, lag: int) -> None: ...
    def send_failed(self, topic: str, error: BaseException) -> None: ...


class _NoProducer:
    """The producer of a worker that only reads (a follower): producing is a bug."""

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        raise RuntimeError(f"this worker only reads; it cannot produce to {topic!r}")

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return 0


# the loop ----------------------------------------------------------------------------------
class WorkerLoop:
    """One worker: ``start(handler)`` on its own thread (or ``run(handler)`` on this one)."""

    def __init__(
        self,
        intake: Intake,
        options: LoopOptions,
        *,
        hooks: LoopHooks | None = None,
        name: str = "worker",
        produces: bool = True,
        producer_overrides: Mapping[str, Any] | None = None,
        clients: KafkaClients | None = None,
    ) -> None:
        """``produces`` False: a reader (nothing to send, no producer); ``producer_overrides``:
        a role's own producer settings (e.g. ``BACKGROUND_PRODUCER``), below ``options.kafka``."""
        self.intake, self.opts, self.name = intake, options, name
        self.hooks: LoopHooks = hooks or _NoHooks()
        self.fetch_health = FetchHealth()
        self._clients = clients or ConfluentClients()
        self._grouped = isinstance(intake, GroupIntake)
        self._tracker = OffsetTracker()
        group = intake.group_id if isinstance(intake, GroupIntake) else ""
        self._slot = self._transaction_slot(group, produces)
        overrides = dict(producer_overrides or {})
        if self._slot is not None:
            overrides.update(transactional_config(self._slot.transactional_id))
        producer_conf = producer_config(options.bootstrap, options.kafka, **overrides)
        self._producer = self._clients.producer(producer_conf) if produces else _NoProducer()
        self._transactions = (
            Transactions(cast(TransactionalProducer, self._producer)) if self._slot else None
        )
        self.outbox = Outbox(
            self._producer, self._tracker, self.hooks, hold_answers=self._slot is not None
        )
        self._ledger = PoisonLedger(options.state_dir if self._grouped else None, group)
        self._consumer = self._new_consumer()
        self._handler = Handler(self.outbox)  # a placeholder until run() is given the role's
        self._stop = threading.Event()
        self._assigned_once = threading.Event()
        self._settled = threading.Event()  # assigned, or ended first: what wait_ready waits for
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = self._paused = self._draining = False
        self._last_commit = self._last_lag = 0.0
        self._rewinds = 0  # aborted transactions since the last one committed
        self._committing_since: float | None = None  # monotonic start of the commit under way

    # lifecycle ---------------------------------------------------------------------------
    def start(self, handler: Handler) -> None:
        self._running = True  # before the thread: a caller that checks at once sees it running
        self._thread = threading.Thread(
            target=self.run, args=(handler,), name=f"modelyard-{self.name}", daemon=True
        )
        self._thread.start()

    def run(self, handler: Handler) -> None:
        """Work until ``stop()`` or a failure; then drain (when clean), commit, close."""
        self._handler, self._running = handler, True
        self._last_commit = self._last_lag = time.monotonic()  # the first ones after an interval
        log.info("worker starting", worker=self.name, intake=_describe(self.intake))
        try:
            if self._transactions is not None:
                self._transactions.start()
            self._open_intake()
            while not self._stop.is_set() and self.failure is None:
                self._step()
            if self.failure is None:
                self._drain()
        except BaseException as exc:  # reported through .failure, then we stop
            self.outbox.fail(exc)
            log.exception("worker failed", worker=self.name)
        finally:
            self._close()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop taking messages, let those in flight finish (bounded), commit, close."""
        self._stop.set()
        thread = self._thread
        if self._commit_stuck():  # its thread is blocked in librdkafka: it cannot be joined
            log.error("not waiting for a worker blocked in a commit", worker=self.name)
            return
        if thread is not None and thread is not threading.current_thread():
            thread.join(
                self.opts.drain_timeout_s + _JOIN_MARGIN_S if timeout_s is None else timeout_s
            )

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the loop to end by itself (a failure) or after ``stop()``; whether it has."""
        return self._ended.wait(timeout_s)

    @property
    def failure(self) -> BaseException | None:
        """What stopped the worker, or a commit blocked past ``stuck_commit_s``: a call
        nothing in the process can end, so the process must go (its successor's transactional
        producer fences this one's and aborts its open transaction)."""
        if self.outbox.failure is None and self._commit_stuck():  # for good, if it unblocks
            since = time.monotonic() - (self._committing_since or 0.0)
            self.outbox.fail(CommitStuckError(
                f"{self.name}: a commit has been blocked for {since:.0f} s (more than "
                f"stuck_commit_s={self.opts.stuck_commit_s:g}); the process must restart"
            ))  # fmt: skip
        return self.outbox.failure

    @property
    def running(self) -> bool:
        return self._running

    # readiness ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Partitions assigned (possibly none), working, not failed, able to fetch."""
        return all(self.health().values())

    def health(self) -> dict[str, bool]:
        """The checks a readiness endpoint serves."""
        working = self._assigned_once.is_set() and self._running and self.failure is None
        return {"kafka": working, "fetch": self.fetch_health.ok, "commit": not self._commit_stuck()}

    def _commit_stuck(self) -> bool:
        since = self._committing_since
        return since is not None and time.monotonic() - since > self.opts.stuck_commit_s

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait for the first assignment; False on timeout or when the worker ended first."""
        self._settled.wait(timeout_s)
        return self._assigned_once.is_set() and self.failure is None

    # metadata ----------------------------------------------------------------------------
    def partitions_of(self, topic: str) -> int:
        """How many partitions ``topic`` has (0: no such topic), asked through the loop's
        producer; ``KafkaException`` when the cluster does not answer. E.g. whether a caller's
        ``reply-partition`` exists (``kafka.delivery.PartitionCounts``)."""
        return producer_partition_count(self._producer)(topic)

    # one step ----------------------------------------------------------------------------
    def _step(self) -> None:
        if not self._draining:
            self._apply_backpressure()
        self._hand(self._next_messages())
        self._producer.poll(0)  # serves delivery callbacks: messages finish
        self.outbox.settle_undelivered()
        self._handler.tick(time.monotonic())
        self._commit_if_due()
        self._report_lag_if_due()

    def _next_messages(self) -> list[Message]:
        if self._ledger.careful:
            return self._next_carefully()
        # never take more than there is room for, except what unpaused topics bring
        room = self.opts.max_inflight - self.outbox.unanswered
        batch = (
            self.opts.poll_batch_size
            if self._paused
            else max(1, min(self.opts.poll_batch_size, room))
        )
        msgs = self._consumer.consume(batch, 0)  # what is queued, without waiting
        if msgs:
            return list(msgs)
        self._flush_idle()
        return self._poll_one(self._idle_timeout())

    def _next_carefully(self) -> list[Message]:
        """After a crash: one message at a time, each recorded in the ledger while in hand."""
        if self._handler.runs_after_handle and self.outbox.unanswered:
            self._producer.poll(self.opts.paused_poll_s)  # the one in hand is still running
            return []
        self._ledger.end()
        return self._poll_one(self._idle_timeout())

    def _poll_one(self, timeout_s: float) -> list[Message]:
        msg = self._consumer.poll(timeout_s)
        return [msg] if msg is not None else []

    def _idle_timeout(self) -> float:
        # short while paused or draining: resume or finish as soon as possible
        short = self._paused or self._draining
        return self.opts.paused_poll_s if short else self.opts.poll_timeout_s

    def _flush_idle(self) -> None:
        """Nothing to read: send lingering records now (exactly-once: commit what is ready, so
        that under a light load nothing waits for the interval). Under load they still go in
        batches."""
        if self._transactions is not None:
            if self.outbox.sent_unowned or self._tracker.advanced:
                self._commit_if_due(force=True)
            return
        if self.opts.idle_flush_s > 0 and len(self._producer):
            self._producer.flush(self.opts.idle_flush_s)

    def _hand(self, msgs: Sequence[Message]) -> None:
        consumed = [msg for msg in msgs if msg.error() is None]
        if len(consumed) < len(msgs):
            for msg in msgs:
                if msg.error() is not None:
                    self._on_consume_error(msg)
        if not consumed:
            return
        tickets = self.outbox.admit(consumed)
        fresh = []
        for ticket in tickets:
            deaths = self._ledger.deaths(ticket.tp, ticket.offset)
            if deaths:
                self._handler.poisoned(ticket, deaths)
            else:
                fresh.append(ticket)
        careful = self._ledger.careful
        if careful:  # recorded before handling: a death now is counted against it
            for ticket in fresh:
                self._ledger.begin(ticket.tp, ticket.offset)
        if fresh:
            self._handler.handle(fresh)
        if careful and not self._handler.runs_after_handle:
            self._ledger.end()

    def _on_consume_error(self, msg: Message) -> None:
        error: KafkaError = msg.error()
        if error.code() == KafkaError._PARTITION_EOF:
            self._handler.reached_end(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
            return
        if error.fatal():
            self.outbox.fail(KafkaException(error))
        log.warning("consumer error", worker=self.name, error=str(error))

    # commits and lag ---------------------------------------------------------------------
    def _commit_if_due(self, force: bool = False) -> None:
        if not self._grouped or self.failure is not None:  # never commit on the way to a stop
            return
        now = time.monotonic()
        if not force and now - self._last_commit < self.opts.commit_interval_s:
            return
        self._last_commit = now
        self._committing_since = now
        try:
            if self._transactions is not None:
                committed = self._commit_transaction(self._transactions)
            else:
                committed = commit_finished(self._consumer, self._tracker, asynchronous=not force)
        finally:
            self._committing_since = None
        if committed:
            self._handler.committed(committed)
            self.hooks.committed(committed)

    def _commit_transaction(self, transactions: Transactions) -> list[tuple[str, int, int]]:
        """Exactly-once: the finished offsets and the records held for them, in one transaction
        with whatever else was produced since the last one (raises when it cannot commit)."""
        offsets = self._tracker.to_commit()
        self.outbox.release_held(offsets)
        self.outbox.sent_unowned = False  # in this transaction from here on
        metadata = cast(_GroupMember, self._consumer).consumer_group_metadata()
        try:
            transactions.commit(offsets, metadata)
        except KafkaException as exc:
            self._rewinds += 1
            if not requires_abort(exc) or self._rewinds > _MAX_REWINDS:
                raise  # also a failure that rewinding does not cure: a restart and the ledger
            log.warning("transaction aborted; rewinding to the committed offsets",
                        worker=self.name, error=str(exc), rewinds=self._rewinds)  # fmt: skip
            self._rewind()
            transactions.restart()
            return []
        self._rewinds = 0
        return offsets

    def _rewind(self) -> None:
        """After an aborted transaction: drop what is in flight and read every assigned
        partition again from its committed offset, as a revoke and an assignment would."""
        partitions = self._consumer.assignment()
        tps = [(tp.topic, tp.partition) for tp in partitions]
        self._handler.revoked(tps)
        self.outbox.revoke(tps)
        for tp in self._committed_positions(partitions):
            self._consumer.seek(tp)
        self.outbox.assign(tps)
        self._handler.assigned(tps)
        self._handler.rewound()

    def _committed_positions(self, partitions: list[Any]) -> list[Any]:
        """Each partition's committed offset (its beginning when none), asked until the group
        coordinator answers: it may be moving to another broker."""
        deadline = time.monotonic() + self.opts.drain_timeout_s
        while True:
            try:
                committed = self._consumer.committed(partitions, timeout=5)
                break
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("committed offsets unavailable; asking again", error=str(exc))
        for tp in committed:
            if tp.offset < 0:  # nothing committed yet: the group starts at the beginning
                tp.offset = OFFSET_BEGINNING
        return committed

    def _transaction_slot(self, group: str, produces: bool) -> IdSlot | None:
        """Exactly-once: this worker's transactional id (see ``kafka/transactions.py``)."""
        if not self.opts.exactly_once:
            return None
        if not self._grouped or not produces:
            raise ValueError("exactly-once needs a consumer group and a producer")
        return transactional_id_slot(group, self.opts.transactional_id, self.opts.state_dir)

    def _on_commit(self, error: KafkaError | None, partitions: list[Any]) -> None:
        if error is not None:  # offered again by the next commit
            self._tracker.rollback([(tp.topic, tp.partition, tp.offset) for tp in partitions])

    def _report_lag_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < self.opts.lag_interval_s:
            return
        self._last_lag = now
        for tp in self._consumer.position(self._consumer.assignment()):
            # cached: the high watermark of the last fetch, so no broker round trip
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                self.hooks.lag(tp.topic, tp.partition, max(0, high - tp.offset))

    # backpressure ------------------------------------------------------------------------
    def _apply_backpressure(self) -> None:
        # librdkafka drops prefetched data on pause, so pause only when work really piles up
        limit, unanswered = self.opts.max_inflight, self.outbox.unanswered
        over = unanswered >= limit or self._tracker.inflight >= limit * self.opts.max_unacked_factor
        if not self._paused and over:
            self._set_paused(True)
        elif self._paused and not over and unanswered <= limit // 2:
            self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        pausable = self._pausable(self._consumer.assignment())
        (self._consumer.pause if paused else self._consumer.resume)(pausable)
        self._paused = paused
        self.hooks.paused(paused)

    def _pausable(self, partitions: Sequence[Any]) -> list[Any]:
        topics = self.intake.pausable if isinstance(self.intake, GroupIntake) else None
        return [tp for tp in partitions if topics is None or tp.topic in topics]

    # intake and rebalance ----------------------------------------------------------------
    def _new_consumer(self) -> ConsumerLike:
        intake = self.intake
        if isinstance(intake, GroupIntake):
            group = intake.group_id  # always explicit: offsets belong to the role's group
            callbacks: dict[str, Any] = {"on_commit": self._on_commit}
        else:  # required by the client, never joined: assign() only, nothing committed
            group, callbacks = f"modelyard-reader-{uuid.uuid4().hex[:12]}", {}
        overrides = {"error_cb": self.fetch_health.on_error, **callbacks}
        config = consumer_config(
            self.opts.bootstrap,
            group,
            self.opts.kafka,
            **{**overrides, **intake.consumer_overrides},
        )
        if intake.report_partition_end:  # the only way a reader learns where the end is
            config["enable.partition.eof"] = True
        return self._clients.consumer(config)

    def _open_intake(self) -> None:
        intake = self.intake
        if isinstance(intake, GroupIntake):
            self._consumer.subscribe(
                list(intake.topics), on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            return
        while not self._stop.is_set():
            positions = intake.open(self._consumer)
            if positions is not None:
                self._consumer.assign(positions)
                self._assigned([(tp.topic, tp.partition) for tp in positions])
                return
            self._consumer.close()  # a fresh client for the next look (see AssignedIntake)
            self._stop.wait(intake.reopen_s)
            self._consumer = self._new_consumer()

    def _assigned(self, tps: list[TopicPartition]) -> None:
        self.outbox.assign(tps)
        self._ledger.claim(tps)
        self._handler.assigned(tps)
        self._assigned_once.set()
        self._settled.set()
        log.info("partitions assigned", worker=self.name, partitions=tps)

    def _on_assign(self, consumer: ConsumerLike, partitions: list[Any]) -> None:
        try:
            self._assigned([(tp.topic, tp.partition) for tp in partitions])
            if self._paused or self._draining:
                consumer.pause(self._pausable(partitions))
        except BaseException as exc:  # raised inside a poll: reported, and the loop stops
            self.outbox.fail(exc)

    def _on_revoke(self, consumer: ConsumerLike, partitions: list[Any]) -> None:
        try:
            self._give_up([(tp.topic, tp.partition) for tp in partitions])
        except BaseException as exc:
            self.outbox.fail(exc)

    def _give_up(self, tps: list[TopicPartition]) -> None:
        """Commit what is finished in ``tps``, then drop the rest: the new owner redoes it."""
        grace = 0.0 if self._stop.is_set() else self.opts.revoke_grace_s  # stopping: drained
        if grace > 0:
            self._serve_until(lambda: self._tracker.pending_in(tps) == 0, grace)
        self._producer.flush(_REVOKE_FLUSH_S)  # acks finish what is answered already
        if self.failure is None:
            self._commit_if_due(force=True)
            self._ledger.release(tps)
        self._handler.revoked(tps)
        self.outbox.revoke(tps)
        log.info("partitions revoked", worker=self.name, partitions=tps)

    def _serve_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline or self.failure is not None:
                return False
            self._producer.poll(0.01)  # serves delivery callbacks that finish messages
        return True

    # stopping ----------------------------------------------------------------------------
    def _drain(self) -> None:
        """Take no new work; let what is in flight finish within the bound. Unpaused topics
        (a router's replies) keep being handled: they are what finishes the rest."""
        self._draining = True
        self._consumer.pause(self._pausable(self._consumer.assignment()))
        deadline = time.monotonic() + self.opts.drain_timeout_s
        while self._tracker.inflight and time.monotonic() < deadline and self.failure is None:
            self._step()
        log.info("drained", worker=self.name, unfinished=self._tracker.inflight)

    def _close(self) -> None:
        try:
            self._producer.flush(_CLOSE_FLUSH_S)
            self._producer.poll(0)
            if self.failure is None:
                self._commit_if_due(force=True)
                self._ledger.release()
            else:
                log.error("stopping on failure without committing", worker=self.name,
                          error=repr(self.failure))  # fmt: skip
                self._abort_transaction()
            self._consumer.close()  # a group consumer is revoked in here (_give_up)
        except Exception as exc:
            self.outbox.fail(exc)
            log.exception("worker did not close cleanly", worker=self.name)
            self._abort_transaction()
        finally:
            if self._slot is not None:
                self._slot.release()
            self._running = False
            self._settled.set()
            self._ended.set()
            log.info("worker stopped", worker=self.name, clean=self.failure is None)

    def _abort_transaction(self) -> None:
        """Exactly-once, stopping on a failure: readers need not wait for the open transaction
        to time out (a restart redoes what it held)."""
        if self._transactions is not None:
            self._transactions.abort()


def _describe(intake: Intake) -> str:
    if isinstance(intake, GroupIntake):
        return f"group {intake.group_id} on {', '.join(intake.topics)}"
    return "assigned partitions"

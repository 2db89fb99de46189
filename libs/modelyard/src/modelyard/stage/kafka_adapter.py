"""The Kafka side of a stage: consume a model version's topic, reply, dead-letter, commit.

Threads: this adapter's own thread consumes, decodes and queues work; the batcher's inference
thread produces each reply as soon as its outcome is known; delivery callbacks (run by whichever
thread polls the producer) mark messages finished; this thread commits the gap-free prefix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from modelyard.errors import (
    Disposition,
    ModelError,
    ModelyardError,
    ValidationError,
    policy_for,
)
from modelyard.kafka.codec import Incoming, decode_message, encode_reply, reply_headers
from modelyard.kafka.commit import commit_finished
from modelyard.kafka.config import MAX_MESSAGE_BYTES, consumer_config, producer_config
from modelyard.kafka.delivery import PartitionCounts, is_permanent, producer_partition_count
from modelyard.kafka.fetch_health import FetchHealth
from modelyard.kafka.offsets import AckCountdown, OffsetTracker, Pending
from modelyard.kafka.poison import PoisonLedger
from modelyard.model import Outcome
from modelyard.stage.batcher import WorkItem
from modelyard.stage.core import StageCore, outcome_code
from modelyard.telemetry.hooks import RequestContext
from modelyard.topics import model_dlq_topic, model_reply_topic
from modelyard.wire.headers import MessageMeta, dead_letter

__all__ = ["ConsumerOptions", "StageConsumer"]

log = structlog.get_logger(__name__)

_Record = tuple[str, int, str | None, bytes, list[tuple[str, bytes]]]  # topic, partition, key...
_Answer = tuple[Incoming, Pending, RequestContext, Outcome]  # a message and what it gets
_IDLE_FLUSH_S = 0.01  # the longest an idle consumer waits for its replies' acks before polling


@dataclass(frozen=True)
class ConsumerOptions:
    bootstrap: str
    topic: str
    group_id: str
    prefix: str = "yard"
    max_inflight: int = 1024  # admitted but unanswered messages before intake pauses
    max_unacked_factor: int = 16  # answered but not yet acked by the broker: a looser bound
    poll_timeout_s: float = 0.05
    paused_poll_s: float = 0.005  # short: intake resumes as soon as the model catches up
    commit_interval_s: float = 0.2
    lag_interval_s: float = 0.5  # cheap: cached watermarks, no broker round trip
    drain_timeout_s: float = 30.0
    kafka: dict[str, Any] = field(default_factory=dict)  # passed through (SASL/SSL, tuning)
    state_dir: Path | None = None  # partition claims (kafka.poison); None: no crash-loop rule


class StageConsumer:
    def __init__(self, core: StageCore, options: ConsumerOptions) -> None:
        self.core = core
        self.opts = options
        self.hooks = core.hooks
        manifest = core.manifest
        self._model, self._version = manifest.name, manifest.version
        self._max_bytes = manifest.limits.max_request_bytes
        # the stage's own dead letters hold the bytes it was sent (by a router, the router's);
        # a router dead-letters its caller's original bytes to the pipeline's DLQ itself
        self._dlq = model_dlq_topic(options.prefix, self._model, self._version)
        self._tracker = OffsetTracker()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._paused = False
        self._unanswered = 0  # admitted, no reply produced yet: what backpressure bounds
        self._count_lock = threading.Lock()
        self._joined = threading.Event()
        self._last_commit = 0.0
        self._last_lag = 0.0
        self.fetch_health = FetchHealth()
        self._consumer = Consumer(
            consumer_config(
                options.bootstrap, options.group_id, options.kafka,
                on_commit=self._on_commit, error_cb=self.fetch_health.on_error,
            )
        )  # fmt: skip
        self._producer = Producer(producer_config(options.bootstrap, options.kafka))
        self._reply_partitions = PartitionCounts(producer_partition_count(self._producer))
        self._ledger = PoisonLedger(options.state_dir, options.group_id)
        self._thread = threading.Thread(target=self._run, name="modelyard-kafka", daemon=True)
        self._done = self._on_done  # one object: the batcher hands a batch's outcomes over at once

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._consumer.subscribe(
            [self.opts.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop consuming, finish in-flight work, commit, close (SIGTERM path)."""
        self._stop.set()
        self._thread.join(self.opts.drain_timeout_s + 10)

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait_joined(self, timeout_s: float) -> bool:
        """Wait until the group gave this consumer its first assignment (possibly empty)."""
        return self._joined.wait(timeout_s)

    @property
    def joined(self) -> bool:
        return self._joined.is_set()

    def _run(self) -> None:
        log.info("consuming", topic=self.opts.topic, group=self.opts.group_id)
        try:
            while not self._stop.is_set() and self._failure is None:
                self._apply_backpressure()
                self._handle(self._next_messages())
                self._producer.poll(0)
                self._commit_if_due()
                self._report_lag_if_due()
        except BaseException as exc:  # reported through .failure, then we stop
            self._failure = exc
        finally:
            self._shutdown()

    def _next_messages(self) -> list[Message]:
        if self._paused:
            # keeps the group membership alive; anything it still returns must be handled
            msg = self._consumer.poll(self.opts.paused_poll_s)
            return [msg] if msg is not None else []
        if self._ledger.careful:  # after a crash: one message at a time, each recorded first
            if self._unanswered:
                self._producer.poll(self.opts.paused_poll_s)
                return []
            self._ledger.end()
            msg = self._consumer.poll(self.opts.poll_timeout_s)
            return [msg] if msg is not None else []
        # never take more than there is room for: what stays in Kafka is lag, not a buffer
        room = min(500, max(1, self.opts.max_inflight - self._unanswered))
        msgs = self._consumer.consume(room, 0)  # drain what is queued without waiting
        if msgs:
            return list(msgs)
        self._flush_replies()
        msg = self._consumer.poll(self.opts.poll_timeout_s)
        return [msg] if msg is not None else []

    def _flush_replies(self) -> None:
        """Nothing left to read: send lingering replies now instead of after ``linger.ms``.

        Under load replies still go out in batches (intake never runs dry); idle, a request is
        answered without waiting for more replies to share its batch.
        """
        if len(self._producer):
            self._producer.flush(_IDLE_FLUSH_S)

    # intake ------------------------------------------------------------------------------
    def _handle(self, msgs: Sequence[Message]) -> None:
        consumed = [msg for msg in msgs if msg.error() is None]
        if len(consumed) < len(msgs):
            for msg in msgs:
                if (error := msg.error()) is not None:
                    self._on_consume_error(error)
        if not consumed:
            return
        # bookkeeping once per batch: one lock each instead of one per message
        pending = self._tracker.begin_many(
            [((msg.topic(), msg.partition()), msg.offset()) for msg in consumed]
        )
        with self._count_lock:
            self._unanswered += len(consumed)
        received_at = time.monotonic()  # consumed together: one clock reading for all of them
        items: list[WorkItem] = []
        refused: list[_Answer] = []
        for msg, one in zip(consumed, pending, strict=True):
            try:
                item = self._admit(msg, one, received_at, refused)
            except Exception as exc:  # no message's content may stop the consumer
                item = None
                refused.append(self._unexpected(msg, one, received_at, exc))
            if item is not None:
                items.append(item)
        if refused:  # answered with their errors, before the model runs the rest
            self._answer(refused)
        if items:
            self.core.submit(items)

    def _admit(
        self, msg: Message, pending: Pending, received_at: float, refused: list[_Answer]
    ) -> WorkItem | None:
        """The message as work for the model, or None when it is refused (added to
        ``refused``, to be answered with its error)."""
        incoming = decode_message(msg.key(), msg.value(), msg.headers(), self._max_bytes)
        tp = (msg.topic() or "", msg.partition() or 0)
        deaths = self._ledger.deaths(tp, msg.offset() or 0)
        if deaths:
            incoming.error = ModelyardError(
                f"the stage died {deaths} times while handling this message; not tried again"
            )
        else:
            self._ledger.begin(tp, msg.offset() or 0)
        meta = incoming.meta
        request = RequestContext(
            incoming.request_id or "", "kafka", incoming.headers, meta.shadow, meta.attempt,
            incoming.pipeline, incoming.caller, received_at,
        )  # fmt: skip
        self.hooks.request_received(request)
        envelope, error = incoming.envelope, incoming.error
        if envelope is not None and error is None:
            try:
                inputs = self.core.validate(envelope.fields)
            except ModelyardError as exc:
                error = exc
            except Exception as exc:  # e.g. a ragged list that numpy cannot make a tensor of
                error = ValidationError(f"fields cannot be read as tensors: {exc}")
            else:
                token = (incoming, pending)
                return WorkItem(request, inputs, self._done, envelope.deadline_ms, token)
        refused.append((incoming, pending, request, error or ModelyardError("undecodable")))
        return None

    def _unexpected(
        self, msg: Message, pending: Pending, received_at: float, exc: Exception
    ) -> _Answer:
        """A message whose admission raised what no check foresaw: dead-lettered with its
        original bytes (and answered, when its key names a request), never retried for ever."""
        log.exception("message failed unexpectedly; dead-lettering it", offset=msg.offset())
        key = msg.key()
        request_id = key.decode("utf-8", "replace") if key and len(key) <= 255 else None
        headers = [(k, v) for k, v in msg.headers() or [] if v is not None]
        incoming = Incoming(request_id, msg.value() or b"", headers, MessageMeta(),
                            replyable=False, request_id=request_id)  # fmt: skip
        request = RequestContext(request_id or "", "kafka", headers, False, 0, None, None,
                                 received_at)  # fmt: skip
        error = ModelyardError(f"the stage failed on this message: {type(exc).__name__}: {exc}")
        return (incoming, pending, request, error)

    def _on_consume_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            self._failure = KafkaException(error)
        log.warning("consumer error", error=str(error))

    # outcome -----------------------------------------------------------------------------
    def _on_done(self, items: list[WorkItem], outcomes: list[Outcome]) -> None:
        answers = [(*i.token, i.request, o) for i, o in zip(items, outcomes, strict=True)]
        try:
            self._answer(answers)
        except Exception as exc:
            self._failure = exc  # the messages never finish, so nothing past them is committed
            raise

    def _answer(self, answers: list[_Answer]) -> None:
        """Produce the replies (and dead letters) of answered messages, which finish together
        once the broker has acknowledged all of those records; then count them as answered."""
        finishing, records, requests, codes = [], [], [], []
        for incoming, pending, request, outcome in answers:
            requests.append(request)
            codes.append(outcome_code(outcome))
            if (
                isinstance(outcome, ModelyardError)
                and policy_for(outcome).disposition is Disposition.STOP
            ):
                self._failure = outcome  # never finished: a restart redelivers it
                continue
            finishing.append(pending)
            try:
                records += self._records_for(incoming, request, outcome)
            except Exception as exc:  # e.g. a model output the wire cannot carry
                failed = ModelError(f"the reply cannot be encoded: {type(exc).__name__}: {exc}")
                codes[-1] = failed.code
                records += self._records_for(incoming, request, failed)
        acks = AckCountdown(self._tracker, finishing, len(records), self._delivery_failed)
        for record in records:
            self._produce(record, acks)
        with self._count_lock:
            self._unanswered -= len(answers)
        self.hooks.requests_finished(requests, codes, time.monotonic())

    def _records_for(
        self, incoming: Incoming, request: RequestContext, outcome: Outcome
    ) -> list[_Record]:
        """(topic, partition, key, value, headers) to produce; partition -1: the key decides."""
        records = []
        key = incoming.request_id
        if isinstance(outcome, ModelyardError) and policy_for(outcome).disposition in (
            Disposition.DEAD_LETTER,
            Disposition.RETRY,  # the batcher's retries are spent by now
        ):
            value, headers = self._dead_letter(incoming, request, outcome)
            records.append((self._dlq, -1, key, value, headers))
            self.hooks.dead_lettered(request, self._dlq, outcome)
        if key and incoming.replyable:
            value = encode_reply(incoming, outcome, self._model, self._version, incoming.stage)
            headers = reply_headers(incoming)
            self.hooks.inject(request, headers)
            meta = incoming.meta
            if meta.reply_to:
                partition = self._reply_partitions.partition(meta.reply_to, meta.reply_partition)
                records.append((meta.reply_to, partition, key, value, headers))
            else:
                records.append((self._default_reply_topic(), -1, key, value, headers))
        return records

    def _default_reply_topic(self) -> str:
        return model_reply_topic(self.opts.prefix, self._model, self._version)

    def _dead_letter(
        self, incoming: Incoming, request: RequestContext, error: ModelyardError
    ) -> tuple[bytes, list[tuple[str, bytes]]]:
        value, headers = dead_letter(
            incoming.value, incoming.headers, error.message, error.code, source=self.opts.topic,
            max_bytes=MAX_MESSAGE_BYTES, stage=incoming.stage or incoming.meta.stage or "",
            model=f"{self._model}:{self._version}",
        )  # fmt: skip
        self.hooks.inject(request, headers)
        return value, headers

    def _produce(self, record: _Record, acks: AckCountdown) -> None:
        topic, partition, key, value, headers = record
        while True:
            try:
                self._producer.produce(
                    topic, value, key, partition=partition, on_delivery=acks, headers=headers
                )
                return
            except BufferError:  # local queue full: serve callbacks, then try again
                if self._failure is not None:
                    raise
                self._producer.poll(0.05)
            except KafkaException as exc:  # refused before sending: e.g. an invalid topic
                if not self._forgiven(exc.args[0], topic):
                    raise
                acks(None, None)  # counted as sent: nothing will ever deliver it
                return

    def _delivery_failed(self, error: KafkaError, msg: Message) -> bool:
        """True when the failed record was a reply the caller's destination can never take;
        else (librdkafka already retried) the consumer stops: committing past it would lose it."""
        topic = msg.topic() or ""
        self.hooks.send_failed(topic, KafkaException(error))
        if self._forgiven(error, topic):
            return True
        self._failure = KafkaException(error)
        return False

    def _forgiven(self, error: KafkaError, topic: str) -> bool:
        """A permanent failure anywhere but the dead-letter topic (losing a dead letter would
        lose the message) is the destination's, not the message's: logged, never retried."""
        if topic == self._dlq or not is_permanent(error):
            return False
        log.warning("reply cannot be delivered; dropped", topic=topic, error=error.str())
        return True

    # commits, backpressure, rebalance --------------------------------------------------
    def _commit_if_due(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < self.opts.commit_interval_s:
            return
        self._last_commit = now
        committed = commit_finished(self._consumer, self._tracker, asynchronous=not force)
        if committed:
            self.hooks.committed(committed)

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

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            self._tracker.rollback([(tp.topic, tp.partition, tp.offset) for tp in partitions])

    def _apply_backpressure(self) -> None:
        # librdkafka drops prefetched data on pause, so pause only when work really piles up
        limit = self.opts.max_inflight
        over = (
            self._unanswered >= limit
            or self._tracker.inflight >= limit * self.opts.max_unacked_factor
        )
        if not self._paused and over:
            self._set_paused(True)
        elif self._paused and self._unanswered <= limit // 2 and not over:
            self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        assignment = self._consumer.assignment()
        if paused:
            self._consumer.pause(assignment)
        else:
            self._consumer.resume(assignment)
        self._paused = paused
        self.hooks.paused(paused)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._tracker.assign([(tp.topic, tp.partition) for tp in partitions])
        self._ledger.claim([(tp.topic, tp.partition) for tp in partitions])
        self._joined.set()
        if self._paused:
            consumer.pause(partitions)
        log.info("partitions assigned", partitions=[tp.partition for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        if not self._stop.is_set():  # on shutdown, _shutdown has already drained
            self._wait_for(lambda: self._tracker.pending_in(tps) == 0, self.opts.drain_timeout_s)
        if self._failure is None:
            self._commit_if_due(force=True)
            self._ledger.release(tps)
        self._tracker.revoke(tps)
        log.info("partitions revoked", partitions=[tp.partition for tp in partitions])

    def _wait_for(self, condition: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline or self._failure is not None:
                return False
            self._producer.poll(0.01)  # serves delivery callbacks that finish messages
        return True

    def _shutdown(self) -> None:
        drained = self._wait_for(lambda: self._tracker.inflight == 0, self.opts.drain_timeout_s)
        self._producer.flush(5)
        if self._failure is None:
            self._commit_if_due(force=True)
            self._ledger.release()
        else:
            log.error("stopping on failure without committing", error=str(self._failure))
        self._consumer.close()
        log.info("consumer stopped", drained=drained)

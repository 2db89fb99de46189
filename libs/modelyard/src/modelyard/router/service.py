"""The router over Kafka: ingress and reply inbox in, dispatches, results and audit out.

One thread ("modelyard-router") consumes the pipeline's ingress topic and its reply inbox in one
consumer group with the range assignor, so partition p of both belongs to one instance; every
dispatch names ``reply-partition: p``, so a request's replies come back to the instance that
holds its state. Delivery is at least once: an ingress offset is committed only after the
request's result and request audit record are acknowledged, over a gap-free prefix. A router
that dies loses its in-memory flows; their uncommitted ingress messages are redelivered to the
next owner, which routes them again. Replies are de-duplicated by (request id, stage, attempt).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from modelyard.audit import digest_fields
from modelyard.control import ControlState
from modelyard.errors import DeadlineExceededError, ModelyardError, ValidationError
from modelyard.graph.flow import Dispatch, RequestFlow, request_specs
from modelyard.graph.spec import PipelineSpec
from modelyard.kafka.codec import Incoming, decode_message
from modelyard.kafka.commit import commit_finished
from modelyard.kafka.config import consumer_config, producer_config
from modelyard.kafka.delivery import is_permanent
from modelyard.kafka.fetch_health import FetchHealth
from modelyard.kafka.offsets import OffsetTracker, Pending
from modelyard.kafka.poison import PoisonLedger
from modelyard.router.live import Hop, LiveRequest, trace_id_of
from modelyard.router.records import Record, RecordBuilder
from modelyard.telemetry.hooks import Hooks
from modelyard.tensors import InputValidator
from modelyard.topics import (
    audit_topic,
    model_input_topic,
    pipeline_dlq_topic,
    pipeline_inbox_topic,
    pipeline_ingress_topic,
    pipeline_results_topic,
    pipeline_shadow_topic,
    router_group,
)
from modelyard.wire import CONTENT_TYPE_MSGPACK, Envelope, decode_envelope, encode_envelope
from modelyard.wire.headers import H, encode_headers, parse_meta

__all__ = ["PipelineRouter", "RouterOptions", "RoutingSource"]

log = structlog.get_logger("modelyard.router")
_IDLE_FLUSH_S = 0.01  # the longest an idle router waits for acks before it polls again
_ABANDONED = 1 << 62  # acks a poisoned message's first count waits for: never all arrive


class RoutingSource(Protocol):
    """Where the router reads the current routing (a control-topic follower)."""

    @property
    def state(self) -> ControlState: ...


@dataclass(frozen=True)
class RouterOptions:
    bootstrap: str
    prefix: str = "yard"
    default_timeout_s: float = 30.0  # requests without a deadline get this one
    max_timeout_s: float = 600.0  # later deadlines are cut to this: nothing is held for ever
    canary_key: Literal["caller", "request"] = "caller"  # what a sticky canary draw hashes
    max_inflight: int = 4096  # requests being routed before ingress pauses
    max_request_bytes: int = 16 << 20
    poll_timeout_s: float = 0.02
    commit_interval_s: float = 0.2
    drain_timeout_s: float = 30.0
    remember_finished: int = 100_000  # request ids kept to drop redelivered duplicates
    kafka: dict[str, Any] = field(default_factory=dict)
    state_dir: Path | None = None  # partition claims (kafka.poison); None: no crash-loop rule


class PipelineRouter:
    def __init__(
        self,
        spec: PipelineSpec,
        routing: RoutingSource,
        options: RouterOptions,
        hooks: Hooks | None = None,
    ) -> None:
        self.spec, self.routing, self.opts = spec, routing, options
        self.hooks = hooks or Hooks()
        self._ingress = pipeline_ingress_topic(options.prefix, spec.pipeline)
        self._inbox = pipeline_inbox_topic(options.prefix, spec.pipeline)
        self._shadow_topic = pipeline_shadow_topic(options.prefix, spec.pipeline)
        self._validate_inputs = InputValidator(request_specs(spec))  # prepared once
        self._tracker = OffsetTracker()
        self._ledger = PoisonLedger(options.state_dir, router_group(options.prefix, spec.pipeline))
        self._live: dict[str, LiveRequest] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._deadlines: list[tuple[float, str]] = []
        self._undelivered: list[tuple[str, str]] = []  # (request id, why) from delivery callbacks
        self._stop, self._joined = threading.Event(), threading.Event()
        self._failure: BaseException | None = None
        self._paused = False
        self._last_commit = 0.0
        group = router_group(options.prefix, spec.pipeline)
        self.fetch_health = FetchHealth()
        self._consumer = Consumer(
            consumer_config(
                options.bootstrap, group, options.kafka, error_cb=self.fetch_health.on_error,
                **{"partition.assignment.strategy": "range"},  # co-partitions ingress and inbox
            )
        )  # fmt: skip
        self._producer = Producer(producer_config(options.bootstrap, options.kafka))
        self._records = RecordBuilder(spec.pipeline, spec.version, options.prefix)
        # where losing a record loses data: a permanent failure there still stops the router
        self._internal = frozenset((
            pipeline_results_topic(options.prefix, spec.pipeline),
            pipeline_dlq_topic(options.prefix, spec.pipeline), audit_topic(options.prefix),
            self._shadow_topic, self._inbox,
        ))  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="modelyard-router", daemon=True)

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._consumer.subscribe(
            [self._ingress, self._inbox], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop taking requests, let those in flight finish (bounded), commit, close."""
        self._stop.set()
        self._thread.join(self.opts.drain_timeout_s + 10)

    def wait_joined(self, timeout_s: float) -> bool:
        return self._joined.wait(timeout_s)

    @property
    def joined(self) -> bool:
        return self._joined.is_set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    @property
    def inflight(self) -> int:
        return len(self._live)

    def _run(self) -> None:
        log.info("routing", pipeline=self.spec.pipeline, ingress=self._ingress, inbox=self._inbox)
        try:
            while not self._stop.is_set() and self._failure is None:
                self._step()
            self._drain()
        except BaseException as exc:  # reported through .failure
            self._failure = exc
            log.exception("router stopped on failure")
        finally:
            self._close()

    def _step(self) -> None:
        self._apply_backpressure()
        for msg in self._next_messages():
            self._handle(msg)
        self._producer.poll(0)
        self._settle_undelivered()
        self._expire(time.monotonic())
        self._commit_if_due()

    def _next_messages(self) -> Sequence[Message]:
        msgs: list[Message] = self._consumer.consume(500, 0)  # what is queued, no waiting
        if msgs:
            return msgs
        if len(self._producer):  # idle: send what lingers now rather than after linger.ms
            self._producer.flush(_IDLE_FLUSH_S)
        msg = self._consumer.poll(self.opts.poll_timeout_s)
        return [msg] if msg is not None else []

    def _handle(self, msg: Message) -> None:
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", error=str(error))
                if error.fatal():
                    self._failure = KafkaException(error)
            return
        tp, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
        pending = self._tracker.begin(tp, offset)
        deaths = self._ledger.deaths(tp, offset)
        if deaths:
            why = f"the router died {deaths} times while handling this message; not tried again"
            self._poisoned(msg, pending, why)
            return
        self._ledger.begin(tp, offset)  # recorded first while careful (after a crash)
        try:
            if msg.topic() == self._ingress:
                self._on_request(msg, pending)
            else:
                self._on_reply(msg)
                self._tracker.expect(pending, 0)  # a reply's work is done once it is applied
        except Exception as exc:  # no message's content may stop the router: see _poisoned
            log.exception("message failed unexpectedly", offset=offset)
            self._poisoned(msg, pending, f"the router failed on this message: {exc!r}")
        self._ledger.end()

    def _poisoned(self, msg: Message, pending: Pending, why: str) -> None:
        """A message whose handling failed in a way no check foresaw: dead-letter it with its
        original bytes and answer its caller with an ``internal`` error, so the partition moves
        on and a restart does not meet it again (a crash loop)."""
        log.error(
            "dead-lettering a message that fails the router", reason=why,
            topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
        )  # fmt: skip
        self.hooks.dropped("failed unexpectedly")
        error = ModelyardError(why)
        incoming = decode_message(
            msg.key(), msg.value(), msg.headers(), self.opts.max_request_bytes
        )
        live = self._live.get(incoming.request_id or "")
        if live is not None and live.pending is pending:  # admitted by this message: forget it
            del self._live[live.request_id]
            self._remember(live.request_id)
        # what this message held or sent before it failed can no longer finish it: its offset
        # is finished through a fresh count, once the dead letter and error result are acked
        pending.acks = _ABANDONED
        fresh = Pending(pending.tp, pending.offset)
        if msg.topic() == self._ingress:
            self._send_gated(fresh, self._records.rejection(incoming, error))
        else:
            self._send_gated(fresh, [self._records.reply_dead_letter(msg, error)])

    # requests ----------------------------------------------------------------------------
    def _on_request(self, msg: Message, pending: Pending) -> None:
        incoming = decode_message(
            msg.key(), msg.value(), msg.headers(), self.opts.max_request_bytes
        )
        request_id = incoming.request_id
        if request_id and (request_id in self._live or request_id in self._finished):
            self.hooks.dropped("redelivered request")  # the first copy answers (or answered)
            self._tracker.expect(pending, 0)
            return
        live = self._admit(incoming, pending, msg.partition())
        if live is None:
            return
        self._tracker.add(pending, 1)  # held until its result is sent: audit records come first
        self._live[live.request_id] = live
        heapq.heappush(self._deadlines, (live.deadline_at, live.request_id))
        self.hooks.route_started(live)
        self._advance(live)

    def _admit(self, incoming: Incoming, pending: Pending, partition: int) -> LiveRequest | None:
        """The live request, or None after rejecting it (dead letter and error result)."""
        try:
            request = self._request(incoming)
        except ModelyardError as exc:
            self.hooks.dropped(f"rejected request ({exc.code})")
            self._send_gated(pending, self._records.rejection(incoming, exc))
            return None
        sticky = request.caller if self.opts.canary_key == "caller" and request.caller else None
        flow = RequestFlow(self.spec, request, sticky_key=sticky or request.request_id)
        remaining_s = (request.deadline_ms or 0) / 1000 - time.time()
        live = LiveRequest(
            flow,
            incoming,
            pending,
            partition,
            deadline_at=time.monotonic() + remaining_s,
            progress=incoming.meta.progress,
        )
        live.trace_id = trace_id_of(incoming.headers)
        return live

    def _request(self, incoming: Incoming) -> Envelope:
        """The request as the flow takes it: validated fields, this pipeline, a deadline."""
        if incoming.error is not None or incoming.envelope is None:
            raise incoming.error or ValidationError("undecodable request")
        env = incoming.envelope
        if env.pipeline not in (None, self.spec.pipeline):
            raise ValidationError(
                f"request for pipeline {env.pipeline!r} sent to {self.spec.pipeline!r}'s ingress"
            )
        try:
            fields = self._validate_inputs(env.fields)
        except ModelyardError:
            raise
        except Exception as exc:  # e.g. a ragged list numpy cannot make a tensor of
            raise ValidationError(f"fields cannot be read as tensors: {exc}") from exc
        now_ms = int(time.time() * 1000)
        deadline_ms = env.deadline_ms
        if deadline_ms is None:  # 0 is a deadline too: long past
            deadline_ms = now_ms + int(self.opts.default_timeout_s * 1000)
        if deadline_ms <= now_ms:
            raise DeadlineExceededError("the request's deadline had passed when it arrived")
        deadline_ms = min(deadline_ms, now_ms + int(self.opts.max_timeout_s * 1000))
        return Envelope(env.request_id, fields, self.spec.pipeline, None, env.caller, deadline_ms)

    def _advance(self, live: LiveRequest) -> None:
        encoded: dict[str, tuple[bytes, str]] = {}  # a stage and its shadow send the same bytes
        for dispatch in live.flow.advance(self.routing.state):
            self._dispatch(live, dispatch, encoded)
        if live.flow.finished:
            self._finish(live)

    def _dispatch(
        self, live: LiveRequest, dispatch: Dispatch, encoded: dict[str, tuple[bytes, str]]
    ) -> None:
        if dispatch.stage not in encoded:
            encoded[dispatch.stage] = (self._encode(live, dispatch), digest_fields(dispatch.fields))
        value, digest = encoded[dispatch.stage]
        hop = live.hop(dispatch, digest)
        topic = model_input_topic(self.opts.prefix, dispatch.model, dispatch.version)
        if dispatch.shadow:
            self._dispatch_shadow(live, hop, topic, value)
            return
        live.hops[dispatch.stage] = hop
        headers = encode_headers([
            (H.CONTENT_TYPE, CONTENT_TYPE_MSGPACK),
            (H.REPLY_TO, self._inbox),
            (H.REPLY_PARTITION, str(live.partition)),
            (H.ATTEMPT, str(dispatch.attempt)),
            (H.STAGE, dispatch.stage),
        ])  # fmt: skip
        _copy_trace(live.incoming.headers, headers)
        self.hooks.hop_started(live, hop, headers)
        on_delivery = partial(self._dispatched, live.request_id)
        self._produce((topic, live.request_id, value, headers), on_delivery)

    def _encode(self, live: LiveRequest, dispatch: Dispatch) -> bytes:
        request = live.flow.request
        return encode_envelope(Envelope(
            request.request_id, dispatch.fields, self.spec.pipeline, dispatch.stage,
            request.caller, request.deadline_ms,
        ))  # fmt: skip

    def _dispatch_shadow(self, live: LiveRequest, hop: Hop, topic: str, value: bytes) -> None:
        """Send a copy whose reply goes straight to the shadow topic: the router never waits
        for it, reads it or holds state for it, so a shadow cannot slow or fail the request.
        The shadow auditor pairs it with the primary reply the router copies there."""
        live.shadowed[hop.dispatch.stage] = hop
        headers = encode_headers([
            (H.CONTENT_TYPE, CONTENT_TYPE_MSGPACK),
            (H.REPLY_TO, self._shadow_topic),
            (H.ATTEMPT, str(hop.dispatch.attempt)),
            (H.SHADOW, "1"),
            (H.STAGE, hop.dispatch.stage),
        ])  # fmt: skip
        _copy_trace(live.incoming.headers, headers)
        self.hooks.hop_started(live, hop, headers)
        self.hooks.hop_finished(hop, "sent")  # its span marks the send; the stage's nests under it
        self._produce((topic, live.request_id, value, headers))

    def _dispatched(self, request_id: str, error: KafkaError | None, msg: Message) -> None:
        if error is not None:  # handled in the loop: a callback must not produce
            self._undelivered.append((request_id, f"could not send to {msg.topic()}: {error}"))

    def _settle_undelivered(self) -> None:
        while self._undelivered:
            request_id, why = self._undelivered.pop()
            live = self._live.get(request_id)
            if live is not None:
                live.flow.fail("unavailable", why)
                self._finish(live)

    # replies -----------------------------------------------------------------------------
    def _on_reply(self, msg: Message) -> None:
        try:
            reply = decode_envelope(msg.value() or b"")
        except ModelyardError as exc:
            self.hooks.dropped("undecodable reply")
            self._produce(self._records.reply_dead_letter(msg, exc))
            return
        meta = parse_meta(msg.headers())
        # a stage that could not decode what it refused (too large) names the hop in a header
        stage = reply.stage or meta.stage or ""
        if meta.shadow:  # shadows reply to the shadow topic; this one lost its way
            self._produce(self._records.moved_to_shadow(msg))
            return
        live = self._live.get(reply.request_id)
        if live is None or not live.flow.accept(stage, reply, meta.attempt):
            self.hooks.dropped("late or duplicate reply")
            return
        hop = live.hops.pop(stage)
        outcome = reply.error.code if reply.error is not None else "ok"
        self.hooks.hop_finished(hop, outcome)
        self._send_gated(live.pending, [self._records.hop(hop, reply, outcome)])
        progress = self._records.progress(live, msg.value() or b"") if live.progress else None
        if progress is not None:
            self._produce(progress)
        shadow = live.shadowed.pop(stage, None)
        if shadow is not None:  # beside the shadow's reply, for the shadow auditor
            self._produce(self._records.primary_copy(msg, shadow))
        self._advance(live)

    # results, deadlines ------------------------------------------------------------------
    def _finish(self, live: LiveRequest) -> None:
        if self._live.pop(live.request_id, None) is None:
            return  # already finished (a deadline and a failure in the same step)
        for hop in live.hops.values():  # a failed request abandons what is still in flight
            self.hooks.hop_finished(hop, "abandoned")
            self._send_gated(live.pending, [self._records.hop(hop, None, "abandoned")])
        trace: list[tuple[str, bytes]] = []
        _copy_trace(live.incoming.headers, trace)
        self._send_gated(live.pending, self._records.result(live, trace))
        self._tracker.ack(live.pending)  # the hold taken at admission
        self._remember(live.request_id)
        error = live.flow.error
        self.hooks.route_finished(live, error.code if error is not None else "ok")

    def _remember(self, request_id: str) -> None:
        self._finished[request_id] = None
        if len(self._finished) > self.opts.remember_finished:
            self._finished.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, request_id = heapq.heappop(self._deadlines)
            live = self._live.get(request_id)
            if live is not None:
                waiting = ", ".join(sorted(live.hops)) or "nothing"
                live.flow.fail("deadline", f"deadline passed while waiting for {waiting}")
                self._finish(live)

    # Kafka plumbing ----------------------------------------------------------------------
    def _send_gated(self, pending: Pending, records: list[Record]) -> None:
        """Produce ``records``; ``pending``'s offset may be committed once all are acked (and
        nothing else holds it: a routed request's hop records and result both come here)."""
        self._tracker.add(pending, len(records) + 1)  # + a hold: acks may come at once
        for record in records:
            self._produce(record, partial(self._acked, pending))
        self._tracker.ack(pending)  # releases the hold; finishes it now if nothing was sent

    def _acked(self, pending: Pending, error: KafkaError | None, msg: Message) -> None:
        if error is not None and not self._forgiven(error, msg.topic() or ""):
            self._failure = KafkaException(error)  # retried already; committing past it would
            return  # lose it
        self._tracker.ack(pending)

    def _forgiven(self, error: KafkaError, topic: str) -> bool:
        """A permanent failure to send to a topic the caller named (reply-to) is the
        destination's fault, not the message's: logged and counted as sent, never retried."""
        if topic in self._internal or not is_permanent(error):
            return False
        log.warning("result cannot be delivered to reply-to; dropped", topic=topic,
                    error=error.str())  # fmt: skip
        return True

    def _logged(self, error: KafkaError | None, msg: Message) -> None:
        if error is not None:
            log.warning("record not delivered", topic=msg.topic(), error=str(error))

    def _produce(self, record: Record, on_delivery: Any = None, partition: int = -1) -> None:
        topic, key, value, headers = record
        while True:
            try:
                self._producer.produce(
                    topic, value, key, partition=partition,
                    on_delivery=on_delivery or self._logged, headers=headers,
                )  # fmt: skip
                return
            except BufferError:  # local queue full: serve delivery callbacks, then retry
                self._producer.poll(0.05)
            except KafkaException as exc:  # refused before sending: e.g. an invalid topic
                if on_delivery is None or not self._forgiven(exc.args[0], topic):
                    raise
                on_delivery(None, None)  # counted as sent: nothing will ever deliver it
                return

    def _commit_if_due(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < self.opts.commit_interval_s:
            return
        self._last_commit = now
        commit_finished(self._consumer, self._tracker, asynchronous=not force)

    def _apply_backpressure(self) -> None:
        # only the ingress pauses: replies must keep flowing for requests to finish
        over = len(self._live) >= self.opts.max_inflight
        if over != self._paused and (over or len(self._live) <= self.opts.max_inflight // 2):
            ingress = [tp for tp in self._consumer.assignment() if tp.topic == self._ingress]
            (self._consumer.pause if over else self._consumer.resume)(ingress)
            self._paused = over

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._tracker.assign([(tp.topic, tp.partition) for tp in partitions])
        self._ledger.claim([(tp.topic, tp.partition) for tp in partitions])
        if self._paused or self._stop.is_set():
            consumer.pause([tp for tp in partitions if tp.topic == self._ingress])
        self._joined.set()
        log.info("partitions assigned", partitions=sorted({tp.partition for tp in partitions}))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions if tp.topic == self._ingress}
        self._producer.flush(5)  # acks finish what can finish before we give the offsets up
        self._commit_if_due(force=True)
        for live in [lv for lv in self._live.values() if lv.partition in lost]:
            del self._live[live.request_id]  # the new owner routes it again from ingress
            live.flow.fail("revoked", "partition moved to another router")
            self.hooks.route_finished(live, "revoked")
        if self._failure is None:
            self._ledger.release([(tp.topic, tp.partition) for tp in partitions])
        self._tracker.revoke([(tp.topic, tp.partition) for tp in partitions])
        log.info("partitions revoked", partitions=sorted({tp.partition for tp in partitions}))

    def _drain(self) -> None:
        ingress = [tp for tp in self._consumer.assignment() if tp.topic == self._ingress]
        self._consumer.pause(ingress)
        deadline = time.monotonic() + self.opts.drain_timeout_s
        while self._live and time.monotonic() < deadline and self._failure is None:
            self._step()
        log.info("drained", unfinished=len(self._live))

    def _close(self) -> None:
        self._producer.flush(10)
        self._producer.poll(0)
        if self._failure is None:
            self._commit_if_due(force=True)
            self._ledger.release()
        self._consumer.close()
        log.info("router stopped", clean=self._failure is None)


def _copy_trace(source: list[tuple[str, bytes]], target: list[tuple[str, bytes]]) -> None:
    """Pass the producer's trace context on (tracing hooks replace it with the hop's span)."""
    target.extend((n.lower(), v) for n, v in source if n.lower() in (H.TRACEPARENT, H.TRACESTATE))

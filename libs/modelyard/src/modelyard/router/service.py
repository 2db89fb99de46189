"""The router over Kafka: ingress and reply inbox in, dispatches, results and audit out.

The router is a ``Handler`` on the one worker loop (``kafka/worker.py``), which consumes the
pipeline's ingress topic and its reply inbox in one consumer group with the range assignor, so
partition p of both belongs to one instance; every dispatch names ``reply-partition: p``, so a
request's replies come back to the instance that holds its state. Only the ingress pauses
(backpressure, drain): replies keep flowing, since they are what finishes requests.

Delivery is at least once. A request's ticket holds its ingress offset: its result, its request
audit record and the audit records of its hops answer it, together (``Outbox.answer``), so the
offset is committed only once all of them are acknowledged, over a gap-free prefix. Dispatches
are sent unowned: a failed one fails the request (``unavailable``).
A router that dies loses its in-memory flows; their uncommitted ingress messages are redelivered
to the next owner, which routes them again. Replies are de-duplicated by (request id, stage,
attempt); a reply's ticket is answered once it is applied (those of a batch together). Requests
are de-duplicated by id: those in flight, the last ``remember_finished`` finished here, and
(``recall``) those whose results the results topic holds lately, so a request whose result a
dead router emitted but never committed is not answered twice.

Exactly-once (``RouterOptions.exactly_once``): results and audit records are held until their
request's ingress offset is committable and go out in the transaction that commits it
(``kafka/transactions.py``, docs/delivery.md).
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, Message

from modelyard.audit import digest_packed
from modelyard.audit.chain import AuditChain
from modelyard.audit.writer import ChainedAuditClients, writer_id
from modelyard.auth import CallerKeys, verify_request
from modelyard.control import ControlState
from modelyard.errors import DeadlineExceededError, ModelyardError, ValidationError
from modelyard.graph.flow import Dispatch, RequestFlow, request_specs
from modelyard.graph.spec import PipelineSpec
from modelyard.kafka.codec import Incoming, decode_message
from modelyard.kafka.fetch_health import FetchHealth
from modelyard.kafka.handler import Handler, OutRecord, Ticket
from modelyard.kafka.worker import (
    ConfluentClients,
    GroupIntake,
    KafkaClients,
    LoopOptions,
    WorkerLoop,
)
from modelyard.keys import SigningKey
from modelyard.router.live import Hop, LiveRequest, trace_id_of
from modelyard.router.records import RecordBuilder
from modelyard.telemetry.hooks import Hooks
from modelyard.tensors import InputValidator
from modelyard.topics import (
    audit_topic,
    model_input_topic,
    pipeline_inbox_topic,
    pipeline_ingress_topic,
    pipeline_shadow_topic,
    router_group,
)
from modelyard.wire import CONTENT_TYPE_MSGPACK, Envelope, decode_envelope
from modelyard.wire.envelope import encode_envelope_fields, pack_fields, unpack_arrays
from modelyard.wire.headers import H, encode_headers, header_value, parse_meta

__all__ = ["PipelineRouter", "RouterOptions", "RoutingSource"]

log = structlog.get_logger("modelyard.router")
TopicPartition = tuple[str, int]


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
    # the writer key that signs this router's audit checkpoints (None: chained, never signed)
    writer_key: SigningKey | None = None
    checkpoint_every: int = 1000  # audit records per checkpoint, at most
    checkpoint_every_s: float = 5.0  # seconds between checkpoints, at most (when records came)
    # the keys requests must be signed with (auth on); None: callers are who they claim
    callers: CallerKeys | None = None
    # results, audit records and offsets committed in one transaction (docs/delivery.md)
    exactly_once: bool = False
    transactional_id: str | None = None  # exactly-once: stable per instance; None: a slot
    stuck_commit_s: float = 300.0  # a commit blocked longer fails the router (LoopOptions)

    def loop_options(self) -> LoopOptions:
        return LoopOptions(
            bootstrap=self.bootstrap, kafka=self.kafka, state_dir=self.state_dir,
            poll_timeout_s=self.poll_timeout_s, max_inflight=self.max_inflight,
            commit_interval_s=self.commit_interval_s, drain_timeout_s=self.drain_timeout_s,
            exactly_once=self.exactly_once, transactional_id=self.transactional_id,
            stuck_commit_s=self.stuck_commit_s,
        )  # fmt: skip


class PipelineRouter(Handler):
    """Routes one pipeline's requests: ``start()`` runs it on its own worker loop thread."""

    def __init__(
        self,
        spec: PipelineSpec,
        routing: RoutingSource,
        options: RouterOptions,
        hooks: Hooks | None = None,
        *,
        clients: KafkaClients | None = None,
        recall: Callable[[], list[str]] | None = None,
    ) -> None:
        """``recall``: the request ids answered lately (``router.recall``), asked whenever
        ingress partitions are assigned; None: only those this router finished."""
        self.spec, self.routing, self.opts = spec, routing, options
        self._recall = recall
        self.hooks = hooks or Hooks()
        prefix, pipeline = options.prefix, spec.pipeline
        self._ingress = pipeline_ingress_topic(prefix, pipeline)
        self._inbox = pipeline_inbox_topic(prefix, pipeline)
        self._shadow_topic = pipeline_shadow_topic(prefix, pipeline)
        self._validate_inputs = InputValidator(request_specs(spec))  # prepared once
        self._live: dict[str, LiveRequest] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        # exactly-once: requests answered in the open transaction, per ingress partition, as
        # (offset, seen as); forgotten as finished if it aborts or the partition goes first
        self._uncommitted: dict[TopicPartition, list[tuple[int, str]]] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._partitions: set[TopicPartition] = set()
        self._dispatch_headers = encode_headers(
            [(H.CONTENT_TYPE, CONTENT_TYPE_MSGPACK), (H.REPLY_TO, self._inbox)]
        )
        self._records = RecordBuilder(spec, prefix)
        # stages whose outputs a condition reads: their replies' arrays are decoded; the rest
        # pass on to the next stage and the result as the bytes the stage sent
        self._conditioned = frozenset(
            ref[0] for stage in spec.stages.values() if stage.when for ref in stage.when.references
        )
        intake = GroupIntake(
            topics=(self._ingress, self._inbox), group_id=router_group(prefix, pipeline),
            pausable=frozenset((self._ingress,)),  # replies must keep flowing to finish requests
            consumer_overrides={"partition.assignment.strategy": "range"},  # co-partitions both
        )  # fmt: skip
        self.audit_chain = AuditChain(
            writer_id(f"router.{pipeline}"), options.writer_key,
            options.checkpoint_every, options.checkpoint_every_s,
        )  # fmt: skip
        chained = ChainedAuditClients(clients or ConfluentClients(), self.audit_chain,
                                      audit_topic(prefix))  # fmt: skip
        self.loop = WorkerLoop(
            intake, options.loop_options(), hooks=self.hooks, name="router", clients=chained
        )
        super().__init__(self.loop.outbox)

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        log.info("routing", pipeline=self.spec.pipeline, ingress=self._ingress, inbox=self._inbox)
        self.loop.start(self)

    def stop(self) -> None:
        """Stop taking requests, let those in flight finish (bounded), commit, close."""
        self.loop.stop()

    def wait_joined(self, timeout_s: float) -> bool:
        return self.loop.wait_ready(timeout_s)

    def health(self) -> dict[str, bool]:
        """The loop's readiness checks: assigned and working, able to fetch."""
        return self.loop.health()

    @property
    def fetch_health(self) -> FetchHealth:
        return self.loop.fetch_health

    @property
    def running(self) -> bool:
        return self.loop.running

    @property
    def failure(self) -> BaseException | None:
        return self.loop.failure

    @property
    def inflight(self) -> int:
        return len(self._live)

    @property
    def partitions(self) -> set[TopicPartition]:
        """The ingress and inbox partitions this instance holds now."""
        return set(self._partitions)

    # the handler -------------------------------------------------------------------------
    def handle(self, batch: Sequence[Ticket]) -> None:
        ingress, applied = self._ingress, []
        try:
            for ticket in batch:
                try:
                    if ticket.message.topic() == ingress:
                        self._on_request(ticket)
                    elif self._on_reply(ticket):
                        applied.append(ticket)
                except Exception as exc:  # no message's content may stop the router
                    log.exception("message failed unexpectedly", offset=ticket.offset)
                    self._poisoned(ticket, f"the router failed on this message: {exc!r}")
        finally:  # replies applied, with nothing more to send for them: done, in one call
            if applied:
                self.outbox.close(applied)

    def poisoned(self, ticket: Ticket, deaths: int) -> None:
        why = f"the router died {deaths} times while handling this message; not tried again"
        self._poisoned(ticket, why)

    def tick(self, now: float) -> None:
        self._expire(now)

    def assigned(self, tps: Sequence[TopicPartition]) -> None:
        self._partitions.update(tps)
        log.info("partitions assigned", partitions=sorted({p for _, p in tps}))
        if self._recall is not None and any(topic == self._ingress for topic, _ in tps):
            self._recall_answered(self._recall)

    def _recall_answered(self, recall: Callable[[], list[str]]) -> None:
        """Remember the requests answered lately, wherever: their redeliveries are dropped."""
        try:
            answered = recall()
        except KafkaException as exc:  # a weaker de-duplication, not a reason to stop
            log.warning("could not recall the answered requests", error=str(exc))
            return
        for request_id in answered:
            self._remember_id(request_id)
        log.info("recalled answered requests", count=len(answered))

    def rewound(self) -> None:
        """An aborted transaction took the audit records sealed since the last commit: new
        chains under a new writer id, so that no committed record links to an aborted one."""
        self.audit_chain.restart(writer_id(f"router.{self.spec.pipeline}"))
        log.warning("audit chains restarted after an aborted transaction",
                    writer=self.audit_chain.writer)  # fmt: skip

    def revoked(self, tps: Sequence[TopicPartition]) -> None:
        """Forget the requests of ingress partitions taken away: the new owner routes them
        again from the ingress (their offsets were not committed)."""
        lost = set(tps)
        self._partitions.difference_update(lost)
        for live in [lv for lv in self._live.values() if lv.ticket.tp in lost]:
            del self._live[live.request_id]
            live.flow.fail("revoked", "partition moved to another router")
            self.hooks.route_finished(live, "revoked")
        for tp in lost:  # their results went with the transaction: answered again when read
            for _, seen_as in self._uncommitted.pop(tp, ()):
                self._finished.pop(seen_as, None)

    def committed(self, offsets: Sequence[tuple[str, int, int]]) -> None:
        """Requests whose results are committed stay finished for good."""
        for topic, partition, next_offset in offsets:
            held = self._uncommitted.get((topic, partition))
            if held:
                self._uncommitted[(topic, partition)] = [a for a in held if a[0] >= next_offset]

    def _poisoned(self, ticket: Ticket, why: str) -> None:
        """A message whose handling failed in a way no check foresaw: dead-letter it with its
        original bytes and answer its caller with an ``internal`` error, so the partition moves
        on and a restart does not meet it again (a crash loop)."""
        msg = ticket.message
        log.error(
            "dead-lettering a message that fails the router", reason=why,
            topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
        )  # fmt: skip
        self.hooks.dropped("failed unexpectedly")
        error = ModelyardError(why)
        incoming = self._decode(msg)
        live = self._live.get(incoming.request_id or "")
        if live is not None and live.ticket is ticket:  # admitted by this message: forget it
            del self._live[live.request_id]
            self._remember(live)
        if ticket.answered:  # answered before it failed (its result is out): nothing to add
            return
        if msg.topic() == self._ingress:
            records = self._records.rejection(incoming, error)
        else:
            records = [self._records.reply_dead_letter(msg, error)]
        # what it sent before it failed no longer finishes it: these records do
        self.outbox.replace_answer(ticket, records)

    def _decode(self, msg: Message) -> Incoming:
        return decode_message(msg.key(), msg.value(), msg.headers(), self.opts.max_request_bytes)

    # requests ----------------------------------------------------------------------------
    def _on_request(self, ticket: Ticket) -> None:
        incoming = self._decode(ticket.message)
        request_id = incoming.request_id
        seen_as = _seen_as(incoming)
        if request_id and (request_id in self._live or seen_as in self._finished):
            self.hooks.dropped("redelivered request")  # the first copy answers (or answered)
            self.outbox.close([ticket])
            return
        live = self._admit(incoming, ticket)
        if live is None:
            return
        self._live[live.request_id] = live
        heapq.heappush(self._deadlines, (live.deadline_at, live.request_id))
        self.hooks.route_started(live)
        self._advance(live)

    def _admit(self, incoming: Incoming, ticket: Ticket) -> LiveRequest | None:
        """The live request, or None after rejecting it (dead letter and error result)."""
        try:
            auth, request = self._request(incoming)
        except ModelyardError as exc:
            self.hooks.dropped(f"rejected request ({exc.code})")
            self.outbox.answer([ticket], self._records.rejection(incoming, exc))
            return None
        sticky = request.caller if self.opts.canary_key == "caller" and request.caller else None
        flow = RequestFlow(self.spec, request, sticky_key=sticky or request.request_id)
        remaining_s = (request.deadline_ms or 0) / 1000 - time.time()
        live = LiveRequest(
            flow,
            incoming,
            ticket,
            ticket.tp[1],
            deadline_at=time.monotonic() + remaining_s,
            progress=incoming.meta.progress,
            auth=auth,
            seen_as=_seen_as(incoming),
        )
        live.trace_id = trace_id_of(incoming.headers)
        return live

    def _request(self, incoming: Incoming) -> tuple[str, Envelope]:
        """The request as the flow takes it: validated fields, this pipeline, a deadline, the
        caller its signature proves (with how it was proven)."""
        if incoming.error is not None or incoming.envelope is None:
            raise incoming.error or ValidationError("undecodable request")
        env = incoming.envelope
        caller, auth = env.caller, "none"
        if self.opts.callers is not None:  # before anything else is read: nobody's request
            principal = verify_request(
                incoming.headers,
                incoming.value,
                env,
                self.opts.callers,
                pipeline=self.spec.pipeline,
            )
            caller, auth = principal.name, principal.auth
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
        return auth, Envelope(env.request_id, fields, self.spec.pipeline, None, caller, deadline_ms)

    def _advance(self, live: LiveRequest, outputs: _Packed | None = None) -> None:
        """Send what can run now; ``outputs`` are the fields of the reply that moved the flow,
        packed for their digest already (a next stage that takes them unchanged sends them)."""
        encoded: dict[str, _Encoded] = {}  # a stage and its shadow send the same bytes
        for dispatch in live.flow.advance(self.routing.state):
            self._dispatch(live, dispatch, encoded, outputs)
        if live.flow.finished:
            self._finish(live)

    def _dispatch(
        self,
        live: LiveRequest,
        dispatch: Dispatch,
        encoded: dict[str, _Encoded],
        outputs: _Packed | None,
    ) -> None:
        if dispatch.stage not in encoded:
            encoded[dispatch.stage] = self._encode(live, dispatch, outputs)
        value, digest, packed = encoded[dispatch.stage]
        hop = live.hop(dispatch, digest, packed)
        topic = model_input_topic(self.opts.prefix, dispatch.model, dispatch.version)
        if dispatch.shadow:
            self._dispatch_shadow(live, hop, topic, value)
            return
        live.hops[dispatch.stage] = hop
        headers = [
            *self._dispatch_headers,
            (H.REPLY_PARTITION, b"%d" % live.partition),
            (H.ATTEMPT, b"%d" % dispatch.attempt),
            (H.STAGE, dispatch.stage.encode()),
        ]
        _copy_trace(live.incoming.headers, headers)
        self.hooks.hop_started(live, hop, headers)
        record = OutRecord(topic, value, live.request_id, headers)
        self.outbox.send_unowned((record,), self._undelivered)

    def _encode(self, live: LiveRequest, dispatch: Dispatch, outputs: _Packed | None) -> _Encoded:
        """The dispatch's value, its input digest and packed fields, packed once for all:
        a previous stage's outputs taken unchanged are not packed again, and the request's
        fields sent unchanged give the request record its input digest."""
        request = live.flow.request
        if outputs is not None and _same_fields(outputs.fields, dispatch.fields):
            packed, digest = outputs.packed, outputs.digest
        else:
            packed = pack_fields(dispatch.fields)
            digest = digest_packed(packed)
            if live.request_digest is None and _same_fields(request.fields, dispatch.fields):
                live.request_digest = digest
        head = Envelope(
            request.request_id, {}, self.spec.pipeline, dispatch.stage, request.caller,
            request.deadline_ms,
        )  # fmt: skip
        return encode_envelope_fields(head, packed), digest, packed

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
        self.outbox.send_unowned((OutRecord(topic, value, live.request_id, headers),))

    def _undelivered(self, record: OutRecord, error: KafkaError) -> None:
        """A dispatch that could not be sent (on the loop's thread): its request fails."""
        live = self._live.get(record.key) if isinstance(record.key, str) else None
        if live is not None:
            live.flow.fail("unavailable", f"could not send to {record.topic}: {error.str()}")
            self._finish(live)

    # replies -----------------------------------------------------------------------------
    def _on_reply(self, ticket: Ticket) -> bool:
        """Apply a stage reply; True when its ticket is done with nothing more to send."""
        msg = ticket.message
        meta = parse_meta(msg.headers())
        try:
            reply = decode_envelope(msg.value() or b"", arrays=meta.stage in self._conditioned)
        except ModelyardError as exc:
            self.hooks.dropped("undecodable reply")
            self.outbox.answer([ticket], [self._records.reply_dead_letter(msg, exc)])
            return False
        # a stage that could not decode what it refused (too large) names the hop in a header
        stage = reply.stage or meta.stage or ""
        if stage != meta.stage and stage in self._conditioned:  # the header named another
            reply.fields = unpack_arrays(reply.fields)
        if meta.shadow:  # shadows reply to the shadow topic; this one lost its way
            self.outbox.answer([ticket], [self._records.moved_to_shadow(msg)])
            return False
        live = self._live.get(reply.request_id)
        if live is None or not live.flow.accept(stage, reply, meta.attempt):
            self.hooks.dropped("late or duplicate reply")
            return True
        hop = live.hops.pop(stage)
        outcome = reply.error.code if reply.error is not None else "ok"
        self.hooks.hop_finished(hop, outcome)
        outputs = _Packed(reply.fields) if reply.error is None else None
        packed = (outputs.packed, outputs.digest) if outputs is not None else None
        live.finished_hops.append(self._records.hop(hop, reply, outcome, packed))
        progress = self._records.progress(live, msg.value() or b"") if live.progress else None
        if progress is not None:
            self.outbox.send_unowned((progress,))
        shadow = live.shadowed.pop(stage, None)
        self._advance(live, outputs)
        if shadow is None:
            return True
        # done once its copy beside the shadow's reply (for the shadow auditor) is acknowledged
        self.outbox.answer([ticket], (self._records.primary_copy(msg, shadow),))
        return False

    # results, deadlines ------------------------------------------------------------------
    def _finish(self, live: LiveRequest) -> None:
        if self._live.pop(live.request_id, None) is None:
            return  # already finished (a deadline and a failure in the same step)
        records = live.finished_hops
        for hop in live.hops.values():  # a failed request abandons what is still in flight
            self.hooks.hop_finished(hop, "abandoned")
            records.append(self._records.hop(hop, None, "abandoned"))
        trace: list[tuple[str, bytes]] = []
        _copy_trace(live.incoming.headers, trace)
        records += self._records.result(live, trace)
        self._remember(live)
        try:
            self.outbox.answer([live.ticket], records)
        except KafkaException as exc:  # refused before sending (e.g. a result over the limit)
            unsent = ModelyardError(f"the result could not be sent: {exc}")
            self.outbox.replace_answer(live.ticket, self._records.rejection(live.incoming, unsent))
        error = live.flow.error
        self.hooks.route_finished(live, error.code if error is not None else "ok")

    def _remember(self, live: LiveRequest) -> None:
        """``live`` answered: its redeliveries are dropped (exactly-once: until its answer's
        transaction aborts or its partition is revoked before that commits)."""
        if self.opts.exactly_once:
            self._uncommitted.setdefault(live.ticket.tp, []).append(
                (live.ticket.offset, live.seen_as)
            )
        self._remember_id(live.seen_as)

    def _remember_id(self, request_id: str) -> None:
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


_Encoded = tuple[bytes, str, bytes]  # a dispatch's value, its input digest, its packed fields


def _seen_as(incoming: Incoming) -> str:
    """What a request is de-duplicated by: its id, and for a dead letter sent back after a fix
    (``modelyard dlq replay``) the letter it replays too, so it is routed again, once."""
    replay_of = header_value(incoming.headers, H.REPLAY_OF)
    request_id = incoming.request_id or ""
    return f"{request_id}\0{replay_of}" if replay_of else request_id


class _Packed:
    """A stage's output fields packed once, with their digest: the hop record's output digest,
    and the next stage's input when it takes them unchanged (a chain's common case)."""

    __slots__ = ("digest", "fields", "packed")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields, self.packed = fields, pack_fields(fields)
        self.digest = digest_packed(self.packed)


def _same_fields(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether ``a`` and ``b`` pack to the same bytes because they hold the same values under
    the same names in the same order (compared by identity: cheap, and never wrong)."""
    if len(a) != len(b):
        return False
    # a loop, not all() over a generator: this runs per dispatch, and the generator costs more
    for (ka, va), (kb, vb) in zip(a.items(), b.items()):  # noqa: B905, SIM110  # equal lengths
        if va is not vb or ka != kb:
            return False
    return True


def _copy_trace(source: list[tuple[str, bytes]], target: list[tuple[str, bytes]]) -> None:
    """Pass the producer's trace context on (tracing hooks replace it with the hop's span)."""
    if source:
        target.extend((n.lower(), v) for n, v in source if n.lower() in _TRACE_HEADERS)


_TRACE_HEADERS = frozenset((H.TRACEPARENT, H.TRACESTATE))

"""The Kafka side of a stage: a ``Handler`` on the one worker loop (``kafka/worker.py``).

It decodes each consumed message, hands valid ones to the model's batcher and answers every
message with its reply (to the caller's ``reply-to``, else the version's reply topic) and, when
the message is refused, a dead letter holding its original bytes. The loop consumes, pauses,
commits, rebalances, drains and keeps the poison ledger; nothing of that is here.

Threads: ``handle`` runs on the loop's thread; the batcher's inference thread answers a batch
as soon as its outcomes are known (the loop's own thread, when the model ran inline).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog

from modelyard.errors import (
    Disposition,
    ModelError,
    ModelyardError,
    ValidationError,
    policy_for,
)
from modelyard.kafka.codec import Incoming, decode_message, encode_reply, reply_headers
from modelyard.kafka.config import MAX_MESSAGE_BYTES
from modelyard.kafka.delivery import PartitionCounts
from modelyard.kafka.handler import Handler, Outbox, OutRecord, Ticket
from modelyard.model import Outcome
from modelyard.stage.batcher import WorkItem
from modelyard.stage.core import StageCore, outcome_code
from modelyard.telemetry.hooks import RequestContext
from modelyard.topics import model_dlq_topic, model_reply_topic
from modelyard.wire.headers import MessageMeta, dead_letter

__all__ = ["StageHandler"]

log = structlog.get_logger(__name__)

_Answer = tuple[Incoming, Ticket, RequestContext, Outcome]  # a message and what it gets


class StageHandler(Handler):
    """One model version's Kafka intake; ``reply_partitions`` checks a caller's
    ``reply-partition`` against its topic (``WorkerLoop.partitions_of`` looks them up)."""

    runs_after_handle = True  # the batcher answers on its own thread, after handle returns

    def __init__(
        self, outbox: Outbox, core: StageCore, *, prefix: str, reply_partitions: PartitionCounts
    ) -> None:
        super().__init__(outbox)
        self.core, self.hooks = core, core.hooks
        manifest = core.manifest
        self._model, self._version = manifest.name, manifest.version
        self._max_bytes = manifest.limits.max_request_bytes
        # the stage's own dead letters hold the bytes it was sent (by a router, the router's);
        # a router dead-letters its caller's original bytes to the pipeline's DLQ itself
        self._dlq = model_dlq_topic(prefix, self._model, self._version)
        self._reply_topic = model_reply_topic(prefix, self._model, self._version)
        self._reply_partitions = reply_partitions
        self._done = self._on_done  # one object: the batcher hands a batch's outcomes over at once

    # what the loop calls -----------------------------------------------------------------
    def handle(self, batch: Sequence[Ticket]) -> None:
        received_at = time.monotonic()  # consumed together: one clock reading for all of them
        items: list[WorkItem] = []
        refused: list[_Answer] = []
        for ticket in batch:
            try:
                item = self._admit(ticket, received_at, refused)
            except Exception as exc:  # no message's content may stop the worker
                item = None
                refused.append(self._unexpected(ticket, received_at, exc))
            if item is not None:
                items.append(item)
        if refused:  # answered with their errors, before the model runs the rest
            self._answer(refused)
        if items:
            self.core.submit(items)

    def poisoned(self, ticket: Ticket, deaths: int) -> None:
        """Dead-lettered (and its caller answered) without being handled again."""
        received_at = time.monotonic()
        error = ModelyardError(
            f"the stage died {deaths} times while handling this message; not tried again"
        )
        answer: _Answer
        try:
            incoming, request = self._received(ticket, received_at)
            answer = (incoming, ticket, request, error)
        except Exception as exc:
            answer = self._unexpected(ticket, received_at, exc)
        self._answer([answer])

    # intake ------------------------------------------------------------------------------
    def _received(self, ticket: Ticket, received_at: float) -> tuple[Incoming, RequestContext]:
        msg = ticket.message
        incoming = decode_message(msg.key(), msg.value(), msg.headers(), self._max_bytes)
        meta = incoming.meta
        request = RequestContext(
            incoming.request_id or "", "kafka", incoming.headers, meta.shadow, meta.attempt,
            incoming.pipeline, incoming.caller, received_at,
        )  # fmt: skip
        self.hooks.request_received(request)
        return incoming, request

    def _admit(self, ticket: Ticket, received_at: float, refused: list[_Answer]) -> WorkItem | None:
        """The message as work for the model, or None when it is refused (added to
        ``refused``, to be answered with its error)."""
        incoming, request = self._received(ticket, received_at)
        envelope, error = incoming.envelope, incoming.error
        if envelope is not None and error is None:
            try:
                inputs = self.core.validate(envelope.fields)
            except ModelyardError as exc:
                error = exc
            except Exception as exc:  # e.g. a ragged list that numpy cannot make a tensor of
                error = ValidationError(f"fields cannot be read as tensors: {exc}")
            else:
                token = (incoming, ticket)
                return WorkItem(request, inputs, self._done, envelope.deadline_ms, token)
        refused.append((incoming, ticket, request, error or ModelyardError("undecodable")))
        return None

    def _unexpected(self, ticket: Ticket, received_at: float, exc: Exception) -> _Answer:
        """A message whose admission raised what no check foresaw: dead-lettered with its
        original bytes (and answered, when its key names a request), never retried for ever."""
        msg = ticket.message
        log.exception("message failed unexpectedly; dead-lettering it", offset=ticket.offset)
        key = msg.key()
        request_id = key.decode("utf-8", "replace") if key and len(key) <= 255 else None
        headers = [(k, v) for k, v in msg.headers() or [] if v is not None]
        incoming = Incoming(request_id, msg.value() or b"", headers, MessageMeta(),
                            replyable=False, request_id=request_id)  # fmt: skip
        request = RequestContext(request_id or "", "kafka", headers, False, 0, None, None,
                                 received_at)  # fmt: skip
        error = ModelyardError(f"the stage failed on this message: {type(exc).__name__}: {exc}")
        return (incoming, ticket, request, error)

    # outcome -----------------------------------------------------------------------------
    def _on_done(self, items: list[WorkItem], outcomes: list[Outcome]) -> None:
        answers = [(*i.token, i.request, o) for i, o in zip(items, outcomes, strict=True)]
        try:
            self._answer(answers)
        except Exception as exc:  # unanswered, so nothing from them on is committed
            self.outbox.fail(exc)
            raise

    def _answer(self, answers: list[_Answer]) -> None:
        """Answer messages with their replies (and dead letters): they finish together once
        the broker has acknowledged all of those records."""
        answered: list[tuple[Ticket, list[OutRecord]]] = []
        requests, codes = [], []
        for incoming, ticket, request, outcome in answers:
            requests.append(request)
            codes.append(outcome_code(outcome))
            if (
                isinstance(outcome, ModelyardError)
                and policy_for(outcome).disposition is Disposition.STOP
            ):
                self.outbox.fail(outcome)  # never answered: a restart redelivers it
                continue
            try:
                records = self._records_for(incoming, ticket, request, outcome)
            except Exception as exc:  # e.g. a model output the wire cannot carry
                failed = ModelError(f"the reply cannot be encoded: {type(exc).__name__}: {exc}")
                codes[-1] = failed.code
                records = self._records_for(incoming, ticket, request, failed)
            answered.append((ticket, records))
        if answered:  # one delivery countdown for all, or (exactly-once) each with its offset
            self.outbox.answer_each(answered)
        self.hooks.requests_finished(requests, codes, time.monotonic())

    def _records_for(
        self, incoming: Incoming, ticket: Ticket, request: RequestContext, outcome: Outcome
    ) -> list[OutRecord]:
        records = []
        key = incoming.request_id
        if isinstance(outcome, ModelyardError) and policy_for(outcome).disposition in (
            Disposition.DEAD_LETTER,
            Disposition.RETRY,  # the batcher's retries are spent by now
        ):
            value, headers = self._dead_letter(incoming, ticket, request, outcome)
            records.append(OutRecord(self._dlq, value, key, headers))  # losing it stops us
            self.hooks.dead_lettered(request, self._dlq, outcome)
        if key and incoming.replyable:
            value = encode_reply(incoming, outcome, self._model, self._version, incoming.stage)
            headers = reply_headers(incoming)
            self.hooks.inject(request, headers)
            records.append(self._reply(incoming.meta, key, value, headers))
        return records

    def _reply(
        self, meta: MessageMeta, key: str, value: bytes, headers: list[tuple[str, bytes]]
    ) -> OutRecord:
        """A reply whose destination can never take it (a caller's topic that is not there, a
        reply over a topic's size limit) is dropped, never held against the message: replies
        are ``caller_named``, the default reply topic's too."""
        if meta.reply_to:
            partition = self._reply_partitions.partition(meta.reply_to, meta.reply_partition)
            return OutRecord(meta.reply_to, value, key, headers, partition, caller_named=True)
        return OutRecord(self._reply_topic, value, key, headers, caller_named=True)

    def _dead_letter(
        self, incoming: Incoming, ticket: Ticket, request: RequestContext, error: ModelyardError
    ) -> tuple[bytes, list[tuple[str, bytes]]]:
        value, headers = dead_letter(
            incoming.value, incoming.headers, error.message, error.code, source=ticket.tp[0],
            max_bytes=MAX_MESSAGE_BYTES, stage=incoming.stage or incoming.meta.stage or "",
            model=f"{self._model}:{self._version}",
        )  # fmt: skip
        self.hooks.inject(request, headers)
        return value, headers

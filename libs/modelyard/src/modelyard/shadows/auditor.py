"""The shadow auditor: reads a pipeline's shadow topic, writes one hop record per shadow run.

Its own process (``modelyard shadow-audit``; ``modelyard up`` runs one per pipeline at a lower
CPU priority), so pairing and comparing shadow replies costs the router nothing. It is a handler
on the one worker loop (``kafka/worker.py``), in group ``<prefix>.g.p.<pipeline>.shadow-audit``:
each half of a pair is a ticket held until its other half arrives (or its TTL runs out), and both
are answered with the pair's audit record. The loop commits only the gap-free prefix of answered
messages whose records are acknowledged, so a half still waiting holds the commit back; an
auditor that stops, fails, crashes or loses a partition leaves it to be read again, and every
shadow run is recorded at least once (a pair completed after the oldest waiting half is recorded
again after a restart). Each record is also handed to the stage's shadow-disagreement guard,
when one is given (``shadows/guard.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import Message
from prometheus_client import CollectorRegistry, Counter

from modelyard.audit import encode_audit_values
from modelyard.audit.chain import AuditChain
from modelyard.audit.writer import ChainedAuditClients, writer_id
from modelyard.errors import DecodeError
from modelyard.kafka.config import BACKGROUND_CONSUMER, BACKGROUND_PRODUCER
from modelyard.kafka.handler import Handler, Outbox, OutRecord, Ticket
from modelyard.kafka.worker import ConfluentClients, GroupIntake, LoopOptions, WorkerLoop
from modelyard.keys import SigningKey
from modelyard.shadows.guard import ShadowGuard
from modelyard.shadows.pairs import Pair, ShadowPairs, Side, shadow_hop_record
from modelyard.topics import audit_topic, pipeline_shadow_topic
from modelyard.wire import decode_envelope
from modelyard.wire.headers import H

__all__ = ["ShadowAuditor"]

log = structlog.get_logger("modelyard.shadows")

Key = tuple[str, str]  # request id, stage: what pairs two halves
_COMMIT_INTERVAL_S = 1.0  # off the request path: fewer commits
# halves held before intake pauses: a memory bound, far above the worker loop's usual one, since
# a held half waits for a message still to be read (a shadow that never replies holds every
# primary for the TTL), and pausing would only make it wait the whole TTL
_MAX_WAITING = 100_000


class ShadowAuditor:
    """One pipeline's auditor: ``start()`` runs it on its own thread, ``stop()`` ends it."""

    def __init__(
        self,
        bootstrap: str,
        pipeline: str,
        *,
        prefix: str = "yard",
        ttl_s: float = 60.0,
        registry: CollectorRegistry | None = None,
        kafka: Mapping[str, Any] | None = None,
        guard: ShadowGuard | None = None,
        state_dir: Path | None = None,
        max_waiting: int = _MAX_WAITING,
        writer_key: SigningKey | None = None,
        monitored: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """``state_dir``: the poison ledger's partition claims (None: no crash-loop rule);
        ``max_waiting``: halves held before intake pauses; ``writer_key``: signs the
        checkpoints of its audit records' chains (None: chained, never signed);
        ``monitored``: stage -> its spec's ``monitor:`` (what the records observe)."""
        self.pipeline = pipeline
        self._guard = guard
        self._runs = Counter(
            "modelyard_shadow_runs", "Shadow executions audited, by outcome and agreement.",
            ["pipeline", "stage", "model", "version", "outcome", "agrees"],
            registry=registry or CollectorRegistry(),
        )  # fmt: skip
        intake = GroupIntake(
            topics=(pipeline_shadow_topic(prefix, pipeline),),
            group_id=f"{prefix}.g.p.{pipeline}.shadow-audit",
            consumer_overrides=BACKGROUND_CONSUMER,
        )
        # no drain: a half waiting for its other half is left to the next reader, not waited for
        options = LoopOptions(
            bootstrap=bootstrap, kafka=dict(kafka or {}), state_dir=state_dir,
            commit_interval_s=_COMMIT_INTERVAL_S, drain_timeout_s=0.0, max_inflight=max_waiting,
        )  # fmt: skip
        chain = AuditChain(writer_id(f"shadow-audit.{pipeline}"), writer_key)
        self.loop = WorkerLoop(
            intake, options, name="shadow-audit", producer_overrides=BACKGROUND_PRODUCER,
            clients=ChainedAuditClients(ConfluentClients(), chain, audit_topic(prefix)),
        )  # fmt: skip
        self._pairing = _Pairing(
            self.loop.outbox,
            pipeline,
            audit_topic(prefix),
            ShadowPairs(ttl_s),
            self._observe,
            monitored=monitored,
        )

    def start(self) -> None:
        self.loop.start(self._pairing)

    def wait_joined(self, timeout_s: float) -> bool:
        """Wait for the first partition assignment; False on timeout or failure."""
        return self.loop.wait_ready(timeout_s)

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the auditor to end by itself (a failure) or after ``stop()``."""
        return self.loop.join(timeout_s)

    @property
    def waiting(self) -> int:
        """Halves of pairs read and still waiting for their other half."""
        return self._pairing.waiting

    @property
    def running(self) -> bool:
        return self.loop.running

    @property
    def failure(self) -> BaseException | None:
        return self.loop.failure

    def health(self) -> dict[str, bool]:
        """The checks a readiness endpoint serves (``WorkerLoop.health``)."""
        return self.loop.health()

    def stop(self) -> None:
        self.loop.stop()

    def _observe(self, values: Mapping[str, Any]) -> None:
        agrees = values["agrees"]
        labels = (values["stage"], values["model"], values["version"], values["outcome"])
        self._runs.labels(
            self.pipeline, *labels, "-" if agrees is None else str(agrees).lower()
        ).inc()
        if self._guard is not None:
            self._guard.observe(values)


class _Pairing(Handler):
    """Holds each half's ticket until its pair is complete or expires, then answers both with
    the pair's audit record; a message that is not a half is answered with nothing."""

    def __init__(
        self,
        outbox: Outbox,
        pipeline: str,
        audit: str,
        pairs: ShadowPairs,
        observe: Callable[[Mapping[str, Any]], None],
        *,
        monitored: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__(outbox)
        self._pipeline, self._audit, self._pairs, self._observe = pipeline, audit, pairs, observe
        self._monitored = monitored or {}
        self._held: dict[Key, Ticket] = {}  # the ticket of each waiting half

    @property
    def waiting(self) -> int:
        return len(self._pairs)

    def handle(self, batch: Sequence[Ticket]) -> None:
        for ticket in batch:
            self._take(ticket)

    def tick(self, now: float) -> None:
        for pair in self._pairs.expire(now):  # alone past the TTL: recorded as it is
            side = pair.primary or pair.shadow
            key = _key(side.envelope.request_id, side.envelope.stage) if side else None
            held = self._held.pop(key, None) if key else None
            self._record([held] if held is not None else [], pair)

    def revoked(self, tps: Sequence[tuple[str, int]]) -> None:
        """The new owner reads the waiting halves of these partitions again (from the commit,
        which is not past them): forget them here, or they would be recorded as unanswered."""
        gone = {partition for _, partition in tps}
        dropped = self._pairs.drop_partitions(gone)
        self._held = {k: t for k, t in self._held.items() if t.tp[1] not in gone}
        if dropped:
            log.info("partitions revoked; waiting halves left to their new owner", count=dropped)

    def _take(self, ticket: Ticket) -> None:
        got = _half(ticket.message)
        if got is None:
            self.outbox.close([ticket])
            return
        key, role, side = got
        pair = self._pairs.add(key, role, side)
        held = self._held.pop(key, None)
        if pair is None:  # waits for its other half; a redelivered copy replaces the one held
            if held is not None:
                self.outbox.close([held])
            self._held[key] = ticket
            return
        self._record([ticket] if held is None else [held, ticket], pair)

    def _record(self, tickets: list[Ticket], pair: Pair) -> None:
        values = shadow_hop_record(self._pipeline, pair, self._monitored)
        if values is None:
            self.outbox.close(tickets)
            return
        record = OutRecord(self._audit, encode_audit_values("hop", values), values["request_id"])
        self.outbox.answer(tickets, [record])
        self._observe(values)


def _half(msg: Message) -> tuple[Key, str, Side] | None:
    """The pair key, role and side of a reply on the shadow topic; None for anything else."""
    headers = {k: v.decode("utf-8", "replace") for k, v in msg.headers() or [] if v is not None}
    try:
        envelope = decode_envelope(msg.value() or b"")
    except DecodeError as exc:
        log.warning("undecodable record on the shadow topic", error=exc.message)
        return None
    role = "shadow" if headers.get(H.SHADOW) == "1" else headers.get(H.SHADOW_ROLE, "")
    if role not in ("primary", "shadow"):
        return None
    side = Side(
        envelope, headers, msg.timestamp()[1] / 1000,
        partition=msg.partition() or 0, offset=msg.offset() or 0,
    )  # fmt: skip
    return _key(envelope.request_id, envelope.stage), role, side


def _key(request_id: str, stage: str | None) -> Key:
    return request_id, stage or ""

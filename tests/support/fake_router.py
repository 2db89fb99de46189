"""A test-only stand-in for the router, speaking the client contract of docs/router-api.md.

A real Kafka consumer on the pipeline's ingress topic answers each request: stage ``upper``
(``upper:1``, plus a shadow copy on ``upper:2``) upper-cases the first input's elements, stage
``length`` (``length:2``) counts their bytes. With ``progress: 1`` each stage reply goes to
``reply-to`` first (``event: stage``); the result goes to ``.out`` and ``reply-to``
(``event: result``); hop and request records go to the audit topic before the result.

The first element of the first input steers it: ``boom`` fails stage ``length`` (code
``model``), ``invalid`` fails the request before any stage (``validation``), ``silent`` gets no
answer at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from modelyard.audit import HopRecord, RequestRecord, digest_fields, encode_audit, utc
from modelyard.broker import create_topics
from modelyard.tensors import as_tensor, bytes_items
from modelyard.topics import audit_topic, pipeline_ingress_topic, pipeline_results_topic
from modelyard.wire import Envelope, ErrorInfo, decode_envelope, encode_envelope
from modelyard.wire.headers import H, header_value

__all__ = ["FakeRouter", "Seen", "running_fake_router"]

SERVED_BY = {"upper": "upper:1", "length": "length:2"}


@dataclass(frozen=True)
class Seen:
    """One request as the fake router received it."""

    envelope: Envelope
    headers: dict[str, str]


@dataclass
class FakeRouter:
    bootstrap: str
    prefix: str
    pipeline: str
    seen: list[Seen] = field(default_factory=list)
    crashed: Exception | None = None

    def __post_init__(self) -> None:
        self.ingress = pipeline_ingress_topic(self.prefix, self.pipeline)
        self.results = pipeline_results_topic(self.prefix, self.pipeline)
        self.audit = audit_topic(self.prefix)
        create_topics(self.bootstrap, [self.ingress, self.results, self.audit])
        base = {"bootstrap.servers": self.bootstrap, "log.connection.close": False}
        self._producer = Producer({**base, "linger.ms": 1})
        self._consumer = Consumer(
            {**base, "group.id": f"fake-{self.ingress}", "fetch.wait.max.ms": 10}
        )
        self._consumer.assign([TopicPartition(self.ingress, 0, 0)])  # a fresh topic: from 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-router")
        self._thread.start()

    def close(self) -> None:
        """Stop; re-raise what broke the answering thread, if anything did."""
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()
        self._producer.flush(5)
        if self.crashed is not None:
            raise self.crashed

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.05)
            if msg is None or msg.error() is not None:
                continue
            try:
                self._answer(msg)
            except Exception as exc:  # reported by close(), so the test fails with the cause
                self.crashed = exc
                return

    def _answer(self, msg: Message) -> None:
        request = decode_envelope(msg.value())
        headers = {k: v.decode() for k, v in msg.headers() or [] if v is not None}
        self.seen.append(Seen(request, headers))
        items = _items(request)
        if items[:1] == [b"silent"]:
            return
        started = time.time()
        stages, result = _walk(request, items)
        self._audit(request, headers, stages, result, started)
        reply_to = header_value(msg.headers(), H.REPLY_TO)
        if reply_to and header_value(msg.headers(), H.PROGRESS) == "1":
            for stage in stages:
                self._send(reply_to, stage, "stage")
        for topic in (self.results, reply_to):
            if topic:
                self._send(topic, result, "result")
        self._producer.flush(10)

    def _send(self, topic: str, envelope: Envelope, event: str) -> None:
        headers = [(H.EVENT, event.encode())]
        value = encode_envelope(envelope)
        self._producer.produce(topic, value, envelope.request_id, headers=headers)

    def _audit(
        self,
        request: Envelope,
        headers: dict[str, str],
        stages: list[Envelope],
        result: Envelope,
        started: float,
    ) -> None:
        trace_id = headers.get(H.TRACEPARENT, "00-x-y-01").split("-")[1]
        common = {"request_id": request.request_id, "pipeline": self.pipeline,
                  "caller": request.caller, "trace_id": trace_id}  # fmt: skip
        hops = [_hop(common, s, started + k * 0.010, shadow=False) for k, s in enumerate(stages)]
        if stages:  # the shadow copy of the first stage, a little slower than its primary
            hops.append(_hop(common, stages[0], started + 0.001, shadow=True))
        record = RequestRecord(
            **common,
            outcome=result.error.code if result.error else "ok",
            error=result.error.message if result.error else None,
            spec_version=1,
            received_at=utc(started),
            finished_at=utc(started + 0.025),
            latency_ms=25.0,
            served_by=dict(result.served_by or {}),
            input_digest=digest_fields(request.fields),
        )
        for rec in [*hops, record]:  # audit before the result: `trace` right after sees it all
            self._producer.produce(self.audit, encode_audit(rec), request.request_id)
        self._producer.flush(10)


def _items(request: Envelope) -> list[bytes]:
    if not request.fields:
        return []
    first = as_tensor(next(iter(request.fields.values())))
    return bytes_items(first.reshape(-1).tolist()) if first.dtype == object else []


def _walk(request: Envelope, items: list[bytes]) -> tuple[list[Envelope], Envelope]:
    """The stage replies and the final result of ``request``."""

    def result(fields: dict[str, Any], served: dict[str, str], error: ErrorInfo | None) -> Envelope:
        return Envelope(request.request_id, fields, pipeline=request.pipeline,
                        caller=request.caller, error=error, served_by=served)  # fmt: skip

    if items[:1] == [b"invalid"]:
        return [], result({}, {}, ErrorInfo("validation", "the request is invalid", None))
    upper = _array([i.upper() for i in items])
    stages = [_stage(request, "upper", {"upper": upper})]
    if items[:1] == [b"boom"]:
        error = ErrorInfo("model", "length cannot count 'boom'", "length")
        stages.append(_stage(request, "length", {}, error))
        return stages, result({"upper": upper}, {"upper": "upper:1", "length": "length:2"}, error)
    length = np.array([len(i) for i in items], dtype=np.int64)
    stages.append(_stage(request, "length", {"length": length}))
    return stages, result({"upper": upper, "length": length}, dict(SERVED_BY), None)


def _stage(
    request: Envelope, stage: str, fields: dict[str, Any], error: ErrorInfo | None = None
) -> Envelope:
    model, version = SERVED_BY[stage].split(":")
    staged = Envelope(request.request_id, {}, pipeline=request.pipeline, stage=stage)
    return staged.reply(fields, model, version, error)


def _hop(common: dict[str, Any], stage: Envelope, start: float, *, shadow: bool) -> HopRecord:
    assert stage.stage is not None
    version = "2" if shadow else stage.version or ""
    latency = 12.0 if shadow else 8.0
    return HopRecord(
        **common,
        outcome=stage.error.code if stage.error else "ok",
        error=stage.error.message if stage.error else None,
        stage=stage.stage,
        model=stage.model or "",
        version=version,
        role="shadow" if shadow else "active",
        shadow=shadow,
        dispatched_at=utc(start),
        finished_at=utc(start + latency / 1000),
        latency_ms=latency,
        input_digest="0" * 64,
    )


def _array(items: list[bytes]) -> np.ndarray[Any, Any]:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


@contextmanager
def running_fake_router(bootstrap: str, prefix: str, pipeline: str) -> Iterator[FakeRouter]:
    router = FakeRouter(bootstrap, prefix, pipeline)
    try:
        yield router
    finally:
        router.close()

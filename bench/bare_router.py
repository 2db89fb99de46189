"""A bare router: the Kafka calls modelyard's router makes for a chain of stages, and little else.

The baseline for the router bursts in ``bench.router_bench``. It is a plain confluent-kafka
program, run as its own process like ``modelyard router``, against the same ``modelyard serve``
workers, topics and client settings. Per request it makes the same Kafka calls the real router
makes for a pipeline of k no-op stages (k = 2 in the bench):

- consume the request from the pipeline's ingress topic;
- per stage: produce a dispatch to the stage's topic (the same five headers: content type,
  reply-to the router's inbox, reply-partition, attempt, stage), consume the stage's reply from
  the inbox, produce one JSON audit record of the hop to the audit topic (~500 bytes);
- produce the result to the results topic and one JSON audit record of the request (~400 bytes).

So 1 + k consumes and 2k + 2 produces per request, as the real router (which adds a reply-to copy
or progress records only when the caller asks; the bench's requests do not). Routing is by the
``stage`` header the stage echoes on its reply. Dispatches are re-packed with plain msgpack
(arrays stay opaque extension bytes): the one field of the previous message becomes the next
stage's ``x``, with the pipeline, stage and deadline the real router adds, so the workers see
envelopes of the same shape and size. None of modelyard's decoding, validation, flow, dedup,
deadlines, tracing or metrics; offsets are committed every 200 ms (the router's interval), each
ingress partition up to its latest finished request: not gap-free, a baseline, not a router.

    python -m bench.bare_router --bootstrap HOST:PORT --prefix P --pipeline NAME \
        --stage s0=noop:1 --stage s1=noop:1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
import time
from typing import Any

import msgpack
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from modelyard.broker import ensure_pipeline_topics
from modelyard.kafka.config import consumer_config, producer_config
from modelyard.topics import (
    audit_topic,
    model_input_topic,
    pipeline_inbox_topic,
    pipeline_ingress_topic,
    pipeline_results_topic,
    router_group,
)

__all__ = ["BareRouter"]

CONTENT_TYPE = b"application/vnd.modelyard.envelope+msgpack"
COMMIT_INTERVAL_S = 0.2  # the real router's commit_interval_s
TIMEOUT_MS = 30_000  # the real router's default deadline, carried in dispatches as it does
PARTITIONS = 4  # of the pipeline topics it creates when missing, as `router --partitions 4`


class BareRouter:
    def __init__(self, bootstrap: str, prefix: str, pipeline: str, stages: list[tuple[str, str]]):
        self.pipeline = pipeline
        names = [name for name, _ in stages]
        self.first = names[0]
        self.next = dict(zip(names, [*names[1:], None], strict=True))  # the chain, fixed at start
        self.served_by = dict(stages)  # stage -> "model:version"
        self.model = {name: model.split(":", 1) for name, model in stages}  # [model, version]
        self.topic = {name: model_input_topic(prefix, *mv) for name, mv in self.model.items()}
        self.ingress = pipeline_ingress_topic(prefix, pipeline)
        self.inbox = pipeline_inbox_topic(prefix, pipeline)
        self.results = pipeline_results_topic(prefix, pipeline)
        self.audit = audit_topic(prefix)
        ensure_pipeline_topics(bootstrap, prefix, pipeline, PARTITIONS)  # the router's own helper
        # the real router's settings: range assignment co-partitions ingress and inbox
        self.consumer = Consumer(consumer_config(
            bootstrap, router_group(prefix, pipeline), None,
            **{"partition.assignment.strategy": "range"},
        ))  # fmt: skip
        self.producer = Producer(producer_config(bootstrap, on_delivery=self._delivered))
        # request key -> [received at, ingress partition, ingress offset, last dispatched at]
        self.inflight: dict[bytes, list[Any]] = {}
        self.positions: dict[tuple[str, int], int] = {}  # what the next commit may name
        self.joined = threading.Event()
        self.stop = threading.Event()
        self.failed = 0

    def run(self) -> None:
        self.consumer.subscribe([self.ingress, self.inbox], on_assign=lambda *_: self.joined.set())
        last_commit = 0.0
        try:
            while not self.stop.is_set():
                for msg in self._next_messages():
                    if msg.error() is not None:
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            print(f"consumer error: {msg.error()}", file=sys.stderr)
                    elif msg.topic() == self.ingress:
                        self._on_request(msg)
                    else:
                        self._on_reply(msg)
                self.producer.poll(0)  # delivery reports
                if (now := time.monotonic()) - last_commit >= COMMIT_INTERVAL_S:
                    last_commit = now
                    self._commit()
        finally:
            self.producer.flush(10)
            self._commit()
            self.consumer.close()

    def _next_messages(self) -> list[Message]:
        # the real router's loop: drain without waiting; when idle, send what lingers, then wait
        msgs: list[Message] = self.consumer.consume(500, 0)
        if msgs:
            return msgs
        if len(self.producer):
            self.producer.flush(0.01)
        msg = self.consumer.poll(0.02)
        return [msg] if msg is not None else []

    def _on_request(self, msg: Message) -> None:
        key, now = msg.key() or b"", time.time()
        partition = msg.partition() or 0
        self.inflight[key] = [now, partition, msg.offset() or 0, now]
        self._dispatch(key, msg.value() or b"", self.first, partition, now)

    def _on_reply(self, msg: Message) -> None:
        self.positions[(self.inbox, msg.partition() or 0)] = (msg.offset() or 0) + 1
        stage = next((v.decode() for k, v in msg.headers() or () if k == "stage" and v), None)
        key, value = msg.key() or b"", msg.value() or b""
        state = self.inflight.get(key)
        if state is None or stage not in self.next:
            return  # a late or foreign reply: nothing to route
        received, partition, offset, dispatched = state
        (model, version), following = self.model[stage], self.next[stage]
        now, digest = time.time(), hashlib.sha256(value).hexdigest()
        # the audit records carry the real ones' fields (digests: stand-ins of the same length)
        self._audit(key, {
            "schema": 1, "kind": "hop", "request_id": key.decode(), "pipeline": self.pipeline,
            "caller": None, "trace_id": None, "outcome": "ok", "error": None, "stage": stage,
            "model": model, "version": version, "role": "active", "shadow": False,
            "attempt": 0, "dispatched_at": dispatched, "finished_at": now,
            "latency_ms": (now - dispatched) * 1000, "input_digest": digest,
            "output_digest": digest,
        })  # fmt: skip
        if following is not None:
            state[3] = now
            self._dispatch(key, value, following, partition, received)
            return
        del self.inflight[key]
        headers = [("event", b"result"), ("content-type", CONTENT_TYPE)]
        self._produce(self.results, key, value, headers)  # the last reply is the result
        self._audit(key, {
            "schema": 1, "kind": "request", "request_id": key.decode(), "pipeline": self.pipeline,
            "caller": None, "trace_id": None, "outcome": "ok", "error": None, "spec_version": 1,
            "received_at": received, "finished_at": now, "latency_ms": (now - received) * 1000,
            "served_by": self.served_by, "skipped": [], "input_digest": digest,
        })  # fmt: skip
        self.positions[(self.ingress, partition)] = offset + 1

    def _dispatch(
        self, key: bytes, value: bytes, stage: str, partition: int, received: float
    ) -> None:
        body = msgpack.unpackb(value, raw=False)  # arrays stay msgpack ExtType bytes
        (tensor,) = body["fields"].values()  # a chain: the previous message's one field
        envelope = {
            "v": 1, "id": body["id"], "fields": {"x": tensor}, "pipeline": self.pipeline,
            "stage": stage, "deadline": int(received * 1000) + TIMEOUT_MS,
        }  # fmt: skip
        headers = [
            ("content-type", CONTENT_TYPE), ("reply-to", self.inbox.encode()),
            ("reply-partition", str(partition).encode()), ("attempt", b"0"),
            ("stage", stage.encode()),
        ]  # fmt: skip
        self._produce(self.topic[stage], key, msgpack.packb(envelope), headers)

    def _audit(self, key: bytes, record: dict[str, Any]) -> None:
        self._produce(self.audit, key, json.dumps(record, separators=(",", ":")).encode(), None)

    def _produce(self, topic: str, key: bytes, value: bytes, headers: Any) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:  # local queue full: serve delivery reports, then retry
                self.producer.poll(0.05)

    def _delivered(self, error: KafkaError | None, msg: Message) -> None:
        if error is not None:
            self.failed += 1
            print(f"not delivered to {msg.topic()}: {error}", file=sys.stderr)

    def _commit(self) -> None:
        if self.positions:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self.positions.items()]
            self.positions = {}
            self.consumer.commit(offsets=offsets, asynchronous=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="a bare Kafka router (benchmark baseline)")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--stage", action="append", required=True, metavar="NAME=MODEL:VERSION")
    args = parser.parse_args()
    stages = [(name, model) for name, _, model in (s.partition("=") for s in args.stage)]
    router = BareRouter(args.bootstrap, args.prefix, args.pipeline, stages)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: router.stop.set())
    thread = threading.Thread(target=router.run, name="bare-router")
    thread.start()
    while not router.joined.wait(0.1):  # ready once it holds its partitions, as the router
        if not thread.is_alive():
            sys.exit(1)
    print(f"bare router ready pipeline={args.pipeline}", flush=True)
    thread.join()
    sys.exit(1 if router.failed else 0)


if __name__ == "__main__":
    main()

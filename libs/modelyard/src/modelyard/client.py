"""A small request/reply client for stages and pipelines over Kafka (CLI, demo, tests).

It owns one private reply topic, read with ``assign()`` so no group join delays the first reply,
and matches replies to requests by key (the request id). Given a caller key it signs every
request that names a pipeline (docs/wire-format.md, "Signing a request"), as a router with auth
on requires. gRPC callers present a bearer token with ``bearer_metadata(token)`` as a call's
``metadata``.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from modelyard.audit import digest_packed
from modelyard.auth import CallerKey, bearer_metadata, sign_request
from modelyard.broker import create_topics
from modelyard.errors import PayloadTooLargeError
from modelyard.kafka.config import MAX_MESSAGE_BYTES, RECEIVE_MAX_BYTES
from modelyard.wire import Envelope, decode_envelope
from modelyard.wire.envelope import encode_envelope_fields, pack_fields
from modelyard.wire.headers import H

__all__ = ["StageClient", "bearer_metadata"]


class StageClient:
    def __init__(
        self,
        bootstrap: str,
        *,
        reply_topic: str | None = None,
        kafka: Mapping[str, Any] | None = None,
        signing_key: CallerKey | None = None,
    ):
        self.signing_key = signing_key
        self.reply_topic = reply_topic or f"yard.client.{uuid.uuid4().hex[:12]}"
        create_topics(bootstrap, [self.reply_topic], kafka=kafka)
        base = {"bootstrap.servers": bootstrap, "log.connection.close": False, **(kafka or {})}
        self._producer = Producer({**base, "linger.ms": 1, "message.max.bytes": MAX_MESSAGE_BYTES})
        self._consumer = Consumer(
            {
                **base,
                "group.id": self.reply_topic,
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "receive.message.max.bytes": RECEIVE_MAX_BYTES,
            }
        )
        self._consumer.assign([TopicPartition(self.reply_topic, 0, 0)])
        self._early: dict[str, Envelope] = {}

    def send(
        self, topic: str, envelope: Envelope, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        all_headers = [(H.REPLY_TO, self.reply_topic.encode()), *(headers or [])]
        value, signature = self._encode(envelope)
        all_headers += signature
        try:
            self._producer.produce(topic, value, envelope.request_id, headers=all_headers)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                raise PayloadTooLargeError(
                    f"request is {len(value)} bytes; Kafka records are limited to "
                    f"{MAX_MESSAGE_BYTES}"
                ) from None
            raise
        self._producer.flush(10)

    def _encode(self, envelope: Envelope) -> tuple[bytes, list[tuple[str, bytes]]]:
        """The envelope's bytes and, with a key and a pipeline, the headers that sign it."""
        packed = pack_fields(envelope.fields)  # once: sent as is and hashed for the signature
        key, pipeline = self.signing_key, envelope.pipeline
        if key is None or pipeline is None:
            return encode_envelope_fields(envelope, packed), []
        if envelope.caller is None:  # the signature covers the caller the envelope names
            envelope = dataclasses.replace(envelope, caller=key.principal)
        headers = sign_request(
            key, envelope.request_id, pipeline, envelope.deadline_ms,
            digest_packed(packed), caller=envelope.caller,
        )  # fmt: skip
        return encode_envelope_fields(envelope, packed), headers

    def wait(self, request_id: str, timeout: float = 60) -> Envelope:
        """The reply to ``request_id``; replies to other requests are kept for later calls."""
        deadline = time.monotonic() + timeout
        while request_id not in self._early:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to {request_id} within {timeout:.0f}s")
            msg = self._consumer.poll(0.1)
            if msg is not None and msg.error() is None and msg.key() is not None:
                self._early[msg.key().decode()] = decode_envelope(msg.value())
        return self._early.pop(request_id)

    def call(
        self,
        topic: str,
        envelope: Envelope,
        headers: list[tuple[str, bytes]] | None = None,
        timeout: float = 60,
    ) -> Envelope:
        self.send(topic, envelope, headers)
        return self.wait(envelope.request_id, timeout)

    def close(self) -> None:
        self._consumer.close()
        self._producer.flush(5)

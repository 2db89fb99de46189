"""Realistic audit records for the store, sink and verify tests: what a router produces (its
encoders, captured payloads, sealed by a real ``AuditChain``, checkpoints signed by a real key).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from modelyard.audit.capture import encode_payload
from modelyard.audit.chain import AuditChain
from modelyard.audit.records import encode_hop_record, encode_request_record
from modelyard.keys import Keyring, SigningKey
from modelyard.wire.envelope import pack_fields

__all__ = ["Produced", "RecordMaker", "writer_keyring"]


def writer_keyring(key: SigningKey) -> Keyring:
    """A keyring that trusts ``key`` as a writer (the role that signs checkpoints)."""
    return Keyring([key.public_entry("writer")])


@dataclass
class Produced:
    """The values a writer produced to one partition, in order, and which are checkpoints."""

    values: list[bytes] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)


@dataclass
class RecordMaker:
    """Makes one request's records (a hop of stage ``sentiment`` and the request), sealed."""

    chain: AuditChain
    pipeline: str = "docs"
    principal: str = "alice"
    start: float = field(default_factory=time.time)

    def request(self, partition: int, request_id: str, *, text: str = "hello") -> list[bytes]:
        """[hop, request] and a checkpoint when one is due, sealed for ``partition``."""
        t = self.start
        self.start += 0.001
        fields = {"text": text}
        packed = pack_fields(fields)
        result = pack_fields({"label": "pos" if "good" in text else "neg"})
        input_ = encode_payload(packed, fields, keep=True, max_bytes=1 << 20)
        output = encode_payload(result, keep=True, max_bytes=1 << 20)
        hop = encode_hop_record(
            request_id=request_id, pipeline=self.pipeline, caller=self.principal,
            trace_id="0" * 32, outcome="ok", error=None, stage="sentiment", model="sentiment",
            version="2", role="active", shadow=False, attempt=0, span_id="1" * 16,
            dispatched_at=t, finished_at=t + 0.004, latency_ms=4.0,
            input_digest=_digest(packed), output_digest=_digest(result),
            input=input_, output=output,
        )  # fmt: skip
        request = encode_request_record(
            request_id=request_id, pipeline=self.pipeline, caller=self.principal,
            trace_id="0" * 32, outcome="ok", error=None, spec_version=1, received_at=t,
            finished_at=t + 0.005, latency_ms=5.0, served_by={"sentiment": "sentiment:2"},
            skipped=[], input_digest=_digest(packed), principal=self.principal, auth="token",
            result=output,
        )  # fmt: skip
        values = [self.chain.seal(partition, hop), self.chain.seal(partition, request)]
        if self.chain.checkpoint_due(partition):
            checkpoint = self.chain.checkpoint(partition)
            assert checkpoint is not None
            values.append(checkpoint)
        return values

    def many(self, partition: int, count: int, prefix: str = "r") -> Produced:
        produced = Produced()
        for i in range(count):
            request_id = f"{prefix}{i}"
            produced.values.extend(self.request(partition, request_id))
            produced.request_ids.append(request_id)
        return produced


def _digest(packed: bytes) -> str:
    import hashlib  # noqa: PLC0415

    return hashlib.sha256(packed).hexdigest()

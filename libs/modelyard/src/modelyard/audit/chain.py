"""Hash chains over audit records, with signed checkpoints: what makes the audit trail
tamper-evident.

Each writer (one router or auditor process run) keeps one chain per audit partition. Sealing a
record inserts ``"chain": {"writer", "partition", "seq", "prev"}`` into its JSON, where ``prev``
is the sha256 of the previous sealed record's exact bytes in that chain ("0" * 64 for seq 0);
the hash of a record is the sha256 of the bytes produced. Every ``every_records`` records or
``every_s`` seconds the writer produces a checkpoint to the same partition: the chain's head
(seq and hash) signed with its Ed25519 key, so a store that lost, changed, added or reordered a
record can no longer show a chain that ends in a signed head (``modelyard audit verify``).

The sealed record is the record's JSON with the chain object appended as its last key: the
router's bytes are extended, never re-encoded.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelyard.keys import canonical_json

if TYPE_CHECKING:
    from modelyard.keys import SigningKey

__all__ = [
    "GENESIS",
    "AuditChain",
    "checkpoint_payload",
    "record_hash",
]

GENESIS = "0" * 64  # the ``prev`` of a chain's first record
# a record with its link appended as the last key: its bytes extended, never re-encoded
_SEALED = b'%s,"chain":{"writer":%s,"partition":%d,"seq":%d,"prev":"%s"}}'
_PREFIX = b'{"schema":1,'


def record_hash(value: bytes) -> str:
    """The hash a chain links by: sha256 of a record's exact bytes, as hex."""
    return hashlib.sha256(value).hexdigest()


def checkpoint_payload(writer: str, partition: int, seq: int, head: str, at: str) -> bytes:
    """The bytes a checkpoint's signature covers (``canonical_json`` of its five facts)."""
    return canonical_json(
        {"writer": writer, "partition": partition, "seq": seq, "head": head, "at": at}
    )


@dataclass
class _Head:
    """One (writer, partition) chain: the next seq, the last hash, what is not checkpointed."""

    seq: int = 0
    prev: str = GENESIS
    prev_bytes: bytes = GENESIS.encode()  # ``prev`` as the record carries it
    unsigned: int = 0  # records sealed since the last checkpoint
    since: float = 0.0  # monotonic time of the last checkpoint (or of the chain's start)


class AuditChain:
    """One writer's chains, one per audit partition; thread-safe.

    ``seal`` each record right before producing it to ``partition``, in the order they are
    produced; call ``checkpoint`` when ``checkpoint_due`` says so and produce its value to the
    same partition. Without a signing key records are still chained, but never checkpointed
    (``verify`` reports them all as an unsigned tail).
    """

    def __init__(
        self,
        writer: str,
        signing_key: SigningKey | None,
        every_records: int = 1000,
        every_s: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_records < 1 or every_s <= 0:
            raise ValueError("every_records must be >= 1 and every_s > 0")
        self.writer = writer
        self._key, self._every_records, self._every_s = signing_key, every_records, every_s
        self._clock = clock
        self._heads: dict[int, _Head] = {}
        self._lock = threading.Lock()
        self._writer_bytes = json.dumps(writer, ensure_ascii=False).encode()

    def seal(self, partition: int, value: bytes) -> bytes:
        """``value`` (a record's JSON, ``{"schema":1,...}``) with its chain link inserted: the
        exact bytes to produce. Advances the partition's chain head."""
        return self.seal_due(partition, value)[0]

    def seal_due(self, partition: int, value: bytes) -> tuple[bytes, bool]:
        """``seal``, and whether a checkpoint of the partition is due now (one lock for both:
        the router seals several records per request)."""
        if not value.startswith(_PREFIX) or value[-1:] != b"}":
            raise ValueError('an audit record must be a JSON object starting {"schema":1,')
        with self._lock:
            head = self._heads.get(partition) or self._head(partition)
            link = (value[:-1], self._writer_bytes, partition, head.seq, head.prev_bytes)
            sealed = _SEALED % link
            digest = hashlib.sha256(sealed).hexdigest()
            head.seq, head.prev, head.prev_bytes = head.seq + 1, digest, digest.encode()
            head.unsigned += 1
            due = self._key is not None and (
                head.unsigned >= self._every_records or self._clock() - head.since >= self._every_s
            )
        return sealed, due

    def restart(self, writer: str) -> None:
        """Begin new chains as ``writer``: the records sealed lately were aborted (an
        exactly-once transaction), so the old chains end at their last committed record (an
        unsigned tail after their last checkpoint, as after a crash) and nothing links to the
        aborted ones."""
        with self._lock:
            self.writer, self._heads = writer, {}
            self._writer_bytes = json.dumps(writer, ensure_ascii=False).encode()

    def checkpoint_due(self, partition: int) -> bool:
        """Whether ``partition`` has records to checkpoint and enough of them, or has waited
        long enough (never without a signing key)."""
        with self._lock:
            head = self._heads.get(partition)
            if self._key is None or head is None or head.unsigned == 0:
                return False
            waited = self._clock() - head.since
            return head.unsigned >= self._every_records or waited >= self._every_s

    def checkpoint(self, partition: int) -> bytes | None:
        """The signed checkpoint record of ``partition``'s head, to produce to that partition;
        None when there is nothing new to sign or no key to sign with."""
        with self._lock:
            head = self._heads.get(partition)
            if self._key is None or head is None or head.unsigned == 0:
                return None
            seq, last = head.seq - 1, head.prev
            head.unsigned, head.since = 0, self._clock()
        return self._checkpoint_record(self._key, partition, seq, last)

    def partitions(self) -> list[int]:
        """The partitions this writer has sealed records for."""
        with self._lock:
            return sorted(self._heads)

    def _head(self, partition: int) -> _Head:
        head = self._heads.get(partition)
        if head is None:
            head = self._heads[partition] = _Head(since=self._clock())
        return head

    def _checkpoint_record(self, key: SigningKey, partition: int, seq: int, head: str) -> bytes:
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        signature = key.sign(checkpoint_payload(self.writer, partition, seq, head, at))
        record: dict[str, Any] = {
            "schema": 1, "kind": "checkpoint", "writer": self.writer, "partition": partition,
            "seq": seq, "head": head, "at": at, "key_id": key.key_id, "signature": signature,
        }  # fmt: skip
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()

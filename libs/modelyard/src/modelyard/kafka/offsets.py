"""Which offsets may be committed: the highest one with no unfinished message before it.

A message is finished when every record produced for it (its reply, and a dead letter if any) is
acknowledged by the broker. Batches finish out of order; only the gap-free prefix is committed.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["OffsetTracker", "Pending"]

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class _Partition:
    order: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    committable: int | None = None  # next offset to commit (last finished prefix + 1)
    committed: int | None = None


@dataclass(slots=True)
class Pending:
    """One consumed message and the number of broker acks it still waits for; ``part``: the
    tracking of its partition it began in (a message that finishes after its partition was
    revoked, or rewound, and assigned again must not count for the new tracking)."""

    tp: TopicPartition
    offset: int
    acks: int = 0
    part: _Partition | None = field(default=None, repr=False, compare=False)


class OffsetTracker:
    """Thread-safe: messages begin on the consumer thread, finish on delivery callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[TopicPartition, _Partition] = {}
        self._inflight = 0

    @property
    def inflight(self) -> int:
        return self._inflight

    def assign(self, tps: list[TopicPartition]) -> None:
        with self._lock:
            for tp in tps:
                self._parts.setdefault(tp, _Partition())

    def revoke(self, tps: list[TopicPartition]) -> None:
        with self._lock:
            for tp in tps:
                part = self._parts.pop(tp, None)
                if part is not None:
                    self._inflight -= len(part.order)

    def begin(self, tp: TopicPartition, offset: int) -> Pending:
        return self.begin_many([(tp, offset)])[0]

    def begin_many(self, messages: Sequence[tuple[TopicPartition, int]]) -> list[Pending]:
        """``begin`` for each consumed (partition, offset), in order, under one lock."""
        pending = []
        with self._lock:
            for tp, offset in messages:
                part = self._parts.get(tp)
                if part is None:
                    part = self._parts[tp] = _Partition()
                part.order.append(offset)
                pending.append(Pending(tp, offset, part=part))
            self._inflight += len(pending)
        return pending

    def expect(self, pending: Pending, acks: int) -> None:
        """Record how many broker acks ``pending`` needs, before any of its records is produced;
        with none it finishes now."""
        if acks:
            pending.acks = acks  # no lock: no ack for it can arrive before its records are sent
            return
        with self._lock:
            self._finish_locked(pending)

    def add(self, pending: Pending, acks: int) -> None:
        """``pending`` needs ``acks`` more; for work that produces records over time, which holds
        one ack of its own (released with ``ack``) so it cannot finish between two of them."""
        with self._lock:
            pending.acks += acks

    def ack(self, pending: Pending) -> None:
        """One record produced for ``pending`` was acknowledged."""
        with self._lock:
            pending.acks -= 1
            if pending.acks == 0:
                self._finish_locked(pending)

    def finish(self, pending: Sequence[Pending]) -> None:
        """These messages are done (every record produced for them acknowledged)."""
        with self._lock:
            for one in pending:
                self._finish_locked(one)

    def _finish_locked(self, pending: Pending) -> None:
        part = self._parts.get(pending.tp)
        if part is None or (pending.part is not None and pending.part is not part):
            return  # revoked (or rewound) meanwhile: whoever reads it again redoes it
        order, offset = part.order, pending.offset
        if not part.done and order and order[0] == offset:  # in order, the usual case
            order.popleft()
            part.committable = offset + 1
            self._inflight -= 1
            return
        part.done.add(offset)
        while part.order and part.order[0] in part.done:
            offset = part.order.popleft()
            part.done.discard(offset)
            part.committable = offset + 1
            self._inflight -= 1

    def pending_in(self, tps: list[TopicPartition]) -> int:
        with self._lock:
            return sum(len(self._parts[tp].order) for tp in tps if tp in self._parts)

    @property
    def advanced(self) -> bool:
        """Whether some partition's committable offset moved since the last ``to_commit``."""
        with self._lock:
            return any(
                p.committable is not None and p.committable != p.committed
                for p in self._parts.values()
            )

    def to_commit(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) that advanced since the last call; marks them committed."""
        out = []
        with self._lock:
            for (topic, partition), part in self._parts.items():
                if part.committable is not None and part.committable != part.committed:
                    out.append((topic, partition, part.committable))
                    part.committed = part.committable
        return out

    def rollback(self, offsets: list[tuple[str, int, int]]) -> None:
        """A commit failed: let the next to_commit() try those offsets again."""
        with self._lock:
            for topic, partition, _ in offsets:
                part = self._parts.get((topic, partition))
                if part is not None:
                    part.committed = None

"""The shadow auditor's handler on a real outbox with a fake producer: which tickets a pair
answers, and what stays held (so what the worker loop may commit)."""

from __future__ import annotations

from typing import Any

from modelyard.audit import HopRecord, decode_audit
from modelyard.kafka.handler import Outbox, Ticket
from modelyard.kafka.offsets import OffsetTracker
from modelyard.shadows.auditor import _Pairing
from modelyard.shadows.pairs import ShadowPairs
from modelyard.wire import Envelope, encode_envelope

TP = ("yard.p.tp.shadow", 0)


class Message:
    def __init__(self, offset: int, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self._offset, self._value, self._headers = offset, value, headers

    def topic(self) -> str:
        return TP[0]

    def partition(self) -> int:
        return TP[1]

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_700_000_000_000


class Producer:
    """Delivers each record as it is produced."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        self.sent.append(value)
        kwargs["on_delivery"](None, None)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class NoHooks:
    def send_failed(self, topic: str, error: BaseException) -> None: ...


class Auditing:
    """A ``_Pairing`` handler and what it produced and left committable."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self.producer, self.tracker = Producer(), OffsetTracker()
        self.outbox = Outbox(self.producer, self.tracker, NoHooks())
        self.outbox.assign([TP])
        self.handler = _Pairing(self.outbox, "tp", "yard.audit", ShadowPairs(ttl_s), lambda _: None)
        self.offset = 0

    def read(self, *messages: tuple[str, str]) -> list[Ticket]:
        """(request id, role) halves, or ("", "junk") for a record that is not one."""
        batch = [self._message(rid, role) for rid, role in messages]
        tickets = self.outbox.admit(batch)
        self.handler.handle(tickets)
        return tickets

    def committable(self) -> int | None:
        offsets = self.tracker.to_commit()
        return offsets[0][2] if offsets else None

    def hops(self) -> list[HopRecord]:
        records = [decode_audit(value) for value in self.producer.sent]
        return [r for r in records if isinstance(r, HopRecord)]

    def _message(self, rid: str, role: str) -> Message:
        self.offset += 1
        if role == "junk":
            return Message(self.offset - 1, b"not an envelope", [])
        reply = Envelope(rid, {"label": ["pos"]}, "tp", "sentiment", model="m", version="2")
        primary = [("shadow-role", b"primary"), ("shadow-version", b"m:2")]
        headers = [("shadow", b"1")] if role == "shadow" else primary
        return Message(self.offset - 1, encode_envelope(reply), headers)


def test_a_pair_answers_both_halves_with_one_record() -> None:
    auditing = Auditing()
    auditing.read(("a", "primary"), ("b", "shadow"), ("a", "shadow"))
    assert [(h.request_id, h.outcome, h.agrees) for h in auditing.hops()] == [("a", "ok", True)]
    assert auditing.committable() == 1  # "b" (offset 1) waits for its primary
    auditing.read(("b", "primary"))
    assert auditing.committable() == 4
    assert auditing.handler.waiting == 0


def test_a_redelivered_half_replaces_the_held_one_and_frees_its_offset() -> None:
    auditing = Auditing()
    first, again, junk = auditing.read(("a", "primary"), ("a", "primary"), ("", "junk"))
    assert first.answered
    assert not again.answered
    assert junk.answered  # not a half: nothing to wait for
    assert auditing.committable() == 1  # held at the copy that replaced the first
    auditing.read(("a", "shadow"))
    assert auditing.committable() == 4
    assert len(auditing.hops()) == 1


def test_a_half_alone_past_the_ttl_is_recorded_as_it_is() -> None:
    auditing = Auditing(ttl_s=0.0)
    auditing.read(("a", "primary"))
    auditing.handler.tick(float("inf"))
    assert [(h.request_id, h.outcome) for h in auditing.hops()] == [("a", "no_reply")]
    assert auditing.committable() == 1


def test_revoked_partitions_leave_their_held_halves_to_the_next_owner() -> None:
    auditing = Auditing()
    auditing.read(("a", "primary"))
    auditing.handler.revoked([TP])
    auditing.outbox.revoke([TP])
    assert auditing.handler.waiting == 0
    auditing.handler.tick(float("inf"))
    assert auditing.hops() == []  # not recorded here as a shadow that never answered

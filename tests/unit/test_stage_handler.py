"""The stage's Kafka handler on an outbox with a fake producer: what it answers each message with,
when a message finishes (its offset may be committed), and when the worker must stop instead.
The model's outcomes are handed over by the test, as the batcher's thread would."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import KafkaError, KafkaException
from modelyard.errors import ArtifactIntegrityError, ModelError
from modelyard.kafka.delivery import PartitionCounts
from modelyard.kafka.handler import Outbox, Ticket
from modelyard.kafka.offsets import OffsetTracker
from modelyard.model import Inputs, Model, Outcome
from modelyard.repository.manifest import Manifest
from modelyard.stage.batcher import WorkItem
from modelyard.stage.core import StageCore
from modelyard.stage.kafka_adapter import StageHandler
from modelyard.stage.settings import StageSettings
from modelyard.telemetry.hooks import Hooks
from modelyard.wire import Envelope, decode_envelope, encode_envelope
from modelyard.wire.headers import header_value

MANIFEST = Manifest.model_validate(
    {
        "name": "shout",
        "version": "1",
        "runtime": "python",
        "entrypoint": "x:Y",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "shout", "datatype": "BYTES", "shape": [-1]}],
    }
)
DLQ, DEFAULT_REPLIES = "yard.m.shout.1.dlq", "yard.m.shout.1.replies"


# fakes -------------------------------------------------------------------------------------
class Shout(Model):
    def load(self) -> None: ...

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        raise AssertionError("the test hands outcomes over itself")


class QueueingBatcher:
    """Never runs inline: keeps what is submitted, as the batcher's queue does."""

    def __init__(self) -> None:
        self.items: list[WorkItem] = []

    def run_inline(self, items: Sequence[WorkItem]) -> bool:
        return False

    def submit(self, items: Sequence[WorkItem]) -> None:
        self.items += items


class Message:
    def __init__(self, offset: int, value: bytes, key: bytes | None, headers: list[Any]) -> None:
        self._offset, self._value, self._key, self._headers = offset, value, key, headers

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[Any]:
        return self._headers

    def error(self) -> None:
        return None


class Sent:
    """A produced record; ``msg`` stands in for the delivered message of a delivery report."""

    def __init__(self, topic: str, value: bytes, key: Any, partition: int, headers: Any) -> None:
        self.topic, self.value, self.key = topic, value, key
        self.partition, self.headers = partition, headers

    def msg(self) -> Any:
        topic = self.topic

        class Delivered:
            def topic(self) -> str:
                return topic

        return Delivered()


class Producer:
    """Keeps each record's delivery callback until the test acknowledges (or fails) it."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self._callbacks: list[tuple[Sent, Callable[[Any, Any], None]]] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> None:
        record = Sent(topic, value, key, kw["partition"], kw["headers"])
        self.sent.append(record)
        self._callbacks.append((record, kw["on_delivery"]))

    def deliver(self, fail: Callable[[Sent], KafkaError | None] = lambda _: None) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for record, callback in callbacks:
            callback(fail(record), record.msg())

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return len(self._callbacks)


class Stage:
    """A handler, its outbox and fakes; ``take`` hands it messages as the loop would."""

    def __init__(self) -> None:
        self.producer, self.tracker, self.batcher = Producer(), OffsetTracker(), QueueingBatcher()
        self.outbox = Outbox(self.producer, self.tracker, Hooks())
        self.outbox.assign([("in", 0)])
        core = StageCore(Shout(MANIFEST, Path(".")), self.batcher, Hooks())  # type: ignore[arg-type]
        counts = PartitionCounts(lambda topic: 2)  # every reply topic has partitions 0 and 1
        self.handler = StageHandler(self.outbox, core, prefix="yard", reply_partitions=counts)
        self._next = 0

    def take(self, *messages: tuple[bytes, bytes | None, list[Any]]) -> list[Ticket]:
        batch = []
        for value, key, headers in messages:
            batch.append(Message(self._next, value, key, headers))
            self._next += 1
        tickets = self.outbox.admit(batch)  # type: ignore[arg-type]
        self.handler.handle(tickets)
        return tickets

    def model_answers(self, outcome: Callable[[WorkItem], Outcome]) -> None:
        """The batcher's thread hands every queued item its outcome in one call."""
        items, self.batcher.items = self.batcher.items, []
        thread = threading.Thread(target=items[0].done, args=(items, [outcome(i) for i in items]))
        thread.start()
        thread.join()

    def committable(self) -> int | None:
        offsets = {(t, p): o for t, p, o in self.tracker.to_commit()}
        return offsets.get(("in", 0))


def request(rid: str, text: str, reply_to: str | None = "out", **headers: bytes) -> Any:
    value = encode_envelope(Envelope(rid, {"text": [text]}))
    hdrs = [("reply-to", reply_to.encode())] if reply_to else []
    return value, rid.encode(), hdrs + list(headers.items())


def shouted(item: WorkItem) -> Outcome:
    return {"shout": np.char.upper(item.inputs["text"].astype(bytes)).astype(object)}


# answers -----------------------------------------------------------------------------------
def test_requests_are_answered_by_the_model_and_finish_once_their_replies_are_acked() -> None:
    stage = Stage()
    stage.take(request("r0", "hi"), request("r1", "there"))
    assert not stage.producer.sent  # nothing before the model answers
    stage.model_answers(shouted)
    replies = {r.key: decode_envelope(r.value) for r in stage.producer.sent}
    assert replies["r1"].fields["shout"].tolist() == [b"THERE"]
    assert {r.topic for r in stage.producer.sent} == {"out"}
    assert stage.committable() is None  # answered, not yet acknowledged
    stage.producer.deliver()
    assert stage.committable() == 2
    assert stage.outbox.unanswered == 0


def test_replies_go_to_the_named_partition_if_it_exists_else_by_key() -> None:
    stage = Stage()
    stage.take(request("p1", "a", **{"reply-partition": b"1"}),
               request("p9", "b", **{"reply-partition": b"9"}))  # fmt: skip
    stage.model_answers(shouted)
    assert {r.key: r.partition for r in stage.producer.sent} == {"p1": 1, "p9": -1}


def test_a_request_without_reply_to_is_answered_on_the_version_reply_topic() -> None:
    stage = Stage()
    stage.take(request("d0", "x", reply_to=None))
    stage.model_answers(shouted)
    assert [r.topic for r in stage.producer.sent] == [DEFAULT_REPLIES]


def test_a_refused_message_is_dead_lettered_with_its_bytes_before_the_model_runs() -> None:
    stage = Stage()
    garbage = b"\xc1 not msgpack"
    stage.take((garbage, b"g0", [("reply-to", b"out")]), request("ok", "fine"))
    letter, reply = stage.producer.sent  # the refusal only: "ok" waits for the model
    assert (letter.topic, letter.value, letter.key) == (DLQ, garbage, "g0")
    assert header_value(letter.headers, "dlq-error-code") == "decode"
    assert header_value(letter.headers, "dlq-source") == "in"
    error = decode_envelope(reply.value).error
    assert (reply.topic, error and error.code) == ("out", "decode")
    stage.producer.deliver()
    assert stage.committable() == 1  # the refused one is done; the next waits for the model


def test_a_model_error_is_dead_lettered_and_answered() -> None:
    stage = Stage()
    stage.take(request("m0", "boom"))
    stage.model_answers(lambda _: ModelError("cannot digest 'boom'"))
    assert sorted(r.topic for r in stage.producer.sent) == sorted([DLQ, "out"])


def test_a_message_that_killed_workers_is_dead_lettered_without_the_model() -> None:
    stage = Stage()
    (ticket,) = stage.outbox.admit([Message(0, *request("die", "die"))])  # type: ignore[list-item]
    stage.handler.poisoned(ticket, 2)
    assert not stage.batcher.items
    letter, reply = stage.producer.sent
    assert letter.topic == DLQ
    assert "died 2 times" in (header_value(letter.headers, "dlq-error") or "")
    error = decode_envelope(reply.value).error
    assert error is not None
    assert error.code == "internal"


# when the worker must stop ------------------------------------------------------------------
def test_a_fatal_outcome_fails_the_worker_and_leaves_the_message_unfinished() -> None:
    stage = Stage()
    stage.take(request("f0", "a"), request("f1", "b"))
    fatal = ArtifactIntegrityError("the model's files changed")
    stage.model_answers(lambda item: fatal if item.request.request_id == "f0" else shouted(item))
    stage.producer.deliver()
    assert stage.outbox.failure is fatal
    assert stage.committable() is None  # f1 finished, but not past the unfinished f0


def test_an_undeliverable_reply_to_the_callers_topic_is_dropped_not_held() -> None:
    stage = Stage()
    stage.take(request("u0", "a", reply_to="gone"))
    stage.model_answers(shouted)
    stage.producer.deliver(lambda _: KafkaError(KafkaError._UNKNOWN_TOPIC))
    assert stage.outbox.failure is None
    assert stage.committable() == 1


def test_a_lost_dead_letter_fails_the_worker_and_finishes_nothing() -> None:
    stage = Stage()
    stage.take((b"\xc1", b"x0", [("reply-to", b"out")]))
    lost = KafkaError(KafkaError._MSG_TIMED_OUT)
    stage.producer.deliver(lambda r: lost if r.topic == DLQ else None)
    assert stage.outbox.failure is not None
    assert stage.committable() is None


def test_answering_on_the_batchers_thread_that_raises_fails_the_worker() -> None:
    stage = Stage()
    stage.take(request("b0", "a"))

    def refuse(*_: Any, **__: Any) -> None:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))  # not sent, not permanent

    stage.producer.produce = refuse  # type: ignore[method-assign]
    item = stage.batcher.items[0]
    with pytest.raises(KafkaException):  # the batcher logs it; the worker stops on it
        item.done([item], [shouted(item)])
    assert isinstance(stage.outbox.failure, KafkaException)
    assert stage.committable() is None


# settings ----------------------------------------------------------------------------------
def test_intake_is_bounded_by_the_models_queue_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELYARD_MAX_INFLIGHT", raising=False)
    assert StageSettings(model="m").stage_loop_options(max_queue=8).max_inflight == 8
    assert StageSettings(model="m", max_inflight=3).stage_loop_options(8).max_inflight == 3
    monkeypatch.setenv("MODELYARD_MAX_INFLIGHT", "5")
    options = StageSettings(model="m", drain_timeout_s=2).stage_loop_options(8)
    assert (options.max_inflight, options.drain_timeout_s, options.revoke_grace_s) == (5, 2, 30)

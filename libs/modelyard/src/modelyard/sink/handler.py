"""The audit sink's handler on the one worker loop: records in, rows in the store, then acks.

Each consumed message becomes rows in the pending batch, as the values their inserts bind
(``Batch.add_record``: one pass from the record's bytes, no row objects), and its ticket is
held. When the batch is full or old enough, it goes to the writer thread, which has the
writer process (``audit/store/process.py``: its own interpreter, so its own GIL) write it in
one transaction; only once that transaction has committed are its tickets answered, so the loop
commits a message's offset only after its rows are in the database. The store writes while the
loop reads and parses the next batch and the writer thread sends the one after; at most two
batches wait, then the loop waits: what stays in Kafka is lag, not a buffer. Control records
get their verdict from ``ControlFold`` (``control.py``) as they are taken.

A process killed mid-batch leaves those offsets uncommitted: the messages
come again and are inserted once (every table has a natural unique key). A message that is not
a valid record is answered at once with a dead letter (its original bytes) and the partition
keeps flowing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from modelyard.audit.store import Batch
from modelyard.errors import DecodeError
from modelyard.kafka.config import MAX_MESSAGE_BYTES
from modelyard.kafka.handler import Handler, Outbox, OutRecord, Ticket
from modelyard.sink.control import ControlFold
from modelyard.wire.headers import dead_letter

__all__ = ["BatchWriter", "SinkHandler"]

log = structlog.get_logger("modelyard.sink")

_Item = tuple[Batch, list[Ticket]]  # rows, the tickets they answer


class BatchWriter(Protocol):
    """Where batches go (``audit/store/process.py``'s ``WriterProcess``): ``submit`` one,
    ``result`` of the oldest submitted (raises when it was not committed), in order."""

    def submit(self, batch: Batch) -> None: ...
    def result(self) -> None: ...


_COUNTED = (("request", "requests"), ("hop", "hops"), ("checkpoint", "checkpoints"),
            ("control", "control_changes"))  # metric label, table  # fmt: skip


class SinkHandler(Handler):
    """Batches rows and answers their tickets once the batch is committed to the store.
    ``start_writer`` before the loop runs it, ``stop_writer`` after the loop has stopped."""

    # False although the writer finishes a message later: what could kill a process on a
    # message (parsing its bytes) happens in ``handle``; the writer only binds parsed values. A
    # restart after a crash then takes messages one at a time without waiting for each batch
    runs_after_handle: ClassVar[bool] = False

    def __init__(
        self,
        outbox: Outbox,
        store: BatchWriter,
        *,
        audit_topic: str,
        dlq_topic: str,
        control: tuple[str, ControlFold] | None,
        batch_size: int = 2000,
        max_wait_s: float = 0.2,
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(outbox)
        self._store, self._audit, self._dlq = store, audit_topic, dlq_topic
        self._control: str | None = control[0] if control else None
        self._fold: ControlFold | None = control[1] if control else None
        self._batch_size, self._max_wait_s = batch_size, max_wait_s
        self._batch, self._held = Batch(), list[Ticket]()
        self._oldest: float | None = None
        registry = registry or CollectorRegistry()
        self._records = Counter("modelyard_sink_records", "Records stored, by kind.",
                                ["kind"], registry=registry)  # fmt: skip
        self._dead = Counter("modelyard_sink_dead_letters", "Records dead-lettered.",
                             registry=registry)  # fmt: skip
        self._commit = Histogram("modelyard_sink_batch_seconds", "Store write per batch.",
                                 registry=registry)  # fmt: skip
        self._writer = _Writer(store, outbox, self._written)

    def handle(self, batch: Sequence[Ticket]) -> None:
        for ticket in batch:
            self._take(ticket)
        if len(self._held) >= self._batch_size:
            self.flush()

    def tick(self, now: float) -> None:
        if self._oldest is not None and now - self._oldest >= self._max_wait_s:
            self.flush()

    def assigned(self, tps: Sequence[tuple[str, int]]) -> None:
        self._refold_if_ours(tps)

    def revoked(self, tps: Sequence[tuple[str, int]]) -> None:
        """Write what is held (idempotent): the new owner may store it again, harmlessly."""
        self.flush()
        self._writer.wait_idle()
        self._refold_if_ours(tps)

    def flush(self) -> None:
        """Hand the pending batch to the writer (which answers its tickets once committed)."""
        if not self._held:
            return
        batch, held = self._batch, self._held
        self._batch, self._held, self._oldest = Batch(), [], None
        self._writer.put(batch, held)

    def start_writer(self) -> None:
        self._writer.start()

    def stop_writer(self) -> None:
        """Let the writer finish what it was given, then end it."""
        self._writer.stop()

    def _written(self, batch: Batch, seconds: float) -> None:
        self._commit.observe(seconds)
        self._count(batch)

    def _refold_if_ours(self, tps: Sequence[tuple[str, int]]) -> None:
        if self._fold is not None and any(topic == self._control for topic, _ in tps):
            self._fold.reset()

    def _take(self, ticket: Ticket) -> None:
        msg = ticket.message
        value = msg.value() or b""
        try:
            if self._fold is not None and msg.topic() == self._control:
                self._batch.add_control(self._fold.row(msg))
            else:
                self._batch.add_record(value)
        except DecodeError as exc:
            self._dead_letter(ticket, value, exc.message)
            return
        self._held.append(ticket)
        if self._oldest is None:
            self._oldest = time.monotonic()

    def _dead_letter(self, ticket: Ticket, value: bytes, why: str) -> None:
        msg = ticket.message
        log.warning("invalid audit record dead-lettered", topic=msg.topic(),
                    partition=msg.partition(), offset=msg.offset(), error=why)  # fmt: skip
        headers = [(k, v) for k, v in msg.headers() or [] if v is not None]
        dead, dead_headers = dead_letter(
            value, headers, why, "decode", source=f"audit-sink {msg.topic()}",
            max_bytes=MAX_MESSAGE_BYTES,
        )  # fmt: skip
        self.outbox.answer([ticket], [OutRecord(self._dlq, dead, msg.key(), dead_headers)])
        self._dead.inc()

    def _count(self, batch: Batch) -> None:
        for kind, table in _COUNTED:
            count = batch.count(table)
            if count:
                self._records.labels(kind).inc(count)


_Sent = tuple[Batch, list[Ticket], float]  # submitted, its answer not read yet; when


class _Writer:
    """The thread that writes batches, then answers their tickets; a failure stops the loop
    (``outbox.fail``) without answering them, so their offsets are never committed.

    Under load it submits the next batch before reading the answer of the one before, so the
    store writes one while this process pickles and sends the next."""

    def __init__(
        self, store: BatchWriter, outbox: Outbox, written: Callable[[Batch, float], None]
    ) -> None:
        self._store, self._outbox, self._written = store, outbox, written
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._run, name="modelyard-audit-writer")
        self._failed = False

    def start(self) -> None:
        self._thread.start()

    def put(self, batch: Batch, tickets: list[Ticket]) -> None:
        self._queue.put((batch, tickets))  # waits while two batches are waiting

    def wait_idle(self) -> None:
        """Until every batch put is written (or failed)."""
        self._queue.join()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        sent: _Sent | None = None
        while True:
            if sent is not None and self._queue.empty():  # nothing to overlap it with
                self._finish(sent)
                sent = None
                continue
            item = self._queue.get()
            if item is None:
                if sent is not None:
                    self._finish(sent)
                self._queue.task_done()
                return
            submitted = None if self._failed else self._submit(*item)
            if submitted is None:
                self._queue.task_done()
            if sent is not None:
                self._finish(sent)
            sent = submitted

    def _submit(self, batch: Batch, tickets: list[Ticket]) -> _Sent | None:
        started = time.perf_counter()
        try:
            self._store.submit(batch)
        except Exception as exc:
            self._fail(exc)
            return None
        return batch, tickets, started

    def _finish(self, sent: _Sent) -> None:
        """Read the answer of a submitted batch; answer its tickets when it was committed."""
        batch, tickets, started = sent
        try:
            self._store.result()
        except Exception as exc:
            self._fail(exc)
        else:
            if not self._failed:  # never past a batch that failed before it
                self._outbox.close(tickets)
                self._written(batch, time.perf_counter() - started)
        finally:
            self._queue.task_done()

    def _fail(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            log.error("audit store write failed; stopping without committing", error=str(exc))
        self._outbox.fail(exc)

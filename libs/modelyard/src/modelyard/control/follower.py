"""A background reader of the control topic that keeps a live, immutable routing snapshot.

Every router instance (and ``modelyard up``) runs one: it reads the control topic from its first
offset, replaces a pipeline's routing with each record's state (the last record per key wins,
compacted or not), and then keeps reading with a short fetch wait so a change reaches every
router within tens of milliseconds. ``state`` is swapped atomically; readers never see a
half-applied change, and a release rollback (one record) flips every stage at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from modelyard.control._reader import control_consumer, decode_message, open_partition
from modelyard.control.state import ControlRecord, ControlState
from modelyard.errors import UnavailableError
from modelyard.topics import control_topic

__all__ = ["ControlFollower"]

log = structlog.get_logger(__name__)

_POLL_S = 0.05  # also bounds how long stop() waits for the thread
_TOPIC_RETRY_S = 0.2  # while the control topic does not exist yet
_PROBE_S = 1.0  # one look for the control topic (retried until it exists)


class ControlFollower:
    """Follow the control topic in a thread named ``modelyard-control``.

    ``on_change(record)`` is called on that thread after each applied record (catch-up
    included); an exception it raises is logged and does not stop the follower.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        prefix: str = "yard",
        kafka: Mapping[str, Any] | None = None,
        on_change: Callable[[ControlRecord], None] | None = None,
        fetch_wait_ms: int = 20,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = control_topic(prefix)
        self._kafka = dict(kafka or {})
        self._on_change = on_change
        self._fetch_wait_ms = fetch_wait_ms
        self._state = ControlState()
        self._changed = threading.Condition()
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    @property
    def state(self) -> ControlState:
        """The routing as of the last applied record (an immutable snapshot)."""
        return self._state

    @property
    def caught_up(self) -> bool:
        """Whether every record present at start has been applied."""
        return self._caught_up.is_set()

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("follower already started")
        self._thread = threading.Thread(target=self._run, name="modelyard-control", daemon=True)
        self._thread.start()
        return self

    def wait_caught_up(self, timeout_s: float) -> bool:
        """Block until the records present at start are applied; False on timeout."""
        return self._caught_up.wait(timeout_s)

    def wait_until(self, predicate: Callable[[ControlState], bool], timeout_s: float) -> bool:
        """Block until ``predicate(state)`` holds (checked after each record); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._state), timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reading and join the thread. Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("control follower did not stop in time", topic=self.topic)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        consumer = None
        try:
            consumer, end = self._open()
            while consumer is not None and not self._stop.is_set():
                msg = consumer.poll(_POLL_S)
                if msg is not None:
                    self._handle(msg, end)
        except Exception as exc:  # reported through .failure; the snapshot stays as it was
            self.failure = exc
            log.exception("control follower failed", topic=self.topic)
        finally:
            if consumer is not None:
                consumer.close()

    def _open(self) -> tuple[Consumer | None, int]:
        """A consumer assigned to the control partition once the topic exists, and the end
        offset at that moment; (None, -1) when stopped first."""
        while not self._stop.is_set():
            consumer = control_consumer(self.bootstrap, self._kafka, wait_ms=self._fetch_wait_ms)
            try:
                # short probes: asking for a topic that does not exist yet can take the whole
                # timeout, and a new control topic should be noticed within about a second
                end = open_partition(consumer, self.topic, timeout_s=_PROBE_S)
            except UnavailableError as exc:  # the broker is not answering yet: keep trying
                log.warning("control topic unavailable", topic=self.topic, error=exc.message)
                end = None
            if end is not None:
                return consumer, end
            # a new client for the next look: one that was told the topic does not exist can
            # keep believing it well after the topic is created (a full-suite run waited 30 s)
            consumer.close()
            self._stop.wait(_TOPIC_RETRY_S)
        return None, -1

    def _handle(self, msg: Message, end: int) -> None:
        err = msg.error()
        if err is None:
            got = decode_message(msg)
            if got is not None:
                self._apply(got.record)
        elif err.code() == KafkaError._PARTITION_EOF:
            if int(msg.offset()) >= end and not self._caught_up.is_set():
                self._caught_up.set()
                with self._changed:
                    self._changed.notify_all()
        elif err.fatal():
            raise KafkaException(err)
        else:
            log.debug("control topic read error", error=str(err))  # transient: the client retries

    def _apply(self, record: ControlRecord) -> None:
        with self._changed:
            self._state = self._state.update(record)
            self._changed.notify_all()
        if self._on_change is not None:
            try:
                self._on_change(record)
            except Exception:
                log.exception("control on_change callback failed", seq=record.seq)

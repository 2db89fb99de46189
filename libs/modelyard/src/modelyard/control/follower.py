"""A background reader of the control topic that keeps a live, immutable routing snapshot.

Every router instance (and ``modelyard up``) runs one: it reads the control topic from its first
offset, replaces a pipeline's routing with each record's state (the last record per key wins,
compacted or not; a record that lost a race is ignored: :mod:`modelyard.control.chain`), and
then keeps reading with a short fetch wait so a change reaches every router within tens of
milliseconds. ``state`` is swapped atomically; readers never see a
half-applied change, and a release rollback (one record) flips every stage at once.

With a :class:`~modelyard.control.verify.ControlVerifier` (a router's keyring, spec and model
repository), a record that is unsigned, forged, not authorised or not deployable is rejected:
never applied, logged as a warning, counted in ``modelyard_control_rejected_total`` and kept in
``rejected``. Without one, every record is applied as it comes and a warning says so at start.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import structlog
from prometheus_client import CollectorRegistry, Counter

from modelyard.control.chain import Chain, Positioned
from modelyard.control.messages import decode_message
from modelyard.control.reader import open_partition
from modelyard.control.state import ControlRecord, ControlState
from modelyard.control.verify import ControlVerifier
from modelyard.errors import UnavailableError
from modelyard.kafka.handler import Handler, Outbox, Ticket
from modelyard.kafka.worker import AssignedIntake, ConsumerLike, LoopOptions, WorkerLoop
from modelyard.topics import control_topic

__all__ = ["ControlFollower"]

log = structlog.get_logger(__name__)

_POLL_S = 0.05  # how long an idle read waits
_STOP_S = 5.0  # how long stop() waits for the loop by default
_TOPIC_RETRY_S = 0.2  # while the control topic does not exist yet
_PROBE_S = 1.0  # one look for the control topic (retried until it exists)
_KEPT_REJECTED = 100  # the latest rejected records kept for health and tests


class ControlFollower:
    """Follow the control topic on the worker loop (``kafka/worker.py``), in a thread named
    ``modelyard-control``: partition 0 assigned from its first offset, no group, nothing
    committed, nothing produced; the end of the partition is what "caught up" means.

    ``on_change(record)`` is called on that thread after each applied record (catch-up
    included); an exception it raises is logged and does not stop the follower.

    ``verifier``: what a record must pass to be applied (``control/verify.py``); None applies
    every record (an insecure reader: logged at start). ``registry``: where the count of
    rejected records is exported.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        prefix: str = "yard",
        kafka: Mapping[str, Any] | None = None,
        on_change: Callable[[ControlRecord], None] | None = None,
        fetch_wait_ms: int = 20,
        verifier: ControlVerifier | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = control_topic(prefix)
        self._kafka = dict(kafka or {})
        self._on_change = on_change
        self._fetch_wait_ms = fetch_wait_ms
        self._rejected: deque[Positioned] = deque(maxlen=_KEPT_REJECTED)
        self._count_rejected = _rejection_counter(registry)
        self._verifier = verifier
        self._chain = Chain(verifier, on_reject=self._note_rejected)  # loop's thread only
        self._state = self._chain.state
        self._changed = threading.Condition()
        self._caught_up = threading.Event()
        self._end = -1  # the partition's end when it was opened: caught up once read to there
        self._loop: WorkerLoop | None = None

    @property
    def state(self) -> ControlState:
        """The routing as of the last applied record (an immutable snapshot)."""
        return self._state

    @property
    def rejected(self) -> tuple[Positioned, ...]:
        """The latest records the verifier rejected (reason in ``rejected``), oldest first."""
        return tuple(self._rejected)

    @property
    def caught_up(self) -> bool:
        """Whether every record present at start has been applied."""
        return self._caught_up.is_set()

    @property
    def failure(self) -> BaseException | None:
        """Why the follower stopped reading, if it failed (the snapshot stays as it was)."""
        return self._loop.failure if self._loop is not None else None

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.running

    def start(self) -> Self:
        if self._loop is not None:
            raise RuntimeError("follower already started")
        if self._verifier is None or not self._verifier.secure:
            log.warning("control records are not verified: anyone who can write the control "
                        "topic can change the routing", topic=self.topic)  # fmt: skip
        intake = AssignedIntake(
            open=self._open,
            consumer_overrides={"fetch.wait.max.ms": self._fetch_wait_ms},
            report_partition_end=True,  # how a reader knows it has reached the end
            reopen_s=_TOPIC_RETRY_S,
        )
        options = LoopOptions(bootstrap=self.bootstrap, kafka=self._kafka,
                              poll_timeout_s=_POLL_S, drain_timeout_s=0.0)  # fmt: skip
        self._loop = WorkerLoop(intake, options, name="control", produces=False)
        self._loop.start(_Following(self._loop.outbox, self))
        return self

    def wait_caught_up(self, timeout_s: float) -> bool:
        """Block until the records present at start are applied; False on timeout."""
        return self._caught_up.wait(timeout_s)

    def wait_until(self, predicate: Callable[[ControlState], bool], timeout_s: float) -> bool:
        """Block until ``predicate(state)`` holds (checked after each record); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._state), timeout_s)

    def stop(self, timeout_s: float = _STOP_S) -> None:
        """Stop reading and join the thread. Safe to call twice."""
        if self._loop is None:
            return
        self._loop.stop(timeout_s)
        if self._loop.running:
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

    def _open(self, consumer: ConsumerLike) -> list[Any] | None:
        """Where to read: partition 0 from its first offset, once the topic exists (None until
        then: the loop looks again with a fresh client). Remembers the end offset seen now."""
        try:
            # short probes: asking for a topic that does not exist yet can take the whole
            # timeout, and a new control topic should be noticed within about a second
            end = open_partition(consumer, self.topic, timeout_s=_PROBE_S)
        except UnavailableError as exc:  # the broker is not answering yet: keep trying
            log.warning("control topic unavailable", topic=self.topic, error=exc.message)
            return None
        if end is None:
            return None
        self._end = end
        positions: list[Any] = consumer.assignment()  # what open_partition assigned
        return positions

    def _reached(self, offset: int) -> None:
        if offset >= self._end and not self._caught_up.is_set():
            self._caught_up.set()
            with self._changed:
                self._changed.notify_all()

    def _note_rejected(self, got: Positioned) -> None:
        self._rejected.append(got)
        if self._count_rejected is not None:
            self._count_rejected.labels(got.record.key, got.rejected or "").inc()

    def _offer(self, got: Positioned) -> None:
        if not self._chain.offer(got).applied:
            return  # logged by the chain
        with self._changed:
            self._state = self._chain.state
            self._changed.notify_all()
        if self._on_change is not None:
            try:
                self._on_change(got.record)
            except Exception:
                log.exception("control on_change callback failed", seq=got.record.seq)


def _rejection_counter(registry: CollectorRegistry | None) -> Counter | None:
    if registry is None:
        return None
    return Counter(
        "modelyard_control_rejected",
        "Control records this reader rejected (unsigned, forged, unknown key, not authorised, "
        "inconsistent, not deployable); see modelyard history.",
        ["pipeline", "reason"],
        registry=registry,
    )


class _Following(Handler):
    """Offers each valid control record to the chain; the partition's end is the catch-up
    signal."""

    def __init__(self, outbox: Outbox, follower: ControlFollower) -> None:
        super().__init__(outbox)
        self._follower = follower

    def handle(self, batch: Sequence[Ticket]) -> None:
        for ticket in batch:
            got = decode_message(ticket.message)
            if got is not None:
                self._follower._offer(got)
        self.outbox.close(batch)

    def reached_end(self, topic: str, partition: int, offset: int) -> None:
        self._follower._reached(offset)

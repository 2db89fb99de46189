"""The broker ``modelyard up`` runs itself, and what makes its state outlive it.

- ``embedded`` (the default): the embedded broker, memory only. With a state dir, a journal
  (:mod:`modelyard.stack.journal`) keeps the control records and the unanswered requests, and a
  fresh broker gets them back (:mod:`modelyard.stack.restore`) before any router starts.
- ``kafka``: one Apache Kafka node whose storage is ``<state-dir>/kafka``: durable by itself.

A journal that exists but cannot be read stops the start (``JournalError``) before the broker
runs: routing is never reset silently.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition

from modelyard.broker import BrokerStartError, EmbeddedBroker, KafkaCluster
from modelyard.graph.spec import PipelineSpec
from modelyard.kafka.worker import WorkerLoop
from modelyard.stack.journal import Journal, JournalError
from modelyard.stack.journal_worker import JournalHandler, JournalTopics, journal_worker
from modelyard.stack.restore import Restored, restore
from modelyard.stack.settings import StackSettings
from modelyard.stack.state_dir import StateDir
from modelyard.topics import control_topic, pipeline_ingress_topic, pipeline_results_topic

__all__ = ["OwnBroker"]

log = structlog.get_logger(__name__)

_READY_S = 30.0
_SETTLE_S = 5.0  # at a clean stop: how long the journal may take to read the last results


class OwnBroker:
    """Start (journal opened first), restore, journal, stop; one per ``Stack``."""

    def __init__(self, settings: StackSettings, state: StateDir) -> None:
        self.settings, self.state = settings, state
        self.restored: Restored | None = None
        self._broker: EmbeddedBroker | KafkaCluster | None = None
        self._journal: Journal | None = None
        self._worker: WorkerLoop | None = None
        self._handler: JournalHandler | None = None
        self._topics: JournalTopics | None = None

    @property
    def bootstrap(self) -> str:
        return self._broker.bootstrap if self._broker is not None else ""

    @property
    def failure(self) -> str | None:
        """Why the stack cannot go on: its broker exited, or the journal stopped copying."""
        if self._broker is not None and not self._broker.running:
            return f"the {self.settings.engine} broker on {self.bootstrap} exited"
        if self._worker is not None and self._worker.failure is not None:
            return f"the journal in {self.state.path} failed: {self._worker.failure!r}"
        return None

    def start(self) -> str:
        s = self.settings
        if s.engine == "embedded" and self.state.durable:
            self._journal = Journal(self.state.journal)  # unreadable: refused before anything
        if s.engine == "kafka":
            self._broker = KafkaCluster(port=s.broker_port, host=s.broker_host,
                                        data_dir=self.state.kafka)  # fmt: skip
        else:
            self._broker = EmbeddedBroker(s.broker_port, s.broker_host)
        try:
            self._broker.start()
        except BrokerStartError as exc:
            hint = " (--port 0 picks a free port)" if "in use" in str(exc) else ""
            raise BrokerStartError(f"{exc}{hint}") from None
        log.info("broker started", engine=s.engine, bootstrap=self.bootstrap,
                 state_dir=str(self.state.path) if self.state.durable else None)  # fmt: skip
        return self.bootstrap

    def restore_and_journal(self, specs: Sequence[PipelineSpec]) -> None:
        """Topics exist: produce the journal back (a fresh embedded broker holds nothing), then
        copy everything from here on. Before routers start, so they route by what was kept."""
        if self._journal is None:
            return
        prefix = self.settings.topic_prefix
        topics = JournalTopics(
            control_topic(prefix),
            [pipeline_ingress_topic(prefix, s.pipeline) for s in specs],
            [pipeline_results_topic(prefix, s.pipeline) for s in specs],
        )
        try:
            self.restored = restore(self.bootstrap, self._journal, topics.control, topics.ingress)
        except KafkaException as exc:  # nothing is marked restored: the next start tries again
            raise JournalError(
                f"could not restore the journal into {self.bootstrap}: {exc}"
            ) from None
        self._topics = topics
        self._worker, self._handler = journal_worker(self.bootstrap, self._journal, topics)
        if not self._worker.wait_ready(_READY_S):
            raise JournalError(f"the journal could not read {topics.all} on {self.bootstrap}")

    def stop(self) -> None:
        """After every child has stopped: let the journal read what they wrote last, stop it,
        then the broker."""
        if self._worker is not None:
            if self._broker is not None and self._broker.running:
                self._settle()
            self._worker.stop()
        if self._broker is not None:
            self._broker.stop()
        if self._journal is not None:
            self._journal.close()

    def _settle(self) -> None:
        if self._worker is None or self._handler is None or self._topics is None:
            return
        try:
            ends = _end_offsets(self.bootstrap, self._topics.all)
        except KafkaException as exc:
            log.warning("could not read end offsets; the journal stops as it is", error=str(exc))
            return
        deadline = time.monotonic() + _SETTLE_S
        while not self._handler.caught_up(ends) and time.monotonic() < deadline:
            if self._worker.join(0.01):
                return  # it ended (failed): nothing more to wait for


def _end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "group.id": "modelyard-journal-ends"}
    consumer = Consumer(config)
    try:
        listed = consumer.list_topics(timeout=2.0).topics
        ends = {}
        for topic in topics:
            for p in listed[topic].partitions if topic in listed else {}:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=2.0)
                ends[(topic, p)] = high
        return ends
    finally:
        consumer.close()
